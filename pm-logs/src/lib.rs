//! pm-logs: the logs of several services in one stream, each line prefixed with its
//! service's name; `-f` follows them across rotations. The command line only: the reading
//! is [`pm_core::tail::show`].

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use pm_core::report::say;
use pm_core::{signal, Code, StateDir};

const EXAMPLES: &str = "\
Examples:
  The last 10 lines of every service's log, then follow them all:
    pm-logs -f

  Everything web and db have logged:
    pm-logs --lines all web db

  Follow the services tagged front:
    pm-logs -f @front";

/// Print services' logs, each line prefixed with the service's name; with -f, follow them
/// (across pm's log rotations, without losing or repeating a line) until interrupted.
#[derive(Debug, Parser)]
#[command(name = "pm-logs", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Services whose logs to print (@TAG: every recorded service with that tag)
    /// [default: every recorded service, in start order]
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,

    /// Follow: print lines as they are written, until interrupted
    #[arg(long, short = 'f')]
    pub follow: bool,

    /// Lines to print from the end of each log first: a number, or `all` [default: 10]
    #[arg(long, short = 'n', value_name = "N|all", default_value = "10", value_parser = lines)]
    pub lines: Lines,

    #[command(flatten)]
    pub state: pm_core::cli::StateDirArg,
}

/// `--lines`: `None` for all.
#[derive(Debug, Clone, Copy)]
pub struct Lines(pub Option<usize>);

fn lines(s: &str) -> Result<Lines, String> {
    match s {
        "all" => Ok(Lines(None)),
        n => n
            .parse()
            .map(|n| Lines(Some(n)))
            .map_err(|_| "expected a number of lines or `all`".into()),
    }
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let sd = StateDir::resolve(cli.state.dir(), false)?;
    let names = if cli.names.is_empty() {
        sd.list_for_report()?.into_iter().map(|(n, _)| n).collect()
    } else {
        sd.targets(&cli.names)?
    };
    let mut code = Code::Ok;
    let mut logs = Vec::new();
    for n in names {
        match sd.read_record(&n) {
            Ok(Some(r)) => logs.push((n.to_string(), r.log)),
            Ok(None) => {
                say("pm-logs", n.as_str(), "unknown: no record");
                code = Code::worst([code, Code::Unknown]);
            }
            Err(e) => {
                say("pm-logs", n.as_str(), &e);
                code = Code::worst([code, Code::Failure]);
            }
        }
    }
    let interrupts = signal::interrupt_fd()?;
    // Followed until interrupted: that is how following ends, not a failure.
    pm_core::tail::show(&logs, cli.lines.0, cli.follow, &interrupts)?;
    Ok(code.into())
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
