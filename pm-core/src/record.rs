//! The record: everything pm knows about one service, as `STATE/NAME.json`.
//!
//! It is what lets tools that share no process agree: pm-start writes it, pm-stop and
//! pm-status read it and the kernel, and a later `pm-start NAME` restarts from it.
//! Unknown fields are ignored and missing ones default, so newer tools can add fields.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

/// The one default of each stop and readiness setting, for the record, pm-start and
/// pm-stop alike.
pub const DEFAULT_STOP_SIGNAL: Signal = Signal::SIGTERM;
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Record format version written by this build.
pub const VERSION: u32 = 1;

/// Where the service is in its life, as pm last saw it. The kernel has the last word:
/// pm-status checks `Running` against the process table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// pm-start is waiting for it to become ready.
    Starting,
    /// pm-start reported it up.
    Running,
    /// pm-stop stopped it (or it was recorded and never ran).
    #[default]
    Stopped,
    /// pm-start failed (exited early, never ready, could not exec); for a supervised
    /// service, its monitor gave up restarting it.
    Failed,
    /// Supervised: the service ended and its monitor restarts it at `restart_at`.
    Backoff,
}

/// Who writes the PID file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PidfileBy {
    /// pm writes `STATE/NAME.pid` for the process it spawned.
    #[default]
    Pm,
    /// The service writes it (`--pidfile`); it may name a forked daemon.
    Service,
}

/// The pm-start process that is waiting for readiness, so pm-status can say `starting`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Starter {
    pub pid: i32,
    pub start_time: u64,
}

/// A process by identity: its PID and its start time (clock ticks after boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    pub pid: i32,
    pub start_time: u64,
}

/// The environment variable that marks every process of one start.
pub const RUN_ID_VAR: &str = "PM_RUN_ID";

/// What the last stop did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct LastStop {
    /// RFC 3339 UTC.
    pub at: String,
    /// Which tool stopped it: pm-stop, pm-stopall, pm-start (after a failed start).
    pub by: String,
    /// Signal sent first (short name).
    pub signal: String,
    pub escalated: bool,
    pub duration_ms: u64,
    /// `stopped`, `already-gone`, or `failed`.
    pub result: String,
    /// PIDs that could not be stopped.
    pub left: Vec<i32>,
}

/// Why the last start failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Failure {
    pub at: String,
    pub reason: String,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
}

impl Failure {
    /// A failure now, for this reason.
    pub fn now(reason: impl Into<String>) -> Failure {
        Failure {
            at: now_rfc3339(),
            reason: reason.into(),
            ..Failure::default()
        }
    }
}

// ---------------------------------------------------------------------------------------
// The settings and outcomes a record holds. They are defined here, below everything that
// acts on them (the monitor, the logger, cgroups): those modules add the behaviour.

/// When the monitor restarts the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Never (no monitor at all): pm's daemonless default.
    #[default]
    No,
    /// After an exit with a non-zero code or by a signal.
    OnFailure,
    /// After any exit, a clean one too.
    Always,
}

/// Default first delay before a restart; it doubles after each restart up to `monitor::MAX_DELAY`.
pub const DEFAULT_DELAY: Duration = Duration::from_millis(100);
/// Default flapping limit: more than this many restarts within [`DEFAULT_WINDOW`] gives up.
pub const DEFAULT_MAX_RESTARTS: u32 = 5;
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// A record's restart settings (`--restart`, `--restart-delay`, `--max-restarts N/WINDOW`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Restart {
    pub policy: Policy,
    #[serde(with = "millis", rename = "delay_ms")]
    pub delay: Duration,
    /// 0: never give up.
    pub max_restarts: u32,
    #[serde(with = "millis", rename = "window_ms")]
    pub window: Duration,
}

impl Default for Restart {
    fn default() -> Self {
        Restart {
            policy: Policy::No,
            delay: DEFAULT_DELAY,
            max_restarts: DEFAULT_MAX_RESTARTS,
            window: DEFAULT_WINDOW,
        }
    }
}

/// How the service's main process ended, as its parent (the monitor) was told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Exit {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Short signal name (`SEGV`), when a signal killed it.
    pub signal: Option<String>,
    /// It dumped core.
    pub core: bool,
    /// RFC 3339 UTC.
    pub at: String,
    /// Set when the status could not be read (the process was not the monitor's child,
    /// or a restart failed before its process ran): what is known instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Default `--log-keep`: rotated logs kept.
pub const DEFAULT_KEEP: u32 = 5;

/// How the log is written, as remembered in the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rotation {
    /// Rotate before a line would take the log past this many bytes.
    pub max_size: Option<u64>,
    /// Rotated files kept (`LOG.1` … `LOG.N`).
    pub keep: u32,
    /// Prefix each line with its arrival time (RFC 3339 UTC, milliseconds).
    pub timestamps: bool,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_size: None,
            keep: DEFAULT_KEEP,
            timestamps: false,
        }
    }
}

/// Resource limits written into a service's cgroup before it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// `memory.max`, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<u64>,
    /// `cpu.max`: "QUOTA PERIOD" in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_max: Option<String>,
    /// `pids.max`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

/// What a stack service waits for of a service it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// Its start returned: running past its grace time (and its ready checks, if any).
    Started,
    /// Running, and every ready check passed.
    Ready,
    /// A oneshot task that exited 0.
    Succeeded,
}

/// One dependency of a stack service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Need {
    pub name: String,
    pub condition: Condition,
}

/// What the record of a service started by pm-up keeps of its stack: pm-down orders its
/// stops by `needs`, whatever the file says by then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Member {
    /// The services file (absolute).
    pub file: PathBuf,
    pub needs: Vec<Need>,
    pub tags: Vec<String>,
    /// The service's definition as pm-up read it: a later pm-up restarts the service only
    /// when the file's definition differs.
    pub definition: serde_json::Value,
    /// The pm-up run that started it (a random token): an interrupted pm-up stops only
    /// what it started itself, not what a concurrent pm-up of the same file started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// `STATE/NAME.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    pub version: u32,
    pub name: String,
    pub command: Vec<String>,
    pub cwd: PathBuf,
    /// `--env KEY=VALUE` pairs, in the order given.
    pub env: Vec<(String, String)>,
    /// The executable `argv[0]` resolved to when the service was started with a command: a
    /// restart from the record runs the same program whatever the restarting PATH says.
    pub exe: Option<PathBuf>,
    /// The environment the service got, before `env` and pm's own variables: the
    /// starting caller's. A restart from the record (from cron, say) gets it again.
    /// Not read by [`Record::for_report`] (two thirds of a record, and never shown).
    #[serde(deserialize_with = "environment_unless_reporting")]
    pub environment: Vec<(String, String)>,
    pub pidfile: PathBuf,
    pub pidfile_by: PidfileBy,
    pub log: PathBuf,
    pub user: Option<String>,
    pub phase: Phase,
    pub pid: Option<i32>,
    pub pgid: Option<i32>,
    pub sid: Option<i32>,
    /// Field 22 of /proc/PID/stat (clock ticks after boot).
    pub start_time: Option<u64>,
    pub boot_id: Option<String>,
    /// RFC 3339 UTC with nanoseconds; also the sort key for "start order".
    pub started_at: Option<String>,
    /// When this start became `running` (its ready checks passed), RFC 3339 UTC with
    /// nanoseconds: what a stack's order is judged by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<String>,
    pub starter: Option<Starter>,
    /// Unique to one start (`PM_RUN_ID` in the service's environment, inherited by its
    /// children): what tells this start's orphans from another state directory's service
    /// of the same NAME.
    pub run_id: Option<String>,
    /// Processes outside the service's group that a stop in progress snapshotted, so a
    /// stop that was killed half-way can be finished by the next one.
    pub stopping: Vec<Proc>,
    /// This start's cgroup (absolute path), where the start has one: then the cgroup is
    /// the service (see the cgroup module).
    pub cgroup: Option<PathBuf>,
    /// `--no-cgroup`, remembered for restarts from the record.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_cgroup: bool,
    /// `--memory-max`, `--cpu-max`, `--pids-max`, remembered and applied on each start.
    #[serde(skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    /// Decoded once, valid when decoded: a record naming an unknown signal is corrupt.
    #[serde(with = "signal_name")]
    pub stop_signal: Signal,
    #[serde(with = "millis", rename = "stop_timeout_ms")]
    pub stop_timeout: Duration,
    #[serde(with = "opt_millis", rename = "grace_ms")]
    pub grace: Option<Duration>,
    pub ready: Vec<String>,
    #[serde(with = "millis", rename = "ready_timeout_ms")]
    pub ready_timeout: Duration,
    pub last_stop: Option<LastStop>,
    pub failure: Option<Failure>,
    /// `--restart` and its settings; `None` (the default): no monitor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    /// The monitor supervising this start, by identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<Proc>,
    /// How the supervised service last ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<Exit>,
    /// Restarts by the monitor since the service was started by hand.
    #[serde(skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// `--log-max-size`, `--log-keep`, `--log-timestamps`: the log is written by a logger
    /// process (see the logger module); `None`: the service writes it directly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_rotation: Option<Rotation>,
    /// In phase `backoff`: when the monitor starts the service again (RFC 3339 UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_at: Option<String>,
    /// Why the monitor stopped supervising on an error of its own (a full state
    /// directory, say), when it could still say so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor_end: Option<Failure>,
    /// Started by pm-up from a services file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<Member>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Default for Record {
    fn default() -> Self {
        Record {
            version: VERSION,
            name: String::new(),
            command: Vec::new(),
            cwd: PathBuf::from("/"),
            env: Vec::new(),
            exe: None,
            environment: Vec::new(),
            pidfile: PathBuf::new(),
            pidfile_by: PidfileBy::Pm,
            log: PathBuf::new(),
            user: None,
            phase: Phase::Stopped,
            pid: None,
            pgid: None,
            sid: None,
            start_time: None,
            boot_id: None,
            started_at: None,
            starter: None,
            run_id: None,
            stopping: Vec::new(),
            cgroup: None,
            no_cgroup: false,
            limits: Limits::default(),
            stop_signal: DEFAULT_STOP_SIGNAL,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            grace: None,
            ready: Vec::new(),
            ready_timeout: DEFAULT_READY_TIMEOUT,
            last_stop: None,
            failure: None,
            restart: None,
            monitor: None,
            last_exit: None,
            restarts: 0,
            restart_at: None,
            log_rotation: None,
            monitor_end: None,
            stack: None,
            ready_at: None,
        }
    }
}

std::thread_local! {
    /// Set while [`Record::for_report`] reads: the environment is skipped, not kept.
    static REPORTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn environment_unless_reporting<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<(String, String)>, D::Error> {
    if REPORTING.with(|r| r.get()) {
        // Checked as a list of string pairs (a record is corrupt either way), not kept.
        Vec::<(Str, Str)>::deserialize(d)?;
        return Ok(Vec::new());
    }
    Vec::deserialize(d)
}

/// A string, checked but not kept (no allocation).
struct Str;

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Str, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Str;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> std::result::Result<Str, E> {
                Ok(Str)
            }
        }
        d.deserialize_str(V)
    }
}

impl Record {
    /// Parses a record for a report (pm-status, pm-down's survey): as `serde_json`
    /// would, except that [`Record::environment`] is left empty.
    pub fn for_report(json: &[u8]) -> serde_json::Result<Record> {
        REPORTING.with(|r| r.set(true));
        let rec = serde_json::from_slice(json);
        REPORTING.with(|r| r.set(false));
        rec
    }
}

/// Phase changes: the one place a record's phase is written, each with the fields that
/// go with it, so no caller can leave a `running` record with a starter, or a `failed` one
/// without its reason.
impl Record {
    /// Spawned and recorded before it runs its command: `starting`, this start's process
    /// (PID = PGID = SID), on this boot; nothing of an earlier stop in progress.
    pub fn set_starting(&mut self, pid: i32, start_time: u64, boot_id: String) {
        self.phase = Phase::Starting;
        self.pid = Some(pid);
        self.pgid = Some(pid);
        self.sid = Some(pid);
        self.start_time = Some(start_time);
        self.boot_id = Some(boot_id);
        self.stopping.clear();
        self.ready_at = None;
    }

    /// Up: `running`, with the main process (which may be a daemon the launcher forked)
    /// and its live group and session, if they could be read.
    pub fn set_running(&mut self, main: Proc, group: Option<(i32, i32)>) {
        self.phase = Phase::Running;
        self.starter = None;
        self.ready_at = Some(now_rfc3339());
        self.pid = Some(main.pid);
        self.start_time = Some(main.start_time);
        if let Some((pgid, sid)) = group {
            self.pgid = Some(pgid);
            self.sid = Some(sid);
        }
    }

    /// The start failed (or the monitor gave up): `failed`, with the reason; nothing
    /// starts or supervises it any more.
    pub fn set_failed(&mut self, failure: Failure) {
        self.phase = Phase::Failed;
        self.starter = None;
        self.restart_at = None;
        self.failure = Some(failure);
    }

    /// Supervised and ended: `backoff` until `at`, when monitor `by` starts it again.
    pub fn set_backoff(&mut self, by: Proc, at: SystemTime) {
        self.phase = Phase::Backoff;
        self.monitor = Some(by);
        self.restart_at = Some(rfc3339(at));
    }

    /// Stopped by a stop that finished its work: `stopped`, nothing in progress.
    pub fn set_stopped(&mut self) {
        self.phase = Phase::Stopped;
        self.starter = None;
        self.stopping.clear();
        self.restart_at = None;
    }

    /// No process was started after all (the spawn failed before exec).
    pub fn forget_process(&mut self) {
        (self.pid, self.pgid, self.sid, self.start_time) = (None, None, None, None);
    }

    /// The environment entry that every process of this start carries. Records written
    /// before run ids existed fall back to the NAME.
    pub fn marker(&self) -> String {
        match &self.run_id {
            Some(id) => format!("{RUN_ID_VAR}={id}"),
            None => format!("PM_NAME={}", self.name),
        }
    }

    /// `started_at` parsed, for ordering; records never started sort first.
    pub fn started(&self) -> Option<SystemTime> {
        self.started_at.as_deref().and_then(parse_rfc3339)
    }
}

/// Signals in a record: by short name (`TERM`), as pm always wrote them.
mod signal_name {
    use nix::sys::signal::Signal;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sig: &Signal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(crate::signal::name(*sig))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Signal, D::Error> {
        let text = String::deserialize(d)?;
        crate::signal::parse(&text).map_err(D::Error::custom)
    }
}

/// Durations in a record: whole milliseconds.
pub(crate) mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::millis::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// Now, as RFC 3339 UTC with nanoseconds.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// Parses a time pm wrote (RFC 3339 UTC).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(s).ok()
}

/// A time as RFC 3339 UTC with nanoseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_unknown_fields() {
        let r = Record {
            name: "web".into(),
            command: vec!["sleep".into(), "100".into()],
            env: vec![("A".into(), "1".into())],
            pid: Some(4242),
            phase: Phase::Running,
            started_at: Some(now_rfc3339()),
            ..Record::default()
        };
        let mut v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["version"], VERSION);
        assert_eq!(v["phase"], "running");
        v["from_the_future"] = serde_json::json!({"x": 1});
        let back: Record = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        assert!(back.started().is_some());
    }

    #[test]
    fn missing_fields_default() {
        let r: Record = serde_json::from_str(r#"{"version":1,"name":"x"}"#).unwrap();
        assert_eq!(r.stop_signal, Signal::SIGTERM);
        // The same JSON as always: a name and milliseconds.
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["stop_signal"], "TERM");
        assert_eq!(v["stop_timeout_ms"], 10_000);
        let r: Record = serde_json::from_str(
            r#"{"version":1,"name":"x","stop_signal":"SIGQUIT","grace_ms":250}"#,
        )
        .unwrap();
        assert_eq!(r.stop_signal, Signal::SIGQUIT);
        assert_eq!(r.grace, Some(Duration::from_millis(250)));
        assert!(serde_json::from_str::<Record>(r#"{"name":"x","stop_signal":"NOPE"}"#).is_err());
        assert_eq!(r.phase, Phase::Stopped);
        assert!(r.pid.is_none());
    }
}
