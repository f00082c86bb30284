//! The plugin interface Warden replaces: the host allocates guest memory
//! through exported `alloc`/`dealloc`, copies the input in, calls
//! `count_vowels(ptr, len)`, and gets back a pointer and length packed into
//! one `u64` that locate a JSON result it must copy out and free.

use std::alloc::{Layout, alloc, dealloc};

/// Allocates `len` bytes for the host to write into.
#[unsafe(no_mangle)]
pub extern "C" fn guest_alloc(len: u32) -> u32 {
    let layout = Layout::from_size_align(len.max(1) as usize, 1).expect("a byte layout");
    // SAFETY: the layout has a non-zero size.
    unsafe { alloc(layout) as u32 }
}

/// Frees what `guest_alloc` returned.
///
/// # Safety
///
/// `ptr` and `len` must come from a `guest_alloc` call (or a result) not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn guest_dealloc(ptr: u32, len: u32) {
    let layout = Layout::from_size_align(len.max(1) as usize, 1).expect("a byte layout");
    // SAFETY: the caller passes back an allocation of this layout.
    unsafe { dealloc(ptr as *mut u8, layout) }
}

/// Counts the vowels of the input at `ptr` and returns `{"count": N}` as
/// `(result_ptr << 32) | result_len`.
///
/// # Safety
///
/// `ptr..ptr + len` must be an allocation from `guest_alloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn count_vowels(ptr: u32, len: u32) -> u64 {
    // SAFETY: the host wrote `len` bytes at `ptr`.
    let input = unsafe { std::slice::from_raw_parts(ptr as *const u8, len as usize) };
    let json = serde_json::json!({ "count": vowels::count_vowels(input) }).to_string();
    let result = guest_alloc(json.len() as u32);
    // SAFETY: `result` has room for the JSON.
    unsafe { std::ptr::copy_nonoverlapping(json.as_ptr(), result as *mut u8, json.len()) };
    (u64::from(result) << 32) | json.len() as u64
}
