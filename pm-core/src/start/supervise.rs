//! The monitor of a supervised service (`--restart on-failure|always`).
//!
//! pm-start forks it before anything else; the monitor runs the whole start (so it is the
//! service's parent and reads its exit status from the kernel) while the pm-start the
//! caller sees waits for one byte: the exit code. Once the service is up the monitor lets
//! go of the caller's terminal and pipes (so `x=$(pm-start …)` returns), leaves its
//! session, and blocks in the kernel — poll on a signalfd and the service's pidfd — until
//! the service ends or a stop asks it to go. Then it records `last_exit`, waits the
//! restart delay, and runs the same start sequence again, readiness checks included.
//!
//! A stop never races a restart: pm-stop and pm-stopall SIGTERM the monitor and wait for
//! it to exit before they take the name's lock (see [`crate::monitor`]); every record
//! write of the monitor is made under that lock, after checking that the record still
//! names it. A SIGKILLed monitor leaves the service running, unsupervised.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use super::{Ended, Request, TOOL};
use crate::error::{Error, Result};
use crate::monitor::Exit;
use crate::process::Handle;
use crate::record::{Failure, Phase, Proc, Record, Restart};
use crate::report::say;
use crate::status::{inspect, Inspection, State};
use crate::{duration, signal, stop, sys, Code, Name, StateDir};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

/// Who runs a start: the monitor, and whether this start is one of its restarts.
pub struct Ctx {
    pub me: Proc,
    pub restarting: bool,
}

/// The forked monitor, before it has reported the first start's outcome.
pub struct Monitor {
    pub ctx: Ctx,
    report: Option<OwnedFd>,
}

pub enum Forked {
    /// In the pm-start the caller waits for: the monitor's report.
    Parent(Ended),
    Monitor(Monitor),
}

/// Forks the monitor, in the cgroup whose directory `home` is if one is given (and the
/// kernel can). The parent waits for its report and returns it; the child goes on to
/// start the service. Called while pm-start is still single-threaded.
pub fn fork(home: Option<std::fs::File>) -> Result<Forked> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| os("pipe", e))?;
    let forked = sys::fork_single_threaded_into(home.as_ref().map(|d| d.as_fd()));
    // Closed on both sides before the child closes what it inherited (a double close).
    drop(home);
    match forked.map_err(|e| os("fork", e))? {
        ForkResult::Parent { child } => {
            drop(w);
            Ok(Forked::Parent(await_report(child, r)?))
        }
        ForkResult::Child => {
            drop(r);
            // Whatever the caller passed on (a make jobserver, a pipe `$(…)` waits on) must
            // not stay open in a process that outlives the call.
            close_inherited(w.as_raw_fd());
            Ok(Forked::Monitor(Monitor {
                ctx: Ctx {
                    me: crate::monitor::me()?,
                    restarting: false,
                },
                report: Some(w),
            }))
        }
    }
}

fn close_inherited(keep: i32) {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in fds.into_iter().filter(|&fd| fd > 2 && fd != keep) {
        let _ = nix::unistd::close(fd);
    }
}

/// The caller's pm-start: forwards Ctrl-C and friends to the monitor (which stops the
/// half-started service, as pm-start would), then exits as the monitor reports — with
/// the byte it wrote, or as the monitor itself ended if it never wrote one.
fn await_report(child: Pid, report: OwnedFd) -> Result<Ended> {
    let sigs = signal::interrupt_fd()?;
    loop {
        let mut fds = [
            PollFd::new(report.as_fd(), PollFlags::POLLIN),
            PollFd::new(sigs.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            r => r.map_err(|e| os("poll", e))?,
        };
        while let Ok(Some(info)) = sigs.read_signal() {
            if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                let _ = nix::sys::signal::kill(child, sig);
            }
        }
        if fds[0].any() != Some(true) {
            continue;
        }
        let mut byte = [0u8; 1];
        match nix::unistd::read(&report, &mut byte) {
            Err(Errno::EINTR) => continue,
            Ok(1) => return Ok(Ended::from_exit_status(i32::from(byte[0]))),
            _ => break,
        }
    }
    // No report: the monitor ended (a failed or refused start) — exit as it did.
    loop {
        match waitpid(child, None) {
            Err(Errno::EINTR) => continue,
            Ok(WaitStatus::Exited(_, code)) => return Ok(Ended::from_exit_status(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Ended::Signal(sig)),
            Ok(_) => continue,
            Err(e) => return Err(os("waiting for the monitor", e)),
        }
    }
}

impl Monitor {
    /// The first start is up: detach from the caller, then supervise until told to stop
    /// or until the policy says the service stays down.
    pub fn supervise(mut self, req: &Request, name: Name, rec: Record) -> Ended {
        let sd = match StateDir::resolve(req.state_dir.as_deref(), false) {
            Ok(sd) => sd,
            Err(_) => return Code::Ok.into(), // the service is up; nothing to supervise it with
        };
        self.detach(&rec);
        let s = Supervisor {
            cgroup: rec.cgroup(&sd),
            sd,
            name,
            me: self.ctx.me,
            recent: VecDeque::new(),
            streak: 0,
        };
        s.reexec();
        s.finish(rec)
    }

    /// Lets go of the caller: stdin/stdout to /dev/null, stderr to the service's log (so
    /// restarts are told there), its own session, `/` as its directory; then the report.
    fn detach(&mut self, rec: &Record) {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        if let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            let _ = nix::unistd::dup2_stdin(&null);
            let _ = nix::unistd::dup2_stdout(&null);
            match crate::spawn::open_log(&rec.log, None) {
                Ok(log) => {
                    let _ = nix::unistd::dup2_stderr(&log);
                }
                Err(_) => {
                    let _ = nix::unistd::dup2_stderr(&null);
                }
            }
        }
        let _ = nix::unistd::setsid();
        let _ = std::env::set_current_dir("/");
        if let Some(w) = self.report.take() {
            let _ = nix::unistd::write(&w, &[0]);
        }
    }
}

struct Supervisor {
    sd: StateDir,
    /// The cgroup of the run being watched, found while its record could be read: if the
    /// state directory goes away, the monitor still removes it once the run has ended.
    cgroup: Option<crate::cgroup::Cgroup>,
    name: Name,
    me: Proc,
    /// When the service ended within the flapping window, oldest first.
    recent: VecDeque<Instant>,
    /// Quick failures in a row: the restart delay doubles with each.
    streak: u32,
}

/// What the monitor does after an end.
enum Next {
    /// Nothing more: the policy leaves it down, it gave up, or the record moved on.
    Done,
    /// Start it again after this delay.
    Restart(Duration),
    /// It runs on in another process (this record names it): wait for that one.
    Watch(Box<Record>),
}

/// What ended a wait for the service.
enum Woken {
    Ended(Exit),
    /// SIGTERM (pm-stop), SIGINT or SIGHUP: go, leaving the service to the stop.
    Stop,
}

/// The hidden entry point of a re-executed monitor (see [`Supervisor::reexec`]).
pub fn resume() -> Option<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).map(|a| a.as_os_str()) != Some(REEXEC_FLAG.as_ref()) {
        return None;
    }
    let mut it = args.into_iter().skip(2);
    let (Some(name), Some(dir), Some(streak), Some(cgroup)) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return Some(Code::Usage.into());
    };
    let parsed = (|| -> Option<(Name, u32, VecDeque<Instant>)> {
        let name = Name::new(name.to_str()?).ok()?;
        let streak = streak.to_str()?.parse().ok()?;
        let now = Instant::now();
        let recent = it
            .filter_map(|a| a.to_str()?.parse::<u64>().ok())
            .filter_map(|ms| now.checked_sub(Duration::from_millis(ms)))
            .collect();
        Some((name, streak, recent))
    })();
    let Some((name, streak, recent)) = parsed else {
        return Some(Code::Usage.into());
    };
    // The cgroup as the monitor knew it before the exec: checked for shape again, since
    // anyone may run this entry point (with their own rights only).
    let cgroup = std::path::Path::new(&cgroup);
    let cgroup = (|| {
        let id = cgroup.parent()?.file_name()?.to_str()?;
        crate::cgroup::Cgroup::from_record(cgroup, name.as_str(), None, id)
    })();
    let me = crate::monitor::me().ok()?;
    let found = StateDir::resolve(Some(std::path::Path::new(&dir)), false)
        .ok()
        .and_then(|sd| Some((sd.read_record(&name).ok().flatten()?, sd)));
    let Some((rec, sd)) = found else {
        // The state directory went while this process re-executed: nothing to record
        // in, but the run's cgroup is still this monitor's to remove once it has ended.
        orphaned(cgroup);
        return Some(Code::Ok.into());
    };
    if rec.monitor != Some(me) {
        return Some(Code::Ok.into()); // not this process's service
    }
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let s = Supervisor {
        cgroup: rec.cgroup(&sd).or(cgroup),
        sd,
        name,
        me,
        recent,
        streak,
    };
    Some(s.finish(rec).exit())
}

/// The record is gone: wait for the service (this process's child) to end, then remove
/// its cgroup if that is empty.
fn orphaned(cgroup: Option<crate::cgroup::Cgroup>) {
    // Until ECHILD: no child left.
    while let Ok(_) | Err(Errno::EINTR) = waitpid(None::<nix::unistd::Pid>, None) {}
    if let Some(cg) = cgroup {
        cg.remove_once_empty(Instant::now() + RELEASE_WAIT);
    }
}

const REEXEC_FLAG: &str = "--pm-monitor";

/// How long a monitor whose state directory is gone waits for the ended run's cgroup to
/// empty (a logger draining, the kernel unlinking the exited) before it leaves it.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

impl Supervisor {
    fn finish(mut self, rec: Record) -> Ended {
        match self.run(rec) {
            Ok(()) => Code::Ok.into(),
            Err(e) => {
                let why = format!("its monitor failed: {e}; the service is no longer supervised");
                say(
                    TOOL,
                    self.name.as_str(),
                    format!("monitor: {e}; the service is no longer supervised"),
                );
                self.record_end(&why);
                Code::Failure.into()
            }
        }
    }

    /// A monitor that gives up on an error (a full state directory, say) leaves its reason
    /// in the record where it can: written the usual way, else over the old record in
    /// place (a full disk has no room for a new file, but a rewrite of a record's own
    /// blocks may still fit). pm-status then says why nothing supervises the service.
    fn record_end(&self, why: &str) {
        let Ok(_lock) = self.sd.lock(&self.name) else {
            return;
        };
        let Ok(Some(mut r)) = self.sd.read_record(&self.name) else {
            return;
        };
        if !self.owns(&r) {
            return;
        }
        r.monitor = None;
        r.monitor_end = Some(Failure::now(why.to_string()));
        if self.sd.write_record(&r).is_err() {
            let _ = self.sd.overwrite_record_in_place(&r);
        }
    }

    /// Replaces this process's image with a fresh pm-start in monitor mode: same PID and
    /// start time (so the record still names it), same children, the signal mask and
    /// fds 0-2 kept; but only the pages the idle loop touches are resident, not those of
    /// clap, the start sequence and its readiness checks. Returns only if exec failed,
    /// and then the monitor simply goes on as it is.
    fn reexec(&self) {
        use std::os::unix::process::CommandExt;
        let now = Instant::now();
        let mut cmd = std::process::Command::new("/proc/self/exe");
        // Not the caller's run id (a service or task that ran this pm-start): with it, a
        // stop of the caller that has lost its leader would take this monitor, and what it
        // supervises, for the caller's own (they are found by that marker).
        cmd.env_remove(crate::record::RUN_ID_VAR);
        cmd.arg0(TOOL)
            .arg(REEXEC_FLAG)
            .arg(self.name.as_str())
            .arg(self.sd.path())
            .arg(self.streak.to_string())
            .arg(
                self.cgroup
                    .as_ref()
                    .map_or("-".as_ref(), |c| c.path().as_os_str()),
            )
            .args(
                self.recent
                    .iter()
                    .map(|t| now.duration_since(*t).as_millis().to_string()),
            );
        let _ = cmd.exec();
    }

    fn run(&mut self, mut rec: Record) -> Result<()> {
        let sigs = signals()?;
        let mut ended = None;
        loop {
            let exit = match ended.take() {
                Some(e) => e,
                None => match wait_for_end(&rec, &sigs)? {
                    Woken::Ended(e) => e,
                    Woken::Stop => return Ok(()),
                },
            };
            let delay = match self.after_end(&rec, exit)? {
                Next::Done => return Ok(()),
                Next::Watch(r) => {
                    rec = *r;
                    continue;
                }
                Next::Restart(delay) => delay,
            };
            if wait_for_stop(&sigs, delay)? {
                return Ok(());
            }
            // The start sequence itself, from the record: lock, identity checks, leftovers,
            // cgroup, spawn, readiness. SIGCHLD is the default (ignored) meanwhile, so the
            // start's own waits and probes see what they expect.
            signal::unblock(&[Signal::SIGCHLD])?;
            let req = Request::again(&self.name, self.sd.path());
            let mut up = None;
            let ctx = Ctx {
                me: self.me,
                restarting: true,
            };
            let started = super::start(&req, self.name.clone(), Some(&ctx), &mut up);
            self.sd.tidy_lock(&self.name);
            signal::block(&[Signal::SIGCHLD])?;
            match &started {
                Err(e) => say(TOOL, self.name.as_str(), format!("restart: {e}")),
                // A stop (or Ctrl-C) interrupted the restart, which stopped what it had
                // spawned: the monitor goes, as it would have while waiting.
                Ok(Ended::Signal(_)) => return Ok(()),
                Ok(Ended::Code(_)) => {}
            }
            match up {
                Some(r) => {
                    self.cgroup = r.cgroup(&self.sd);
                    self.reexec();
                    rec = r;
                }
                None => {
                    // Not up: a failed restart counts as an end, if the record still says
                    // it is ours to restart (a stop or another start may have moved on).
                    let now = self.sd.read_record(&self.name)?;
                    match now {
                        Some(r) if self.owns(&r) && r.phase == Phase::Failed => {
                            let why = r.failure.as_ref().map(|f| f.reason.clone());
                            let mut e =
                                Exit::unknown(why.unwrap_or_else(|| "restart failed".into()));
                            if let Some(f) = &r.failure {
                                e.code = f.exit_code;
                                e.signal = f.signal.clone();
                            }
                            ended = Some(e);
                            rec = r;
                        }
                        _ => return Ok(()),
                    }
                }
            }
        }
    }

    /// The record of the ended run is gone (its state directory was deleted): its empty
    /// cgroup would be left for good, so the monitor removes it (once the logger, if any,
    /// has drained the last output and left). A cgroup that still holds processes stays,
    /// for `pm-stop` of a state directory of that NAME to find.
    fn release_cgroup(&self) {
        if let Some(cg) = &self.cgroup {
            cg.remove_once_empty(Instant::now() + RELEASE_WAIT);
        }
    }

    fn owns(&self, r: &Record) -> bool {
        r.monitor == Some(self.me)
    }

    /// Records an end and decides: the delay before the restart, or `None` to stop
    /// supervising (the policy leaves it down, it flapped, or the record moved on).
    fn after_end(&mut self, ran: &Record, exit: Exit) -> Result<Next> {
        if !self.sd.path().is_dir() {
            self.release_cgroup();
            return Ok(Next::Done);
        }
        let _lock = self.sd.lock(&self.name)?;
        let Some(mut r) = self.sd.read_record(&self.name)? else {
            self.release_cgroup();
            return Ok(Next::Done);
        };
        if !self.owns(&r) || r.phase == Phase::Stopped {
            return Ok(Next::Done);
        }
        let name = self.name.as_str().to_string();
        let restart = r.restart.clone().unwrap_or_default();
        r.last_exit = Some(exit.clone());
        self.sd.write_record_unsynced(&r)?;
        let seen = inspect(&self.sd, &self.name, None);
        // The main process handed over to a successor its PID file names (a binary
        // upgrade, haproxy -sf): the service runs on. Starting another would run it twice.
        if let (State::Running, Some((st, _))) = (seen.state, &seen.live) {
            r.pid = Some(st.pid);
            r.start_time = Some(st.start_time);
            self.sd.write_record(&r)?;
            say(
                TOOL,
                &name,
                format!(
                    "{}; pid {} (named by its PID file) carries on: supervising it",
                    exit.describe(),
                    st.pid
                ),
            );
            return Ok(Next::Watch(Box::new(r)));
        }
        if !restart.policy.restarts_after(&exit) {
            r.monitor = None;
            self.sd.write_record(&r)?;
            say(
                TOOL,
                &name,
                format!(
                    "{}; not restarted (--restart {})",
                    exit.describe(),
                    restart.policy.as_str()
                ),
            );
            return Ok(Next::Done);
        }
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > restart.window)
        {
            self.recent.pop_front();
        }
        // What is left of the ended run goes before anything else happens.
        if matches!(seen.state, State::Dead | State::Running) && seen.live.is_none() {
            r = self.stop_leftovers(seen, r, &exit)?;
        }
        self.give_up_or_back_off(r, ran, &exit, &restart, now)
    }

    /// Stops what the ended run left (its cgroup's or group's other processes) and
    /// returns the record as that stop left it, with this end's `last_exit`.
    fn stop_leftovers(&self, seen: Inspection, r: Record, exit: &Exit) -> Result<Record> {
        let opts = stop::Options {
            leftovers_only: true,
            ..stop::Options::default()
        };
        if let Ok(stop::Report::Ran(o)) =
            stop::stop_inspected(&self.sd, &self.name, seen, &opts, TOOL)
        {
            say(
                TOOL,
                self.name.as_str(),
                format!(
                    "stopped what was left of the ended run: {}",
                    stop::Report::Ran(o).describe()
                ),
            );
        }
        let mut r = self.sd.read_record(&self.name)?.unwrap_or(r);
        r.last_exit = Some(exit.clone());
        Ok(r)
    }

    /// After an end that the policy restarts: gives up (`failed`) after too many ends in
    /// the window, else records the backoff and its delay, doubled after each quick end.
    fn give_up_or_back_off(
        &mut self,
        mut r: Record,
        ran: &Record,
        exit: &Exit,
        restart: &Restart,
        now: Instant,
    ) -> Result<Next> {
        let name = self.name.as_str().to_string();
        if restart.max_restarts > 0 && self.recent.len() >= restart.max_restarts as usize {
            let times = self.recent.len() + 1;
            let reason = format!(
                "{}, {times} times in {}; gave up",
                exit.describe(),
                duration::short(restart.window)
            );
            r.monitor = None;
            r.set_failed(Failure {
                exit_code: exit.code,
                signal: exit.signal.clone(),
                ..Failure::now(reason.clone())
            });
            self.sd.write_record(&r)?;
            say(TOOL, &name, reason);
            return Ok(Next::Done);
        }
        self.recent.push_back(now);
        // A run that lasted the whole window was not a quick failure: the delay starts over.
        let lasted = ran
            .started()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        self.streak = if lasted >= restart.window {
            1
        } else {
            self.streak + 1
        };
        let delay = restart.delay_before(self.streak);
        r.set_backoff(self.me, SystemTime::now() + delay);
        // Unsynced: a crash restart must not wait for the disk, and after a power cut there is
        // no monitor and no service for this record to describe.
        self.sd.write_record_unsynced(&r)?;
        say(
            TOOL,
            &name,
            format!(
                "{}; restarting in {}",
                exit.describe(),
                duration::elapsed(delay)
            ),
        );
        Ok(Next::Restart(delay))
    }
}

fn signals() -> Result<SignalFd> {
    signal::signal_fd(&[
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ])
}

/// Reads the pending signals: true if one asks the monitor to go. SIGCHLD only wakes.
fn stop_requested(sigs: &SignalFd) -> bool {
    let mut stop = false;
    while let Ok(Some(info)) = sigs.read_signal() {
        stop |= info.ssi_signo as i32 != Signal::SIGCHLD as i32;
    }
    stop
}

/// Reaps every child that has ended (daemons' orphans come to the monitor, a subreaper);
/// returns the status of `leader` if it was among them.
fn reap(leader: i32) -> Option<WaitStatus> {
    let mut found = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return found,
            Ok(st) if st.pid() == Some(Pid::from_raw(leader)) => {
                if Exit::from_status(st).is_some() {
                    found = Some(st);
                }
            }
            Ok(_) => {}
        }
    }
}

/// Blocks until the recorded main process ends (its exit status, as its parent sees it)
/// or a stop is asked for. No timer: poll on the signalfd and the process's pidfd.
fn wait_for_end(rec: &Record, sigs: &SignalFd) -> Result<Woken> {
    let Some(pid) = rec.pid else {
        return Ok(Woken::Ended(Exit::unknown("no process was recorded")));
    };
    let handle = rec
        .identity()
        .and_then(|expect| Handle::open(pid, &expect).ok()?.ok());
    sys::shed_text();
    loop {
        if stop_requested(sigs) {
            return Ok(Woken::Stop);
        }
        if let Some(st) = reap(pid) {
            return Ok(Woken::Ended(Exit::from_status(st).unwrap_or_default()));
        }
        if handle.as_ref().is_none_or(|h| h.is_gone()) {
            // Gone, and not a child of ours (reap() would have had it): no status to read.
            return Ok(Woken::Ended(Exit::unknown(format!(
                "pid {pid} ended (not the monitor's child: no exit status)"
            ))));
        }
        let mut fds = vec![PollFd::new(sigs.as_fd(), PollFlags::POLLIN)];
        if let Some(fd) = handle.as_ref().and_then(|h| h.pidfd()) {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        match poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(os("poll", e)),
        }
    }
}

/// The restart delay, awake for stop requests (and reaping). True: a stop was asked for.
fn wait_for_stop(sigs: &SignalFd, delay: Duration) -> Result<bool> {
    let end = Instant::now() + delay;
    loop {
        if stop_requested(sigs) {
            return Ok(true);
        }
        reap(0);
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut fds = [PollFd::new(sigs.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, crate::process::timeout(left)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(os("poll", e)),
        }
    }
}

fn os(what: &str, e: Errno) -> Error {
    Error::Os(format!("{what}: {e}"))
}
