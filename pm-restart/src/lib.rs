//! pm-restart: stop a service and start it again from its record, the stop and the start
//! under one hold of the name's lock, so no other start can run in between. The command
//! line only: the start is [`pm_core::start::run`] with `replace`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use pm_core::start::{run_each, Request};
use pm_core::StateDir;

const EXAMPLES: &str = "\
Examples:
  Restart web with the command, options and environment it was started with:
    pm-restart web

  Restart every service tagged front, one after the other:
    pm-restart @front";

/// Restart services: stop each (as pm-stop does) and start it again from its record (as
/// `pm-start NAME` does), holding its lock from the stop to the end of the start. A
/// service that is not running is simply started.
#[derive(Debug, Parser)]
#[command(name = "pm-restart", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Services to restart, in this order (@TAG: every recorded service with that tag)
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,

    #[command(flatten)]
    pub state: pm_core::cli::StateDirArg,
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let sd = StateDir::resolve(cli.state.dir(), true)?;
    let names = sd.targets(&cli.names)?;
    let ended = run_each("pm-restart", &names, |name| {
        // A supervised service's monitor goes first, outside the lock it would need to
        // restart the service (as pm-stop does it).
        if let Some(rec) = sd.read_record(name)? {
            pm_core::monitor::stop_monitor(&rec, rec.stop_timeout)?;
        }
        let req = Request {
            replace: true,
            ..Request::again(name, sd.path())
        };
        pm_core::start::run(&req)
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
}
