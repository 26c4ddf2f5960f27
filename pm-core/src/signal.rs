//! Signal names as users write them: `TERM`, `SIGTERM`, `term`, `15`.

use std::str::FromStr;

pub use nix::sys::signal::Signal;

use crate::error::{Error, Result};

/// Parses a signal name or number.
pub fn parse(s: &str) -> Result<Signal> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let n: i32 = t.parse().map_err(|_| Error::InvalidSignal(s.into()))?;
        return Signal::try_from(n).map_err(|_| Error::InvalidSignal(s.into()));
    }
    let upper = t.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&full).map_err(|_| Error::InvalidSignal(s.into()))
}

/// The short name users know (`TERM` for SIGTERM).
pub fn name(sig: Signal) -> &'static str {
    let s = sig.as_str();
    s.strip_prefix("SIG").unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_prefixed_names_and_numbers() {
        assert_eq!(parse("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse("term").unwrap(), Signal::SIGTERM);
        assert_eq!(parse("15").unwrap(), Signal::SIGTERM);
        assert_eq!(parse("QUIT").unwrap(), Signal::SIGQUIT);
        assert_eq!(parse("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse("sigint").unwrap(), Signal::SIGINT);
    }

    #[test]
    fn rejects_junk() {
        for bad in ["", "0", "65", "-15", "FOO", "SIG", "15x", "99999999999"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn short_name_round_trips() {
        for s in [
            Signal::SIGTERM,
            Signal::SIGQUIT,
            Signal::SIGINT,
            Signal::SIGKILL,
        ] {
            assert_eq!(parse(name(s)).unwrap(), s);
        }
        assert_eq!(name(Signal::SIGTERM), "TERM");
    }
}
