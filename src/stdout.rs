//! Writing a command's report to standard output. Rust ignores SIGPIPE, so a reader that
//! went away (`imgforge list | head -1`) shows up as a BrokenPipe error on the next write,
//! which `println!` turns into a panic (exit 101). Commands that print write through
//! [`report`] instead: a closed standard output becomes [`Closed`], which `main` ends on
//! quietly with exit 0, as other Unix tools do.

use std::io::{self, BufWriter, Write};

/// Standard output's reader went away: nobody wants the rest of the report.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct Closed;

/// Runs `f` with a buffered standard output and flushes it. A closed pipe ends in
/// [`Closed`]; any other write error (a full disk behind `>`) is an error naming stdout.
pub fn report(f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> anyhow::Result<()> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let written = f(&mut out).and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(()),
        Err(e) => Err(classify(e)),
    }
}

/// Prints `text` as it is (it carries its own line ends).
pub fn print(text: &str) -> anyhow::Result<()> {
    report(|out| out.write_all(text.as_bytes()))
}

fn classify(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Closed.into()
    } else {
        anyhow::Error::new(e).context("writing to standard output")
    }
}

/// `println!` elsewhere (commands that print one line at a time) panics on a closed
/// standard output; this hook ends such a panic quietly with exit 0, and leaves every
/// other panic to the default hook.
pub fn exit_quietly_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        // std's message for a failed print!/println!: "failed printing to stdout: Broken
        // pipe (os error 32)".
        if payload.starts_with("failed printing to stdout") && payload.contains("os error 32") {
            std::process::exit(0);
        }
        default(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_is_closed_and_other_errors_name_stdout() {
        let e = classify(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(e.is::<Closed>(), "{e:#}");
        let e = classify(io::Error::other("disk full"));
        assert!(!e.is::<Closed>());
        assert_eq!(format!("{e:#}"), "writing to standard output: disk full");
    }
}
