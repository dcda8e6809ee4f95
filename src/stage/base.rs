//! The base stage: the Debian root tarball for (suite, arch, package set), made by
//! mmdebstrap, with apt's download cache kept between runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::{BuildOptions, Stage};
use crate::apt_sources;
use crate::cache::KeyBuilder;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::tool::{self, HostTool};

pub const MMDEBSTRAP: HostTool = HostTool {
    program: "mmdebstrap",
    package: "mmdebstrap",
};

/// Man pages, info and translations are not needed on a server; the copyright files stay.
const DPKG_EXCLUDES: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
];

const UPDATE_INITRAMFS: &str = "/usr/sbin/update-initramfs";
const DIVERTED: &str = "/usr/sbin/update-initramfs.imgforge-diverted";

/// The Debian architecture of the building machine.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "x86_64" => "amd64",
        other => other,
    }
}

pub struct Base {
    pub key: String,
    pub root_tar: PathBuf,
    /// `package<TAB>version` lines, from dpkg-query in the finished root.
    pub packages_tsv: PathBuf,
}

pub fn run(plan: &Plan, opts: &BuildOptions, progress: &mut Progress) -> Result<Base> {
    const NAME: &str = "base";
    let mirrors = apt_sources::host_mirrors();
    let backports = plan.packages.iter().any(|p| p.ends_with("-backports"));
    let sources = mirrors.source_lines(&plan.suite, &plan.apt_components, backports);
    let mut key = KeyBuilder::new(NAME);
    key.add_str("suite", &plan.suite)
        .add_str("arch", plan.arch.as_str())
        .add_str("packages", &plan.packages.join(","))
        .add_str("enable-units", &plan.enable_units.join(","))
        .add_str("initramfs-modules", &plan.initramfs_modules.join(","))
        .add_str("sources", &sources.join("\n"))
        .add_code(super::code::BASE)
        .add_str("epoch", &plan.source_date_epoch.to_string())
        .add_str("dpkg-excludes", &DPKG_EXCLUDES.join(","));
    let key = key.finish();
    let base_of = |dir: &Path| Base {
        key: key.clone(),
        root_tar: dir.join("root.tar"),
        packages_tsv: dir.join("packages.tsv"),
    };
    if !opts.forced(Stage::Base) {
        if let Some(dir) = opts.cache.lookup(NAME, &key) {
            progress.cached(NAME);
            return Ok(base_of(&dir));
        }
    }
    tool::require(&MMDEBSTRAP)?;
    progress.start(
        NAME,
        &format!(
            "mmdebstrap {} {} ({} packages)",
            plan.suite,
            plan.arch,
            plan.packages.len()
        ),
    );
    let pending = opts.cache.begin(NAME, &key)?;
    let apt_cache = opts
        .cache
        .aux_dir(&format!("apt/{}-{}", plan.suite, plan.arch))?;
    let mut cmd = mmdebstrap_command(plan, &sources, pending.path(), &apt_cache);
    tool::run_streaming(&mut cmd, |line| {
        // mmdebstrap's "I:" lines say which phase it is in; the rest is dpkg chatter.
        if line.starts_with("I: ") && !line.starts_with("I: running") {
            progress.detail(line);
        }
    })
    .context("building the base root with mmdebstrap")?;
    let dir = pending.commit()?;
    progress.done(NAME);
    Ok(base_of(&dir))
}

fn mmdebstrap_command(plan: &Plan, sources: &[String], out: &Path, apt_cache: &Path) -> Command {
    let q = |p: &Path| shell_quote(&p.display().to_string());
    let mut cmd = Command::new("mmdebstrap");
    cmd.env("SOURCE_DATE_EPOCH", plan.source_date_epoch.to_string())
        .arg("--mode=auto")
        .arg("--variant=apt")
        .arg(format!("--arch={}", plan.arch))
        .arg(format!("--include={}", plan.packages.join(",")))
        // Keep downloaded .debs: they are synced out to our cache below, then removed.
        .arg("--skip=download/empty");
    for opt in DPKG_EXCLUDES {
        cmd.arg(format!("--dpkgopt={opt}"));
    }
    let modules: String = plan
        .initramfs_modules
        .iter()
        .map(|m| format!("{m}\\n"))
        .collect();
    // Before any package is installed: a small initramfs with only the listed modules
    // (MODULES=most makes 36 MB and costs ~40 s of build and ~8 s of boot), written to a file
    // in modules.d that is no package's conffile. zstd's -T0 (initramfs-tools' default)
    // starts threads, which hang under qemu-user on the building machines: a foreign
    // root's initramfs is gzip.
    let compress = if plan.arch.as_str() == host_arch() {
        "zstd"
    } else {
        "gzip"
    };
    cmd.arg(r#"--setup-hook=mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d" "$1/var/cache/apt/archives""#)
        .arg(format!(r#"--setup-hook=printf 'MODULES=list\nCOMPRESS={compress}\n' > "$1/etc/initramfs-tools/conf.d/imgforge""#))
        .arg(format!(r#"--setup-hook=printf '{modules}' > "$1/usr/share/initramfs-tools/modules.d/imgforge""#))
        .arg(format!("--setup-hook=sync-in {} /var/cache/apt/archives/", q(apt_cache)))
        // The kernel's and initramfs-tools' own scripts would each build the initramfs
        // (twice in all; under qemu-user for an arm64 root, ~25 min): update-initramfs is a
        // no-op while packages install, and the customize hook below builds it once.
        .arg(format!(r#"--essential-hook=chroot "$1" dpkg-divert --quiet --local --rename --divert {DIVERTED} --add {UPDATE_INITRAMFS} && printf '#!/bin/sh\nexit 0\n' > "$1{UPDATE_INITRAMFS}" && chmod 755 "$1{UPDATE_INITRAMFS}""#))
        .arg(format!(r#"--customize-hook=rm -f "$1{UPDATE_INITRAMFS}" && chroot "$1" dpkg-divert --quiet --local --rename --remove {UPDATE_INITRAMFS}"#))
        .arg(r#"--customize-hook=if ls "$1"/boot/vmlinuz-* >/dev/null 2>&1; then chroot "$1" update-initramfs -c -k all; fi"#)
        .arg(format!("--customize-hook=sync-out /var/cache/apt/archives {}", q(apt_cache)))
        .arg(r#"--customize-hook=rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/cache/apt/archives/partial/*.deb"#);
    for unit in &plan.enable_units {
        cmd.arg(format!(
            r#"--customize-hook=chroot "$1" systemctl enable {}"#,
            shell_quote(unit)
        ));
    }
    // Host keys made by openssh-server's postinst would be shared by every server flashed
    // from this image: remove them here; a first-boot unit generates each node's own.
    cmd.arg(r#"--customize-hook=rm -f "$1"/etc/ssh/ssh_host_*"#)
        .arg(format!(
            r#"--customize-hook=chroot "$1" dpkg-query -W -f='${{Package}}\t${{Version}}\n' > {}"#,
            q(&out.join("packages.tsv"))
        ))
        .arg(&plan.suite)
        .arg(out.join("root.tar"));
    for s in sources {
        cmd.arg(s);
    }
    cmd
}

/// Quotes `s` for the POSIX shell that runs mmdebstrap's hooks.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_spaces_and_quotes() {
        assert_eq!(shell_quote("/a b/c'd"), r"'/a b/c'\''d'");
    }
}
