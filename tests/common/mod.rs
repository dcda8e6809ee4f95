//! Helpers shared by the integration tests: running imgforge and tools, scratch folders.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use std::sync::{Mutex, MutexGuard};

/// Slow tests in one binary run one at a time: QEMU under TCG and a build on the same two
/// cores would only slow each other.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the imgforge under test in the checkout (so ./profiles and ./overlays are used).
pub fn imgforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgforge"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("run imgforge")
}

/// Runs the imgforge under test in `cwd` (a scratch folder: its ./profiles adds to the
/// embedded profiles).
pub fn imgforge_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgforge"))
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("run imgforge")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fresh scratch folder under cargo's target tmp dir.
pub fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `cmd`, failing the test with its output if it fails; returns stdout and stderr.
pub fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{cmd:?} failed:\n{all}");
    all
}

/// The sha256 of `path` (its first `len` bytes if given) by OpenSSL's `dgst`: a tool we did
/// not write, and several times faster than coreutils' sha256sum on the multi-GiB disk
/// files the slow tests compare (it uses the CPU's SHA instructions).
pub fn sha256_of(path: &Path, len: Option<u64>) -> String {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Command::new("openssl")
        .args(["dgst", "-sha256", "-r"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run openssl dgst");
    let mut stdin = h.stdin.take().unwrap();
    match len {
        Some(n) => std::io::copy(&mut f.take(n), &mut stdin),
        None => std::io::copy(&mut f, &mut stdin),
    }
    .unwrap_or_else(|e| panic!("hashing {}: {e}", path.display()));
    drop(stdin);
    let o = h.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "openssl dgst of {} failed",
        path.display()
    );
    let hex = text(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    assert_eq!(hex.len(), 64, "openssl dgst of {}: {hex}", path.display());
    hex
}

/// (offset, size) in bytes of partition `n` (1-based), as sfdisk reads it.
pub fn partition(img: &Path, n: usize) -> (u64, u64) {
    // stdout only: on a disk enlarged after the build, sfdisk warns on stderr that the
    // backup GPT is not at the end.
    let o = Command::new("sfdisk")
        .arg("--json")
        .arg(img)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "sfdisk --json {}: {}",
        img.display(),
        text(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // By number (sfdisk names partition n of a file `<file>n`): an MBR's logical partitions
    // start at 5, so the list's order is not the numbering.
    let node = format!("{}{n}", img.display());
    let p = v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node"] == node.as_str())
        .unwrap_or_else(|| panic!("no partition {n} on {}: {v}", img.display()));
    (
        p["start"].as_u64().unwrap() * 512,
        p["size"].as_u64().unwrap() * 512,
    )
}

/// e2fsprogs' debugfs on the ext4 filesystem at `offset` in `img`: its stdout (the
/// version banner goes to stderr).
pub fn debugfs(img: &Path, offset: u64, request: &str) -> String {
    let o = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(format!("{}?offset={offset}", img.display()))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "debugfs -R {request}: {}",
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// Runs the image's own `systemd-analyze verify` (chroot into the root compose wrote, found
/// through the manifest's stage key) on every unit imgforge generated; fails the test on any
/// error or warning. Returns the units verified.
pub fn verify_generated_units(manifest: &Path, scratch: &str) -> Vec<String> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    let key = manifest["stages"]["compose"].as_str().unwrap();
    let root = tmp(scratch);
    let tar = imgforge::cache::default_dir()
        .join("stages/compose")
        .join(key)
        .join("root.tar");
    run(Command::new("tar").arg("-xf").arg(tar).arg("-C").arg(&root));
    let mut units = Vec::new();
    for e in std::fs::read_dir(root.join("etc/systemd/system")).unwrap() {
        let p = e.unwrap().path();
        if std::fs::read_to_string(&p)
            .unwrap_or_default()
            .starts_with("# Generated by imgforge")
        {
            units.push(format!(
                "/etc/systemd/system/{}",
                p.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    units.sort();
    // The image's systemd (257), not the building machine's older one.
    let o = Command::new("chroot")
        .arg(&root)
        .args(["systemd-analyze", "verify", "--man=no"])
        .args(&units)
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert!(
        o.status.success() && err.trim().is_empty(),
        "systemd-analyze verify {units:?}:\n{err}"
    );
    // The firewall, checked by the image's own nft in a network namespace of its own.
    let o = Command::new("unshare")
        .args(["--net", "chroot"])
        .arg(&root)
        .args(["nft", "-c", "-f", "/etc/nftables.conf"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "nft -c -f /etc/nftables.conf in the image:\n{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&root);
    units
}

/// A free port on the loopback (a web server's, or one QEMU forwards).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `python3 -m http.server` on the loopback: the static web server a user would put a
/// publish folder behind (a guest reaches it as 10.0.2.2). Stopped on drop.
pub struct Server(Child);

impl Server {
    pub fn start(root: &Path, port: u16) -> Server {
        let s = Server(
            Command::new("python3")
                .args(["-m", "http.server", "--bind", "127.0.0.1"])
                .arg(port.to_string())
                .current_dir(root)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "http.server did not listen");
            std::thread::sleep(Duration::from_millis(200));
        }
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
