//! An app's Python dependencies from PyPI: the lock (a requirements file with
//! `--hash=sha256:` lines), the wheels for the image's Python and CPU fetched into a cache
//! keyed by each file's sha256, and their installation into the app's venv by unpacking
//! them, which needs no emulation of the target.
//!
//! Tools: Debian's pip (`/usr/bin/python3 -m pip download` with `--platform`,
//! `--only-binary=:all:`, `--python-version`, `--abi`) fetches and checks the hashes of the
//! wheels for a target other than the build machine; Debian's `python3-installer` (pypa's
//! `installer`) unpacks them with an explicit scheme; `uv`, fetched as a pinned wheel into
//! the cache, resolves loose requirements for `imgforge lock`, because pip's resolver
//! evaluates environment markers for the machine it runs on, not for the target. Every
//! child gets a cleared environment: the build machine's pyenv and its `PIP_*` variables
//! never take part; only the machine's pip configuration file (index, certificates) does.

pub mod bytecode;
pub mod fetch;
pub mod install;
pub mod lock;
pub mod uv;

use std::process::Command;

use anyhow::{bail, Result};

use crate::profile::machine::Arch;

/// The interpreter and platform a venv is built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `3.13`
    pub python: String,
    pub arch: Arch,
    /// glibc's minor version: manylinux tags up to `manylinux_2_<glibc>` fit.
    pub glibc: u32,
}

impl Target {
    /// The target of a Debian suite's image: its default Python and glibc.
    pub fn for_suite(suite: &str, arch: Arch) -> Result<Target> {
        let (python, glibc) = match suite {
            "trixie" => ("3.13", 41),
            "bookworm" => ("3.11", 36),
            other => bail!(
                "Debian suite `{other}`: imgforge does not know its Python and glibc versions, which PyPI wheels are chosen by"
            ),
        };
        Ok(Target {
            python: python.into(),
            arch,
            glibc,
        })
    }

    pub fn machine(&self) -> &'static str {
        machine(self.arch)
    }

    /// `cp313`
    pub fn abi(&self) -> String {
        format!("cp{}", self.python.replace('.', ""))
    }

    /// The platform tags pip accepts for this target, newest first (pip 23 does not expand
    /// `manylinux_2_41` to the older tags itself).
    pub fn pip_platforms(&self) -> Vec<String> {
        let m = self.machine();
        let mut v: Vec<String> = (17..=self.glibc)
            .rev()
            .map(|y| format!("manylinux_2_{y}_{m}"))
            .collect();
        v.push(format!("manylinux2014_{m}"));
        if self.arch == Arch::Amd64 {
            for t in [
                "manylinux_2_12",
                "manylinux2010",
                "manylinux_2_5",
                "manylinux1",
            ] {
                v.push(format!("{t}_{m}"));
            }
        }
        v
    }

    /// What the user reads: `Python 3.13, aarch64, manylinux_2_41`.
    pub fn describe(&self) -> String {
        format!(
            "Python {} ({}), {}, glibc 2.{}",
            self.python,
            self.abi(),
            self.machine(),
            self.glibc
        )
    }
}

pub fn machine(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "x86_64",
        Arch::Arm64 => "aarch64",
    }
}

/// `program` with a cleared environment: no pyenv, no `PIP_*`, no user settings; HOME and
/// the proxies kept so the machine's pip configuration and network apply. PATH is Debian's.
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    c.env_clear();
    for k in [
        "HOME",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
    ] {
        if let Some(v) = std::env::var_os(k) {
            c.env(k, v);
        }
    }
    c.env("PATH", "/usr/bin:/bin");
    c
}

/// Debian's Python with a cleared environment (clean_command), no user site, no bytecode.
pub fn debian_python() -> Command {
    let mut c = clean_command("/usr/bin/python3");
    c.env("LC_ALL", "C.UTF-8")
        .env("PYTHONNOUSERSITE", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    c
}

/// Checks that Debian's pip is there (a fresh machine has python3 but not pip).
pub fn require_pip() -> Result<()> {
    let ok = debian_python()
        .args(["-c", "import pip"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        return Err(crate::exit::UserError(
            "an app with deps = \"pypi\" needs Debian's pip: install the Debian package `python3-pip` (/usr/bin/python3 -m pip)".into(),
        )
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trixie_accepts_manylinux_up_to_2_41() {
        let t = Target::for_suite("trixie", Arch::Arm64).unwrap();
        let p = t.pip_platforms();
        assert_eq!(p[0], "manylinux_2_41_aarch64");
        assert!(p.contains(&"manylinux2014_aarch64".to_string()));
        assert!(!p
            .iter()
            .any(|x| x.contains("x86_64") || x.contains("manylinux1")));
        assert_eq!(t.abi(), "cp313");
        assert!(Target::for_suite("sid", Arch::Amd64).is_err());
    }
}
