//! Launch: what happens between admission and the wait, under the name's lock. A dead
//! run's leftovers are stopped, the cgroup is made with its limits, the logger started,
//! and the service spawned so that it is recorded (phase `starting`, this process as its
//! starter) before it can run a single instruction of its command. A start SIGKILLed at
//! any point leaves either nothing or a record (or cgroup) the next tool finds.

use std::time::Duration;

use super::plan::{self, Spec};
use super::wait::{Tracked, Waiter};
use super::{finish, supervise, Admitted, Ended, TOOL};
use crate::error::{Error, Result};
use crate::logger::Rotation;
use crate::process;
use crate::ready::{Check, LogFollower, NotifySocket, PidfileBaseline};
use crate::record::{Failure, PidfileBy, Record, RUN_ID_VAR};
use crate::report::say;
use crate::spawn::{self, Credentials, SpawnSpec};
use crate::status::{Inspection, State};
use crate::{cgroup, record, signal, stop, Code, StateDir};

/// Launches the admitted start and waits for it to be up; see the module docs.
pub(super) fn launch(
    sd: &StateDir,
    mon: Option<&supervise::Ctx>,
    admitted: Admitted,
    interrupts: &nix::sys::signalfd::SignalFd,
    up: &mut Option<Record>,
) -> Result<Ended> {
    let Admitted {
        lock,
        prior,
        spec,
        creds,
        seen,
    } = admitted;
    let base = plan::tracking(sd, &spec)?;
    stop_leftovers(sd, &spec, seen)?;

    let checks = spec.checks.clone();
    let baseline = PidfileBaseline::take(&spec.pidfile);
    let log_from = std::fs::metadata(&spec.log).map(|m| m.len()).unwrap_or(0);
    let follower = LogFollower::new(&spec.log);
    let mut notify = notify_socket(sd, &spec, creds.as_ref())?;
    let mut rec = new_record(&spec, prior.as_ref(), mon)?;
    let run_id = super::new_run_id()?;
    rec.run_id = Some(run_id.clone());
    // The cgroup exists (with its limits) before the child can run; the child is born in
    // it (or moved into it) before the record naming it is written, and both before the go.
    let cg = match &base {
        Some(b) => {
            stop_strays(sd, b, &spec)?;
            Some(b.create(&spec.name, &run_id, &spec.limits)?)
        }
        None => None,
    };
    rec.cgroup = cg.as_ref().map(|c| c.path().to_path_buf());

    if let Some(sig) = signal::pending(interrupts) {
        say(
            TOOL,
            spec.name.as_str(),
            "interrupted before starting; nothing was started",
        );
        if let Some(cg) = &cg {
            let _ = cg.remove();
        }
        return Ok(Ended::Signal(sig));
    }
    // Daemons that double-fork then reparent to pm-start rather than to init, so a failed
    // start can still find (and stop) them by parent PID.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let spawned_at = crate::untrusted::coarse_now();
    let spawned = match spawn_service(
        sd,
        &spec,
        &mut rec,
        creds.as_ref(),
        notify.as_ref(),
        cg.as_ref(),
    ) {
        Ok(s) => s,
        Err(e) => return not_spawned(sd, &spec, rec, cg.as_ref(), e),
    };
    // Not held while waiting: pm-stop must be able to stop a service that is starting.
    drop(lock);

    let mut waiter = Waiter {
        tracked: Tracked::Child(spawned),
        checks,
        follower,
        notify: notify.as_mut(),
        interrupts,
        pidfile: &spec.pidfile,
        pidfile_by: spec.pidfile_by,
        baseline,
        cwd: &spec.cwd,
        user: creds.as_ref(),
        grace: grace_of(&spec),
        ready_timeout: spec.ready_timeout,
        born_after: rec.start_time.unwrap_or(0),
        spawned_at,
        name: spec.name.as_str(),
        execs: Default::default(),
        noted: false,
        cgroup: cg,
    };
    let end = waiter.run();
    let tracked = waiter.into_tracked();
    drop(notify);
    finish::finish(sd, &spec, rec, tracked, end, log_from, up)
}

/// How long the service must stay up to count as started: without a readiness check
/// the default grace, with one none unless asked (the check is the proof).
fn grace_of(spec: &Spec) -> Duration {
    spec.grace.unwrap_or(if spec.checks.is_empty() {
        plan::DEFAULT_GRACE
    } else {
        Duration::ZERO
    })
}

/// The socket a `--ready notify` service reports on, bound (and owned by the service's
/// user) before the spawn; `None` without that check.
fn notify_socket(
    sd: &StateDir,
    spec: &Spec,
    creds: Option<&Credentials>,
) -> Result<Option<NotifySocket>> {
    if !spec.checks.iter().any(|c| matches!(c, Check::Notify)) {
        return Ok(None);
    }
    let owner = creds.map(|c| (c.uid, c.gid));
    Ok(Some(NotifySocket::bind(
        &sd.notify_path(&spec.name),
        owner,
    )?))
}

/// The record of this start, before the spawn: the plan, and for a supervised start its
/// monitor (known by identity, start time and boot: also in a record whose restart fails
/// before anything is spawned), its restart count and the last exit.
fn new_record(spec: &Spec, prior: Option<&Record>, mon: Option<&supervise::Ctx>) -> Result<Record> {
    let mut rec = spec.record(prior);
    if let (Some(m), Some(restart)) = (mon, &spec.restart) {
        rec.restart = Some(restart.clone());
        rec.monitor = Some(m.me);
        rec.boot_id = Some(process::boot_id()?);
        rec.restarts = prior.filter(|_| m.restarting).map_or(0, |p| p.restarts + 1);
        rec.last_exit = prior.and_then(|p| p.last_exit.clone());
    }
    Ok(rec)
}

/// A dead run may have left workers behind (its leader crashed): they are stopped first,
/// or the new record would orphan them for good.
fn stop_leftovers(sd: &StateDir, spec: &Spec, seen: Inspection) -> Result<()> {
    if !matches!(seen.state, State::Dead | State::Failed) || seen.record.is_none() {
        return Ok(());
    }
    let opts = stop::Options {
        leftovers_only: true,
        ..stop::Options::default()
    };
    match stop::stop_inspected(sd, &spec.name, seen, &opts, TOOL)? {
        stop::Report::Ran(o) if !o.is_success() => Err(Error::Start(format!(
            "what is left of the previous run cannot be stopped: {}",
            stop::Report::Ran(o).describe()
        ))),
        stop::Report::Ran(o) => {
            say(
                TOOL,
                spec.name.as_str(),
                format!(
                    "stopped what was left of the previous run: {}",
                    stop::Report::Ran(o).describe()
                ),
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Spawns the service (and its logger first, if it has one), recording it before it runs.
fn spawn_service(
    sd: &StateDir,
    spec: &Spec,
    rec: &mut Record,
    creds: Option<&Credentials>,
    notify: Option<&NotifySocket>,
    cg: Option<&cgroup::Cgroup>,
) -> Result<spawn::Spawned> {
    let run_id = rec.run_id.clone().unwrap_or_default();
    let mut env = spec.env.clone();
    env.push(("PM_NAME".into(), spec.name.to_string()));
    env.push((RUN_ID_VAR.into(), run_id.clone()));
    if let Some(n) = notify {
        env.push((
            "NOTIFY_SOCKET".into(),
            n.path().to_string_lossy().into_owned(),
        ));
    }
    let logger_out = match &spec.log_rotation {
        Some(r) => Some(start_logger(sd, spec, r, creds, &run_id, cg)?),
        None => None,
    };
    rec.started_at = Some(record::now_rfc3339());
    rec.starter = super::me_as_starter()?;
    // The record names the child before the child can run the command (see spawn()).
    let spawned = spawn::spawn(
        &SpawnSpec {
            argv: &spec.argv,
            cwd: &spec.cwd,
            env: &env,
            base_env: Some(&spec.environment),
            program: spec.exe.as_deref(),
            log: &spec.log,
            output: logger_out.as_ref(),
            user: creds,
            die_with_parent: false,
        },
        cg,
        &mut |h| record_spawn(sd, spec, rec, h),
    );
    // Only the service may hold the logger's pipe: its end is the logger's EOF.
    drop(logger_out);
    spawned
}

fn start_logger(
    sd: &StateDir,
    spec: &Spec,
    rotation: &Rotation,
    creds: Option<&Credentials>,
    run_id: &str,
    cg: Option<&cgroup::Cgroup>,
) -> Result<std::fs::File> {
    // An earlier run's complaint (its logger killed while failing) is not this run's.
    sd.remove_log_status(&spec.name)?;
    let status = sd.log_status_path(&spec.name);
    spawn::logger(
        spec.name.as_str(),
        &spec.log,
        rotation,
        creds,
        run_id,
        cg,
        &status,
    )
}

/// The spawn failed: nothing ran (a child, if one was forked, never got to exec the
/// command). Records the failure.
fn not_spawned(
    sd: &StateDir,
    spec: &Spec,
    mut rec: Record,
    cg: Option<&cgroup::Cgroup>,
    e: Error,
) -> Result<Ended> {
    if spec.pidfile_by == PidfileBy::Pm {
        if let Some(pid) = rec.pid {
            let _ = crate::pidfile::remove_if_names(&spec.pidfile, pid);
        }
    }
    rec.forget_process();
    if let Some(cg) = cg {
        // The child exited without running anything (spawn reaped it); a logger, if one
        // was started, reads EOF and exits. What is left is stopped by the next start.
        if cg.remove().is_ok() {
            rec.cgroup = None;
        }
    }
    rec.set_failed(Failure::now(e.to_string()));
    sd.write_record(&rec)?;
    say(TOOL, spec.name.as_str(), format!("failed to start: {e}"));
    Ok(Code::Failure.into())
}

/// Cgroups of this NAME that no record names any more: empty ones (a pm-start killed
/// before its child ran) are removed, populated ones stopped — they are earlier starts of
/// this service in this state directory, which nothing else would ever stop. Called
/// under the name's lock, after the recorded run's leftovers were dealt with.
fn stop_strays(sd: &StateDir, base: &cgroup::Base, spec: &Spec) -> Result<()> {
    let opts = stop::Options {
        signal: Some(spec.stop_signal),
        timeout: Some(spec.stop_timeout),
        ..stop::Options::default()
    };
    for (name, cg, outcome) in stop::strays(sd, base, Some(&spec.name), true, &opts) {
        match outcome? {
            stop::Outcome::AlreadyGone => {}
            o if o.is_success() => say(
                TOOL,
                &name,
                format!(
                    "stopped what was left in {} (an earlier start): {}",
                    cg.path().display(),
                    stop::Report::Ran(o).describe()
                ),
            ),
            o => {
                return Err(Error::Start(format!(
                    "what is left in {} cannot be stopped: {}",
                    cg.path().display(),
                    stop::Report::Ran(o).describe()
                )))
            }
        }
    }
    Ok(())
}

/// Writes the record (and pm's PID file) for a process just spawned and not yet running
/// its command: phase `starting`, with this pm-start as the starter, so pm-status says
/// `starting` and pm-stop can act.
fn record_spawn(
    sd: &StateDir,
    spec: &Spec,
    rec: &mut Record,
    spawned: &process::Handle,
) -> Result<()> {
    rec.set_starting(spawned.pid, spawned.start_time, process::boot_id()?);
    if spec.pidfile_by == PidfileBy::Pm {
        crate::pidfile::write(&spec.pidfile, spawned.pid)?;
    }
    // Unsynced: the child waits for this write, and it describes a process that no power
    // cut leaves running; the record pm-start writes once the service is up is synced.
    sd.write_record_unsynced(rec)
}
