//! The QEMU harness: boots an image headless, reads the serial console, and decides the
//! boot's outcome from what it prints: the worker's IMGFORGE-READY or IMGFORGE-FAILED line,
//! a kernel panic, an emergency shell, QEMU exiting early, or a timeout.
//!
//! There is no usable KVM on the building machines: every boot is TCG emulation, so
//! timeouts are generous and the panic pattern ends a doomed boot early.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::plan::QemuPlan;
use crate::tool;

pub mod session;

/// How the guest's kernel is started.
#[derive(Debug, Clone)]
pub enum Firmware {
    /// UEFI firmware (OVMF/AAVMF) boots systemd-boot from the ESP: the real path.
    Uefi,
    /// QEMU loads the kernel itself (`-kernel`): faster, skips firmware and loader.
    DirectKernel {
        kernel: PathBuf,
        initrd: PathBuf,
        cmdline: String,
    },
}

#[derive(Debug, Clone)]
pub struct BootOptions {
    pub qemu: QemuPlan,
    pub image: PathBuf,
    pub firmware: Firmware,
    /// Words added to the kernel command line (through SMBIOS for systemd-boot).
    pub cmdline_extra: Vec<String>,
    /// (host port on 127.0.0.1, guest port) TCP forwards.
    pub forwards: Vec<(u16, u16)>,
    /// Write guest changes to a throw-away overlay, leaving the image as built.
    pub snapshot: bool,
    pub timeout: Duration,
    pub network: Network,
    /// Let the guest reboot inside the same QEMU (an update's reboot into the new slot);
    /// otherwise a reboot ends QEMU, as a boot test wants.
    pub reboots: bool,
    /// A root shell on a second serial port served on this unix socket (systemd's debug
    /// shell, asked for on the command line): how a test drives a node it cannot log in to.
    pub shell: Option<PathBuf>,
}

impl BootOptions {
    /// The words the kernel command line gains: the caller's, and the debug shell's.
    fn cmdline_words(&self) -> Vec<String> {
        let mut w = self.cmdline_extra.clone();
        if self.shell.is_some() {
            w.push(format!("systemd.debug_shell={}", session::SHELL_TTY));
        }
        w
    }
}

/// The guest's one network card.
#[derive(Debug, Clone, PartialEq)]
pub enum Network {
    /// QEMU's user-mode network. A host with a static address gets it on a user network
    /// shaped like its site's LAN (QEMU playing the site's gateway), so the image boots
    /// with the address the site gave it, and forwards reach that address.
    User { lan: Option<UserLan> },
    /// An existing tap device (on a host bridge): several guests on one network.
    Tap { ifname: String, mac: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserLan {
    /// e.g. 192.168.50.0/24
    pub net: String,
    /// QEMU's own address: the site's gateway.
    pub host: String,
    /// The guest's static address.
    pub guest: String,
}

/// The highest host address of an IPv4 network (`192.168.50.0/24` gives .254).
fn last_host_address(net: &str) -> Option<std::net::Ipv4Addr> {
    let n = crate::site::parse_net(net)?;
    let std::net::IpAddr::V4(a) = n.addr else {
        return None;
    };
    let host_bits = 32 - u32::from(n.prefix);
    (host_bits >= 2)
        .then(|| std::net::Ipv4Addr::from((u32::from(a) | ((1u32 << host_bits) - 1)) - 1))
}

impl Network {
    /// The user network for a host of the site: DHCP as QEMU hands out, or the host's
    /// static address on a network of the same shape.
    pub fn user_for(host: &crate::plan::HostPlan) -> Network {
        let Some(n) = host.address.net() else {
            return Network::User { lan: None };
        };
        let std::net::IpAddr::V4(a) = n.addr else {
            return Network::User { lan: None };
        };
        let mask = if n.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - n.prefix)
        };
        let base = std::net::Ipv4Addr::from(u32::from(a) & mask);
        let gw = host.gateway.map_or_else(
            || std::net::Ipv4Addr::from(u32::from(base) + 1).to_string(),
            |g| g.to_string(),
        );
        Network::User {
            lan: Some(UserLan {
                net: format!("{base}/{}", n.prefix),
                host: gw,
                guest: a.to_string(),
            }),
        }
    }

    /// The tap device if one is given (`--tap`), else the user network for the host.
    pub fn choose(tap: Option<&str>, host: &crate::plan::HostPlan) -> Network {
        match tap {
            Some(ifname) => Network::Tap {
                ifname: ifname.to_string(),
                mac: Network::mac_for(&host.name),
            },
            None => Network::user_for(host),
        }
    }

    /// A stable MAC for a tap guest, from its name (QEMU's 52:54:00 prefix).
    fn mac_for(name: &str) -> String {
        let h = crate::cache::sha256_bytes(name.as_bytes());
        format!("52:54:00:{}:{}:{}", &h[0..2], &h[2..4], &h[4..6])
    }
}

/// What the serial console showed.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Ready(String),
    Failed(String),
    Panic(String),
    Emergency(String),
}

/// Classifies one console line, if it decides the boot.
pub fn classify(line: &str) -> Option<Verdict> {
    if let Some(i) = line.find(seed_area::ready::MARKER) {
        return Some(Verdict::Ready(line[i..].trim_end().to_string()));
    }
    if let Some(i) = line.find("IMGFORGE-FAILED") {
        return Some(Verdict::Failed(line[i..].trim_end().to_string()));
    }
    if line.contains("Kernel panic - not syncing") {
        return Some(Verdict::Panic(line.trim().to_string()));
    }
    if line.contains("You are in emergency mode")
        || line.contains("Give root password for maintenance")
    {
        return Some(Verdict::Emergency(line.trim().to_string()));
    }
    None
}

pub struct BootReport {
    pub ready_line: String,
    pub seconds_to_ready: f64,
    pub powered_off: bool,
}

/// Kills QEMU if we leave early (an error, a timeout, a panic in our code).
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn command(o: &BootOptions, vars: Option<&Path>, serial: &str) -> Result<Command> {
    let q = &o.qemu;
    tool::require_named(
        &q.binary,
        "qemu-system-x86 (bookworm-backports) or qemu-system-arm",
    )?;
    let mut cmd = Command::new(&q.binary);
    cmd.args(["-machine", &format!("{},accel=tcg", q.machine)])
        .args(["-cpu", &q.cpu])
        .args(["-smp", &q.smp.to_string()])
        .args(["-m", &q.memory_mib.to_string()])
        .args(["-nodefaults", "-display", "none"])
        .args(["-serial", serial])
        .args(["-device", "virtio-rng-pci"]);
    if !o.reboots {
        cmd.arg("-no-reboot");
    }
    if let Some(sock) = &o.shell {
        // The second 8250 UART (ttyS1) is built into the kernel, there from the first
        // instant; the debug shell's unit gives up if its tty is missing when it starts.
        let mut s = OsString::from("unix:");
        s.push(sock);
        s.push(",server=on,wait=off");
        cmd.arg("-serial").arg(s);
    }
    let mut drive = OsString::from("if=virtio,format=raw,file=");
    drive.push(&o.image);
    if o.snapshot {
        drive.push(",snapshot=on");
    }
    cmd.arg("-drive").arg(drive);
    match &o.network {
        Network::User { lan } => {
            let mut net = String::from("user,id=n0");
            let guest = match lan {
                Some(l) => {
                    net.push_str(&format!(",net={},host={}", l.net, l.host));
                    // QEMU's DNS needs an address of its own in the network: the last.
                    if let Some(dns) = last_host_address(&l.net) {
                        net.push_str(&format!(",dns={dns}"));
                    }
                    l.guest.as_str()
                }
                None => "",
            };
            for (h, g) in &o.forwards {
                net.push_str(&format!(",hostfwd=tcp:127.0.0.1:{h}-{guest}:{g}"));
            }
            cmd.args(["-netdev", &net, "-device", "virtio-net-pci,netdev=n0"]);
        }
        Network::Tap { ifname, mac } => {
            cmd.args([
                "-netdev",
                &format!("tap,id=n0,ifname={ifname},script=no,downscript=no"),
                "-device",
                &format!("virtio-net-pci,netdev=n0,mac={mac}"),
            ]);
        }
    }
    match &o.firmware {
        Firmware::Uefi => {
            let (Some(fw), Some(vars)) = (&q.firmware_code, vars) else {
                bail!("this target's [qemu] names no UEFI firmware (firmware-code, firmware-vars): boot it with --direct-kernel");
            };
            let mut code = OsString::from("if=pflash,format=raw,unit=0,readonly=on,file=");
            code.push(fw);
            let mut v = OsString::from("if=pflash,format=raw,unit=1,file=");
            v.push(vars);
            cmd.arg("-drive").arg(code).arg("-drive").arg(v);
            let words = o.cmdline_words();
            if !words.is_empty() {
                // systemd-boot appends SMBIOS type 11 `io.systemd.boot.kernel-cmdline-extra`
                // to the entry's command line: the test adds its words without a second
                // loader entry in the image.
                cmd.args([
                    "-smbios",
                    &format!(
                        "type=11,value=io.systemd.boot.kernel-cmdline-extra={}",
                        words.join(" ")
                    ),
                ]);
            }
        }
        Firmware::DirectKernel {
            kernel,
            initrd,
            cmdline,
        } => {
            let mut line = cmdline.clone();
            for w in &o.cmdline_words() {
                line.push(' ');
                line.push_str(w);
            }
            cmd.arg("-kernel")
                .arg(kernel)
                .arg("-initrd")
                .arg(initrd)
                .args(["-append", &line]);
        }
    }
    Ok(cmd)
}

/// A writable copy of the firmware's variable store (the template stays untouched), for a
/// UEFI boot.
pub(crate) fn vars_copy(o: &BootOptions, dir: &Path) -> Result<Option<PathBuf>> {
    let (Firmware::Uefi, Some(template)) = (&o.firmware, &o.qemu.firmware_vars) else {
        return Ok(None);
    };
    let dst = dir.join("efivars.fd");
    fs::copy(template, &dst).with_context(|| {
        format!("copying UEFI variables {template} (package ovmf, or qemu-efi-aarch64 for arm64)")
    })?;
    Ok(Some(dst))
}

/// Boots headless and waits for the verdict; the serial console goes to `serial_log`.
pub fn boot_and_wait(
    o: &BootOptions,
    serial_log: &Path,
    mut on_line: impl FnMut(&str),
) -> Result<BootReport> {
    let tmp = tempfile::tempdir()?;
    let vars = vars_copy(o, tmp.path())?;
    let mut cmd = command(o, vars.as_deref(), "stdio")?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let cmdline = tool::display(&cmd);
    let started = Instant::now();
    let mut child = Guard(
        cmd.spawn()
            .with_context(|| format!("starting `{cmdline}`"))?,
    );
    let stdout = child.0.stdout.take().expect("piped");
    let mut stderr = child.0.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut log =
        File::create(serial_log).with_context(|| format!("creating {}", serial_log.display()))?;
    let (tx, rx) = mpsc::channel::<String>();
    // The reader ends by itself when QEMU's stdout closes.
    std::thread::spawn(move || read_lines(stdout, tx));

    let deadline = started + o.timeout;
    let mut verdict = None;
    loop {
        crate::interrupt::check()?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(500));
        if left.is_zero() {
            break;
        }
        match rx.recv_timeout(left) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                on_line(&line);
                if let Some(v) = classify(&line) {
                    verdict = Some((v, started.elapsed()));
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let tail = |log_path: &Path| tail_of(log_path, 40);
    let Some((v, at)) = verdict else {
        let _ = log.flush();
        let exited = child.0.try_wait().ok().flatten();
        drop(child);
        let qemu_err = err_thread.join().unwrap_or_default();
        let why = match exited {
            Some(status) => format!("QEMU exited ({status}) before the node reported ready"),
            None => format!("no IMGFORGE-READY line within {} s", o.timeout.as_secs()),
        };
        bail!(crate::exit::BootFailed(format!(
            "boot failed: {why}\ncommand: {cmdline}\n{}--- last lines of the serial console ({}) ---\n{}",
            if qemu_err.trim().is_empty() { String::new() } else { format!("QEMU said: {}\n", qemu_err.trim()) },
            serial_log.display(),
            tail(serial_log)
        )));
    };
    match v {
        Verdict::Ready(line) => {
            // The worker powers off when the command line asks it to; give it time.
            let powered_off = if o.cmdline_extra.iter().any(|w| w == "imgforge.poweroff") {
                wait_exit(&mut child.0, Duration::from_secs(90), &rx, &mut log)
            } else {
                false
            };
            Ok(BootReport {
                ready_line: line,
                seconds_to_ready: at.as_secs_f64(),
                powered_off,
            })
        }
        other => {
            // Let the console flush a few more lines: they often say why.
            let until = Instant::now() + Duration::from_secs(3);
            while let Ok(l) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                let _ = writeln!(log, "{l}");
            }
            let _ = log.flush();
            let what = match other {
                Verdict::Failed(l) => l,
                Verdict::Panic(l) => format!("kernel panic: {l}"),
                Verdict::Emergency(l) => format!("emergency shell: {l}"),
                Verdict::Ready(_) => unreachable!(),
            };
            bail!(crate::exit::BootFailed(format!(
                "boot failed after {:.1} s: {what}\n--- last lines of the serial console ({}) ---\n{}",
                at.as_secs_f64(),
                serial_log.display(),
                tail(serial_log)
            )));
        }
    }
}

fn wait_exit(
    child: &mut Child,
    limit: Duration,
    rx: &mpsc::Receiver<String>,
    log: &mut File,
) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            let _ = writeln!(log, "{l}");
        }
    }
    false
}

/// Splits the console byte stream into lines (the guest writes CR LF and escape codes).
pub(crate) fn read_lines(mut r: impl Read, tx: mpsc::Sender<String>) {
    let mut buf = [0u8; 8192];
    let mut line = Vec::new();
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                let s = String::from_utf8_lossy(&line).replace('\r', "");
                if tx.send(s).is_err() {
                    return;
                }
                line.clear();
            } else {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
    }
}

pub(crate) fn tail_of(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Boots with the serial console (and QEMU's monitor, Ctrl-A C) on this terminal.
pub fn interactive(o: &BootOptions) -> Result<ExitStatus> {
    let tmp = tempfile::tempdir()?;
    let vars = vars_copy(o, tmp.path())?;
    let mut cmd = command(o, vars.as_deref(), "mon:stdio")?;
    let line = tool::display(&cmd);
    eprintln!("imgforge: {line}\nimgforge: Ctrl-A X quits QEMU");
    let mut child = Guard(cmd.spawn().with_context(|| format!("starting `{line}`"))?);
    // The terminal is in raw mode (Ctrl-C goes to the guest); a SIGTERM to imgforge must
    // still stop QEMU rather than leave it running unattended.
    loop {
        if let Some(status) = child.0.try_wait()? {
            return Ok(status);
        }
        crate::interrupt::check()?;
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_decide_the_boot() {
        assert_eq!(
            classify(
                "[   20.1] worker[301]: IMGFORGE-READY role=proxy target=x86_64-vm checks=4/4\r"
            ),
            Some(Verdict::Ready(
                "IMGFORGE-READY role=proxy target=x86_64-vm checks=4/4".into()
            ))
        );
        assert!(matches!(
            classify("IMGFORGE-FAILED role=proxy version=1 failed=gateway.service"),
            Some(Verdict::Failed(_))
        ));
        assert!(matches!(
            classify("[    3.2] Kernel panic - not syncing: VFS: Unable to mount root fs"),
            Some(Verdict::Panic(_))
        ));
        assert!(matches!(
            classify("You are in emergency mode. After logging in"),
            Some(Verdict::Emergency(_))
        ));
        assert_eq!(classify("[  OK  ] Reached target multi-user.target"), None);
    }

    #[test]
    fn lines_are_split_on_newlines_without_carriage_returns() {
        let (tx, rx) = mpsc::channel();
        read_lines(&b"one\r\ntwo\nthree"[..], tx);
        let got: Vec<String> = rx.iter().collect();
        assert_eq!(got, ["one", "two", "three"]);
    }
}
