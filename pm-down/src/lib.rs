//! pm-down: stop the services of a stack, each after what needs it, in the order their
//! records give. The command line only: the work is [`pm_core::stack::down`].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use pm_core::stack;
use pm_core::stop::Options;

const EXAMPLES: &str = "\
Examples:
  Stop every service started from ./pm.toml:
    pm-down

  Stop db, and first everything that was started needing it:
    pm-down db";

/// Stop a stack: every service started from the file (or those named, and whatever was
/// started needing them), dependents before what they need, as recorded at their start.
#[derive(Debug, Parser)]
#[command(name = "pm-down", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Services to stop (NAME, or @TAG for every recorded service with that tag)
    /// [default: every service started from the file]
    #[arg(value_name = "NAME|@TAG")]
    pub targets: Vec<String>,

    /// Services file, naming the stack [default: pm.toml in the current directory]; it
    /// need not exist any more
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,

    #[command(flatten)]
    pub state: pm_core::cli::StateDirArg,

    /// Time to wait before SIGKILL, instead of each record's
    #[arg(long, short = 't', value_name = "DURATION", value_parser = pm_core::cli::duration)]
    pub timeout: Option<std::time::Duration>,
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let file = stack::locate(cli.file.as_deref())?;
    let opts = Options {
        timeout: cli.timeout,
        ..Options::default()
    };
    let code = stack::down::down(&file, cli.state.dir(), &cli.targets, &opts)?;
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
