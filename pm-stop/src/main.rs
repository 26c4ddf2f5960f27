use clap::Parser;

fn main() -> std::process::ExitCode {
    pm_core::exit::finish("pm-stop", pm_stop::run(pm_stop::Cli::parse()))
}
