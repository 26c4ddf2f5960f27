use clap::Parser;

fn main() -> std::process::ExitCode {
    match pm_signal::run(pm_signal::Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pm-signal: {err:#}");
            pm_core::exit::code_for(err.chain()).into()
        }
    }
}
