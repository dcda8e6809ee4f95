//! worker: imgforge's on-node agent, run by the units imgforge writes into the image.
//!
//! - `firstboot`: places the seeded secrets, generates the generated ones, wipes the seed area.
//! - `ready`: waits until the role's checks pass and prints `IMGFORGE-READY ...` or
//!   `IMGFORGE-FAILED ...` on every console, then powers off if the kernel command line holds
//!   `imgforge.poweroff` (the boot test's request). `status [--json]` runs the checks once.
//! - `backup`: one PostgreSQL dump, checked with pg_restore, then rotated (a timer runs it).
//! - `pg-init`: the role's database and its owner, the password from a credential.
//! - `exec`: start a service with its env file, secret slots filled in from credentials.
//! - `grow-root`: on an MBR card, grow the root partition to the card's end (first boot).
//! - `card-status`, `card-commit`, `card-fallback`: a Raspberry Pi card's A/B slots: which
//!   runs, keeping a new version that became READY, leaving one that did not.

mod backup;
mod cardab;
mod cardupdate;
mod checks;
mod config;
mod console;
mod exec;
mod firstboot;
mod growroot;
mod postgres;
mod secrets;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "imgforge's on-node agent")]
struct Cli {
    /// The node's configuration, written by imgforge.
    #[arg(long, global = true, default_value = "/etc/imgforge/node.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum CardUpdateAction {
    /// Print the newest version above the running one (exit 0), or exit 1 if none.
    Check,
    /// Download, verify and write VERSION into the other slot.
    Install { version: String },
}

#[derive(Subcommand)]
enum Cmd {
    /// Wait for the role's checks and report READY or FAILED on the consoles.
    Ready,
    /// Print the running slot's image version (/usr/lib/imgforge/version).
    ImageVersion,
    /// Run the checks once.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Place seeded secrets, generate the generated ones, wipe the seed area.
    Firstboot {
        #[arg(long, default_value = firstboot::SEED_DEVICE)]
        device: PathBuf,
        #[arg(long, default_value = secrets::DIR)]
        secrets_dir: PathBuf,
        /// Written once every required slot has a value; the unit does not run again.
        #[arg(long, default_value = firstboot::MARKER)]
        marker: PathBuf,
    },
    /// Dump a PostgreSQL database, check the dump, rotate old ones.
    Backup {
        #[arg(long)]
        database: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 7)]
        keep_daily: usize,
        #[arg(long, default_value_t = 4)]
        keep_weekly: usize,
    },
    /// Create the database and its owner; the password is the named systemd credential.
    PgInit {
        #[arg(long)]
        database: String,
        #[arg(long)]
        owner: String,
        #[arg(long)]
        password_credential: String,
    },
    /// A card's slots: the running one, the committed one, and whether this is a trial.
    CardStatus,
    /// After READY on a card: on trial, make the running slot the one the Pi boots.
    CardCommit,
    /// After a failed readiness on a card: on trial, reboot into the committed slot.
    CardFallback,
    /// A card's update engine: look for a newer version in a publish folder, or write one
    /// into the slot that is not running.
    CardUpdate {
        #[command(subcommand)]
        action: CardUpdateAction,
        /// The publish folder (the site's `updates` URL).
        #[arg(long, global = true)]
        url: Option<String>,
        /// The role whose versions to take.
        #[arg(long, global = true)]
        role: Option<String>,
        #[arg(long, global = true, default_value = cardupdate::KEYRING)]
        keyring: PathBuf,
        #[arg(long, global = true, default_value = cardupdate::WORK_DIR)]
        work_dir: PathBuf,
    },
    /// Grow the data partition (the last of an MBR disk) to the end of the disk.
    GrowRoot {
        #[arg(long)]
        partition: PathBuf,
    },
    /// Run a command with the env file's environment; `${slot:NAME}` becomes the credential.
    Exec {
        #[arg(long)]
        env_file: PathBuf,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("worker: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let config = || config::load(&cli.config);
    match cli.command {
        Cmd::Ready => ready(&config()?),
        Cmd::ImageVersion => {
            println!("{}", image_version());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { json } => {
            let cfg = config()?;
            let results = checks::run_all(&cfg);
            if json {
                println!("{}", checks::to_json(&cfg, &results));
            } else {
                for r in &results {
                    println!(
                        "{:<4} {}{}",
                        if r.ok { "ok" } else { "FAIL" },
                        r.name,
                        r.detail
                            .as_deref()
                            .map(|d| format!(": {d}"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(if results.iter().all(|r| r.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::CardStatus => {
            let s = cardab::state()?;
            println!(
                "worker: card {}: running slot {}, committed slot {}{}",
                s.disk.display(),
                s.running,
                s.committed,
                if s.on_trial() { " (on trial)" } else { "" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::CardCommit => {
            match cardab::commit()? {
                cardab::Commit::Committed { from, to } => println!(
                    "worker: version {} is READY on trial in slot {to}: committed (autoboot.txt boots slot {to}, was {from})",
                    image_version()
                ),
                cardab::Commit::AlreadyCommitted(s) => {
                    println!("worker: slot {s} is the committed slot; nothing to commit")
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::CardFallback => {
            let s = cardab::fallback()?;
            if s.on_trial() {
                println!(
                    "worker: version {} on trial in slot {} is not READY: rebooting into the committed slot {}",
                    image_version(),
                    s.running,
                    s.committed
                );
            } else {
                println!(
                    "worker: slot {} is the committed slot and not READY; there is no other version to return to",
                    s.running
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::CardUpdate {
            action,
            url,
            role,
            keyring,
            work_dir,
        } => {
            let (Some(url), Some(role)) = (url, role) else {
                anyhow::bail!("card-update needs --url and --role");
            };
            let url = if url.ends_with('/') { url } else { format!("{url}/") };
            let src = cardupdate::Source {
                url: &url,
                role: &role,
                keyring: &keyring,
            };
            match action {
                CardUpdateAction::Check => {
                    match cardupdate::check(&src, &image_version(), &work_dir)? {
                        Some(v) => {
                            println!("{v}");
                            Ok(ExitCode::SUCCESS)
                        }
                        None => Ok(ExitCode::from(1)),
                    }
                }
                CardUpdateAction::Install { version } => {
                    let i = cardupdate::install(&src, &version, &work_dir)?;
                    println!(
                        "worker: version {version} written into slot {} (root {} MiB, boot {} MiB); it runs on trial after a reboot with the tryboot flag",
                        i.slot,
                        i.root_bytes >> 20,
                        i.boot_bytes >> 20
                    );
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Cmd::GrowRoot { partition } => {
            match growroot::run(&partition)? {
                growroot::Outcome::Grown {
                    from_sectors,
                    to_sectors,
                } => println!(
                    "worker: data partition grown from {} MiB to {} MiB",
                    from_sectors / 2048,
                    to_sectors / 2048
                ),
                growroot::Outcome::AlreadyFull => {
                    println!("worker: data partition already ends at the end of the disk")
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Firstboot {
            device,
            secrets_dir,
            marker,
        } => {
            let cfg = config()?;
            let outcome = firstboot::run(&cfg.slots, &device, &secrets_dir)?;
            println!("{}", outcome.log_line());
            if outcome.missing.is_empty() {
                if let Some(dir) = marker.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                std::fs::write(&marker, "first boot completed\n")
                    .with_context(|| format!("writing {}", marker.display()))?;
            }
            // Missing slots are not this unit's failure: the services that need them do not
            // start, and `worker ready` names the slots.
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Backup {
            database,
            dir,
            keep_daily,
            keep_weekly,
        } => {
            println!(
                "{}",
                backup::run(&backup::Options {
                    database: &database,
                    dir: &dir,
                    keep_daily,
                    keep_weekly
                })?
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Exec { env_file, command } => match exec::run(&env_file, &command)? {},
        Cmd::PgInit {
            database,
            owner,
            password_credential,
        } => {
            let creds = std::env::var_os("CREDENTIALS_DIRECTORY")
                .context("no $CREDENTIALS_DIRECTORY: run from a unit with LoadCredential=")?;
            println!(
                "{}",
                postgres::init(
                    &database,
                    &owner,
                    &PathBuf::from(creds).join(&password_credential)
                )?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The version of the running slot, as imgforge wrote it; `unknown` for an image built
/// before versions (the line must still be printed).
fn image_version() -> String {
    std::fs::read_to_string(seed_area::version::PATH)
        .ok()
        .and_then(|t| seed_area::version::parse(&t).map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// Polls the checks until all pass or the timeout ends, then reports once.
fn ready(cfg: &config::NodeConfig) -> Result<ExitCode> {
    let deadline = Instant::now() + Duration::from_secs(cfg.timeout_secs);
    let results = loop {
        let results = checks::run_all(cfg);
        // A unit in the failed state has exhausted its restarts, a slot without a value will
        // not get one: waiting longer cannot help.
        let hopeless = results.iter().any(|r| r.gave_up);
        if results.iter().all(|r| r.ok) || hopeless || Instant::now() >= deadline {
            break results;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let total = results.len();
    let passed = results.iter().filter(|r| r.ok).count();
    let line = if passed == total {
        seed_area::ready::Ready {
            role: cfg.role.clone(),
            target: cfg.target.clone(),
            version: image_version(),
            passed,
            total,
        }
        .to_string()
    } else {
        let failed: Vec<String> = results
            .iter()
            .filter(|r| !r.ok)
            .map(|r| r.name.clone())
            .collect();
        for r in results.iter().filter(|r| !r.ok) {
            eprintln!(
                "worker: check {} failed: {}",
                r.name,
                r.detail.as_deref().unwrap_or("no detail")
            );
        }
        format!(
            "IMGFORGE-FAILED role={} version={} failed={} checks={passed}/{total}",
            cfg.role,
            image_version(),
            failed.join(",")
        )
    };
    console::announce(&line);
    if console::cmdline_has("imgforge.poweroff") {
        let _ = std::process::Command::new("systemctl")
            .args(["poweroff", "--no-block"])
            .status();
    }
    Ok(if passed == total {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
