//! Ctrl-C and SIGTERM: the first one asks the build to stop at the next safe point, so the
//! running stage drops its temporary files and no output appears half-written; a second one
//! exits at once.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The build was interrupted by the user (exit code 130, as a shell reports SIGINT).
#[derive(Debug, thiserror::Error)]
#[error("interrupted; temporary files removed, no output written")]
pub struct Interrupted;

pub fn install() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nimgforge: stopping (Ctrl-C again to quit at once)");
    });
}

pub fn requested() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Fails with [`Interrupted`] once a stop was asked for.
pub fn check() -> anyhow::Result<()> {
    if requested() {
        return Err(Interrupted.into());
    }
    Ok(())
}
