use clap::Parser;

fn main() -> std::process::ExitCode {
    match pm_wait::run(pm_wait::Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pm-wait: {err:#}");
            pm_core::exit::code_for(err.chain()).into()
        }
    }
}
