//! The vowel counter behind the hello plugin's `count-vowels` action. The
//! benchmark baselines (Extism, a raw-pointer host, native Rust) link this
//! same code, so that they compare hosts, not counting loops.

#![no_std]

/// The number of a, e, i, o and u in `input`, in either case.
pub fn count_vowels(input: &[u8]) -> usize {
    input
        .iter()
        .filter(|byte| matches!(byte.to_ascii_lowercase(), b'a' | b'e' | b'i' | b'o' | b'u'))
        .count()
}
