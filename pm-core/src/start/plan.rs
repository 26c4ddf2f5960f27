//! The plan of one start: the request (what pm-start's command line, or a stack file,
//! asks for) merged over the record of an earlier start, with every default applied and
//! every value checked once, before anything is locked, spawned or written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::error::{Error, Result};
use crate::logger::Rotation;
use crate::monitor::{self as supervision, Restart};
use crate::ready::Check;
use crate::record::{self, PidfileBy, Record, RUN_ID_VAR};
use crate::{cgroup, spawn, Name, StateDir};

/// `--grace` when no `--ready` check is given.
pub const DEFAULT_GRACE: Duration = Duration::from_millis(200);

/// What a caller asks of one start: pm-start's options, without clap. Every `None` or
/// empty field means "as recorded, else the default"; an empty `command` restarts NAME
/// from its record.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub name: String,
    pub command: Vec<String>,
    pub state_dir: Option<PathBuf>,
    /// A PID-file template the service writes itself.
    pub pidfile: Option<String>,
    /// A log path template.
    pub log: Option<String>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub user: Option<String>,
    pub stop_signal: Option<Signal>,
    pub stop_timeout: Option<Duration>,
    pub grace: Option<Duration>,
    pub ready: Vec<String>,
    pub ready_timeout: Option<Duration>,
    pub print_pid: bool,
    pub no_cgroup: bool,
    pub memory_max: Option<u64>,
    pub cpu_max: Option<String>,
    pub pids_max: Option<u64>,
    /// `no`, `on-failure` or `always`.
    pub restart: Option<String>,
    pub restart_delay: Option<Duration>,
    pub max_restarts: Option<(u32, Option<Duration>)>,
    pub log_max_size: Option<u64>,
    pub log_keep: Option<u32>,
    pub log_timestamps: bool,
    /// Started by pm-up: what the record keeps of the stack.
    pub stack: Option<record::Member>,
    /// pm-restart: what runs is stopped first, under the same hold of the name's lock as
    /// the start, so no other start can come in between.
    pub replace: bool,
}

impl Request {
    /// A start of NAME again from its record, as a monitor's restart makes it.
    pub fn again(name: &Name, state_dir: &Path) -> Request {
        Request {
            name: name.to_string(),
            state_dir: Some(state_dir.to_path_buf()),
            ..Request::default()
        }
    }

    fn log_options_given(&self) -> bool {
        self.log_max_size.is_some() || self.log_keep.is_some() || self.log_timestamps
    }
}

/// Everything needed to start the service, from the command line or the record.
pub(crate) struct Spec {
    pub(crate) name: Name,
    pub(crate) argv: Vec<String>,
    pub(crate) cwd: PathBuf,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) pidfile: PathBuf,
    pub(crate) pidfile_by: PidfileBy,
    pub(crate) log: PathBuf,
    pub(crate) user: Option<String>,
    pub(crate) stop_signal: Signal,
    pub(crate) stop_timeout: Duration,
    pub(crate) grace: Option<Duration>,
    pub(crate) ready: Vec<String>,
    /// `ready`, parsed (checked once, while building the spec).
    pub(crate) checks: Vec<Check>,
    pub(crate) ready_timeout: Duration,
    pub(crate) no_cgroup: bool,
    pub(crate) limits: cgroup::Limits,
    /// `argv[0]` resolved (see [`Record::exe`]).
    pub(crate) exe: Option<PathBuf>,
    /// The base environment (see [`Record::environment`]).
    pub(crate) environment: Vec<(String, String)>,
    /// `--restart` and its settings; `None`: not supervised.
    pub(crate) restart: Option<Restart>,
    /// `--print-pid` (not remembered).
    pub(crate) print_pid: bool,
    /// `--log-max-size`, `--log-keep`, `--log-timestamps`; `None`: no logger process.
    pub(crate) log_rotation: Option<Rotation>,
    /// See [`Record::stack`].
    pub(crate) stack: Option<record::Member>,
}

/// The caller's environment as a service's base environment: without the variables pm
/// sets for each start, and without what is not UTF-8 (a record is JSON).
pub(crate) fn caller_environment() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| !matches!(k.as_str(), "PM_NAME" | "NOTIFY_SOCKET") && k != RUN_ID_VAR)
        .collect()
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io(p, e))
}

/// The stack a start belongs to. From the record (pm-restart, a start by hand): still
/// the stack's member, but no longer started by that pm-up run, which must not stop it
/// on an interrupt.
fn stack_of(cli: &Request, rec: Option<&Record>) -> Option<record::Member> {
    cli.stack.clone().or_else(|| {
        rec.and_then(|r| r.stack.clone()).map(|mut m| {
            m.by = None;
            m
        })
    })
}

/// `--no-cgroup`, or remembered from the record, where it gives way to PM_CGROUP=on
/// (there is no `--cgroup`).
fn no_cgroup_of(cli: &Request, rec: Option<&Record>) -> Result<bool> {
    Ok(cli.no_cgroup
        || (rec.is_some_and(|r| r.no_cgroup)
            && cgroup::Want::from_env(false)? != cgroup::Want::Required))
}

/// The recorded limits, with those given now over them.
fn limits_of(cli: &Request, rec: Option<&Record>) -> record::Limits {
    let mut limits = rec.map(|r| r.limits.clone()).unwrap_or_default();
    if let Some(m) = cli.memory_max {
        limits.memory_max = Some(m);
    }
    if let Some(c) = &cli.cpu_max {
        limits.cpu_max = Some(c.clone());
    }
    if let Some(p) = cli.pids_max {
        limits.pids_max = Some(p);
    }
    limits
}

/// The recorded log rotation, with the options given now over it; `None`: no logger.
fn log_rotation_of(cli: &Request, rec: Option<&Record>) -> Option<Rotation> {
    if !cli.log_options_given() {
        return rec.and_then(|r| r.log_rotation.clone());
    }
    let mut r = rec.and_then(|r| r.log_rotation.clone()).unwrap_or_default();
    if let Some(m) = cli.log_max_size {
        r.max_size = Some(m).filter(|m| *m > 0);
    }
    if let Some(k) = cli.log_keep {
        r.keep = k;
    }
    r.timestamps |= cli.log_timestamps;
    Some(r).filter(|r| r.max_size.is_some() || r.timestamps)
}

/// The program `argv[0]` runs: the recorded one, else looked up in the environment's PATH
/// now. Resolved as root, a path may lead where another user cannot go (a PATH entry under
/// /root): for a `--user` service exec searches the recorded PATH itself, as that user.
fn exe_of(
    rec: Option<&Record>,
    other_user: bool,
    environment: &[(String, String)],
    argv: &[String],
    cwd: &Path,
) -> Option<PathBuf> {
    match rec.and_then(|r| r.exe.clone()) {
        _ if other_user => None,
        Some(e) => Some(e),
        None => {
            let path = environment
                .iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.as_str());
            argv.first()
                .and_then(|p| spawn::resolve_program(p, path, cwd))
        }
    }
}

impl Spec {
    /// Merges the command line over the record (for a restart) or over the defaults.
    pub(crate) fn build(
        cli: &Request,
        name: Name,
        sd: &StateDir,
        prior: Option<&Record>,
    ) -> Result<Spec> {
        let from_record = cli.command.is_empty();
        let rec = match (from_record, prior) {
            (true, Some(r)) => Some(r),
            (true, None) => return Err(Error::NoRecord(name.to_string())),
            (false, _) => None,
        };
        let (pidfile, pidfile_by) = match (&cli.pidfile, rec) {
            (Some(t), _) => (absolute(&sd.expand(t, &name)?)?, PidfileBy::Service),
            (None, Some(r)) if !r.pidfile.as_os_str().is_empty() => {
                (r.pidfile.clone(), r.pidfile_by)
            }
            _ => (sd.pidfile_path(&name), PidfileBy::Pm),
        };
        let log = match (&cli.log, rec) {
            (Some(t), _) => absolute(&sd.expand(t, &name)?)?,
            (None, Some(r)) if !r.log.as_os_str().is_empty() => r.log.clone(),
            _ => sd.log_path(&name),
        };
        let cwd = match (&cli.cwd, rec) {
            (Some(d), _) => absolute(d)?,
            (None, Some(r)) => r.cwd.clone(),
            (None, None) => std::env::current_dir().map_err(|e| Error::io(".", e))?,
        };
        let mut env: Vec<(String, String)> = rec.map(|r| r.env.clone()).unwrap_or_default();
        env.extend(cli.env.iter().cloned());
        let stop_signal = match (cli.stop_signal, rec) {
            (Some(s), _) => s,
            (None, Some(r)) => r.stop_signal,
            (None, None) => record::DEFAULT_STOP_SIGNAL,
        };
        let stop_timeout = cli
            .stop_timeout
            .or(rec.map(|r| r.stop_timeout))
            .unwrap_or(record::DEFAULT_STOP_TIMEOUT);
        let grace = cli.grace.or(rec.and_then(|r| r.grace));
        let ready = if cli.ready.is_empty() {
            rec.map(|r| r.ready.clone()).unwrap_or_default()
        } else {
            cli.ready.clone()
        };
        let checks = ready
            .iter()
            .map(|r| Check::parse(r))
            .collect::<Result<Vec<_>, _>>()?;
        let ready_timeout = cli
            .ready_timeout
            .or(rec.map(|r| r.ready_timeout))
            .unwrap_or(record::DEFAULT_READY_TIMEOUT);
        let limits = limits_of(cli, rec);
        let argv = rec.map_or_else(|| cli.command.clone(), |r| r.command.clone());
        let restart = restart_settings(cli, rec)?;
        let log_rotation = log_rotation_of(cli, rec);
        // A restart from the record runs what the first start ran, in its environment;
        // records from before these fields were kept fall back to the caller's.
        let environment = match rec {
            Some(r) if !r.environment.is_empty() => r.environment.clone(),
            _ => caller_environment(),
        };
        let user = cli.user.clone().or(rec.and_then(|r| r.user.clone()));
        let exe = exe_of(rec, user.is_some(), &environment, &argv, &cwd);
        Ok(Spec {
            stack: stack_of(cli, rec),
            log_rotation,
            restart,
            print_pid: cli.print_pid,
            exe,
            environment,
            no_cgroup: no_cgroup_of(cli, rec)?,
            limits,
            argv,
            user,
            name,
            cwd,
            env,
            pidfile,
            pidfile_by,
            log,
            stop_signal,
            stop_timeout,
            grace,
            ready,
            checks,
            ready_timeout,
        })
    }

    pub(crate) fn record(&self, prior: Option<&Record>) -> Record {
        Record {
            name: self.name.to_string(),
            command: self.argv.clone(),
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            pidfile: self.pidfile.clone(),
            pidfile_by: self.pidfile_by,
            log: self.log.clone(),
            user: self.user.clone(),
            stop_signal: self.stop_signal,
            stop_timeout: self.stop_timeout,
            grace: self.grace,
            ready: self.ready.clone(),
            ready_timeout: self.ready_timeout,
            last_stop: prior.and_then(|p| p.last_stop.clone()),
            no_cgroup: self.no_cgroup,
            limits: self.limits.clone(),
            exe: self.exe.clone(),
            environment: self.environment.clone(),
            log_rotation: self.log_rotation.clone(),
            stack: self.stack.clone(),
            ..Record::default()
        }
    }
}

/// `--restart`, `--restart-delay` and `--max-restarts` over the record's (a new command
/// starts from the defaults, like every other setting).
fn restart_settings(cli: &Request, rec: Option<&Record>) -> Result<Option<Restart>> {
    let policy = match cli.restart.as_deref() {
        Some(p) => Some(supervision::Policy::parse(p)?),
        None => rec.and_then(|r| r.restart.as_ref()).map(|r| r.policy),
    };
    let Some(policy) = policy.filter(|p| *p != supervision::Policy::No) else {
        if cli.restart_delay.is_some() || cli.max_restarts.is_some() {
            return Err(Error::InvalidArgument {
                what: "--restart-delay/--max-restarts",
                value: String::new(),
                reason: "they need --restart on-failure or --restart always".into(),
            });
        }
        return Ok(None);
    };
    let mut r = rec.and_then(|r| r.restart.clone()).unwrap_or_default();
    r.policy = policy;
    if let Some(d) = cli.restart_delay {
        r.delay = d;
    }
    if let Some((n, w)) = cli.max_restarts {
        r.max_restarts = n;
        r.window = w.unwrap_or(supervision::DEFAULT_WINDOW);
    }
    Ok(Some(r))
}

/// Where the service will be tracked: a cgroup of its own if one can be made (and was not
/// turned off), else its process group and session. Limits need a cgroup.
pub(crate) fn tracking(sd: &StateDir, spec: &Spec) -> Result<Option<cgroup::Base>> {
    let want = cgroup::Want::from_env(spec.no_cgroup)?;
    if want == cgroup::Want::Off && !spec.limits.is_empty() {
        return Err(Error::InvalidArgument {
            what: "limit",
            value: spec.limits.describe(),
            reason:
                "limits need a cgroup, and cgroup tracking is off (--no-cgroup or PM_CGROUP=off)"
                    .into(),
        });
    }
    let base = cgroup::choose(sd, want)?;
    if base.is_none() && !spec.limits.is_empty() {
        let why = cgroup::Base::locate(sd, true).err().unwrap_or_default();
        return Err(Error::Cgroup(format!(
            "limits ({}) need a cgroup: {why}",
            spec.limits.describe()
        )));
    }
    Ok(base)
}
