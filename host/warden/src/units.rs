//! Human-friendly sizes (`64MiB`, `64Mi`) and durations (`300ms`, `1m30s`),
//! parsed and printed the same way by the CLI, the manifest and the
//! library's messages.
//!
//! Written by hand because no maintained crate reads exactly this syntax, and
//! flags and manifests already written must keep their meaning. Checked
//! against humantime 2.4, bytesize 2.7, parse-size 1.1 and byte-unit 5.2:
//! - Sizes: `64M`, `1G` and `4k` are binary here (64 MiB) but decimal in all
//!   three size crates; parse-size's binary mode then makes `2MB` binary too
//!   (decimal here). bytesize accepts `.5M` and saturates
//!   `99999999999999999999GiB` to `u64::MAX`, parse-size accepts `1e3`, and
//!   parse-size and byte-unit round a unitless `1.5` to 2 bytes: all refused
//!   here. bytesize and parse-size refuse ` 8 MiB ` (spaces around), which
//!   is accepted here. Kubernetes' binary suffixes (`64Mi`) are read as
//!   Kubernetes reads them.
//! - Durations: humantime refuses fractions (`1.5s`, accepted here) and
//!   reads units refused here (`5sec`, `1d`, `2 weeks`, and `1M`, a month);
//!   both read compound durations (`1m30s`).
//! - Printing: bytesize writes `64.0 MiB` (`64 MiB` here) and humantime
//!   `12ms 345us` (`12.3 ms` here); reports and messages quote these texts.

use std::fmt;
use std::time::Duration;

/// A value that could not be parsed; the message says what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(String);

impl ParseError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        ParseError(message.into())
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// What [`parse_size`] accepts, for its errors.
const SIZE_FORMS: &str = "expected bytes (1048576) or a number with a unit: binary 64KiB, 64MiB, 1GiB \
     (also written 64Ki, 64Mi, 1Gi or 64K, 64M, 1G) or decimal 64KB, 64MB, 1GB";

/// What [`parse_duration`] accepts, for its errors.
const DURATION_FORMS: &str = "expected a number with a unit (ns, us, ms, s, m or h), or several \
     added together, such as 300ms, 1.5s, 2m or 1m30s";

/// Parses a size in bytes.
///
/// Accepts a plain number of bytes (`1048576`), binary units (`64KiB`,
/// `64MiB`, `1GiB`, `1TiB`, Kubernetes' `64Ki`, `64Mi`, `1Gi`, `1Ti`, or
/// the short forms `64K`, `64M`, `1G`, `1T`) and decimal units (`64KB`,
/// `64MB`, `1GB`, `1TB`). Units are case-insensitive; a fractional number
/// is allowed with a unit (`1.5MiB`).
///
/// ```
/// assert_eq!(warden::units::parse_size("64MiB"), Ok(64 << 20));
/// assert_eq!(warden::units::parse_size("64Mi"), Ok(64 << 20));
/// assert_eq!(warden::units::parse_size("64M"), Ok(64 << 20));
/// assert_eq!(warden::units::parse_size("1000"), Ok(1000));
/// assert!(warden::units::parse_size("lots").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, ParseError> {
    let invalid = || ParseError::new(format!("invalid size `{text}`: {SIZE_FORMS}"));
    let (number, unit) = split_number(text.trim()).ok_or_else(invalid)?;
    let multiplier: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => 1 << 10,
        "m" | "mi" | "mib" => 1 << 20,
        "g" | "gi" | "gib" => 1 << 30,
        "t" | "ti" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(invalid()),
    };
    if multiplier == 1 {
        return number.parse::<u64>().map_err(|_| invalid());
    }
    let value: f64 = number.parse().map_err(|_| invalid())?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(invalid());
    }
    Ok(bytes.round() as u64)
}

/// Parses a duration such as `300ms`, `5s`, `1.5s`, `2m`, `250us`, or a
/// compound one such as `1m30s` or `1h 30m` (the parts are added).
///
/// Each part needs a unit: `ns`, `us` (or `µs`), `ms`, `s`, `m` (or `min`)
/// or `h`.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(warden::units::parse_duration("300ms"), Ok(Duration::from_millis(300)));
/// assert_eq!(warden::units::parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert_eq!(warden::units::parse_duration("1m30s"), Ok(Duration::from_secs(90)));
/// assert!(warden::units::parse_duration("5").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, ParseError> {
    let invalid = || ParseError::new(format!("invalid duration `{text}`: {DURATION_FORMS}"));
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let (number, after) = split_number(rest).ok_or_else(invalid)?;
        let after = after.trim_start();
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c.is_whitespace())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let seconds_per_unit = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let part = Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|_| invalid())?;
        total = total.checked_add(part).ok_or_else(invalid)?;
        rest = next.trim_start();
    }
    Ok(total)
}

/// Parses a duration as [`parse_duration`] does, refusing zero: for
/// timeouts and intervals, where zero would fail every call or spin.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(warden::units::parse_positive_duration("2s"), Ok(Duration::from_secs(2)));
/// assert!(warden::units::parse_positive_duration("0s").is_err());
/// ```
pub fn parse_positive_duration(text: &str) -> Result<Duration, ParseError> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(ParseError::new(format!(
            "`{}` is zero; give a duration longer than zero, such as 300ms, 5s or 1m30s",
            text.trim()
        )));
    }
    Ok(duration)
}

/// Splits `64MiB` into `("64", "MiB")`; `None` when there is no number.
fn split_number(text: &str) -> Option<(&str, &str)> {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    if number.is_empty() || number.starts_with('.') {
        return None;
    }
    Some((number, unit))
}

/// Formats bytes with the largest binary unit that keeps the number ≥ 1,
/// e.g. `64 MiB`, `1.5 KiB`, `12 B`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for next in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {unit}")
}

/// Formats a duration compactly with a unit that suits its size, e.g.
/// `15 ns`, `850 µs`, `12.3 ms`, `5 s`.
pub fn format_duration(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 1.0 {
        return format!("{} ns", duration.as_nanos());
    }
    let (value, unit) = if micros < 1_000.0 {
        (micros, "µs")
    } else if micros < 1_000_000.0 {
        (micros / 1e3, "ms")
    } else {
        (micros / 1e6, "s")
    };
    let text = if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    };
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("64mib"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("1.5MiB"), Ok(3 << 19));
        assert_eq!(parse_size(" 8 MiB "), Ok(8 << 20));
        assert_eq!(parse_size("64Mi"), Ok(64 << 20));
        assert_eq!(parse_size("512Ki"), Ok(512 << 10));
        assert_eq!(parse_size("2Gi"), Ok(2 << 30));
        assert_eq!(parse_size("1Ti"), Ok(1 << 40));
        assert_eq!(parse_size("1TB"), Ok(1_000_000_000_000));
        for bad in [
            "",
            "MiB",
            "-1",
            "1.5",
            "64XB",
            "64Mii",
            "1m30s",
            "1e3",
            ".5M",
            "99999999999999999999GiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 5 s "), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2s500ms"), Ok(Duration::from_millis(2500)));
        for bad in [
            "",
            "5",
            "s",
            "5 parsecs",
            "-1s",
            "1e400s",
            "1m30",
            "1m-30s",
            "1d",
            "5sec",
            "1M",
        ] {
            let error = parse_duration(bad).expect_err(bad).to_string();
            assert!(
                error.contains("such as 300ms, 1.5s, 2m or 1m30s"),
                "{error}"
            );
        }
    }

    #[test]
    fn positive_durations_refuse_zero() {
        assert_eq!(parse_positive_duration("1ms"), Ok(Duration::from_millis(1)));
        for zero in ["0s", "0ms", "0m0s"] {
            let error = parse_positive_duration(zero).expect_err(zero).to_string();
            assert!(
                error.contains("is zero; give a duration longer than zero"),
                "{error}"
            );
        }
        assert!(parse_positive_duration("soon").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_bytes(12), "12 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(64 << 20), "64 MiB");
        assert_eq!(format_duration(Duration::from_nanos(15)), "15 ns");
        assert_eq!(format_duration(Duration::from_micros(850)), "850 µs");
        assert_eq!(format_duration(Duration::from_micros(12_345)), "12.3 ms");
        assert_eq!(format_duration(Duration::from_secs(5)), "5 s");
    }
}
