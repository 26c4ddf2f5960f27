use clap::Parser;

fn main() -> std::process::ExitCode {
    match pm_logs::run(pm_logs::Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pm-logs: {err:#}");
            pm_core::exit::code_for(err.chain()).into()
        }
    }
}
