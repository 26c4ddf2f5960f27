use clap::Parser;

fn main() -> std::process::ExitCode {
    pm_core::exit::finish("pm-down", pm_down::run(pm_down::Cli::parse()))
}
