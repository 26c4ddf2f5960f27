//! pm-up: start a stack's services in dependency order, each once what it needs is up,
//! independent ones at the same time.
//!
//! Each service is started by a child of pm-up (a fork: the start lifecycle forks a
//! monitor, which needs a single-threaded process) that runs the very start pm-start
//! makes ([`crate::start::run`]) and exits as it ended; a oneshot task is run to its end
//! by such a child. pm-up itself only decides what can start next, and waits for its
//! children and for signals on one poll: nothing is polled on a timer.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use super::{Service, Stack};
use crate::error::{Error, Result};
use crate::record::{Condition, Need, Record};
use crate::report::say;
use crate::start::Ended;
use crate::status::{inspect, State};
use crate::{signal, stop, sys, Code, Name, StateDir};

const TOOL: &str = "pm-up";

/// Where one service of this pm-up is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Waiting for what it needs.
    Waiting,
    /// A child of pm-up is starting it; `true` once its process was spawned (its record
    /// says so), which is what a need with condition `started` waits for.
    Starting(Pid, bool),
    /// Up (or a task succeeded); `started`: by this pm-up (so Ctrl-C stops it again).
    Up {
        started: bool,
    },
    Failed,
    /// Not started: something it needs failed.
    Skipped,
}

/// What a running service's record says about the file's definition of it.
enum Found {
    /// Not running: start it.
    Down,
    /// Running as the file defines it: leave it alone.
    Unchanged(i32),
    /// Running from an older definition in this file: stop it, then start it.
    Changed,
    /// Running, but not started from this file (pm-start by hand, another stack).
    Foreign(String),
}

fn found(sd: &StateDir, svc: &Service, file: &Path) -> Found {
    let seen = inspect(sd, &svc.name, None);
    let pid = seen.live.as_ref().map(|(s, _)| s.pid);
    let up = matches!(
        seen.state,
        State::Running | State::Starting | State::Backoff
    );
    if !up || svc.oneshot {
        return Found::Down;
    }
    match seen.record.as_ref().and_then(|r: &Record| r.stack.as_ref()) {
        Some(m) if m.file == file && m.definition == svc.definition => {
            match (seen.state, pid) {
                (State::Running, Some(pid)) => Found::Unchanged(pid),
                // Starting or in backoff: the start (or its monitor) settles it.
                _ => Found::Down,
            }
        }
        Some(m) if m.file == file => Found::Changed,
        Some(m) => Found::Foreign(format!("started from {}", m.file.display())),
        None => Found::Foreign("started by pm-start, not from this file".into()),
    }
}

/// Brings up `targets` of `stack` (none: all) and what they need. `Ended::Signal`: pm-up
/// was interrupted, and has stopped what it had started.
pub fn up(stack: &Stack, state_dir: Option<&Path>, targets: &[String]) -> Result<Ended> {
    let want = stack.select(targets)?;
    let sd = StateDir::resolve(state_dir, true)?;
    // Inherited by the children, so held until the last of this run's starts has ended,
    // also after pm-up is SIGKILLed (a monitor closes what it inherits; a service and a
    // logger are exec'd without it).
    let _held = super::hold(&sd, &stack.file, true, TOOL)?;
    // Inherited SIG_IGN would have the kernel reap the children unseen: no SIGCHLD, and
    // waitpid never reports an exit.
    sys::default_action(Signal::SIGCHLD);
    // Marks the records of the services this run starts (Member::by).
    let run = crate::start::new_run_id()?;
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, None, Some(&mut old))
        .map_err(|e| Error::Os(format!("reading the signal mask: {e}")))?;
    let mut watched: Vec<Signal> = signal::INTERRUPTS.to_vec();
    watched.push(Signal::SIGCHLD);
    let sigs = signal::signal_fd(&watched)?;
    let mut progress: BTreeMap<&str, Progress> = want
        .iter()
        .map(|n| (n.as_str(), Progress::Waiting))
        .collect();
    // Names in the order they came up, to stop them in reverse on an interrupt.
    let mut came_up: Vec<&str> = Vec::new();
    let mut interrupted: Option<Signal> = None;
    // Records are watched only when a need is `started`: that is learnt from the record
    // of a start still in progress, not from the start's end.
    let early = want.iter().any(|n| {
        stack.services[n.as_str()]
            .needs
            .iter()
            .any(|x| x.condition == Condition::Started)
    });
    let watch = if early { sd.watch_records() } else { None };
    // The children told of the interrupt.
    let mut told: Vec<Pid> = Vec::new();
    // Each task runner's report of the task it spawned (see [`TaskReport`]).
    let mut tasks: BTreeMap<Pid, std::os::fd::OwnedFd> = BTreeMap::new();
    loop {
        match interrupted {
            None => launch_ready(stack, &sd, &old, &run, &mut progress, &mut tasks),
            Some(sig) => wind_down(&sd, stack, &run, sig, &progress, &mut came_up, &mut told),
        }
        let children = in_progress(&progress);
        if children.is_empty() {
            let launchable =
                interrupted.is_none() && progress.values().any(|p| *p == Progress::Waiting);
            if launchable {
                continue;
            }
            // An interrupt that came with (or after) the last child's exit still counts.
            while let Some(sig) = signal::pending(&sigs) {
                if sig != Signal::SIGCHLD {
                    interrupted.get_or_insert(sig);
                }
            }
            break;
        }
        wait_event(&sigs, watch.as_ref(), early)?;
        if early {
            for (name, pid) in &children {
                if progress.get(name) == Some(&Progress::Starting(*pid, false))
                    && spawned_from(&sd, &stack.services[*name], &stack.file)
                {
                    progress.insert(name, Progress::Starting(*pid, true));
                }
            }
        }
        while let Some(sig) = signal::pending(&sigs) {
            if sig != Signal::SIGCHLD {
                interrupted.get_or_insert(sig);
            }
        }
        reap(
            &sd,
            &run,
            &children,
            &mut progress,
            &mut came_up,
            &mut tasks,
        );
    }
    if let Some(sig) = interrupted {
        // What came up with the last child's exit.
        wind_down(&sd, stack, &run, sig, &progress, &mut came_up, &mut told);
        return Ok(Ended::Signal(sig));
    }
    let ok = progress.values().all(|p| matches!(p, Progress::Up { .. }));
    Ok(if ok { Code::Ok } else { Code::Failure }.into())
}

/// The services a child of pm-up is starting, with that child.
fn in_progress<'a>(progress: &BTreeMap<&'a str, Progress>) -> Vec<(&'a str, Pid)> {
    progress
        .iter()
        .filter_map(|(n, p)| match p {
            Progress::Starting(pid, _) => Some((*n, *pid)),
            _ => None,
        })
        .collect()
}

/// Waits for a signal (a child's exit, an interrupt) or, with `watch`, a record's change;
/// when a need is `started` (`early`) and there is no watch, 20 ms at most.
fn wait_event(
    sigs: &nix::sys::signalfd::SignalFd,
    watch: Option<&nix::sys::inotify::Inotify>,
    early: bool,
) -> Result<()> {
    let mut fds = vec![PollFd::new(sigs.as_fd(), PollFlags::POLLIN)];
    if let Some(w) = watch {
        fds.push(PollFd::new(w.as_fd(), PollFlags::POLLIN));
    }
    let timeout = match (early, watch) {
        (true, None) => PollTimeout::from(20u8),
        _ => PollTimeout::NONE,
    };
    match poll(&mut fds, timeout) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => return Err(Error::Os(format!("poll: {e}"))),
    }
    if let Some(w) = watch {
        while matches!(w.read_events(), Ok(e) if !e.is_empty()) {}
    }
    Ok(())
}

/// Collects the children whose start is over: up (and whether this run started it, see
/// [`started_by`]; those go on `came_up`) or failed.
fn reap<'a>(
    sd: &StateDir,
    run: &str,
    children: &[(&'a str, Pid)],
    progress: &mut BTreeMap<&'a str, Progress>,
    came_up: &mut Vec<&'a str>,
    tasks: &mut BTreeMap<Pid, std::os::fd::OwnedFd>,
) {
    for &(name, pid) in children {
        let status = waitpid(pid, Some(WaitPidFlag::WNOHANG));
        if !matches!(status, Ok(WaitStatus::StillAlive)) {
            let report = tasks.remove(&pid);
            // A runner never dies of SIGKILL by its own doing: what its task left is
            // killed here, as nobody else knows of it.
            if let (Ok(WaitStatus::Signaled(_, Signal::SIGKILL, _)), Some(fd)) = (status, report) {
                if let Some(task) = TaskReport::read(fd) {
                    task.sweep(name);
                }
            }
        }
        let ended = match status {
            Ok(WaitStatus::Exited(_, 0)) => Progress::Up {
                started: started_by(sd, name, run),
            },
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => Progress::Failed,
            Err(Errno::ECHILD) => Progress::Failed,
            _ => continue,
        };
        if ended == (Progress::Up { started: true }) {
            came_up.push(name);
        }
        progress.insert(name, ended);
    }
}

/// Did this run start `name` (and not found it running, or waited for another start of
/// it)? Its record says, once the start is over.
fn started_by(sd: &StateDir, name: &str, run: &str) -> bool {
    ours(sd, name, run).is_some()
}

/// The record of `name` if this run wrote it.
fn ours(sd: &StateDir, name: &str, run: &str) -> Option<Record> {
    let name = Name::new(name).ok()?;
    let rec = sd.read_record(&name).ok().flatten()?;
    let by = rec.stack.as_ref().and_then(|m| m.by.as_deref());
    (by == Some(run)).then_some(rec)
}

/// Has a start of `name` from this file spawned its process (`starting` or `running`,
/// and the process is there)? This run's, or another pm-up's that this run's start of it
/// is waiting for (of the same definition: an older one is about to be replaced).
fn spawned_from(sd: &StateDir, svc: &Service, file: &Path) -> bool {
    let seen = inspect(sd, &svc.name, None);
    let from = seen.record.as_ref().and_then(|r| r.stack.as_ref());
    from.is_some_and(|m| m.file == file && m.definition == svc.definition)
        && matches!(seen.state, State::Starting | State::Running)
}

/// Starts every waiting service whose needs are all up; says why a service whose need
/// failed is not started.
fn launch_ready<'a>(
    stack: &'a Stack,
    sd: &StateDir,
    mask: &SigSet,
    run: &str,
    progress: &mut BTreeMap<&'a str, Progress>,
    tasks: &mut BTreeMap<Pid, std::os::fd::OwnedFd>,
) {
    let names: Vec<&str> = progress.keys().copied().collect();
    for name in names {
        if progress.get(name) != Some(&Progress::Waiting) {
            continue;
        }
        let svc = &stack.services[name];
        let state = |n: &str| progress.get(n).copied().unwrap_or(Progress::Failed);
        if let Some(n) = svc
            .needs
            .iter()
            .find(|n| matches!(state(&n.name), Progress::Failed | Progress::Skipped))
        {
            let why = match state(&n.name) {
                Progress::Failed => "failed",
                _ => "was not started",
            };
            say(
                TOOL,
                name,
                format!("not started: it needs {}, which {why}", n.name),
            );
            progress.insert(name, Progress::Skipped);
            continue;
        }
        let met = |n: &Need| match (state(&n.name), n.condition) {
            (Progress::Up { .. }, _) => true,
            (Progress::Starting(_, spawned), Condition::Started) => spawned,
            _ => false,
        };
        if !svc.needs.iter().all(met) {
            continue;
        }
        let next = match found(sd, svc, &stack.file) {
            Found::Unchanged(pid) => {
                say(TOOL, name, format!("already running, pid {pid}"));
                Progress::Up { started: false }
            }
            Found::Foreign(why) => {
                say(
                    TOOL,
                    name,
                    format!("running, but {why}: not replacing it (stop it first: pm-stop {name})"),
                );
                Progress::Failed
            }
            f => match fork_start(stack, sd, svc, mask, run, matches!(f, Found::Changed)) {
                Ok((pid, report)) => {
                    if let Some(fd) = report {
                        tasks.insert(pid, fd);
                    }
                    Progress::Starting(pid, false)
                }
                // The starts already under way go on; what needs this one is skipped.
                Err(e) => {
                    say(TOOL, name, format!("not started: {e}"));
                    Progress::Failed
                }
            },
        };
        progress.insert(name, next);
    }
}

/// Forks the child that starts `svc` (stopping the running one first if `restart`); for
/// a task, with the pipe on which the child reports the task it spawned.
fn fork_start(
    stack: &Stack,
    sd: &StateDir,
    svc: &Service,
    mask: &SigSet,
    run: &str,
    restart: bool,
) -> Result<(Pid, Option<std::os::fd::OwnedFd>)> {
    let parent = nix::unistd::getpid();
    let pipe = if svc.oneshot {
        // Non-blocking: read only after the runner is gone, when a task child between its
        // fork and exec may still hold the write end.
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| Error::Os(format!("pipe: {e}")))?;
        Some((r, w))
    } else {
        None
    };
    // Each child in a process group of its own (set on both sides of the fork, so no
    // signal finds it in pm-up's first): a terminal's Ctrl-C or hangup, and a kill of
    // pm-up's job, reach pm-up alone, which passes the interrupt on in dependency order
    // (see wind_down). A copy the child heard itself could merge with pm-up's word
    // (signals do not queue) and could not be told apart from it.
    let own_group = |pid: Pid| nix::unistd::setpgid(pid, pid);
    match sys::fork_single_threaded().map_err(|e| Error::Os(format!("fork: {e}")))? {
        ForkResult::Parent { child } => {
            let _ = own_group(child);
            Ok((child, pipe.map(|(r, _)| r)))
        }
        ForkResult::Child => {
            let _ = own_group(nix::unistd::getpid());
            let report = pipe.map(|(_, w)| w);
            // Out of the terminal's foreground group, a write to it (its messages on
            // stderr) would stop the child under `stty tostop`, unless SIGTTOU is ignored.
            sys::ignore_signals(&[Signal::SIGTTOU]);
            crate::report::speak_as(TOOL);
            // As pm-start would run: with the caller's signal mask.
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(mask), None);
            if svc.oneshot {
                // A task has no record: if pm-up is killed, its runner hears SIGTERM and
                // stops the task as on an interrupt (the task dies with the runner).
                let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
                if nix::unistd::getppid() != parent {
                    let _ = signal::die_by(Signal::SIGTERM);
                    std::process::exit(128 + Signal::SIGTERM as i32);
                }
            }
            let ended = start_one(stack, sd, svc, run, restart, report.as_ref());
            let code = match ended {
                Ended::Code(c) => c.as_i32(),
                Ended::Signal(s) => {
                    let _ = signal::die_by(s);
                    128 + s as i32
                }
            };
            std::process::exit(code)
        }
    }
}

/// In pm-up's child: one service's start, or one task's run.
fn start_one(
    stack: &Stack,
    sd: &StateDir,
    svc: &Service,
    run: &str,
    restart: bool,
    report: Option<&std::os::fd::OwnedFd>,
) -> Ended {
    let name = svc.name.as_str();
    if restart {
        // An interrupt waits for the stop to end (it stays pending, and the start below
        // then ends at once): a stop cut short leaves the old service half stopped.
        let _ = signal::block(&signal::INTERRUPTS);
        match stop::stop_name(sd, &svc.name, &stop::Options::default(), TOOL) {
            Ok(r) => say(
                TOOL,
                name,
                format!(
                    "definition changed in {}: {}",
                    stack.file.display(),
                    r.describe()
                ),
            ),
            Err(e) => {
                say(
                    TOOL,
                    name,
                    format!("definition changed, but it cannot be stopped: {e}"),
                );
                return Code::Failure.into();
            }
        }
    }
    if svc.oneshot {
        return match locked_task(sd, svc, report) {
            Ok(e) => e,
            Err(e) => {
                say(TOOL, name, &e);
                e.exit_code().into()
            }
        };
    }
    let mut req = svc.request.clone();
    req.state_dir = Some(sd.path().to_path_buf());
    req.stack = Some(svc.member(&stack.file, run));
    match crate::start::run(&req) {
        Ok(e) => e,
        Err(e) => {
            say(TOOL, name, &e);
            e.exit_code().into()
        }
    }
}

/// Runs a oneshot task under its name's lock: a second pm-up of the same file waits for
/// the first one's run to end instead of running the task beside it.
fn locked_task(
    sd: &StateDir,
    svc: &Service,
    report: Option<&std::os::fd::OwnedFd>,
) -> Result<Ended> {
    let name = &svc.name;
    let lock = match crate::lock::NameLock::try_acquire(&sd.lock_path(name))? {
        Some(l) => l,
        None => {
            say(
                TOOL,
                name.as_str(),
                "waiting for another run of this task to end",
            );
            sd.lock(name)?
        }
    };
    let ended = run_task(sd, svc, report);
    // A task has no record: its lock file goes with its run (unless a service of that
    // name, started by hand, has one).
    if !sd.record_path(name).exists() {
        let _ = lock.remove();
    }
    ended
}

/// Runs a oneshot task to its end, its output appended to its log, in a process group of
/// its own: what it leaves in that group when it exits is killed, and an interrupt stops
/// the whole group before pm-up's child dies of it.
fn run_task(sd: &StateDir, svc: &Service, report: Option<&std::os::fd::OwnedFd>) -> Result<Ended> {
    let name = svc.name.as_str();
    let sigs = signal::interrupt_fd()?;
    let marker = crate::start::new_run_id()?;
    if let Some(fd) = report {
        // First the run id alone (born after this runner), for a kill between the spawn
        // and the report below: what carries it is then still found.
        TaskReport {
            pid: 0,
            start_time: crate::monitor::me()?.start_time,
            marker: marker.clone(),
        }
        .write(fd);
    }
    let mut task = spawn_task(sd, svc, &marker)?;
    if let Some(fd) = report {
        TaskReport {
            pid: task.handle.pid,
            start_time: task.handle.start_time,
            marker,
        }
        .write(fd);
    }
    let fate = await_task(&task, &sigs, &svc.request)?;
    // Still our unreaped child, so the group cannot be another's yet: nothing it left
    // behind outlives the task.
    let _ = nix::sys::signal::killpg(task.group, Signal::SIGKILL);
    let status = task
        .child
        .wait()
        .map_err(|e| Error::Os(format!("waiting for {name}: {e}")))?;
    let took = crate::duration::elapsed(task.began.elapsed());
    match fate {
        Some(Some(sig)) => {
            say(
                TOOL,
                name,
                format!("interrupted after {took}; the task was stopped"),
            );
            return Ok(Ended::Signal(sig));
        }
        Some(None) => {
            say(
                TOOL,
                name,
                format!("timed out after {took}; the task was stopped"),
            );
            return Ok(Code::Failure.into());
        }
        None => {}
    }
    use std::os::unix::process::ExitStatusExt;
    if status.success() {
        say(TOOL, name, format!("succeeded in {took}"));
        return Ok(Code::Ok.into());
    }
    let how = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (_, Some(s)) => format!(
            "killed by SIG{}",
            Signal::try_from(s).map(signal::name).unwrap_or("?")
        ),
        _ => "failed".into(),
    };
    say(
        TOOL,
        name,
        format!("failed: {how} after {took} (log {})", task.log.display()),
    );
    for line in crate::report::log_tail(&task.log, task.from, 10) {
        crate::report::line(format!("  {line}"));
    }
    Ok(Code::Failure.into())
}

/// What a task runner tells pm-up of the task it spawned, so that pm-up can kill what the
/// task left in its session if the runner is SIGKILLed (the task itself dies with the
/// runner, its children would not): the task's PID and start time, and the run id in its
/// environment (`PM_RUN_ID`), as a record gives them for a service's stop. A first line
/// before the spawn has the run id only (PID 0).
#[derive(Debug, PartialEq)]
struct TaskReport {
    pid: i32,
    start_time: u64,
    marker: String,
}

impl TaskReport {
    /// One line, in one write (well under PIPE_BUF: never split); the pipe is only read
    /// once the runner is gone.
    fn write(&self, fd: &std::os::fd::OwnedFd) {
        let line = format!("{} {} {}\n", self.pid, self.start_time, self.marker);
        let _ = nix::unistd::write(fd, line.as_bytes());
    }

    /// The last report in `fd`, if the runner wrote one before it died (`pid` 0: it died
    /// before it had spawned the task, or just after).
    fn read(fd: std::os::fd::OwnedFd) -> Option<TaskReport> {
        let mut buf = [0u8; 512];
        let n = nix::unistd::read(&fd, &mut buf).ok()?;
        let text = std::str::from_utf8(&buf[..n]).ok()?;
        let last = text.strip_suffix('\n')?.rsplit('\n').next()?;
        let mut f = last.split(' ');
        let report = TaskReport {
            pid: f.next()?.parse().ok()?,
            start_time: f.next()?.parse().ok()?,
            marker: f.next()?.to_string(),
        };
        (f.next().is_none() && report.pid != 1 && report.pid >= 0).then_some(report)
    }

    /// Kills what is left of the reported task: the processes of its session and group
    /// born since it began, and any carrying its run id, by the stop algorithm of a
    /// service whose leader is gone.
    fn sweep(self, name: &str) {
        // The task dies of PDEATHSIG, but not at once: still alive, it is the leader (its
        // PID checked against its start time), and its group and session are stopped as
        // a live service's are. Seen as a leaderless plan, its live PID would make its
        // group and session look like another process's, and nothing would be stopped.
        let known = self.pid > 0;
        let leader = crate::process::boot_id()
            .ok()
            .filter(|_| known)
            .and_then(|boot_id| {
                let expect = crate::process::Expect::started(self.start_time, &boot_id);
                crate::process::Handle::open(self.pid, &expect).ok()?.ok()
            });
        let plan = stop::Plan {
            marker: format!("{}={}", crate::record::RUN_ID_VAR, self.marker),
            leader,
            pgid: known.then_some(self.pid),
            sid: known.then_some(self.pid),
            born_after: self.start_time,
            signal: Signal::SIGKILL,
            timeout: Duration::ZERO,
            kill: true,
            known: Vec::new(),
            cgroup: None,
        };
        match stop::stop(plan, &mut |_| {}) {
            Ok(stop::Outcome::Stopped { .. }) => say(
                TOOL,
                name,
                "its runner was killed; what the task left is killed too",
            ),
            Ok(stop::Outcome::Failed { reason, .. }) => say(
                TOOL,
                name,
                format!("its runner was killed, and what the task left is {reason}"),
            ),
            Ok(_) => say(
                TOOL,
                name,
                "its runner was killed; nothing the task left was found",
            ),
            Err(e) => say(TOOL, name, format!("its runner was killed, and: {e}")),
        }
    }
}

/// A running oneshot task.
struct Task {
    child: crate::spawn::Child,
    handle: crate::process::Handle,
    /// Its process group (its PID: it leads a session of its own).
    group: Pid,
    log: std::path::PathBuf,
    /// The log's size when the task began: its own lines come after.
    from: u64,
    began: Instant,
}

/// Spawns `svc`'s task as a service is spawned (its session, its user's ids, groups and
/// HOME, no signal blocked), except that it dies with this process: no record names it,
/// so nothing else could stop it if pm-up were killed.
fn spawn_task(sd: &StateDir, svc: &Service, marker: &str) -> Result<Task> {
    let name: &Name = &svc.name;
    let req = &svc.request;
    let log = match &req.log {
        Some(t) => std::path::absolute(sd.expand(t, name)?).map_err(|e| Error::io(t, e))?,
        None => sd.log_path(name),
    };
    let creds = req
        .user
        .as_deref()
        .map(crate::spawn::Credentials::resolve)
        .transpose()?;
    let from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let mut env = req.env.clone();
    env.push(("PM_NAME".into(), name.to_string()));
    env.push((crate::record::RUN_ID_VAR.into(), marker.to_string()));
    let base = crate::start::plan::caller_environment();
    let cwd = req.cwd.clone().unwrap_or_else(|| sd.path().to_path_buf());
    let began = Instant::now();
    let spawned = crate::spawn::spawn(
        &crate::spawn::SpawnSpec {
            argv: &req.command,
            cwd: &cwd,
            env: &env,
            base_env: Some(&base),
            program: None,
            log: &log,
            output: None,
            user: creds.as_ref(),
            die_with_parent: true,
        },
        None,
        &mut |_| Ok(()),
    )?;
    Ok(Task {
        group: Pid::from_raw(spawned.pid()),
        child: spawned.child,
        handle: spawned.handle,
        log,
        from,
        began,
    })
}

/// Waits for the task to exit (not reaping it). `Some(why)` if it had to be stopped:
/// `Some(sig)` interrupted by `sig`, `None` timed out (its `ready_timeout`). A stop sends
/// the task's stop signal to its group, then SIGKILL after its stop timeout; further
/// interrupts (a terminal's Ctrl-C comes both from the tty and from pm-up) change neither.
fn await_task(
    task: &Task,
    sigs: &nix::sys::signalfd::SignalFd,
    req: &crate::start::Request,
) -> Result<Option<Option<Signal>>> {
    let stop_signal = req
        .stop_signal
        .unwrap_or(crate::record::DEFAULT_STOP_SIGNAL);
    let stop_timeout = req
        .stop_timeout
        .unwrap_or(crate::record::DEFAULT_STOP_TIMEOUT);
    let deadline = req.ready_timeout.map(|t| task.began + t);
    // Once stopped: why, and when SIGKILL follows.
    let mut fate: Option<(Option<Signal>, Instant)> = None;
    loop {
        let now = Instant::now();
        let wait = match (fate, deadline) {
            (Some((_, kill_at)), _) => kill_at.saturating_duration_since(now),
            (None, Some(d)) => d.saturating_duration_since(now),
            (None, None) => Duration::MAX,
        };
        if wait_exit(&task.handle, sigs, wait)? {
            return Ok(fate.map(|(why, _)| why));
        }
        let mut interrupt = None;
        while let Some(sig) = signal::pending(sigs) {
            interrupt.get_or_insert(sig);
        }
        let now = Instant::now();
        match fate {
            Some((why, kill_at)) if now >= kill_at => {
                let _ = nix::sys::signal::killpg(task.group, Signal::SIGKILL);
                return Ok(Some(why));
            }
            Some(_) => continue,
            None if interrupt.is_some() => fate = Some((interrupt, now + stop_timeout)),
            None if deadline.is_some_and(|d| now >= d) => fate = Some((None, now + stop_timeout)),
            None => continue,
        }
        let _ = nix::sys::signal::killpg(task.group, stop_signal);
        let _ = nix::sys::signal::killpg(task.group, Signal::SIGCONT);
    }
}

/// Waits up to `wait` for the task to exit (`Ok(true)`) or a signal to come (`Ok(false)`).
fn wait_exit(
    handle: &crate::process::Handle,
    sigs: &nix::sys::signalfd::SignalFd,
    wait: Duration,
) -> Result<bool> {
    // Without a pidfd (an old kernel), the exit is looked for every 50 ms.
    let step = match handle.pidfd() {
        Some(_) => wait,
        None => wait.min(Duration::from_millis(50)),
    };
    let timeout = PollTimeout::try_from(step.as_millis().min(i32::MAX as u128) as i32)
        .unwrap_or(PollTimeout::NONE);
    let timeout = if step == Duration::MAX {
        PollTimeout::NONE
    } else {
        timeout
    };
    let mut fds = vec![PollFd::new(sigs.as_fd(), PollFlags::POLLIN)];
    if let Some(fd) = handle.pidfd() {
        fds.push(PollFd::new(fd, PollFlags::POLLIN));
    }
    match poll(&mut fds, timeout) {
        Ok(_) | Err(Errno::EINTR) => Ok(handle.is_gone()),
        Err(e) => Err(Error::Os(format!("poll: {e}"))),
    }
}

/// After an interrupt: stops what this run started, and tells the children still
/// starting (which then stop what they started), never a service before something that
/// needs it and is still up or starting. Those nothing live needs go at the same time;
/// returns when the rest waits for children to end.
fn wind_down<'a>(
    sd: &StateDir,
    stack: &Stack,
    run: &str,
    sig: Signal,
    progress: &BTreeMap<&'a str, Progress>,
    came_up: &mut Vec<&'a str>,
    told: &mut Vec<Pid>,
) {
    loop {
        let starting = in_progress(progress);
        let live: Vec<&str> = starting
            .iter()
            .map(|(n, _)| *n)
            .chain(came_up.iter().copied())
            .collect();
        // What each live service needs, also through services that are not live (a task
        // that has run, a service found running): app -> migrate -> db keeps db for app.
        let below: Vec<(&str, BTreeSet<&str>)> =
            live.iter().map(|o| (*o, stack.needs_below(o))).collect();
        let needed = |n: &str| below.iter().any(|(o, b)| *o != n && b.contains(n));
        for (name, pid) in &starting {
            if !needed(name) && !told.contains(pid) {
                let _ = nix::sys::signal::kill(*pid, sig);
                told.push(*pid);
            }
        }
        let round: Vec<&str> = came_up.iter().copied().filter(|n| !needed(n)).collect();
        if round.is_empty() {
            return;
        }
        came_up.retain(|n| !round.contains(n));
        let services: Vec<&Service> = round
            .iter()
            .map(|n| &stack.services[*n])
            .filter(|s| !s.oneshot)
            .collect();
        crate::parallel::each(services, |svc| stop_ours(sd, svc, run));
    }
}

/// Stops `svc` if its record still says this run started it (it may have been stopped
/// and started again by hand since it came up).
fn stop_ours(sd: &StateDir, svc: &Service, run: &str) {
    let name = svc.name.as_str();
    let still = |r: Option<&Record>| {
        r.and_then(|r| r.stack.as_ref())
            .is_some_and(|m| m.by.as_deref() == Some(run))
    };
    let opts = stop::Options::default();
    match stop::stop_name_if(sd, &svc.name, &opts, TOOL, &still) {
        Ok(Some(r)) => say(TOOL, name, format!("interrupted: {}", r.describe())),
        Ok(None) => say(
            TOOL,
            name,
            "interrupted: not stopped, it is no longer the start this pm-up made",
        ),
        Err(e) => say(TOOL, name, format!("interrupted, and not stopped: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::TaskReport;

    fn read_back(text: &[u8]) -> Option<TaskReport> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).unwrap();
        if !text.is_empty() {
            nix::unistd::write(&w, text).unwrap();
        }
        TaskReport::read(r)
    }

    #[test]
    fn a_task_report_is_its_last_whole_line_and_junk_is_nothing() {
        let full = TaskReport {
            pid: 4242,
            start_time: 99,
            marker: "7.8.9".into(),
        };
        assert_eq!(read_back(b"0 5 7.8.9\n4242 99 7.8.9\n"), Some(full));
        let early = read_back(b"0 5 7.8.9\n").unwrap();
        assert_eq!((early.pid, early.start_time), (0, 5));
        // Nothing written (the write end still open: no EOF), a torn or hostile line.
        for junk in [
            &b""[..],
            b"4242 99",
            b"1 99 m\n",
            b"-5 99 m\n",
            b"x 99 m\n",
            b"4242 99 m extra\n",
            b"\xff\n",
        ] {
            assert!(read_back(junk).is_none(), "{junk:?}");
        }
    }
}
