//! Two compute-bound workloads for measuring what epoch and fuel
//! instrumentation cost: one made of calls, one made of a loop.

/// The `n`th Fibonacci number, computed the slow way: nothing but calls,
/// branches and arithmetic, the worst case for per-call instrumentation.
#[unsafe(no_mangle)]
pub extern "C" fn fib(n: u32) -> u64 {
    if n < 2 {
        u64::from(n)
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

/// A checksum over `n` rounds of a tight loop: the case of instrumentation
/// on loop back-edges.
#[unsafe(no_mangle)]
pub extern "C" fn mix(n: u32) -> u64 {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..u64::from(n) {
        state ^= round;
        state = state.rotate_left(13).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    }
    state
}
