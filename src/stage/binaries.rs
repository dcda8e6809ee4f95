//! The binaries stage: the project's `gateway` and `worker` built for the target triple.
//!
//! The key hashes the crates' sources, the lock file and the compiler's version, so an
//! unchanged tree skips cargo entirely. Paths are remapped so the binaries (and with them
//! the image) do not depend on where the checkout or cargo's home lies.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{BuildOptions, Stage};
use crate::cache::{sha256_file, KeyBuilder};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::tool;

pub const BINARIES: &[&str] = &["gateway", "worker"];

pub struct Binaries {
    /// (name, path) of each built binary.
    pub files: Vec<(String, PathBuf)>,
    /// Hash of all the binaries' bytes: what compose's key depends on.
    pub content_hash: String,
}

pub fn run(plan: &Plan, opts: &BuildOptions, progress: &mut Progress) -> Result<Binaries> {
    const NAME: &str = "binaries";
    let src = &opts.source_dir;
    if !src.join("crates/gateway/Cargo.toml").is_file() {
        bail!(
            "the gateway and worker sources are not at {} (crates/gateway/Cargo.toml missing); pass --source with the imgforge checkout",
            src.display()
        );
    }
    let rustc = tool::run(Command::new("rustc").arg("-vV")).context("asking rustc for its version (is a Rust toolchain installed?)")?;
    let mut key = KeyBuilder::new(NAME);
    key.add_str("target", &plan.rust_target).add("rustc", &rustc);
    for rel in source_files(src)? {
        let h = sha256_file(&src.join(&rel))?;
        key.add_str(&rel, &h);
    }
    let key = key.finish();
    let from_dir = |dir: &Path| -> Result<Binaries> {
        let mut files = Vec::new();
        let mut all = KeyBuilder::new("binaries-content");
        for b in BINARIES {
            let p = dir.join(b);
            all.add_str(b, &sha256_file(&p)?);
            files.push((b.to_string(), p));
        }
        Ok(Binaries { files, content_hash: all.finish() })
    };
    if !opts.forced(Stage::Binaries) {
        if let Some(dir) = opts.cache.lookup(NAME, &key) {
            progress.cached(NAME);
            return from_dir(&dir);
        }
    }
    progress.start(NAME, &format!("cargo build --release --target {}", plan.rust_target));
    let target_dir = opts.cache.aux_dir("cargo-target")?;
    let cargo_home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_else(|_| "/root".into())));
    let flags = [
        format!("--remap-path-prefix={}=/build/imgforge", src.display()),
        format!("--remap-path-prefix={cargo_home}=/build/cargo"),
    ]
    .join("\x1f");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(src)
        .env("CARGO_ENCODED_RUSTFLAGS", flags)
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .args(["build", "--release", "--locked", "--target", &plan.rust_target])
        .arg("--target-dir")
        .arg(&target_dir);
    for b in BINARIES {
        cmd.args(["-p", b]);
    }
    tool::run_streaming(&mut cmd, |line| {
        let l = line.trim_start();
        if l.starts_with("Compiling") || l.starts_with("Finished") {
            progress.detail(l);
        }
    })
    .context("building the gateway and worker")?;
    let pending = opts.cache.begin(NAME, &key)?;
    for b in BINARIES {
        let built = target_dir.join(&plan.rust_target).join("release").join(b);
        fs::copy(&built, pending.path().join(b))
            .with_context(|| format!("copying {}", built.display()))?;
    }
    let dir = pending.commit()?;
    progress.done(NAME);
    from_dir(&dir)
}

/// Files whose content decides the binaries, relative to the workspace, sorted.
fn source_files(src: &Path) -> Result<Vec<String>> {
    let mut out = vec!["Cargo.toml".to_string(), "Cargo.lock".to_string()];
    for b in BINARIES {
        walk(src, &format!("crates/{b}"), &mut out)?;
    }
    out.sort();
    Ok(out)
}

fn walk(root: &Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
    let dir = root.join(rel);
    let rd = fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "target" || name.starts_with('.') {
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
