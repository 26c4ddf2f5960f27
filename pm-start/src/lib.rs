//! pm-start: spawn a command detached in a new session, log to a file, record it, and
//! return once it is up ("up": not exited within `--grace`, and every `--ready` check
//! passed). The command line only: the start itself is [`pm_core::start`].

// clap turns the doc comments into --help text, where `[HOST:]PORT` must read as written.
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use nix::sys::signal::Signal;
use pm_core::cli;
use pm_core::start::Request;
use pm_core::StateDir;

pub use pm_core::start::internal_entry;

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
    pm-start web

  Start every service of a stack tagged front again, needs first:
    pm-start @front";

/// Start a service detached, log its output, and wait until it is up.
#[derive(Debug, Parser)]
#[command(name = "pm-start", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Service name: 1-128 of A-Z a-z 0-9 . _ @ - (service@instance for templates).
    /// Without COMMAND, @TAG starts every recorded service with that tag again from its
    /// record, each after what its record says it needs
    #[arg(value_name = "NAME|@TAG")]
    pub name: String,

    /// Command and arguments (no shell). Omit to start NAME again from its record.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,

    #[command(flatten)]
    pub state: pm_core::cli::StateDirArg,

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
    /// SIZE (e.g. 10M): LOG.1, LOG.2, …; lines are never split; output the log cannot take
    /// (a full disk) is held and retried, never lost silently (pm-status shows log_error);
    /// 0: no rotation; remembered
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

fn max_restarts(s: &str) -> Result<(u32, Option<Duration>), String> {
    pm_core::monitor::parse_max_restarts(s).map_err(|e| e.to_string())
}

impl Cli {
    /// The start this command line asks for, of service `name`.
    pub fn request(&self, name: &str) -> Request {
        Request {
            name: name.to_string(),
            command: self.command.clone(),
            state_dir: self.state.state_dir.clone(),
            pidfile: self.pidfile.clone(),
            log: self.log.clone(),
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            user: self.user.clone(),
            stop_signal: self.stop_signal,
            stop_timeout: self.stop_timeout,
            grace: self.grace,
            ready: self.ready.clone(),
            ready_timeout: self.ready_timeout,
            print_pid: self.print_pid,
            no_cgroup: self.no_cgroup,
            memory_max: self.memory_max,
            cpu_max: self.cpu_max.clone(),
            pids_max: self.pids_max,
            restart: self.restart.clone(),
            restart_delay: self.restart_delay,
            max_restarts: self.max_restarts,
            log_max_size: self.log_max_size,
            log_keep: self.log_keep,
            log_timestamps: self.log_timestamps,
            stack: None,
            replace: false,
        }
    }
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    // With a COMMAND, `@x` can only be a NAME: a command is not given to a set.
    if !cli.name.starts_with('@') || !cli.command.is_empty() {
        let ended =
            pm_core::start::run(&cli.request(&cli.name)).with_context(|| cli.name.clone())?;
        return Ok(ended.exit());
    }
    let sd = StateDir::resolve(cli.state.dir(), true)?;
    let names = sd.needs_first(sd.targets(std::slice::from_ref(&cli.name))?);
    let ended = pm_core::start::run_each("pm-start", &names, |name| {
        pm_core::start::run(&cli.request(name.as_str()))
    });
    Ok(ended.exit())
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
