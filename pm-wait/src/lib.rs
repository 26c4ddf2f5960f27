//! pm-wait: wait until services are ready, stopped or exited, woken by the kernel (record
//! changes, process exits), not by a timer. The command line only: the wait is
//! [`pm_core::watch::wait`].

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use pm_core::report::say;
use pm_core::watch::{self, Until, Waited};
use pm_core::{signal, Code, StateDir};

const TOOL: &str = "pm-wait";

const EXAMPLES: &str = "\
Examples:
  Wait until web is up (started elsewhere, e.g. by pm-up in another shell):
    pm-wait web

  Wait at most 30 s for db to be stopped:
    pm-wait --for stopped --timeout 30s db

  In a script: go on once every service tagged front has ended:
    pm-wait --for exited @front && echo done";

/// Wait until services are ready (running), stopped, or exited; exit 1 if the timeout
/// comes first.
#[derive(Debug, Parser)]
#[command(name = "pm-wait", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Services to wait for, all of them (@TAG: every recorded service with that tag)
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,

    /// ready: running (started, every ready check passed); stopped: nothing runs and
    /// nothing restarts it (stopped, dead, failed, or no record); exited: as stopped, or
    /// ended and waiting for its monitor's restart (backoff)
    #[arg(long = "for", value_name = "STATE", default_value = "ready",
          value_parser = ["ready", "stopped", "exited"])]
    pub until: String,

    /// Give up after this long (exit 1) [default: wait as long as it takes]
    #[arg(long, short = 't', value_name = "DURATION", value_parser = pm_core::cli::duration)]
    pub timeout: Option<Duration>,

    #[command(flatten)]
    pub state: pm_core::cli::StateDirArg,
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let until = Until::parse(&cli.until).unwrap_or(Until::Ready);
    let sd = StateDir::resolve(cli.state.dir(), false)?;
    let names = sd.targets(&cli.names)?;
    let interrupts = signal::interrupt_fd()?;
    match watch::wait(&sd, &names, until, cli.timeout, &interrupts)? {
        Waited::Reached => Ok(Code::Ok.into()),
        Waited::Interrupted(sig) => Ok(signal::die_by(sig)),
        Waited::TimedOut(left) => {
            let after = cli
                .timeout
                .map(pm_core::duration::elapsed)
                .unwrap_or_default();
            for (n, state) in left {
                say(
                    TOOL,
                    n.as_str(),
                    format!("still {} after {after}", state.as_str()),
                );
            }
            Ok(Code::Failure.into())
        }
    }
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
