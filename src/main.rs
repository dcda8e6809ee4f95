use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    imgforge::interrupt::install();
    imgforge::stdout::exit_quietly_on_closed_stdout();
    let cli = match imgforge::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout; a closed pipe there is no error.
            let _ = e.print();
            return imgforge::exit::code_for_usage(&e);
        }
    };
    match imgforge::commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<imgforge::stdout::Closed>() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imgforge: error: {e:#}");
            imgforge::exit::code_for(&e)
        }
    }
}
