use clap::Parser;

fn main() -> std::process::ExitCode {
    // A service's monitor re-executes the binary that started it, as does its log writer.
    if let Some(code) = pm_core::start::internal_entry() {
        return code;
    }
    pm_core::exit::finish("pm-up", pm_up::run(pm_up::Cli::parse()))
}
