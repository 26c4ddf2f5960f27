use clap::Parser;

fn main() -> std::process::ExitCode {
    pm_core::exit::finish("pm-logs", pm_logs::run(pm_logs::Cli::parse()))
}
