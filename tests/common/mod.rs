//! Helpers shared by the integration tests: running imgforge and tools, scratch folders.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

/// Slow tests in one binary run one at a time: QEMU under TCG and a build on the same two
/// cores would only slow each other.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the imgforge under test in the checkout (so ./profiles and ./overlays are used).
pub fn imgforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgforge")).current_dir(env!("CARGO_MANIFEST_DIR")).args(args).output().expect("run imgforge")
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

/// (offset, size) in bytes of partition `n` (1-based), as sfdisk reads it.
pub fn partition(img: &Path, n: usize) -> (u64, u64) {
    // stdout only: on a disk enlarged after the build, sfdisk warns on stderr that the
    // backup GPT is not at the end.
    let o = Command::new("sfdisk").arg("--json").arg(img).output().unwrap();
    assert!(o.status.success(), "sfdisk --json {}: {}", img.display(), text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = &v["partitiontable"]["partitions"][n - 1];
    (p["start"].as_u64().unwrap() * 512, p["size"].as_u64().unwrap() * 512)
}

/// e2fsprogs' debugfs on the ext4 filesystem at `offset` in `img`: its stdout (the
/// version banner goes to stderr).
pub fn debugfs(img: &Path, offset: u64, request: &str) -> String {
    let o = Command::new("debugfs").arg("-R").arg(request).arg(format!("{}?offset={offset}", img.display())).output().unwrap();
    assert!(o.status.success(), "debugfs -R {request}: {}", text(&o.stderr));
    text(&o.stdout)
}
