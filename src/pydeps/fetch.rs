//! Wheels for a target, fetched once into `<cache>/wheels/<sha256>/<file name>` (shared by
//! every build, app and architecture) and checked against the lock's hashes on every use.
//!
//! Which file of a requirement suits a target is pip's choice, made once: the chosen
//! hashes are recorded under `<cache>/wheels/selected/<key>` (the key hashes the lock's
//! requirements and the target), so a warm build neither runs pip nor touches the network;
//! it re-hashes each cached file, which must still be the file the lock names.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use super::lock::{normalize, Lock, Req};
use super::{debian_python, Target};
use crate::cache::{sha256_file, KeyBuilder};
use crate::exit::UserError;

/// A wheel in the cache, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Wheel {
    pub name: String,
    pub file_name: String,
    pub sha256: String,
    pub path: PathBuf,
}

/// What one fetch did, for the build's progress lines and the tests.
#[derive(Debug, Default)]
pub struct Fetched {
    pub wheels: Vec<Wheel>,
    pub downloaded: usize,
    pub downloaded_bytes: u64,
    pub secs: f64,
}

fn user(msg: String) -> anyhow::Error {
    UserError(msg).into()
}

/// The lock checked against the target's Python, before anything is fetched.
pub fn check_python(app: &str, lock: &Lock, target: &Target, relock: &str) -> Result<()> {
    if let Some((v, line)) = &lock.python {
        if *v != target.python {
            return Err(user(format!(
                "app `{app}`: {} line {line}: this lock was made for Python {v}; the image's Python is {}: write it again with `{relock}`",
                lock.file, target.python
            )));
        }
    }
    Ok(())
}

fn selection_key(lock: &Lock, target: &Target) -> String {
    let mut k = KeyBuilder::new("wheels-selected");
    k.add_str("python", &target.python)
        .add_str("machine", target.machine())
        .add_str("glibc", &target.glibc.to_string());
    for r in &lock.reqs {
        k.add_str("req", &r.spec);
        let mut h = r.hashes.clone();
        h.sort();
        k.add_str("hashes", &h.join(","));
    }
    k.finish()
}

/// The cached wheel for each requirement of `lock`, fetching those not cached yet.
pub fn fetch(app: &str, lock: &Lock, target: &Target, dir: &Path) -> Result<Fetched> {
    let started = Instant::now();
    let record = dir.join("selected").join(selection_key(lock, target));
    let mut chosen: Vec<Option<Wheel>> = vec![None; lock.reqs.len()];
    if let Ok(text) = fs::read_to_string(&record) {
        for line in text.lines() {
            let mut w = line.splitn(3, ' ');
            let (Some(name), Some(sha), Some(file)) = (w.next(), w.next(), w.next()) else {
                continue;
            };
            let Some(i) = lock.reqs.iter().position(|r| r.name == name) else {
                continue;
            };
            let path = dir.join(sha).join(file);
            if lock.reqs[i].hashes.iter().any(|h| h == sha) && path.exists() {
                chosen[i] = Some(Wheel {
                    name: name.into(),
                    file_name: file.into(),
                    sha256: sha.into(),
                    path,
                });
            }
        }
    }
    // Every cached file is re-hashed: a damaged cache must not reach an image.
    for (r, w) in lock.reqs.iter().zip(&chosen) {
        if let Some(w) = w {
            let got = sha256_file(&w.path)?;
            if got != w.sha256 {
                return Err(user(format!(
                    "app `{app}`: {}: hash mismatch: the cached wheel {} has sha256 {got}, not the {} the lock names; the cache is damaged (delete {} to fetch it again)",
                    lock.at(r),
                    w.path.display(),
                    w.sha256,
                    w.path.parent().unwrap_or(&w.path).display()
                )));
            }
        }
    }
    let missing: Vec<&Req> = lock
        .reqs
        .iter()
        .zip(&chosen)
        .filter(|(_, w)| w.is_none())
        .map(|(r, _)| r)
        .collect();
    let mut out = Fetched::default();
    if !missing.is_empty() {
        super::require_pip()?;
        let got = download(app, lock, &missing, target, dir)?;
        out.downloaded = got.len();
        for w in got {
            out.downloaded_bytes += fs::metadata(&w.path).map(|m| m.len()).unwrap_or(0);
            let i = lock
                .reqs
                .iter()
                .position(|r| r.name == w.name)
                .expect("download maps files to requirements");
            chosen[i] = Some(w);
        }
        let mut text = String::new();
        for w in chosen.iter().flatten() {
            text.push_str(&format!("{} {} {}\n", w.name, w.sha256, w.file_name));
        }
        fs::create_dir_all(record.parent().unwrap())?;
        let tmp = record.with_extension("tmp");
        fs::write(&tmp, text)?;
        fs::rename(&tmp, &record)?;
    }
    for (r, w) in lock.reqs.iter().zip(&chosen) {
        if w.is_none() {
            return Err(user(format!(
                "app `{app}`: {}: pip fetched no wheel for it",
                lock.at(r)
            )));
        }
    }
    out.wheels = chosen.into_iter().flatten().collect();
    out.secs = started.elapsed().as_secs_f64();
    Ok(out)
}

/// `pip download` of `reqs` for the target into a scratch folder, then each file moved
/// into the cache under its sha256.
fn download(
    app: &str,
    lock: &Lock,
    reqs: &[&Req],
    target: &Target,
    dir: &Path,
) -> Result<Vec<Wheel>> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("tmp-download-")
        .tempdir_in(dir)
        .with_context(|| format!("creating a scratch folder in {}", dir.display()))?;
    let req_file = scratch.path().join("requirements.txt");
    let mut text = String::new();
    for r in reqs {
        text.push_str(&r.spec);
        for h in &r.hashes {
            text.push_str(&format!(" --hash=sha256:{h}"));
        }
        text.push('\n');
    }
    fs::write(&req_file, text)?;
    let files = scratch.path().join("files");
    let mut cmd = debian_python();
    cmd.args([
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
        "--implementation",
        "cp",
        "--python-version",
        &target.python,
        "--abi",
        &target.abi(),
    ]);
    for p in target.pip_platforms() {
        cmd.args(["--platform", &p]);
    }
    cmd.arg("-d").arg(&files).arg("-r").arg(&req_file);
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .context("starting /usr/bin/python3 -m pip download")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        return Err(explain(app, lock, target, &err));
    }
    let mut wheels = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(&files)
        .with_context(|| format!("reading {}", files.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let file_name = e.file_name().to_string_lossy().into_owned();
        let name = normalize(file_name.split('-').next().unwrap_or_default());
        let Some(r) = lock.find(&name) else {
            bail!(
                "pip downloaded {file_name}, which no requirement of {} names",
                lock.file
            );
        };
        let sha = sha256_file(&e.path())?;
        if !r.hashes.contains(&sha) {
            return Err(user(format!(
                "app `{app}`: {}: hash mismatch: the downloaded {file_name} has sha256 {sha}, which the lock does not list",
                lock.at(r)
            )));
        }
        let dest_dir = dir.join(&sha);
        fs::create_dir_all(&dest_dir)?;
        let dest = dest_dir.join(&file_name);
        fs::rename(e.path(), &dest)
            .with_context(|| format!("moving {file_name} into {}", dest_dir.display()))?;
        wheels.push(Wheel {
            name: r.name.clone(),
            file_name,
            sha256: sha,
            path: dest,
        });
    }
    Ok(wheels)
}

/// pip's failure said as the user's mistake: which app, file and requirement, and why.
fn explain(app: &str, lock: &Lock, target: &Target, err: &str) -> anyhow::Error {
    // "ERROR: Could not find a version that satisfies the requirement X==1 (from versions: ...)"
    if let Some(at) = err.find("satisfies the requirement ") {
        let rest = &err[at + "satisfies the requirement ".len()..];
        let spec = rest.split_whitespace().next().unwrap_or_default();
        let name = normalize(spec.split(['=', '[']).next().unwrap_or_default());
        if let Some(r) = lock.find(&name) {
            return match version_exists(&r.name, &r.version) {
                Some(false) => user(format!(
                    "app `{app}`: {}: version {} of {} does not exist on the package index (its versions: {})",
                    lock.at(r),
                    r.version,
                    r.name,
                    versions(&r.name).unwrap_or_else(|| "unknown".into())
                )),
                _ => user(format!(
                    "app `{app}`: {}: no wheel of {} {} for the image ({}); building it from source for the target is not supported: pick a version that publishes such a wheel, or take it from Debian (deps = \"debian\")",
                    lock.at(r),
                    r.name,
                    r.version,
                    target.describe()
                )),
            };
        }
    }
    // "THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. ...
    //     flask==3.1.3 from https://...:
    //         Expected sha256 abc
    //              Got        def"
    if err.contains("DO NOT MATCH THE HASHES") {
        let mut lines = err.lines();
        while let Some(l) = lines.next() {
            let l = l.trim();
            let Some((spec, _)) = l.split_once(" from ") else {
                continue;
            };
            let name = normalize(spec.split(['=', '[']).next().unwrap_or_default());
            let Some(r) = lock.find(&name) else { continue };
            let got = lines
                .clone()
                .find_map(|x| x.trim().strip_prefix("Got").map(|g| g.trim().to_string()))
                .unwrap_or_default();
            return user(format!(
                "app `{app}`: {}: hash mismatch: the file the index serves for {} has sha256 {got}, which the lock does not list (edited or stale lock: run `imgforge lock` again)",
                lock.at(r),
                r.name,
            ));
        }
    }
    anyhow!(
        "pip download for app `{app}` ({}) failed:\n{}",
        lock.file,
        err.trim()
    )
}

/// All versions of a package the index has (any file kind), via `pip index versions`.
fn versions(name: &str) -> Option<String> {
    let out = debian_python()
        .args([
            "-m",
            "pip",
            "index",
            "versions",
            "--pre",
            "--disable-pip-version-check",
            name,
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Available versions: ").map(str::to_string))
}

/// Whether the index has this version at all (None: could not ask).
fn version_exists(name: &str, version: &str) -> Option<bool> {
    let all = versions(name)?;
    Some(all.split(", ").any(|v| v == version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::machine::Arch;

    #[test]
    fn a_damaged_cached_wheel_is_refused_naming_app_file_and_requirement() {
        let d = tempfile::tempdir().unwrap();
        let good = b"not really a wheel";
        let sha = crate::cache::sha256_bytes(good);
        let lock = super::super::lock::parse(
            "app/requirements.txt",
            &format!("six==1.17.0 --hash=sha256:{sha}\n"),
        )
        .unwrap();
        let t = Target::for_suite("trixie", Arch::Arm64).unwrap();
        let file = "six-1.17.0-py2.py3-none-any.whl";
        fs::create_dir_all(d.path().join(&sha)).unwrap();
        fs::write(d.path().join(&sha).join(file), good).unwrap();
        fs::create_dir_all(d.path().join("selected")).unwrap();
        fs::write(
            d.path().join("selected").join(selection_key(&lock, &t)),
            format!("six {sha} {file}\n"),
        )
        .unwrap();
        let f = fetch("web", &lock, &t, d.path()).unwrap();
        assert_eq!(f.downloaded, 0);
        assert_eq!(f.wheels[0].file_name, file);
        fs::write(d.path().join(&sha).join(file), b"tampered").unwrap();
        let e = format!("{:#}", fetch("web", &lock, &t, d.path()).unwrap_err());
        assert!(
            e.contains("app `web`: app/requirements.txt line 1: `six==1.17.0`: hash mismatch"),
            "{e}"
        );
    }

    #[test]
    fn a_lock_for_another_python_is_refused() {
        let lock = super::super::lock::parse(
            "r.txt",
            &format!(
                "# imgforge-lock: python 3.11\nsix==1 --hash=sha256:{}\n",
                "a".repeat(64)
            ),
        )
        .unwrap();
        let t = Target::for_suite("trixie", Arch::Amd64).unwrap();
        let e = check_python("web", &lock, &t, "imgforge lock web")
            .unwrap_err()
            .to_string();
        assert!(e.contains("app `web`: r.txt line 1: this lock was made for Python 3.11; the image's Python is 3.13"), "{e}");
    }
}
