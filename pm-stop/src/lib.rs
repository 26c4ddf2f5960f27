//! pm-stop: stop services gracefully, then certainly; never the wrong process.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use pm_core::report::say;
use pm_core::stop::{stop_name, Options};
use pm_core::{Code, Name, StateDir};

const TOOL: &str = "pm-stop";

const EXAMPLES: &str = "\
Examples:
  Stop a service with its recorded signal and timeout:
    pm-stop web

  Stop several, in this order, with SIGQUIT and at most 30 s before SIGKILL:
    pm-stop --signal QUIT --timeout 30s web worker

  Stop a php-fpm that pm did not start, from its own PID file:
    PM_PIDFILE='/run/php/php{instance}-fpm.pid' pm-stop php-fpm@8.2";

/// Stop services: send the stop signal to the whole group, wait until every process is
/// gone, escalate to SIGKILL after the timeout.
#[derive(Debug, Parser)]
#[command(name = "pm-stop", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Services to stop, in this order
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,

    /// State directory [default: $PM_STATE_DIR, $XDG_RUNTIME_DIR/pm, /run/pm as root, else ${TMPDIR:-/tmp}/pm-$UID]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Signal to send first [default: the recorded stop signal, else TERM]
    #[arg(long, short = 's', value_name = "SIG")]
    pub signal: Option<String>,

    /// Time to wait before SIGKILL [default: the recorded stop timeout, else 10s]
    #[arg(long, short = 't', value_name = "DURATION")]
    pub timeout: Option<String>,

    /// Never send SIGKILL; exit 1 if the service outlives the timeout
    #[arg(long)]
    pub no_kill: bool,

    /// PID file of a service pm did not start (template; default: $PM_PIDFILE)
    #[arg(long, value_name = "TEMPLATE")]
    pub pidfile: Option<String>,
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let names = cli
        .names
        .iter()
        .map(|n| Name::new(n))
        .collect::<Result<Vec<_>, _>>()?;
    let opts = Options {
        pidfile_template: pm_core::name::pidfile_template(cli.pidfile.as_deref())?,
        ..Options::parse(cli.signal.as_deref(), cli.timeout.as_deref(), cli.no_kill)?
    };
    let sd = StateDir::resolve(cli.state_dir.as_deref(), true)?;
    let mut codes = Vec::new();
    for name in &names {
        match stop_name(&sd, name, &opts, TOOL) {
            Ok(report) => {
                say(TOOL, name.as_str(), report.describe());
                codes.push(report.code());
            }
            Err(e) => {
                say(TOOL, name.as_str(), &e);
                codes.push(Code::Failure);
            }
        }
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
