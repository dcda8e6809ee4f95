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
        /// Worker threads (default: one per CPU).
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
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(t) = threads {
                b.worker_threads(t);
            }
            let rt = match b.enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("gateway: error: starting the runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            let served = rt.block_on(server::serve(server::Options { config, listen }));
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
