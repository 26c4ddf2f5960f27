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

/// Ends this process the way `sig` would have, once the caller has cleaned up: default
/// action, unblocked, raised. A shell only stops a loop (`for s in a b; do pm-start …`)
/// when the child died of SIGINT, not when it exited 130. Returns only if the signal did
/// not end the process, with the conventional 128 + N.
pub fn die_by(sig: Signal) -> std::process::ExitCode {
    use nix::sys::signal::{raise, sigprocmask, SigSet, SigmaskHow};
    use std::io::Write;
    let _ = std::io::stderr().flush();
    let _ = std::io::stdout().flush();
    crate::sys::default_action(sig);
    let mut set = SigSet::empty();
    set.add(sig);
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
    let _ = raise(sig);
    std::process::ExitCode::from(128u8.saturating_add(sig as u8))
}

/// The signals that interrupt a tool: Ctrl-C, kill's default, a closed terminal.
pub const INTERRUPTS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

fn mask(signals: &[Signal], how: nix::sys::signal::SigmaskHow) -> Result<()> {
    let mut set = nix::sys::signal::SigSet::empty();
    for s in signals {
        set.add(*s);
    }
    nix::sys::signal::sigprocmask(how, Some(&set), None)
        .map_err(|e| Error::Os(format!("setting the signal mask: {e}")))
}

/// Blocks `signals` for this thread (and the threads it starts later).
pub fn block(signals: &[Signal]) -> Result<()> {
    mask(signals, nix::sys::signal::SigmaskHow::SIG_BLOCK)
}

/// Unblocks `signals`.
pub fn unblock(signals: &[Signal]) -> Result<()> {
    mask(signals, nix::sys::signal::SigmaskHow::SIG_UNBLOCK)
}

/// Blocks `signals` and returns a non-blocking signalfd that reports them, so a wait loop
/// sees a signal as an event like any other.
pub fn signal_fd(signals: &[Signal]) -> Result<nix::sys::signalfd::SignalFd> {
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    block(signals)?;
    let mut set = nix::sys::signal::SigSet::empty();
    for s in signals {
        set.add(*s);
    }
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| Error::Os(format!("signalfd: {e}")))
}

/// [`signal_fd`] of the [`INTERRUPTS`].
pub fn interrupt_fd() -> Result<nix::sys::signalfd::SignalFd> {
    signal_fd(&INTERRUPTS)
}

/// The first signal pending on `fd`, if any (read, so it is consumed).
pub fn pending(fd: &nix::sys::signalfd::SignalFd) -> Option<Signal> {
    let info = fd.read_signal().ok()??;
    Signal::try_from(info.ssi_signo as i32).ok()
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
