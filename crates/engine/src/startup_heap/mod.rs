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
    imp::drop_library_pages()
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
    pub fn drop_library_pages() {}
    pub fn exit_at_once(code: i32) -> ! {
        std::process::exit(code)
    }
}

#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod imp;
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod interpose;

#[cfg(all(
    test,
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod tests;
