use clap::Parser;

fn main() -> std::process::ExitCode {
    // A monitor re-executing itself, or the log writer (see pm_core::start::internal_entry).
    if let Some(code) = pm_start::internal_entry() {
        return code;
    }
    pm_core::exit::finish("pm-start", pm_start::run(pm_start::Cli::parse()))
}
