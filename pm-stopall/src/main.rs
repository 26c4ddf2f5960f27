use clap::Parser;

fn main() -> std::process::ExitCode {
    match pm_stopall::run(pm_stopall::Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pm-stopall: {err:#}");
            pm_core::exit::code_for(err.chain()).into()
        }
    }
}
