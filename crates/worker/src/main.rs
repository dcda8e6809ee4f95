//! worker: imgforge's on-node agent.
//!
//! First version: `worker ready` waits until the role's checks pass (units active, no
//! failed unit, ports answering, health URLs answering) and prints one line on the console
//! and serial port, `IMGFORGE-READY ...` or `IMGFORGE-FAILED ...`, then powers off if the
//! kernel command line holds `imgforge.poweroff`. `worker status --json` runs the checks once.

mod checks;
mod config;
mod console;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const DEFAULT_CONFIG: &str = "/etc/imgforge/node.toml";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("worker: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn usage() -> &'static str {
    "usage: worker ready [--config FILE] | worker status [--json] [--config FILE] | worker --version"
}

fn run() -> Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut config_path = DEFAULT_CONFIG.to_string();
    let mut json = false;
    let mut cmd = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => config_path = it.next().context("--config needs a file")?.clone(),
            "--json" => json = true,
            "--version" => {
                println!("worker {}", env!("CARGO_PKG_VERSION"));
                return Ok(ExitCode::SUCCESS);
            }
            "-h" | "--help" => {
                println!("{}", usage());
                return Ok(ExitCode::SUCCESS);
            }
            c if cmd.is_none() && !c.starts_with('-') => cmd = Some(c.to_string()),
            other => bail!("unexpected argument `{other}`; {}", usage()),
        }
    }
    let cfg = config::load(&config_path)?;
    match cmd.as_deref() {
        Some("ready") => ready(&cfg),
        Some("status") => {
            let results = checks::run_all(&cfg);
            if json {
                println!("{}", checks::to_json(&cfg, &results));
            } else {
                for r in &results {
                    println!("{:<4} {}{}", if r.ok { "ok" } else { "FAIL" }, r.name, r.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default());
                }
            }
            Ok(if results.iter().all(|r| r.ok) { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        _ => bail!("{}", usage()),
    }
}

/// Polls the checks until all pass or the timeout ends, then reports once.
fn ready(cfg: &config::NodeConfig) -> Result<ExitCode> {
    let deadline = Instant::now() + Duration::from_secs(cfg.timeout_secs);
    let results = loop {
        let results = checks::run_all(cfg);
        // A unit in the failed state has exhausted its restarts: waiting longer cannot help.
        let hopeless = results.iter().any(|r| r.gave_up);
        if results.iter().all(|r| r.ok) || hopeless || Instant::now() >= deadline {
            break results;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let total = results.len();
    let passed = results.iter().filter(|r| r.ok).count();
    let line = if passed == total {
        format!("IMGFORGE-READY role={} target={} checks={passed}/{total}", cfg.role, cfg.target)
    } else {
        let failed: Vec<String> = results.iter().filter(|r| !r.ok).map(|r| r.name.clone()).collect();
        for r in results.iter().filter(|r| !r.ok) {
            eprintln!("worker: check {} failed: {}", r.name, r.detail.as_deref().unwrap_or("no detail"));
        }
        format!("IMGFORGE-FAILED role={} failed={} checks={passed}/{total}", cfg.role, failed.join(","))
    };
    console::announce(&line);
    if console::cmdline_has("imgforge.poweroff") {
        let _ = std::process::Command::new("systemctl").args(["poweroff", "--no-block"]).status();
    }
    Ok(if passed == total { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
