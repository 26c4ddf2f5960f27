use clap::Parser;

fn main() -> std::process::ExitCode {
    // A service's monitor re-executes the binary that started it, as does its log writer.
    if let Some(code) = pm_core::start::internal_entry() {
        return code;
    }
    match pm_restart::run(pm_restart::Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pm-restart: {err:#}");
            pm_core::exit::code_for(err.chain()).into()
        }
    }
}
