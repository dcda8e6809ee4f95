//! The apps stage: each app slot's files copied to /opt/<app> and its venv built there, by
//! the image's own Python (so the venv matches the target's interpreter and CPU), in a
//! throwaway copy of the base root. The output is a tar of /opt/<app>... that compose adds.
//!
//! The venv sees the role's Debian Python packages (`--system-site-packages`) and installs
//! the app's requirements with `pip --no-index --no-deps`: a requirement must be met by a
//! Debian package of the role (kept up to date by the distribution, the same on every
//! build), and one that is not fails the build naming it, rather than fetching code at build
//! time. The packages' own dependencies are apt's business, already resolved: pip would
//! misread some (Debian's kombu names the `tzdata` distribution; Debian ships the data).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::base::Base;
use super::{BuildOptions, Stage};
use crate::app_source::{self, AppFile};
use crate::cache::KeyBuilder;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::tool;

pub struct Apps {
    pub key: String,
    /// `opt/<app>/...` entries; None when the role has no app slot.
    pub tar: Option<PathBuf>,
}

pub fn run(plan: &Plan, opts: &BuildOptions, base: &Base, progress: &mut Progress) -> Result<Apps> {
    const NAME: &str = "apps";
    if plan.apps.is_empty() {
        return Ok(Apps {
            key: "none".into(),
            tar: None,
        });
    }
    let mut sources = Vec::new();
    let mut key = KeyBuilder::new(NAME);
    key.add_str("base", &base.key)
        .add_str("epoch", &plan.source_date_epoch.to_string())
        .add_code(super::code::APPS);
    for app in &plan.apps {
        let files = app_source::read(&app.source)
            .with_context(|| format!("app slot `{}` of role `{}`", app.name, plan.role))?;
        key.add_str("app", &app.name)
            .add_str("requirements", &app.requirements);
        for f in &files {
            key.add(&format!("{}:{:o}", f.path, f.mode), &f.content);
        }
        sources.push((app, files));
    }
    let key = key.finish();
    if !opts.forced(Stage::Compose) {
        if let Some(dir) = opts.cache.lookup(NAME, &key) {
            progress.cached(NAME);
            return Ok(Apps {
                key,
                tar: Some(dir.join("apps.tar")),
            });
        }
    }
    if !rustix::process::geteuid().is_root() {
        bail!("building the apps' venvs runs the image's Python in a chroot of the base root: run imgforge as root");
    }
    let names: Vec<_> = plan.apps.iter().map(|a| a.name.as_str()).collect();
    progress.start(
        NAME,
        &format!("venvs for {} in the image's Python", names.join(", ")),
    );
    let pending = opts.cache.begin(NAME, &key)?;
    let root = pending.path().join("root");
    fs::create_dir_all(&root)?;
    tool::run(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["--numeric-owner", "-xf"])
            .arg(&base.root_tar),
    )
    .context("unpacking the base root for the apps' venvs")?;
    let mut script = String::from("set -eu\n");
    for (app, files) in &sources {
        write_files(&root.join("opt").join(&app.name), files)?;
        let dir = format!("/opt/{}", app.name);
        let req = format!("{dir}/{}", app.requirements);
        progress.detail(&format!("{}: {} files", app.name, files.len()));
        script.push_str(&format!(
            "echo \"apps: {name}: venv\"\n\
             python3 -m venv --system-site-packages {dir}/venv\n\
             if [ -f {req} ]; then\n\
             \x20 echo \"apps: {name}: requirements\"\n\
             \x20 {dir}/venv/bin/python -m pip install --no-index --no-deps --no-cache-dir --disable-pip-version-check --no-build-isolation -r {req}\n\
             fi\n\
             {dir}/venv/bin/python -m compileall -q --invalidation-mode unchecked-hash -x /venv/ {dir}\n",
            name = app.name,
        ));
    }
    // A private mount namespace: /proc and /dev exist for the chroot and vanish with it,
    // whatever happens to this process.
    let inner = format!(
        "mount -t proc proc {r}/proc && mount --rbind /dev {r}/dev && exec chroot {r} /bin/sh -c {s}",
        r = shell_quote(&root.display().to_string()),
        s = shell_quote(&script)
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--fork",
        "sh",
        "-c",
        &inner,
    ])
    .env("LC_ALL", "C.UTF-8")
    .env("PYTHONHASHSEED", "0")
    .env("SOURCE_DATE_EPOCH", plan.source_date_epoch.to_string());
    let result = tool::run_streaming(&mut cmd, |line| {
        if line.starts_with("apps: ") || line.starts_with("ERROR") {
            progress.detail(line);
        }
    });
    if let Err(e) = result {
        let text = format!("{e:#}");
        if text.contains("No matching distribution") || text.contains("Could not find a version") {
            bail!("{text}\nA requirement above is not met by the role's Debian packages: add the Debian package that provides it (python3-...) to the role's `packages`");
        }
        return Err(e.context("building the apps' venvs"));
    }
    let mut tar = Command::new("tar");
    tar.arg("-C")
        .arg(&root)
        .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
        .arg(format!("--mtime=@{}", plan.source_date_epoch))
        .args([
            "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
            "-cf",
        ])
        .arg(pending.path().join("apps.tar"));
    for a in &plan.apps {
        tar.arg(format!("opt/{}", a.name));
    }
    tool::run(&mut tar).context("packing the apps")?;
    fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    let dir = pending.commit()?;
    progress.done(NAME);
    Ok(Apps {
        key,
        tar: Some(dir.join("apps.tar")),
    })
}

fn write_files(dir: &Path, files: &[AppFile]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for f in files {
        let p = dir.join(&f.path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(&p, &f.content).with_context(|| format!("writing {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(f.mode))?;
    }
    Ok(())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
