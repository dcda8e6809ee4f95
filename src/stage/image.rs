//! The filesystems and disk stages, cached together as one output: the disk file.
//!
//! Order: lay out the partitions, create the sparse file, write the GPT (disk), then the
//! ESP's FAT32 in-process and the root ext4 by mke2fs at its offset (filesystems). The
//! summary times "disk" and "filesystems" separately.

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use super::compose::Composed;
use super::updates;
use super::{BuildOptions, Stage};
use crate::cache::KeyBuilder;
use crate::disk::{gpt, layout, mbr};
use crate::fs::{ext4, fat};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::seed;

pub struct Image {
    pub key: String,
    pub disk: PathBuf,
    pub layout: layout::Layout,
}

/// systemd-boot's configuration: boot at once (a server has no one to choose). No
/// `default`: systemd-boot takes the first entry in its order, which is the newest version
/// (`sort-key`, then `version`, newest first) whose boots are not used up, so an update's
/// entry wins while it has tries left and the previous version once it has none.
const LOADER_CONF: &str = "timeout 0\nconsole-mode keep\neditor no\n";

/// A version's boot entry: its kernel and initramfs, its root by filesystem UUID.
pub fn loader_entry(plan: &Plan, c: &Composed) -> String {
    format!(
        "title imgforge {role} ({target}) {version}, Debian {suite}, Linux {kver}\n\
         sort-key imgforge\n\
         version {version}\n\
         linux /{dir}/{kernel}\n\
         initrd /{dir}/{initrd}\n\
         options {cmdline}\n",
        role = plan.role,
        target = plan.target,
        version = plan.version,
        suite = plan.suite,
        kver = c.kernel_version,
        dir = updates::ESP_DIR,
        kernel = updates::kernel_file(&plan.version),
        initrd = updates::initrd_file(&plan.version),
        cmdline = c.cmdline(plan),
    )
}

pub fn run(
    plan: &Plan,
    opts: &BuildOptions,
    c: &Composed,
    progress: &mut Progress,
) -> Result<Image> {
    const NAME: &str = "image";
    let root_bytes = layout::root_size(c.data_bytes, c.entries, plan.root_free_mib);
    let slot_bytes = plan.root_slot_mib * layout::MIB;
    if root_bytes > slot_bytes {
        return Err(crate::exit::UserError(format!(
            "role {}: its root needs {} MiB ({} MiB of content and root-free-mib = {}), more than \
             a root slot's {} MiB (root-slot-mib, in the role's, the target's or profiles/common.toml). \
             Raise root-slot-mib for new disks; nodes flashed with smaller slots cannot take \
             this version",
            plan.role,
            root_bytes / layout::MIB,
            c.data_bytes / layout::MIB,
            plan.root_free_mib,
            plan.root_slot_mib
        ))
        .into());
    }
    let data_bytes = layout::data_size(c.var_bytes, c.var_entries);
    let lay = layout::plan(
        plan.partition_table,
        plan.esp_size_mib,
        seed::SIZE,
        slot_bytes,
        data_bytes,
    );
    let mut key = KeyBuilder::new(NAME);
    key.add_str("compose", &c.key)
        .add_str("layout", &format!("{lay:?}"))
        .add_str("table", plan.partition_table.as_str())
        .add_str("loader", &loader_entry(plan, c))
        .add_str("slots", &format!("{:?}", plan.slots))
        .add_str("version", &plan.version)
        .add_str("epoch", &plan.source_date_epoch.to_string())
        .add_code(super::code::IMAGE);
    let key = key.finish();
    if !opts.forced(Stage::Image) {
        if let Some(dir) = opts.cache.lookup(NAME, &key) {
            progress.cached("disk");
            progress.cached("filesystems");
            return Ok(Image {
                key,
                disk: dir.join("disk.img"),
                layout: lay,
            });
        }
    }
    ext4::check_mke2fs()?;
    let pending = opts.cache.begin(NAME, &key)?;
    let disk_path = pending.path().join("disk.img");

    progress.start(
        "disk",
        &format!(
            "{}, {} MiB",
            plan.partition_table.as_str().to_uppercase(),
            lay.total / layout::MIB
        ),
    );
    let mut file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&disk_path)
        .with_context(|| format!("creating {}", disk_path.display()))?;
    file.set_len(lay.total)
        .with_context(|| format!("sizing {}", disk_path.display()))?;
    match plan.partition_table.as_str() {
        "mbr" => mbr::write(&mut file, &lay, c.ids.mbr_signature),
        _ => gpt::write(
            &mut file,
            &lay,
            &c.ids,
            gpt::root_type(plan.arch.as_str())?,
            &plan.version,
        ),
    }
    .with_context(|| format!("writing the partition table of {}", disk_path.display()))?;
    // The seed area carries the slot names from the start: seeding checks against them.
    let area = seed::initial_area(&plan.slots)?;
    file.seek(SeekFrom::Start(lay.seed.offset))?;
    file.write_all(&area)
        .context("writing the seed area's slot list")?;
    progress.done("disk");

    let raspi = plan.boot == crate::profile::machine::BootMethod::RaspiFirmware;
    progress.start(
        "filesystems",
        if raspi {
            "boot (FAT32, Pi firmware) and root (ext4 from the root tar)"
        } else {
            "ESP (FAT32) and root (ext4 from the root tar)"
        },
    );
    if raspi {
        write_raspi_boot(&mut file, plan, c, &lay)
    } else {
        write_esp(&mut file, plan, c, &lay)
    }
    .with_context(|| format!("writing the boot partition of {}", disk_path.display()))?;
    file.sync_all()?;
    drop(file);
    let t = Instant::now();
    ext4::make_from_tar(&ext4::Ext4Options {
        disk: &disk_path,
        offset: lay.root_a.offset,
        // The filesystem as large as its content needs; the rest of the slot stays zeros, so
        // a published root is only the filesystem's bytes.
        size: root_bytes,
        tar: Some(&c.root_tar()),
        uuid: c.ids.root_fs_uuid,
        hash_seed: c.ids.root_hash_seed,
        label: "root",
        epoch: plan.source_date_epoch,
        entries: c.entries,
        free_bytes: plan.root_free_mib * layout::MIB,
    })?;
    progress.detail(&format!(
        "root ext4 written in {:.1}s",
        t.elapsed().as_secs_f64()
    ));
    // The data partition starts empty: the node copies the slot's /var into it at first
    // boot (imgforge-var.service), so the image carries /var once, in the slot. Slot B
    // stays zeros (sparse) until an update writes it.
    ext4::make_from_tar(&ext4::Ext4Options {
        disk: &disk_path,
        offset: lay.data.offset,
        size: lay.data.len,
        tar: None,
        uuid: c.ids.data_fs_uuid,
        hash_seed: c.ids.data_hash_seed,
        // fstab and the MBR grow unit find the data partition by this label.
        label: seed_area::disk::DATA_PART_NAME,
        epoch: plan.source_date_epoch,
        entries: c.var_entries,
        free_bytes: lay.data.len,
    })?;
    File::open(&disk_path)?.sync_all()?;
    let dir = pending.commit()?;
    progress.done("filesystems");
    Ok(Image {
        key,
        disk: dir.join("disk.img"),
        layout: lay,
    })
}

fn write_esp(file: &mut File, plan: &Plan, c: &Composed, lay: &layout::Layout) -> Result<()> {
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    let bootloader = read(&c.bootloader())?;
    let kernel = read(&c.kernel())?;
    let initrd = read(&c.initrd())?;
    let entry = loader_entry(plan, c);
    let removable = match plan.arch.as_str() {
        "arm64" => "EFI/BOOT/BOOTAA64.EFI",
        _ => "EFI/BOOT/BOOTX64.EFI",
    };
    let files = [
        // The removable-media path: firmware boots it with no boot entry in NVRAM, which a
        // freshly flashed disk never has.
        fat::FatFile {
            path: removable.into(),
            content: &bootloader,
        },
        fat::FatFile {
            path: "loader/loader.conf".into(),
            content: LOADER_CONF.as_bytes(),
        },
        fat::FatFile {
            path: format!("loader/entries/{}", updates::entry_file(&plan.version)),
            content: entry.as_bytes(),
        },
        fat::FatFile {
            path: format!(
                "{}/{}",
                updates::ESP_DIR,
                updates::kernel_file(&plan.version)
            ),
            content: &kernel,
        },
        fat::FatFile {
            path: format!(
                "{}/{}",
                updates::ESP_DIR,
                updates::initrd_file(&plan.version)
            ),
            content: &initrd,
        },
    ];
    fat::write_volume(
        file,
        lay.esp.offset,
        lay.esp.len,
        c.ids.fat_volume_id,
        "ESP",
        plan.source_date_epoch,
        &files,
    )
}

/// The Pi firmware's files, as firmware/ renders them: config.txt and cmdline.txt.
pub fn raspi_config(plan: &Plan, c: &Composed) -> Result<(String, String)> {
    let raspi = plan
        .raspi
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("target {} has no [raspi] table", plan.target))?;
    let mut ctx = tera::Context::new();
    ctx.insert("role", &plan.role);
    ctx.insert("target", &plan.target);
    ctx.insert("model", raspi.model.as_str());
    ctx.insert("kernel", RASPI_KERNEL);
    ctx.insert("initramfs", RASPI_INITRAMFS);
    ctx.insert("cmdline", &c.cmdline(plan));
    let render = |name: &str, text: &str| {
        tera::Tera::one_off(text, &ctx, false).with_context(|| format!("rendering firmware/{name}"))
    };
    Ok((
        render("config.txt.tera", CONFIG_TXT)?,
        // The firmware reads one line.
        render("cmdline.txt.tera", CMDLINE_TXT)?.trim().to_string() + "\n",
    ))
}

const CONFIG_TXT: &str = include_str!("../../firmware/config.txt.tera");
const CMDLINE_TXT: &str = include_str!("../../firmware/cmdline.txt.tera");
/// The names config.txt gives the kernel and initramfs on the boot partition.
pub const RASPI_KERNEL: &str = "vmlinuz";
pub const RASPI_INITRAMFS: &str = "initrd.img";

/// The Pi's boot partition: firmware, device trees and overlays from the base root,
/// config.txt and cmdline.txt, the kernel and the initramfs, all at the top level where the
/// firmware looks (overlays in overlays/).
fn write_raspi_boot(
    file: &mut File,
    plan: &Plan,
    c: &Composed,
    lay: &layout::Layout,
) -> Result<()> {
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    let (config, cmdline) = raspi_config(plan, c)?;
    let mut owned: Vec<(String, Vec<u8>)> = vec![
        ("config.txt".into(), config.into_bytes()),
        ("cmdline.txt".into(), cmdline.into_bytes()),
        (RASPI_KERNEL.into(), read(&c.kernel())?),
        (RASPI_INITRAMFS.into(), read(&c.initrd())?),
    ];
    let fw = c.raspi_firmware_dir();
    let mut found = Vec::new();
    for dir in [fw.clone(), fw.join("overlays")] {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd {
            let p = e?.path();
            if p.is_file() {
                let rel = p.strip_prefix(&fw)?.to_string_lossy().into_owned();
                found.push((rel, p));
            }
        }
    }
    found.sort();
    for (rel, p) in found {
        owned.push((rel, read(&p)?));
    }
    let files: Vec<fat::FatFile> = owned
        .iter()
        .map(|(path, content)| fat::FatFile {
            path: path.clone().into(),
            content,
        })
        .collect();
    fat::write_volume(
        file,
        lay.esp.offset,
        lay.esp.len,
        c.ids.fat_volume_id,
        "BOOT",
        plan.source_date_epoch,
        &files,
    )?;
    write_raspi_ab(file, plan, c, lay)
}

/// The firmware's A/B around slot A's boot partition: the first FAT holding autoboot.txt,
/// which boots slot A and tries slot B once after an update sets the tryboot flag, and slot
/// B's boot partition, formatted and empty until an update writes a version's boot files
/// there (its root slot is empty too, so a stray trial finds nothing to boot and the next
/// reset returns to slot A).
fn write_raspi_ab(file: &mut File, plan: &Plan, c: &Composed, lay: &layout::Layout) -> Result<()> {
    let card = lay
        .card
        .ok_or_else(|| anyhow::anyhow!("a Raspberry Pi card's layout lacks its A/B partitions"))?;
    let autoboot = seed_area::card::autoboot_txt(seed_area::card::CardSlot::A);
    // Volume ids of their own (FAT has no UUIDs to keep apart otherwise): fstab mounts the
    // running version's boot partition by its id.
    fat::write_volume(
        file,
        card.autoboot.offset,
        card.autoboot.len,
        c.ids.fat_volume_id ^ 0x0000_a0b0,
        "AUTOBOOT",
        plan.source_date_epoch,
        &[fat::FatFile {
            path: seed_area::card::AUTOBOOT_FILE.into(),
            content: autoboot.as_bytes(),
        }],
    )
    .context("writing the autoboot partition")?;
    fat::write_volume(
        file,
        card.boot_b.offset,
        card.boot_b.len,
        c.ids.fat_volume_id ^ 0x0000_b0b0,
        "BOOT-B",
        plan.source_date_epoch,
        &[],
    )
    .context("writing slot B's boot partition")
}
