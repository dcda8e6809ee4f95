//! `imgforge publish`: one version of a role's image as the files a node's
//! systemd-sysupdate fetches from any static web server: the root slot compressed, the
//! kernel, the initramfs and the systemd-boot entry that starts them (a card: the root and
//! its boot partition, compressed, for the worker's card-update), a manifest, and
//! `SHA256SUMS` (every version in the folder) with its detached signature
//! `SHA256SUMS.gpg`. Publishing into a folder that holds earlier versions adds to it, so a
//! node sees every version the folder offers and takes the newest.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

use crate::cache::sha256_file;
use crate::cli::{BuildArgs, KeygenArgs, PublishArgs};
use crate::profile::machine::BootMethod;
use crate::progress::Progress;
use crate::signing::KeyDir;
use crate::stage::outputs::{update_sha256sums, FileRecord};
use crate::stage::updates;

pub fn keygen(a: KeygenArgs) -> Result<()> {
    let checkout = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = KeyDir::choose(
        a.key_dir.as_deref(),
        &[("the checkout", checkout.as_path())],
    )?;
    let host = fs::read_to_string("/etc/hostname").unwrap_or_default();
    let user_id = a.name.unwrap_or_else(|| {
        format!(
            "imgforge update signing ({})",
            host.trim().trim_end_matches('.')
        )
    });
    let fpr = dir.generate(&user_id)?;
    eprintln!(
        "imgforge: signing key {fpr} made in {} (keep this folder; only {} goes into images)",
        dir.path.display(),
        crate::signing::PUBLIC_KEY
    );
    println!("{}", dir.public_key().display());
    Ok(())
}

pub fn run(a: PublishArgs) -> Result<()> {
    let plan = super::resolve_plan(&a.profile)?;
    // A card's version is its root and its boot partition, written by the card's own
    // engine (the worker's card-update); a VM's is what systemd-sysupdate's transfers name.
    let card = plan.boot == BootMethod::RaspiFirmware;
    let build = BuildArgs {
        profile: a.profile.clone(),
        out: a.images.clone(),
        rebuild: None,
        overlays: a.overlays.clone(),
        source: a.source.clone(),
        cache: a.cache.clone(),
        key_dir: a.key_dir.clone(),
        quiet: a.quiet,
    };
    let opts = super::build_options(&build)?;
    // Checked before the build: a missing key or one in the wrong place costs nothing.
    let keys = KeyDir::choose(
        a.key_dir.as_deref(),
        &[
            ("the checkout", opts.source_dir.as_path()),
            ("the publish folder", a.out.as_path()),
        ],
    )?;
    keys.require_key()?;
    let mut progress = Progress::new(a.quiet);
    let built = crate::stage::build(&plan, &opts, &mut progress)?;

    fs::create_dir_all(&a.out)
        .with_context(|| format!("creating publish folder {}", a.out.display()))?;
    let name = |kind: &str| updates::published(&plan.role, &plan.version, kind);
    // An MBR has no names: mbr::read names a card's slot A partitions by their place.
    let slot = if card {
        "root-a".to_string()
    } else {
        seed_area::disk::slot_name(&plan.version)
    };
    let mut disk =
        File::open(&built.image).with_context(|| format!("opening {}", built.image.display()))?;
    let (_, parts) = crate::disk::read(&mut disk)
        .with_context(|| format!("reading the partitions of {}", built.image.display()))?;
    let root = parts
        .iter()
        .find(|p| p.name == slot)
        .ok_or_else(|| anyhow::anyhow!("{}: no partition named {slot}", built.image.display()))?;
    // The slot is fixed (root-slot-mib) and its filesystem only as large as the content
    // needs: the filesystem's bytes are what a node writes into its other slot.
    let sb = crate::fs::ext4::read_superblock(&mut disk, root.offset)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: partition {slot} holds no ext4 filesystem",
            built.image.display()
        )
    })?;
    let root_fs_bytes = sb.blocks * sb.block_size;

    let mut records = Vec::new();
    let put = |file: &str, write: &dyn Fn(&Path) -> Result<()>| -> Result<FileRecord> {
        let dst = a.out.join(file);
        let tmp = tempfile::NamedTempFile::new_in(&a.out)?;
        write(tmp.path()).with_context(|| format!("writing {}", dst.display()))?;
        fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )?;
        tmp.persist(&dst)
            .with_context(|| format!("writing {}", dst.display()))?;
        Ok(FileRecord {
            name: file.to_string(),
            size: fs::metadata(&dst)?.len(),
            sha256: sha256_file(&dst)?,
        })
    };
    let root_name = name(updates::ROOT_KIND);
    if !a.quiet {
        eprintln!(
            "imgforge: compressing the root filesystem of slot {slot} ({} MiB) to {root_name}",
            root_fs_bytes >> 20
        );
    }
    records.push(put(&root_name, &|p: &Path| {
        crate::artifact::xz::compress_range(&built.image, root.offset, root_fs_bytes, p).map(|_| ())
    })?);
    if card {
        let boot = parts.iter().find(|p| p.name == "boot-a").ok_or_else(|| {
            anyhow::anyhow!("{}: no boot partition for slot A", built.image.display())
        })?;
        let boot_name = name(updates::CARD_BOOT_KIND);
        if !a.quiet {
            eprintln!(
                "imgforge: compressing the boot partition ({} MiB) to {boot_name}",
                boot.len >> 20
            );
        }
        // The whole partition: a card's boot partitions are the same size for life.
        records.push(put(&boot_name, &|p: &Path| {
            crate::artifact::xz::compress_range(&built.image, boot.offset, boot.len, p)
                .map(|_| ())
        })?);
    }
    let copy = |src: PathBuf| {
        move |p: &Path| -> Result<()> {
            fs::copy(&src, p)
                .map(|_| ())
                .with_context(|| format!("copying {}", src.display()))
        }
    };
    if !card {
        records.push(put(
            &name(updates::KERNEL_KIND),
            &copy(built.compose.kernel()),
        )?);
        records.push(put(
            &name(updates::INITRD_KIND),
            &copy(built.compose.initrd()),
        )?);
        let entry = crate::stage::image::loader_entry(&plan, &built.compose);
        records.push(put(&name(updates::ENTRY_KIND), &|p: &Path| {
            Ok(fs::write(p, &entry)?)
        })?);
    }
    let manifest = json!({
        "imgforge": env!("CARGO_PKG_VERSION"),
        "role": plan.role,
        "target": plan.target,
        "arch": plan.arch,
        "version": plan.version,
        "kernel": built.compose.kernel_version,
        "root-fs-uuid": built.compose.ids.root_fs_uuid.to_string(),
        // A node can take this version only if its slots are at least this large.
        "root-slot-bytes": root_fs_bytes,
        "image-sha256": built.outputs.image_sha256,
        "files": records.iter().map(|r| json!({"name": r.name, "size": r.size, "sha256": r.sha256})).collect::<Vec<_>>(),
    });
    let manifest_text = serde_json::to_string_pretty(&manifest)? + "\n";
    records.push(put(&name(updates::MANIFEST_KIND), &|p: &Path| {
        Ok(fs::write(p, &manifest_text)?)
    })?);

    update_sha256sums(&a.out, &records)?;
    let sums = a.out.join("SHA256SUMS");
    let sig = keys.sign(&sums)?;
    for r in &records {
        println!("{}\t{}", r.name, r.size);
    }
    if !a.quiet {
        eprintln!(
            "imgforge: version {} of {} for {} published in {} ({} signed with the key in {})",
            plan.version,
            plan.role,
            plan.target,
            a.out.display(),
            sig.file_name().unwrap_or_default().to_string_lossy(),
            keys.path.display()
        );
    }
    Ok(())
}
