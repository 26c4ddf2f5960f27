use clap::Parser;

fn main() -> std::process::ExitCode {
    match pm_down::run(pm_down::Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pm-down: {err:#}");
            pm_core::exit::code_for(err.chain()).into()
        }
    }
}
