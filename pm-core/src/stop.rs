//! The stop algorithm shared by pm-stop, pm-stopall and pm-start's clean-up.
//!
//! Graceful first, certain in the end: the stop signal goes to the leader (through its
//! pidfd) and to its whole process group, then SIGCONT so a stopped process can act on it;
//! pm waits on pidfds until the leader and every group member are gone, and escalates to
//! SIGKILL after the timeout. Groups are not enough (every PostgreSQL child calls
//! `setsid()`, self-daemonizers double-fork), so the service's descendants are snapshotted
//! by parent PID before anything is sent, and once the leader is gone whatever is left of
//! that snapshot and of the session is swept the same way. What cannot be stopped is
//! reported by PID, never silently left.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::cgroup::Cgroup;
use crate::error::{errno, Error, Result};
use crate::exit::Code;
use crate::name::Name;
use crate::pidfile;
use crate::process::{self, Expect, Gate, Handle, Stat};
use crate::record::{self, LastStop, Phase, Record};
use crate::state::StateDir;
use crate::status::{inspect, State};

pub use crate::process::KILL_WAIT;

/// A stop in progress in this process, for a tool interrupted by Ctrl-C to say what state
/// it leaves.
#[derive(Debug, Clone)]
pub struct InFlight {
    pub name: String,
    /// The last signal sent to the service, and when.
    pub sent: Option<(Signal, Instant)>,
}

static IN_FLIGHT: std::sync::Mutex<Vec<InFlight>> = std::sync::Mutex::new(Vec::new());

thread_local! {
    /// The NAME this thread is stopping (pm-stopall stops several at once).
    static CURRENT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Registers a stop of `name` on this thread for as long as it lives.
struct Registered;

impl Registered {
    fn new(name: &str) -> Registered {
        CURRENT.with(|c| *c.borrow_mut() = Some(name.to_string()));
        if let Ok(mut v) = IN_FLIGHT.lock() {
            v.push(InFlight {
                name: name.to_string(),
                sent: None,
            });
        }
        Registered
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let name = CURRENT.with(|c| c.borrow_mut().take());
        if let (Ok(mut v), Some(n)) = (IN_FLIGHT.lock(), name) {
            v.retain(|f| f.name != n);
        }
    }
}

fn note_sent(sig: Signal) {
    CURRENT.with(|c| {
        if let (Some(n), Ok(mut v)) = (c.borrow().as_ref(), IN_FLIGHT.lock()) {
            if let Some(f) = v.iter_mut().find(|f| &f.name == n) {
                f.sent = Some((sig, Instant::now()));
            }
        }
    });
}

/// The stops in progress, and the line a tool prints for each when it is interrupted.
pub fn in_flight() -> Vec<(String, String)> {
    let v = IN_FLIGHT.lock().map(|v| v.clone()).unwrap_or_default();
    v.into_iter()
        .map(|f| {
            let line = match f.sent {
                Some((sig, at)) => format!(
                    "interrupted: SIG{} sent {} ago, {} may still be shutting down (pm-stop {} again finishes the stop)",
                    crate::signal::name(sig),
                    crate::duration::elapsed(at.elapsed()),
                    f.name,
                    f.name
                ),
                None => "interrupted before any signal was sent; left as it was".to_string(),
            };
            (f.name, line)
        })
        .collect()
}

/// For pm-stop and pm-stopall: SIGINT, SIGTERM and SIGHUP are blocked (call this before
/// any other thread starts) and a thread waits for them; when one comes, each stop in
/// progress is reported with what state it leaves (`say(tool, name, line)`), and the
/// process dies of that signal, so a shell loop stops.
pub fn report_interrupts(tool: &'static str) -> Result<()> {
    use nix::sys::signal::{SigSet, SigmaskHow};
    let mut set = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(sig);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| Error::Os(format!("blocking SIGINT/SIGTERM: {e}")))?;
    let spawned = std::thread::Builder::new()
        .name("interrupts".into())
        .stack_size(64 << 10)
        .spawn(move || {
            let Ok(sig) = set.wait() else { return };
            for (name, line) in in_flight() {
                crate::report::say(tool, &name, line);
            }
            let _ = crate::signal::die_by(sig);
            // Not reached: the default action of these signals ends the process.
            std::process::exit(128 + sig as i32);
        });
    spawned
        .map(|_| ())
        .map_err(|e| Error::Os(format!("starting the interrupt thread: {e}")))
}

/// What to stop and how.
#[derive(Debug)]
pub struct Plan {
    /// The environment entry every process of this start carries (`PM_RUN_ID=…`, see
    /// [`crate::record::Record::marker`]): with the leader gone, only such processes are
    /// adopted from a recorded group or session, whose id may have been reused.
    pub marker: String,
    /// The verified leader, if it is still alive and ours.
    pub leader: Option<Handle>,
    /// Recorded process group and session of the service (usually both = leader PID).
    pub pgid: Option<i32>,
    pub sid: Option<i32>,
    /// Recorded start time of the leader: nothing born earlier can belong to the service.
    pub born_after: u64,
    pub signal: Signal,
    pub timeout: Duration,
    /// Escalate to SIGKILL after the timeout (false for `--no-kill`).
    pub kill: bool,
    /// Processes an interrupted stop had snapshotted outside the group (from the record):
    /// still stopped if they still are those processes.
    pub known: Vec<Proc>,
    /// The start's cgroup, where it has one: then it, not groups and sessions, is the
    /// service.
    pub cgroup: Option<Cgroup>,
}

/// A process by identity: PID and start time (clock ticks after boot).
pub use crate::record::Proc;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing of the service was running.
    AlreadyGone,
    /// Everything is gone.
    Stopped {
        signal: Signal,
        escalated: bool,
        elapsed: Duration,
        /// Processes outside the group that had to be stopped separately.
        swept: usize,
        /// The service had a cgroup: `swept` counts the rest of the cgroup.
        contained: bool,
    },
    /// Some processes are still alive.
    Failed {
        signal: Signal,
        escalated: bool,
        elapsed: Duration,
        left: Vec<i32>,
        reason: String,
    },
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        !matches!(self, Outcome::Failed { .. })
    }

    /// The record's `last_stop` for this outcome; `by` names the tool.
    pub fn last_stop(&self, by: &str) -> LastStop {
        let (sig, escalated, elapsed, result, left) = match self {
            Outcome::AlreadyGone => (None, false, Duration::ZERO, "already-gone", vec![]),
            Outcome::Stopped {
                signal,
                escalated,
                elapsed,
                ..
            } => (Some(*signal), *escalated, *elapsed, "stopped", vec![]),
            Outcome::Failed {
                signal,
                escalated,
                elapsed,
                left,
                ..
            } => (Some(*signal), *escalated, *elapsed, "failed", left.clone()),
        };
        LastStop {
            at: record::now_rfc3339(),
            by: by.into(),
            signal: sig.map(crate::signal::name).unwrap_or_default().into(),
            escalated,
            duration_ms: elapsed.as_millis() as u64,
            result: result.into(),
            left,
        }
    }
}

/// A set of processes being stopped together.
struct Targets {
    handles: Vec<Handle>,
    seen: HashSet<i32>,
}

impl Targets {
    fn new() -> Self {
        Targets {
            handles: Vec::new(),
            seen: HashSet::new(),
        }
    }

    /// Adds verified handles for `stats` not seen before; returns the new ones' indices.
    fn add(&mut self, stats: &[Stat], boot: &str) -> Result<Vec<usize>> {
        self.add_where(stats, boot, |_| true)
    }

    /// [`Targets::add`] for processes read from cgroup `cg`: kept only if, with the pidfd
    /// open, the process is still in it (its PID may have been reused since the read).
    fn add_in(&mut self, stats: &[Stat], boot: &str, cg: &Cgroup) -> Result<Vec<usize>> {
        self.add_where(stats, boot, |h| cg.contains(h.pid) && !h.is_gone())
    }

    /// Opens a verified handle for each of `stats` not seen before and keeps those `keep`
    /// accepts (asked with the pidfd open); returns the kept ones' indices.
    fn add_where(
        &mut self,
        stats: &[Stat],
        boot: &str,
        keep: impl Fn(&Handle) -> bool,
    ) -> Result<Vec<usize>> {
        let mut added = Vec::new();
        for s in stats {
            if !self.seen.insert(s.pid) {
                continue;
            }
            let expect = Expect::StartTime {
                start_time: s.start_time,
                boot_id: boot.to_string(),
            };
            if let Ok(h) = Handle::open(s.pid, &expect)? {
                if keep(&h) {
                    self.handles.push(h);
                    added.push(self.handles.len() - 1);
                }
            }
        }
        Ok(added)
    }

    /// The signal (then SIGCONT, so a stopped process can act on it) to each of `which`,
    /// every one tried whatever happens to another; the last error, if any.
    fn signal_each(&self, which: &[usize], sig: Signal) -> Option<Error> {
        let mut err = None;
        for &i in which {
            if let Err(e) = self.signal(&[i], sig) {
                err = Some(e);
                continue;
            }
            if sig != Signal::SIGKILL && sig != Signal::SIGCONT {
                let _ = self.signal(&[i], Signal::SIGCONT);
            }
        }
        err
    }

    fn signal(&self, which: &[usize], sig: Signal) -> Result<()> {
        if sig != Signal::SIGCONT {
            note_sent(sig);
        }
        for &i in which {
            self.handles[i].signal(sig)?;
        }
        Ok(())
    }

    /// The indices in `which` whose process is a live member of group `g` right now.
    fn in_group(&self, which: &[usize], g: i32) -> HashSet<usize> {
        which
            .iter()
            .copied()
            .filter(|&i| {
                let h = &self.handles[i];
                matches!(
                    Stat::read(h.pid),
                    Ok(Some(s)) if s.pgrp == g && s.start_time == h.start_time && !s.is_zombie()
                )
            })
            .collect()
    }

    /// Adds the processes an earlier, interrupted stop had recorded, if they still are
    /// those processes.
    fn add_known(&mut self, known: &[Proc], boot: &str) -> Result<()> {
        for p in known {
            if !self.seen.insert(p.pid) {
                continue;
            }
            let expect = Expect::StartTime {
                start_time: p.start_time,
                boot_id: boot.to_string(),
            };
            if let Ok(h) = Handle::open(p.pid, &expect)? {
                self.handles.push(h);
            }
        }
        Ok(())
    }

    fn procs(&self) -> Vec<Proc> {
        self.handles
            .iter()
            .map(|h| Proc {
                pid: h.pid,
                start_time: h.start_time,
            })
            .collect()
    }

    fn all(&self) -> Vec<usize> {
        (0..self.handles.len()).collect()
    }

    /// Indices of the targets still running.
    fn live(&self) -> Vec<usize> {
        (0..self.handles.len())
            .filter(|&i| !self.handles[i].is_gone())
            .collect()
    }

    fn alive(&self) -> Vec<i32> {
        self.handles
            .iter()
            .filter(|h| !h.is_gone())
            .map(|h| h.pid)
            .collect()
    }

    fn wait(&self, deadline: Instant) -> bool {
        let refs: Vec<&Handle> = self.handles.iter().collect();
        process::wait_all_gone(&refs, deadline)
    }
}

/// A process group or session id is ours to use only while no *other* live process holds
/// that PID (Linux does not reuse a PID while it is a live group's or session's id, so
/// if the id's PID is free, the members are the remains of our group).
fn usable_id(id: Option<i32>, stats: &[Stat]) -> Option<i32> {
    let id = id.filter(|&g| g > 1)?;
    (!stats.iter().any(|s| s.pid == id)).then_some(id)
}

/// Runs the plan. Returns only when everything is gone, or when it is certain that
/// something cannot be stopped.
///
/// `journal` is called with the processes outside the group before anything is sent to
/// them (and only when there are some): the caller records them, as best it can, so a stop that is
/// killed half-way can be finished by the next one — they cannot be found again by group
/// or session once the leader is gone. One deadline (`plan.timeout` from now) covers the
/// group, the session and the sweep.
pub fn stop(mut plan: Plan, journal: &mut dyn FnMut(&[Proc])) -> Result<Outcome> {
    process::raise_fd_limit();
    if let Some(cg) = plan.cgroup.take() {
        if cg.exists() {
            return stop_contained(plan, &cg);
        }
        // Only an empty cgroup can be removed: nothing of the service is left, unless a
        // live leader moved itself out (then it alone is stopped, as below).
        if plan.leader.as_ref().is_none_or(Handle::is_gone) {
            return Ok(Outcome::AlreadyGone);
        }
        plan.pgid = None;
        plan.sid = None;
        plan.known.clear();
    }
    let leader = plan.leader.take();
    let boot = process::boot_id()?;
    let started = Instant::now();
    let deadline = process::deadline(plan.timeout);
    let Survey {
        snapshot,
        fast_path,
        scope,
        pgid,
        sid,
        kill_group,
    } = survey(&plan, leader.as_ref())?;
    let mut group = Targets::new();
    if let Some(l) = leader {
        group.seen.insert(l.pid);
        group.handles.push(l);
    }
    let in_group = |s: &Stat| pgid.is_some_and(|g| s.pgrp == g);
    let group_stats: Vec<Stat> = snapshot.iter().filter(|s| in_group(s)).cloned().collect();
    group.add(&group_stats, &boot)?;
    let mut rest = Targets::new();
    rest.seen.extend(group.seen.iter().copied());
    let rest_stats: Vec<Stat> = snapshot.iter().filter(|s| !in_group(s)).cloned().collect();
    rest.add(&rest_stats, &boot)?;
    rest.add_known(&plan.known, &boot)?;

    if group.handles.is_empty() && rest.handles.is_empty() {
        return Ok(Outcome::AlreadyGone);
    }
    if !rest.handles.is_empty() || !plan.known.is_empty() {
        journal(&rest.procs());
    }

    // Phase 1: the leader and its group.
    let mut escalated = false;
    if !group.handles.is_empty() {
        let all = group.all();
        let ids = Ids { kill_group, pgid };
        if let Some(o) = phase(
            &mut group,
            &all,
            ids,
            &scope,
            &boot,
            &plan,
            (started, deadline),
            &mut escalated,
        )? {
            return Ok(o);
        }
    }

    sweep(
        rest,
        (pgid, sid, fast_path),
        &scope,
        &boot,
        &plan,
        (started, deadline),
        escalated,
        journal,
    )
}

/// What a stop without a cgroup acts on, found before anything is sent.
struct Survey {
    /// The processes of the start (the leader's descendants, or its group and session
    /// and this start's marked processes), each admitted by `scope`.
    snapshot: Vec<Stat>,
    /// The snapshot came from the live leader's children lists, not a scan.
    fast_path: bool,
    scope: Gate,
    pgid: Option<i32>,
    sid: Option<i32>,
    /// The group that may be signalled with killpg: proven the service's by its live
    /// leader, and not pm's own.
    kill_group: Option<i32>,
}

/// Finds what [`stop`] acts on for `plan`, whose leader (if any) is `leader`.
fn survey(plan: &Plan, leader: Option<&Handle>) -> Result<Survey> {
    let leader_stat = match leader {
        Some(l) => Stat::read(l.pid)?.filter(|s| !s.is_zombie() && s.start_time == l.start_time),
        None => None,
    };
    // A live leader of its own group and session: its descendants are the snapshot, read
    // from the kernel's children lists without a scan of all of /proc (the common case,
    // and the one whose latency matters). Otherwise, scan.
    let fast = leader_stat
        .as_ref()
        .filter(|s| s.pgrp == s.pid && s.session == s.pid)
        .and_then(|s| process::descendants(s.pid));
    let stats = if fast.is_some() {
        Vec::new()
    } else {
        process::scan()
    };
    // With the leader gone, only this start's marked processes are adopted (not just the
    // NAME, which another state directory may use too).
    let scope = Gate {
        born_after: plan.born_after,
        marker: leader_stat.is_none().then(|| plan.marker.clone()),
    };
    // With the leader alive: its own group/session, or the recorded ones it still is in
    // (a daemon tracked through its PID file may sit in its launcher's). With the leader
    // gone: the recorded ones, unless their id now belongs to another process.
    let (pgid, sid) = match &leader_stat {
        Some(s) => (
            (s.pgrp > 1 && (s.pgrp == s.pid || plan.pgid == Some(s.pgrp))).then_some(s.pgrp),
            (s.session > 1 && (s.session == s.pid || plan.sid == Some(s.session)))
                .then_some(s.session),
        ),
        None => (usable_id(plan.pgid, &stats), usable_id(plan.sid, &stats)),
    };
    // killpg only a group proven ours by its live leader, and never our own group (a
    // service's script may run pm-stopall): members are then signalled one by one.
    let own_pgrp = Stat::read(std::process::id() as i32)?.map(|s| s.pgrp);
    let kill_group = pgid.filter(|g| leader_stat.is_some() && own_pgrp != Some(*g));
    let leader_pid = leader.map_or(0, |l| l.pid);
    let fast_path = fast.is_some();
    let mut snapshot: Vec<Stat> = match fast {
        Some(d) => d,
        None => process::members(&stats, leader_pid, pgid, sid, plan.born_after),
    }
    .into_iter()
    .filter(|s| scope.admits(s))
    .collect();
    // With the leader gone, a worker that left the group and the session (and whose
    // parent died too) is found only by this start's marker, which is unique to it; a
    // NAME-only marker (records from before run ids) is not enough to adopt that way.
    // Not while another process holds the leader's PID: nothing is sent to that process
    // nor to its children, whatever their environment says.
    let leader_pid_free = plan
        .pgid
        .is_none_or(|g| usable_id(Some(g), &stats).is_some());
    if leader_stat.is_none()
        && leader_pid_free
        && plan.marker.starts_with(crate::record::RUN_ID_VAR)
    {
        let known: HashSet<i32> = snapshot.iter().map(|s| s.pid).collect();
        let marked: Vec<Stat> = stats
            .iter()
            .filter(|s| !known.contains(&s.pid) && scope.admits(s))
            .cloned()
            .collect();
        snapshot.extend(marked);
    }

    Ok(Survey {
        snapshot,
        fast_path,
        scope,
        pgid,
        sid,
        kill_group,
    })
}

/// Phase 2 of [`stop`]: whatever of the snapshot, the session, or their children is
/// left once the group is gone, stopped the same way. `ids`: the group, the session, and
/// whether the snapshot came from the fast path.
#[allow(clippy::too_many_arguments)]
fn sweep(
    mut rest: Targets,
    ids: (Option<i32>, Option<i32>, bool),
    scope: &Gate,
    boot: &str,
    plan: &Plan,
    clock: (Instant, Instant),
    mut escalated: bool,
    journal: &mut dyn FnMut(&[Proc]),
) -> Result<Outcome> {
    let (pgid, sid, fast_path) = ids;
    let started = clock.0;
    // Nothing outside the group was seen, the group is empty (not even a zombie) and the
    // session is the group's: nothing can be left, so /proc is not read again.
    let group_empty = pgid.is_some_and(|g| killpg(Pid::from_raw(g), None) == Err(Errno::ESRCH));
    if rest.handles.is_empty() && group_empty && sid.is_none_or(|s| Some(s) == pgid) && fast_path {
        return Ok(Outcome::Stopped {
            signal: plan.signal,
            escalated,
            elapsed: started.elapsed(),
            swept: 0,
            contained: false,
        });
    }
    let stats = process::scan();
    // The leader is gone now, so a live process holding the session id is somebody else.
    let sid_now = usable_id(sid, &stats);
    let mut extra: Vec<Stat> = Vec::new();
    for r in rest.alive() {
        extra.extend(process::members(&stats, r, None, None, plan.born_after));
    }
    extra.extend(
        stats
            .iter()
            .filter(|p| {
                (sid_now.is_some_and(|s| p.session == s) || pgid.is_some_and(|g| p.pgrp == g))
                    && scope.admits(p)
            })
            .cloned(),
    );
    let before = rest.handles.len();
    rest.add(&extra, boot)?;
    if rest.handles.len() > before {
        journal(&rest.procs());
    }
    let live = rest.live();
    let swept = live.len();
    if swept > 0 {
        let ids = Ids {
            kill_group: None,
            pgid: None,
        };
        if let Some(o) = phase(
            &mut rest,
            &live,
            ids,
            scope,
            boot,
            plan,
            clock,
            &mut escalated,
        )? {
            return Ok(o);
        }
    }
    Ok(Outcome::Stopped {
        signal: plan.signal,
        escalated,
        elapsed: started.elapsed(),
        swept,
        contained: false,
    })
}

/// The stop algorithm of a service with a cgroup: the cgroup is the service, and no
/// process table scan is needed, whatever else the host runs.
///
/// The stop signal goes first to the leader and the members of its process group (nginx
/// wants QUIT at its master, which stops its workers), then, once they are gone, to
/// whatever else is in the cgroup (a crashed master's workers, a double-forked helper);
/// the wait is for `populated 0`; after the deadline `cgroup.kill`. The empty cgroup is
/// removed.
fn stop_contained(mut plan: Plan, cg: &Cgroup) -> Result<Outcome> {
    let started = Instant::now();
    let deadline = process::deadline(plan.timeout);
    let boot = process::boot_id()?;
    let leader = plan.leader.take().filter(|l| !l.is_gone());
    cg.thaw();
    let members = cg.members();
    // The kernel's word decides, not the processes pm can see.
    if leader.is_none() && !cg.populated() {
        let _ = cg.remove();
        return Ok(Outcome::AlreadyGone);
    }
    // A service's own script may run pm-stop/pm-stopall: then this process is in the
    // cgroup too, never signalled, and "empty" means "nobody but us" (cgroup.kill, and
    // the cgroup's removal, are out).
    let me = std::process::id() as i32;
    let cage = Cage {
        cg,
        boot: &boot,
        sig: plan.signal,
        me,
        inside: cg.contains(me),
    };
    let first = cage.first(leader, &members)?;
    // A process the caller may not signal (a setuid helper in a user's delegated cgroup)
    // does not stop the stop: the others still get the signal, and cgroup.kill decides.
    let mut denied = first.signal_each(&first.all(), plan.signal);
    let _ = first.wait(deadline);
    let mut rest = Targets::new();
    rest.seen.clone_from(&first.seen);
    denied = denied.or(cage.signal_the_rest(&mut rest)?);
    let swept = rest.handles.len();
    let mut escalated = false;
    if !cage.done(&first, &mut rest, deadline)? {
        let left = if plan.kill {
            escalated = true;
            cage.kill(&first, &mut rest)?;
            (!cage.done(&first, &mut rest, process::deadline(KILL_WAIT))?)
                .then_some("still running after SIGKILL")
        } else {
            Some("still running after the timeout (--no-kill)")
        };
        if let Some(reason) = left {
            let reason = match denied {
                Some(e) => format!("{reason}; {e}"),
                None => reason.to_string(),
            };
            return Ok(Outcome::Failed {
                signal: plan.signal,
                escalated,
                elapsed: started.elapsed(),
                left: cage.left(&first),
                reason,
            });
        }
    }
    if !cage.inside {
        let _ = cg.remove();
    }
    Ok(Outcome::Stopped {
        signal: plan.signal,
        escalated,
        elapsed: started.elapsed(),
        swept,
        contained: true,
    })
}

/// A service's cgroup as [`stop_contained`] stops it.
struct Cage<'a> {
    cg: &'a Cgroup,
    boot: &'a str,
    sig: Signal,
    me: i32,
    /// This process is in the cgroup (a service's own script stops it).
    inside: bool,
}

impl Cage<'_> {
    /// What the stop signal goes to first: the leader and its process group.
    fn first(&self, leader: Option<Handle>, members: &[Stat]) -> Result<Targets> {
        let pgrp = leader
            .as_ref()
            .and_then(|l| Stat::read(l.pid).ok().flatten())
            .map(|s| s.pgrp);
        let mut first = Targets::new();
        if let Some(l) = leader {
            first.seen.insert(l.pid);
            first.handles.push(l);
        }
        let group: Vec<Stat> = members
            .iter()
            .filter(|s| pgrp.is_some_and(|g| g > 1 && s.pgrp == g))
            .cloned()
            .collect();
        first.add_in(&group, self.boot, self.cg)?;
        Ok(first)
    }

    /// The stop signal to the rest of the cgroup, until a read of it finds nobody new
    /// (a fork between a read and the signals is found by the next read).
    fn signal_the_rest(&self, rest: &mut Targets) -> Result<Option<Error>> {
        let mut denied = None;
        for _ in 0..64 {
            let new = rest.add_in(&self.cg.members(), self.boot, self.cg)?;
            if new.is_empty() {
                break;
            }
            denied = denied.or(rest.signal_each(&new, self.sig));
        }
        Ok(denied)
    }

    /// Waits until the cgroup is empty (but for this process, if it is inside), by
    /// `deadline`; false if it is not.
    fn done(&self, first: &Targets, rest: &mut Targets, deadline: Instant) -> Result<bool> {
        if !self.inside {
            return Ok(first.wait(deadline) && self.cg.wait_empty(deadline));
        }
        loop {
            if !(first.wait(deadline) && rest.wait(deadline)) {
                return Ok(false);
            }
            let others: Vec<Stat> = self
                .cg
                .members()
                .into_iter()
                .filter(|s| s.pid != self.me)
                .collect();
            if others.is_empty() {
                return Ok(true);
            }
            let new = rest.add_in(&others, self.boot, self.cg)?;
            let _ = rest.signal_each(&new, self.sig);
            if new.is_empty() {
                // Seen, signalled, gone by pidfd, yet listed: exiting right now.
                if Instant::now() >= deadline {
                    return Ok(false);
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
    }

    /// SIGKILL to all: cgroup.kill, then one by one too, until a read finds nothing new:
    /// without cgroup.kill (before Linux 5.14), from inside the cgroup, and for what
    /// cgroup.kill misses (a process whose main thread has exited while others run).
    fn kill(&self, first: &Targets, rest: &mut Targets) -> Result<()> {
        let _ = first.signal_each(&first.live(), Signal::SIGKILL);
        let killed = !self.inside && self.cg.kill().map_err(|e| Error::io(self.cg.path(), e))?;
        for round in 0..64 {
            if killed
                && round == 0
                && self
                    .cg
                    .wait_empty(process::deadline(Duration::from_millis(50)))
            {
                break;
            }
            let all = rest.add_in(&self.cg.members(), self.boot, self.cg)?;
            let live: Vec<usize> = rest.live();
            if all.is_empty() && live.is_empty() {
                break;
            }
            let _ = rest.signal_each(&live, Signal::SIGKILL);
            if !self.cg.populated() {
                break;
            }
        }
        Ok(())
    }

    /// The PIDs still there after a stop that failed.
    fn left(&self, first: &Targets) -> Vec<i32> {
        let mut left = first.alive();
        left.extend(self.cg.members().iter().map(|s| s.pid));
        left.sort_unstable();
        left.dedup();
        left
    }
}

/// The group a phase signals with killpg (if any) and the one it watches for members
/// forked meanwhile.
#[derive(Clone, Copy)]
struct Ids {
    kill_group: Option<i32>,
    pgid: Option<i32>,
}

/// One round of graceful-then-certain: the stop signal to `which` (and their group), wait
/// until the stop's deadline, SIGKILL, wait again. `Some(outcome)` when something is left.
#[allow(clippy::too_many_arguments)]
fn phase(
    t: &mut Targets,
    which: &[usize],
    ids: Ids,
    scope: &Gate,
    boot: &str,
    plan: &Plan,
    (started, deadline): (Instant, Instant),
    escalated: &mut bool,
) -> Result<Option<Outcome>> {
    let fail = |t: &Targets, escalated: bool, reason: String| Outcome::Failed {
        signal: plan.signal,
        escalated,
        elapsed: started.elapsed(),
        left: t.alive(),
        reason,
    };
    if let Err(e) = send(t, which, ids.kill_group, plan.signal) {
        return Ok(Some(fail(t, *escalated, e.to_string())));
    }
    if wait_group(t, ids.pgid, scope, boot, plan.signal, deadline)? {
        return Ok(None);
    }
    if !plan.kill {
        let reason = "still running after the timeout (--no-kill)".to_string();
        return Ok(Some(fail(t, *escalated, reason)));
    }
    *escalated = true;
    let live = t.live();
    if let Err(e) = send(t, &live, ids.kill_group, Signal::SIGKILL) {
        return Ok(Some(fail(t, true, e.to_string())));
    }
    let deadline = process::deadline(KILL_WAIT);
    if wait_group(t, ids.pgid, scope, boot, Signal::SIGKILL, deadline)? {
        return Ok(None);
    }
    Ok(Some(fail(t, true, "still running after SIGKILL".into())))
}

/// Sends `sig` to the processes `which` and to group `kill_group`, then SIGCONT so a
/// stopped process can act on it.
fn send(t: &Targets, which: &[usize], kill_group: Option<i32>, sig: Signal) -> Result<()> {
    // Whoever was in the group both before and after killpg got the signal from it:
    // sending it again would deliver it twice, and to many services a second TERM or
    // INT means "give up on the graceful shutdown".
    let mut direct = which.to_vec();
    if let Some(g) = kill_group {
        let before = t.in_group(which, g);
        match killpg(Pid::from_raw(g), sig) {
            Ok(()) => {
                let after = t.in_group(which, g);
                direct.retain(|i| !(before.contains(i) && after.contains(i)));
            }
            Err(Errno::ESRCH) => {}
            Err(e) => {
                return Err(Error::Process {
                    pid: g,
                    err: errno(e),
                })
            }
        }
    }
    t.signal(&direct, sig)?;
    if sig != Signal::SIGKILL && sig != Signal::SIGCONT {
        if let Some(g) = kill_group {
            let _ = killpg(Pid::from_raw(g), Signal::SIGCONT);
        }
        t.signal(which, Signal::SIGCONT)?;
    }
    Ok(())
}

/// Waits until every known target is gone, then re-reads group `pgid` once; members
/// forked meanwhile are signalled and waited for too. False on timeout.
fn wait_group(
    group: &mut Targets,
    pgid: Option<i32>,
    scope: &Gate,
    boot: &str,
    sig: Signal,
    deadline: Instant,
) -> Result<bool> {
    loop {
        if !group.wait(deadline) {
            return Ok(false);
        }
        let Some(g) = pgid else { return Ok(true) };
        // No process at all in the group (not even a zombie): no need to read /proc.
        if killpg(Pid::from_raw(g), None) == Err(Errno::ESRCH) {
            return Ok(true);
        }
        let late: Vec<Stat> = process::scan()
            .into_iter()
            .filter(|s| s.pgrp == g && scope.admits(s))
            .collect();
        if late.is_empty() {
            return Ok(true);
        }
        let added = group.add(&late, boot)?;
        if added.is_empty() {
            // Seen before but not gone by pidfd: cannot happen unless pidfds are missing.
            if late.iter().all(|s| !process::is_alive(s.pid)) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        group.signal(&added, sig)?;
        if sig != Signal::SIGKILL {
            group.signal(&added, Signal::SIGCONT)?;
        }
    }
}

/// Stops whatever is in cgroup `cg` (a start no record names any more) and removes it.
pub fn stop_cgroup(cg: Cgroup, signal: Signal, timeout: Duration) -> Result<Outcome> {
    stop(
        Plan {
            marker: String::new(),
            leader: None,
            pgid: None,
            sid: None,
            born_after: u64::MAX,
            signal,
            timeout,
            kill: true,
            known: Vec::new(),
            cgroup: Some(cg),
        },
        &mut |_| {},
    )
}

/// Stops what is in the cgroups of this state directory that no record names (earlier
/// starts whose record was replaced or removed; a pm-start killed before its child ran
/// leaves an empty one, which is removed). `only` limits it to one NAME; `locked` says the
/// caller holds that NAME's lock already, else each NAME is locked while its cgroups are
/// looked at (a pm-start between creating a cgroup and recording it holds the lock).
/// The stop signal and timeout are the NAME's recorded ones unless `opts` overrides.
pub fn strays(
    sd: &StateDir,
    base: &crate::cgroup::Base,
    only: Option<&Name>,
    locked: bool,
    opts: &Options,
) -> Vec<(String, Cgroup, Result<Outcome>)> {
    let mut out = Vec::new();
    for (n, cg) in base.cgroups() {
        if only.is_some_and(|o| o.as_str() != n) {
            continue;
        }
        let Ok(name) = Name::new(&n) else { continue };
        let lock = if locked {
            None
        } else {
            match sd.lock(&name) {
                Ok(l) => Some(l),
                Err(e) => {
                    out.push((n, cg, Err(e)));
                    continue;
                }
            }
        };
        let rec = sd.read_record(&name).ok().flatten();
        if rec.as_ref().and_then(|r| r.cgroup.as_deref()) == Some(cg.path()) {
            continue;
        }
        let signal = opts
            .signal
            .or(rec.as_ref().map(|r| r.stop_signal))
            .unwrap_or(record::DEFAULT_STOP_SIGNAL);
        let timeout = opts
            .timeout
            .or(rec.as_ref().map(|r| r.stop_timeout))
            .unwrap_or(DEFAULT_TIMEOUT);
        let outcome = stop_cgroup(cg.clone(), signal, timeout);
        out.push((n, cg, outcome));
        if let (Some(l), None) = (lock, &rec) {
            let _ = l.remove();
        }
    }
    out
}

/// Options of pm-stop / pm-stopall that override the record.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub signal: Option<Signal>,
    pub timeout: Option<Duration>,
    /// `--no-kill`.
    pub no_kill: bool,
    /// `--pidfile` / `PM_PIDFILE`, for names without a record.
    pub pidfile_template: Option<String>,
    /// Only stop what is left of the service (pm-stopall on a dead one): when nothing is
    /// running, leave the record and PID file as they are.
    pub leftovers_only: bool,
}

impl Options {
    /// Builds the options from `--signal`, `--timeout` and `--no-kill` as pm-stop and
    /// pm-stopall take them (no PID-file template: pm-stop adds its own).
    pub fn parse(signal: Option<&str>, timeout: Option<&str>, no_kill: bool) -> Result<Options> {
        Ok(Options {
            signal: signal.map(crate::signal::parse).transpose()?,
            timeout: timeout.map(crate::duration::parse).transpose()?,
            no_kill,
            pidfile_template: None,
            leftovers_only: false,
        })
    }
}

/// Default stop timeout when neither the record nor the caller gives one.
pub const DEFAULT_TIMEOUT: Duration = record::DEFAULT_STOP_TIMEOUT;

/// What stopping one name did.
#[derive(Debug)]
pub enum Report {
    /// No record and no PID file.
    Unknown,
    /// Known, nothing was running; `note` says why if there was a stale PID file.
    NotRunning { note: Option<String> },
    /// Something was running; the outcome says whether it is gone.
    Ran(Outcome),
}

impl Report {
    pub fn code(&self) -> Code {
        match self {
            Report::Unknown => Code::Unknown,
            Report::NotRunning { .. } => Code::Ok,
            Report::Ran(o) if o.is_success() => Code::Ok,
            Report::Ran(_) => Code::Failure,
        }
    }

    /// The one line pm prints for this name (after `pm-TOOL: NAME: `).
    pub fn describe(&self) -> String {
        match self {
            Report::Unknown => "unknown: no record and no PID file".into(),
            Report::NotRunning { note: None } => "not running".into(),
            Report::NotRunning { note: Some(n) } => format!("not running ({n})"),
            Report::Ran(Outcome::AlreadyGone) => "not running".into(),
            Report::Ran(Outcome::Stopped {
                signal,
                escalated,
                elapsed,
                swept,
                contained,
            }) => {
                let mut s = format!("stopped by SIG{}", crate::signal::name(*signal));
                if *escalated {
                    s.push_str(", escalated to SIGKILL");
                }
                s.push_str(&format!(" in {}", crate::duration::elapsed(*elapsed)));
                if *swept > 0 && *contained {
                    s.push_str(&format!(" ({swept} more process(es) in its cgroup too)"));
                } else if *swept > 0 {
                    s.push_str(&format!(
                        " ({swept} process(es) outside the group stopped too)"
                    ));
                }
                s
            }
            Report::Ran(Outcome::Failed {
                signal,
                escalated,
                elapsed,
                left,
                reason,
            }) => {
                let pids: Vec<String> = left.iter().map(|p| p.to_string()).collect();
                format!(
                    "could not stop after SIG{}{} and {}: {reason}; still running: pid {}",
                    crate::signal::name(*signal),
                    if *escalated { " and SIGKILL" } else { "" },
                    crate::duration::elapsed(*elapsed),
                    pids.join(", ")
                )
            }
        }
    }
}

/// Stops the service called `name`: takes its lock, finds what is running (record, PID
/// file, kernel), runs the stop algorithm, removes the PID file if it still names the
/// stopped process, and records the outcome. `by` names the tool, for `last_stop`.
pub fn stop_name(sd: &StateDir, name: &Name, opts: &Options, by: &str) -> Result<Report> {
    let report = stop_name_if(sd, name, opts, by, &|_| true)?;
    Ok(report.unwrap_or(Report::NotRunning { note: None }))
}

/// [`stop_name`], only if the record still satisfies `still`, looked at before its
/// monitor is stopped and again under the lock: `None` (nothing done) when it does not.
/// pm-up stops on an interrupt only what its own run started, and the name may have
/// been stopped and started again by hand meanwhile.
pub fn stop_name_if(
    sd: &StateDir,
    name: &Name,
    opts: &Options,
    by: &str,
    still: &dyn Fn(Option<&Record>) -> bool,
) -> Result<Option<Report>> {
    let seen = sd.read_record(name).ok().flatten();
    if !still(seen.as_ref()) {
        return Ok(None);
    }
    // The monitor of the record that passed, not of one read again (which may be a new
    // start's by now).
    let between = match &seen {
        Some(r) => monitor_first(r, opts)?,
        None => None,
    };
    let _lock = sd.lock(name)?;
    let ins = inspect(sd, name, opts.pidfile_template.as_deref());
    if !still(ins.record.as_ref()) {
        return Ok(None);
    }
    let report = stop_inspected(sd, name, ins, opts, by)?;
    Ok(Some(match (report, between) {
        (Report::NotRunning { .. }, Some(why)) => Report::NotRunning { note: Some(why) },
        (r, _) => r,
    }))
}

/// A supervised service's monitor goes first, so nothing restarts what is being stopped.
/// Not under the name's lock: a monitor in the middle of a restart takes it to finish.
/// Returns, for a service its monitor was about to restart, what the stop should say.
fn stop_monitor(sd: &StateDir, name: &Name, opts: &Options) -> Result<Option<String>> {
    match sd.read_record(name) {
        Ok(Some(r)) => monitor_first(&r, opts),
        _ => Ok(None),
    }
}

/// [`stop_monitor`] of the monitor `r` names.
fn monitor_first(r: &Record, opts: &Options) -> Result<Option<String>> {
    let stopped = crate::monitor::stop_monitor(r, opts.timeout.unwrap_or(r.stop_timeout))?;
    let last = r
        .last_exit
        .as_ref()
        .map_or("ended".into(), |e| e.describe());
    Ok((stopped && r.phase == Phase::Backoff)
        .then(|| format!("it was waiting to be restarted ({last}); its monitor is stopped")))
}

/// `pm-stop --forget`: [`stop_name`], then, once nothing of the service runs, its record,
/// pm's own PID file and its lock file are removed (its log stays). Returns the stop's
/// report and, when forgotten, the log that was kept.
pub fn forget_name(
    sd: &StateDir,
    name: &Name,
    opts: &Options,
    by: &str,
) -> Result<(Report, Option<std::path::PathBuf>)> {
    stop_monitor(sd, name, opts)?;
    let lock = sd.lock(name)?;
    let ins = inspect(sd, name, opts.pidfile_template.as_deref());
    let record = ins.record.clone();
    let report = stop_inspected(sd, name, ins, opts, by)?;
    if report.code() != Code::Ok {
        return Ok((report, None));
    }
    let Some(r) = record else {
        return Ok((report, None));
    };
    if r.pidfile_by == record::PidfileBy::Pm {
        pidfile::remove(&r.pidfile)?;
    }
    sd.remove_record(name)?;
    lock.remove()?;
    Ok((report, Some(r.log)))
}

/// [`stop_name`] for a caller that already holds the name's lock and has inspected it
/// (pm-start, which stops what is left of a dead run before starting a new one).
pub fn stop_inspected(
    sd: &StateDir,
    name: &Name,
    ins: crate::status::Inspection,
    opts: &Options,
    by: &str,
) -> Result<Report> {
    let _registered = Registered::new(name.as_str());
    if let Some(e) = ins.error {
        return Err(e);
    }
    if ins.state == State::Unknown {
        // A file that is not a PID file is the user's to look at, not ours to delete.
        if let Some(e) = ins.pidfile_error {
            return Err(e);
        }
        return Ok(Report::Unknown);
    }
    let plan = plan_of(sd, name, &ins, opts)?;
    let stopped_pid = plan.leader.as_ref().map(|h| h.pid);
    let record = ins.record.as_ref();
    let mut journaled: Option<Vec<Proc>> = None;
    let mut journal = |procs: &[Proc]| {
        if let Some(r) = record {
            let mut r = r.clone();
            r.stopping = procs.to_vec();
            // Only for resuming a stop that gets killed: a full disk must not keep pm-stop
            // from stopping the service.
            let _ = sd.write_record_unsynced(&r);
        }
        journaled = Some(procs.to_vec());
    };
    let outcome = stop(plan, &mut journal)?;

    if opts.leftovers_only && outcome == Outcome::AlreadyGone {
        return Ok(Report::NotRunning { note: None });
    }
    let mut note = ins.note.clone().filter(|_| ins.state == State::Dead);
    if outcome.is_success() {
        tidy_pidfile(&ins, stopped_pid.or(record.and_then(|r| r.pid)), &mut note)?;
    }
    // Nothing ran and the record already says stopped: keep the outcome of the stop that
    // did the work (pm-status shows it as `last_stop`).
    let already_stopped =
        outcome == Outcome::AlreadyGone && record.is_some_and(|r| r.phase == Phase::Stopped);
    if outcome.is_success() {
        // The run is over, and with it what its logger had to say.
        let _ = sd.remove_log_status(name);
    }
    if let Some(r) = record.filter(|_| !already_stopped) {
        let mut r = r.clone();
        r.last_stop = Some(outcome.last_stop(by));
        if let Some(j) = journaled {
            r.stopping = j;
        }
        if outcome.is_success() {
            r.set_stopped();
        }
        sd.write_record(&r)?;
    }
    Ok(match outcome {
        Outcome::AlreadyGone => Report::NotRunning { note },
        o => Report::Ran(o),
    })
}

/// How to stop what `ins` found: the signal and timeout (the caller's, else the
/// record's), the verified leader, and what else counts as the service's.
fn plan_of(
    sd: &StateDir,
    name: &Name,
    ins: &crate::status::Inspection,
    opts: &Options,
) -> Result<Plan> {
    let record = ins.record.as_ref();
    let cgroup = ins.cgroup.clone().or_else(|| record?.cgroup(sd));
    let signal = match (opts.signal, record) {
        (Some(s), _) => s,
        (None, Some(r)) => r.stop_signal,
        (None, None) => record::DEFAULT_STOP_SIGNAL,
    };
    let timeout = opts
        .timeout
        .or(record.map(|r| r.stop_timeout))
        .unwrap_or(DEFAULT_TIMEOUT);
    let leader = match &ins.live {
        Some((stat, expect)) => Handle::open(stat.pid, expect)?.ok(),
        None => None,
    };
    let live_start = ins.live.as_ref().map(|(s, _)| s.start_time);
    // Nothing older than the recorded launch (or, without one, than the live process) is
    // the service's; with neither, nothing is.
    let born_after = match (record.and_then(Record::born_after), live_start) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => u64::MAX,
    };
    let this_boot = record.is_some_and(Record::this_boot);
    let (pgid, sid) = match record {
        Some(r) if this_boot => (r.pgid, r.sid),
        _ => (None, None),
    };
    Ok(Plan {
        marker: record.map_or_else(|| format!("PM_NAME={name}"), |r| r.marker()),
        leader,
        pgid,
        sid,
        born_after,
        signal,
        timeout,
        kill: !opts.no_kill,
        known: record
            .filter(|_| this_boot)
            .map(|r| r.stopping.clone())
            .unwrap_or_default(),
        cgroup,
    })
}

/// After a stop that succeeded: removes the PID file if it names `stopped` (what was
/// stopped), or if it was stale and still is (checked again, under the lock); a stale one
/// removed is said in `note`.
fn tidy_pidfile(
    ins: &crate::status::Inspection,
    stopped: Option<i32>,
    note: &mut Option<String>,
) -> Result<()> {
    let Some(pf) = &ins.pidfile else {
        return Ok(());
    };
    let mut removed = false;
    if let Some(pid) = stopped {
        removed = pidfile::remove_if_names(pf, pid)?;
    }
    if !removed && ins.stale_pidfile {
        let still_stale = match pidfile::read(pf) {
            Ok(Some(p)) => !process::check(p.pid, &p.expect())?.is_ours(),
            Ok(None) | Err(_) => false,
        };
        if still_stale && pidfile::remove(pf)? {
            let why = note.take().unwrap_or_else(|| "stale".into());
            *note = Some(format!("removed stale PID file {}: {why}", pf.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawn::{spawn, SpawnSpec, Spawned};

    struct Svc {
        s: Spawned,
        dir: tempfile::TempDir,
    }
    impl Drop for Svc {
        fn drop(&mut self) {
            let _ = killpg(Pid::from_raw(self.s.pid()), Signal::SIGKILL);
            let _ = self.s.child.kill();
            let _ = self.s.child.wait();
        }
    }

    fn start(script: &str) -> Svc {
        let dir = tempfile::tempdir().unwrap();
        let argv = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
        let s = spawn(
            &SpawnSpec {
                argv: &argv,
                cwd: dir.path(),
                env: &[("PM_NAME".to_string(), "unit".to_string())],
                base_env: None,
                program: None,
                log: &dir.path().join("log"),
                output: None,
                user: None,
                die_with_parent: false,
            },
            None,
            &mut |_| Ok(()),
        )
        .unwrap();
        Svc { s, dir }
    }

    /// Waits until the service wrote `n` lines to its log (it says when it is set up).
    fn wait_lines(svc: &Svc, n: usize) -> Vec<String> {
        let t = Instant::now();
        loop {
            let text = std::fs::read_to_string(svc.dir.path().join("log")).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(String::from).collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "service never wrote {n} lines: {text:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn plan(svc: &mut Svc, signal: Signal, timeout: Duration, kill: bool) -> Plan {
        let pid = svc.s.pid();
        let leader = Handle::open(
            pid,
            &Expect::StartTime {
                start_time: svc.s.handle.start_time,
                boot_id: process::boot_id().unwrap(),
            },
        )
        .unwrap()
        .ok();
        Plan {
            marker: "PM_NAME=unit".into(),
            leader,
            pgid: Some(pid),
            sid: Some(pid),
            born_after: svc.s.handle.start_time,
            signal,
            timeout,
            kill,
            known: Vec::new(),
            cgroup: None,
        }
    }

    fn run(p: Plan) -> Result<Outcome> {
        stop(p, &mut |_| {})
    }

    fn gone(pid: i32) -> bool {
        !process::is_alive(pid)
    }

    #[test]
    fn stops_leader_and_group_members() {
        let mut svc = start("sleep 100 & echo $!; sleep 100 & echo $!; wait");
        let kids: Vec<i32> = wait_lines(&svc, 2)
            .iter()
            .map(|l| l.parse().unwrap())
            .collect();
        let out = run(plan(
            &mut svc,
            Signal::SIGTERM,
            Duration::from_secs(10),
            true,
        ))
        .unwrap();
        assert!(
            matches!(
                out,
                Outcome::Stopped {
                    escalated: false,
                    ..
                }
            ),
            "{out:?}"
        );
        let _ = svc.s.child.wait();
        for k in kids {
            assert!(gone(k), "child {k} left behind");
        }
    }

    #[test]
    fn escalates_when_term_is_ignored_and_no_kill_does_not() {
        let mut svc = start("trap '' TERM; echo ready; while :; do sleep 0.05; done");
        wait_lines(&svc, 1);
        let out = run(plan(
            &mut svc,
            Signal::SIGTERM,
            Duration::from_millis(300),
            false,
        ))
        .unwrap();
        match &out {
            Outcome::Failed {
                escalated: false,
                left,
                ..
            } => assert!(left.contains(&svc.s.pid())),
            other => panic!("{other:?}"),
        }
        assert!(process::is_alive(svc.s.pid()));
        let out = run(plan(
            &mut svc,
            Signal::SIGTERM,
            Duration::from_millis(300),
            true,
        ))
        .unwrap();
        assert!(
            matches!(
                out,
                Outcome::Stopped {
                    escalated: true,
                    ..
                }
            ),
            "{out:?}"
        );
        let _ = svc.s.child.wait();
    }

    #[test]
    fn sweeps_a_child_that_left_the_session() {
        // The child calls setsid() and ignores TERM sent to the group.
        let mut svc = start(
            "setsid sh -c 'echo $$; trap \"exit 0\" TERM; while :; do sleep 0.05; done' & wait",
        );
        let escapee: i32 = wait_lines(&svc, 1)[0].parse().unwrap();
        let s = Stat::read(escapee).unwrap().unwrap();
        assert_ne!(s.session, svc.s.pid());
        let out = run(plan(
            &mut svc,
            Signal::SIGTERM,
            Duration::from_secs(10),
            true,
        ))
        .unwrap();
        assert!(
            matches!(out, Outcome::Stopped { swept: 1.., .. }),
            "{out:?}"
        );
        assert!(gone(escapee));
    }

    #[test]
    fn orphaned_group_members_are_stopped_when_the_leader_is_gone() {
        let mut svc = start("sleep 100 & echo $!; exit 0");
        let kid: i32 = wait_lines(&svc, 1)[0].parse().unwrap();
        let _ = svc.s.child.wait();
        let mut p = plan(&mut svc, Signal::SIGTERM, Duration::from_secs(10), true);
        assert!(p.leader.is_none());
        p.leader = None;
        let out = run(p).unwrap();
        assert!(matches!(out, Outcome::Stopped { .. }), "{out:?}");
        assert!(gone(kid));
    }

    #[test]
    fn orphans_without_the_services_name_are_never_adopted() {
        // With the leader gone, a recorded group id may have been reused by somebody
        // else's group: only processes carrying PM_NAME=<name> are taken as ours.
        let mut svc = start("sleep 100 & echo $!; exit 0");
        let kid: i32 = wait_lines(&svc, 1)[0].parse().unwrap();
        let _ = svc.s.child.wait();
        let mut p = plan(&mut svc, Signal::SIGTERM, Duration::from_secs(10), true);
        p.marker = "PM_NAME=somebody-else".into();
        assert_eq!(run(p).unwrap(), Outcome::AlreadyGone);
        assert!(
            process::is_alive(kid),
            "a process without our name was signalled"
        );
        let p = plan(&mut svc, Signal::SIGTERM, Duration::from_secs(10), true);
        assert!(matches!(run(p).unwrap(), Outcome::Stopped { .. }));
        assert!(gone(kid));
    }

    #[test]
    fn nothing_running_is_already_gone() {
        let mut svc = start("exit 0");
        let _ = svc.s.child.wait();
        let out = run(plan(
            &mut svc,
            Signal::SIGTERM,
            Duration::from_secs(1),
            true,
        ))
        .unwrap();
        assert_eq!(out, Outcome::AlreadyGone);
    }
}
