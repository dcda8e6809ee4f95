//! Wheels for a target, fetched once into `<cache>/wheels/<sha256>/<file name>` (shared by
//! every build, app and architecture) and checked against the lock's hashes on every use.
//!
//! Which file of a requirement suits a target is pip's choice, made once: the chosen
//! hashes are recorded under `<cache>/wheels/selected/<key>` (the key hashes the lock's
//! requirements and the target), so a warm build neither runs pip nor touches the network;
//! it re-hashes each cached file, which must still be the file the lock names.
//!
//! A requirement with no wheel for the target is built from its source archive (sdist),
//! fetched with the hash the lock lists for it, by a `SourceBuild` (the build stage's
//! chroot of the image's suite and CPU). The wheel it makes is kept under
//! `<cache>/wheels/built/<sdist sha256>/<target key>/`, and its record line names the
//! sdist's hash (which must be one the lock lists) and the built wheel's own, which the
//! cached file must still have.

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

/// A requirement's source archive in the cache, checked against the lock.
#[derive(Debug, Clone, PartialEq)]
pub struct Sdist {
    pub name: String,
    pub version: String,
    pub file_name: String,
    pub sha256: String,
    pub path: PathBuf,
}

/// Builds a wheel for the target from a source archive.
pub trait SourceBuild {
    /// Builds `sdist` (of `req`, in `lock`) into exactly one `.whl` in `out`; a failure
    /// the user can fix (a missing build backend, a compile error) is a `UserError`
    /// naming the app, the lock's file and line, and the requirement.
    fn build(&mut self, app: &str, lock: &Lock, req: &Req, sdist: &Sdist, out: &Path)
        -> Result<()>;
}

/// What one fetch did, for the build's progress lines and the tests.
#[derive(Debug, Default)]
pub struct Fetched {
    pub wheels: Vec<Wheel>,
    pub downloaded: usize,
    pub downloaded_bytes: u64,
    /// Requirements built from source in this fetch.
    pub built: usize,
    /// Requirements with no wheel for the target that were not built (fetch without a
    /// builder: `imgforge lock`); `imgforge build` builds them.
    pub unbuilt: Vec<String>,
    pub secs: f64,
}

/// Where the target's wheels built from source are kept, below `built/<sdist sha256>/`.
fn target_key(target: &Target) -> String {
    format!(
        "{}-{}-glibc2.{}",
        target.abi(),
        target.machine(),
        target.glibc
    )
}

fn built_path(dir: &Path, sdist_sha: &str, target: &Target, file: &str) -> PathBuf {
    dir.join("built")
        .join(sdist_sha)
        .join(target_key(target))
        .join(file)
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

/// One line of the `selected` record: a wheel downloaded (`name sha256 file`) or built
/// from source (`name sha256 file built-from <sdist sha256>`).
fn record_line(w: &Wheel, built_from: Option<&str>) -> String {
    match built_from {
        Some(sdist) => format!(
            "{} {} {} built-from {sdist}\n",
            w.name, w.sha256, w.file_name
        ),
        None => format!("{} {} {}\n", w.name, w.sha256, w.file_name),
    }
}

/// The cached wheel for each requirement of `lock`, fetching those not cached yet, and
/// building with `builder` those that have no wheel for the target.
pub fn fetch(
    app: &str,
    lock: &Lock,
    target: &Target,
    dir: &Path,
    builder: Option<&mut dyn SourceBuild>,
) -> Result<Fetched> {
    let started = Instant::now();
    let record = dir.join("selected").join(selection_key(lock, target));
    let mut chosen: Vec<Option<Wheel>> = vec![None; lock.reqs.len()];
    // The sdist's hash of each wheel built from source, by requirement.
    let mut built_from: Vec<Option<String>> = vec![None; lock.reqs.len()];
    if let Ok(text) = fs::read_to_string(&record) {
        for line in text.lines() {
            let w: Vec<&str> = line.split(' ').collect();
            let (name, sha, file, sdist) = match w[..] {
                [name, sha, file] => (name, sha, file, None),
                [name, sha, file, "built-from", sdist] => (name, sha, file, Some(sdist)),
                _ => continue,
            };
            let Some(i) = lock.reqs.iter().position(|r| r.name == name) else {
                continue;
            };
            // A downloaded wheel is itself a file the lock lists; a built one was made from
            // a file the lock lists, and is checked against its own recorded hash below.
            let (path, listed) = match sdist {
                None => (dir.join(sha).join(file), sha),
                Some(s) => (built_path(dir, s, target, file), s),
            };
            if lock.reqs[i].hashes.iter().any(|h| h == listed) && path.exists() {
                chosen[i] = Some(Wheel {
                    name: name.into(),
                    file_name: file.into(),
                    sha256: sha.into(),
                    path,
                });
                built_from[i] = sdist.map(str::to_string);
            }
        }
    }
    // Every cached file is re-hashed: a damaged cache must not reach an image.
    for ((r, w), b) in lock.reqs.iter().zip(&chosen).zip(&built_from) {
        if let Some(w) = w {
            let got = sha256_file(&w.path)?;
            if got != w.sha256 {
                let whose = match b {
                    None => "the lock names",
                    Some(_) => "recorded when it was built from source",
                };
                return Err(user(format!(
                    "app `{app}`: {}: hash mismatch: the cached wheel {} has sha256 {got}, not the {} {whose}; the cache is damaged (delete {} to fetch it again)",
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
        let (got, from_source) = download_wheels(app, lock, &missing, target, dir)?;
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
        if !from_source.is_empty() {
            match builder {
                None => out.unbuilt = from_source.iter().map(|r| r.spec.clone()).collect(),
                Some(b) => {
                    let sdists = download_sdists(app, lock, &from_source, target, dir)?;
                    out.downloaded += sdists.len();
                    for sd in &sdists {
                        out.downloaded_bytes +=
                            fs::metadata(&sd.path).map(|m| m.len()).unwrap_or(0);
                        let r = lock.find(&sd.name).expect("sdists map to requirements");
                        let w = build_one(app, lock, r, sd, target, dir, b)?;
                        let i = lock.reqs.iter().position(|x| x.name == r.name).unwrap();
                        chosen[i] = Some(w);
                        built_from[i] = Some(sd.sha256.clone());
                        out.built += 1;
                    }
                }
            }
        }
        let mut text = String::new();
        for (w, b) in chosen.iter().zip(&built_from) {
            if let Some(w) = w {
                text.push_str(&record_line(w, b.as_deref()));
            }
        }
        fs::create_dir_all(record.parent().unwrap())?;
        let tmp = record.with_extension("tmp");
        fs::write(&tmp, text)?;
        fs::rename(&tmp, &record)?;
    }
    for (r, w) in lock.reqs.iter().zip(&chosen) {
        if w.is_none() && !out.unbuilt.contains(&r.spec) {
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

/// What `pip download` fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    /// Wheels for the target's Python, ABI and platform tags.
    Wheel,
    /// Source archives, for the requirements no wheel fits.
    Sdist,
}

/// The target's wheels for `reqs`, and the requirements that have none (pip says "from
/// versions: none" for a version that exists on the index in other files only): those are
/// found one at a time, each failing download naming one.
fn download_wheels<'a>(
    app: &str,
    lock: &Lock,
    reqs: &[&'a Req],
    target: &Target,
    dir: &Path,
) -> Result<(Vec<Wheel>, Vec<&'a Req>)> {
    let mut todo: Vec<&Req> = reqs.to_vec();
    let mut from_source = Vec::new();
    loop {
        if todo.is_empty() {
            return Ok((Vec::new(), from_source));
        }
        match download(&todo, target, dir, FileKind::Wheel) {
            Ok(files) => {
                let wheels = into_cache(app, lock, dir, files)?
                    .into_iter()
                    .map(|(r, file_name, sha256, path)| Wheel {
                        name: r.name.clone(),
                        file_name,
                        sha256,
                        path,
                    })
                    .collect();
                return Ok((wheels, from_source));
            }
            Err(err) => match no_wheel_for(lock, &err) {
                Some(r) if todo.iter().any(|t| t.name == r.name) => {
                    todo.retain(|t| t.name != r.name);
                    from_source.push(reqs.iter().find(|t| t.name == r.name).copied().unwrap());
                }
                _ => return Err(explain(app, lock, target, &err)),
            },
        }
    }
}

/// The source archives of `reqs` (which have no wheel for the target), checked against
/// the lock's hashes.
fn download_sdists(
    app: &str,
    lock: &Lock,
    reqs: &[&Req],
    target: &Target,
    dir: &Path,
) -> Result<Vec<Sdist>> {
    let files = download(reqs, target, dir, FileKind::Sdist)
        .map_err(|err| explain_sdist(app, lock, target, &err))?;
    Ok(into_cache(app, lock, dir, files)?
        .into_iter()
        .map(|(r, file_name, sha256, path)| Sdist {
            name: r.name.clone(),
            version: r.version.clone(),
            file_name,
            sha256,
            path,
        })
        .collect())
}

/// `sdist` built into a wheel for the target by `builder`, moved into the cache under the
/// sdist's hash and the target.
fn build_one(
    app: &str,
    lock: &Lock,
    r: &Req,
    sdist: &Sdist,
    target: &Target,
    dir: &Path,
    builder: &mut dyn SourceBuild,
) -> Result<Wheel> {
    let scratch = tempfile::Builder::new()
        .prefix("tmp-built-")
        .tempdir_in(dir)
        .with_context(|| format!("creating a scratch folder in {}", dir.display()))?;
    builder.build(app, lock, r, sdist, scratch.path())?;
    let wheels: Vec<_> = fs::read_dir(scratch.path())?
        .collect::<std::io::Result<Vec<_>>>()?
        .into_iter()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".whl"))
        .collect();
    let [whl] = &wheels[..] else {
        bail!(
            "app `{app}`: {}: building {} made {} wheels, not one",
            lock.at(r),
            sdist.file_name,
            wheels.len()
        );
    };
    let file_name = whl.file_name().to_string_lossy().into_owned();
    // `name-version-python-abi-platform.whl`: a wheel for another CPU (a builder that is not
    // the target's) must never be installed.
    let platform = file_name
        .trim_end_matches(".whl")
        .rsplit('-')
        .next()
        .unwrap_or_default();
    if platform != "any" && !platform.ends_with(target.machine()) {
        bail!(
            "app `{app}`: {}: the wheel built from source, {file_name}, is not for {}",
            lock.at(r),
            target.machine()
        );
    }
    let dest = built_path(dir, &sdist.sha256, target, &file_name);
    let parent = dest.parent().unwrap();
    if parent.exists() {
        fs::remove_dir_all(parent).with_context(|| format!("removing {}", parent.display()))?;
    }
    fs::create_dir_all(parent)?;
    fs::rename(whl.path(), &dest)
        .with_context(|| format!("moving {file_name} into {}", parent.display()))?;
    Ok(Wheel {
        name: r.name.clone(),
        sha256: sha256_file(&dest)?,
        file_name,
        path: dest,
    })
}

/// `pip download` of `reqs` for the target into a scratch folder; the folder and the files
/// pip wrote, or pip's error output.
fn download(
    reqs: &[&Req],
    target: &Target,
    dir: &Path,
    kind: FileKind,
) -> std::result::Result<(tempfile::TempDir, Vec<PathBuf>), String> {
    let io = |e: std::io::Error| format!("{e}");
    fs::create_dir_all(dir).map_err(io)?;
    let scratch = tempfile::Builder::new()
        .prefix("tmp-download-")
        .tempdir_in(dir)
        .map_err(|e| format!("creating a scratch folder in {}: {e}", dir.display()))?;
    let req_file = scratch.path().join("requirements.txt");
    let mut text = String::new();
    for r in reqs {
        text.push_str(&r.spec);
        for h in &r.hashes {
            text.push_str(&format!(" --hash=sha256:{h}"));
        }
        text.push('\n');
    }
    fs::write(&req_file, text).map_err(io)?;
    let files = scratch.path().join("files");
    let mut cmd = debian_python();
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--require-hashes",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
    ]);
    match kind {
        FileKind::Wheel => {
            cmd.args([
                "--only-binary=:all:",
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
        }
        FileKind::Sdist => {
            cmd.arg("--no-binary=:all:");
        }
    }
    cmd.arg("-d").arg(&files).arg("-r").arg(&req_file);
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("starting /usr/bin/python3 -m pip download: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let mut entries: Vec<PathBuf> = fs::read_dir(&files)
        .map_err(|e| format!("reading {}: {e}", files.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(io)?;
    entries.sort();
    Ok((scratch, entries))
}

/// Each downloaded file checked against its requirement's hashes and moved into the cache
/// under its sha256: (requirement, file name, sha256, path in the cache).
fn into_cache<'l>(
    app: &str,
    lock: &'l Lock,
    dir: &Path,
    (_scratch, files): (tempfile::TempDir, Vec<PathBuf>),
) -> Result<Vec<(&'l Req, String, String, PathBuf)>> {
    let mut out = Vec::new();
    for path in files {
        let file_name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        // Wheels and sdists both begin `name-version`; an sdist's name part may keep its
        // original spelling (`Flask-Login-0.6.3.tar.gz`): its last `-` before the version.
        let Some(r) = lock.reqs.iter().find(|r| {
            let stem = file_name.to_ascii_lowercase().replace('_', "-");
            stem.starts_with(&format!("{}-{}", r.name, r.version.to_ascii_lowercase()))
                || normalize(file_name.split('-').next().unwrap_or_default()) == r.name
        }) else {
            bail!(
                "pip downloaded {file_name}, which no requirement of {} names",
                lock.file
            );
        };
        let sha = sha256_file(&path)?;
        if !r.hashes.contains(&sha) {
            return Err(user(format!(
                "app `{app}`: {}: hash mismatch: the downloaded {file_name} has sha256 {sha}, which the lock does not list",
                lock.at(r)
            )));
        }
        let dest_dir = dir.join(&sha);
        fs::create_dir_all(&dest_dir)?;
        let dest = dest_dir.join(&file_name);
        fs::rename(&path, &dest)
            .with_context(|| format!("moving {file_name} into {}", dest_dir.display()))?;
        out.push((r, file_name, sha, dest));
    }
    Ok(out)
}

/// The requirement pip found no wheel of for the target, when its version exists on the
/// index (so a source archive may).
fn no_wheel_for<'l>(lock: &'l Lock, err: &str) -> Option<&'l Req> {
    let r = failed_requirement(lock, err)?;
    (version_exists(&r.name, &r.version) == Some(true)).then_some(r)
}

/// "ERROR: Could not find a version that satisfies the requirement X==1 (from versions: ...)"
fn failed_requirement<'l>(lock: &'l Lock, err: &str) -> Option<&'l Req> {
    let at = err.find("satisfies the requirement ")?;
    let rest = &err[at + "satisfies the requirement ".len()..];
    let spec = rest.split_whitespace().next().unwrap_or_default();
    lock.find(&normalize(
        spec.split(['=', '[']).next().unwrap_or_default(),
    ))
}

/// The sdist download's failure said as the user's mistake: no source archive either, or
/// one whose hash the lock does not list.
fn explain_sdist(app: &str, lock: &Lock, target: &Target, err: &str) -> anyhow::Error {
    if let Some(r) = failed_requirement(lock, err) {
        return user(format!(
            "app `{app}`: {}: no wheel of {} {} for the image ({}) and no source archive to build one from: pick a version that publishes either, or take it from Debian (deps = \"debian\")",
            lock.at(r),
            r.name,
            r.version,
            target.describe()
        ));
    }
    if let Some((r, got)) = hash_mismatch(lock, err) {
        return user(format!(
            "app `{app}`: {}: no wheel of {} {} fits the image ({}), so it is built from its source archive, but the lock lists no hash of that archive (the index's has sha256 {got}): write the lock with the sdist's hash too (`imgforge lock`, or `pip hash` of the .tar.gz)",
            lock.at(r),
            r.name,
            r.version,
            target.describe()
        ));
    }
    anyhow!(
        "pip download of source archives for app `{app}` ({}) failed:\n{}",
        lock.file,
        err.trim()
    )
}

/// "THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. ...
///     flask==3.1.3 from https://...:
///         Expected sha256 abc
///              Got        def"
fn hash_mismatch<'l>(lock: &'l Lock, err: &str) -> Option<(&'l Req, String)> {
    if !err.contains("DO NOT MATCH THE HASHES") {
        return None;
    }
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
        return Some((r, got));
    }
    None
}

/// pip's failure said as the user's mistake: which app, file and requirement, and why.
fn explain(app: &str, lock: &Lock, target: &Target, err: &str) -> anyhow::Error {
    if let Some(r) = failed_requirement(lock, err) {
        return match version_exists(&r.name, &r.version) {
            Some(false) => user(format!(
                "app `{app}`: {}: version {} of {} does not exist on the package index (its versions: {})",
                lock.at(r),
                r.version,
                r.name,
                versions(&r.name).unwrap_or_else(|| "unknown".into())
            )),
            _ => user(format!(
                "app `{app}`: {}: no wheel of {} {} for the image ({}), and the package index could not be asked whether a source archive exists",
                lock.at(r),
                r.name,
                r.version,
                target.describe()
            )),
        };
    }
    if let Some((r, got)) = hash_mismatch(lock, err) {
        return user(format!(
            "app `{app}`: {}: hash mismatch: the file the index serves for {} has sha256 {got}, which the lock does not list (edited or stale lock: run `imgforge lock` again)",
            lock.at(r),
            r.name,
        ));
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
        let f = fetch("web", &lock, &t, d.path(), None).unwrap();
        assert_eq!(f.downloaded, 0);
        assert_eq!(f.wheels[0].file_name, file);
        fs::write(d.path().join(&sha).join(file), b"tampered").unwrap();
        let e = format!("{:#}", fetch("web", &lock, &t, d.path(), None).unwrap_err());
        assert!(
            e.contains("app `web`: app/requirements.txt line 1: `six==1.17.0`: hash mismatch"),
            "{e}"
        );
    }

    #[test]
    fn a_wheel_built_from_source_is_found_warm_and_refused_when_tampered() {
        let d = tempfile::tempdir().unwrap();
        let sdist = crate::cache::sha256_bytes(b"the source archive");
        let lock = super::super::lock::parse(
            "tests/fixtures/apps/crc-src/requirements.txt",
            &format!("# header\ncrcmod==1.7 \\\n    --hash=sha256:{sdist}\n"),
        )
        .unwrap();
        let t = Target::for_suite("trixie", Arch::Amd64).unwrap();
        let file = "crcmod-1.7-cp313-cp313-linux_x86_64.whl";
        let built = b"a wheel built here";
        let sha = crate::cache::sha256_bytes(built);
        let path = built_path(d.path(), &sdist, &t, file);
        assert!(path.ends_with(format!("built/{sdist}/cp313-x86_64-glibc2.41/{file}")));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, built).unwrap();
        fs::create_dir_all(d.path().join("selected")).unwrap();
        let record = d.path().join("selected").join(selection_key(&lock, &t));
        fs::write(&record, format!("crcmod {sha} {file} built-from {sdist}\n")).unwrap();
        // Warm: no pip, no builder, nothing downloaded.
        let f = fetch("crc", &lock, &t, d.path(), None).unwrap();
        assert_eq!((f.downloaded, f.built), (0, 0));
        assert_eq!(f.wheels[0].path, path);
        fs::write(&path, b"tampered").unwrap();
        let e = format!("{:#}", fetch("crc", &lock, &t, d.path(), None).unwrap_err());
        assert!(
            e.contains("app `crc`: tests/fixtures/apps/crc-src/requirements.txt line 2: `crcmod==1.7`: hash mismatch: the cached wheel")
                && e.contains(&format!("not the {sha} recorded when it was built from source")),
            "{e}"
        );
    }

    #[test]
    fn a_lock_without_the_sdists_hash_is_refused_naming_app_file_line_and_requirement() {
        let lock = super::super::lock::parse(
            "app/requirements.txt",
            &format!(
                "six==1.17.0 --hash=sha256:{}\ncrcmod==1.7 --hash=sha256:{}\n",
                "b".repeat(64),
                "a".repeat(64)
            ),
        )
        .unwrap();
        let t = Target::for_suite("trixie", Arch::Arm64).unwrap();
        // pip 25's words, the index's address left out.
        let pip = format!(
            "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. If you have updated the package versions, please update the hashes.\n    crcmod==1.7 from https://index.invalid/crcmod-1.7.tar.gz (from -r r.txt (line 1)):\n        Expected sha256 {}\n             Got        {}\n",
            "a".repeat(64),
            "d".repeat(64)
        );
        let e = explain_sdist("crc", &lock, &t, &pip).to_string();
        assert!(
            e.starts_with("app `crc`: app/requirements.txt line 2: `crcmod==1.7`: no wheel of crcmod 1.7 fits the image (Python 3.13 (cp313), aarch64, glibc 2.41), so it is built from its source archive, but the lock lists no hash of that archive (the index's has sha256 dddd"),
            "{e}"
        );
        let none = "ERROR: Could not find a version that satisfies the requirement crcmod==1.7 (from versions: none)\n";
        let e = explain_sdist("crc", &lock, &t, none).to_string();
        assert!(e.contains("app `crc`: app/requirements.txt line 2: `crcmod==1.7`: no wheel of crcmod 1.7 for the image"), "{e}");
        assert!(e.contains("no source archive to build one from"), "{e}");
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
