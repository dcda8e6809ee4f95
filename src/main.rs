use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    imgforge::interrupt::install();
    let cli = imgforge::cli::Cli::parse();
    match imgforge::commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imgforge: error: {e:#}");
            imgforge::exit::code_for(&e)
        }
    }
}
