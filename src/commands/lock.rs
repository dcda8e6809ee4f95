//! `imgforge lock APP`: the app's loose requirements (`requirements.in`, else its
//! requirements file) resolved by uv for the image's Python on both architectures, written
//! as the app's requirements file with the hash of every file of each pinned version; then
//! the wheels of both architectures fetched into the cache, which proves the lock installs
//! on each and makes the next build warm.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cache::{self, Cache};
use crate::cli::LockArgs;
use crate::exit::{user, UserError};
use crate::profile::machine::Arch;
use crate::pydeps::{self, lock, Target};

pub fn run(a: LockArgs) -> Result<()> {
    let plan = super::resolve_plan(&a.profile)?;
    let Some(app) = plan.apps.iter().find(|x| x.name == a.app) else {
        let names: Vec<_> = plan.apps.iter().map(|x| x.name.as_str()).collect();
        return Err(UserError(format!(
            "role `{}` has no app slot `{}` (its app slots: {})",
            plan.role,
            a.app,
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ))
        .into());
    };
    let src = Path::new(&app.source);
    if !src.is_dir() {
        return Err(UserError(format!(
            "app `{}`: its source {} is not a folder on disk, where the lock would be written (pass --profiles DIR with the site that names your app's folder)",
            app.name, app.source
        ))
        .into());
    }
    let input_name = if src.join("requirements.in").is_file() {
        "requirements.in".to_string()
    } else {
        app.requirements.clone()
    };
    let input = src.join(&input_name);
    if !input.is_file() {
        return Err(UserError(format!(
            "app `{}`: neither {}/requirements.in nor {}/{} exists: write the app's requirements there (one per line, loose: `flask>=3`)",
            app.name, app.source, app.source, app.requirements
        ))
        .into());
    }
    let out_path = src.join(&app.requirements);
    let cache = Cache::open(a.cache.clone().unwrap_or_else(cache::default_dir))?;
    let tools = cache.aux_dir("tools")?;
    let uv = pydeps::uv::ensure(&tools)?;
    let base = Target::for_suite(&plan.suite, plan.arch).map_err(user)?;
    let targets: Vec<Target> = [Arch::Amd64, Arch::Arm64]
        .into_iter()
        .map(|arch| Target {
            arch,
            ..base.clone()
        })
        .collect();
    // uv knows manylinux tags up to 2.40; a wheel needing glibc 2.41 exactly is rare.
    let uv_glibc = base.glibc.min(40);
    let label = format!("{}/{}", app.source, input_name);
    // Wheels only first: where some version has a wheel for the image, that version is
    // pinned and nothing is compiled at build time. Only when a requirement has no wheel for
    // one of the CPUs (a package that publishes none, like crcmod) are source archives
    // allowed, for both CPUs alike so their pins agree and the lock carries the source
    // archives' hashes; the build then compiles those packages for the target
    // (pydeps::build), and the fetch below names them.
    let compile = |t: &Target, wheels_only: bool| {
        eprintln!(
            "imgforge: lock {}: resolving {} for {}{}",
            app.name,
            label,
            t.describe(),
            if wheels_only {
                ""
            } else {
                ", source archives allowed"
            }
        );
        let mut cmd = pydeps::uv::command(&uv, &tools);
        cmd.args([
            "pip",
            "compile",
            "--quiet",
            "--no-header",
            "--no-annotate",
            "--generate-hashes",
            "--system-certs",
            "--python-version",
            &t.python,
        ])
        .arg("--python-platform")
        .arg(format!("{}-manylinux_2_{uv_glibc}", t.machine()));
        if wheels_only {
            cmd.args(["--only-binary", ":all:"]);
        }
        cmd.arg(&input).output().context("starting uv")
    };
    let refused = |t: &Target, what: &str, out: &std::process::Output| -> anyhow::Error {
        UserError(format!(
            "app `{}`: {label}: no set of {what} for {} satisfies it (uv's resolver):\n{}",
            app.name,
            t.describe(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
        .into()
    };
    let mut outputs = Vec::new();
    let mut with_sources = false;
    for t in &targets {
        let out = compile(t, true)?;
        if out.status.success() {
            outputs.push(out);
            continue;
        }
        // uv says a package has no wheel this CPU can use; anything else (a version that
        // does not exist, a conflict, the network) is the user's to fix, in uv's words.
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.contains("no usable wheels") {
            return Err(refused(t, "wheels", &out));
        }
        eprintln!(
            "imgforge: lock {}: wheels alone do not satisfy it for {}:\n{}",
            app.name,
            t.describe(),
            err.trim()
        );
        with_sources = true;
        break;
    }
    if with_sources {
        outputs = targets
            .iter()
            .map(|t| {
                let out = compile(t, false)?;
                if out.status.success() {
                    Ok(out)
                } else {
                    Err(refused(t, "wheels or source archives", &out))
                }
            })
            .collect::<Result<_>>()?;
    }
    let mut resolved: Vec<(String, lock::Lock)> = Vec::new();
    for out in &outputs {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let parsed = lock::parse(&label, &text).map_err(user)?;
        resolved.push((text, parsed));
    }
    let (text, first) = &resolved[0];
    let (_, second) = &resolved[1];
    let pins = |l: &lock::Lock| {
        l.reqs
            .iter()
            .map(|r| format!("{}=={}", r.name, r.version))
            .collect::<Vec<_>>()
    };
    if pins(first) != pins(second) {
        return Err(UserError(format!(
            "app `{}`: {label} resolves differently on x86_64 ({}) and aarch64 ({}): pin the differing packages in {input_name}",
            app.name,
            pins(first).join(" "),
            pins(second).join(" ")
        ))
        .into());
    }
    let header = format!(
        "{} {}, for x86_64 and aarch64 (manylinux_2_{uv_glibc}), from {input_name}\n# Written by `imgforge lock {} --role {}`: each requirement pinned, with the sha256 of every file of that version.\n",
        lock::HEADER,
        base.python,
        app.name,
        plan.role
    );
    let tmp = out_path.with_extension("tmp");
    fs::write(&tmp, format!("{header}{text}"))
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &out_path).with_context(|| format!("writing {}", out_path.display()))?;
    eprintln!(
        "imgforge: lock {}: {} requirements written to {}",
        app.name,
        first.reqs.len(),
        out_path.display()
    );
    let written = lock::parse(
        &format!("{}/{}", app.source, app.requirements),
        &fs::read_to_string(&out_path)?,
    )
    .map_err(user)?;
    let wheels = cache.aux_dir("wheels")?;
    for t in &targets {
        let f = pydeps::fetch::fetch(&app.name, &written, t, &wheels, None)?;
        eprintln!(
            "imgforge: lock {}: {} wheels for {} ({} downloaded, {})",
            app.name,
            f.wheels.len(),
            t.machine(),
            f.downloaded,
            crate::progress::fmt_bytes(f.downloaded_bytes)
        );
        if !f.unbuilt.is_empty() {
            eprintln!(
                "imgforge: lock {}: no wheel for {} of {}: `imgforge build` builds them from source",
                app.name,
                t.machine(),
                f.unbuilt.join(" ")
            );
        }
    }
    println!("{}", out_path.display());
    Ok(())
}
