//! uv, the resolver behind `imgforge lock`: a pinned release fetched as a wheel (by
//! Debian's pip, its hash checked) into `<cache>/tools/uv-<version>/uv`. uv resolves for a
//! Python and platform other than its own (`--python-version`, `--python-platform`),
//! environment markers included, which pip's resolver does not, and writes every file's
//! hash of each pinned version.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use super::debian_python;
use crate::cache::sha256_file;

pub const VERSION: &str = "0.13.9";

/// The release's wheels for the build machines imgforge runs on, with their sha256.
const WHEELS: &[(&str, &str)] = &[
    (
        "5435c5ce14a56431208ca0996416d310f1598e8c2c8ba707688985a16bb82dbe",
        "aarch64",
    ),
    (
        "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19",
        "x86_64",
    ),
];

/// The uv binary, fetched on first use.
pub fn ensure(tools: &Path) -> Result<PathBuf> {
    let dir = tools.join(format!("uv-{VERSION}"));
    let bin = dir.join("uv");
    if bin.exists() {
        return Ok(bin);
    }
    super::require_pip()?;
    fs::create_dir_all(tools)?;
    let scratch = tempfile::Builder::new()
        .prefix("tmp-uv-")
        .tempdir_in(tools)?;
    let req = scratch.path().join("uv.txt");
    let mut line = format!("uv=={VERSION}");
    for (h, _) in WHEELS {
        line.push_str(&format!(" --hash=sha256:{h}"));
    }
    fs::write(&req, line + "\n")?;
    let out = debian_python()
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--require-hashes",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "-d",
        ])
        .arg(scratch.path().join("whl"))
        .arg("-r")
        .arg(&req)
        .output()
        .context("starting /usr/bin/python3 -m pip download uv")?;
    if !out.status.success() {
        bail!(
            "fetching uv {VERSION} (for `imgforge lock`) failed:\n{}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let whl = fs::read_dir(scratch.path().join("whl"))?
        .next()
        .ok_or_else(|| anyhow!("pip downloaded no uv wheel"))??
        .path();
    let sha = sha256_file(&whl)?;
    if !WHEELS.iter().any(|(h, _)| *h == sha) {
        bail!("{}: sha256 {sha} is not uv {VERSION}'s", whl.display());
    }
    let unpacked = scratch.path().join("uv");
    let py = format!(
        "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('uv-{VERSION}.data/scripts/uv'))"
    );
    let ok = debian_python()
        .args(["-I", "-c", &py])
        .arg(&whl)
        .arg(&unpacked)
        .status()?
        .success();
    if !ok {
        bail!(
            "{}: no uv-{VERSION}.data/scripts/uv in the wheel",
            whl.display()
        );
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&unpacked, fs::Permissions::from_mode(0o755))?;
    let tmp_dir = scratch.path().join("dir");
    fs::create_dir_all(&tmp_dir)?;
    fs::rename(&unpacked, tmp_dir.join("uv"))?;
    match fs::rename(&tmp_dir, &dir) {
        Ok(()) => {}
        Err(_) if bin.exists() => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    Ok(bin)
}

/// uv with a cleared environment and its own cache in `tools`; the system's certificate
/// store (the machine's authorities, as pip's configuration uses them).
pub fn command(bin: &Path, tools: &Path) -> Command {
    let mut c = super::clean_command(bin);
    c.env("UV_CACHE_DIR", tools.join("uv-cache"))
        .env("UV_NO_CONFIG", "1")
        .env("UV_PYTHON_DOWNLOADS", "never");
    c
}
