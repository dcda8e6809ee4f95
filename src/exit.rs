//! Exit codes: 0 ok, 1 a user or configuration error (a bad flag or argument included), 2 an
//! internal error, 3 a boot test that failed (the node reported IMGFORGE-FAILED, panicked, or
//! never became ready), 130 interrupted by Ctrl-C or SIGTERM.

use std::process::ExitCode;

/// An error in what the user asked for or gave us (a profile, a flag, a missing tool).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

/// A boot test that ran and failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BootFailed(pub String);

pub const OK: u8 = 0;
pub const USER: u8 = 1;
pub const INTERNAL: u8 = 2;
pub const BOOT_FAILED: u8 = 3;
/// As a shell reports a command ended by SIGINT.
pub const INTERRUPTED: u8 = 130;

/// Marks an error as the user's to fix, keeping its whole cause chain in the message.
pub fn user(e: anyhow::Error) -> anyhow::Error {
    UserError(format!("{e:#}")).into()
}

pub fn code_for(e: &anyhow::Error) -> ExitCode {
    let code = if e.chain().any(|c| c.is::<crate::interrupt::Interrupted>()) {
        INTERRUPTED
    } else if e.chain().any(|c| c.is::<BootFailed>()) {
        BOOT_FAILED
    } else if e.chain().any(|c| c.is::<UserError>()) {
        USER
    } else {
        INTERNAL
    };
    ExitCode::from(code)
}

/// A command line clap refused is the user's to fix: exit 1, not clap's own 2 (which means
/// an internal error here). `--help` and `--version` are no error: exit 0.
pub fn code_for_usage(e: &clap::Error) -> ExitCode {
    ExitCode::from(if e.use_stderr() { USER } else { OK })
}
