//! Handing freed memory back to the system. glibc keeps freed pages in its arenas, and after a
//! large block is freed it raises its threshold for serving big blocks from fresh mappings, so a
//! dropped KV cache or a load's transient copies would stay resident and count as the engine's
//! memory for the rest of the process. The engine trims at the points where it has just
//! dropped a lot: after loading, and after each batching session (which frees its KV cache).

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
