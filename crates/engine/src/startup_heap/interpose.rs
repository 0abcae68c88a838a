//! The `malloc` family this process links against: while start-up lasts, requests come from
//! the file (`imp`); every other request, and every block that is not the file's, goes to
//! glibc's own functions (`__libc_malloc` and its kin).

use std::ffi::{c_char, c_int, c_void};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::imp::{file_alloc, file_free, file_size, in_file, CAPTURING, PAGE};

/// From the Linux and glibc headers.
const EINVAL: c_int = 22;
const ENOMEM: c_int = 12;
const RTLD_NEXT: *mut c_void = !0usize as *mut c_void;

extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_free(ptr: *mut c_void);
    fn __libc_calloc(count: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
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
