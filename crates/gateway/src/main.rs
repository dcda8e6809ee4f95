//! gateway: imgforge's reverse proxy, the proxy role's front door. It replaces Apache's
//! reverse proxy, certbot and the Django proxy views of the user's setup (../shared/seeds):
//! routing by host and path prefix, prefix stripping with X-Forwarded-Prefix, WebSockets,
//! per-route timeouts, access by source network, HTTP Basic and forward auth.
//!
//! `gateway serve --config FILE` runs it; `gateway check FILE` validates a configuration
//! and names the line and key of a mistake. Without --config it answers a page naming the
//! node (what the proxy image runs until its site renders a configuration).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gateway::{config, proxy, server};

#[derive(Parser)]
#[command(version, about = "imgforge's reverse proxy")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve (SIGHUP reloads the configuration).
    Serve {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The plain HTTP listener, overriding the configuration's server.http.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<std::net::SocketAddr>,
        /// Worker threads, each with its own runtime and upstream pools (default: one per CPU).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Check a configuration file; errors name the file, line, column and key.
    Check { config: PathBuf },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Check { config: path } => {
            match config::load(&path).and_then(|c| proxy::Runtime::new(c, None).map(|_| ())) {
                Ok(()) => {
                    println!("{}: ok", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("gateway: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Serve {
            config,
            listen,
            threads,
        } => {
            let workers = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let served = server::run(server::Options { config, listen }, workers);
            gateway::access_log::flush();
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gateway: error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
