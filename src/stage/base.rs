//! The base stage: the Debian root tarball for (suite, arch, package set), made by
//! mmdebstrap, with apt's download cache kept between runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::{BuildOptions, Stage};
use crate::apt_sources;
use crate::board::root_drivers;
use crate::cache::KeyBuilder;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::tool::{self, HostTool};

pub const MMDEBSTRAP: HostTool = HostTool {
    program: "mmdebstrap",
    package: "mmdebstrap",
};

/// Man pages, info and translations are not needed on a server; the copyright files stay.
pub(super) const DPKG_EXCLUDES: &[&str] = &[
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
pub(super) fn host_arch() -> &'static str {
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
    /// A card's initramfs drivers with their reasons (board::root_drivers::Derivation's
    /// TSV), derived in the root after the kernel is installed.
    pub initramfs_drivers: Option<PathBuf>,
}

/// File names in the stage's folder.
const DRIVERS_SPEC: &str = "root-drivers.json";
const DRIVERS_TSV: &str = "initramfs-drivers.tsv";
/// Where a card's root keeps the derivation (and the list initramfs-tools reads), so a
/// kernel update on the node rebuilds the initramfs with the same drivers.
pub const NODE_DRIVERS_TSV: &str = "/usr/share/imgforge/initramfs-drivers.tsv";
const MODULES_D: &str = "/usr/share/initramfs-tools/modules.d/imgforge";

/// raspi-firmware's hooks, which rewrite config.txt and cmdline.txt their own way on every
/// kernel update: diverted before the package is unpacked (to `.imgforge-diverted` names,
/// which run-parts skips), and firmware/z50-imgforge-boot-files put in their place (the
/// package's postinst calls the kernel hook by its path).
const RASPI_HOOKS: &[&str] = &[
    "/etc/kernel/postinst.d/z50-raspi-firmware",
    "/etc/kernel/postrm.d/z50-raspi-firmware",
    "/etc/initramfs/post-update.d/z50-raspi-firmware",
];
const BOOT_FILES_HOOK: &str = include_str!("../../firmware/z50-imgforge-boot-files");
const BOOT_FILES_HOOK_NAME: &str = "z50-imgforge-boot-files";

/// `name/suite` packages from a suite other than the image's own or its backports (a
/// newer Raspberry Pi firmware from the next release): (name, suite).
fn later_suite_packages(plan: &Plan) -> Vec<(String, String)> {
    plan.packages
        .iter()
        .filter_map(|p| p.split_once('/'))
        .filter(|(_, s)| !s.starts_with(plan.suite.as_str()))
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect()
}

const LATER_SUITE_OPTION: &str = "[check-valid-until=no]";

/// apt preferences for `later` packages: that suite gives those packages alone, now and on
/// the node's upgrades (priority 1 for the rest of it, so `apt upgrade` never pulls the
/// next release in).
fn later_suite_preferences(later: &[(String, String)]) -> String {
    let mut s = String::from(
        "# Written by imgforge. Packages taken from a later Debian suite, and nothing else.\n",
    );
    for (name, suite) in later {
        s.push_str(&format!(
            "\nPackage: *\nPin: release n={suite}\nPin-Priority: 1\n\n\
             Package: {name}\nPin: release n={suite}\nPin-Priority: 990\n"
        ));
    }
    s
}

/// The walk that derives a card's root drivers (None for targets without a [raspi]).
fn drivers_spec(plan: &Plan) -> Option<root_drivers::Spec> {
    let r = plan.raspi.as_ref()?;
    Some(root_drivers::Spec {
        device_trees: r.device_trees.clone(),
        root_device: r.root_device.to_string(),
        // plan::resolve checked that the chosen device has its storage table.
        storage: r.storage.get(&r.root_device)?.clone(),
        extra_modules: plan.initramfs_modules.clone(),
    })
}

pub fn run(plan: &Plan, opts: &BuildOptions, progress: &mut Progress) -> Result<Base> {
    const NAME: &str = "base";
    let mirrors = apt_sources::host_mirrors();
    let backports = plan.packages.iter().any(|p| p.ends_with("-backports"));
    let later = later_suite_packages(plan);
    let mut sources = mirrors.source_lines(&plan.suite, &plan.apt_components, backports);
    let mut suites: Vec<&str> = later.iter().map(|(_, s)| s.as_str()).collect();
    suites.sort();
    suites.dedup();
    for s in suites {
        // A later suite gives one pinned package; only for the build, its Release may be
        // past its Valid-Until (a mirror that is a snapshot serves the next release's
        // stale): the signature is still checked, and the node's sources.list gets the
        // line without this option (customize hook below).
        sources.extend(
            mirrors
                .suite_line(s, &plan.apt_components)
                .map(|l| l.replacen("deb ", &format!("deb {LATER_SUITE_OPTION} "), 1)),
        );
    }
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
    let spec = drivers_spec(plan);
    if let Some(spec) = &spec {
        key.add_str("root-drivers", &serde_json::to_string(spec)?);
    }
    let key = key.finish();
    let base_of = |dir: &Path| Base {
        key: key.clone(),
        root_tar: dir.join("root.tar"),
        packages_tsv: dir.join("packages.tsv"),
        initramfs_drivers: Some(dir.join(DRIVERS_TSV)).filter(|p| p.is_file()),
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
    if let Some(spec) = &spec {
        std::fs::write(
            pending.path().join(DRIVERS_SPEC),
            serde_json::to_vec_pretty(spec)?,
        )
        .context("writing the root drivers' spec")?;
    }
    if spec.is_some() {
        std::fs::write(pending.path().join(BOOT_FILES_HOOK_NAME), BOOT_FILES_HOOK)
            .context("writing the boot files' kernel hook")?;
    }
    let exe = std::env::current_exe().context("finding imgforge's own executable")?;
    let mut cmd = mmdebstrap_command(
        plan,
        &sources,
        pending.path(),
        &apt_cache,
        spec.is_some().then_some(exe.as_path()),
    );
    tool::run_streaming(&mut cmd, |line| {
        // mmdebstrap's "I:" lines say which phase it is in; the rest is dpkg chatter.
        if line.starts_with("I: ") && !line.starts_with("I: running") {
            progress.detail(line);
        }
    })
    .context("building the base root with mmdebstrap")?;
    let dir = pending.commit()?;
    let base = base_of(&dir);
    if let Some(tsv) = &base.initramfs_drivers {
        let modules = root_drivers::read_tsv(tsv)?
            .into_iter()
            .filter(|d| d.part == "root" && !d.built_in)
            .map(|d| d.module)
            .collect::<Vec<_>>();
        progress.detail(&format!(
            "initramfs drivers, derived from the device trees: {}",
            modules.join(" ")
        ));
    }
    progress.done(NAME);
    Ok(base)
}

/// `derive_with`: imgforge's own executable, which derives a card's initramfs drivers in the
/// root (`imgforge initramfs-drivers`) once the kernel is installed.
fn mmdebstrap_command(
    plan: &Plan,
    sources: &[String],
    out: &Path,
    apt_cache: &Path,
    derive_with: Option<&Path>,
) -> Command {
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
        .arg(format!("--setup-hook=sync-in {} /var/cache/apt/archives/", q(apt_cache)));
    let later = later_suite_packages(plan);
    if !later.is_empty() {
        // Before apt resolves anything: apt reads the root's preferences.d.
        cmd.arg(r#"--setup-hook=mkdir -p "$1/etc/apt/preferences.d""#)
            .arg(format!(
                r#"--setup-hook=printf '%s' {} > "$1/etc/apt/preferences.d/imgforge""#,
                shell_quote(&later_suite_preferences(&later))
            ));
    }
    cmd
        // The kernel's and initramfs-tools' own scripts would each build the initramfs
        // (twice in all; under qemu-user for an arm64 root, ~25 min): update-initramfs is a
        // no-op while packages install, and the customize hook below builds it once.
        .arg(format!(r#"--essential-hook=chroot "$1" dpkg-divert --quiet --local --rename --divert {DIVERTED} --add {UPDATE_INITRAMFS} && printf '#!/bin/sh\nexit 0\n' > "$1{UPDATE_INITRAMFS}" && chmod 755 "$1{UPDATE_INITRAMFS}""#))
        .arg(format!(r#"--customize-hook=rm -f "$1{UPDATE_INITRAMFS}" && chroot "$1" dpkg-divert --quiet --local --rename --remove {UPDATE_INITRAMFS}"#));
    if derive_with.is_some() {
        for hook in RASPI_HOOKS {
            let dir = Path::new(hook).parent().unwrap().display().to_string();
            cmd.arg(format!(
                r#"--essential-hook=chroot "$1" dpkg-divert --quiet --local --rename --divert {hook}.imgforge-diverted --add {hook}"#
            ))
            .arg(format!(r#"--essential-hook=mkdir -p "$1{dir}""#))
            .arg(format!(
                "--essential-hook=upload {} {hook}",
                q(&out.join(BOOT_FILES_HOOK_NAME))
            ))
            .arg(format!(r#"--essential-hook=chmod 755 "$1{hook}""#));
        }
    }
    if let Some(exe) = derive_with {
        // Replaces the setup hook's list: the drivers the root needs on the boards, derived
        // from their device trees and the installed kernel's tables, plus the target's own.
        // The derivation stays in the root so a kernel update keeps it (the node's list).
        cmd.arg(format!(
            r#"--customize-hook={} initramfs-drivers --root "$1" --spec {} --modules "$1{MODULES_D}" --reasons {} && mkdir -p "$1{dir}" && cp {} "$1{NODE_DRIVERS_TSV}""#,
            q(exe),
            q(&out.join(DRIVERS_SPEC)),
            q(&out.join(DRIVERS_TSV)),
            q(&out.join(DRIVERS_TSV)),
            dir = Path::new(NODE_DRIVERS_TSV).parent().unwrap().display(),
        ));
    }
    if !later.is_empty() {
        cmd.arg(format!(
            r#"--customize-hook=sed -i 's/ {}//' "$1/etc/apt/sources.list""#,
            LATER_SUITE_OPTION.replace('[', r"\[").replace(']', r"\]")
        ));
    }
    cmd.arg(r#"--customize-hook=if ls "$1"/boot/vmlinuz-* >/dev/null 2>&1; then chroot "$1" update-initramfs -c -k all; fi"#)
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
pub(super) fn shell_quote(s: &str) -> String {
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
