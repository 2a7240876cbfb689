//! Human units in config and flags: durations (`250ms`, `5s`, `1m`, `1h`)
//! and byte sizes (`512MiB`, `64KiB`, `1GB`).
//!
//! One parser for both the config loader and the CLI, so a value that works
//! in a flag works in the file and the other way round. Errors are plain
//! sentences that say what was expected; the caller adds the key path.

use std::time::Duration;

/// Parses a duration such as `250ms`, `5s`, `1.5s`, `1m`, `2h`, or `0`.
///
/// A bare number is refused (except `0`): `timeout: 5` is ambiguous, and an
/// operator who meant seconds and got milliseconds finds out in production.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| {
            format!("expected a duration with a unit like 250ms, 5s or 1m, found {text:?}")
        })?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("expected a duration like 250ms, 5s or 1m, found {text:?}"))?;
    let scale = match unit {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "unknown duration unit {unit:?} in {text:?}; use us, ms, s, m or h"
            ))
        }
    };
    let seconds = value * scale;
    if !seconds.is_finite() || seconds > 365.0 * 24.0 * 3600.0 {
        return Err(format!(
            "duration {text:?} is out of range (at most 365 days)"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Formats a duration the way the config writes it, choosing the largest
/// unit that keeps the value whole (`1500ms`, `5s`, `2m`).
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (unit, size) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if nanos % size == 0 {
            return format!("{}{unit}", nanos / size);
        }
    }
    format!("{}us", nanos / 1_000)
}

/// Formats a duration for people, rounded to what a reader can use: whole
/// milliseconds under a second (`268ms`, not `267928us`), tenths of a
/// second under a minute (`1.5s`), whole seconds above (`2m`, `90s`).
pub fn format_duration_rounded(duration: Duration) -> String {
    let millis = duration.as_secs_f64() * 1000.0;
    if millis < 1000.0 {
        let whole = millis.round() as u64;
        if whole == 0 && !duration.is_zero() {
            return "<1ms".to_owned();
        }
        // 999.6ms rounds up to a whole second.
        if whole < 1000 {
            return format!("{whole}ms");
        }
    }
    if millis < 60_000.0 {
        let tenths = (millis / 100.0).round() as u64;
        if tenths % 10 == 0 {
            return format!("{}s", tenths / 10);
        }
        return format!("{}.{}s", tenths / 10, tenths % 10);
    }
    format_duration(Duration::from_secs(duration.as_secs_f64().round() as u64))
}

/// Parses a byte size such as `512MiB`, `64KiB`, `1GB`, `1024` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("expected a size like 64KiB or 512MiB, found {text:?}"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?}; use B, KiB, MiB, GiB, KB, MB or GB"
            ))
        }
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// Formats a byte count with the largest binary unit that keeps it whole.
pub fn format_size(bytes: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes != 0 && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("99999999h").is_err());
    }

    #[test]
    fn durations_round_trip() {
        for text in ["250ms", "5s", "1m", "2h", "1500ms", "0s", "10us"] {
            let parsed = parse_duration(text).unwrap();
            assert_eq!(format_duration(parsed), text);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("60KiB"), Ok(60 * 1024));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("12 apples").is_err());
        assert!(parse_size("99999999999GiB").is_err());
        assert_eq!(format_size(60 * 1024), "60KiB");
        assert_eq!(format_size(100), "100B");
    }

    #[test]
    fn rounded_durations_read_well() {
        for (duration, text) in [
            (Duration::from_micros(267_928), "268ms"),
            (Duration::from_millis(50), "50ms"),
            (Duration::from_micros(300), "<1ms"),
            (Duration::ZERO, "0ms"),
            (Duration::from_micros(999_700), "1s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(22_178), "22.2s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_millis(90_400), "90s"),
        ] {
            assert_eq!(format_duration_rounded(duration), text);
        }
    }
}
