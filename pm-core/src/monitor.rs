//! Opt-in supervision (`pm-start --restart`): the policy a record carries, how a service
//! ended, and how the other tools deal with a service's monitor.
//!
//! The monitor is one small process per supervised service, the parent of the service
//! (so it reads the exit status from the kernel, not from a guess). It is recorded by
//! identity like any process pm acts on. Every tool that stops a service stops its monitor
//! *first* and waits for it to be gone, so a stop never races a restart: once the monitor
//! is gone, nothing will start the service again, and the one stop algorithm does the
//! rest under the name's lock.

use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

use crate::error::{Error, Result};
use crate::process::{self, Handle};
pub use crate::record::{
    Exit, Policy, Restart, DEFAULT_DELAY, DEFAULT_MAX_RESTARTS, DEFAULT_WINDOW,
};
use crate::record::{Proc, Record};

impl Policy {
    pub fn parse(s: &str) -> Result<Policy> {
        match s {
            "no" => Ok(Policy::No),
            "on-failure" => Ok(Policy::OnFailure),
            "always" => Ok(Policy::Always),
            _ => Err(Error::InvalidArgument {
                what: "restart policy",
                value: s.into(),
                reason: "expected no, on-failure or always".into(),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::No => "no",
            Policy::OnFailure => "on-failure",
            Policy::Always => "always",
        }
    }

    /// Does an exit like `exit` call for a restart?
    pub fn restarts_after(self, exit: &Exit) -> bool {
        match self {
            Policy::No => false,
            Policy::OnFailure => !exit.is_clean(),
            Policy::Always => true,
        }
    }
}

/// The delay never grows past this (or past `--restart-delay`, if that is longer).
pub const MAX_DELAY: Duration = Duration::from_secs(30);
impl Restart {
    /// The delay before restart number `n` (1-based) of a run of quick failures: the first
    /// delay, doubled each time, capped.
    pub fn delay_before(&self, n: u32) -> Duration {
        let cap = MAX_DELAY.max(self.delay);
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.delay.saturating_mul(factor).min(cap)
    }
}

/// `--max-restarts N[/WINDOW]`: `5`, `5/10s`, `0` (never give up).
pub fn parse_max_restarts(s: &str) -> Result<(u32, Option<Duration>)> {
    let (n, w) = match s.split_once('/') {
        Some((n, w)) => (n, Some(crate::duration::parse(w)?)),
        None => (s, None),
    };
    let n = n
        .trim()
        .parse::<u32>()
        .map_err(|_| Error::InvalidArgument {
            what: "--max-restarts",
            value: s.into(),
            reason: "expected N or N/WINDOW, e.g. 5/10s".into(),
        })?;
    if w.is_some_and(|w| w.is_zero()) {
        return Err(Error::InvalidArgument {
            what: "--max-restarts",
            value: s.into(),
            reason: "the window must be longer than 0".into(),
        });
    }
    Ok((n, w))
}

impl Exit {
    /// From a `waitpid` status; `None` for statuses that are not an end (stopped, ...).
    pub fn from_status(status: WaitStatus) -> Option<Exit> {
        let at = crate::record::now_rfc3339();
        match status {
            WaitStatus::Exited(_, code) => Some(Exit {
                code: Some(code),
                at,
                ..Exit::default()
            }),
            WaitStatus::Signaled(_, sig, core) => Some(Exit {
                signal: Some(crate::signal::name(sig).to_string()),
                core,
                at,
                ..Exit::default()
            }),
            _ => None,
        }
    }

    /// An end whose status is not known, with what is known instead.
    pub fn unknown(reason: impl Into<String>) -> Exit {
        Exit {
            at: crate::record::now_rfc3339(),
            reason: Some(reason.into()),
            ..Exit::default()
        }
    }

    /// Exit code 0: what `--restart on-failure` leaves alone.
    pub fn is_clean(&self) -> bool {
        self.code == Some(0)
    }

    /// "exited 3", "killed by SIGSEGV (core dumped)", or the reason.
    pub fn describe(&self) -> String {
        match (&self.code, &self.signal, &self.reason) {
            (Some(c), _, _) => format!("exited {c}"),
            (None, Some(s), _) => format!(
                "killed by SIG{s}{}",
                if self.core { " (core dumped)" } else { "" }
            ),
            (None, None, Some(r)) => r.clone(),
            (None, None, None) => "ended".into(),
        }
    }
}

/// The recorded monitor, if it is still the process that was recorded (never a PID
/// successor). A monitor of another boot is gone.
pub fn live_monitor(rec: &Record) -> Option<Handle> {
    let m = rec.monitor.as_ref()?;
    if !rec.this_boot() {
        return None;
    }
    let expect = m.expect(rec.boot_id.as_deref()?);
    let h = Handle::open(m.pid, &expect).ok()?.ok()?;
    (!h.is_gone()).then_some(h)
}

/// Is the recorded monitor alive? (The monitor asking about itself: yes.)
pub fn is_supervised(rec: &Record) -> bool {
    let own = rec
        .monitor
        .is_some_and(|m| m.pid == std::process::id() as i32);
    if own {
        return me().ok() == rec.monitor;
    }
    live_monitor(rec).is_some()
}

/// Stops the recorded monitor and waits until it is gone: SIGTERM, then (after `timeout`,
/// a monitor busy stopping a half-restarted service gets the service's stop timeout)
/// SIGKILL. Called without the name's lock held (the monitor may need it to finish a
/// restart it is in). Returns whether there was a monitor to stop.
pub fn stop_monitor(rec: &Record, timeout: Duration) -> Result<bool> {
    let Some(h) = live_monitor(rec) else {
        return Ok(false);
    };
    h.signal(Signal::SIGTERM)?;
    // A stopped (SIGSTOP) monitor would sit on the TERM until the deadline.
    h.signal(Signal::SIGCONT)?;
    let deadline = process::deadline(timeout.saturating_add(Duration::from_secs(1)));
    if !process::wait_all_gone(&[&h], deadline) {
        h.signal(Signal::SIGKILL)?;
        if !process::wait_all_gone(&[&h], process::deadline(process::KILL_WAIT)) {
            return Err(Error::Process {
                pid: h.pid,
                err: std::io::Error::other("the service's monitor survived SIGKILL"),
            });
        }
    }
    Ok(true)
}

/// This process, as a record's `monitor`.
pub fn me() -> Result<Proc> {
    let pid = std::process::id() as i32;
    let stat = process::Stat::read(pid)?.ok_or_else(|| Error::Process {
        pid,
        err: std::io::Error::from_raw_os_error(libc::ESRCH),
    })?;
    Ok(Proc {
        pid,
        start_time: stat.start_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let r = Restart {
            delay: Duration::from_millis(100),
            ..Restart::default()
        };
        assert_eq!(r.delay_before(1), Duration::from_millis(100));
        assert_eq!(r.delay_before(2), Duration::from_millis(200));
        assert_eq!(r.delay_before(4), Duration::from_millis(800));
        assert_eq!(r.delay_before(40), MAX_DELAY);
        let long = Restart {
            delay: Duration::from_secs(60),
            ..Restart::default()
        };
        assert_eq!(long.delay_before(3), Duration::from_secs(60));
    }

    #[test]
    fn parses_policies_and_limits() {
        assert_eq!(Policy::parse("on-failure").unwrap(), Policy::OnFailure);
        assert!(Policy::parse("sometimes").is_err());
        assert_eq!(parse_max_restarts("5").unwrap(), (5, None));
        assert_eq!(
            parse_max_restarts("3/1m").unwrap(),
            (3, Some(Duration::from_secs(60)))
        );
        assert!(parse_max_restarts("x").is_err());
        assert!(parse_max_restarts("3/0").is_err());
    }

    #[test]
    fn describes_exits_in_words() {
        let segv = WaitStatus::Signaled(nix::unistd::Pid::from_raw(1), Signal::SIGSEGV, true);
        let e = Exit::from_status(segv).unwrap();
        assert_eq!(e.describe(), "killed by SIGSEGV (core dumped)");
        assert!(!e.is_clean());
        assert!(Policy::OnFailure.restarts_after(&e));
        let ok = Exit::from_status(WaitStatus::Exited(nix::unistd::Pid::from_raw(1), 0)).unwrap();
        assert!(!Policy::OnFailure.restarts_after(&ok));
        assert!(Policy::Always.restarts_after(&ok));
        assert_eq!(ok.describe(), "exited 0");
    }
}
