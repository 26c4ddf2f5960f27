//! Waiting for services to reach a state (pm-wait), without polling: inotify on the state
//! directory wakes the wait when a record changes (records are renamed into place), and
//! a pidfd on each live service process wakes it when that process ends without a record
//! being written (a crash: the state becomes `dead`).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use crate::error::Result;
use crate::process::{self, Handle};
use crate::status::{inspect, State};
use crate::{signal, Name, StateDir};

/// What pm-wait waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// `running`: started and ready.
    Ready,
    /// Nothing of it runs and nothing will start it again by itself: `stopped`, `dead`,
    /// `failed`, or no record.
    Stopped,
    /// Its process of the moment has ended: as `Stopped`, or in `backoff` (its monitor
    /// restarts it).
    Exited,
}

impl Until {
    pub fn parse(s: &str) -> Option<Until> {
        match s {
            "ready" => Some(Until::Ready),
            "stopped" => Some(Until::Stopped),
            "exited" => Some(Until::Exited),
            _ => None,
        }
    }

    pub fn holds(self, state: State) -> bool {
        match self {
            Until::Ready => state == State::Running,
            Until::Stopped => matches!(
                state,
                State::Stopped | State::Dead | State::Failed | State::Unknown
            ),
            Until::Exited => matches!(state, State::Backoff) || Until::Stopped.holds(state),
        }
    }
}

/// How a wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    /// Every name is in the state waited for.
    Reached,
    /// The limit passed: the names not there yet, with their state.
    TimedOut(Vec<(Name, State)>),
    Interrupted(Signal),
}

/// Waits until every one of `names` is in the state `until` says, at most `limit`.
pub fn wait(
    sd: &StateDir,
    names: &[Name],
    until: Until,
    limit: Option<Duration>,
    interrupts: &SignalFd,
) -> Result<Waited> {
    let watch = sd.watch_records();
    let deadline = limit.map(process::deadline);
    loop {
        if let Some(sig) = signal::pending(interrupts) {
            return Ok(Waited::Interrupted(sig));
        }
        // Looked at after the watch was set up, so no change falls in between.
        let mut pending: Vec<(Name, State)> = Vec::new();
        let mut handles: Vec<Handle> = Vec::new();
        for n in names {
            let seen = inspect(sd, n, None);
            if until.holds(seen.state) {
                continue;
            }
            if let Some((stat, expect)) = &seen.live {
                if let Ok(Ok(h)) = Handle::open(stat.pid, expect) {
                    handles.push(h);
                }
            }
            pending.push((n.clone(), seen.state));
        }
        if pending.is_empty() {
            return Ok(Waited::Reached);
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Ok(Waited::TimedOut(pending));
        }
        let left = deadline.map_or(Duration::MAX, |d| d - now);
        // Without inotify or pidfds, the records are looked at every 20 ms.
        let blind = watch.is_none() || handles.iter().any(|h| h.pidfd().is_none());
        let step = if blind {
            left.min(Duration::from_millis(20))
        } else {
            left
        };
        let mut fds = vec![PollFd::new(interrupts.as_fd(), PollFlags::POLLIN)];
        if let Some(i) = &watch {
            fds.push(PollFd::new(i.as_fd(), PollFlags::POLLIN));
        }
        for fd in handles.iter().filter_map(|h| h.pidfd()) {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        let _ = poll(&mut fds, process::timeout(step));
        if let Some(i) = &watch {
            while matches!(i.read_events(), Ok(e) if !e.is_empty()) {}
        }
    }
}
