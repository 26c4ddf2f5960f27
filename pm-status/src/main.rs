use clap::Parser;

fn main() -> std::process::ExitCode {
    match pm_status::run(pm_status::Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pm-status: {err:#}");
            pm_core::exit::code_for(err.chain()).into()
        }
    }
}
