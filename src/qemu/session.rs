//! A long boot a test drives: the guest may reboot inside the same QEMU (as a node does
//! when it takes an update), the test waits for console lines across those reboots, and runs
//! commands as root through systemd's debug shell on a second serial port. The update test
//! uses it; a node has no other way in (no password, no SSH key in the image).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{classify, command, read_lines, tail_of, vars_copy, BootOptions, Guard, Verdict};

/// The guest's name for the second serial port (the first is the console).
pub const SHELL_TTY: &str = "ttyS1";

pub struct Session {
    qemu: Guard,
    lines: mpsc::Receiver<String>,
    log: std::fs::File,
    log_path: PathBuf,
    shell: Option<Shell>,
    /// Each command's output is framed by tags that carry this count.
    asked: u32,
    _vars: tempfile::TempDir,
}

struct Shell {
    writer: UnixStream,
    bytes: mpsc::Receiver<Vec<u8>>,
}

impl Session {
    /// Starts QEMU; its console is copied to `serial_log` line by line.
    pub fn start(o: &BootOptions, serial_log: &Path) -> Result<Session> {
        if let Some(sock) = &o.shell {
            // A socket left by a previous QEMU would be taken for this one's.
            let _ = std::fs::remove_file(sock);
        }
        let vars_dir = tempfile::tempdir()?;
        let vars = vars_copy(o, vars_dir.path())?;
        let mut cmd = command(o, vars.as_deref(), "stdio")?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let line = crate::tool::display(&cmd);
        let mut qemu = Guard(cmd.spawn().with_context(|| format!("starting `{line}`"))?);
        let stdout = qemu.0.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || read_lines(stdout, tx));
        let log = std::fs::File::create(serial_log)
            .with_context(|| format!("creating {}", serial_log.display()))?;
        let shell = match &o.shell {
            Some(sock) => Some(Shell::connect(sock)?),
            None => None,
        };
        Ok(Session {
            qemu,
            lines,
            log,
            log_path: serial_log.to_path_buf(),
            shell,
            asked: 0,
            _vars: vars_dir,
        })
    }

    /// Reads the console until `want` returns a value for a line. A kernel panic or an
    /// emergency shell ends the wait with an error (a test asks for IMGFORGE-FAILED itself:
    /// a version that is not ready is an outcome the update test expects).
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut want: impl FnMut(&str) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            crate::interrupt::check()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let tail = self.tail();
                bail!(
                    "no console line {what} within {} s\n--- last lines of {} ---\n{tail}",
                    timeout.as_secs(),
                    self.log_path.display(),
                );
            }
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(500)))
            {
                Ok(line) => {
                    let _ = writeln!(self.log, "{line}");
                    if let Some(v) = want(&line) {
                        return Ok(v);
                    }
                    match classify(&line) {
                        Some(Verdict::Panic(l)) => bail!("kernel panic: {l}"),
                        Some(Verdict::Emergency(l)) => bail!("emergency shell: {l}"),
                        _ => {}
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let tail = self.tail();
                    bail!(
                        "QEMU exited while waiting for a console line {what}\n--- last lines of {} ---\n{tail}",
                        self.log_path.display(),
                    )
                }
            }
        }
    }

    /// Waits for the worker's verdict on this boot: its IMGFORGE-READY or IMGFORGE-FAILED line.
    pub fn wait_verdict(&mut self, timeout: Duration) -> Result<Verdict> {
        self.wait_for("IMGFORGE-READY or IMGFORGE-FAILED", timeout, |l| {
            classify(l).filter(|v| matches!(v, Verdict::Ready(_) | Verdict::Failed(_)))
        })
    }

    /// Runs `script` with /bin/sh as root in the guest; returns its exit code and output
    /// (stdout and stderr together). Call it once the boot is far enough for the debug
    /// shell to run (after the verdict line).
    pub fn sh(&mut self, script: &str, timeout: Duration) -> Result<(i32, String)> {
        self.asked += 1;
        let n = self.asked;
        let Some(shell) = &mut self.shell else {
            bail!("this session was started without a shell (BootOptions::shell)");
        };
        // The tags are printed by printf from two halves, so the terminal's echo of the
        // command itself never contains them whole.
        let (begin, end) = (format!("IMGF-BEGIN-{n}"), format!("IMGF-END-{n}"));
        let line = format!(
            "printf '\\n%s%s\\n' IMGF- BEGIN-{n}; ( {script}\n) 2>&1; printf '\\n%s%s %d\\n' IMGF- END-{n} $?\n"
        );
        shell
            .writer
            .write_all(line.as_bytes())
            .context("writing to the guest's shell")?;
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            // Keep the console log flowing while the command runs.
            while let Ok(l) = self.lines.try_recv() {
                let _ = writeln!(self.log, "{l}");
            }
            let text = String::from_utf8_lossy(&got).replace('\r', "");
            if let (Some(b), Some(e)) = (text.find(&format!("{begin}\n")), text.rfind(&end)) {
                if e > b {
                    let out = text[b + begin.len() + 1..e].trim_end_matches('\n');
                    let code = text[e + end.len()..]
                        .split_whitespace()
                        .next()
                        .and_then(|c| c.parse().ok());
                    if let Some(code) = code {
                        if text[e..].contains('\n') {
                            return Ok((code, out.to_string()));
                        }
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "the guest's shell did not finish `{script}` within {} s; it printed:\n{text}",
                    timeout.as_secs()
                );
            }
            match shell
                .bytes
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(b) => got.extend(b),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("the guest's shell closed while running `{script}`")
                }
            }
        }
    }

    /// Like `sh`, and the command must succeed: its output.
    pub fn sh_ok(&mut self, script: &str, timeout: Duration) -> Result<String> {
        let (code, out) = self.sh(script, timeout)?;
        if code != 0 {
            bail!("`{script}` exited with {code} in the guest:\n{out}");
        }
        Ok(out)
    }

    /// Waits for QEMU to end (the guest powered off), copying the console meanwhile.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.qemu.0.try_wait()?.is_some() {
                while let Ok(l) = self.lines.try_recv() {
                    let _ = writeln!(self.log, "{l}");
                }
                return Ok(());
            }
            while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
                let _ = writeln!(self.log, "{l}");
            }
        }
        bail!("QEMU still running after {} s", timeout.as_secs())
    }

    fn tail(&mut self) -> String {
        let _ = self.log.flush();
        tail_of(&self.log_path, 40)
    }
}

impl Shell {
    /// QEMU opens its end of the socket as it starts: retry briefly until it listens.
    fn connect(sock: &Path) -> Result<Shell> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match UnixStream::connect(sock) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    return Err(e).with_context(|| {
                        format!("connecting to the guest's shell socket {}", sock.display())
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let mut reader = stream.try_clone()?;
        let (tx, bytes) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Ok(Shell {
            writer: stream,
            bytes,
        })
    }
}
