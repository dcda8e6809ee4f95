//! The compose stage: stream the base root tar into the final root tar, adding overlays,
//! rendered templates, generated units and links, and the project's binaries.
//!
//! Deterministic: base entries keep their order and headers; an added path that exists in
//! the base replaces that entry in place; new paths follow in sorted order, with any missing
//! parent folders; every added entry has owner 0:0 and mtime SOURCE_DATE_EPOCH.
//!
//! While streaming, the boot files (kernel, initramfs, systemd-boot) are copied out for
//! the image stage, which puts them on the ESP.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::apps::Apps;
use super::base::Base;
use super::binaries::Binaries;
use super::units::{self, Generated};
use super::{BuildOptions, Stage};
use crate::cache::{sha256_bytes, KeyBuilder};
use crate::disk::ids::{Ids, Part};
use crate::overlay::OverlayFile;
use crate::plan::Plan;
use crate::profile::machine::{BootMethod, PartitionTable};
use crate::progress::Progress;

/// Paths never copied from the base: per-node secrets and identity that must not be shared
/// by every server flashed from one image.
const DROPPED_PREFIXES: &[&str] = &[
    "etc/ssh/ssh_host_",
    "etc/ssl/private/ssl-cert-snakeoil.key",
    "etc/ssl/certs/ssl-cert-snakeoil.pem",
];

/// Folders /etc/fstab mounts something on (the parents exist in every base root).
const MOUNT_POINTS: &[&str] = &["boot/efi", "boot/firmware", "var"];

/// What compose produced, as recorded in `compose.json` beside the tar.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Composed {
    pub key: String,
    pub ids: Ids,
    pub dir: PathBuf,
    pub kernel_version: String,
    /// Bytes of file data in the root, each file rounded up to 4 KiB blocks.
    pub data_bytes: u64,
    pub entries: u64,
    /// The part of `data_bytes` and `entries` under /var, which the node copies to the data
    /// partition at first boot: the image stage sizes that partition by it.
    #[serde(default)]
    pub var_bytes: u64,
    #[serde(default)]
    pub var_entries: u64,
    /// Hashes of the overlay files used, for the manifest.
    pub overlays: Vec<(String, String)>,
}

impl Composed {
    pub fn root_tar(&self) -> PathBuf {
        self.dir.join("root.tar")
    }
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("boot/vmlinuz")
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("boot/initrd.img")
    }
    pub fn bootloader(&self) -> PathBuf {
        self.dir.join("boot/systemd-boot.efi")
    }
    /// The Raspberry Pi firmware, device trees and overlays copied from the base root.
    pub fn raspi_firmware_dir(&self) -> PathBuf {
        self.dir.join("boot/firmware")
    }
    /// The kernel command line the loader entry carries. The root is named by its
    /// filesystem UUID, which travels with the slot's bytes: a version written into either
    /// slot (whose partition UUIDs were fixed by the image first flashed) finds itself.
    pub fn cmdline(&self, plan: &Plan) -> String {
        let mut words = vec![format!("root=UUID={}", self.ids.root_fs_uuid)];
        words.extend(plan.kernel_cmdline.iter().cloned());
        words.join(" ")
    }
}

/// One entry compose adds.
#[derive(Debug, Clone)]
enum Addition {
    File { content: Vec<u8>, mode: u32 },
    Symlink { target: String },
}

/// Where systemd-pull's gpg finds the keys a publish folder's SHA256SUMS.gpg may be signed
/// with (sysupdate.d(5), Verify=).
const IMPORT_PUBRING: &str = "usr/lib/systemd/import-pubring.gpg";

/// For a host with `updates`, the public key of the user's signing key folder (the image
/// holds nothing else of it).
pub fn update_public_key(plan: &Plan, opts: &BuildOptions) -> Result<Option<Vec<u8>>> {
    if plan.host.updates.is_none() {
        return Ok(None);
    }
    let keys = crate::signing::KeyDir::choose(
        opts.key_dir.as_deref(),
        &[("the checkout", opts.source_dir.as_path())],
    )?;
    if !keys.public_key().is_file() {
        return Err(crate::exit::UserError(format!(
            "host `{}` has `updates`: its image must hold the public key nodes check versions with, and {} has none; make the key with `imgforge keygen` (or pass --key-dir)",
            plan.host.name,
            keys.public_key().display()
        ))
        .into());
    }
    let k = fs::read(keys.public_key())
        .with_context(|| format!("reading {}", keys.public_key().display()))?;
    Ok(Some(k))
}

pub fn run(
    plan: &Plan,
    opts: &BuildOptions,
    base: &Base,
    bins: &Binaries,
    apps: &Apps,
    progress: &mut Progress,
) -> Result<Composed> {
    const NAME: &str = "compose";
    let overlays = opts.overlays.files_for(&plan.role)?;
    let mut key = KeyBuilder::new(NAME);
    key.add_str("base", &base.key)
        .add_str("binaries", &bins.content_hash)
        .add_str("apps", &apps.key)
        .add_str("plan", &plan_for_key(plan))
        .add_code(super::code::COMPOSE);
    for (path, f) in &overlays {
        key.add(path, &f.content);
    }
    let update_key = update_public_key(plan, opts)?;
    if let Some(k) = &update_key {
        key.add(IMPORT_PUBRING, k);
    }
    let key = key.finish();
    let load = |dir: &Path| -> Result<Composed> {
        let text = fs::read_to_string(dir.join("compose.json"))
            .with_context(|| format!("reading {}", dir.join("compose.json").display()))?;
        let mut c: Composed = serde_json::from_str(&text).context("parsing compose.json")?;
        c.dir = dir.to_path_buf();
        Ok(c)
    };
    if !opts.forced(Stage::Compose) {
        if let Some(dir) = opts.cache.lookup(NAME, &key) {
            progress.cached(NAME);
            return load(&dir);
        }
    }
    progress.start(
        NAME,
        "streaming the base root with overlays, units and binaries",
    );
    let mut ids = Ids::derive(&key);
    if plan.partition_table == PartitionTable::Mbr {
        // A card's partitions are named by its MBR signature, which updates keep: one per
        // site, host and target, not per build (disk::ids::card_signature).
        ids.mbr_signature = crate::disk::ids::card_signature(&format!(
            "{}/{}/{}",
            plan.site, plan.host.name, plan.target
        ));
    }
    let mut additions = BTreeMap::new();
    render_overlays(plan, &ids, &overlays, &mut additions)?;
    if plan.partition_table == PartitionTable::Mbr {
        // systemd-repart grows the root on GPT disks only; on an MBR card the worker's
        // grow-root unit does it (units.rs), and a repart definition would fail there.
        additions.retain(|path, _| !path.starts_with("usr/lib/repart.d/"));
    }
    let installed: BTreeSet<String> = fs::read_to_string(&base.packages_tsv)
        .with_context(|| format!("reading {}", base.packages_tsv.display()))?
        .lines()
        .filter_map(|l| l.split('\t').next().map(str::to_string))
        .collect();
    for g in units::generate(plan, &installed, &ids) {
        match g {
            Generated::File {
                path,
                content,
                mode,
            } => additions.insert(path, Addition::File { content, mode }),
            Generated::Symlink { path, target } => {
                additions.insert(path, Addition::Symlink { target })
            }
        };
    }
    if let Some(k) = update_key {
        // The only key sysupdate's gpg trusts: Debian's vendor keyring is replaced.
        additions.insert(
            IMPORT_PUBRING.into(),
            Addition::File {
                content: k,
                mode: 0o644,
            },
        );
    }
    for (name, path) in &bins.files {
        let content = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        additions.insert(
            format!("usr/local/bin/{name}"),
            Addition::File {
                content,
                mode: 0o755,
            },
        );
    }

    if let Some(tar) = &apps.tar {
        add_tar(tar, &mut additions)
            .with_context(|| format!("adding the apps from {}", tar.display()))?;
    }

    let pending = opts.cache.begin(NAME, &key)?;
    fs::create_dir_all(pending.path().join("boot"))?;
    let stats = stream(
        &base.root_tar,
        &pending.path().join("root.tar"),
        &pending.path().join("boot"),
        additions,
        plan,
    )
    .with_context(|| format!("composing the root from {}", base.root_tar.display()))?;
    let composed = Composed {
        key: key.clone(),
        ids,
        dir: PathBuf::new(),
        kernel_version: stats.kernel_version,
        data_bytes: stats.data_bytes,
        entries: stats.entries,
        var_bytes: stats.var_bytes,
        var_entries: stats.var_entries,
        overlays: overlays
            .iter()
            .map(|(p, f)| (p.clone(), sha256_bytes(&f.content)))
            .collect(),
    };
    fs::write(
        pending.path().join("compose.json"),
        serde_json::to_vec_pretty(&composed)?,
    )?;
    let dir = pending.commit()?;
    progress.done(NAME);
    load(&dir)
}

/// Adds the files and links of a tar (the apps stage's /opt/<app> trees); folders are made
/// as parents of what they hold.
fn add_tar(path: &Path, out: &mut BTreeMap<String, Addition>) -> Result<()> {
    let mut ar = tar::Archive::new(BufReader::new(File::open(path)?));
    for e in ar.entries()? {
        let mut e = e?;
        let p = e
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let t = e.header().entry_type();
        if t.is_file() {
            let mode = e.header().mode()? & 0o7777;
            let mut content = Vec::new();
            e.read_to_end(&mut content)?;
            out.insert(p, Addition::File { content, mode });
        } else if t.is_symlink() {
            let target = e
                .link_name()?
                .ok_or_else(|| anyhow!("link {p} without a target"))?
                .to_string_lossy()
                .into_owned();
            out.insert(p, Addition::Symlink { target });
        } else if !t.is_dir() {
            bail!("{p}: unexpected entry type {t:?}");
        }
    }
    Ok(())
}

/// The parts of the plan that change the root's content (not the QEMU settings).
fn plan_for_key(plan: &Plan) -> String {
    let mut p = plan.clone();
    p.inputs.clear();
    p.boot_timeout_secs = 0;
    p.qemu.memory_mib = 0;
    p.qemu.smp = 0;
    p.qemu.cpu.clear();
    serde_json::to_string(&p).expect("plan serializes")
}

fn render_overlays(
    plan: &Plan,
    ids: &Ids,
    files: &BTreeMap<String, OverlayFile>,
    out: &mut BTreeMap<String, Addition>,
) -> Result<()> {
    let mut ctx = tera::Context::new();
    ctx.insert("plan", plan);
    ctx.insert(
        "ids",
        &serde_json::json!({
            "root_partuuid": ids.partuuid(plan.partition_table.as_str(), Part::RootA),
            "root_fs_uuid": ids.root_fs_uuid.to_string(),
            "data_fs_uuid": ids.data_fs_uuid.to_string(),
            "esp_partuuid": ids.partuuid(plan.partition_table.as_str(), Part::Boot),
            "esp_fat_uuid": ids.fat_uuid(),
        }),
    );
    for f in files.values() {
        if f.is_template() {
            let text = std::str::from_utf8(&f.content)
                .map_err(|_| anyhow!("{}: a template must be UTF-8", f.origin))?;
            let rendered = tera::Tera::one_off(text, &ctx, false)
                .map_err(|e| anyhow!("{}: {}", f.origin, tera_error_chain(&e)))?;
            let path = f.path.trim_end_matches(".tera").to_string();
            let mode = if rendered.starts_with("#!") {
                0o755
            } else {
                0o644
            };
            out.insert(
                path,
                Addition::File {
                    content: rendered.into_bytes(),
                    mode,
                },
            );
        } else {
            out.insert(
                f.path.clone(),
                Addition::File {
                    content: f.content.clone(),
                    mode: f.mode(),
                },
            );
        }
    }
    Ok(())
}

fn tera_error_chain(e: &tera::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        parts.push(s.to_string());
        src = s.source();
    }
    parts.join(": ")
}

struct Stats {
    kernel_version: String,
    data_bytes: u64,
    entries: u64,
    var_bytes: u64,
    var_entries: u64,
}

/// Strips `./` and a trailing `/` so base paths compare with ours.
fn normalize(p: &Path) -> String {
    let s = p.to_string_lossy();
    let s = s.strip_prefix("./").unwrap_or(&s);
    s.trim_end_matches('/').to_string()
}

fn stream(
    base_tar: &Path,
    out_tar: &Path,
    boot_dir: &Path,
    mut additions: BTreeMap<String, Addition>,
    plan: &Plan,
) -> Result<Stats> {
    let input = File::open(base_tar).with_context(|| format!("opening {}", base_tar.display()))?;
    let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 20, input));
    let output =
        File::create(out_tar).with_context(|| format!("creating {}", out_tar.display()))?;
    let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, output));
    builder.follow_symlinks(false);
    let captures = Captures::for_plan(plan)?;
    let mut kernels = Vec::new();
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    let mut stats = Stats {
        kernel_version: String::new(),
        data_bytes: 0,
        entries: 0,
        var_bytes: 0,
        var_entries: 0,
    };
    let epoch = plan.source_date_epoch;

    for entry in archive.entries().context("reading the base tar")? {
        crate::interrupt::check()?;
        let mut entry = entry.context("reading a base tar entry")?;
        let path = normalize(&entry.path()?);
        if path.is_empty() {
            // The archive's own root "./": mke2fs makes the root folder (root_owner=0:0).
            continue;
        }
        if DROPPED_PREFIXES.iter().any(|p| path.starts_with(p)) {
            continue;
        }
        // raspi-firmware's scripts copy the firmware, kernel and device trees to
        // /boot/firmware in the root; on the card the boot partition is mounted there and
        // imgforge writes it itself, so the copies would only be hidden weight.
        if captures.raspi.is_some() && path.starts_with("boot/firmware/") {
            continue;
        }
        if let Some(add) = additions.remove(&path) {
            append_addition(&mut builder, &path, &add, epoch, &mut stats)?;
            continue;
        }
        let kind = entry.header().entry_type();
        let mut header = entry.header().clone();
        // Forward extended attributes (file capabilities) recorded as PAX records.
        let xattrs: Vec<(String, Vec<u8>)> = match entry.pax_extensions()? {
            Some(exts) => exts
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let k = e.key().ok()?;
                    k.starts_with("SCHILY.xattr.")
                        .then(|| (k.to_string(), e.value_bytes().to_vec()))
                })
                .collect(),
            None => Vec::new(),
        };
        if !xattrs.is_empty() {
            builder
                .append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        stats.entries += 1;
        let under_var = path.starts_with("var/");
        if under_var {
            stats.var_entries += 1;
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size()?;
                stats.data_bytes += size.div_ceil(4096) * 4096;
                if under_var {
                    stats.var_bytes += size.div_ceil(4096) * 4096;
                }
                if let Some(name) = captures.capture(&path) {
                    let mut data = Vec::with_capacity(size as usize);
                    entry.read_to_end(&mut data)?;
                    let dst = boot_dir.join(&name);
                    if let Some(parent) = dst.parent() {
                        fs::create_dir_all(parent)?;
                    }
                    fs::write(&dst, &data)?;
                    if name == "vmlinuz" {
                        kernels.push(path.trim_start_matches("boot/vmlinuz-").to_string());
                    }
                    builder.append_data(&mut header, &path, data.as_slice())?;
                } else {
                    builder.append_data(&mut header, &path, &mut entry)?;
                }
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| anyhow!("{path}: link without a target"))?
                    .into_owned();
                // Hard links name their target as an archive path: normalize it like ours.
                let target = if kind == tar::EntryType::Link {
                    PathBuf::from(normalize(&target))
                } else {
                    target
                };
                builder.append_link(&mut header, &path, &target)?;
            }
            tar::EntryType::Directory => {
                dirs.insert(path.clone());
                builder.append_data(&mut header, format!("{path}/"), std::io::empty())?;
            }
            _ => {
                builder.append_data(&mut header, &path, std::io::empty())?;
            }
        }
    }

    // New paths, sorted, each preceded by the folders it needs.
    for (path, add) in std::mem::take(&mut additions) {
        let mut parent = String::new();
        for comp in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, p)| p.to_vec())
            .unwrap_or_default()
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(comp);
            if dirs.insert(parent.clone()) {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                set_common(&mut h, 0o755, epoch);
                h.set_size(0);
                builder.append_data(&mut h, format!("{parent}/"), std::io::empty())?;
                stats.entries += 1;
            }
        }
        append_addition(&mut builder, &path, &add, epoch, &mut stats)?;
    }
    // Mount points the read-only root must carry: systemd cannot make them there at boot.
    for dir in MOUNT_POINTS {
        if dirs.insert(dir.to_string()) {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            set_common(&mut h, 0o755, epoch);
            h.set_size(0);
            builder.append_data(&mut h, format!("{dir}/"), std::io::empty())?;
            stats.entries += 1;
        }
    }
    let mut w = builder.into_inner().context("finishing the root tar")?;
    w.flush()?;

    kernels.sort();
    match kernels.as_slice() {
        [one] => stats.kernel_version = one.clone(),
        [] => {
            bail!("the base root has no kernel in /boot (is the target's kernel package listed?)")
        }
        many => bail!(
            "the base root has several kernels ({}); a target installs one",
            many.join(", ")
        ),
    }
    captures.check(boot_dir)?;
    Ok(stats)
}

/// The boot files compose copies out of the base root for the image stage: the kernel and
/// initramfs, and systemd-boot or the Raspberry Pi firmware and device trees.
struct Captures {
    bootloader: Option<String>,
    raspi: Option<crate::profile::Raspi>,
}

impl Captures {
    fn for_plan(plan: &Plan) -> Result<Captures> {
        let bootloader = if plan.boot == BootMethod::SystemdBoot {
            let efi_arch = match plan.arch.as_str() {
                "amd64" => "x64",
                "arm64" => "aa64",
                other => bail!("no systemd-boot for arch {other}"),
            };
            Some(format!(
                "usr/lib/systemd/boot/efi/systemd-boot{efi_arch}.efi"
            ))
        } else {
            None
        };
        Ok(Captures {
            bootloader,
            raspi: plan.raspi.clone(),
        })
    }

    /// Where under the boot folder a base path is kept, if it is a boot file: vmlinuz,
    /// initrd.img, systemd-boot.efi, or firmware/<name> (firmware/overlays/<name>).
    fn capture(&self, path: &str) -> Option<String> {
        if path.starts_with("boot/vmlinuz-") {
            return Some("vmlinuz".into());
        }
        if path.starts_with("boot/initrd.img-") {
            return Some("initrd.img".into());
        }
        if self.bootloader.as_deref() == Some(path) {
            return Some("systemd-boot.efi".into());
        }
        let raspi = self.raspi.as_ref()?;
        if let Some(name) = path.strip_prefix("usr/lib/raspi-firmware/") {
            if raspi.firmware.iter().any(|f| f == name) {
                return Some(format!("firmware/{name}"));
            }
            if name.starts_with("overlays/") && name.ends_with(".dtbo") {
                return Some(format!("firmware/{name}"));
            }
        }
        // usr/lib/linux-image-<version>/broadcom/<dtb> (trixie's 6.12), or
        // usr/lib/modules/<version>/dtb/broadcom/<dtb> (the backports kernels).
        let dtb = match path.strip_prefix("usr/lib/linux-image-") {
            Some(rest) => rest.split_once("/broadcom/")?.1,
            None => {
                path.strip_prefix("usr/lib/modules/")?
                    .split_once("/dtb/broadcom/")?
                    .1
            }
        };
        raspi
            .device_trees
            .iter()
            .any(|d| d == dtb)
            .then(|| format!("firmware/{dtb}"))
    }

    /// Every boot file the target needs was found in the base root.
    fn check(&self, boot_dir: &Path) -> Result<()> {
        if !boot_dir.join("initrd.img").is_file() {
            bail!("the base root has no /boot/initrd.img-* (is initramfs-tools installed?)");
        }
        if self.bootloader.is_some() && !boot_dir.join("systemd-boot.efi").is_file() {
            bail!("the base root lacks systemd-boot (systemd-boot-efi must be installed)");
        }
        if let Some(r) = &self.raspi {
            let missing: Vec<&str> = r
                .firmware
                .iter()
                .chain(&r.device_trees)
                .filter(|f| !boot_dir.join("firmware").join(f).is_file())
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                bail!(
                    "the base root lacks {} (raspi-firmware has the firmware, \
                     linux-image-arm64 the device trees under /usr/lib/linux-image-*/broadcom \
                     or /usr/lib/modules/*/dtb/broadcom)",
                    missing.join(", ")
                );
            }
        }
        Ok(())
    }
}

fn set_common(h: &mut tar::Header, mode: u32, epoch: u64) {
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(epoch);
    // Numeric owners only: names would be looked up on the building machine.
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
}

fn append_addition<W: Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    add: &Addition,
    epoch: u64,
    stats: &mut Stats,
) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    stats.entries += 1;
    match add {
        Addition::File { content, mode } => {
            h.set_entry_type(tar::EntryType::Regular);
            set_common(&mut h, *mode, epoch);
            h.set_size(content.len() as u64);
            stats.data_bytes += (content.len() as u64).div_ceil(4096) * 4096;
            b.append_data(&mut h, path, content.as_slice())
                .with_context(|| format!("adding /{path}"))?;
        }
        Addition::Symlink { target } => {
            h.set_entry_type(tar::EntryType::Symlink);
            set_common(&mut h, 0o777, epoch);
            h.set_size(0);
            b.append_link(&mut h, path, target)
                .with_context(|| format!("adding link /{path}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raspi_boot_files_are_found_in_both_kernel_layouts() {
        let c = Captures {
            bootloader: None,
            raspi: Some(crate::profile::Raspi {
                model: crate::profile::machine::RaspiModel::Pi5,
                firmware: vec!["start4.elf".into()],
                device_trees: vec!["bcm2712-rpi-5-b.dtb".into()],
                root_device: Default::default(),
                storage: Default::default(),
            }),
        };
        let cap = |p: &str| c.capture(p);
        assert_eq!(
            cap("usr/lib/linux-image-6.12.117+deb13-arm64/broadcom/bcm2712-rpi-5-b.dtb").as_deref(),
            Some("firmware/bcm2712-rpi-5-b.dtb")
        );
        assert_eq!(
            cap("usr/lib/modules/7.3.4+deb13-arm64/dtb/broadcom/bcm2712-rpi-5-b.dtb").as_deref(),
            Some("firmware/bcm2712-rpi-5-b.dtb")
        );
        assert_eq!(
            cap("usr/lib/modules/7.3.4+deb13-arm64/dtb/broadcom/bcm2711-rpi-4-b.dtb"),
            None
        );
        assert_eq!(
            cap("usr/lib/raspi-firmware/start4.elf").as_deref(),
            Some("firmware/start4.elf")
        );
        assert_eq!(cap("usr/lib/raspi-firmware/start.elf"), None);
        assert_eq!(
            cap("usr/lib/raspi-firmware/overlays/pi4-spidev.dtbo").as_deref(),
            Some("firmware/overlays/pi4-spidev.dtbo")
        );
        assert_eq!(
            cap("boot/vmlinuz-7.3.4+deb13-arm64").as_deref(),
            Some("vmlinuz")
        );
    }
    use crate::plan::{resolve, Request};
    use crate::profile::ProfileSource;

    fn plan() -> Plan {
        resolve(
            &ProfileSource::Embedded,
            &Request {
                role: "proxy".into(),
                target: "x86_64-vm".into(),
                site: "example".into(),
                host: None,
                version: None,
            },
        )
        .unwrap()
    }

    /// A tiny base root in the shape mmdebstrap writes (./-prefixed, folders first).
    fn base_tar(dir: &Path) -> PathBuf {
        let p = dir.join("base.tar");
        let mut b = tar::Builder::new(File::create(&p).unwrap());
        let mut add = |path: &str, data: &[u8], kind: tar::EntryType| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(if kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_size(data.len() as u64);
            h.set_mtime(1);
            b.append_data(&mut h, path, data).unwrap();
        };
        use tar::EntryType::{Directory as D, Regular as R};
        add("./", b"", D);
        add("./boot/", b"", D);
        add("./boot/initrd.img-6.12-amd64", b"initrd", R);
        add("./boot/vmlinuz-6.12-amd64", b"kernel", R);
        add("./etc/", b"", D);
        add("./etc/hostname", b"builder\n", R);
        add("./etc/ssh/", b"", D);
        add("./etc/ssh/ssh_host_ed25519_key", b"SECRET", R);
        add("./usr/", b"", D);
        add("./usr/lib/", b"", D);
        add("./usr/lib/systemd/", b"", D);
        add("./usr/lib/systemd/boot/", b"", D);
        add("./usr/lib/systemd/boot/efi/", b"", D);
        add(
            "./usr/lib/systemd/boot/efi/systemd-bootx64.efi",
            b"MZboot",
            R,
        );
        b.finish().unwrap();
        p
    }

    fn entries(tar_path: &Path) -> Vec<(String, Vec<u8>)> {
        let mut a = tar::Archive::new(File::open(tar_path).unwrap());
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let p = e.path().unwrap().to_string_lossy().into_owned();
                let mut d = Vec::new();
                e.read_to_end(&mut d).unwrap();
                (p, d)
            })
            .collect()
    }

    fn run_stream(dir: &Path, additions: BTreeMap<String, Addition>) -> (PathBuf, Stats) {
        let base = base_tar(dir);
        let out = dir.join(format!("out-{}.tar", additions.len()));
        let boot = dir.join("boot");
        fs::create_dir_all(&boot).unwrap();
        let stats = stream(&base, &out, &boot, additions, &plan()).unwrap();
        (out, stats)
    }

    #[test]
    fn replaces_in_place_appends_new_drops_host_keys_and_captures_boot_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut adds = BTreeMap::new();
        adds.insert(
            "etc/hostname".into(),
            Addition::File {
                content: b"edge\n".to_vec(),
                mode: 0o644,
            },
        );
        adds.insert(
            "etc/imgforge/node.toml".into(),
            Addition::File {
                content: b"role = \"proxy\"\n".to_vec(),
                mode: 0o644,
            },
        );
        adds.insert(
            "etc/systemd/system/multi-user.target.wants/x.service".into(),
            Addition::Symlink {
                target: "/etc/systemd/system/x.service".into(),
            },
        );
        let (out, stats) = run_stream(dir.path(), adds);
        let e = entries(&out);
        let names: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
        let hostname_at = names.iter().position(|n| *n == "etc/hostname").unwrap();
        assert!(
            hostname_at < names.iter().position(|n| *n == "usr/").unwrap(),
            "replaced in place: {names:?}"
        );
        assert_eq!(e[hostname_at].1, b"edge\n");
        assert!(
            !names.iter().any(|n| n.contains("ssh_host_")),
            "host keys dropped: {names:?}"
        );
        let imgforge_dir = names
            .iter()
            .position(|n| *n == "etc/imgforge/")
            .expect("parent created");
        assert!(
            imgforge_dir
                < names
                    .iter()
                    .position(|n| *n == "etc/imgforge/node.toml")
                    .unwrap()
        );
        assert!(
            names.contains(&"etc/systemd/system/multi-user.target.wants/"),
            "{names:?}"
        );
        assert_eq!(
            fs::read(dir.path().join("boot/vmlinuz")).unwrap(),
            b"kernel"
        );
        assert_eq!(
            fs::read(dir.path().join("boot/systemd-boot.efi")).unwrap(),
            b"MZboot"
        );
        assert_eq!(stats.kernel_version, "6.12-amd64");
    }

    #[test]
    fn same_input_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mk = || {
            let mut a = BTreeMap::new();
            a.insert(
                "etc/z".to_string(),
                Addition::File {
                    content: b"z".to_vec(),
                    mode: 0o644,
                },
            );
            a.insert(
                "opt/a/b".to_string(),
                Addition::File {
                    content: b"b".to_vec(),
                    mode: 0o755,
                },
            );
            a
        };
        let (one, _) = run_stream(dir.path(), mk());
        let first = fs::read(&one).unwrap();
        let (two, _) = run_stream(dir.path(), mk());
        assert_eq!(first, fs::read(two).unwrap());
    }
}
