//! Zeroing host memory by handing its pages back instead of writing them.
//!
//! A private anonymous page that the kernel is told to drop (`MADV_DONTNEED`) reads as zeros on
//! its next touch and is resident only from then on. So memory zeroed this way costs nothing
//! until it is written, where a `memset` makes every page resident at once. Two users:
//! - the KV cache, allocated for a session's longest prompt plus room to grow (and doubled
//!   when a sequence outgrows it): its pages become resident as positions are written, so its
//!   memory follows the tokens the batch holds, not the capacity set aside;
//! - the session's pass buffers, sized by the largest prefill pass (512 prompt tokens, about
//!   15 MB) and then used by decoding steps of a few rows: once the prompts are in, their pages
//!   go back and the decoding steps fault in only the rows they use.

use tch::{Device, Kind, Tensor};

/// Zeroes `len` bytes at `ptr`: the pages wholly inside are dropped (they read as zeros and
/// are resident again only when touched), the partial pages at either end are written.
/// Elsewhere than Linux, or where the kernel refuses, every byte is written.
///
/// # Safety
/// `ptr..ptr + len` must be private anonymous memory (the heap, or an anonymous mapping) that
/// the caller may write and that nothing else reads or writes meanwhile.
pub unsafe fn zero(ptr: *mut u8, len: usize) {
    let start = ptr as usize;
    let end = start + len;
    let page = page_size();
    let inner_start = start.next_multiple_of(page);
    let inner_end = end / page * page;
    // SAFETY (all three writes): within `ptr..ptr + len`, which the caller lets us write.
    if inner_end <= inner_start || !drop_pages(inner_start, inner_end - inner_start) {
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        return;
    }
    unsafe {
        std::ptr::write_bytes(ptr, 0, inner_start - start);
        std::ptr::write_bytes(inner_end as *mut u8, 0, end - inner_end);
    }
}

/// A zero tensor in host memory whose pages become resident only when written.
pub fn host_zeros(shape: &[i64], kind: Kind) -> Tensor {
    let tensor = Tensor::empty(shape, (kind, Device::Cpu));
    let bytes = tensor.numel() * kind.elt_size_in_bytes();
    // SAFETY: a fresh contiguous CPU tensor of `bytes` bytes from libtorch's allocator (the
    // heap or a private anonymous mapping), which only this function holds.
    unsafe { zero(tensor.data_ptr() as *mut u8, bytes) };
    tensor
}

/// Zeroes a buffer's whole allocation (`zero`): its length stays, its elements read as zeros,
/// and its pages are resident again only where the next user writes.
pub fn release(buffer: &mut Vec<f32>) {
    let bytes = buffer.capacity() * std::mem::size_of::<f32>();
    // SAFETY: the vector's allocation is heap memory that the `&mut` borrow lets only us
    // touch, and zero bits are a valid `f32` for every element, initialised or not.
    unsafe { zero(buffer.as_mut_ptr() as *mut u8, bytes) };
}

#[cfg(target_os = "linux")]
fn page_size() -> usize {
    /// From glibc's `<bits/confname.h>`.
    const SC_PAGESIZE: std::os::raw::c_int = 30;
    extern "C" {
        fn sysconf(name: std::os::raw::c_int) -> std::os::raw::c_long;
    }
    // SAFETY: `sysconf` takes no pointers.
    let size = unsafe { sysconf(SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}

#[cfg(not(target_os = "linux"))]
fn page_size() -> usize {
    4096
}

/// `MADV_DONTNEED` on whole pages; false when the kernel refused.
#[cfg(target_os = "linux")]
fn drop_pages(start: usize, len: usize) -> bool {
    use crate::memory::{advise, Advice};
    // SAFETY: the caller of `zero` guarantees the range is private anonymous memory it may
    // write; dropping its pages only makes them read as zeros, which is what `zero` promises.
    unsafe { advise(&(start..start + len), Advice::DontNeed) }
}

#[cfg(not(target_os = "linux"))]
fn drop_pages(_start: usize, _len: usize) -> bool {
    false
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// How many of the pages under `bytes` are resident (`mincore`).
    pub fn resident_pages(bytes: &[u8]) -> usize {
        extern "C" {
            fn mincore(addr: *mut std::ffi::c_void, len: usize, vec: *mut u8) -> i32;
        }
        let page = page_size();
        let start = bytes.as_ptr() as usize / page * page;
        let end = (bytes.as_ptr() as usize + bytes.len()).next_multiple_of(page);
        let mut flags = vec![0u8; (end - start) / page];
        // SAFETY: the range covers the pages of a live slice; `flags` has one byte per page.
        let status = unsafe { mincore(start as *mut _, end - start, flags.as_mut_ptr()) };
        assert_eq!(status, 0, "mincore");
        flags.iter().filter(|&&f| f & 1 == 1).count()
    }

    fn as_bytes(v: &[f32]) -> &[u8] {
        // SAFETY: any f32 is four plain bytes.
        unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
    }

    #[test]
    fn a_released_buffer_reads_zero_and_holds_no_whole_page() {
        // 16 MB: 4,096 pages, so that one written page shows even where the kernel backs
        // anonymous memory with 2 MiB pages (512 small ones).
        let mut buffer = vec![1.5f32; 4_000_003];
        assert!(resident_pages(as_bytes(&buffer)) > 3_900);
        release(&mut buffer);
        assert_eq!(buffer.len(), 4_000_003);
        // Before any read (a read maps the shared zero page, which mincore counts): at most
        // the two partial pages at the ends are resident.
        assert!(resident_pages(as_bytes(&buffer)) <= 2);
        buffer[2_000_000] = 2.0;
        assert!(resident_pages(as_bytes(&buffer)) <= 2 + 512);
        assert_eq!(buffer.iter().filter(|&&x| x != 0.0).count(), 1);
        assert_eq!(buffer[2_000_000], 2.0);
    }

    #[test]
    fn zeroing_a_range_inside_one_page_writes_it() {
        let mut bytes = vec![7u8; 100];
        // SAFETY: the vector's own heap bytes, borrowed mutably.
        unsafe { zero(bytes.as_mut_ptr().add(10), 50) };
        assert!(bytes[..10].iter().all(|&b| b == 7));
        assert!(bytes[10..60].iter().all(|&b| b == 0));
        assert!(bytes[60..].iter().all(|&b| b == 7));
    }

    #[test]
    fn host_zeros_are_zero_and_resident_only_where_written() {
        // 16 slots x 3 heads x 1,024 positions x 64 dims in bfloat16: 6 MiB.
        let tensor = host_zeros(&[16, 3, 1024, 64], Kind::BFloat16);
        let bytes = tensor.numel() * 2;
        // SAFETY: the tensor's contiguous storage, alive for the borrow.
        let view = unsafe { std::slice::from_raw_parts(tensor.data_ptr() as *const u8, bytes) };
        assert!(resident_pages(view) <= 2, "{} pages", resident_pages(view));
        let _ = tensor.get(0).get(0).get(0).fill_(1.0);
        assert!(resident_pages(view) <= 3 + 512);
        assert_eq!(tensor.sum(Kind::Float).double_value(&[]), 64.0);
        assert_eq!(tensor.abs().sum(Kind::Float).double_value(&[]), 64.0);
    }
}
