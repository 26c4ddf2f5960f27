//! The start lifecycle, for every tool that starts services: admit (lock, identity checks,
//! a concurrent start or a restart in progress), plan (the request over the record),
//! launch (leftovers, cgroup, logger, record-before-exec, spawn), wait (grace and
//! readiness on evidence from this start), finish (record the outcome, or stop what was
//! spawned), and, with `--restart`, the monitor that supervises the result.
//!
//! pm-start is its command line over [`run`]; a tool that starts several services calls
//! [`run`] once per service. What decides whether a service can be lost lives here, next
//! to the one stop algorithm it uses.

mod finish;
mod launch;
pub mod plan;
mod supervise;
mod wait;

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use crate::error::{Error, Result};
use crate::process::{self, Handle};
use crate::record::{Phase, Record, Starter};
use crate::report::say;
use crate::spawn::Credentials;
use crate::status::{inspect, Inspection, State};
use crate::{cgroup, signal, stop, Code, Name, StateDir};

pub use finish::stop_failed;
pub use plan::{Request, DEFAULT_GRACE};

/// The prefix of every message of a start (the monitor and the logger are pm-start too).
const TOOL: &str = "pm-start";

/// How a start ended, for the caller's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// A documented exit code.
    Code(Code),
    /// Interrupted by this signal, after stopping what it started: the caller dies of it.
    Signal(Signal),
}

impl From<Code> for Ended {
    fn from(c: Code) -> Ended {
        Ended::Code(c)
    }
}

impl Ended {
    /// As this process's exit: the code, or death by the signal (see [`signal::die_by`]).
    pub fn exit(self) -> ExitCode {
        match self {
            Ended::Code(c) => c.into(),
            Ended::Signal(s) => signal::die_by(s),
        }
    }

    /// From a child's wait status: the documented code it exited with (an undocumented
    /// one is a failure), or the signal that ended it.
    fn from_exit_status(code: i32) -> Ended {
        match Code::from_i32(code) {
            Some(c) => Ended::Code(c),
            None => match Signal::try_from(code - 128) {
                Ok(s) if code > 128 => Ended::Signal(s),
                _ => Ended::Code(Code::Failure),
            },
        }
    }
}

/// Runs `one` for each of `names` in turn, as pm-start and pm-restart do for several
/// services: an error is said (as `tool: NAME: error`) and the next name goes on; the
/// worst code wins (see [`Code::worst`]). An interrupt ends it at once, after `one` has
/// stopped what it started: the rest are not started.
pub fn run_each(tool: &str, names: &[Name], mut one: impl FnMut(&Name) -> Result<Ended>) -> Ended {
    let mut codes = Vec::new();
    for name in names {
        match one(name) {
            Ok(Ended::Code(c)) => codes.push(c),
            Ok(e @ Ended::Signal(_)) => return e,
            Err(e) => {
                say(tool, name.as_str(), &e);
                codes.push(e.exit_code());
            }
        }
    }
    Ended::Code(Code::worst(codes))
}

/// One whole start as pm-start makes it: with `--restart` (or a supervised record) the
/// monitor is forked first and runs the start, then supervises; this process then ends as
/// the monitor reports.
pub fn run(req: &Request) -> Result<Ended> {
    let name = Name::new(&req.name)?;
    let mut mon = None;
    if wants_monitor(req, &name) {
        // Born in the monitors' cgroup (when its service gets one): not in the caller's,
        // which may be another service's, stopped whole some day.
        let home = match cgroup::Want::from_env(req.no_cgroup) {
            Ok(cgroup::Want::Off) | Err(_) => None,
            Ok(_) => cgroup::monitors_dir(),
        };
        match supervise::fork(home)? {
            supervise::Forked::Parent(ended) => return Ok(ended),
            supervise::Forked::Monitor(m) => mon = Some(m),
        }
    }
    let mut up = None;
    let started = start(req, name.clone(), mon.as_ref().map(|m| &m.ctx), &mut up);
    // A NAME that ends up with no record (no command to restart from, a usage error, a
    // spawn that failed before recording) leaves no NAME.lock behind.
    if let Ok(sd) = StateDir::resolve(req.state_dir.as_deref(), false) {
        sd.tidy_lock(&name);
    }
    match (mon, up, &started) {
        (Some(m), Some(rec), Ok(_)) => Ok(m.supervise(req, name, rec)),
        _ => started,
    }
}

/// The hidden modes of a binary that starts services, entered before any parsing: a
/// monitor that re-executed itself to shed what the start code touched (harmless if run
/// by hand: a monitor only acts on a record that names its own PID and start time), and
/// the log writer. `None` for any other command line.
pub fn internal_entry() -> Option<ExitCode> {
    match std::env::args_os().nth(1)?.to_str()? {
        "--pm-monitor" => supervise::resume(),
        "--pm-logger" => Some(crate::logger::process_main()),
        _ => None,
    }
}

/// Will this start be supervised? `--restart on-failure|always`, or a restart from a
/// record that has a policy (the forked monitor checks again, under the lock).
fn wants_monitor(req: &Request, name: &Name) -> bool {
    match req.restart.as_deref() {
        Some("no") => false,
        Some(_) => true,
        None if req.command.is_empty() => StateDir::resolve(req.state_dir.as_deref(), false)
            .ok()
            .and_then(|sd| sd.read_record(name).ok().flatten())
            .is_some_and(|r| r.restart.is_some()),
        None => false,
    }
}

/// What the admission step hands to the launch: the lock (held), the record before this
/// start, the plan, the resolved `--user` and what the state was.
pub(crate) struct Admitted {
    lock: crate::lock::NameLock,
    prior: Option<Record>,
    spec: plan::Spec,
    creds: Option<Credentials>,
    seen: Inspection,
}

/// One start, from the request or the record. `mon`: run by the service's monitor
/// (first start or a restart); `up` receives the record of a supervised service it
/// started.
pub(crate) fn start(
    req: &Request,
    name: Name,
    mon: Option<&supervise::Ctx>,
    up: &mut Option<Record>,
) -> Result<Ended> {
    if let Some(t) = &req.pidfile {
        crate::name::check_template(t)?;
    }
    let sd = StateDir::resolve(req.state_dir.as_deref(), true)?;
    let lock = sd.lock(&name)?;
    // Blocked only now: while waiting for the lock, Ctrl-C simply ends pm-start.
    let interrupts = signal::interrupt_fd()?;
    let admitted = match admit(&sd, req, &name, mon, lock, &interrupts)? {
        Ok(a) => a,
        Err(ended) => return Ok(ended),
    };
    launch::launch(&sd, mon, admitted, &interrupts, up)
}

/// Takes the name's lock decisions: already running (nothing to do), a concurrent start or
/// a restart in progress (wait for its outcome), a record that cannot be read (refuse),
/// else go. `Err(ended)`: the start ends here, with that outcome.
fn admit(
    sd: &StateDir,
    req: &Request,
    name: &Name,
    mon: Option<&supervise::Ctx>,
    mut lock: crate::lock::NameLock,
    interrupts: &SignalFd,
) -> Result<std::result::Result<Admitted, Ended>> {
    let restarting = mon.filter(|m| m.restarting);
    // Set once this start has waited for another start (or a restart) to finish: its
    // outcome is then this start's.
    let mut waited_for: Option<Record> = None;
    loop {
        let prior = sd.read_record(name)?;
        let spec = plan::Spec::build(req, name.clone(), sd, prior.as_ref())?;
        let creds = credentials(&spec)?;
        sd.remove_stale_temps(name);
        let seen = inspect(sd, name, None);
        if let Some(e) = &seen.error {
            return Err(Error::Start(format!(
                "{e}: refusing to replace a record that cannot be read; remove it if the service is not running"
            )));
        }
        macro_rules! go {
            () => {
                return Ok(Ok(Admitted {
                    lock,
                    prior,
                    spec,
                    creds,
                    seen,
                }))
            };
        }
        if let Some(m) = restarting {
            // A restart only continues the backoff this monitor recorded: a stop, or a
            // start by hand, since then has the last word. It never starts a second copy
            // of a service that runs.
            let ours = seen
                .record
                .as_ref()
                .is_some_and(|r| r.monitor == Some(m.me) && r.phase == Phase::Backoff);
            if !ours || seen.state == State::Running {
                return Ok(Err(Code::NotRunning.into()));
            }
            go!();
        }
        if req.replace && seen.state == State::Running {
            // The monitor, if any, was stopped by the caller (a monitor takes this lock
            // to restart); one that came since finds the record rewritten and leaves.
            let opts = stop::Options::default();
            let report = stop::stop_inspected(sd, name, seen, &opts, "pm-restart")?;
            say("pm-restart", name.as_str(), report.describe());
            if report.code() != Code::Ok {
                return Ok(Err(Code::Failure.into()));
            }
            continue;
        }
        let Some(rec) = seen.record.clone() else {
            go!()
        };
        match seen.state {
            State::Running => {
                already_running(req, name, &seen)?;
                return Ok(Err(Code::Ok.into()));
            }
            State::Starting | State::Backoff => {
                match await_other(sd, name, &seen, rec, &mut waited_for, lock, interrupts)? {
                    Ok(again) => lock = again,
                    Err(ended) => return Ok(Err(ended)),
                }
            }
            _ if waited_for.is_some() => {
                let why = rec
                    .failure
                    .as_ref()
                    .map_or_else(|| seen.state.as_str().to_string(), |f| f.reason.clone());
                say(
                    TOOL,
                    name.as_str(),
                    format!("the concurrent start failed: {why}"),
                );
                return Ok(Err(Code::Failure.into()));
            }
            _ => go!(),
        }
    }
}

/// Another start, or a restart by the service's monitor, is under way (`seen`, `rec`):
/// lets go of the lock, waits for it to end, and takes the lock again for another look.
/// `Err(ended)`: this start ends here, with that outcome (a restart that failed again
/// since the last look, an interrupt).
fn await_other(
    sd: &StateDir,
    name: &Name,
    seen: &Inspection,
    rec: Record,
    waited_for: &mut Option<Record>,
    lock: crate::lock::NameLock,
    interrupts: &SignalFd,
) -> Result<std::result::Result<crate::lock::NameLock, Ended>> {
    let backoff = seen.state == State::Backoff;
    if let Some(before) = waited_for.as_ref().filter(|_| backoff) {
        if before.restart_at != rec.restart_at || before.phase != Phase::Backoff {
            // Its monitor tried again and the service ended again.
            say(
                TOOL,
                name.as_str(),
                format!(
                    "supervised, and its restart failed: {}; pm-stop {name} stops it",
                    seen.note.as_deref().unwrap_or("restarting")
                ),
            );
            return Ok(Err(Code::Failure.into()));
        }
    }
    if waited_for.is_none() {
        say(TOOL, name.as_str(), waiting_note(seen, &rec, name));
    }
    drop(lock);
    match await_change(sd, name, &rec, interrupts, wait_limit(&rec))? {
        Awaited::Finished => {}
        Awaited::Interrupted(sig) => {
            say(
                TOOL,
                name.as_str(),
                "interrupted while waiting for the other start",
            );
            return Ok(Err(Ended::Signal(sig)));
        }
        Awaited::TimedOut => {
            return Err(Error::Start(format!(
                "the {} did not finish",
                if backoff {
                    "restart by its monitor"
                } else {
                    "concurrent start"
                }
            )))
        }
    }
    waited_for.get_or_insert(rec);
    Ok(Ok(sd.lock(name)?))
}

/// The `--user` the service runs as, resolved; only root may name another user.
fn credentials(spec: &plan::Spec) -> Result<Option<Credentials>> {
    let creds = spec.user.as_deref().map(Credentials::resolve).transpose()?;
    if let Some(c) = &creds {
        let me = nix::unistd::geteuid();
        if !me.is_root() && me != c.uid {
            return Err(Error::Start(format!(
                "--user {}: only root can start a service as another user",
                c.user
            )));
        }
    }
    Ok(creds)
}

/// Says what a start of a running service does: nothing, and whether it was asked for a
/// different command (which is not applied silently).
fn already_running(req: &Request, name: &Name, seen: &Inspection) -> Result<()> {
    let pid = seen.pid().map_or("?".into(), |p| p.to_string());
    say(TOOL, name.as_str(), format!("already running, pid {pid}"));
    if let Some(r) = seen.record.as_ref() {
        if !req.command.is_empty() && req.command != r.command {
            say(
                TOOL,
                name.as_str(),
                format!(
                    "it runs {:?}, not the command given ({:?}); to switch: pm-stop {name} && pm-start {name} -- COMMAND",
                    r.command.join(" "),
                    req.command.join(" ")
                ),
            );
        }
    }
    if req.print_pid {
        crate::report::out(&format!("{pid}\n")).map_err(|e| Error::io("standard output", e))?;
    }
    Ok(())
}

fn waiting_note(seen: &Inspection, rec: &Record, name: &Name) -> String {
    match (seen.state, &rec.starter) {
        (State::Backoff, _) => format!(
            "supervised: {}; waiting for its monitor to start it (pm-stop {name} stops it)",
            seen.note.as_deref().unwrap_or("restarting")
        ),
        (_, Some(s)) if rec.monitor.is_some_and(|m| m.pid == s.pid) => format!(
            "its monitor (pid {}) is starting it; waiting for the outcome",
            s.pid
        ),
        (_, Some(s)) => format!(
            "another pm-start (pid {}) is starting it; waiting for its outcome",
            s.pid
        ),
        _ => "it is being started; waiting for the outcome".into(),
    }
}

/// How long a start waits for another start's (or a restart's) outcome: until the
/// restart is due, then as long as that start may take to be ready or to fail and clean
/// up, and a margin.
fn wait_limit(rec: &Record) -> Duration {
    let due = rec
        .restart_at
        .as_deref()
        .and_then(crate::record::parse_rfc3339)
        .and_then(|t| t.duration_since(SystemTime::now()).ok())
        .unwrap_or_default();
    due.saturating_add(rec.ready_timeout)
        .saturating_add(rec.stop_timeout)
        .saturating_add(stop::KILL_WAIT)
        .saturating_add(Duration::from_secs(10))
}

/// A marker unique to one start on this host: this pm-start's PID and start time (no two
/// live processes share both), and the wall clock in nanoseconds.
pub fn new_run_id() -> Result<String> {
    let me = std::process::id() as i32;
    let st = process::Stat::read(me)?.map_or(0, |s| s.start_time);
    let ns = SystemTime::now()
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

/// How waiting for another start ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaited {
    /// The record moved on, or the start that was recorded has exited: look again.
    Finished,
    /// The caller was interrupted by this signal.
    Interrupted(Signal),
    /// The deadline passed first.
    TimedOut,
}

/// Waits until NAME's record is no longer the one seen (a start recorded its outcome, a
/// monitor began or ended a restart), the recorded starter exits (a start killed half-way
/// records nothing more), a signal arrives on `interrupts`, or `limit` passes.
/// Event-driven: inotify on the state directory (records are renamed into place) and the
/// starter's pidfd. The starter may be a monitor, which does not exit after a start: then
/// only the record tells.
pub fn await_change(
    sd: &StateDir,
    name: &Name,
    seen: &Record,
    interrupts: &SignalFd,
    limit: Duration,
) -> Result<Awaited> {
    let watch = sd.watch_records();
    let starter = match (&seen.starter, &seen.boot_id) {
        (Some(s), Some(boot)) => Handle::open(s.pid, &s.expect(boot))?.ok(),
        _ => None,
    };
    let moved_on = || -> Result<bool> {
        let now = sd.read_record(name)?;
        Ok(now
            .as_ref()
            .map(|r| (r.phase, &r.started_at, &r.restart_at))
            != Some((seen.phase, &seen.started_at, &seen.restart_at)))
    };
    let deadline = process::deadline(limit);
    loop {
        if let Some(sig) = signal::pending(interrupts) {
            return Ok(Awaited::Interrupted(sig));
        }
        // Checked after the watch was set up, so no change can fall in between.
        if moved_on()? || starter.as_ref().is_some_and(|h| h.is_gone()) {
            return Ok(Awaited::Finished);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Awaited::TimedOut);
        }
        // Without inotify (or a pidfd) the record is looked at every 5 ms.
        let wait = if watch.is_some() {
            deadline - now
        } else {
            (deadline - now).min(Duration::from_millis(5))
        };
        let mut fds = vec![PollFd::new(interrupts.as_fd(), PollFlags::POLLIN)];
        if let Some(i) = &watch {
            fds.push(PollFd::new(i.as_fd(), PollFlags::POLLIN));
        }
        if let Some(fd) = starter.as_ref().and_then(|h| h.pidfd()) {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        let _ = poll(&mut fds, process::timeout(wait));
        if let Some(i) = &watch {
            while matches!(i.read_events(), Ok(e) if !e.is_empty()) {}
        }
    }
}
