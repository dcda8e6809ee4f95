//! The binaries stage: the project's `gateway` and `worker` built for the target triple.
//!
//! The key hashes the crates' sources, the lock file and the compiler's version, so an
//! unchanged tree skips cargo entirely. Paths are remapped so the binaries (and with them
//! the image) do not depend on where the checkout or cargo's home lies.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};

use super::{BuildOptions, Stage};
use crate::cache::{sha256_file, KeyBuilder};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::tool;

pub const BINARIES: &[&str] = &["gateway", "worker"];
const NAME: &str = "binaries";

pub struct Binaries {
    /// (name, path) of each built binary.
    pub files: Vec<(String, PathBuf)>,
    /// Hash of all the binaries' bytes: what compose's key depends on.
    pub content_hash: String,
}

/// The binaries stage once started: found in the cache, or cargo running in the background
/// while the base stage runs (they load the machine differently: mmdebstrap is mostly dpkg
/// on one core and disk I/O, cargo uses every core).
pub enum Started {
    Cached(PathBuf),
    Building(Build),
}

pub struct Build {
    key: String,
    child: KillOnDrop,
    log: tempfile::NamedTempFile,
    /// Where cargo leaves the built binaries.
    out_dir: PathBuf,
    rust_target: String,
    started: SystemTime,
}

/// Stops cargo if the build ends early (the base stage failed or was interrupted).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn start(plan: &Plan, opts: &BuildOptions) -> Result<Started> {
    let src = &opts.source_dir;
    if !src.join("crates/gateway/Cargo.toml").is_file() {
        return Err(crate::exit::UserError(format!(
            "the gateway and worker sources are not at {} (crates/gateway/Cargo.toml missing); pass --source with the imgforge checkout",
            src.display()
        ))
        .into());
    }
    let tc = super::toolchain::for_target(&plan.rust_target)?;
    let rustc = tool::run(Command::new(&tc.rustc).arg("-vV")).with_context(|| {
        format!(
            "asking {} for its version (is a Rust toolchain installed?)",
            tc.rustc.display()
        )
    })?;
    let mut key = KeyBuilder::new(NAME);
    key.add_str("target", &plan.rust_target)
        .add("rustc", &rustc)
        .add_str("toolchain", tc.label);
    for rel in source_files(src)? {
        let h = sha256_file(&src.join(&rel))?;
        key.add_str(&rel, &h);
    }
    let key = key.finish();
    if !opts.forced(Stage::Binaries) {
        if let Some(dir) = opts.cache.lookup(NAME, &key) {
            return Ok(Started::Cached(dir));
        }
    }
    // For the machine's own triple the binaries come from the target folder that
    // scripts/build and scripts/test build in (scripts/cargo-env.sh: the same folder, flags
    // and packages), so a first build does not compile the gateway and worker twice: cargo
    // finds them fresh. A cross build keeps a target folder of its own.
    let rustc_vv = String::from_utf8_lossy(&rustc);
    let native = host_triple(&rustc_vv) == Some(plan.rust_target.as_str());
    let (target_dir, out_dir) = if native {
        // CARGO_TARGET_DIR, as cargo itself reads it (relative to the workspace, where cargo
        // runs), when the caller set one: scripts/cargo-env.sh does, and bench/build.sh keeps
        // it while it points the stage cache elsewhere.
        let dir = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(d) if !d.is_empty() => src.join(d),
            _ => host_target_dir(opts.cache.root()),
        };
        (dir.clone(), dir.join("release"))
    } else {
        let dir = opts.cache.aux_dir(tc.target_dir)?;
        (dir.clone(), dir.join(&plan.rust_target).join("release"))
    };
    let flags = reproducible_rustflags();
    let log = tempfile::NamedTempFile::new().context("creating cargo's log file")?;
    let mut cmd = Command::new(&tc.cargo);
    cmd.current_dir(src)
        .envs(tc.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("CARGO_ENCODED_RUSTFLAGS", flags)
        .args(["build", "--release", "--locked"])
        .arg("--target-dir")
        .arg(&target_dir)
        .stdin(Stdio::null())
        .stdout(log.reopen()?)
        .stderr(log.reopen()?);
    if !native {
        cmd.args(["--target", &plan.rust_target]);
    }
    for b in BINARIES {
        cmd.args(["-p", b]);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting `{}`", tool::display(&cmd)))?;
    Ok(Started::Building(Build {
        key,
        child: KillOnDrop(child),
        log,
        out_dir,
        rust_target: plan.rust_target.clone(),
        started: SystemTime::now(),
    }))
}

/// Waits for cargo (if it runs) and returns the binaries from the cache.
pub fn finish(started: Started, opts: &BuildOptions, progress: &mut Progress) -> Result<Binaries> {
    let dir = match started {
        Started::Cached(dir) => {
            progress.cached(NAME);
            dir
        }
        Started::Building(mut b) => {
            progress.start(
                NAME,
                &format!(
                    "waiting for cargo build --release of gateway and worker ({})",
                    b.rust_target
                ),
            );
            let status = b.child.0.wait().context("waiting for cargo")?;
            if !status.success() {
                crate::interrupt::check()?;
                let text = std::fs::read_to_string(b.log.path()).unwrap_or_default();
                let tail: Vec<&str> = text
                    .lines()
                    .rev()
                    .take(25)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                bail!(
                    "building the gateway and worker: cargo failed ({status}):\n{}",
                    tail.join("\n")
                );
            }
            let pending = opts.cache.begin(NAME, &b.key)?;
            for name in BINARIES {
                let built = b.out_dir.join(name);
                fs::copy(&built, pending.path().join(name))
                    .with_context(|| format!("copying {}", built.display()))?;
            }
            let dir = pending.commit()?;
            // cargo may have finished long before the base did; its log's last write (the
            // "Finished" line) says when, so the summary shows cargo's own time.
            let ended = fs::metadata(b.log.path())
                .and_then(|m| m.modified())
                .unwrap_or_else(|_| SystemTime::now());
            let took = ended.duration_since(b.started).unwrap_or_default();
            progress.record(NAME, crate::progress::Outcome::Built(took));
            dir
        }
    };
    let mut files = Vec::new();
    let mut all = KeyBuilder::new("binaries-content");
    for b in BINARIES {
        let p = dir.join(b);
        all.add_str(b, &sha256_file(&p)?);
        files.push((b.to_string(), p));
    }
    Ok(Binaries {
        files,
        content_hash: all.finish(),
    })
}

/// The `host:` line of `rustc -vV`: the triple this toolchain builds for by default.
fn host_triple(rustc_vv: &str) -> Option<&str> {
    rustc_vv.lines().find_map(|l| l.strip_prefix("host: "))
}

/// Where cargo builds for this machine's own triple when CARGO_TARGET_DIR is not set:
/// scripts/cargo-env.sh's CARGO_TARGET_DIR, under the cache, shared with scripts/build and
/// scripts/test.
pub fn host_target_dir(cache_root: &Path) -> PathBuf {
    cache_root.join("cargo-target")
}

/// The flag that remaps cargo's home out of the binaries (panic messages name dependencies'
/// files by absolute path; the workspace's own are relative already), so an image does not
/// depend on where it was built. scripts/cargo-env.sh exports the same (a test checks they
/// agree): a difference would make cargo rebuild everything in the shared target folder.
pub fn reproducible_rustflags() -> String {
    let cargo_home = std::env::var("CARGO_HOME").unwrap_or_else(|_| {
        format!(
            "{}/.cargo",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into())
        )
    });
    format!("--remap-path-prefix={cargo_home}=/build/cargo")
}

/// Files whose content decides the binaries, relative to the workspace, sorted.
fn source_files(src: &Path) -> Result<Vec<String>> {
    let mut out = vec!["Cargo.toml".to_string(), "Cargo.lock".to_string()];
    // Every crate of the workspace: the binaries' libraries (seed-area, toml-errors) too.
    walk(src, "crates", &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(root: &Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
    let dir = root.join(rel);
    let rd = fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        // Build outputs and the fuzzers' corpora are not sources.
        if ["target", "corpus", "artifacts"].contains(&name.as_str()) || name.starts_with('.') {
            continue;
        }
        let child = format!("{rel}/{name}");
        if e.file_type()?.is_dir() {
            walk(root, &child, out)?;
        } else {
            out.push(child);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stage_and_scripts_cargo_env_agree_on_folder_and_flags() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cache = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg("-c")
            .arg(". scripts/cargo-env.sh && printf '%s\\n%s' \"$CARGO_TARGET_DIR\" \"$CARGO_ENCODED_RUSTFLAGS\"")
            .current_dir(root)
            .env("IMGFORGE_CACHE", cache.path())
            .output()
            .expect("bash");
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let (dir, flags) = text.split_once('\n').expect("two lines");
        assert_eq!(Path::new(dir), host_target_dir(cache.path()));
        assert_eq!(flags, reproducible_rustflags());
        assert!(flags.ends_with("=/build/cargo"), "{flags:?}");
    }

    #[test]
    fn host_triple_is_read_from_rustc_vv() {
        let vv = "rustc 1.95.0\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\nrelease: 1.95.0\n";
        assert_eq!(host_triple(vv), Some("x86_64-unknown-linux-gnu"));
        assert_eq!(host_triple("rustc 1.0\n"), None);
    }
}
