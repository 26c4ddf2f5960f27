use clap::Parser;

fn main() -> std::process::ExitCode {
    pm_core::exit::finish("pm-stopall", pm_stopall::run(pm_stopall::Cli::parse()))
}
