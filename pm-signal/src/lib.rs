//! pm-signal: send a signal to a running service (reload nginx with HUP, php-fpm with
//! USR2) through pm's identity gate, never to a PID that may have been reused.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use pm_core::deliver::send;
use pm_core::report::say;
use pm_core::signal::Signal;
use pm_core::{cli, Code, StateDir};

const TOOL: &str = "pm-signal";

const EXAMPLES: &str = "\
Examples:
  Reload nginx (its master re-reads the configuration, same PID):
    pm-signal -s HUP nginx

  Reload php-fpm gracefully:
    pm-signal -s USR2 php-fpm

  Every process of a service (all of its cgroup, or the leader's process group):
    pm-signal -s USR1 --group worker";

/// Send a signal to running services: their main process, or with --group every process
/// of each; never to a process whose identity does not match the record.
#[derive(Debug, Parser)]
#[command(name = "pm-signal", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Services to signal, in this order (@TAG: every recorded service with that tag)
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,

    #[command(flatten)]
    pub state: pm_core::cli::StateDirArg,

    /// Signal to send (a name such as HUP or SIGHUP, or a number)
    #[arg(long, short = 's', value_name = "SIG", default_value = "HUP",
          value_parser = cli::SignalArg, hide_possible_values = true)]
    pub signal: Signal,

    /// Every process of the service: its whole cgroup, or without one the members of the
    /// main process's group; not just the main process
    #[arg(long, short = 'g')]
    pub group: bool,

    /// PID file of a service pm did not start (template; default: $PM_PIDFILE)
    #[arg(long, value_name = "TEMPLATE")]
    pub pidfile: Option<String>,
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let template = pm_core::name::pidfile_template(cli.pidfile.as_deref())?;
    let sd = StateDir::resolve(cli.state.dir(), false)?;
    let names = sd.targets(&cli.names)?;
    let mut codes = Vec::new();
    for name in &names {
        match send(&sd, name, cli.signal, cli.group, template.as_deref()) {
            Ok(d) => {
                say(TOOL, name.as_str(), d.describe(cli.signal));
                codes.push(d.code());
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
