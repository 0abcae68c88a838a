//! The start-up heap on Linux with glibc: the file and its mapping, capture from the process's
//! first constructor to the executable's own, the blocks handed out of the file, and dropping
//! its pages (and libtorch's read-only ones) from the page tables.

use std::ffi::{c_char, c_int, c_long, c_void, CStr};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::StartupHeap;

/// Address space reserved for the file, which is sparse: only written pages take disk.
const RESERVE: usize = 1 << 30;
/// Bytes before each block holding its size; keeps blocks 16-byte aligned.
const HEADER: usize = 16;
/// Free lists for blocks of up to this many 16-byte units (4 KiB); larger freed blocks are
/// left (start-up frees few of them).
const CLASSES: usize = 256;
pub(super) const PAGE: usize = 4096;
/// While start-up lasts, every time the file grows by this much its pages and libtorch's
/// read-only pages leave the page tables, so start-up never holds much of either at once:
/// libtorch's initialisers read some 150 MiB of its code and constants once. Measured with
/// the worker on a Zen 4: start-up peaks at 98 MiB every 4 MiB, 100 MiB every 16, 117 MiB
/// with the heap anonymous, all below the peak of loading SmolLM2 (133 MiB).
const RELEASE_EVERY: usize = 16 << 20;

/// From the Linux and glibc headers (the same on x86-64 and AArch64).
const O_RDWR: c_int = 0o2;
const O_CLOEXEC: c_int = 0o2_000_000;
const O_TMPFILE: c_int = 0o20_200_000;
const PROT_READ_WRITE: c_int = 0x3;
const MAP_SHARED: c_int = 0x1;
const MAP_NORESERVE: c_int = 0x4000;
const MAP_FAILED: *mut c_void = !0usize as *mut c_void;
const MADV_DONTNEED: c_int = 4;
const PT_LOAD: u32 = 1;
const PF_W: u32 = 2;
/// `statfs` magic numbers of filesystems held in memory (`<linux/magic.h>`).
const IN_MEMORY: [c_long; 2] = [0x0102_1994 /* tmpfs */, 0x8584_58f6 /* ramfs */];

/// `Elf64_Phdr`.
#[repr(C)]
struct ProgramHeader {
    p_type: u32,
    p_flags: u32,
    p_offset: u64,
    p_vaddr: u64,
    p_paddr: u64,
    p_filesz: u64,
    p_memsz: u64,
    p_align: u64,
}

/// The leading fields of glibc's `struct dl_phdr_info`.
#[repr(C)]
struct ObjectInfo {
    addr: usize,
    name: *const c_char,
    headers: *const ProgramHeader,
    count: u16,
}

extern "C" {
    fn open(path: *const c_char, flags: c_int, mode: u32) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn ftruncate(fd: c_int, len: i64) -> c_int;
    /// `struct statfs` begins with `f_type`; the buffer is larger than the struct.
    fn fstatfs(fd: c_int, buf: *mut [c_long; 32]) -> c_int;
    fn mmap(
        addr: *mut c_void,
        len: usize,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        offset: i64,
    ) -> *mut c_void;
    fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
    fn dl_iterate_phdr(
        callback: unsafe extern "C" fn(*mut ObjectInfo, usize, *mut c_void) -> c_int,
        data: *mut c_void,
    ) -> c_int;
}

/// `[BASE, END)`: the file's mapping; zero when unused.
pub(super) static BASE: AtomicUsize = AtomicUsize::new(0);
pub(super) static END: AtomicUsize = AtomicUsize::new(0);
/// While true, allocations come from the file.
pub(super) static CAPTURING: AtomicBool = AtomicBool::new(false);
/// Guards `TOP`, `FREE` and the counters (start-up may start threads).
static LOCK: AtomicBool = AtomicBool::new(false);
/// The next unused byte of the mapping.
static TOP: AtomicUsize = AtomicUsize::new(0);
/// Where `TOP` next triggers a release of pages during start-up.
static NEXT_RELEASE: AtomicUsize = AtomicUsize::new(0);
/// Heads of the free lists by size in 16-byte units, linked through a block's first word.
static FREE: [AtomicUsize; CLASSES + 1] = [const { AtomicUsize::new(0) }; CLASSES + 1];
static LIVE_BLOCKS: AtomicUsize = AtomicUsize::new(0);

/// First constructor of the process: opens the file and starts capturing.
#[used]
#[link_section = ".preinit_array"]
static START: unsafe extern "C" fn(c_int, *const *const c_char, *const *const c_char) = start;

/// Runs after every shared library's constructors: start-up is over.
#[used]
#[link_section = ".init_array"]
static STOP: extern "C" fn() = stop;

/// # Safety
/// Called by the dynamic loader with the process's arguments and environment.
unsafe extern "C" fn start(_argc: c_int, _argv: *const *const c_char, env: *const *const c_char) {
    // SAFETY: the loader passes the environment, NUL-terminated strings ending in null
    // (`getenv` may not work yet this early).
    let setting = |name: &[u8]| unsafe { env_value(env, name) };
    if matches!(
        setting(b"BEAMLINE_STARTUP_HEAP"),
        Some(b"anonymous" | b"off")
    ) {
        return;
    }
    let tmpdir = setting(b"TMPDIR").filter(|dir| !dir.is_empty());
    let mut path = [0u8; 512];
    for dir in [tmpdir, Some(&b"/var/tmp"[..]), Some(&b"/tmp"[..])]
        .into_iter()
        .flatten()
    {
        if dir.len() >= path.len() {
            continue;
        }
        path[..dir.len()].copy_from_slice(dir);
        path[dir.len()] = 0;
        // SAFETY: `path` is NUL-terminated.
        if let Some(base) = unsafe { map_file_in(path.as_ptr().cast()) } {
            BASE.store(base, Ordering::Relaxed);
            TOP.store(base, Ordering::Relaxed);
            NEXT_RELEASE.store(base + RELEASE_EVERY, Ordering::Relaxed);
            END.store(base + RESERVE, Ordering::Relaxed);
            CAPTURING.store(true, Ordering::Release);
            return;
        }
    }
}

/// The value of `name` in `env`, a null-terminated array of `NAME=value` strings.
///
/// # Safety
/// `env` is null or such an array, living as long as the process.
unsafe fn env_value(env: *const *const c_char, name: &[u8]) -> Option<&'static [u8]> {
    if env.is_null() {
        return None;
    }
    let mut at = env;
    // SAFETY: the caller's contract: walk to the terminating null.
    unsafe {
        while !(*at).is_null() {
            let entry = CStr::from_ptr(*at).to_bytes();
            if let Some(value) = entry.strip_prefix(name).and_then(|r| r.strip_prefix(b"=")) {
                return Some(value);
            }
            at = at.add(1);
        }
    }
    None
}

/// A new unlinked file of `RESERVE` bytes (sparse) in `dir` when `dir` is on a
/// disk-backed filesystem that makes unnamed files (`O_TMPFILE`); its descriptor.
///
/// # Safety
/// `dir` is a NUL-terminated path.
unsafe fn disk_file_in(dir: *const c_char) -> Option<c_int> {
    // SAFETY: plain system calls on a path the caller vouches for and a descriptor this
    // function owns.
    unsafe {
        let fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0o600);
        if fd < 0 {
            return None;
        }
        let mut fs = [0 as c_long; 32];
        if fstatfs(fd, &mut fs) == 0
            && !IN_MEMORY.contains(&fs[0])
            && ftruncate(fd, RESERVE as i64) == 0
        {
            return Some(fd);
        }
        close(fd);
        None
    }
}

/// Maps a new file from `disk_file_in(dir)`; its base address.
///
/// # Safety
/// `dir` is a NUL-terminated path.
unsafe fn map_file_in(dir: *const c_char) -> Option<usize> {
    // SAFETY: the caller's contract; the mapping is new and nothing else refers to it, and
    // it outlives the descriptor.
    unsafe {
        let fd = disk_file_in(dir)?;
        let base = mmap(
            null_mut(),
            RESERVE,
            PROT_READ_WRITE,
            MAP_SHARED | MAP_NORESERVE,
            fd,
            0,
        );
        close(fd);
        (base != MAP_FAILED).then_some(base as usize)
    }
}

/// Whether one of the directories start-up tries (`TMPDIR`, `/var/tmp`, `/tmp`) takes the
/// file, asked the way start-up asks.
#[cfg(test)]
pub(super) fn disk_backed_temp_dir() -> bool {
    let tmpdir = std::env::var("TMPDIR").ok().filter(|dir| !dir.is_empty());
    let found = [tmpdir.as_deref(), Some("/var/tmp"), Some("/tmp")]
        .into_iter()
        .flatten()
        .any(|dir| {
            let dir = std::ffi::CString::new(dir).unwrap();
            // SAFETY: a NUL-terminated path; the descriptor is closed at once.
            unsafe { disk_file_in(dir.as_ptr()).map(|fd| close(fd)).is_some() }
        });
    found
}

extern "C" fn stop() {
    CAPTURING.store(false, Ordering::Release);
    drop_library_pages();
}

/// The file's pages and libtorch's read-only ones out of the page tables.
pub fn drop_library_pages() {
    release_pages();
    drop_libtorch_read_only();
}

/// Drops the pages of libtorch's read-only segments (code, constants, symbol tables) from
/// the page tables: the loader maps them read-only and never writes them (relocated data
/// lives in writable segments, `PF_W`, even where it is read-only afterwards), so every
/// page reads back the same from the file.
fn drop_libtorch_read_only() {
    unsafe extern "C" fn each(info: *mut ObjectInfo, _size: usize, _data: *mut c_void) -> c_int {
        // SAFETY: the loader passes a valid `dl_phdr_info` and its program headers.
        unsafe {
            let info = &*info;
            if info.name.is_null() {
                return 0;
            }
            let name = CStr::from_ptr(info.name).to_bytes();
            let file = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
            if !(file.starts_with(b"libtorch") || file.starts_with(b"libc10")) {
                return 0;
            }
            for k in 0..usize::from(info.count) {
                let header = &*info.headers.add(k);
                if header.p_type == PT_LOAD && header.p_flags & PF_W == 0 {
                    let start = (info.addr + header.p_vaddr as usize).next_multiple_of(PAGE);
                    let end =
                        (info.addr + (header.p_vaddr + header.p_memsz) as usize) / PAGE * PAGE;
                    if start < end {
                        madvise(start as *mut c_void, end - start, MADV_DONTNEED);
                    }
                }
            }
        }
        0
    }
    // SAFETY: the callback only reads what the loader passes and advises code pages.
    unsafe { dl_iterate_phdr(each, null_mut()) };
}

/// `_exit`: ends the process without running exit handlers or destructors.
pub fn exit_at_once(code: i32) -> ! {
    extern "C" {
        fn _exit(code: c_int) -> !;
    }
    // SAFETY: ends the process at once; the caller flushed Rust's buffered output, and
    // nothing else of the process's state outlives it (the file is unlinked).
    unsafe { _exit(code) }
}

pub fn state() -> StartupHeap {
    let base = BASE.load(Ordering::Relaxed);
    StartupHeap {
        in_file: base != 0,
        used_bytes: TOP.load(Ordering::Relaxed).saturating_sub(base),
        live_blocks: LIVE_BLOCKS.load(Ordering::Relaxed),
    }
}

pub fn release_pages() -> usize {
    let base = BASE.load(Ordering::Relaxed);
    if base == 0 {
        return 0;
    }
    let len = (TOP.load(Ordering::Relaxed) - base).next_multiple_of(PAGE);
    // SAFETY: `[base, base + len)` lies in the file's shared mapping, which is never
    // unmapped; dropping a shared file mapping's pages keeps their contents in the file.
    if unsafe { madvise(base as *mut c_void, len, MADV_DONTNEED) } == 0 {
        len
    } else {
        0
    }
}

pub(super) fn in_file(ptr: *mut c_void) -> bool {
    let at = ptr as usize;
    at >= BASE.load(Ordering::Relaxed) && at < END.load(Ordering::Relaxed)
}

/// Runs `f` holding `LOCK`.
fn locked<T>(f: impl FnOnce() -> T) -> T {
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::hint::spin_loop();
    }
    let out = f();
    LOCK.store(false, Ordering::Release);
    out
}

/// A block of at least `size` bytes aligned to `align` from the file, or null when the
/// file is full, and whether it was used before (a new block reads zero: the file is
/// sparse). Every `RELEASE_EVERY` bytes of growth, drops the pages start-up has touched so
/// far.
pub(super) fn file_alloc(size: usize, align: usize) -> (*mut c_void, bool) {
    let units = size.max(1).div_ceil(16);
    let (block, reused, release) = locked(|| {
        if align <= 16 && units <= CLASSES {
            let head = FREE[units].load(Ordering::Relaxed);
            if head != 0 {
                // SAFETY: a free block's first word links the next free block.
                let next = unsafe { *(head as *const usize) };
                FREE[units].store(next, Ordering::Relaxed);
                LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
                return (head as *mut c_void, true, false);
            }
        }
        let at = (TOP.load(Ordering::Relaxed) + HEADER).next_multiple_of(align.max(16));
        let end = at + units * 16;
        if end > END.load(Ordering::Relaxed) {
            return (null_mut(), false, false);
        }
        // SAFETY: `at - 8` is inside the mapping, past the previous block.
        unsafe { *((at - 8) as *mut usize) = units * 16 };
        TOP.store(end, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        let release = end >= NEXT_RELEASE.load(Ordering::Relaxed);
        if release {
            NEXT_RELEASE.store(end + RELEASE_EVERY, Ordering::Relaxed);
        }
        (at as *mut c_void, false, release)
    });
    if release {
        drop_library_pages();
    }
    (block, reused)
}

/// The usable size of a block of the file.
///
/// # Safety
/// `ptr` is a block `file_alloc` returned.
pub(super) unsafe fn file_size(ptr: *mut c_void) -> usize {
    // SAFETY: every block's size precedes it.
    unsafe { *((ptr as usize - 8) as *const usize) }
}

/// Returns a block of the file to its free list while start-up lasts; after, leaves it.
///
/// # Safety
/// `ptr` is a live block `file_alloc` returned.
pub(super) unsafe fn file_free(ptr: *mut c_void) {
    if !CAPTURING.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: the caller's contract.
    let units = unsafe { file_size(ptr) } / 16;
    locked(|| {
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
        if units <= CLASSES && (ptr as usize).is_multiple_of(16) {
            // SAFETY: the block is free and at least 16 bytes long.
            unsafe { *(ptr as *mut usize) = FREE[units].load(Ordering::Relaxed) };
            FREE[units].store(ptr as usize, Ordering::Relaxed);
        }
    })
}
