//! pm-stopall: stop every recorded running service, newest start first.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use anyhow::Result;
use clap::Parser;
use pm_core::report::say;
use pm_core::status::{inspect, State};
use pm_core::stop::{stop_name, Options, Report};
use pm_core::{Code, Name, StateDir};

const TOOL: &str = "pm-stopall";

const EXAMPLES: &str = "\
Examples:
  Stop everything, newest first, one at a time:
    pm-stopall

  Stop up to 8 at once (still starting with the newest), at most 5 s each before SIGKILL:
    pm-stopall --parallel 8 --timeout 5s";

/// Stop every recorded running service, newest start first, each with its recorded
/// signal and timeout.
#[derive(Debug, Parser)]
#[command(name = "pm-stopall", version, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub state: pm_core::cli::StateDirArg,

    /// Stop up to N services at once, taking them newest first
    #[arg(long, short = 'j', value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub parallel: u32,

    /// Signal to send first, instead of each record's
    #[arg(long, short = 's', value_name = "SIG", value_parser = pm_core::cli::SignalArg, hide_possible_values = true)]
    pub signal: Option<pm_core::signal::Signal>,

    /// Time to wait before SIGKILL, instead of each record's
    #[arg(long, short = 't', value_name = "DURATION", value_parser = pm_core::cli::duration)]
    pub timeout: Option<std::time::Duration>,

    /// Never send SIGKILL; exit 1 if a service outlives the timeout
    #[arg(long)]
    pub no_kill: bool,
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let opts = Options {
        signal: cli.signal,
        timeout: cli.timeout,
        no_kill: cli.no_kill,
        ..Options::default()
    };
    let sd = StateDir::resolve(cli.state.dir(), false)?;
    pm_core::stop::report_interrupts(TOOL)?;
    // Start order reversed: the newest first. Dead services are visited too, for what
    // may be left of them (workers whose leader crashed); they are reported only then.
    let mut queue: VecDeque<(Name, bool)> = VecDeque::new();
    let mut unreadable = false;
    for (name, rec) in sd.list()?.into_iter().rev() {
        if let Err(e) = rec {
            say(TOOL, name.as_str(), &e);
            unreadable = true;
            continue;
        }
        match inspect(&sd, &name, None).state {
            State::Running | State::Starting | State::Backoff => queue.push_back((name, false)),
            State::Dead | State::Failed => queue.push_back((name, true)),
            _ => {}
        }
    }
    let workers = (cli.parallel as usize).min(queue.len()).max(1);
    let queue = Mutex::new(queue);
    let failed = AtomicBool::new(false);
    // Each worker takes the newest service left, so the order holds as a priority.
    let work = || loop {
        let next = queue.lock().ok().and_then(|mut q| q.pop_front());
        let Some((name, dead)) = next else { break };
        let opts = Options {
            leftovers_only: dead,
            ..opts.clone()
        };
        let code = match stop_name(&sd, &name, &opts, TOOL) {
            Ok(Report::NotRunning { .. }) if dead => Code::Ok,
            Ok(report) => {
                say(TOOL, name.as_str(), report.describe());
                report.code()
            }
            Err(e) => {
                say(TOOL, name.as_str(), &e);
                Code::Failure
            }
        };
        if code != Code::Ok {
            failed.store(true, Ordering::Relaxed);
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..workers {
            // Small stacks: a stop needs little, and --parallel 16 must stay light.
            let spawned = std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn_scoped(scope, work);
            if spawned.is_err() {
                work(); // no thread to be had: this one does the work
            }
        }
    });
    // Then what is in this state directory's cgroups without a record naming it.
    let want = pm_core::cgroup::Want::from_env(false)?;
    if want != pm_core::cgroup::Want::Off {
        if let Ok(base) = pm_core::cgroup::Base::locate(&sd, false) {
            for (name, cg, outcome) in pm_core::stop::strays(&sd, &base, None, false, &opts) {
                let line = match outcome {
                    Ok(pm_core::stop::Outcome::AlreadyGone) => continue,
                    Ok(o) => {
                        if !o.is_success() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        format!(
                            "{} (left in {}, which no record names)",
                            Report::Ran(o).describe(),
                            cg.path().display()
                        )
                    }
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        format!("{}: {e}", cg.path().display())
                    }
                };
                say(TOOL, &name, line);
            }
        }
    }
    let any_failed = unreadable || failed.load(Ordering::Relaxed);
    Ok(if any_failed { Code::Failure } else { Code::Ok }.into())
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
