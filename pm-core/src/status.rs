//! What state a service is in, decided from the record, the PID file and the kernel —
//! never from the record alone.
//!
//! Shared by every tool: pm-status reports it, pm-start uses it to refuse a second start,
//! pm-stop and pm-stopall use it to find what to stop.

use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::monitor;
use crate::name::Name;
use crate::pidfile;
use crate::process::{self, Expect, Gate, Stat, Verdict};
use crate::record::{Phase, PidfileBy, Record};
use crate::state::StateDir;

/// The states of the design, in the words pm prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Starting,
    Stopped,
    Dead,
    Unknown,
    /// Supervised: ended, and its monitor starts it again shortly.
    Backoff,
    /// Supervised: its monitor gave up restarting it (`--max-restarts`).
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Starting => "starting",
            State::Stopped => "stopped",
            State::Dead => "dead",
            State::Unknown => "unknown",
            State::Backoff => "backoff",
            State::Failed => "failed",
        }
    }

    /// LSB status code.
    pub fn code(self) -> crate::exit::Code {
        use crate::exit::Code;
        match self {
            State::Running => Code::Ok,
            State::Starting => Code::Starting,
            State::Stopped => Code::NotRunning,
            State::Dead => Code::Failure,
            State::Unknown => Code::Unknown,
            State::Backoff => Code::Backoff,
            State::Failed => Code::Failure,
        }
    }
}

/// Everything known about one name right now.
#[derive(Debug)]
pub struct Inspection {
    pub name: Name,
    pub state: State,
    pub record: Option<Record>,
    /// The PID file that applies (recorded, or from `--pidfile`/`PM_PIDFILE`).
    pub pidfile: Option<PathBuf>,
    /// The live, verified process (running or starting).
    pub live: Option<(Stat, Expect)>,
    /// Why the state is what it is, when that is not obvious (dead, unknown).
    pub note: Option<String>,
    /// The PID file names a process that is gone or is not ours.
    pub stale_pidfile: bool,
    /// The PID file exists but is not a PID file pm can read (junk, too large, not a
    /// regular file): reported, never removed.
    pub pidfile_error: Option<Error>,
    /// A record that exists but cannot be read.
    pub error: Option<Error>,
    /// The recorded start's cgroup, if it has one (see [`Record::cgroup`]).
    pub cgroup: Option<crate::cgroup::Cgroup>,
    /// The processes in that cgroup when it was looked at ([`crate::cgroup::Cgroup::snapshot`]).
    pub cgroup_pids: Vec<i32>,
    /// Whole-service figures from that cgroup, running or starting: only from
    /// [`report_record`] (what pm-status shows; a stop has no use for them).
    pub usage: Option<crate::cgroup::Usage>,
    /// Running or starting with a logger that cannot write the log (or rotate it): what
    /// its status file says (see [`crate::logger::read_status`]).
    pub log_status: Option<String>,
}

impl Inspection {
    pub fn pid(&self) -> Option<i32> {
        self.live
            .as_ref()
            .map(|(s, _)| s.pid)
            .or_else(|| self.record.as_ref().and_then(|r| r.pid))
    }
}

/// A candidate process and how to verify it.
fn candidates(record: &Record, pidfile: Option<&pidfile::PidFile>) -> Vec<(i32, Expect)> {
    let mut out = Vec::new();
    if let Some(pf) = pidfile {
        out.push((pf.pid, pf.expect()));
    }
    if let (Some(pid), Some(st), Some(boot)) = (record.pid, record.start_time, &record.boot_id) {
        out.push((
            pid,
            Expect::StartTime {
                start_time: st,
                boot_id: boot.clone(),
            },
        ));
    }
    out
}

/// Looks at `name`: its record (if any), its PID file (recorded, or from `template`), and
/// the process table. Read-only: takes no lock, writes nothing.
pub fn inspect(sd: &StateDir, name: &Name, template: Option<&str>) -> Inspection {
    look(sd, name, template, sd.read_record(name), false)
}

/// [`inspect`] with the record already read (pm-status reads every record once, to list
/// them in start order, and does not read them again), and the cgroup's
/// [`Inspection::usage`], read while its directory is open (one component from it per
/// file, not a walk of the whole path each).
pub fn report_record(
    sd: &StateDir,
    name: &Name,
    template: Option<&str>,
    record: Result<Option<Record>>,
) -> Inspection {
    look(sd, name, template, record, true)
}

fn look(
    sd: &StateDir,
    name: &Name,
    template: Option<&str>,
    record: Result<Option<Record>>,
    usage: bool,
) -> Inspection {
    let mut out = Inspection::unknown(name);
    let record = match record {
        Ok(r) => r,
        Err(e) => {
            out.note = Some(e.to_string());
            out.error = Some(e);
            return out;
        }
    };
    let pidfile_path = match &record {
        Some(r) if !r.pidfile.as_os_str().is_empty() => Some(r.pidfile.clone()),
        Some(_) => None,
        None => match template.map(|t| sd.expand(t, name)) {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                out.note = Some(e.to_string());
                out.error = Some(e);
                return out;
            }
            None => None,
        },
    };
    out.pidfile = pidfile_path.clone();
    // A PID file pm wrote adds nothing to the record; one the service writes may name a
    // newer process (a daemon's fork, a binary upgrade).
    let read_pidfile = record
        .as_ref()
        .is_none_or(|r| r.pidfile_by == PidfileBy::Service);
    let pf = match (&pidfile_path, read_pidfile) {
        (Some(p), true) => match pidfile::read(p) {
            Ok(pf) => pf,
            Err(e) => {
                out.note = Some(e.to_string());
                out.pidfile_error = Some(e);
                None
            }
        },
        _ => None,
    };

    let Some(record) = record else {
        // Without a PID file (or with one that is not a PID file) nothing is known.
        if let Some(pf) = pf {
            out.judge_pidfile_alone(&pf);
        }
        return out;
    };

    // A process the service's PID file names is the service's only if it is not older than
    // the process pm started (a daemon is that process's descendant), and, where the start
    // has a cgroup, only if it is in it.
    let gate = Gate::born_after(record.born_after().unwrap_or(0));
    // A record of this boot that names a cgroup pm could not have made here (copied from
    // another state directory) describes someone else's service: it is not acted on.
    let cgroup = record.cgroup(sd);
    if record.cgroup.is_some() && record.this_boot() && cgroup.is_none() {
        let e = Error::CorruptRecord {
            path: sd.record_path(name),
            reason: "it names a cgroup of another state directory".into(),
        };
        out.note = Some(e.to_string());
        out.error = Some(e);
        return out;
    }
    let mut dir = None;
    if let Some(cg) = cgroup {
        if let Some((pids, d)) = cg.snapshot_dir() {
            out.cgroup = Some(cg);
            out.cgroup_pids = pids;
            dir = d;
        }
    }
    let last_verdict = out.find_live(&record, pf.as_ref(), &gate);
    out.state = out.judge(&record, last_verdict.as_ref());
    if usage && !matches!(out.state, State::Stopped | State::Unknown) {
        let leader = out.live.as_ref().map(|(s, _)| s);
        out.usage = out
            .cgroup
            .as_ref()
            .map(|cg| cg.usage_in(dir.as_ref(), &out.cgroup_pids, leader));
    }
    drop(dir);
    out.add_notes(sd, &record);
    out.record = Some(record);
    out
}

impl Inspection {
    /// What the verdict alone does not say: why supervision ended, a failing logger.
    fn add_notes(&mut self, sd: &StateDir, record: &Record) {
        // A monitor that gave up (say, on a full state dir) left its reason: without it a
        // supervised service would be "dead" with no why.
        if let (State::Dead | State::Failed, Some(end)) = (self.state, &record.monitor_end) {
            let why = format!("supervision ended: {}", end.reason);
            self.note = Some(match self.note.take() {
                Some(n) => format!("{n}; {why}"),
                None => why,
            });
        }
        let logging = matches!(self.state, State::Running | State::Starting);
        if let (true, Some(_), Some(run_id)) = (logging, &record.log_rotation, &record.run_id) {
            self.log_status = crate::logger::read_status(&sd.log_status_path(&self.name), run_id);
        }
    }
}

impl Inspection {
    /// Nothing known yet.
    fn unknown(name: &Name) -> Inspection {
        Inspection {
            name: name.clone(),
            state: State::Unknown,
            record: None,
            pidfile: None,
            live: None,
            note: None,
            stale_pidfile: false,
            pidfile_error: None,
            error: None,
            cgroup: None,
            cgroup_pids: Vec::new(),
            usage: None,
            log_status: None,
        }
    }

    /// No record, only a PID file: the process it names (its identity as the file
    /// gives it) is the service.
    fn judge_pidfile_alone(&mut self, pf: &pidfile::PidFile) {
        match Gate::born_after(0).check(pf.pid, &pf.expect()) {
            Ok(Verdict::Ours(stat)) => {
                self.state = State::Running;
                self.live = Some((stat, pf.expect()));
            }
            Ok(v) => {
                self.state = State::Dead;
                self.stale_pidfile = true;
                self.note = Some(dead_note(pf.pid, &v));
            }
            Err(e) => {
                self.state = State::Unknown;
                self.note = Some(e.to_string());
            }
        }
    }

    /// Sets `live` to the first candidate (the service's PID file, then the recorded PID)
    /// that is this start's process; else the verdict on the first that is not.
    fn find_live(
        &mut self,
        record: &Record,
        pf: Option<&pidfile::PidFile>,
        gate: &Gate,
    ) -> Option<(i32, Verdict)> {
        let mut last_verdict = None;
        for (pid, expect) in candidates(record, pf) {
            let mut verdict = gate.check(pid, &expect);
            // The recorded PID too: one reused within the start's clock tick matches its
            // start time, but it is not in the cgroup. The snapshot settles most cases; one
            // not in it is asked again (it may have been made after the snapshot was taken).
            if let (Ok(Verdict::Ours(st)), Some(cg)) = (&verdict, &self.cgroup) {
                if !self.cgroup_pids.contains(&pid) && !cg.contains(pid) {
                    verdict = Ok(Verdict::Reused(st.clone()));
                }
            }
            match verdict {
                Ok(Verdict::Ours(stat)) => {
                    self.live = Some((stat, expect));
                    break;
                }
                Ok(v) => {
                    if matches!(expect, Expect::WrittenBy { .. }) {
                        self.stale_pidfile = true;
                    }
                    last_verdict.get_or_insert((pid, v));
                }
                Err(e) => {
                    self.note = Some(e.to_string());
                }
            }
        }
        last_verdict
    }

    /// The state, from the record's phase and what [`Inspection::find_live`] found (and
    /// `last_verdict`, why the recorded process is not the service); sets the note.
    fn judge(&mut self, record: &Record, last_verdict: Option<&(i32, Verdict)>) -> State {
        let boot_id = record.boot_id.clone().unwrap_or_default();
        let starter_alive = record
            .starter
            .as_ref()
            .is_some_and(|s| process::check(s.pid, &s.expect(&boot_id)).is_ok_and(|v| v.is_ours()));

        // With the leader gone, whatever is still in the start's cgroup is a service that is
        // not running as recorded, and what pm-stop will stop.
        // `populated` decides, not the processes pm can see: a service can hide some (more
        // sub-cgroups than pm walks).
        let left_in_cgroup = match (&self.live, &self.cgroup) {
            (None, Some(cg)) if cg.populated() => Some(cg.members().len().max(1)),
            _ => None,
        };
        match (record.phase, self.live.is_some(), left_in_cgroup) {
            (Phase::Starting, _, _) if starter_alive => State::Starting,
            (_, true, _) => State::Running,
            (phase, false, Some(n)) => {
                let left = format!(
                    "{n} process{} left in its cgroup",
                    if n == 1 { "" } else { "es" }
                );
                self.note = Some(match &last_verdict {
                    Some((pid, v)) if phase != Phase::Stopped => {
                        format!("{}; {left}", dead_note(*pid, v))
                    }
                    _ => left,
                });
                State::Dead
            }
            (Phase::Backoff, false, None) => {
                let exit = record.last_exit.as_ref().map(|e| e.describe());
                let exit = exit.unwrap_or_else(|| "ended".into());
                if monitor::is_supervised(record) {
                    let wait = record
                        .restart_at
                        .as_deref()
                        .and_then(crate::record::parse_rfc3339)
                        .map(|t| {
                            t.duration_since(std::time::SystemTime::now())
                                .unwrap_or_default()
                        })
                        .unwrap_or_default();
                    self.note = Some(format!(
                        "{exit}, restarting in {}",
                        crate::duration::elapsed(wait)
                    ));
                    State::Backoff
                } else {
                    self.note = Some(format!("{exit}; its monitor is gone, nothing restarts it"));
                    State::Dead
                }
            }
            (Phase::Running | Phase::Starting, false, None) => {
                if let Some((pid, v)) = &last_verdict {
                    self.note = Some(dead_note(*pid, v));
                }
                // The supervised run ended and was not restarted: say how it ended.
                if let Some(e) = this_runs_exit(record) {
                    let why = match record.restart.as_ref().map(|r| r.policy) {
                        Some(monitor::Policy::OnFailure) if e.is_clean() => {
                            "; not restarted (--restart on-failure)"
                        }
                        _ => "",
                    };
                    self.note = Some(format!("{}{why}", e.describe()));
                }
                State::Dead
            }
            (Phase::Failed, false, None)
                if record.restart.is_some() && record.last_exit.is_some() =>
            {
                self.note = record.failure.as_ref().map(|f| f.reason.clone());
                State::Failed
            }
            (Phase::Failed, false, None) => {
                self.note = record.failure.as_ref().map(|f| f.reason.clone());
                State::Dead
            }
            (Phase::Stopped, false, None) => State::Stopped,
        }
    }
}

/// The record's `last_exit`, if it is the end of the recorded run (not of an earlier one).
fn this_runs_exit(record: &Record) -> Option<&monitor::Exit> {
    let e = record.last_exit.as_ref()?;
    let ended = crate::record::parse_rfc3339(&e.at)?;
    (ended >= record.started()?).then_some(e)
}

fn dead_note(pid: i32, v: &Verdict) -> String {
    match v {
        Verdict::Gone => format!("pid {pid} is gone"),
        Verdict::Reused(s) => format!("pid {pid} now belongs to another process ({})", s.comm),
        Verdict::OtherBoot => "recorded before the last reboot".into(),
        Verdict::Protected => format!("pid {pid} is never a service"),
        Verdict::Ours(_) => String::new(),
    }
}
