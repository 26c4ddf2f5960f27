//! Durations as users write them (`250ms`, `5s`, `2m`, `1.5`), and the short forms pm prints.

use std::time::Duration;

use crate::error::{Error, Result};

/// Longest duration accepted: longer ones are surely typos, and would overflow deadlines.
pub const MAX: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Parses a duration; a bare number is seconds and may have a fraction.
pub fn parse(s: &str) -> Result<Duration> {
    parse_any(s).and_then(|d| {
        if d > MAX {
            Err(Error::InvalidDuration(s.into()))
        } else {
            Ok(d)
        }
    })
}

fn parse_any(s: &str) -> Result<Duration> {
    let t = s.trim();
    let bad = || Error::InvalidDuration(s.into());
    if t.is_empty() {
        return Err(bad());
    }
    if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = t.parse().map_err(|_| bad())?;
        return Duration::try_from_secs_f64(secs).map_err(|_| bad());
    }
    // `1.5s`: humantime takes integers only, so handle a fractional number + unit here.
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.contains('.') {
        let v: f64 = num.parse().map_err(|_| bad())?;
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        return Duration::try_from_secs_f64(v * scale).map_err(|_| bad());
    }
    humantime::parse_duration(t).map_err(|_| bad())
}

/// `3m12s`, `2h5m`, `4d1h`, `42s`: two units at most, for uptime columns.
pub fn short(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d{hours}h")
    } else if hours > 0 {
        format!("{hours}h{mins}m")
    } else if mins > 0 {
        format!("{mins}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

/// `35ms`, `1.20s`: for "stopped in ..." messages.
pub fn elapsed(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert_eq!(parse("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("0.5m").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
    }

    #[test]
    fn rejects_junk() {
        for bad in [
            "",
            "abc",
            "-1",
            "5x",
            "1.2.3",
            "s",
            "1e9999",
            "1.5q",
            "10000000000000000000",
            "11y",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn short_uses_two_units() {
        assert_eq!(short(Duration::from_secs(42)), "42s");
        assert_eq!(short(Duration::from_secs(192)), "3m12s");
        assert_eq!(short(Duration::from_secs(2 * 3600 + 5 * 60 + 7)), "2h5m");
        assert_eq!(short(Duration::from_secs(4 * 86400 + 3600 + 59)), "4d1h");
    }

    #[test]
    fn elapsed_switches_to_seconds() {
        assert_eq!(elapsed(Duration::from_millis(35)), "35ms");
        assert_eq!(elapsed(Duration::from_millis(1200)), "1.20s");
    }
}
