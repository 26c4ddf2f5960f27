//! The parts of a start that must hold under faults: a marker unique to one start, waiting
//! for a concurrent start's outcome, and stopping what a failed start left behind.
//!
//! pm-start keeps the command line, the wait for readiness and the printing; what decides
//! whether a service can be lost lives here, next to the one stop algorithm it uses.

use std::os::fd::AsFd;
use std::process::Child;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::signal::Signal;

use crate::error::Result;
use crate::process::{self, Expect, Handle};
use crate::record::{LastStop, Proc, Record, Starter};
use crate::stop::{self, Outcome, Plan};

/// A marker unique to one start on this host: this pm-start's PID and start time (no two
/// live processes share both), and the wall clock in nanoseconds.
pub fn new_run_id() -> Result<String> {
    let me = std::process::id() as i32;
    let st = process::Stat::read(me)?.map_or(0, |s| s.start_time);
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    Ok(format!("{me}.{st}.{ns}"))
}

/// This process, as a record's `starter`.
pub fn me_as_starter() -> Result<Option<Starter>> {
    Ok(
        process::Stat::read(std::process::id() as i32)?.map(|m| Starter {
            pid: m.pid,
            start_time: m.start_time,
        }),
    )
}

/// How waiting for another pm-start ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaited {
    /// That pm-start has exited: look at the record for its outcome.
    Finished,
    /// The caller was interrupted by this signal.
    Interrupted(Signal),
    /// The deadline passed first.
    TimedOut,
}

/// Waits until the pm-start `starter` exits (event-driven on its pidfd), a signal arrives
/// on `interrupts`, or `limit` passes.
pub fn await_starter(
    starter: &Starter,
    boot_id: &str,
    interrupts: &nix::sys::signalfd::SignalFd,
    limit: Duration,
) -> Result<Awaited> {
    let expect = Expect::StartTime {
        start_time: starter.start_time,
        boot_id: boot_id.to_string(),
    };
    let Ok(h) = Handle::open(starter.pid, &expect)? else {
        return Ok(Awaited::Finished);
    };
    let deadline = process::deadline(limit);
    loop {
        if let Ok(Some(info)) = interrupts.read_signal() {
            if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                return Ok(Awaited::Interrupted(sig));
            }
        }
        if h.is_gone() {
            return Ok(Awaited::Finished);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Awaited::TimedOut);
        }
        let wait = (deadline - now).min(Duration::from_millis(if h.pidfd().is_some() {
            60_000
        } else {
            5
        }));
        let mut fds = vec![PollFd::new(interrupts.as_fd(), PollFlags::POLLIN)];
        if let Some(fd) = h.pidfd() {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        let _ = poll(&mut fds, process::timeout(wait));
    }
}

/// Stops everything a failed start left running, with the one stop algorithm: the tracked
/// process (if any) with its group and session, then the daemons that forked away and were
/// re-parented to this pm-start (a child subreaper). The launcher, our own child, is
/// reaped only at the end: as a zombie its PID keeps its group and session ids from being
/// reused while what is left of them is stopped.
pub fn stop_failed(
    sd: &crate::StateDir,
    rec: &Record,
    leader: Option<Handle>,
    born_after: u64,
    mut child: Option<Child>,
    signal: Signal,
    timeout: Duration,
) -> Result<Option<LastStop>> {
    // Daemons that forked away and were re-parented to us: part of the same stop, under
    // the same deadline (not one stop, and one timeout, each).
    let me = std::process::id() as i32;
    let launcher = child.as_ref().map(|c| c.id() as i32);
    let known: Vec<Proc> = process::descendants(me)
        .unwrap_or_else(process::scan)
        .into_iter()
        .filter(|s| s.ppid == me && s.start_time >= born_after && Some(s.pid) != launcher)
        .map(|s| Proc {
            pid: s.pid,
            start_time: s.start_time,
        })
        .collect();
    let plan = Plan {
        marker: rec.marker(),
        leader: leader.filter(|h| !h.is_gone()),
        pgid: rec.pgid,
        sid: rec.sid,
        born_after,
        signal,
        timeout,
        kill: true,
        known,
        cgroup: rec.cgroup(sd),
    };
    let outcome = stop::stop(plan, &mut |_| {})?;
    if let Some(c) = child.as_mut() {
        let _ = c.try_wait();
    }
    Ok(match outcome {
        Outcome::AlreadyGone => None,
        o => Some(o.last_stop("pm-start")),
    })
}
