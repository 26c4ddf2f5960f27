use clap::Parser;

fn main() -> std::process::ExitCode {
    pm_core::exit::finish("pm-wait", pm_wait::run(pm_wait::Cli::parse()))
}
