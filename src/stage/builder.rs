//! Wheels built from source for the image: a "builder" root of the image's Debian suite and
//! CPU with a compiler and Python's headers (made by mmdebstrap and cached like the base
//! stage, keyed by suite, architecture and package list), in which pip builds a wheel from
//! a requirement's source archive when no wheel on the index fits the target. The root is
//! the target's, so an aarch64 image's wheel is compiled by aarch64 gcc under qemu-user
//! (binfmt), against the image's own Python and glibc.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

use super::base::{host_arch, shell_quote, DPKG_EXCLUDES, MMDEBSTRAP};
use super::BuildOptions;
use crate::apt_sources;
use crate::cache::KeyBuilder;
use crate::exit::UserError;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::pydeps::fetch::{Sdist, SourceBuild};
use crate::pydeps::lock::{Lock, Req};
use crate::tool;

const NAME: &str = "builder";

/// What a wheel is built with: the image's Python with its headers, a C compiler, and the
/// setuptools backend (with wheel) most C extensions' sdists use. A package whose backend
/// is another (hatchling, maturin, ...) is refused with the build's log.
pub const PACKAGES: &[&str] = &[
    "python3-dev",
    "python3-pip",
    "python3-setuptools",
    "python3-wheel",
    "build-essential",
];

/// Lines of a failed build's log shown to the user.
const LOG_TAIL: usize = 25;

/// mmdebstrap's arguments for the builder root: `apt_cache` is apt's download cache on
/// this machine, `out` the tar written.
fn mmdebstrap_args(plan: &Plan, sources: &[String], apt_cache: &str, out: &str) -> Vec<String> {
    let mut args = vec![
        "--mode=auto".to_string(),
        "--variant=apt".to_string(),
        format!("--arch={}", plan.arch),
        format!("--include={}", PACKAGES.join(",")),
        "--skip=download/empty".to_string(),
    ];
    for opt in DPKG_EXCLUDES {
        args.push(format!("--dpkgopt={opt}"));
    }
    // apt's download cache is the base stage's, shared.
    args.extend([
        r#"--setup-hook=mkdir -p "$1/var/cache/apt/archives""#.to_string(),
        format!("--setup-hook=sync-in {apt_cache} /var/cache/apt/archives/"),
        format!("--customize-hook=sync-out /var/cache/apt/archives {apt_cache}"),
        r#"--customize-hook=rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/cache/apt/archives/partial/*.deb"#.to_string(),
        plan.suite.clone(),
        out.to_string(),
    ]);
    args.extend(sources.iter().cloned());
    args
}

/// The builder root's tar (cached), made now if it is not. Its key is mmdebstrap's
/// arguments (with the machine's paths left out), not this file's code: a change to how
/// wheels are built does not remake a root that takes ~15 min under emulation.
fn builder_root(plan: &Plan, opts: &BuildOptions, progress: &Progress) -> Result<PathBuf> {
    let sources =
        apt_sources::host_mirrors().source_lines(&plan.suite, &plan.apt_components, false);
    let mut key = KeyBuilder::new(NAME);
    key.add_str(
        "mmdebstrap",
        &mmdebstrap_args(plan, &sources, "APT-CACHE", "OUT").join("\n"),
    );
    let key = key.finish();
    if let Some(dir) = opts.cache.lookup(NAME, &key) {
        return Ok(dir.join("root.tar"));
    }
    tool::require(&MMDEBSTRAP)?;
    progress.detail(&format!(
        "builder root: mmdebstrap {} {} ({})",
        plan.suite,
        plan.arch,
        PACKAGES.join(" ")
    ));
    let pending = opts.cache.begin(NAME, &key)?;
    let apt_cache = opts
        .cache
        .aux_dir(&format!("apt/{}-{}", plan.suite, plan.arch))?;
    let out = pending.path().join("root.tar");
    let mut cmd = Command::new("mmdebstrap");
    cmd.env("SOURCE_DATE_EPOCH", plan.source_date_epoch.to_string())
        .args(mmdebstrap_args(
            plan,
            &sources,
            &shell_quote(&apt_cache.display().to_string()),
            &out.display().to_string(),
        ));
    tool::run_streaming(&mut cmd, |line| {
        if line.starts_with("I: ") && !line.starts_with("I: running") {
            progress.detail(&format!("builder root: {line}"));
        }
    })
    .context("building the builder root (for wheels built from source) with mmdebstrap")?;
    let dir = pending.commit()?;
    Ok(dir.join("root.tar"))
}

/// Builds wheels in a throwaway copy of the builder root, unpacked once per build run.
pub struct Builder<'a> {
    pub plan: &'a Plan,
    pub opts: &'a BuildOptions,
    pub progress: &'a mut Progress,
    /// Whether the `wheels` stage has started (its header printed).
    pub started: &'a mut bool,
    /// The unpacked root, shared by every app of the build.
    pub root: &'a mut Option<tempfile::TempDir>,
    /// Where the unpacked root goes (the wheel cache: the same filesystem).
    pub scratch_in: PathBuf,
}

impl Builder<'_> {
    fn root(&mut self) -> Result<PathBuf> {
        if let Some(r) = self.root.as_ref() {
            return Ok(r.path().to_path_buf());
        }
        if !rustix::process::geteuid().is_root() {
            anyhow::bail!("building a wheel from source runs pip in a chroot of the image's suite and CPU: run imgforge as root");
        }
        let tar = builder_root(self.plan, self.opts, self.progress)?;
        let dir = tempfile::Builder::new()
            .prefix("tmp-builder-")
            .tempdir_in(&self.scratch_in)
            .with_context(|| format!("creating a folder in {}", self.scratch_in.display()))?;
        tool::run(
            Command::new("tar")
                .arg("-C")
                .arg(dir.path())
                .args(["--numeric-owner", "-xf"])
                .arg(&tar),
        )
        .context("unpacking the builder root")?;
        let path = dir.path().to_path_buf();
        *self.root = Some(dir);
        Ok(path)
    }
}

/// Why a build failed, from its log: what the user can do about it.
fn diagnose(log: &str) -> &'static str {
    if log.contains("BackendUnavailable")
        || log.contains("Cannot import")
        || log.contains("No module named")
    {
        "its build backend or a build dependency is not in the builder, which has setuptools and wheel only (Debian's python3-setuptools, python3-wheel)"
    } else if log.contains("error: command") || log.contains("fatal error:") {
        "compiling it failed (the builder has python3-dev and build-essential; a library's headers it needs are not there)"
    } else if log.contains("metadata-generation-failed") || log.contains("Failed building wheel") {
        "its build script failed in the builder (a tool or library it needs is not there: the builder has python3-dev and build-essential)"
    } else {
        "pip wheel failed"
    }
}

impl SourceBuild for Builder<'_> {
    fn build(
        &mut self,
        app: &str,
        lock: &Lock,
        req: &Req,
        sdist: &Sdist,
        out: &Path,
    ) -> Result<()> {
        if !*self.started {
            let what = crate::pydeps::Target::for_suite(&self.plan.suite, self.plan.arch)
                .map(|t| format!("wheels for {}", t.describe()))
                .unwrap_or_else(|_| "wheels".into());
            self.progress.start("wheels", &what);
            *self.started = true;
        }
        let root = self.root()?;
        let work = root.join("tmp/imgforge");
        if work.exists() {
            fs::remove_dir_all(&work)?;
        }
        fs::create_dir_all(&work)?;
        fs::copy(&sdist.path, work.join(&sdist.file_name))
            .with_context(|| format!("copying {} into the builder", sdist.file_name))?;
        let emulated = self.plan.arch.as_str() != host_arch();
        let machine = crate::pydeps::machine(self.plan.arch);
        // Unpacked under a fixed path and built in place: the paths compiled into the
        // extension are the same on every build, and so are the wheel's bytes.
        let script = format!(
            "set -eu\n\
             cd /tmp/imgforge\n\
             mkdir src out\n\
             python3 -c 'import shutil, sys; shutil.unpack_archive(sys.argv[1], sys.argv[2])' {file} src\n\
             set -- /tmp/imgforge/src/*/\n\
             cd \"$1\"\n\
             exec python3 -m pip wheel --no-deps --no-build-isolation --no-index --no-cache-dir --disable-pip-version-check --progress-bar off -w /tmp/imgforge/out .\n",
            file = shell_quote(&sdist.file_name)
        );
        let mut cmd = super::chroot::command(&root, &script);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/root")
            .env("LC_ALL", "C.UTF-8")
            .env("PYTHONHASHSEED", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("SOURCE_DATE_EPOCH", self.plan.source_date_epoch.to_string());
        let started = Instant::now();
        let mut log: VecDeque<String> = VecDeque::new();
        let result = tool::run_streaming(&mut cmd, |line| {
            if log.len() == LOG_TAIL {
                log.pop_front();
            }
            log.push_back(line.to_string());
        });
        if let Err(e) = result {
            crate::interrupt::check()?;
            let tail = Vec::from(log).join("\n");
            return Err(UserError(format!(
                "app `{app}`: {}: no wheel of {} {} fits the image, and building it from source for {machine}{} failed: {}. The build's last lines:\n{tail}",
                lock.at(req),
                req.name,
                req.version,
                if emulated { " (emulated)" } else { "" },
                diagnose(&format!("{tail}\n{e:#}")),
            ))
            .into());
        }
        let secs = started.elapsed().as_secs_f64();
        for e in fs::read_dir(work.join("out"))? {
            let e = e?;
            fs::copy(e.path(), out.join(e.file_name()))
                .with_context(|| format!("copying the built {:?}", e.file_name()))?;
        }
        fs::remove_dir_all(&work)?;
        self.progress.note(&format!(
            "app {app}: built {} {} from source for {machine} ({}) in {secs:.1} s",
            req.name,
            req.version,
            if emulated { "emulated" } else { "native" }
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_build_says_what_is_missing() {
        assert!(diagnose(
            "pip._vendor.pyproject_hooks._impl.BackendUnavailable: Cannot import 'hatchling.build'"
        )
        .contains("build backend"));
        assert!(diagnose("src/x.c:1:10: fatal error: zlib.h: No such file").contains("compiling"));
        assert!(diagnose("error: metadata-generation-failed").contains("build script"));
    }
}
