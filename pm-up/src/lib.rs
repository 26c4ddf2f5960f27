//! pm-up: start the services of a stack file in dependency order, and return once every
//! one asked for (and everything it needs) is up. The command line only: the work is
//! [`pm_core::stack::up`].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use pm_core::stack::{self, Stack};

const EXAMPLES: &str = "\
Examples:
  Start every service of ./pm.toml, each once what it needs is ready:
    pm-up

  Start web and what it needs, from another file:
    pm-up -f /srv/app/pm.toml web

  Start the services tagged db:
    pm-up @db";

/// Start a stack: the services of a pm.toml file, in dependency order, independent ones
/// in parallel; exit 0 once all are up. A running service whose definition is unchanged
/// is left alone; a changed one is restarted.
#[derive(Debug, Parser)]
#[command(name = "pm-up", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Services to start (NAME, or @TAG for every service with that tag) [default: all]
    #[arg(value_name = "NAME|@TAG")]
    pub targets: Vec<String>,

    /// Services file [default: pm.toml in the current directory]
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,

    #[command(flatten)]
    pub state: pm_core::cli::StateDirArg,
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let file = stack::locate(cli.file.as_deref())?;
    let stack = Stack::load(&file)?;
    let ended = stack::up::up(&stack, cli.state.dir(), &cli.targets)?;
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
