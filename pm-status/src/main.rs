use clap::Parser;

fn main() -> std::process::ExitCode {
    pm_core::exit::finish("pm-status", pm_status::run(pm_status::Cli::parse()))
}
