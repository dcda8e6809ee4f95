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
//!
//! An app with `deps = "pypi"` instead installs the wheels of its lock (see `pydeps`),
//! fetched before the base stage (a bad lock fails the build at once, and the download
//! overlaps nothing): its venv is assembled and the wheels unpacked on the build machine,
//! with no chroot and no emulation, so an arm64 venv costs what an x86_64 one does. Their
//! bytecode comes from `pydeps::bytecode`'s cache; only sources it lacks need the image's
//! Python.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::base::Base;
use super::builder::Builder;
use super::{BuildOptions, Stage};
use crate::app_source::{self, AppFile};
use crate::cache::KeyBuilder;
use crate::plan::{AppPlan, Plan};
use crate::profile::schema::Deps;
use crate::progress::Progress;
use crate::pydeps::{self, bytecode::BytecodeCache, fetch::Fetched, lock::Lock, Target};
use crate::tool;

/// The locks of the role's PyPI apps and their wheels, checked and cached.
#[derive(Default)]
pub struct Wheels {
    /// Each PyPI app with the files its lock was read from (the apps stage installs those
    /// files, not a later read of the source), the lock and its wheels.
    by_app: Vec<(String, Vec<AppFile>, Lock, Fetched)>,
}

impl Wheels {
    fn of(&self, app: &str) -> Option<(&Lock, &Fetched)> {
        self.by_app
            .iter()
            .find(|(a, ..)| a == app)
            .map(|(_, _, l, f)| (l, f))
    }

    fn files(&self, app: &str) -> Option<&Vec<AppFile>> {
        self.by_app
            .iter()
            .find(|(a, ..)| a == app)
            .map(|(_, files, ..)| files)
    }
}

/// The lock of a PyPI app, parsed from its files.
pub fn read_lock(plan: &Plan, app: &AppPlan, files: &[AppFile]) -> Result<Lock> {
    let label = format!(
        "{}/{}",
        app.source.trim_start_matches("embedded:"),
        app.requirements
    );
    let Some(f) = files.iter().find(|f| f.path == app.requirements) else {
        return Err(crate::exit::UserError(format!(
            "app `{}`: deps = \"pypi\" but {label} does not exist: write the lock with `imgforge lock {} --role {}`",
            app.name, app.name, plan.role
        ))
        .into());
    };
    let text = String::from_utf8_lossy(&f.content);
    pydeps::lock::parse(&label, &text)
        .map_err(|e| crate::exit::user(e.context(format!("app `{}`", app.name))))
}

pub fn target(plan: &Plan) -> Result<Target> {
    Target::for_suite(&plan.suite, plan.arch).map_err(crate::exit::user)
}

/// Fetches (or finds in the cache) the wheels of every PyPI app of the role.
pub fn fetch_wheels(plan: &Plan, opts: &BuildOptions, progress: &mut Progress) -> Result<Wheels> {
    const NAME: &str = "wheels";
    let mut out = Wheels::default();
    let pypi: Vec<_> = plan.apps.iter().filter(|a| a.deps == Deps::Pypi).collect();
    if pypi.is_empty() {
        return Ok(out);
    }
    let target = target(plan)?;
    let dir = opts.cache.aux_dir("wheels")?;
    let mut started = false;
    // The builder root, unpacked at the first wheel built from source and shared by the
    // apps; removed when this returns.
    let mut builder_root = None;
    for app in pypi {
        let files = app_source::read(&app.source)
            .with_context(|| format!("app slot `{}` of role `{}`", app.name, plan.role))?;
        let lock = read_lock(plan, app, &files)?;
        pydeps::fetch::check_python(
            &app.name,
            &lock,
            &target,
            &format!("imgforge lock {} --role {}", app.name, plan.role),
        )?;
        let mut builder = Builder {
            plan,
            opts,
            progress: &mut *progress,
            started: &mut started,
            root: &mut builder_root,
            scratch_in: dir.clone(),
        };
        let fetched = pydeps::fetch::fetch(&app.name, &lock, &target, &dir, Some(&mut builder))?;
        if fetched.downloaded > 0 {
            if !started {
                progress.start(NAME, &format!("wheels for {}", target.describe()));
                started = true;
            }
            let built = match fetched.built {
                0 => String::new(),
                n => format!(", {n} built from source"),
            };
            progress.detail(&format!(
                "{}: {} wheels, {} downloaded ({}){built} in {:.1} s",
                app.name,
                fetched.wheels.len(),
                fetched.downloaded,
                crate::progress::fmt_bytes(fetched.downloaded_bytes),
                fetched.secs
            ));
        }
        out.by_app.push((app.name.clone(), files, lock, fetched));
    }
    drop(builder_root);
    if started {
        progress.done(NAME);
    } else {
        progress.cached(NAME);
    }
    Ok(out)
}

pub struct Apps {
    pub key: String,
    /// `opt/<app>/...` entries; None when the role has no app slot.
    pub tar: Option<PathBuf>,
}

pub fn run(
    plan: &Plan,
    opts: &BuildOptions,
    base: &Base,
    wheels: &Wheels,
    progress: &mut Progress,
) -> Result<Apps> {
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
        .add_code(super::code::APPS)
        .add_code(super::code::PYDEPS);
    for app in &plan.apps {
        let files = match wheels.files(&app.name) {
            Some(f) => f.clone(),
            None => app_source::read(&app.source)
                .with_context(|| format!("app slot `{}` of role `{}`", app.name, plan.role))?,
        };
        key.add_str("app", &app.name)
            .add_str("requirements", &app.requirements)
            .add_str("deps", &format!("{:?}", app.deps))
            .add_str(
                "system-site-packages",
                &app.system_site_packages.to_string(),
            );
        if let Some((_, fetched)) = wheels.of(&app.name) {
            key.add_str("arch", plan.arch.as_str());
            for w in &fetched.wheels {
                key.add_str("wheel", &format!("{} {}", w.sha256, w.file_name));
            }
        }
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
    let names: Vec<_> = plan.apps.iter().map(|a| a.name.as_str()).collect();
    progress.start(
        NAME,
        &format!("venvs for {} in the image's Python", names.join(", ")),
    );
    let pending = opts.cache.begin(NAME, &key)?;
    let root = pending.path().join("root");
    fs::create_dir_all(&root)?;
    let debian: Vec<_> = sources
        .iter()
        .filter(|(a, _)| a.deps == Deps::Debian)
        .collect();
    let pypi: Vec<_> = sources
        .iter()
        .filter(|(a, _)| a.deps == Deps::Pypi)
        .collect();
    // The PyPI apps' sources whose bytecode the cache lacks, and the cache.
    let mut to_compile = Vec::new();
    let mut bytecode = None;
    if !pypi.is_empty() {
        let target = target(plan)?;
        let tsv = fs::read_to_string(&base.packages_tsv)
            .with_context(|| format!("reading {}", base.packages_tsv.display()))?;
        let version = pydeps::install::image_python_version(&tsv, &target, &plan.role)?;
        let cache = bytecode.insert(BytecodeCache::new(
            opts.cache.aux_dir("bytecode")?,
            &target,
            &pydeps::install::image_python_build(&tsv, &target, &plan.role)?,
        ));
        let mut debian_dists = None;
        for (app, files) in pypi {
            let (lock, fetched) = wheels
                .of(&app.name)
                .expect("fetch_wheels ran for every PyPI app");
            if app.system_site_packages {
                if debian_dists.is_none() {
                    debian_dists = Some(pydeps::install::debian_dists(&base.root_tar)?);
                }
                pydeps::install::check_debian_conflicts(
                    &app.name,
                    lock,
                    debian_dists.as_ref().unwrap(),
                )?;
            }
            let started = std::time::Instant::now();
            write_files(&root.join("opt").join(&app.name), files)?;
            let venv = format!("/opt/{}/venv", app.name);
            pydeps::install::make_venv(&root, &venv, &target, &version, app.system_site_packages)?;
            pydeps::install::install(&root, &venv, &target, &fetched.wheels, pending.path())
                .with_context(|| format!("app `{}`", app.name))?;
            let applied = cache.apply(&root, &format!("/opt/{}", app.name))?;
            progress.detail(&format!(
                "{}: {} files, {} wheels unpacked for {}, bytecode of {} sources from the cache, in {:.1} s (no emulation)",
                app.name,
                files.len(),
                fetched.wheels.len(),
                target.machine(),
                applied.from_cache,
                started.elapsed().as_secs_f64()
            ));
            if !applied.missing.is_empty() {
                to_compile.push((app.name.as_str(), applied.missing));
            }
        }
    }
    // The image's own Python, in a chroot of the base root: the Debian apps' venvs, and
    // the bytecode the cache lacks (emulated for arm64; see `in_image_python`). A warm
    // rebuild of PyPI apps alone needs neither.
    if !debian.is_empty() || !to_compile.is_empty() {
        let lists: Vec<(&str, Vec<&str>)> = to_compile
            .iter()
            .map(|(name, m)| (*name, m.iter().map(|m| m.path.as_str()).collect()))
            .collect();
        in_image_python(plan, base, &root, &debian, &lists, progress)?;
        for (_, missing) in &to_compile {
            bytecode
                .as_ref()
                .expect("PyPI apps have a bytecode cache")
                .store(&root, missing)?;
        }
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

/// The image's own Python in a chroot of the base root: the Debian apps' venvs (their
/// requirements met by the role's Debian packages) and bytecode, and the bytecode of the
/// PyPI apps' sources the bytecode cache lacks (`compile_only`: app, paths in the image).
/// The PyPI apps' wheels are unpacked without emulation, but their .pyc are written by the
/// target's interpreter (under qemu-user for arm64): without them every
/// service start compiles the whole dependency tree in memory, which on a slow machine
/// outlasts Gunicorn's worker timeout. `--invalidation-mode unchecked-hash` and
/// PYTHONHASHSEED=0 make them the same bytes on every build.
fn in_image_python(
    plan: &Plan,
    base: &Base,
    root: &Path,
    apps: &[&(&AppPlan, Vec<AppFile>)],
    compile_only: &[(&str, Vec<&str>)],
    progress: &mut Progress,
) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("building the apps' venvs runs the image's Python in a chroot of the base root: run imgforge as root");
    }
    tool::run(
        Command::new("tar")
            .arg("-C")
            .arg(root)
            .args(["--numeric-owner", "-xf"])
            .arg(&base.root_tar),
    )
    .context("unpacking the base root for the apps' venvs")?;
    let mut script = String::from("set -eu\n");
    for (app, files) in apps {
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
             {dir}/venv/bin/python -m compileall {opts} -x /venv/ {dir}\n",
            name = app.name,
            opts = pydeps::bytecode::COMPILEALL_OPTS,
        ));
    }
    // The sources named in a list file (`compileall -i`): a list of thousands of paths
    // would not fit one argument of `sh -c`.
    for (name, paths) in compile_only {
        let list = format!("/tmp/imgforge-bytecode-{name}.list");
        let mut text = paths.join("\n");
        text.push('\n');
        fs::write(root.join(list.trim_start_matches('/')), text)
            .with_context(|| format!("writing {list} in {}", root.display()))?;
        script.push_str(&format!(
            "echo \"apps: {name}: bytecode of {n} sources by the image's Python\"\n\
             started=$(date +%s)\n\
             /opt/{name}/venv/bin/python -m compileall {opts} -i {list} >/dev/null || echo \"apps: {name}: some files did not compile (kept as source)\"\n\
             echo \"apps: {name}: bytecode in $(( $(date +%s) - started )) s (kept in the cache)\"\n",
            n = paths.len(),
            opts = pydeps::bytecode::COMPILEALL_OPTS,
        ));
    }
    let mut cmd = super::chroot::command(root, &script);
    cmd.env("LC_ALL", "C.UTF-8")
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
            bail!("{text}\nA requirement above is not met by the role's Debian packages: add the Debian package that provides it (python3-...) to the role's `packages`, or take the app's dependencies from PyPI (deps = \"pypi\" and `imgforge lock`)");
        }
        return Err(e.context("building the apps' venvs"));
    }
    Ok(())
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
