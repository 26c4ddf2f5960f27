use clap::Parser;

fn main() -> std::process::ExitCode {
    pm_core::exit::finish("pm-signal", pm_signal::run(pm_signal::Cli::parse()))
}
