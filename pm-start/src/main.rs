use clap::Parser;

fn main() -> std::process::ExitCode {
    match pm_start::run(pm_start::Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pm-start: {err:#}");
            pm_core::exit::code_for(err.chain()).into()
        }
    }
}
