//! Extism's count-vowels plugin: bytes in, the decimal count out, counted by
//! the same code as Warden's hello plugin.

use extism_pdk::{FnResult, plugin_fn};

#[plugin_fn]
pub fn count_vowels(input: Vec<u8>) -> FnResult<String> {
    Ok(vowels::count_vowels(&input).to_string())
}
