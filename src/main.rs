use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = imgforge::cli::Cli::parse();
    match imgforge::commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imgforge: error: {e:#}");
            imgforge::exit::code_for(&e)
        }
    }
}
