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
//!   are clean copies of files on disk, so before and after loading the engine asks the kernel
//!   to reclaim them (`MADV_PAGEOUT`), and drops libtorch's from its page tables where another
//!   process maps them too (`MADV_DONTNEED`, which the kernel would otherwise refuse to
//!   reclaim); whatever decoding does use comes back on its first touch. Pages the process has
//!   written (relocated data, copy-on-write) are anonymous: the kernel keeps them under
//!   `MADV_PAGEOUT` without swap, and `MADV_DONTNEED` is never given for a mapping that holds
//!   one, so nothing the process reads changes.
//! - the libraries' start-up heap (libtorch's operator tables), which `startup_heap` keeps in a
//!   shared file mapping: its pages are dropped at the same points, and come back from the page
//!   cache when read.

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

/// libtorch's own libraries. The worker links the first two, so they are loaded before `main`;
/// the CUDA ones are loaded once and kept (`device`): none is ever unmapped, so a range listed
/// for them still holds them when it is advised.
const LIBTORCH_LIBRARIES: [&str; 5] = [
    "libtorch_cpu.so",
    "libc10.so",
    "libtorch.so",
    "libtorch_cuda.so",
    "libc10_cuda.so",
];

/// Hands back the resident pages of the files the process maps (shared libraries, the
/// executable, model files): the kernel reclaims every clean page no other process maps
/// (`MADV_PAGEOUT`, Linux 5.4), and libtorch's read-only mappings that hold no written page are
/// dropped from this process's page tables even where another process maps the same pages (a
/// second worker, or a Python harness that imported torch), since `MADV_PAGEOUT` leaves shared
/// pages alone. Returns the mappings advised; elsewhere than Linux, nothing happens.
pub fn release_mapped_file_pages() -> usize {
    #[cfg(target_os = "linux")]
    {
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return 0;
        };
        let (mut advised, mut resident_kib) = (0, 0);
        for mapping in file_mappings(&smaps) {
            // SAFETY: MADV_PAGEOUT changes nothing the process reads.
            if unsafe { advise(&mapping.range, Advice::PageOut) } {
                advised += 1;
                resident_kib += mapping.rss_kib;
            }
            if mapping.droppable() {
                // SAFETY: a droppable mapping is one of libtorch's libraries, mapped for the
                // life of the process, read-only and without a written page: it reads back
                // the same bytes from the file.
                unsafe { advise(&mapping.range, Advice::DontNeed) };
            }
        }
        let startup_heap = crate::startup_heap::release_pages();
        tracing::debug!(
            mappings = advised,
            resident_mib = resident_kib / 1024,
            startup_heap_mib = startup_heap >> 20,
            "handed back mapped file pages"
        );
        advised
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Drops libtorch's code and read-only data from this process's page tables (the droppable
/// mappings of `release_mapped_file_pages`, without reclaiming anything else). The pages stay
/// in the page cache, so what the next work touches comes back by a minor fault. Called when a
/// batching session starts: what loading, warm-up or an earlier session ran (with the kernel's
/// fault-around, 64 KiB for every touched page) need not stay resident through this one.
/// Returns the mappings dropped.
pub fn release_library_pages() -> usize {
    #[cfg(target_os = "linux")]
    {
        crate::startup_heap::release_pages();
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return 0;
        };
        file_mappings(&smaps)
            .iter()
            // SAFETY: as in `release_mapped_file_pages`, a droppable mapping reads back the
            // same bytes from its file.
            .filter(|mapping| {
                mapping.droppable() && unsafe { advise(&mapping.range, Advice::DontNeed) }
            })
            .count()
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// One mapping of a regular file, as `/proc/self/smaps` lists it.
#[derive(Debug)]
struct FileMapping<'a> {
    range: std::ops::Range<usize>,
    perms: &'a str,
    path: &'a str,
    /// Resident pages of the mapping.
    rss_kib: u64,
    /// Written (copy-on-write) pages of the mapping, which only live in memory.
    anonymous_kib: u64,
}

impl FileMapping<'_> {
    /// Whether the pages may be dropped outright (`MADV_DONTNEED`): a read-only mapping of one
    /// of libtorch's libraries without a written page, so every page reads back from the file
    /// as it was. A mapping with written pages (relocated data) would lose them.
    fn droppable(&self) -> bool {
        !self.perms.contains('w') && self.anonymous_kib == 0 && self.is_libtorch()
    }

    fn is_libtorch(&self) -> bool {
        let name = self.path.rsplit('/').next().unwrap_or(self.path);
        LIBTORCH_LIBRARIES.contains(&name)
    }
}

/// The mappings of `/proc/self/smaps` that map a regular file: a non-zero inode and a path,
/// leaving out devices (a GPU driver's mappings) and deleted files.
fn file_mappings(smaps: &str) -> Vec<FileMapping<'_>> {
    let mut mappings: Vec<FileMapping> = Vec::new();
    let mut current_is_file = false;
    for line in smaps.lines() {
        if let Some(header) = mapping_header(line) {
            current_is_file = header.is_some();
            mappings.extend(header);
            continue;
        }
        let (true, Some(last)) = (current_is_file, mappings.last_mut()) else {
            continue;
        };
        let kib = |rest: &str| rest.split_whitespace().next().and_then(|k| k.parse().ok());
        if let Some(rest) = line.strip_prefix("Rss:") {
            last.rss_kib = kib(rest).unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("Anonymous:") {
            last.anonymous_kib = kib(rest).unwrap_or(u64::MAX);
        }
    }
    mappings
}

/// Parses a mapping's header line: `None` for a field line, `Some(None)` for a mapping that is
/// not a regular file. `anonymous_kib` starts unknown (as if written) until its field is read.
fn mapping_header(line: &str) -> Option<Option<FileMapping<'_>>> {
    let mut fields = line.split_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?;
    let _offset = fields.next()?;
    let _device = fields.next()?;
    let inode = fields.next()?;
    let path = fields.next();
    let deleted = fields.next() == Some("(deleted)");
    Some(match path {
        Some(path)
            if inode != "0"
                && path.starts_with('/')
                && !path.starts_with("/dev/")
                && !deleted
                && start < end =>
        {
            Some(FileMapping {
                range: start..end,
                perms,
                path,
                rss_kib: 0,
                anonymous_kib: u64::MAX,
            })
        }
        _ => None,
    })
}

#[cfg(target_os = "linux")]
pub(crate) enum Advice {
    /// Reclaim the pages where the kernel can (`MADV_PAGEOUT`, Linux 5.4): clean file pages go
    /// back to the file, written ones stay without swap. Never changes what the process reads.
    PageOut,
    /// Drop the pages from this process's page tables (`MADV_DONTNEED`): a file page reads back
    /// from the file, a private anonymous page reads as zeros.
    DontNeed,
}

/// `madvise` on `range`; false when the kernel refused (a range unmapped meanwhile, say).
///
/// # Safety
/// With [`Advice::DontNeed`], the range must be pages whose dropping changes nothing the
/// process relies on: read-only file pages never written, or private anonymous memory the
/// caller owns and wants zeroed.
#[cfg(target_os = "linux")]
pub(crate) unsafe fn advise(range: &std::ops::Range<usize>, advice: Advice) -> bool {
    /// From `<linux/mman.h>`.
    const MADV_DONTNEED: std::os::raw::c_int = 4;
    const MADV_PAGEOUT: std::os::raw::c_int = 21;
    extern "C" {
        fn madvise(
            addr: *mut std::ffi::c_void,
            len: usize,
            advice: std::os::raw::c_int,
        ) -> std::os::raw::c_int;
    }
    let advice = match advice {
        Advice::PageOut => MADV_PAGEOUT,
        Advice::DontNeed => MADV_DONTNEED,
    };
    // SAFETY: advice takes no memory the process reads; what the pages read afterwards is the
    // caller's contract above (MADV_PAGEOUT never changes it).
    unsafe { madvise(range.start as *mut _, range.end - range.start, advice) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_mappings_keep_regular_files_and_their_written_pages() {
        let smaps = "\
5581a000-5581b000 r--p 00000000 08:01 1234 /usr/bin/worker
Rss:                   4 kB
Anonymous:             0 kB
7f00a000-7f00c000 r-xp 00001000 08:01 99 /venv/torch/lib/libtorch_cpu.so
Rss:                   8 kB
Anonymous:             0 kB
7f00c000-7f00d000 r--p 00003000 08:01 99 /venv/torch/lib/libtorch_cpu.so
Anonymous:             4 kB
7f00d000-7f00e000 rw-p 00000000 00:00 0 
Anonymous:             4 kB
7f00e000-7f00f000 rw-p 00000000 00:00 0 [heap]
7f00f000-7f010000 rw-s 00000000 00:05 77 /dev/nvidiactl
7f010000-7f011000 r--p 00000000 08:01 55 /tmp/model.gguf (deleted)
7f011000-7f012000 r--p 00000000 08:01 56 /models/libtorch_cpu.so.gguf
7ffd0000-7ffd1000 r-xp 00000000 00:00 0 [vdso]
";
        let mappings = file_mappings(smaps);
        let listed: Vec<_> = mappings
            .iter()
            .map(|m| (m.range.clone(), m.rss_kib, m.anonymous_kib, m.droppable()))
            .collect();
        assert_eq!(
            listed,
            vec![
                (0x5581a000..0x5581b000, 4, 0, false),
                (0x7f00a000..0x7f00c000, 8, 0, true),
                (0x7f00c000..0x7f00d000, 0, 4, false),
                // No Anonymous field read: counted as written, so never dropped.
                (0x7f011000..0x7f012000, 0, u64::MAX, false),
            ]
        );
    }

    /// Held by the tests that hand pages back and measure what is left: one's release would
    /// empty what another is about to measure.
    static RELEASING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn releasing_mapped_pages_keeps_what_the_process_reads() {
        let _alone = RELEASING.lock().unwrap_or_else(|e| e.into_inner());
        let path = std::env::temp_dir().join(format!("beamline-pageout-{}", std::process::id()));
        let bytes: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
        // Written back to the disk first: the kernel pages out clean pages only.
        let mut written = std::fs::File::create(&path).unwrap();
        std::io::Write::write_all(&mut written, &bytes).unwrap();
        written.sync_all().unwrap();
        drop(written);
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: the file is this test's own and nothing else writes it while it is mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let sum_before: u64 = map.iter().map(|&b| u64::from(b)).sum();
        // This mapping's own pages: the process's whole file-backed count also moves with
        // the code pages that tests running beside this one fault back in.
        let name = path.to_str().unwrap();
        let file_rss_before = mapping_rss_kib(name);
        let advised = release_mapped_file_pages();
        let file_rss_after = mapping_rss_kib(name);
        let sum_after: u64 = map.iter().map(|&b| u64::from(b)).sum();
        std::fs::remove_file(&path).unwrap();
        assert!(advised > 0, "no mapping of the test binary was advised");
        assert_eq!(file_rss_before, 1024, "the file read in whole");
        assert!(
            file_rss_after <= 512,
            "the file's resident pages went from {file_rss_before} to {file_rss_after} KiB"
        );
        assert_eq!(sum_before, sum_after);
        assert_eq!(&map[..], &bytes[..]);
    }

    #[test]
    fn libtorch_code_leaves_the_resident_set() {
        let _alone = RELEASING.lock().unwrap_or_else(|e| e.into_inner());
        let is_code = |m: &FileMapping| m.is_libtorch() && m.perms == "r-xp";
        let resident = || resident_kib(is_code);
        let _ = tch::Tensor::zeros([4], (tch::Kind::Float, tch::Device::Cpu));
        // libtorch's static initialisers touched most of its code, but a test that loaded an
        // engine meanwhile may have handed it back already: touch 32 MiB of it here.
        touch_first(32 << 20, is_code);
        let before = resident();
        release_mapped_file_pages();
        let after = resident();
        assert!(before >= 32 << 10, "libtorch's code held only {before} KiB");
        // Other tests running libtorch ops meanwhile bring some of it back.
        assert!(
            after * 2 < before,
            "libtorch's code went from {before} to {after} KiB"
        );
    }

    #[test]
    fn a_session_start_drops_libtorch_pages_and_ops_still_run() {
        let _alone = RELEASING.lock().unwrap_or_else(|e| e.into_inner());
        let libtorch_rss = || resident_kib(|m| m.droppable());
        let work = || {
            let x = tch::Tensor::arange(12, (tch::Kind::Float, tch::Device::Cpu)).view([3, 4]);
            let y = x.matmul(&x.transpose(0, 1)).softmax(-1, tch::Kind::Float);
            y.sum(tch::Kind::Float).double_value(&[])
        };
        let sum = work();
        let before = libtorch_rss();
        let dropped = release_library_pages();
        let after = libtorch_rss();
        assert!(dropped > 0, "no libtorch mapping was dropped");
        assert!(
            before >= 256,
            "the ops touched only {before} KiB of libtorch"
        );
        // Other tests running libtorch ops meanwhile bring some of it back.
        assert!(
            after * 2 < before,
            "libtorch's pages went from {before} to {after} KiB"
        );
        assert_eq!(
            work(),
            sum,
            "libtorch computes the same after its pages were dropped"
        );
    }

    /// Reads a byte of every page of the first `bytes` of the mappings `keep` selects, which
    /// makes them resident.
    fn touch_first(bytes: usize, keep: impl Fn(&FileMapping) -> bool) {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut left = bytes;
        for mapping in file_mappings(&smaps).iter().filter(|m| keep(m)) {
            let end = mapping.range.end.min(mapping.range.start + left);
            for page in (mapping.range.start..end).step_by(4096) {
                // SAFETY: the mapping is readable (`keep` selects code mappings, `r-xp`) and
                // stays mapped: libtorch's libraries are never unloaded.
                unsafe { std::ptr::read_volatile(page as *const u8) };
            }
            left -= end - mapping.range.start;
            if left == 0 {
                break;
            }
        }
    }

    /// Resident KiB of this process's file mappings that `keep` selects.
    fn resident_kib(keep: impl Fn(&FileMapping) -> bool) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        file_mappings(&smaps)
            .iter()
            .filter(|m| keep(m))
            .map(|m| m.rss_kib)
            .sum()
    }

    /// Resident KiB of the mappings of the file at `path`.
    fn mapping_rss_kib(path: &str) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        file_mappings(&smaps)
            .iter()
            .filter(|m| m.path == path)
            .map(|m| m.rss_kib)
            .sum()
    }
}
