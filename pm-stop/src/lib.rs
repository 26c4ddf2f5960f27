//! pm-stop: stop services gracefully, then certainly; never the wrong process.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use pm_core::report::say;
use pm_core::signal::Signal;
use pm_core::stop::{forget_name, stop_name, Options};
use pm_core::{Code, StateDir};

const TOOL: &str = "pm-stop";

const EXAMPLES: &str = "\
Examples:
  Stop a service with its recorded signal and timeout:
    pm-stop web

  Stop several, in this order, with SIGQUIT and at most 30 s before SIGKILL:
    pm-stop --signal QUIT --timeout 30s web worker

  Stop a service and forget it (pm-status no longer lists it; the log stays):
    pm-stop --forget old-worker

  Stop a php-fpm that pm did not start, from its own PID file:
    PM_PIDFILE='/run/php/php{instance}-fpm.pid' pm-stop php-fpm@8.2";

/// Stop services: send the stop signal to the whole group, wait until every process is
/// gone, escalate to SIGKILL after the timeout. (To send a signal without stopping, such
/// as a reload: pm-signal.)
#[derive(Debug, Parser)]
#[command(name = "pm-stop", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Services to stop, in this order (@TAG: every recorded service with that tag)
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,

    #[command(flatten)]
    pub state: pm_core::cli::StateDirArg,

    /// Signal to send first [default: the recorded stop signal, else TERM]
    #[arg(long, short = 's', value_name = "SIG", value_parser = pm_core::cli::SignalArg, hide_possible_values = true)]
    pub signal: Option<pm_core::signal::Signal>,

    /// Time to wait before SIGKILL [default: the recorded stop timeout, else 10s]
    #[arg(long, short = 't', value_name = "DURATION", value_parser = pm_core::cli::duration)]
    pub timeout: Option<std::time::Duration>,

    /// Never send SIGKILL; exit 1 if the service outlives the timeout
    #[arg(long)]
    pub no_kill: bool,

    /// PID file of a service pm did not start (template; default: $PM_PIDFILE)
    #[arg(long, value_name = "TEMPLATE")]
    pub pidfile: Option<String>,

    /// Then forget the service: remove its record and its lock (its log stays), so it is
    /// no longer listed; for a typo or a service that is gone for good
    #[arg(long)]
    pub forget: bool,
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let opts = Options {
        pidfile_template: pm_core::name::pidfile_template(cli.pidfile.as_deref())?,
        ..Options {
            signal: cli.signal,
            timeout: cli.timeout,
            no_kill: cli.no_kill,
            ..Options::default()
        }
    };
    let sd = StateDir::resolve(cli.state.dir(), true)?;
    let names = sd.targets(&cli.names)?;
    pm_core::stop::report_interrupts(TOOL)?;
    // `pm-stop --signal HUP nginx` is a start-stop-daemon habit for a reload: it waits for
    // an exit that never comes, then SIGKILLs.
    if let Some(sig) = cli.signal.filter(|s| {
        matches!(
            s,
            Signal::SIGHUP | Signal::SIGUSR1 | Signal::SIGUSR2 | Signal::SIGWINCH
        )
    }) {
        let n = pm_core::signal::name(sig);
        pm_core::report::line(format!(
            "{TOOL}: warning: SIG{n} usually does not stop a service, so pm-stop will SIGKILL it after the timeout; to send it without stopping: pm-signal -s {n} NAME"
        ));
    }
    let mut codes = Vec::new();
    for name in &names {
        let done = if cli.forget {
            forget_name(&sd, name, &opts, TOOL)
        } else {
            stop_name(&sd, name, &opts, TOOL).map(|r| (r, None))
        };
        match done {
            Ok((report, forgot)) => {
                let mut line = report.describe();
                if let Some(log) = forgot {
                    line.push_str(&format!("; forgotten (its log stays: {})", log.display()));
                }
                say(TOOL, name.as_str(), line);
                codes.push(report.code());
            }
            Err(e) => {
                say(TOOL, name.as_str(), &e);
                codes.push(Code::Failure);
            }
        }
        // A typo'd NAME leaves no NAME.lock behind.
        sd.tidy_lock(name);
    }
    Ok(Code::worst(codes).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
