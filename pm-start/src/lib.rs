//! pm-start: spawn a command detached in a new session, log to a file, record it, and
//! return once it is up ("up": not exited within `--grace`, and every `--ready` check
//! passed).

// clap turns the doc comments into --help text, where `[HOST:]PORT` must read as written.
#![allow(rustdoc::broken_intra_doc_links)]

mod monitor;
mod wait;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use pm_core::logger::Rotation;
use pm_core::monitor::{self as supervision, Restart};
use pm_core::process::{self, Stat};
use pm_core::ready::{Check, LogFollower, NotifySocket, PidfileBaseline};
use pm_core::record::{self, Failure, LastStop, Phase, PidfileBy, Record, RUN_ID_VAR};
use pm_core::report::{log_tail, say};
use pm_core::spawn::{self, Credentials, SpawnSpec};
use pm_core::start::{self, Awaited};
use pm_core::status::{inspect, State};
use pm_core::{cgroup, cli, signal, stop, Code, Name, StateDir};

use wait::{Tracked, WaitEnd};

const TOOL: &str = "pm-start";
/// `--grace` when no `--ready` check is given.
pub const DEFAULT_GRACE: Duration = Duration::from_millis(200);
/// Log lines shown when a start fails.
const TAIL_LINES: usize = 20;

const EXAMPLES: &str = "\
Examples:
  Start a foreground web server, ready once its port accepts:
    pm-start web --ready tcp:8000 -- python3 -m http.server 8000

  Start a self-daemonizing server that writes its own PID file:
    pm-start nginx --pidfile /tmp/site/nginx.pid --stop-signal QUIT -- \\
        nginx -p /tmp/site -c nginx.conf

  Wait for a database, run as an unprivileged user, stop with SIGINT:
    pm-start db --user postgres --stop-signal INT \\
        --ready 'exec:pg_isready -h 127.0.0.1 -p 5432' -- postgres -D /srv/pg

  Start it again later from its record:
    pm-start web";

/// Start a service detached, log its output, and wait until it is up.
#[derive(Debug, Parser)]
#[command(name = "pm-start", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Service name: 1-128 of A-Z a-z 0-9 . _ @ - (service@instance for templates)
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Command and arguments (no shell). Omit to start NAME again from its record.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,

    /// State directory [default: $PM_STATE_DIR, $XDG_RUNTIME_DIR/pm, /run/pm as root, else ${TMPDIR:-/tmp}/pm-$UID]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// PID file the service writes itself (template: {name} {service} {instance} {state_dir});
    /// a launcher that forks and exits 0 is then followed to the PID in this file
    #[arg(long, value_name = "TEMPLATE")]
    pub pidfile: Option<String>,

    /// Log file for stdout and stderr, appended [default: STATE/NAME.log]
    #[arg(long, value_name = "PATH")]
    pub log: Option<String>,

    /// Working directory of the service [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,

    /// Extra environment variable for the service (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = cli::env_pair)]
    pub env: Vec<(String, String)>,

    /// Run the service as USER (and GROUP), set before exec; needs root
    #[arg(long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,

    /// Signal pm-stop sends first, remembered in the record [default: TERM]
    #[arg(long, value_name = "SIG", value_parser = cli::SignalArg, hide_possible_values = true)]
    pub stop_signal: Option<Signal>,

    /// How long pm-stop waits before SIGKILL, remembered [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = cli::duration)]
    pub stop_timeout: Option<Duration>,

    /// The service must not exit within this time [default: 200ms, or 0 with --ready]
    #[arg(long, value_name = "DURATION", value_parser = cli::duration)]
    pub grace: Option<Duration>,

    /// Readiness check, repeatable, all must pass: pidfile, tcp:[HOST:]PORT, unix:PATH,
    /// file:PATH, exec:COMMAND, log:REGEX, notify. Only evidence from this start counts: a
    /// tcp:/unix: listener must be the service's, a file: newer than the start;
    /// exec: runs under /bin/sh -c; log: takes Rust regex syntax (ASCII classes)
    #[arg(long, value_name = "CHECK", value_parser = cli::CheckArg, hide_possible_values = true)]
    pub ready: Vec<String>,

    /// Give up (and stop the service) if not ready by then [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = cli::duration)]
    pub ready_timeout: Option<Duration>,

    /// Print the service's PID on stdout once it is up
    #[arg(long)]
    pub print_pid: bool,

    /// Track the service by process group and session, not by a cgroup of its own
    /// (as PM_CGROUP=off); remembered
    #[arg(long)]
    pub no_cgroup: bool,

    /// Memory limit of the whole service (cgroup memory.max), e.g. 512M; remembered
    #[arg(long, value_name = "SIZE", value_parser = cli::size)]
    pub memory_max: Option<u64>,

    /// CPU limit of the whole service (cgroup cpu.max): 50% of one CPU, or 1.5 CPUs;
    /// remembered
    #[arg(long, value_name = "CPUS", value_parser = cli::cpu)]
    pub cpu_max: Option<String>,

    /// Limit on the number of processes and threads of the service (cgroup pids.max);
    /// remembered
    #[arg(long, value_name = "N", value_parser = cli::pids)]
    pub pids_max: Option<u64>,

    /// Supervise: a small monitor process, the service's parent, records how it ends and
    /// starts it again: after a failure (non-zero exit, signal) or after any end; remembered.
    /// `no` (the default) runs nothing between calls
    #[arg(long, value_name = "POLICY", value_parser = ["no", "on-failure", "always"])]
    pub restart: Option<String>,

    /// First delay before a restart; it doubles after each quick failure, up to 30s
    /// (longer if this is longer) [default: 100ms]; remembered
    #[arg(long, value_name = "DURATION", value_parser = cli::duration)]
    pub restart_delay: Option<Duration>,

    /// Give up (state `failed`) when the service ends more than N times within WINDOW;
    /// 0: never give up [default: 5/10s]; remembered
    #[arg(long, value_name = "N[/WINDOW]", value_parser = max_restarts)]
    pub max_restarts: Option<(u32, Option<Duration>)>,

    /// Write the log through a small logger process that rotates it before it grows past
    /// SIZE (e.g. 10M): LOG.1, LOG.2, …; lines are never split or lost; 0: no rotation;
    /// remembered
    #[arg(long, value_name = "SIZE", value_parser = cli::size)]
    pub log_max_size: Option<u64>,

    /// Rotated logs kept with --log-max-size [default: 5]; remembered
    #[arg(long, value_name = "N")]
    pub log_keep: Option<u32>,

    /// Prefix each log line with the time it was written (RFC 3339 UTC, milliseconds),
    /// through the logger process; remembered
    #[arg(long)]
    pub log_timestamps: bool,
}

impl Cli {
    fn log_options_given(&self) -> bool {
        self.log_max_size.is_some() || self.log_keep.is_some() || self.log_timestamps
    }
}

fn max_restarts(s: &str) -> Result<(u32, Option<Duration>), String> {
    pm_core::monitor::parse_max_restarts(s).map_err(|e| e.to_string())
}

/// Everything needed to start the service, from the command line or the record.
struct Spec {
    name: Name,
    argv: Vec<String>,
    cwd: PathBuf,
    env: Vec<(String, String)>,
    pidfile: PathBuf,
    pidfile_by: PidfileBy,
    log: PathBuf,
    user: Option<String>,
    stop_signal: Signal,
    stop_timeout: Duration,
    grace: Option<Duration>,
    ready: Vec<String>,
    /// `ready`, parsed (checked once, while building the spec).
    checks: Vec<Check>,
    ready_timeout: Duration,
    no_cgroup: bool,
    limits: cgroup::Limits,
    /// `argv[0]` resolved (see [`Record::exe`]).
    exe: Option<PathBuf>,
    /// The base environment (see [`Record::environment`]).
    environment: Vec<(String, String)>,
    /// `--restart` and its settings; `None`: not supervised.
    restart: Option<Restart>,
    /// `--print-pid` (not remembered).
    print_pid: bool,
    /// `--log-max-size`, `--log-keep`, `--log-timestamps`; `None`: no logger process.
    log_rotation: Option<Rotation>,
}

/// The caller's environment as a service's base environment: without the variables pm
/// sets for each start, and without what is not UTF-8 (a record is JSON).
fn caller_environment() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| !matches!(k.as_str(), "PM_NAME" | "NOTIFY_SOCKET") && k != RUN_ID_VAR)
        .collect()
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("{}: cannot make it absolute", p.display()))
}

impl Spec {
    /// Merges the command line over the record (for a restart) or over the defaults.
    fn build(cli: &Cli, name: Name, sd: &StateDir, prior: Option<&Record>) -> Result<Spec> {
        let from_record = cli.command.is_empty();
        let rec = match (from_record, prior) {
            (true, Some(r)) => Some(r),
            (true, None) => return Err(pm_core::Error::NoRecord(name.to_string()).into()),
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
            (None, None) => std::env::current_dir().context("current directory")?,
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
        let argv = rec.map_or_else(|| cli.command.clone(), |r| r.command.clone());
        let restart = restart_settings(cli, rec)?;
        let log_rotation = if cli.log_options_given() {
            let mut r = rec.and_then(|r| r.log_rotation.clone()).unwrap_or_default();
            if let Some(m) = cli.log_max_size {
                r.max_size = Some(m).filter(|m| *m > 0);
            }
            if let Some(k) = cli.log_keep {
                r.keep = k;
            }
            r.timestamps |= cli.log_timestamps;
            Some(r).filter(|r| r.max_size.is_some() || r.timestamps)
        } else {
            rec.and_then(|r| r.log_rotation.clone())
        };
        // A restart from the record runs what the first start ran, in its environment;
        // records from before these fields were kept fall back to the caller's.
        let environment = match rec {
            Some(r) if !r.environment.is_empty() => r.environment.clone(),
            _ => caller_environment(),
        };
        let user = cli.user.clone().or(rec.and_then(|r| r.user.clone()));
        // Resolved as root, a path may lead where the --user cannot go (a PATH entry under
        // /root): for another user exec searches the recorded PATH itself, as that user.
        let exe = match rec.and_then(|r| r.exe.clone()) {
            _ if user.is_some() => None,
            Some(e) => Some(e),
            None => {
                let path = environment
                    .iter()
                    .find(|(k, _)| k == "PATH")
                    .map(|(_, v)| v.as_str());
                argv.first()
                    .and_then(|p| spawn::resolve_program(p, path, &cwd))
            }
        };
        Ok(Spec {
            log_rotation,
            restart,
            print_pid: cli.print_pid,
            exe,
            environment,
            // A remembered --no-cgroup gives way to PM_CGROUP=on (there is no --cgroup).
            no_cgroup: cli.no_cgroup
                || (rec.is_some_and(|r| r.no_cgroup)
                    && cgroup::Want::from_env(false)? != cgroup::Want::Required),
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

    fn record(&self, prior: Option<&Record>) -> Record {
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
            ..Record::default()
        }
    }
}

/// `--restart`, `--restart-delay` and `--max-restarts` over the record's (a new command
/// starts from the defaults, like every other setting).
fn restart_settings(cli: &Cli, rec: Option<&Record>) -> Result<Option<Restart>> {
    let policy = match cli.restart.as_deref() {
        Some(p) => Some(supervision::Policy::parse(p)?),
        None => rec.and_then(|r| r.restart.as_ref()).map(|r| r.policy),
    };
    let Some(policy) = policy.filter(|p| *p != supervision::Policy::No) else {
        if cli.restart_delay.is_some() || cli.max_restarts.is_some() {
            return Err(pm_core::Error::InvalidArgument {
                what: "--restart-delay/--max-restarts",
                value: String::new(),
                reason: "they need --restart on-failure or --restart always".into(),
            }
            .into());
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

/// Blocks the signals that should abort a waiting start and returns an fd that reports
/// them, so the wait loop sees Ctrl-C as an event like any other.
pub(crate) fn interrupt_fd() -> Result<SignalFd> {
    signal_fd(&[Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP])
}

/// Blocks `signals` and returns a non-blocking signalfd that reports them.
pub(crate) fn signal_fd(signals: &[Signal]) -> Result<SignalFd> {
    let mut mask = SigSet::empty();
    for s in signals {
        mask.add(*s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .context("blocking signals")?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).context("signalfd")
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let name = Name::new(&cli.name)?;
    let state_dir = cli.state_dir.clone();
    let mut mon = None;
    if wants_monitor(&cli, &name) {
        match monitor::fork()? {
            monitor::Forked::Parent(code) => return Ok(code),
            monitor::Forked::Monitor(m) => mon = Some(m),
        }
    }
    let mut up = None;
    let started = start(&cli, name.clone(), mon.as_ref().map(|m| &m.ctx), &mut up)
        .with_context(|| name.to_string());
    // A NAME that ends up with no record (no command to restart from, a usage error, a
    // spawn that failed before recording) leaves no NAME.lock behind.
    if let Ok(sd) = StateDir::resolve(state_dir.as_deref(), false) {
        sd.tidy_lock(&name);
    }
    match (mon, up, &started) {
        (Some(m), Some(rec), Ok(_)) => Ok(m.supervise(&cli, name, rec)),
        _ => started,
    }
}

/// The hidden modes of the pm-start binary, entered before any parsing: a monitor that
/// re-executed itself to shed what the start code touched (see the `monitor` module;
/// harmless if run by hand: a monitor only acts on a record that names its own PID and
/// start time), and the log writer. `None` for any other command line.
pub fn internal_entry() -> Option<ExitCode> {
    match std::env::args_os().nth(1)?.to_str()? {
        "--pm-monitor" => monitor::resume(),
        "--pm-logger" => Some(pm_core::logger::process_main()),
        _ => None,
    }
}

/// Will this start be supervised? `--restart on-failure|always`, or a restart from a
/// record that has a policy (the forked monitor checks again, under the lock).
fn wants_monitor(cli: &Cli, name: &Name) -> bool {
    match cli.restart.as_deref() {
        Some("no") => false,
        Some(_) => true,
        None if cli.command.is_empty() => StateDir::resolve(cli.state_dir.as_deref(), false)
            .ok()
            .and_then(|sd| sd.read_record(name).ok().flatten())
            .is_some_and(|r| r.restart.is_some()),
        None => false,
    }
}

/// One start, from the command line or the record. `mon`: run by the service's monitor
/// (first start or a restart); `up` receives the record of a supervised service it
/// started.
pub(crate) fn start(
    cli: &Cli,
    name: Name,
    mon: Option<&monitor::Ctx>,
    up: &mut Option<Record>,
) -> Result<ExitCode> {
    if let Some(t) = &cli.pidfile {
        pm_core::name::check_template(t)?;
    }
    let sd = StateDir::resolve(cli.state_dir.as_deref(), true)?;
    let mut lock = sd.lock(&name)?;
    // Blocked only now: while waiting for the lock, Ctrl-C simply ends pm-start.
    let interrupts = interrupt_fd()?;
    let mut waited_for_another = false;
    let (prior, spec, creds, seen) = loop {
        let prior = sd.read_record(&name)?;
        let spec = Spec::build(cli, name.clone(), &sd, prior.as_ref())?;
        let creds = spec.user.as_deref().map(Credentials::resolve).transpose()?;
        if let Some(c) = &creds {
            let me = nix::unistd::geteuid();
            if !me.is_root() && me != c.uid {
                bail!(
                    "--user {}: only root can start a service as another user",
                    c.user
                );
            }
        }
        let seen = inspect(&sd, &name, None);
        if let Some(e) = seen.error {
            return Err(e).context("refusing to replace a record that cannot be read; remove it if the service is not running");
        }
        if let Some(m) = mon.filter(|m| m.restarting) {
            // A restart only continues the backoff this monitor recorded: a stop, or a
            // start by hand, since then has the last word.
            let ours = seen
                .record
                .as_ref()
                .is_some_and(|r| r.monitor == Some(m.me) && r.phase == Phase::Backoff);
            if !ours {
                return Ok(Code::NotRunning.into());
            }
        }
        match seen.state {
            // A restart never starts a second copy of a service that runs.
            s if s != State::Running && mon.is_some_and(|m| m.restarting) => {
                break (prior, spec, creds, seen)
            }
            State::Backoff => {
                say(
                    TOOL,
                    name.as_str(),
                    format!(
                        "supervised: {}; pm-stop {name} stops it",
                        seen.note.as_deref().unwrap_or("restarting")
                    ),
                );
                return Ok(Code::Ok.into());
            }
            State::Running => {
                let pid = seen.pid().map_or("?".into(), |p| p.to_string());
                say(TOOL, name.as_str(), format!("already running, pid {pid}"));
                // A different command given now is not applied silently.
                if let Some(r) = seen.record.as_ref() {
                    if !cli.command.is_empty() && cli.command != r.command {
                        say(
                            TOOL,
                            name.as_str(),
                            format!(
                                "it runs {:?}, not the command given ({:?}); to switch: pm-stop {name} && pm-start {name} -- COMMAND",
                                r.command.join(" "),
                                cli.command.join(" ")
                            ),
                        );
                    }
                }
                if cli.print_pid {
                    pm_core::report::out(&format!("{pid}\n"))?;
                }
                return Ok(Code::Ok.into());
            }
            State::Starting => {
                // "0" means the service is up: wait for the other start's outcome.
                let Some((starter, boot, limit)) = seen.record.as_ref().and_then(|r| {
                    let limit = r
                        .ready_timeout
                        .saturating_add(r.stop_timeout)
                        .saturating_add(stop::KILL_WAIT)
                        .saturating_add(Duration::from_secs(10));
                    Some((r.starter.clone()?, r.boot_id.clone()?, limit))
                }) else {
                    bail!("a concurrent start is recorded without its starter");
                };
                say(
                    TOOL,
                    name.as_str(),
                    format!(
                        "another pm-start (pid {}) is starting it; waiting for its outcome",
                        starter.pid
                    ),
                );
                drop(lock);
                match start::await_starter(&starter, &boot, &interrupts, limit)? {
                    Awaited::Finished => {}
                    Awaited::Interrupted(sig) => {
                        say(
                            TOOL,
                            name.as_str(),
                            "interrupted while waiting for the other start",
                        );
                        return Ok(signal::die_by(sig));
                    }
                    Awaited::TimedOut => {
                        bail!("the concurrent start (pid {}) did not finish", starter.pid)
                    }
                }
                waited_for_another = true;
                lock = sd.lock(&name)?;
                continue;
            }
            _ if waited_for_another => {
                let why = seen
                    .record
                    .as_ref()
                    .and_then(|r| r.failure.as_ref())
                    .map_or_else(|| seen.state.as_str().to_string(), |f| f.reason.clone());
                say(
                    TOOL,
                    name.as_str(),
                    format!("the concurrent start failed: {why}"),
                );
                return Ok(Code::Failure.into());
            }
            _ => break (prior, spec, creds, seen),
        }
    };

    let base = tracking(&sd, &spec)?;
    // A dead run may have left workers behind (its leader crashed): stop them first, or
    // the new record would orphan them for good.
    if matches!(seen.state, State::Dead | State::Failed) && seen.record.is_some() {
        let opts = stop::Options {
            leftovers_only: true,
            ..stop::Options::default()
        };
        match stop::stop_inspected(&sd, &name, seen, &opts, TOOL)? {
            stop::Report::Ran(o) if !o.is_success() => {
                let r = stop::Report::Ran(o);
                bail!(
                    "what is left of the previous run cannot be stopped: {}",
                    r.describe()
                );
            }
            stop::Report::Ran(o) => say(
                TOOL,
                name.as_str(),
                format!(
                    "stopped what was left of the previous run: {}",
                    stop::Report::Ran(o).describe()
                ),
            ),
            _ => {}
        }
    }

    let checks = spec.checks.clone();
    let grace = spec.grace.unwrap_or(if checks.is_empty() {
        DEFAULT_GRACE
    } else {
        Duration::ZERO
    });
    let baseline = PidfileBaseline::take(&spec.pidfile);
    let log_from = std::fs::metadata(&spec.log).map(|m| m.len()).unwrap_or(0);
    let follower = LogFollower::new(&spec.log);
    let mut notify = if checks.iter().any(|c| matches!(c, Check::Notify)) {
        Some(NotifySocket::bind(
            &sd.notify_path(&name),
            creds.as_ref().map(|c| (c.uid, c.gid)),
        )?)
    } else {
        None
    };
    let mut rec = spec.record(prior.as_ref());
    if let (Some(m), Some(restart)) = (mon, &spec.restart) {
        rec.restart = Some(restart.clone());
        rec.monitor = Some(m.me);
        // The monitor is known by identity, start time and boot: also in a record whose
        // restart failed before anything was spawned.
        rec.boot_id = Some(process::boot_id()?);
        let before = prior.as_ref();
        rec.restarts = before
            .filter(|_| m.restarting)
            .map_or(0, |p| p.restarts + 1);
        rec.last_exit = before.and_then(|p| p.last_exit.clone());
    }
    let run_id = start::new_run_id()?;
    rec.run_id = Some(run_id.clone());
    // The cgroup exists (with its limits) before the child can run; the child is moved
    // into it before the record naming it is written, and both before the go.
    let cg = match &base {
        Some(b) => {
            stop_strays(&sd, b, &spec)?;
            Some(b.create(&name, &run_id, &spec.limits)?)
        }
        None => None,
    };
    rec.cgroup = cg.as_ref().map(|c| c.path().to_path_buf());
    let mut env = spec.env.clone();
    env.push(("PM_NAME".into(), name.to_string()));
    env.push((RUN_ID_VAR.into(), rec.run_id.clone().unwrap_or_default()));
    if let Some(n) = &notify {
        env.push((
            "NOTIFY_SOCKET".into(),
            n.path().to_string_lossy().into_owned(),
        ));
    }

    if let Ok(Some(info)) = interrupts.read_signal() {
        say(
            TOOL,
            name.as_str(),
            "interrupted before starting; nothing was started",
        );
        return Ok(
            Signal::try_from(info.ssi_signo as i32).map_or(ExitCode::from(130), signal::die_by)
        );
    }
    // Daemons that double-fork then reparent to pm-start rather than to init, so a failed
    // start can still find (and stop) them by parent PID.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let logger_out = match &spec.log_rotation {
        Some(r) => Some(spawn::logger(
            spec.name.as_str(),
            &spec.log,
            r,
            creds.as_ref(),
            &run_id,
            cg.as_ref(),
        )?),
        None => None,
    };

    rec.started_at = Some(record::now_rfc3339());
    rec.starter = start::me_as_starter()?;
    let spawned_at = pm_core::untrusted::coarse_now();
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
            user: creds.as_ref(),
        },
        &mut |h| {
            if let Some(cg) = &cg {
                cg.join(h.pid)?;
            }
            record_spawn(&sd, &spec, &mut rec, h)
        },
    );
    let spawned = match spawned {
        Ok(s) => s,
        Err(e) => {
            // Nothing ran: the child (if one was forked) never got to exec the command.
            if spec.pidfile_by == PidfileBy::Pm {
                if let Some(pid) = rec.pid {
                    let _ = pm_core::pidfile::remove_if_names(&spec.pidfile, pid);
                }
            }
            (rec.pid, rec.pgid, rec.sid, rec.start_time) = (None, None, None, None);
            if let Some(cg) = &cg {
                // The child exited without running anything (spawn reaped it).
                let _ = cg.remove();
                rec.cgroup = None;
            }
            rec.phase = Phase::Failed;
            rec.starter = None;
            rec.failure = Some(Failure {
                at: record::now_rfc3339(),
                reason: e.to_string(),
                ..Failure::default()
            });
            sd.write_record(&rec)?;
            say(TOOL, name.as_str(), format!("failed to start: {e}"));
            return Ok(Code::Failure.into());
        }
    };
    // Only the service may hold the logger's pipe: its end is the logger's EOF.
    drop(logger_out);
    // Not held while waiting: pm-stop must be able to stop a service that is starting.
    drop(lock);

    let mut waiter = wait::Waiter {
        tracked: Tracked::Child(spawned),
        checks,
        follower,
        notify: notify.as_mut(),
        interrupts: &interrupts,
        pidfile: &spec.pidfile,
        pidfile_by: spec.pidfile_by,
        baseline,
        cwd: &spec.cwd,
        user: creds.as_ref(),
        grace,
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
    finish(&sd, &spec, rec, tracked, end, log_from, up)
}

/// Where the service will be tracked: a cgroup of its own if one can be made (and was not
/// turned off), else its process group and session. Limits need a cgroup.
fn tracking(sd: &StateDir, spec: &Spec) -> Result<Option<cgroup::Base>> {
    let want = cgroup::Want::from_env(spec.no_cgroup)?;
    if want == cgroup::Want::Off && !spec.limits.is_empty() {
        return Err(pm_core::Error::InvalidArgument {
            what: "limit",
            value: spec.limits.describe(),
            reason:
                "limits need a cgroup, and cgroup tracking is off (--no-cgroup or PM_CGROUP=off)"
                    .into(),
        }
        .into());
    }
    let base = cgroup::choose(sd, want)?;
    if base.is_none() && !spec.limits.is_empty() {
        let why = cgroup::Base::locate(sd, true).err().unwrap_or_default();
        return Err(pm_core::Error::Cgroup(format!(
            "limits ({}) need a cgroup: {why}",
            spec.limits.describe()
        ))
        .into());
    }
    Ok(base)
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
            o => bail!(
                "what is left in {} cannot be stopped: {}",
                cg.path().display(),
                stop::Report::Ran(o).describe()
            ),
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
) -> pm_core::Result<()> {
    rec.phase = Phase::Starting;
    rec.pid = Some(spawned.pid);
    rec.pgid = Some(spawned.pid);
    rec.sid = Some(spawned.pid);
    rec.start_time = Some(spawned.start_time);
    rec.boot_id = Some(process::boot_id()?);
    rec.stopping.clear();
    if spec.pidfile_by == PidfileBy::Pm {
        pm_core::pidfile::write(&spec.pidfile, spawned.pid)?;
    }
    // Unsynced: the child waits for this write, and it describes a process that no power
    // cut leaves running; the record pm-start writes once the service is up is synced.
    sd.write_record_unsynced(rec)
}

/// Records and reports how the wait ended; cleans up after a failed start. Every failure
/// after the spawn — the service not ready, an interrupt, a record that cannot be
/// written — stops what was spawned before pm-start exits 1.
fn finish(
    sd: &StateDir,
    spec: &Spec,
    mut rec: Record,
    tracked: Tracked,
    end: WaitEnd,
    log_from: u64,
    up: &mut Option<Record>,
) -> Result<ExitCode> {
    let name = spec.name.as_str();
    let mut interrupted = None;
    let (reason, code) = match end {
        WaitEnd::Ready { pid, start_time } => {
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
            let stat = Stat::read(pid)?;
            rec.phase = Phase::Running;
            rec.starter = None;
            rec.pid = Some(pid);
            rec.start_time = Some(start_time);
            if let Some(s) = stat {
                // A daemon caught before its setsid() (nginx writes its PID file first)
                // still shows the session pm created for the launcher: that one is the
                // service's too, and pm-stop uses the live values while the daemon runs.
                rec.pgid = Some(s.pgrp);
                rec.sid = Some(s.session);
            }
            match sd.write_record(&rec) {
                Ok(()) => {}
                Err(e) => {
                    // Ready but not recorded as running: "exit 1" must mean nothing runs.
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
                format!("started, pid {pid}, log {}{supervised}", spec.log.display()),
            );
            if rec.monitor.is_some() {
                *up = Some(rec.clone());
            }
            if spec.print_pid {
                pm_core::report::out(&format!("{pid}\n"))?;
            }
            return Ok(Code::Ok.into());
        }
        WaitEnd::Failed {
            reason,
            exit_code,
            signal,
        } => {
            rec.failure = Some(Failure {
                at: record::now_rfc3339(),
                reason: reason.clone(),
                exit_code,
                signal,
            });
            (reason, 1u8)
        }
        WaitEnd::Interrupted(sig) => {
            let reason = format!("interrupted by SIG{}", signal::name(sig));
            rec.failure = Some(Failure {
                at: record::now_rfc3339(),
                reason: reason.clone(),
                exit_code: None,
                signal: Some(signal::name(sig).to_string()),
            });
            interrupted = Some(sig);
            (reason, 128 + sig as u8)
        }
    };

    // Stop whatever this start left running: graceful, then kill.
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
        rec.phase = Phase::Failed;
        rec.starter = None;
        if let Some(o) = &outcome {
            rec.last_stop = Some(o.clone());
        }
        if spec.pidfile_by == PidfileBy::Pm {
            if let Some(pid) = rec.pid {
                pm_core::pidfile::remove_if_names(&spec.pidfile, pid)?;
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
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{TOOL}: {name}: last lines of {}:", spec.log.display());
        for l in tail {
            let _ = writeln!(err, "  | {l}");
        }
    }
    Ok(interrupted.map_or(ExitCode::from(code), signal::die_by))
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
    Ok(start::stop_failed(
        sd,
        rec,
        leader,
        born_after,
        child,
        spec.stop_signal,
        spec.stop_timeout,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn env_pairs_need_a_key() {
        assert_eq!(cli::env_pair("A=1=2").unwrap(), ("A".into(), "1=2".into()));
        assert_eq!(cli::env_pair("A=").unwrap(), ("A".into(), "".into()));
        assert!(cli::env_pair("=1").is_err());
        assert!(cli::env_pair("A").is_err());
    }
}
