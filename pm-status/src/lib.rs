//! pm-status: the state of services, decided from the record, the PID file and the
//! kernel; a table for people, `--json` for jq, LSB exit codes for scripts.

use std::io::{BufWriter, IsTerminal, Write};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Result;
use clap::Parser;
use pm_core::record::rfc3339;
use pm_core::record::Record;
use pm_core::report::out;
use pm_core::state::start_order;
use pm_core::status::{report_record, Inspection, State};
use pm_core::{duration, Code, Name, StateDir};
use serde::Serialize;
use serde_json::Value;

const EXAMPLES: &str = "\
Examples:
  Every recorded service:
    pm-status

  The names of the running ones:
    pm-status --json | jq -r '.[] | select(.state==\"running\") | .name'

  In a script or Makefile:
    if pm-status -q db; then echo db is up; fi

  Follow a service's log:
    tail -F \"$(pm-status --log web)\"

  Services pm did not start, through their own PID files:
    PM_PIDFILE='/run/php/php{instance}-fpm.pid' pm-status php-fpm@8.2 php-fpm@8.3";

/// Report the state of services: running, starting, stopped, dead or unknown.
#[derive(Debug, Parser)]
#[command(name = "pm-status", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Services to report, in this order (@TAG: every recorded service with that tag)
    /// [default: every recorded service, in start order]
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,

    #[command(flatten)]
    pub state: pm_core::cli::StateDirArg,

    /// Print a JSON array, one object per service
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,

    /// Print nothing; only the exit code tells
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Also show how each service is tracked (cgroup or group) and its whole-service
    /// figures: processes, memory and CPU time of every process in its cgroup
    #[arg(long, short = 'l', conflicts_with_all = ["json", "quiet"])]
    pub long: bool,

    /// Print each service's log path, one per line, e.g. tail -F "$(pm-status --log web)"
    #[arg(long, conflicts_with_all = ["json", "quiet"])]
    pub log: bool,

    /// PID file for names without a record (template; default: $PM_PIDFILE)
    #[arg(long, value_name = "TEMPLATE")]
    pub pidfile: Option<String>,

    /// Print recorded names, one per line (for shell completion)
    #[arg(long, hide = true)]
    pub complete_names: bool,
}

/// The records to report, each read once: every recorded one in start order when no NAME
/// is given, else the NAMEs in the order given (a NAME without a record reads as `None`).
fn records(
    sd: &StateDir,
    names: &[String],
) -> Result<Vec<(Name, pm_core::Result<Option<Record>>)>> {
    if names.is_empty() {
        return Ok(sd
            .list_for_report()?
            .into_iter()
            .map(|(n, r)| (n, r.map(Some)))
            .collect());
    }
    let names = sd.targets(names)?;
    Ok(names
        .into_iter()
        .map(|n| {
            let r = sd.read_record(&n);
            (n, r)
        })
        .collect())
}

/// Every service to report, looked at on a few threads, each made into `R` by `show`
/// there: with no NAME every recorded one, in start order; else the NAMEs in the order
/// given (a NAME without a record is looked at as unknown).
fn look_at<R: Send>(
    sd: &StateDir,
    names: &[String],
    template: Option<&str>,
    show: impl Fn(Inspection) -> R + Sync,
) -> Result<Vec<R>> {
    let look = |n: Name| {
        let r = sd.read_record_for_report(&n);
        let order = match &r {
            Ok(None) if names.is_empty() => return None, // removed while listing
            Ok(r) => start_order(&n, r.as_ref()),
            Err(_) => start_order(&n, None),
        };
        Some((order, show(report_record(sd, &n, template, r))))
    };
    if !names.is_empty() {
        let seen = pm_core::parallel::map(sd.targets(names)?, look);
        return Ok(seen.into_iter().flatten().map(|(_, r)| r).collect());
    }
    // Each record is read and looked at in one step: no wait for the last read before
    // the first look, and the start order is known once all are in.
    let mut seen: Vec<_> = pm_core::parallel::map(sd.record_names()?, look)
        .into_iter()
        .flatten()
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(seen.into_iter().map(|(_, r)| r).collect())
}

/// A service's pretty JSON, indented as an element of the array.
fn indented(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for (j, line) in text.lines().enumerate() {
        if j > 0 {
            out.push('\n');
        }
        out.push_str("  ");
        out.push_str(line);
    }
    out
}

/// `--log`: the recorded log path of each NAME (every recorded service without NAMEs);
/// a NAME without a record is said on stderr and makes the exit code 4.
fn print_logs(sd: &StateDir, names: &[String]) -> Result<ExitCode> {
    let records = records(sd, names)?;
    let mut code = Code::Ok;
    let mut text = String::new();
    for (name, rec) in records {
        match rec {
            Ok(Some(r)) => text.push_str(&format!("{}\n", r.log.display())),
            Ok(None) => {
                pm_core::report::say("pm-status", name.as_str(), "unknown: no record");
                code = Code::first_not_ok([code, Code::Unknown]);
            }
            Err(e) => {
                pm_core::report::say("pm-status", name.as_str(), e);
                code = Code::first_not_ok([code, Code::Failure]);
            }
        }
    }
    out(&text)?;
    Ok(code.into())
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let sd = StateDir::resolve(cli.state.dir(), false)?;
    if cli.complete_names {
        let names: String = sd
            .list_for_report()?
            .iter()
            .map(|(n, _)| format!("{n}\n"))
            .collect();
        out(&names)?;
        return Ok(Code::Ok.into());
    }
    if cli.log {
        return print_logs(&sd, &cli.names);
    }
    let template = pm_core::name::pidfile_template(cli.pidfile.as_deref())?;
    if cli.json {
        // Each service made into its text where it was looked at, on the threads that
        // looked: this thread only writes.
        let seen = look_at(&sd, &cli.names, template.as_deref(), |ins| {
            let text = serde_json::to_string_pretty(&to_json(&ins));
            (ins.state.code(), text.map(|t| indented(&t)))
        })?;
        let stdout = std::io::stdout();
        let mut w = BufWriter::new(stdout.lock());
        let written = (|| -> std::io::Result<()> {
            for (i, (_, text)) in seen.iter().enumerate() {
                let text = text
                    .as_ref()
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                w.write_all(if i == 0 { b"[\n" } else { b",\n" })?;
                w.write_all(text.as_bytes())?;
            }
            w.write_all(if seen.is_empty() { b"[]\n" } else { b"\n]\n" })?;
            w.flush()
        })();
        match written {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
            _ => {}
        }
        return Ok(Code::first_not_ok(seen.into_iter().map(|(c, _)| c)).into());
    }
    let seen: Vec<Inspection> = look_at(&sd, &cli.names, template.as_deref(), |i| i)?;
    if !cli.quiet {
        let width = std::io::stdout()
            .is_terminal()
            .then(|| pm_core::terminal_width(std::os::fd::AsFd::as_fd(&std::io::stdout())))
            .flatten();
        out(&table(&seen, width, cli.long))?;
    }
    Ok(Code::first_not_ok(seen.iter().map(|i| i.state.code())).into())
}

/// The PID to show: the live process; for a dead service the one recorded (gone or reused,
/// as the note says). A stopped service has none: pm-stop saw that process end, and its
/// PID may belong to anything by now.
fn shown_pid(i: &Inspection) -> Option<i32> {
    match i.state {
        State::Stopped => None,
        _ => i.pid(),
    }
}

fn uptime_secs(i: &Inspection) -> Option<u64> {
    i.live.as_ref().map(|(s, _)| s.uptime().as_secs())
}

/// One service as JSON. Field names are stable: add, never rename.
pub fn to_json(i: &Inspection) -> Json<'_> {
    let r = i.record.as_ref();
    let live = i.live.as_ref().map(|(s, _)| s);
    let started_at = match (live, r.and_then(|r| r.started())) {
        (Some(s), None) => Some(s.started_at()),
        (_, t) => t,
    }
    .map(rfc3339_seconds);
    // One look at the monitor (a pidfd and /proc) for both fields.
    let supervised = r.is_some_and(pm_core::monitor::is_supervised);
    let value = |v: Option<Result<Value, serde_json::Error>>| v.map(|v| v.unwrap_or(Value::Null));
    let stack = r.and_then(|r| r.stack.as_ref());
    Json {
        cgroup: r
            .and_then(|r| r.cgroup.as_ref())
            .map(|p| p.display().to_string()),
        command: r.map(|r| r.command.as_slice()),
        cpu_secs: live.map(|s| (s.cpu_secs() * 100.0).round() / 100.0),
        cwd: r.map(|r| r.cwd.display().to_string()),
        exe: r
            .and_then(|r| r.exe.as_ref())
            .map(|p| p.display().to_string()),
        failure: value(r.and_then(|r| r.failure.as_ref()).map(serde_json::to_value)),
        last_exit: r.and_then(|r| r.last_exit.as_ref()).map(|e| LastExit {
            at: humantime_seconds(e.at.clone()),
            code: e.code,
            core: e.core,
            signal: e.signal.clone(),
        }),
        last_stop: value(
            r.and_then(|r| r.last_stop.as_ref())
                .map(serde_json::to_value),
        ),
        limits: value(
            r.filter(|r| !r.limits.is_empty())
                .map(|r| serde_json::to_value(&r.limits)),
        ),
        log: r.map(|r| r.log.display().to_string()),
        log_error: i.log_status.as_deref(),
        monitor_pid: r
            .filter(|_| supervised)
            .and_then(|r| r.monitor.map(|m| m.pid)),
        name: i.name.as_str(),
        note: i.note.as_deref(),
        pgid: live
            .map(|s| s.pgrp)
            .or_else(|| r.and_then(|r| r.pgid))
            .filter(|_| i.state != State::Stopped),
        pid: shown_pid(i),
        pidfile: i.pidfile.as_ref().map(|p| p.display().to_string()),
        ready_at: r.and_then(|r| r.ready_at.as_deref()),
        restart: r
            .and_then(|r| r.restart.as_ref())
            .map(|x| x.policy.as_str()),
        restarts: r.map(|r| r.restarts),
        rss_bytes: live.map(|s| s.rss_bytes()),
        stack: stack.map(|m| m.file.display().to_string()),
        started_at,
        state: i.state.as_str(),
        stop_signal: r.map(|r| pm_core::signal::name(r.stop_signal)),
        stop_timeout_secs: r.map(|r| r.stop_timeout.as_secs_f64()),
        supervised,
        tags: stack.map(|m| m.tags.as_slice()),
        tracking: r.map(tracking),
        uptime_secs: uptime_secs(i),
        usage: usage(i).map(|u| UsageJson {
            cpu_secs: (u.cpu_secs * 100.0).round() / 100.0,
            memory_bytes: u.memory_bytes,
            memory_from: u.memory_from,
            procs: u.procs,
        }),
        user: r.and_then(|r| r.user.as_deref()),
    }
}

/// One service in `--json`, written straight from the inspection (no tree of values in
/// between: 1000 services made that most of the allocation). Fields in name order, as
/// the output has always had them.
#[derive(Serialize)]
pub struct Json<'a> {
    cgroup: Option<String>,
    command: Option<&'a [String]>,
    cpu_secs: Option<f64>,
    cwd: Option<String>,
    exe: Option<String>,
    failure: Option<Value>,
    last_exit: Option<LastExit>,
    last_stop: Option<Value>,
    limits: Option<Value>,
    log: Option<String>,
    log_error: Option<&'a str>,
    monitor_pid: Option<i32>,
    name: &'a str,
    note: Option<&'a str>,
    pgid: Option<i32>,
    pid: Option<i32>,
    pidfile: Option<String>,
    ready_at: Option<&'a str>,
    restart: Option<&'a str>,
    restarts: Option<u32>,
    rss_bytes: Option<u64>,
    stack: Option<String>,
    started_at: Option<String>,
    state: &'a str,
    stop_signal: Option<&'a str>,
    stop_timeout_secs: Option<f64>,
    supervised: bool,
    tags: Option<&'a [String]>,
    tracking: Option<&'a str>,
    uptime_secs: Option<u64>,
    usage: Option<UsageJson>,
    user: Option<&'a str>,
}

#[derive(Serialize)]
struct LastExit {
    at: String,
    code: Option<i32>,
    core: bool,
    signal: Option<String>,
}

#[derive(Serialize)]
struct UsageJson {
    cpu_secs: f64,
    memory_bytes: u64,
    memory_from: &'static str,
    procs: usize,
}

/// `cgroup` when the start has a cgroup of its own, else `group` (process group, session
/// and descendants).
fn tracking(r: &Record) -> &'static str {
    if r.cgroup.is_some() {
        "cgroup"
    } else {
        "group"
    }
}

/// Whole-service figures, from the start's cgroup (none without one, or once stopped).
fn usage(i: &Inspection) -> Option<pm_core::cgroup::Usage> {
    i.usage.clone()
}

fn rfc3339_seconds(t: SystemTime) -> String {
    // Whole seconds with a Z: what most JSON consumers expect.
    humantime_seconds(rfc3339(t))
}

fn humantime_seconds(s: String) -> String {
    match s.split_once('.') {
        Some((head, _)) => format!("{head}Z"),
        None => s,
    }
}

fn ago(at: &str) -> String {
    match pm_core::record::parse_rfc3339(at) {
        Some(t) => SystemTime::now()
            .duration_since(t)
            .map(|d| format!("{} ago", duration::short(d)))
            .unwrap_or_else(|_| at.to_string()),
        None => at.to_string(),
    }
}

/// The extra words after the command: why dead, how it was stopped.
fn detail(i: &Inspection) -> Option<String> {
    let r = i.record.as_ref();
    match i.state {
        State::Dead => {
            let since = r
                .and_then(|r| r.failure.as_ref())
                .map(|f| format!(" since {}", ago(&f.at)))
                .unwrap_or_default();
            Some(format!(
                "[dead{since}: {}]",
                i.note.as_deref().unwrap_or("process gone")
            ))
        }
        State::Stopped => r.and_then(|r| r.last_stop.as_ref()).map(|s| {
            if s.signal.is_empty() {
                return format!("[{} found it not running {}]", s.by, ago(&s.at));
            }
            format!(
                "[stopped {} by SIG{}{}]",
                ago(&s.at),
                s.signal,
                if s.escalated {
                    ", escalated to SIGKILL"
                } else {
                    ""
                }
            )
        }),
        State::Unknown => i.note.as_ref().map(|n| format!("[{n}]")),
        State::Backoff => Some(format!("[{}]", i.note.as_deref().unwrap_or("restarting"))),
        State::Failed => {
            let since = r
                .and_then(|r| r.failure.as_ref())
                .map(|f| format!(" {}", ago(&f.at)))
                .unwrap_or_default();
            Some(format!(
                "[failed{since}: {}]",
                i.note.as_deref().unwrap_or("gave up")
            ))
        }
        State::Running | State::Starting => {
            let log = i.log_status.as_ref().map(|e| format!("[log: {e}]"));
            let supervision = (|| {
                let r = r.filter(|r| r.restart.is_some())?;
                if !pm_core::monitor::is_supervised(r) {
                    return Some("[unsupervised: its monitor is gone]".into());
                }
                let last = r.last_exit.as_ref()?;
                Some(format!(
                    "[restarted {} time{}; last {} {}]",
                    r.restarts,
                    if r.restarts == 1 { "" } else { "s" },
                    last.describe(),
                    ago(&last.at)
                ))
            })();
            match (log, supervision) {
                (Some(l), Some(s)) => Some(format!("{l} {s}")),
                (l, s) => l.or(s),
            }
        }
    }
}

/// The human table: NAME STATE PID UPTIME COMMAND (with `long`, TRACK PROCS MEM CPU
/// before COMMAND), the last column cut to `width` when printing to a terminal.
pub fn table(seen: &[Inspection], width: Option<usize>, long: bool) -> String {
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = seen
        .iter()
        .map(|i| {
            let cmd = i
                .record
                .as_ref()
                .map(|r| shell_words(&r.command))
                .unwrap_or_else(|| "-".into());
            let cmd = match detail(i) {
                Some(d) => format!("{cmd}  {d}"),
                None => cmd,
            };
            let mut row = vec![
                i.name.to_string(),
                i.state.as_str().to_string(),
                shown_pid(i).map_or_else(dash, |p| p.to_string()),
                uptime_secs(i)
                    .map_or_else(dash, |s| duration::short(std::time::Duration::from_secs(s))),
            ];
            if long {
                let live = i.live.as_ref().map(|(s, _)| s);
                let u = usage(i);
                row.push(i.record.as_ref().map_or_else(dash, |r| tracking(r).into()));
                row.push(u.as_ref().map_or_else(dash, |u| u.procs.to_string()));
                let mem = u
                    .as_ref()
                    .map(|u| u.memory_bytes)
                    .or(live.map(|s| s.rss_bytes()));
                row.push(mem.map_or_else(dash, pm_core::cgroup::human_bytes));
                let cpu = u
                    .as_ref()
                    .map(|u| u.cpu_secs)
                    .or(live.map(|s| s.cpu_secs()));
                row.push(cpu.map_or_else(dash, |c| format!("{c:.2}s")));
            }
            row.push(cmd);
            row
        })
        .collect();
    let mut header: Vec<String> = ["NAME", "STATE", "PID", "UPTIME"]
        .map(String::from)
        .to_vec();
    if long {
        header.extend(["TRACK", "PROCS", "MEM", "CPU"].map(String::from));
    }
    header.push("COMMAND".into());
    let n = header.len() - 1;
    // Text columns are left-aligned, figures right-aligned.
    let left = |c: usize| c < 2 || (long && c == 4);
    let mut w = vec![0usize; n];
    for r in std::iter::once(&header).chain(&rows) {
        for c in 0..n {
            w[c] = w[c].max(r[c].chars().count());
        }
    }
    let mut text = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for c in 0..n {
            if left(c) {
                line.push_str(&format!("{:<w$}  ", r[c], w = w[c]));
            } else {
                line.push_str(&format!("{:>w$}  ", r[c], w = w[c]));
            }
        }
        let room = width.map(|w| w.saturating_sub(line.chars().count()));
        match room {
            Some(room) if r[n].chars().count() > room => {
                line.extend(r[n].chars().take(room.saturating_sub(1)));
                line.push('…');
            }
            _ => line.push_str(&r[n]),
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// Joins argv for display, quoting words a shell would split.
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
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
    fn quotes_only_what_needs_it() {
        let argv: Vec<String> = ["sh", "-c", "echo hi", "it's"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(shell_words(&argv), "sh -c 'echo hi' 'it'\\''s'");
    }

    #[test]
    fn timestamps_drop_fractions() {
        assert_eq!(
            humantime_seconds("2026-01-02T03:04:05.123456789Z".into()),
            "2026-01-02T03:04:05Z"
        );
    }
}
