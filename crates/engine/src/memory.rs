//! Handing memory the engine no longer needs back to the system.
//!
//! Two kinds of pages would otherwise stay resident and count as the engine's memory for the
//! rest of the process:
//! - freed heap: glibc keeps freed pages in its arenas, and after a large block is freed it
//!   raises its threshold for serving big blocks from fresh mappings, so a dropped KV cache or a
//!   load's transient copies would stay. The engine trims at the points where it has just
//!   dropped a lot: after loading, and after each batching session (which frees its KV cache).
//! - mapped code and read-only data that only start-up used: libtorch's static initialisers
//!   (tens of thousands of operator registrations) touch most of `libtorch_cpu.so`'s code, and
//!   loading touches parsing and conversion code that decoding never runs again. Those pages
//!   are clean copies of files on disk, so the engine asks the kernel to reclaim them
//!   (`MADV_PAGEOUT`) before and after loading; whatever decoding does use comes back on its
//!   first touch. Pages the process has written (relocated data, copy-on-write) are anonymous
//!   and the kernel keeps them, so the advice never changes what the process reads.

/// Returns the allocator's free pages to the system (glibc's `malloc_trim`; elsewhere a no-op).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: glibc's `malloc_trim` takes no pointers and may be called at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Asks the kernel to reclaim the resident pages of every file the process has mapped (shared
/// libraries, the executable, model files); returns the mappings advised. Linux 5.4 and later;
/// elsewhere, or where the kernel refuses, nothing happens.
pub fn release_mapped_file_pages() -> usize {
    #[cfg(target_os = "linux")]
    {
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return 0;
        };
        file_mappings(&maps)
            .filter(|range| page_out(range.clone()))
            .count()
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// The address ranges of `/proc/self/maps` lines that map a regular file: a non-zero inode and
/// a path, leaving out devices (a GPU driver's mappings) and deleted files.
fn file_mappings(maps: &str) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    maps.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let range = fields.next()?;
        let _perms = fields.next()?;
        let _offset = fields.next()?;
        let _device = fields.next()?;
        let inode = fields.next()?;
        let path = fields.next()?;
        if inode == "0" || !path.starts_with('/') || path.starts_with("/dev/") {
            return None;
        }
        if fields.next() == Some("(deleted)") {
            return None;
        }
        let (start, end) = range.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        (start < end).then_some(start..end)
    })
}

#[cfg(target_os = "linux")]
fn page_out(range: std::ops::Range<usize>) -> bool {
    /// `MADV_PAGEOUT` from `<linux/mman.h>` (Linux 5.4).
    const MADV_PAGEOUT: std::os::raw::c_int = 21;
    extern "C" {
        fn madvise(
            addr: *mut std::ffi::c_void,
            len: usize,
            advice: std::os::raw::c_int,
        ) -> std::os::raw::c_int;
    }
    // SAFETY: the range is a whole mapping of this process as `/proc/self/maps` listed it, and
    // MADV_PAGEOUT is only advice: the kernel reclaims clean file pages (they are read back on
    // the next touch) and keeps written ones without swap, so no content the process can read
    // changes. A mapping removed since the listing makes the call fail with ENOMEM, harmlessly.
    unsafe { madvise(range.start as *mut _, range.end - range.start, MADV_PAGEOUT) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_mappings_keep_regular_files_only() {
        let maps = "\
5581a000-5581b000 r--p 00000000 08:01 1234 /usr/bin/worker
7f00a000-7f00c000 r-xp 00001000 08:01 99 /venv/torch/lib/libtorch_cpu.so
7f00c000-7f00d000 rw-p 00000000 00:00 0 
7f00d000-7f00e000 rw-p 00000000 00:00 0 [heap]
7f00e000-7f00f000 rw-s 00000000 00:05 77 /dev/nvidiactl
7f00f000-7f010000 r--p 00000000 08:01 55 /tmp/model.gguf (deleted)
7ffd0000-7ffd1000 r-xp 00000000 00:00 0 [vdso]
";
        let ranges: Vec<_> = file_mappings(maps).collect();
        assert_eq!(ranges, vec![0x5581a000..0x5581b000, 0x7f00a000..0x7f00c000]);
    }

    #[test]
    fn releasing_mapped_pages_keeps_what_the_process_reads() {
        let path = std::env::temp_dir().join(format!("beamline-pageout-{}", std::process::id()));
        let bytes: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: the file is this test's own and nothing else writes it while it is mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let sum_before: u64 = map.iter().map(|&b| u64::from(b)).sum();
        let file_rss_before = file_rss_kib();
        let advised = release_mapped_file_pages();
        let file_rss_after = file_rss_kib();
        let sum_after: u64 = map.iter().map(|&b| u64::from(b)).sum();
        std::fs::remove_file(&path).unwrap();
        assert!(advised > 0, "no mapping of the test binary was advised");
        assert!(
            file_rss_after + 1024 <= file_rss_before,
            "file-backed RSS went from {file_rss_before} to {file_rss_after} KiB"
        );
        assert_eq!(sum_before, sum_after);
        assert_eq!(&map[..], &bytes[..]);
    }

    fn file_rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssFile:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}
