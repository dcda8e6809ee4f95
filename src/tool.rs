//! Running external tools (mmdebstrap, mke2fs, qemu-img, cargo, ...).
//!
//! One wrapper around `std::process::Command`: argument vectors only (never `sh -c`), stdin
//! null, a debug log of each command line, and on failure an error that quotes the command
//! and the tail of its stderr, so the user sees what failed and why.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// How many lines of a failed command's output the error carries.
const TAIL_LINES: usize = 25;

/// A tool the build needs on the host, and the Debian package that provides it.
pub struct HostTool {
    pub program: &'static str,
    pub package: &'static str,
}

/// Fails with the package to install when `tool` is not on PATH.
pub fn require(tool: &HostTool) -> Result<()> {
    require_named(tool.program, tool.package)
}

/// As [`require`], for a program named at run time (a target's QEMU binary).
pub fn require_named(program: &str, package: &str) -> Result<()> {
    if find_in_path(program).is_none() {
        return Err(crate::exit::UserError(format!(
            "`{program}` is not installed: install the Debian package `{package}` (scripts/setup-host.sh installs the host packages; `--arch all --test` all of them)"
        ))
        .into());
    }
    Ok(())
}

pub fn find_in_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    // Tools like mke2fs live in /usr/sbin, which a non-root PATH may lack.
    let extra = [Path::new("/usr/sbin"), Path::new("/sbin")];
    std::env::split_paths(&path)
        .chain(extra.iter().map(|p| p.to_path_buf()))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Renders a command line for messages, quoting arguments that need it.
pub fn display(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    for arg in cmd.get_args() {
        let a = arg.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$\\;&|<>*?".contains(c)) {
            parts.push(format!("'{}'", a.replace('\'', r"'\''")));
        } else {
            parts.push(a.into_owned());
        }
    }
    parts.join(" ")
}

/// Runs `cmd` to completion and returns its stdout. stderr is kept for the error only.
pub fn run(cmd: &mut Command) -> Result<Vec<u8>> {
    log_command(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting `{}`", display(cmd)))?;
    if !out.status.success() {
        crate::interrupt::check()?;
        let text = String::from_utf8_lossy(&out.stderr);
        let mut tail: Vec<&str> = text.lines().rev().take(TAIL_LINES).collect();
        tail.reverse();
        bail!(
            "`{}` failed ({}):\n{}",
            display(cmd),
            out.status,
            tail.join("\n")
        );
    }
    Ok(out.stdout)
}

/// Runs `cmd`, handing each line it writes (stdout and stderr, merged in order of arrival
/// per stream) to `on_line`; the tail goes into the error on failure.
pub fn run_streaming(cmd: &mut Command, mut on_line: impl FnMut(&str)) -> Result<()> {
    log_command(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{}`", display(cmd)))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx2 = tx.clone();
    let t1 = std::thread::spawn(move || forward_lines(stdout, tx));
    let t2 = std::thread::spawn(move || forward_lines(stderr, tx2));
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    for line in rx {
        on_line(&line);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let _ = t1.join();
    let _ = t2.join();
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{}`", display(cmd)))?;
    // A tool that caught the signal may still exit 0 with half its work done.
    crate::interrupt::check()?;
    if !status.success() {
        crate::interrupt::check()?;
        bail!(
            "`{}` failed ({}):\n{}",
            display(cmd),
            status,
            Vec::from(tail).join("\n")
        );
    }
    Ok(())
}

fn forward_lines(r: impl std::io::Read, tx: std::sync::mpsc::Sender<String>) {
    for line in BufReader::new(r).lines() {
        match line {
            Ok(l) => {
                if tx.send(l).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

fn log_command(cmd: &Command) {
    if std::env::var_os("IMGFORGE_DEBUG").is_some() {
        eprintln!("imgforge: running {}", display(cmd));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_command_error_names_command_and_stderr_tail() {
        let err =
            run(Command::new("sh").args(["-c", "echo first >&2; echo 'the cause' >&2; exit 3"]))
                .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("`sh -c 'echo first"), "{msg}");
        assert!(msg.contains("the cause"), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
    }

    #[test]
    fn streaming_sees_every_line() {
        let mut seen = Vec::new();
        run_streaming(Command::new("printf").arg("a\\nb\\nc\\n"), |l| {
            seen.push(l.to_string())
        })
        .unwrap();
        assert_eq!(seen, ["a", "b", "c"]);
    }

    #[test]
    fn missing_tool_names_its_package() {
        let err = require(&HostTool {
            program: "no-such-tool-imgforge",
            package: "pkg-x",
        })
        .unwrap_err();
        assert!(err.to_string().contains("`pkg-x`"));
    }
}
