use clap::Parser;

fn main() -> std::process::ExitCode {
    // A monitor re-executing itself (see pm_start::resume_monitor); first, before clap.
    if let Some(code) = pm_start::resume_monitor() {
        return code;
    }
    match pm_start::run(pm_start::Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pm-start: {err:#}");
            pm_core::exit::code_for(err.chain()).into()
        }
    }
}
