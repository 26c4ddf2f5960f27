//! Finish: how the wait ended goes into the record and onto stderr. Every failure after
//! the spawn — the service not ready, an interrupt, a record that cannot be written —
//! stops what was spawned before the start reports failure, with the one stop algorithm.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::plan::Spec;
use super::wait::{Tracked, WaitEnd};
use super::{Ended, TOOL};
use crate::error::Result;
use crate::process::{self, Handle, Stat};
use crate::record::{Failure, LastStop, Phase, PidfileBy, Proc, Record};
use crate::report::{log_tail, say};
use crate::stop::{self, Outcome, Plan};
use crate::{signal, Code, StateDir};

/// Log lines shown when a start fails.
const TAIL_LINES: usize = 20;

/// Records and reports how the wait ended; cleans up after a failed start.
pub(super) fn finish(
    sd: &StateDir,
    spec: &Spec,
    rec: Record,
    tracked: Tracked,
    end: WaitEnd,
    log_from: u64,
    up: &mut Option<Record>,
) -> Result<Ended> {
    let (failure, ended) = match end {
        WaitEnd::Ready { pid, start_time } => {
            return ready(sd, spec, rec, tracked, Proc { pid, start_time }, up)
        }
        WaitEnd::Failed {
            reason,
            exit_code,
            signal,
        } => (
            Failure {
                exit_code,
                signal,
                ..Failure::now(reason)
            },
            Ended::Code(Code::Failure),
        ),
        WaitEnd::Interrupted(sig) => (
            Failure {
                signal: Some(signal::name(sig).to_string()),
                ..Failure::now(format!("interrupted by SIG{}", signal::name(sig)))
            },
            Ended::Signal(sig),
        ),
    };
    failed(sd, spec, rec, tracked, failure, log_from)?;
    Ok(ended)
}

/// The service is up: recorded as running (synced), unless a stop came meanwhile.
fn ready(
    sd: &StateDir,
    spec: &Spec,
    mut rec: Record,
    tracked: Tracked,
    main: Proc,
    up: &mut Option<Record>,
) -> Result<Ended> {
    let name = spec.name.as_str();
    let lock = sd.lock(&spec.name)?;
    let now = sd.read_record(&spec.name)?;
    if now.as_ref().map(|r| (r.phase, r.started_at.clone()))
        != Some((Phase::Starting, rec.started_at.clone()))
    {
        // pm-stop ran while we waited; a daemon found after that must not survive it.
        drop(lock);
        cleanup(sd, &rec, tracked, spec)?;
        say(TOOL, name, "was stopped while starting");
        return Ok(Code::Failure.into());
    }
    // A daemon caught before its setsid() (nginx writes its PID file first) still shows
    // the session pm created for the launcher: that one is the service's too, and pm-stop
    // uses the live values while the daemon runs.
    let group = Stat::read(main.pid)?.map(|s| (s.pgrp, s.session));
    rec.set_running(main, group);
    if let Err(e) = sd.write_record(&rec) {
        // Ready but not recorded as running: "failed" must mean nothing runs.
        drop(lock);
        let reason = format!("cannot record it as running: {e}");
        let outcome = cleanup(sd, &rec, tracked, spec);
        say(
            TOOL,
            name,
            format!("failed to start: {reason}; it was stopped"),
        );
        outcome?;
        return Ok(Code::Failure.into());
    }
    let supervised = match &rec.restart {
        Some(r) if rec.monitor.is_some() => {
            format!(", supervised (--restart {})", r.policy.as_str())
        }
        _ => String::new(),
    };
    say(
        TOOL,
        name,
        format!(
            "started, pid {}, log {}{supervised}",
            main.pid,
            spec.log.display()
        ),
    );
    if spec.print_pid {
        crate::report::out(&format!("{}\n", main.pid))
            .map_err(|e| crate::Error::io("standard output", e))?;
    }
    if rec.monitor.is_some() {
        *up = Some(rec);
    }
    Ok(Code::Ok.into())
}

/// The start failed after the spawn: whatever it left running is stopped (graceful, then
/// kill), then the failure is recorded — unless a stop or a newer start has the record.
fn failed(
    sd: &StateDir,
    spec: &Spec,
    mut rec: Record,
    tracked: Tracked,
    failure: Failure,
    log_from: u64,
) -> Result<()> {
    let name = spec.name.as_str();
    let reason = failure.reason.clone();
    rec.failure = Some(failure.clone());
    let outcome = cleanup(sd, &rec, tracked, spec)?;
    let _lock = sd.lock(&spec.name)?;
    let now = sd.read_record(&spec.name).ok().flatten();
    let still_ours = now.as_ref().is_some_and(|r| r.started_at == rec.started_at);
    if !still_ours {
        // Another start has recorded a newer run meanwhile: its record stays.
        say(
            TOOL,
            name,
            format!("failed to start: {reason} (a newer start is recorded)"),
        );
    } else if now.as_ref().is_some_and(|r| r.phase == Phase::Stopped) {
        say(TOOL, name, "was stopped while starting");
    } else {
        rec.set_failed(failure);
        if let Some(o) = &outcome {
            rec.last_stop = Some(o.clone());
        }
        if spec.pidfile_by == PidfileBy::Pm {
            if let Some(pid) = rec.pid {
                crate::pidfile::remove_if_names(&spec.pidfile, pid)?;
            }
        }
        say(TOOL, name, format!("failed to start: {reason}"));
        sd.write_record(&rec)?;
    }
    // A monitor's restart: its stderr is that log already.
    let restarted = rec.restarts > 0 && rec.monitor.is_some();
    let tail = log_tail(&spec.log, log_from, TAIL_LINES);
    if !tail.is_empty() && !restarted {
        // Not eprintln!: a full disk must not panic a monitor.
        use std::io::Write;
        say(TOOL, name, format!("last lines of {}:", spec.log.display()));
        let mut err = std::io::stderr().lock();
        for l in tail {
            let _ = writeln!(err, "  | {l}");
        }
    }
    Ok(())
}

/// Stops what a failed start leaves behind; returns what happened for the record.
fn cleanup(sd: &StateDir, rec: &Record, tracked: Tracked, spec: &Spec) -> Result<Option<LastStop>> {
    let (leader, born_after, child) = match tracked {
        Tracked::Child(c) => {
            let st = c.handle.start_time;
            (Some(c.handle), st, Some(c.child))
        }
        Tracked::Other(h) => {
            let st = rec.born_after().unwrap_or(h.start_time).min(h.start_time);
            (Some(h), st, None)
        }
        Tracked::None => (None, rec.born_after().unwrap_or(0), None),
    };
    stop_failed(
        sd,
        rec,
        leader,
        born_after,
        child,
        spec.stop_signal,
        spec.stop_timeout,
    )
}

/// Stops everything a failed start left running, with the one stop algorithm: the tracked
/// process (if any) with its group and session, then the daemons that forked away and were
/// re-parented to this pm-start (a child subreaper). The launcher, our own child, is
/// reaped only at the end: as a zombie its PID keeps its group and session ids from being
/// reused while what is left of them is stopped.
pub fn stop_failed(
    sd: &StateDir,
    rec: &Record,
    leader: Option<Handle>,
    born_after: u64,
    mut child: Option<crate::spawn::Child>,
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
    if let Ok(name) = crate::name::Name::new(&rec.name) {
        let _ = sd.remove_log_status(&name);
    }
    if let Some(c) = child.as_mut() {
        let _ = c.try_wait();
    }
    Ok(match outcome {
        Outcome::AlreadyGone => None,
        o => Some(o.last_stop(TOOL)),
    })
}
