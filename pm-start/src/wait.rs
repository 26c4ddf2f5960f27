//! Waiting until the service is up: event-driven on the service's pidfd, the interrupt
//! signalfd and the notify socket; ready checks are retried with a short backoff (1 ms
//! doubling to 50 ms) so pm-start returns soon after the service is ready.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use pm_core::process::{self, Handle};
use pm_core::ready::{self, Check, LogFollower, NotifySocket, PidfileBaseline};
use pm_core::record::PidfileBy;
use pm_core::signal;
use pm_core::spawn::Spawned;

const BACKOFF_MAX: Duration = Duration::from_millis(50);

/// The process pm-start is watching.
pub enum Tracked {
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
pub enum WaitEnd {
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

pub struct Waiter<'a> {
    pub tracked: Tracked,
    pub checks: Vec<Check>,
    pub follower: LogFollower,
    pub notify: Option<&'a mut NotifySocket>,
    pub interrupts: &'a SignalFd,
    pub pidfile: &'a Path,
    pub pidfile_by: PidfileBy,
    pub baseline: PidfileBaseline,
    pub cwd: &'a Path,
    pub grace: Duration,
    pub ready_timeout: Duration,
    /// Start time of the launched process: a daemon or MAINPID must not be older.
    pub born_after: u64,
    /// `exec:` checks in progress, by check index.
    pub execs: HashMap<usize, ready::ExecProbe>,
}

fn failed(reason: String) -> WaitEnd {
    WaitEnd::Failed {
        reason,
        exit_code: None,
        signal: None,
    }
}

impl Waiter<'_> {
    pub fn run(&mut self) -> WaitEnd {
        let grace_end = process::deadline(self.grace);
        let deadline = process::deadline(self.ready_timeout).max(grace_end);
        let mut passed = vec![false; self.checks.len()];
        let mut backoff = Duration::from_millis(1);
        loop {
            if let Ok(Some(info)) = self.interrupts.read_signal() {
                if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                    return WaitEnd::Interrupted(sig);
                }
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
                        pm_core::duration::elapsed(self.ready_timeout)
                    )
                } else if pending.is_empty() && pidfile_pending {
                    format!(
                        "{} never named a live process within {}",
                        self.pidfile.display(),
                        pm_core::duration::elapsed(self.ready_timeout)
                    )
                } else {
                    format!(
                        "not ready within {}: {} did not pass",
                        pm_core::duration::elapsed(self.ready_timeout),
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
        let daemon = Handle::open(pid, &expect).ok()?.ok()?;
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
            match Handle::open(main, &now) {
                Ok(Ok(h)) if h.start_time >= self.born_after => self.tracked = Tracked::Other(h),
                Ok(Ok(_)) => {
                    return Some(failed(format!(
                        "MAINPID={main} names a process older than the service"
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
                        self.tracked = Tracked::Other(h);
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
            Check::Tcp(t) => ready::tcp_accepts(t, Duration::from_millis(100)),
            Check::Unix(p) => ready::unix_accepts(p),
            Check::File(p) => p.exists(),
            Check::Exec(cmd) => self
                .execs
                .entry(index)
                .or_insert_with(|| ready::ExecProbe::new(cmd, self.cwd))
                .poll()
                .unwrap_or(false),
            Check::Log(re) => self.follower.matches(re),
            Check::Notify => self.notify.as_deref().is_some_and(|n| n.ready),
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
