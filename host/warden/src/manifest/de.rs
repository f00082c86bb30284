//! How a manifest's values are written: durations and sizes as text
//! (`"5s"`, `"64MiB"`, or a plain number of bytes), and anything that parses
//! from a string as a string. Limits that would fail every call (a zero
//! timeout, zero fuel, a memory below one page) are refused here, with the
//! same checks as the command line's flags.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::options::{check_fuel, check_memory};
use crate::units;

/// A duration longer than zero: a timeout or an interval.
pub(super) fn positive_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    units::parse_positive_duration(&text)
        .map(Some)
        .map_err(de::Error::custom)
}

/// A memory limit: a size of at least one WebAssembly page.
pub(super) fn memory<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    match size(deserializer)? {
        Some(bytes) => check_memory(bytes).map(Some).map_err(de::Error::custom),
        None => Ok(None),
    }
}

/// A fuel limit: more than zero.
pub(super) fn fuel<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    check_fuel(u64::deserialize(deserializer)?)
        .map(Some)
        .map_err(de::Error::custom)
}

pub(super) fn size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Bytes(bytes) => Ok(Some(bytes)),
        Size::Text(text) => units::parse_size(&text)
            .map(Some)
            .map_err(de::Error::custom),
    }
}

pub(super) fn parsed<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    String::deserialize(deserializer)?
        .parse()
        .map(Some)
        .map_err(de::Error::custom)
}

pub(super) fn parsed_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|text| text.parse().map_err(de::Error::custom))
        .collect()
}

/// A table of strings (`env = { GREETING = "hi" }`), as pairs in key order.
pub(super) fn key_value_table<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<(String, String)>, D::Error> {
    Ok(BTreeMap::<String, String>::deserialize(deserializer)?
        .into_iter()
        .collect())
}
