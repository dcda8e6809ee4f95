//! A venv for the target assembled without running the target's Python: the layout
//! `python -m venv` makes (its interpreter links point at the image's /usr/bin/pythonX.Y),
//! then each wheel unpacked into it by pypa's installer on the build machine's Debian
//! Python. The installer writes no .pyc (its Python is not the target's): the apps stage
//! compiles them afterwards with the image's interpreter (see `stage::apps`).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use anyhow::{anyhow, Context, Result};

use super::fetch::Wheel;
use super::lock::{normalize, Lock};
use super::{debian_python, Target};
use crate::exit::UserError;

const HELPER: &str = include_str!("install_wheels.py");

/// The image's exact Python version (`3.13.5`) from the base's package list, which must
/// hold the interpreter `pythonX.Y` of the target.
pub fn image_python_version(packages_tsv: &str, target: &Target, role: &str) -> Result<String> {
    let v = image_python_build(packages_tsv, target, role)?;
    let v = v.split(':').next_back().unwrap_or(&v);
    Ok(v.split(['-', '+', '~']).next().unwrap_or(v).to_string())
}

/// The version of the image's `pythonX.Y` package as Debian gives it (`3.13.5-2`): which
/// build of the interpreter writes the bytecode.
pub fn image_python_build(packages_tsv: &str, target: &Target, role: &str) -> Result<String> {
    let want = format!("python{}", target.python);
    for l in packages_tsv.lines() {
        if let Some((p, v)) = l.split_once('\t') {
            if p == want {
                return Ok(v.to_string());
            }
        }
    }
    Err(UserError(format!(
        "role `{role}` has an app with deps = \"pypi\" but its image has no {want}: add `python3` to the role's `packages`"
    ))
    .into())
}

/// Writes the venv's skeleton at `<root>/<venv>`.
pub fn make_venv(
    root: &Path,
    venv: &str,
    target: &Target,
    version: &str,
    system_site: bool,
) -> Result<()> {
    let dir = root.join(venv.trim_start_matches('/'));
    let py = format!("python{}", target.python);
    fs::create_dir_all(dir.join("bin"))?;
    fs::create_dir_all(dir.join("include"))?;
    fs::create_dir_all(dir.join(format!("lib/{py}/site-packages")))?;
    symlink("lib", dir.join("lib64"))?;
    symlink(format!("/usr/bin/{py}"), dir.join("bin").join(&py))?;
    symlink(&py, dir.join("bin/python3"))?;
    symlink(&py, dir.join("bin/python"))?;
    fs::write(
        dir.join("pyvenv.cfg"),
        format!(
            "home = /usr/bin\ninclude-system-site-packages = {system_site}\nversion = {version}\nexecutable = /usr/bin/{py}\ncommand = /usr/bin/python3 -m venv {}{venv}\n",
            if system_site { "--system-site-packages " } else { "" }
        ),
    )
    .with_context(|| format!("writing {}/pyvenv.cfg", dir.display()))?;
    Ok(())
}

/// Unpacks `wheels` into the venv (already made) under `root`.
pub fn install(
    root: &Path,
    venv: &str,
    target: &Target,
    wheels: &[Wheel],
    scratch: &Path,
) -> Result<()> {
    let helper = scratch.join("install_wheels.py");
    fs::write(&helper, HELPER)?;
    let mut cmd = debian_python();
    cmd.arg("-I")
        .arg(&helper)
        .arg(root)
        .arg(venv)
        .arg(&target.python);
    for w in wheels {
        cmd.arg(&w.path);
    }
    let out = cmd
        .output()
        .context("starting /usr/bin/python3 (install_wheels.py)")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No module named 'installer'") {
            return Err(UserError(
                "unpacking PyPI wheels needs pypa's installer: install the Debian package `python3-installer`".into(),
            )
            .into());
        }
        return Err(anyhow!(
            "unpacking the wheels into {venv} failed:\n{}",
            err.trim()
        ));
    }
    Ok(())
}

/// `name -> (version, path)` of every distribution in the Debian Python's dist-packages of
/// the base root tar.
pub fn debian_dists(root_tar: &Path) -> Result<BTreeMap<String, (String, String)>> {
    let f = fs::File::open(root_tar).with_context(|| format!("opening {}", root_tar.display()))?;
    let mut ar = tar::Archive::new(f);
    let mut out = BTreeMap::new();
    for e in ar.entries()? {
        let e = e?;
        let path = e.path()?.to_string_lossy().into_owned();
        let p = path.trim_start_matches("./").trim_end_matches('/');
        let Some(leaf) = p.strip_prefix("usr/lib/python3/dist-packages/") else {
            continue;
        };
        if leaf.contains('/') {
            continue;
        }
        if let Some(stem) = leaf
            .strip_suffix(".dist-info")
            .or_else(|| leaf.strip_suffix(".egg-info"))
        {
            if let Some((name, version)) = stem.split_once('-') {
                let version = version.split('-').next().unwrap_or(version);
                out.insert(normalize(name), (version.to_string(), format!("/{p}")));
            }
        }
    }
    Ok(out)
}

/// A locked package the Debian side also provides, at another version, is refused: with
/// `system-site-packages` both would be importable and which one wins is an accident.
pub fn check_debian_conflicts(
    app: &str,
    lock: &Lock,
    debian: &BTreeMap<String, (String, String)>,
) -> Result<()> {
    for r in &lock.reqs {
        if let Some((v, path)) = debian.get(&r.name) {
            if *v != r.version {
                return Err(UserError(format!(
                    "app `{app}`: {}: the role's Debian Python already provides {} {v} ({path}), which the venv sees (system-site-packages = true): lock {}=={v}, drop the Debian package from the role, or set system-site-packages = false",
                    lock.at(r),
                    r.name,
                    r.name
                ))
                .into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_against_debian_at_another_version_names_both() {
        let lock = super::super::lock::parse(
            "a/requirements.txt",
            &format!(
                "flask==3.1.3 --hash=sha256:{}\nsix==1.17.0 --hash=sha256:{}\n",
                "a".repeat(64),
                "b".repeat(64)
            ),
        )
        .unwrap();
        let mut deb = BTreeMap::new();
        deb.insert(
            "six".to_string(),
            (
                "1.17.0".to_string(),
                "/usr/lib/python3/dist-packages/six-1.17.0.egg-info".to_string(),
            ),
        );
        check_debian_conflicts("web", &lock, &deb).unwrap();
        deb.insert(
            "flask".to_string(),
            (
                "3.1.1".to_string(),
                "/usr/lib/python3/dist-packages/flask-3.1.1.dist-info".to_string(),
            ),
        );
        let e = check_debian_conflicts("web", &lock, &deb)
            .unwrap_err()
            .to_string();
        assert!(e.contains("app `web`: a/requirements.txt line 1: `flask==3.1.3`: the role's Debian Python already provides flask 3.1.1 (/usr/lib/python3/dist-packages/flask-3.1.1.dist-info)"), "{e}");
    }

    #[test]
    fn the_image_python_version_comes_from_the_package_list() {
        let t = Target::for_suite("trixie", crate::profile::machine::Arch::Amd64).unwrap();
        assert_eq!(
            image_python_version("libc6\t2.41-12\npython3.13\t3.13.5-2\n", &t, "r").unwrap(),
            "3.13.5"
        );
        assert!(image_python_version("libc6\t2.41-12\n", &t, "r")
            .unwrap_err()
            .to_string()
            .contains("add `python3`"));
    }
}
