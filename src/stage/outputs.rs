//! The outputs stage: `<role>-<target>.img` (sparse raw), `.img.bmap`, what the target asks
//! for (`.qcow2`, `.img.xz`), `.manifest.json` and `SHA256SUMS` in the output folder. Each is written under a temporary name and renamed
//! into place once complete, so an interrupted build leaves no half-written image.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::base::Base;
use super::compose::Composed;
use super::image::Image;
use super::{BuildOptions, Stage};
use crate::artifact::sparse;
use crate::cache::{sha256_file, KeyBuilder};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::tool::{self, HostTool};

pub const QEMU_IMG: HostTool = HostTool {
    program: "qemu-img",
    package: "qemu-utils",
};

pub struct Outputs {
    /// `<name>.img`; beside it `<name>.img.bmap`, which bmaptool finds by that name.
    pub image: PathBuf,
    pub qcow2: Option<PathBuf>,
    /// `<name>.img.xz`, for targets that ship cards.
    pub xz: Option<PathBuf>,
    pub manifest: PathBuf,
    pub image_sha256: String,
    pub image_size: u64,
    pub image_allocated: u64,
}

#[derive(Serialize, Deserialize)]
pub struct FileRecord {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

pub fn run(
    plan: &Plan,
    opts: &BuildOptions,
    base: &Base,
    c: &Composed,
    img: &Image,
    progress: &mut Progress,
) -> Result<Outputs> {
    const NAME: &str = "outputs";
    let name = plan.image_name();
    let out = &opts.out_dir;
    fs::create_dir_all(out).with_context(|| format!("creating output folder {}", out.display()))?;
    let img_path = out.join(format!("{name}.img"));
    let manifest_path = out.join(format!("{name}.manifest.json"));
    // Beside the raw image and its bmap: what the target asks for.
    let extras: Vec<(&str, PathBuf)> = plan
        .outputs
        .iter()
        .map(|o| (o.as_str(), out.join(format!("{name}.{o}"))))
        .collect();
    let path_of = |kind: &str| {
        extras
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, p)| p.clone())
    };
    let mut key = KeyBuilder::new(NAME);
    key.add_str("image", &img.key)
        .add_str(
            "outputs",
            &plan
                .outputs
                .iter()
                .map(|o| o.as_str())
                .collect::<Vec<_>>()
                .join(","),
        )
        .add_str("version", env!("CARGO_PKG_VERSION"))
        .add_code(super::code::OUTPUTS);
    let key = key.finish();

    if !opts.forced(Stage::Outputs) {
        if let Some(sha) = up_to_date(&manifest_path, &key, out) {
            progress.cached(NAME);
            return Ok(Outputs {
                image_size: fs::metadata(&img_path)?.len(),
                image_allocated: sparse::allocated(&img_path)?,
                image: img_path,
                qcow2: path_of("qcow2"),
                xz: path_of("img.xz"),
                manifest: manifest_path,
                image_sha256: sha,
            });
        }
    }
    if path_of("qcow2").is_some() {
        tool::require(&QEMU_IMG)?;
    }
    let listed: Vec<String> = std::iter::once(".img, .bmap".to_string())
        .chain(extras.iter().map(|(k, _)| format!(".{k}")))
        .chain(["manifest, SHA256SUMS".to_string()])
        .collect();
    progress.start(NAME, &format!("{} ({})", out.display(), listed.join(", ")));
    let tmp = tempfile::Builder::new()
        .prefix(".imgforge-tmp-")
        .tempdir_in(out)
        .with_context(|| format!("creating a temporary folder in {}", out.display()))?;
    let tmp_img = tmp.path().join("image.img");
    // The seed area is always mapped: a card flashed by bmap must not keep an old seed.
    let seed = (img.layout.seed.offset, img.layout.seed.len);
    let (img_sha, map) = sparse::copy_and_hash(&img.disk, &tmp_img, &[seed])?;
    let tmp_bmap = tmp.path().join("image.bmap");
    fs::write(&tmp_bmap, crate::artifact::bmap::to_xml(&map))?;
    let img_size = fs::metadata(&tmp_img)?.len();
    let record = |name: String, p: &Path| -> Result<FileRecord> {
        Ok(FileRecord {
            name,
            size: fs::metadata(p)?.len(),
            sha256: sha256_file(p)?,
        })
    };
    let mut files = vec![
        FileRecord {
            name: format!("{name}.img"),
            size: img_size,
            sha256: img_sha.clone(),
        },
        record(format!("{name}.img.bmap"), &tmp_bmap)?,
    ];
    // (temporary, final) pairs, renamed into place together at the end.
    let mut moves = vec![
        (tmp_img.clone(), img_path.clone()),
        (tmp_bmap.clone(), out.join(format!("{name}.img.bmap"))),
    ];
    for (kind, dst) in &extras {
        let tmp_out = tmp.path().join(format!("image.{kind}"));
        match *kind {
            "qcow2" => tool::run(
                Command::new("qemu-img")
                    .args(["convert", "-f", "raw", "-O", "qcow2"])
                    .arg(&tmp_img)
                    .arg(&tmp_out),
            )
            .map(drop)
            .context("converting the image to qcow2")?,
            "img.xz" => {
                let t = std::time::Instant::now();
                progress.detail(&format!(
                    "compressing to .img.xz (xz preset {}, all cores)",
                    crate::artifact::xz::PRESET
                ));
                let size = crate::artifact::xz::compress(&tmp_img, &tmp_out)?;
                progress.detail(&format!(
                    ".img.xz: {} in {:.0}s",
                    crate::progress::fmt_bytes(size),
                    t.elapsed().as_secs_f64()
                ));
            }
            other => anyhow::bail!("unknown output {other}"),
        }
        files.push(record(format!("{name}.{kind}"), &tmp_out)?);
        moves.push((tmp_out, dst.clone()));
    }
    let manifest = manifest(plan, base, c, img, &key, &files)?;
    let tmp_manifest = tmp.path().join("manifest.json");
    fs::write(&tmp_manifest, serde_json::to_vec_pretty(&manifest)?)?;

    crate::interrupt::check()?;
    // The manifest last: its presence with this key means the files beside it are complete.
    for (from, to) in &moves {
        rename(from, to)?;
    }
    rename(&tmp_manifest, &manifest_path)?;
    update_sha256sums(out, &files)?;
    progress.done(NAME);
    Ok(Outputs {
        image_allocated: sparse::allocated(&img_path)?,
        image: img_path,
        qcow2: path_of("qcow2"),
        xz: path_of("img.xz"),
        manifest: manifest_path,
        image_sha256: img_sha,
        image_size: img_size,
    })
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).with_context(|| format!("renaming {} to {}", from.display(), to.display()))
}

/// The image's sha256 if the outputs in place were made from this key and are intact (each
/// file the manifest lists is there with its size).
fn up_to_date(manifest: &Path, key: &str, out: &Path) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(manifest).ok()?).ok()?;
    if v["build-key"].as_str()? != key {
        return None;
    }
    let files: Vec<FileRecord> = serde_json::from_value(v["files"].clone()).ok()?;
    for f in &files {
        if fs::metadata(out.join(&f.name)).ok()?.len() != f.size {
            return None;
        }
    }
    files.first().map(|f| f.sha256.clone())
}

fn manifest(
    plan: &Plan,
    base: &Base,
    c: &Composed,
    img: &Image,
    key: &str,
    files: &[FileRecord],
) -> Result<serde_json::Value> {
    let packages: Vec<serde_json::Value> = fs::read_to_string(&base.packages_tsv)
        .with_context(|| format!("reading {}", base.packages_tsv.display()))?
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, v)| json!({"name": n, "version": v}))
        .collect();
    let mut f = fs::File::open(&img.disk)?;
    let (_, parts) = crate::disk::read(&mut f)?;
    let mut inputs: Vec<serde_json::Value> = plan
        .inputs
        .iter()
        .map(|i| json!({"path": i.path, "sha256": i.sha256}))
        .collect();
    inputs.extend(
        c.overlays
            .iter()
            .map(|(p, h)| json!({"path": format!("overlay:/{p}"), "sha256": h})),
    );
    // A card's root drivers, each with the node that needs it (src/board/root_drivers.rs).
    let drivers = match &base.initramfs_drivers {
        Some(tsv) => crate::board::root_drivers::read_tsv(tsv)?,
        None => vec![],
    };
    Ok(json!({
        "imgforge": env!("CARGO_PKG_VERSION"),
        "build-key": key,
        "role": plan.role,
        "target": plan.target,
        "host": plan.host.name,
        "suite": plan.suite,
        "arch": plan.arch,
        "kernel": c.kernel_version,
        "source-date-epoch": plan.source_date_epoch,
        "stages": {"base": base.key, "compose": c.key, "image": img.key},
        "inputs": inputs,
        "partitions": parts.iter().map(|p| json!({
            "number": p.number, "name": p.name, "type": p.type_name,
            "partuuid": p.partuuid, "offset": p.offset, "size": p.len,
        })).collect::<Vec<_>>(),
        "root-fs-uuid": c.ids.root_fs_uuid.to_string(),
        "esp-volume-id": c.ids.fat_uuid(),
        "files": files,
        "packages": packages,
        "initramfs-drivers": drivers,
        // Secret slots: names only, never values.
        "slots": plan.slots.iter().map(|s| json!({
            "name": s.name, "description": s.description, "service": s.service,
            "required": s.required, "generate": s.generate,
        })).collect::<Vec<_>>(),
    }))
}

/// Replaces the lines for `files` in `<out>/SHA256SUMS`, keeping other images' lines.
pub fn update_sha256sums(out: &Path, files: &[FileRecord]) -> Result<()> {
    let path = out.join("SHA256SUMS");
    let old = fs::read_to_string(&path).unwrap_or_default();
    let ours: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    let mut lines: Vec<String> = old
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_none_or(|n| !ours.contains(&n.trim_start_matches('*')))
        })
        .map(str::to_string)
        .collect();
    lines.extend(files.iter().map(|f| format!("{}  {}", f.sha256, f.name)));
    lines.sort_by(|a, b| {
        a.split_whitespace()
            .nth(1)
            .cmp(&b.split_whitespace().nth(1))
    });
    let tmp = tempfile::NamedTempFile::new_in(out)?;
    fs::write(tmp.path(), lines.join("\n") + "\n")?;
    // A temporary file is created 0600; checksums are for everyone to read.
    fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    tmp.persist(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
