//! Waiting until the service is up: event-driven on the service's pidfd, the interrupt
//! signalfd and the notify socket; ready checks are retried with a short backoff (1 ms
//! doubling to 5 ms; `exec:` commands at most every 50 ms) so pm-start returns soon after
//! the service is ready.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::lineage::Lineage;
use crate::process::{self, Handle};
use crate::ready::{self, Check, LogFollower, NotifySocket, PidfileBaseline};
use crate::record::PidfileBy;
use crate::signal;
use crate::spawn::Spawned;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

/// Longest pause between two attempts of a polled check (tcp:, unix:, file:, pidfile): it
/// bounds how late pm-start notices a service that became ready; a refused connect costs
/// microseconds, so 200 attempts a second while waiting are cheap.
const BACKOFF_MAX: Duration = Duration::from_millis(5);

/// The process pm-start is watching.
pub(crate) enum Tracked {
    /// The command pm-start spawned (our child: its exit status is ours to read).
    Child(Spawned),
    /// A process found through the PID file or `MAINPID=` (a daemon's fork).
    Other(Handle),
    /// The launcher exited 0; waiting for the PID file to name the daemon.
    None,
}

impl Tracked {
    fn handle(&self) -> Option<&Handle> {
        match self {
            Tracked::Child(s) => Some(&s.handle),
            Tracked::Other(h) => Some(h),
            Tracked::None => None,
        }
    }
}

/// How the wait ended.
pub(crate) enum WaitEnd {
    Ready {
        pid: i32,
        start_time: u64,
    },
    Failed {
        reason: String,
        exit_code: Option<i32>,
        signal: Option<String>,
    },
    Interrupted(Signal),
}

pub(crate) struct Waiter<'a> {
    pub tracked: Tracked,
    pub checks: Vec<Check>,
    pub follower: LogFollower,
    pub notify: Option<&'a mut NotifySocket>,
    pub interrupts: &'a SignalFd,
    pub pidfile: &'a Path,
    pub pidfile_by: PidfileBy,
    pub baseline: PidfileBaseline,
    pub cwd: &'a Path,
    /// The service's `--user`, for the `exec:` probes.
    pub user: Option<&'a crate::spawn::Credentials>,
    pub grace: Duration,
    pub ready_timeout: Duration,
    /// Start time of the launched process: a daemon or MAINPID must not be older.
    pub born_after: u64,
    /// The coarse wall clock just before the spawn: a `file:` must not be older.
    pub spawned_at: SystemTime,
    /// The service's NAME, for messages.
    pub name: &'a str,
    /// The start's cgroup, if it has one.
    pub cgroup: Option<crate::cgroup::Cgroup>,
    /// `exec:` checks in progress, by check index.
    pub execs: HashMap<usize, ready::ExecProbe>,
    /// A note that a check could not be verified has been printed.
    pub noted: bool,
}

fn failed(reason: String) -> WaitEnd {
    WaitEnd::Failed {
        reason,
        exit_code: None,
        signal: None,
    }
}

impl Waiter<'_> {
    /// The tracked process, once the probes are gone (they must not outlive the wait,
    /// nor be taken for the service's processes by a clean-up).
    pub fn into_tracked(self) -> Tracked {
        self.tracked
    }

    /// The processes of this start (see [`Lineage`]).
    fn lineage(&self) -> Lineage {
        Lineage {
            starter: std::process::id() as i32,
            launcher: match &self.tracked {
                Tracked::Child(s) => s.pid(),
                Tracked::Other(h) => h.pid,
                Tracked::None => 0,
            },
            born_after: self.born_after,
            probe_groups: self.execs.values().filter_map(|e| e.pgid()).collect(),
            cgroup: self.cgroup.clone(),
        }
    }

    /// Whether a process the service names (MAINPID=, its PID file) is one of this start's.
    fn of_this_start(&self, pid: i32) -> bool {
        self.lineage().contains(pid)
    }

    pub fn run(&mut self) -> WaitEnd {
        let grace_end = process::deadline(self.grace);
        let deadline = process::deadline(self.ready_timeout).max(grace_end);
        let mut passed = vec![false; self.checks.len()];
        let mut backoff = Duration::from_millis(1);
        loop {
            if let Some(sig) = crate::signal::pending(self.interrupts) {
                return WaitEnd::Interrupted(sig);
            }
            if let Some(end) = self.take_notify() {
                return end;
            }
            if let Some(end) = self.follow() {
                return end;
            }
            let now = Instant::now();
            if self.tracked.handle().is_some() {
                let checks = std::mem::take(&mut self.checks);
                for (i, c) in checks.iter().enumerate() {
                    if !passed[i] {
                        passed[i] = self.probe(i, c);
                    }
                }
                self.checks = checks;
                if now >= grace_end && passed.iter().all(|p| *p) {
                    if let Some(h) = self.tracked.handle() {
                        if h.is_gone() {
                            continue;
                        }
                        if let Some(end) = self.up() {
                            return end;
                        }
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let pending: Vec<String> = self
                    .checks
                    .iter()
                    .zip(&passed)
                    .filter(|(_, p)| !**p)
                    .map(|(c, _)| describe(c))
                    .collect();
                let pidfile_pending = self.pidfile_by == PidfileBy::Service
                    && matches!(self.tracked, Tracked::Child(_));
                return failed(if self.tracked.handle().is_none() {
                    format!(
                        "the launcher exited but {} never named a live process within {}",
                        self.pidfile.display(),
                        crate::duration::elapsed(self.ready_timeout)
                    )
                } else if pending.is_empty() && pidfile_pending {
                    format!(
                        "{} never named a live process within {}",
                        self.pidfile.display(),
                        crate::duration::elapsed(self.ready_timeout)
                    )
                } else {
                    format!(
                        "not ready within {}: {} did not pass",
                        crate::duration::elapsed(self.ready_timeout),
                        pending.join(", ")
                    )
                });
            }
            let mut until = deadline.min(now + backoff);
            if now < grace_end {
                until = until.min(grace_end);
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            let mut fds = vec![PollFd::new(self.interrupts.as_fd(), PollFlags::POLLIN)];
            if let Some(fd) = self.tracked.handle().and_then(|h| h.pidfd()) {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
            if let Some(n) = self.notify.as_deref() {
                fds.push(PollFd::new(n.fd(), PollFlags::POLLIN));
            }
            fds.extend(
                self.execs
                    .values()
                    .filter_map(|e| e.pidfd())
                    .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
            );
            let _ = poll(
                &mut fds,
                process::timeout(until.saturating_duration_since(Instant::now())),
            );
        }
    }

    /// The service is up (its checks passed): which process to track. With a PID file the
    /// service writes itself, that is the process the file names, and until the file names
    /// a live process the service is not up yet: a self-daemonizer's launcher (nginx,
    /// `daemon on;`) may still be alive, about to exit, when its sockets already accept.
    fn up(&mut self) -> Option<WaitEnd> {
        let h = self.tracked.handle()?;
        let ready = |h: &Handle| WaitEnd::Ready {
            pid: h.pid,
            start_time: h.start_time,
        };
        if self.pidfile_by == PidfileBy::Pm || !matches!(self.tracked, Tracked::Child(_)) {
            return Some(ready(h));
        }
        let (pid, expect) = ready::fresh_pid(self.pidfile, &self.baseline, self.born_after)?;
        if pid == h.pid {
            return Some(ready(h));
        }
        // The pidfd first, so the lineage check is about this very process.
        let daemon = Handle::open(pid, &expect).ok()?.ok()?;
        if !self.of_this_start(pid) {
            return None;
        }
        let end = ready(&daemon);
        self.tracked = Tracked::Other(daemon);
        Some(end)
    }

    /// Reads the notify socket; `MAINPID=` hands tracking over to the process it names.
    fn take_notify(&mut self) -> Option<WaitEnd> {
        let n = self.notify.as_deref_mut()?;
        n.drain();
        let main = n.main_pid.take()?;
        if self.tracked.handle().map(|h| h.pid) != Some(main) {
            let now = process::Expect::WrittenBy {
                mtime: std::time::SystemTime::now(),
                owner: None,
            };
            // Only the launched process or one it started can be the service's main process.
            // The pidfd is opened first, so the check below is about this very process.
            match Handle::open(main, &now) {
                Ok(Ok(h)) if self.of_this_start(main) => self.tracked = Tracked::Other(h),
                Ok(Ok(h)) if h.start_time < self.born_after => {
                    return Some(failed(format!(
                        "MAINPID={main} names a process older than the service"
                    )))
                }
                Ok(Ok(_)) => {
                    return Some(failed(format!(
                        "MAINPID={main} is not a process of the service (neither the process pm started nor one it forked)"
                    )))
                }
                _ => return Some(failed(format!("MAINPID={main} is not a live process"))),
            }
        }
        None
    }

    /// Notices the tracked process exiting; follows a launcher to its daemon.
    fn follow(&mut self) -> Option<WaitEnd> {
        match &mut self.tracked {
            Tracked::Child(s) => {
                let status = match s.child.try_wait() {
                    Ok(Some(st)) => st,
                    _ => return None,
                };
                // A launcher may announce its main process (MAINPID=) and exit at once: a
                // datagram sent before it exited is read before its exit counts.
                if let Some(end) = self.take_notify() {
                    return Some(end);
                }
                if !matches!(self.tracked, Tracked::Child(_)) {
                    return None;
                }
                use std::os::unix::process::ExitStatusExt;
                if status.success() && self.pidfile_by == PidfileBy::Service {
                    self.tracked = Tracked::None;
                    return self.follow();
                }
                Some(match (status.code(), status.signal()) {
                    (Some(code), _) => WaitEnd::Failed {
                        reason: format!("exited with status {code}"),
                        exit_code: Some(code),
                        signal: None,
                    },
                    (None, Some(sig)) => {
                        let name = Signal::try_from(sig)
                            .map(|s| signal::name(s).to_string())
                            .unwrap_or_else(|_| sig.to_string());
                        WaitEnd::Failed {
                            reason: format!("killed by SIG{name}"),
                            exit_code: None,
                            signal: Some(name),
                        }
                    }
                    _ => failed("exited".into()),
                })
            }
            Tracked::Other(h) => h.is_gone().then(|| failed(format!("pid {} exited", h.pid))),
            Tracked::None => {
                if let Some((pid, expect)) =
                    ready::fresh_pid(self.pidfile, &self.baseline, self.born_after)
                {
                    if let Ok(Ok(h)) = Handle::open(pid, &expect) {
                        if self.of_this_start(pid) {
                            self.tracked = Tracked::Other(h);
                        }
                    }
                }
                None
            }
        }
    }

    fn probe(&mut self, index: usize, c: &Check) -> bool {
        match c {
            Check::Pidfile => match self.pidfile_by {
                PidfileBy::Pm => true,
                PidfileBy::Service => {
                    ready::fresh_pid(self.pidfile, &self.baseline, self.born_after).is_some()
                }
            },
            Check::Tcp(t) => {
                let e = ready::tcp_ready(t, Duration::from_millis(100), &self.lineage());
                self.judge(c, e)
            }
            Check::Unix(p) => {
                let e = ready::unix_ready(p, &self.lineage());
                self.judge(c, e)
            }
            // Evidence from this start: written after the spawn, and not a symlink to
            // something older.
            Check::File(p) => {
                crate::untrusted::entry_changed(p).is_some_and(|t| t >= self.spawned_at)
            }
            Check::Exec(cmd) => self
                .execs
                .entry(index)
                .or_insert_with(|| ready::ExecProbe::new(cmd, self.cwd, self.user))
                .poll()
                .unwrap_or(false),
            Check::Log(re) => self.follower.matches(re),
            Check::Notify => self.notify.as_deref().is_some_and(|n| n.ready),
        }
    }
}

impl Waiter<'_> {
    /// A listener that accepts but cannot be traced to the service still counts, said once.
    fn judge(&mut self, c: &Check, e: ready::Evidence) -> bool {
        match e {
            ready::Evidence::Ours => true,
            ready::Evidence::No => false,
            ready::Evidence::Unverifiable(why) => {
                if !self.noted {
                    self.noted = true;
                    crate::report::say(
                        "pm-start",
                        self.name,
                        format!("note: {} accepts, but whether the service listens cannot be verified ({why}); counting it as ready", describe(c)),
                    );
                }
                true
            }
        }
    }
}

fn describe(c: &Check) -> String {
    match c {
        Check::Pidfile => "pidfile".into(),
        Check::Tcp(t) => format!("tcp:{t}"),
        Check::Unix(p) => format!("unix:{}", p.display()),
        Check::File(p) => format!("file:{}", p.display()),
        Check::Exec(c) => format!("exec:{c}"),
        Check::Log(r) => format!("log:{}", r.as_str()),
        Check::Notify => "notify".into(),
    }
}
