use clap::Parser;

fn main() -> std::process::ExitCode {
    match pm_stop::run(pm_stop::Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pm-stop: {err:#}");
            pm_core::exit::code_for(err.chain()).into()
        }
    }
}
