//! Keeps the heap that shared libraries build before `main` in a file, not in anonymous memory.
//!
//! Why: libtorch's static initialisers register its operators (names, schemas, dispatch
//! tables) before `main` runs: about 630,000 allocations, 51 MiB that stay live for the whole
//! process, of which a CPU run later reads the entries of the few operators it dispatches.
//! Anonymous memory cannot be reclaimed on a machine without swap, so those 51 MiB stayed
//! resident in every worker, more than half of SmolLM2-135M's quantized weights.
//!
//! How: from the process's first constructor (`.preinit_array`, which the dynamic loader runs
//! before any shared library's) to the executable's own constructors (`.init_array`, which run
//! after every library's), `malloc` and its family serve requests from a shared mapping of an
//! unlinked file on a disk-backed filesystem. When start-up ends the mapping's pages leave the
//! process's page tables (`MADV_DONTNEED`): the pages of a shared file mapping stay in the page
//! cache and are written back to the file, so nothing is lost, and the few the process reads
//! again come back by a minor fault. What stays in the page cache is reclaimable, like a
//! library's code. Every other allocation goes to glibc's allocator (`__libc_malloc` and its
//! kin); blocks of the file freed after start-up are left unused (start-up's own temporaries
//! are reused while it lasts).
//!
//! A shared mapping stays shared across `fork`: a child that went on without `exec` would
//! write its parent's libtorch tables. beamline starts child processes only through
//! `std::process::Command` (fork, then exec at once).
//!
//! Off with `BEAMLINE_STARTUP_HEAP=anonymous` (an environment variable only: it acts before
//! any configuration is read), and wherever there is no disk-backed temporary directory
//! (`TMPDIR`, else `/var/tmp`, else `/tmp`): on tmpfs the pages would stay in memory as shared
//! memory, so moving them there would only hide them. Linux with glibc only; elsewhere the
//! libraries' heap is the allocator's as before.

/// The start-up heap as it stands: the bytes its file mapping serves, and whether it is in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartupHeap {
    /// Whether start-up's allocations went to the file.
    pub in_file: bool,
    /// Bytes handed out of the file (live blocks, free blocks kept for reuse, padding).
    pub used_bytes: usize,
    /// Blocks allocated there and not freed by the end of start-up.
    pub live_blocks: usize,
}

/// Drops the file's pages and libtorch's code and read-only data from this process's page
/// tables, without reading `/proc` (microseconds): for work that runs a libtorch operation now
/// and then over a long stretch, such as loading a model layer by layer, where every operation
/// maps in code (64 KiB or a whole cached folio a touched page) and table entries that nothing
/// needs afterwards. Everything dropped reads back the same from its file.
pub fn drop_library_pages() {
    imp::release_pages();
    imp::drop_libtorch_read_only();
}

/// Ends the process with `code` after flushing standard output. When the start-up heap is in
/// the file, the libraries' destructors are skipped (`_exit`): libtorch's would walk its whole
/// operator tables to free them, mapping the 60 MiB of the file back in just before the
/// process ends, which would make its exit the peak of its resident memory. Otherwise the
/// process exits as usual.
pub fn exit(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    if state().in_file {
        imp::exit_at_once(code)
    }
    std::process::exit(code)
}

/// What start-up left in the file.
pub fn state() -> StartupHeap {
    imp::state()
}

/// Drops the file's pages from this process's page tables; the page cache keeps them, and a
/// page read again comes back by a minor fault. Returns the bytes advised (0 when unused).
pub fn release_pages() -> usize {
    imp::release_pages()
}

/// Where the start-up heap is not kept in a file: nothing to drop, and a usual exit.
#[cfg(not(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
mod imp {
    pub fn state() -> super::StartupHeap {
        super::StartupHeap::default()
    }
    pub fn release_pages() -> usize {
        0
    }
    pub fn drop_libtorch_read_only() {}
    pub fn exit_at_once(code: i32) -> ! {
        std::process::exit(code)
    }
}

#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod imp {
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
    const PAGE: usize = 4096;
    /// While start-up lasts, every time the file grows by this much its pages and libtorch's
    /// read-only pages leave the page tables, so start-up never holds much of either at once:
    /// libtorch's initialisers read some 150 MiB of its code and constants once. Measured with
    /// the worker on a Zen 4: start-up peaks at 98 MiB every 4 MiB, 100 MiB every 16, 117 MiB
    /// with the heap anonymous, all below the peak of loading SmolLM2 (139 MiB).
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
    const EINVAL: c_int = 22;
    const ENOMEM: c_int = 12;
    const RTLD_NEXT: *mut c_void = !0usize as *mut c_void;
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
        fn __libc_malloc(size: usize) -> *mut c_void;
        fn __libc_free(ptr: *mut c_void);
        fn __libc_calloc(count: usize, size: usize) -> *mut c_void;
        fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
        fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
        fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
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
    unsafe extern "C" fn start(
        _argc: c_int,
        _argv: *const *const c_char,
        env: *const *const c_char,
    ) {
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
        release_pages();
        drop_libtorch_read_only();
    }

    /// Drops the pages of libtorch's read-only segments (code, constants, symbol tables) from
    /// the page tables: the loader maps them read-only and never writes them (relocated data
    /// lives in writable segments, `PF_W`, even where it is read-only afterwards), so every
    /// page reads back the same from the file.
    pub fn drop_libtorch_read_only() {
        unsafe extern "C" fn each(
            info: *mut ObjectInfo,
            _size: usize,
            _data: *mut c_void,
        ) -> c_int {
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
    fn file_alloc(size: usize, align: usize) -> (*mut c_void, bool) {
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
            release_pages();
            drop_libtorch_read_only();
        }
        (block, reused)
    }

    /// The usable size of a block of the file.
    ///
    /// # Safety
    /// `ptr` is a block `file_alloc` returned.
    unsafe fn file_size(ptr: *mut c_void) -> usize {
        // SAFETY: every block's size precedes it.
        unsafe { *((ptr as usize - 8) as *const usize) }
    }

    /// Returns a block of the file to its free list while start-up lasts; after, leaves it.
    ///
    /// # Safety
    /// `ptr` is a live block `file_alloc` returned.
    unsafe fn file_free(ptr: *mut c_void) {
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

    /// # Safety
    /// The C `malloc` contract.
    #[no_mangle]
    pub(super) unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
        if CAPTURING.load(Ordering::Acquire) {
            let (block, _) = file_alloc(size, 16);
            if !block.is_null() {
                return block;
            }
        }
        // SAFETY: forwarded as called.
        unsafe { __libc_malloc(size) }
    }

    /// # Safety
    /// The C `free` contract.
    #[no_mangle]
    pub(super) unsafe extern "C" fn free(ptr: *mut c_void) {
        if ptr.is_null() {
            return;
        }
        if in_file(ptr) {
            // SAFETY: a live block of the file, as the caller's contract says.
            unsafe { file_free(ptr) }
        } else {
            // SAFETY: forwarded as called: the block is glibc's.
            unsafe { __libc_free(ptr) }
        }
    }

    /// # Safety
    /// The C `calloc` contract.
    #[no_mangle]
    pub(super) unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
        if CAPTURING.load(Ordering::Acquire) {
            let Some(bytes) = count.checked_mul(size) else {
                return null_mut();
            };
            let (block, reused) = file_alloc(bytes, 16);
            if !block.is_null() {
                if reused {
                    // SAFETY: the block holds at least `bytes` bytes.
                    unsafe { std::ptr::write_bytes(block.cast::<u8>(), 0, bytes) };
                }
                return block;
            }
        }
        // SAFETY: forwarded as called.
        unsafe { __libc_calloc(count, size) }
    }

    /// # Safety
    /// The C `realloc` contract.
    #[no_mangle]
    pub(super) unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
        if ptr.is_null() {
            // SAFETY: `realloc(NULL, n)` is `malloc(n)`.
            return unsafe { malloc(size) };
        }
        if !in_file(ptr) {
            // SAFETY: forwarded as called: the block is glibc's.
            return unsafe { __libc_realloc(ptr, size) };
        }
        // SAFETY: a live block of the file.
        let old = unsafe { file_size(ptr) };
        if size <= old {
            return ptr;
        }
        // SAFETY: a new block of `size` bytes, then the old one's bytes copied and freed.
        unsafe {
            let new = malloc(size);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), new.cast::<u8>(), old);
                file_free(ptr);
            }
            new
        }
    }

    /// # Safety
    /// The C `reallocarray` contract.
    #[no_mangle]
    unsafe extern "C" fn reallocarray(ptr: *mut c_void, count: usize, size: usize) -> *mut c_void {
        match count.checked_mul(size) {
            // SAFETY: the caller's contract.
            Some(bytes) => unsafe { realloc(ptr, bytes) },
            None => null_mut(),
        }
    }

    /// # Safety
    /// The C `memalign` contract.
    #[no_mangle]
    unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
        if CAPTURING.load(Ordering::Acquire) && align.is_power_of_two() && align <= PAGE {
            let (block, _) = file_alloc(size, align);
            if !block.is_null() {
                return block;
            }
        }
        // SAFETY: forwarded as called.
        unsafe { __libc_memalign(align, size) }
    }

    /// # Safety
    /// The C `aligned_alloc` contract.
    #[no_mangle]
    unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
        // SAFETY: the caller's contract.
        unsafe { memalign(align, size) }
    }

    /// # Safety
    /// The C `posix_memalign` contract.
    #[no_mangle]
    unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
        if !align.is_power_of_two() || !align.is_multiple_of(std::mem::size_of::<usize>()) {
            return EINVAL;
        }
        // SAFETY: the caller's contract.
        let block = unsafe { memalign(align, size) };
        if block.is_null() {
            return ENOMEM;
        }
        // SAFETY: `out` is writable, as the caller promised.
        unsafe { *out = block };
        0
    }

    /// # Safety
    /// The C `malloc_usable_size` contract.
    #[no_mangle]
    pub(super) unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
        if ptr.is_null() {
            return 0;
        }
        if in_file(ptr) {
            // SAFETY: a live block of the file.
            return unsafe { file_size(ptr) };
        }
        static GLIBCS: AtomicUsize = AtomicUsize::new(0);
        let mut glibcs = GLIBCS.load(Ordering::Relaxed);
        if glibcs == 0 {
            // SAFETY: looks up the next definition of the symbol, glibc's.
            glibcs = unsafe { dlsym(RTLD_NEXT, c"malloc_usable_size".as_ptr()) } as usize;
            GLIBCS.store(glibcs, Ordering::Relaxed);
        }
        if glibcs == 0 {
            return 0;
        }
        // SAFETY: glibc's `malloc_usable_size`, on a block of glibc's.
        unsafe {
            let glibcs: unsafe extern "C" fn(*mut c_void) -> usize = std::mem::transmute(glibcs);
            glibcs(ptr)
        }
    }

    /// # Safety
    /// The C23 `free_sized` contract.
    #[no_mangle]
    unsafe extern "C" fn free_sized(ptr: *mut c_void, _size: usize) {
        // SAFETY: the caller's contract.
        unsafe { free(ptr) }
    }

    /// # Safety
    /// The C23 `free_aligned_sized` contract.
    #[no_mangle]
    unsafe extern "C" fn free_aligned_sized(ptr: *mut c_void, _align: usize, _size: usize) {
        // SAFETY: the caller's contract.
        unsafe { free(ptr) }
    }
}

#[cfg(all(
    test,
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod tests {
    use super::*;
    use std::ffi::c_void;
    use std::sync::atomic::Ordering;

    /// Whether start-up could make its file here, asked the way it asks: the test expects the
    /// file exactly where one can be made (not on a machine whose temporary directories are
    /// all tmpfs).
    fn a_file_could_be_made() -> bool {
        std::env::var_os("BEAMLINE_STARTUP_HEAP").is_none() && imp::disk_backed_temp_dir()
    }

    /// Resident KiB of the start-up heap's mapping, from `/proc/self/smaps`.
    fn heap_rss_kib() -> u64 {
        let base = imp::BASE.load(Ordering::Relaxed);
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut in_heap = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((start, _)) = range.split_once('-') {
                    if let Ok(start) = usize::from_str_radix(start, 16) {
                        in_heap = start == base;
                        continue;
                    }
                }
            }
            if let (true, Some(rss)) = (in_heap, line.strip_prefix("Rss:")) {
                return rss.trim().trim_end_matches("kB").trim().parse().unwrap();
            }
        }
        panic!("no mapping starts at the start-up heap's base {base:#x}");
    }

    #[test]
    fn libtorchs_start_up_heap_is_in_the_file() {
        let heap = state();
        if !a_file_could_be_made() {
            assert!(!heap.in_file, "{heap:?}");
            return;
        }
        assert!(heap.in_file, "no file although one could be made");
        // libtorch's operator tables: about 60 MiB and a quarter million blocks with 2.11.
        assert!(heap.used_bytes > 16 << 20, "{heap:?}");
        assert!(heap.live_blocks > 50_000, "{heap:?}");
    }

    #[test]
    fn dropped_pages_come_back_as_they_were_and_libtorch_still_runs() {
        let heap = state();
        if !heap.in_file {
            return;
        }
        let work = || {
            let x = tch::Tensor::arange(12, (tch::Kind::Float, tch::Device::Cpu)).view([3, 4]);
            x.matmul(&x.transpose(0, 1))
                .sum(tch::Kind::Float)
                .double_value(&[])
        };
        let before_work = work();
        let base = imp::BASE.load(Ordering::Relaxed);
        let checksum = || {
            // SAFETY: `[base, base + used_bytes)` is mapped readable and never unmapped; its
            // bytes are libtorch's blocks and the allocator's headers, read, not written.
            (0..heap.used_bytes)
                .step_by(4096)
                .map(|offset| {
                    u64::from(unsafe { std::ptr::read_volatile((base + offset) as *const u8) })
                })
                .fold(0u64, |sum, byte| sum.wrapping_mul(31).wrapping_add(byte))
        };
        let sum = checksum();
        let resident = heap_rss_kib();
        let released = release_pages();
        let after = heap_rss_kib();
        assert!(released >= heap.used_bytes, "{released} of {heap:?}");
        assert!(
            resident as usize >= heap.used_bytes >> 11,
            "{resident} KiB resident of {heap:?}"
        );
        // Tests running libtorch ops meanwhile bring some pages back.
        assert!(
            after * 4 < resident,
            "{resident} KiB resident, {after} KiB after the release"
        );
        assert_eq!(checksum(), sum, "the pages read back the same");
        assert_eq!(work(), before_work);
    }

    #[test]
    fn blocks_of_the_file_behave_like_mallocs_during_and_after_start_up() {
        if !state().in_file {
            return;
        }
        // Capturing again for a moment: other tests' allocations meanwhile land in the file
        // too, which is what start-up's threads see.
        imp::CAPTURING.store(true, Ordering::Release);
        // SAFETY: the C allocation contract, kept: every block is used within its size.
        let (grown, zeroed, leaked) = unsafe {
            let small = imp::malloc(100).cast::<u8>();
            std::ptr::write_bytes(small, 0xff, 100);
            imp::free(small.cast());
            let zeroed = imp::calloc(25, 4).cast::<u8>();
            let block = imp::malloc(40).cast::<u8>();
            for k in 0..40 {
                *block.add(k) = k as u8;
            }
            let grown = imp::realloc(block.cast(), 4000).cast::<u8>();
            let leaked = imp::malloc(64);
            (grown, zeroed, leaked)
        };
        imp::CAPTURING.store(false, Ordering::Release);
        // SAFETY: as above; blocks of the file stay valid after start-up.
        unsafe {
            assert!(imp::in_file(zeroed.cast()) && imp::in_file(grown.cast()));
            assert!(
                (0..100).all(|k| *zeroed.add(k) == 0),
                "calloc gave a reused block unzeroed"
            );
            assert!(imp::malloc_usable_size(grown.cast()) >= 4000);
            assert!(
                (0..40).all(|k| *grown.add(k) == k as u8),
                "realloc in the file kept the bytes"
            );
            // After start-up a block of the file grows into glibc's heap.
            let moved = imp::realloc(grown.cast(), 1 << 20).cast::<u8>();
            assert!(!imp::in_file(moved.cast()));
            assert!(
                (0..40).all(|k| *moved.add(k) == k as u8),
                "realloc out of the file kept the bytes"
            );
            imp::free(moved.cast());
            imp::free(zeroed.cast());
            imp::free(leaked);
            let glibcs: *mut c_void = imp::malloc(64);
            assert!(!imp::in_file(glibcs));
            imp::free(glibcs);
        }
    }

    /// Run by `the_environment_turns_it_off` in a child process: prints what start-up did.
    #[test]
    #[ignore = "run by the_environment_turns_it_off"]
    fn report_for_the_parent() {
        println!("start-up heap in file: {}", state().in_file);
    }

    #[test]
    fn the_environment_turns_it_off() {
        let run = |setting: Option<&str>| {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap());
            child.args([
                "--exact",
                "startup_heap::tests::report_for_the_parent",
                "--ignored",
                "--nocapture",
            ]);
            match setting {
                Some(value) => child.env("BEAMLINE_STARTUP_HEAP", value),
                None => child.env_remove("BEAMLINE_STARTUP_HEAP"),
            };
            let output = child.output().unwrap();
            assert!(output.status.success(), "{output:?}");
            String::from_utf8(output.stdout).unwrap()
        };
        assert!(run(Some("anonymous")).contains("start-up heap in file: false"));
        assert!(run(Some("off")).contains("start-up heap in file: false"));
        if imp::disk_backed_temp_dir() {
            assert!(run(None).contains("start-up heap in file: true"));
        }
    }
}
