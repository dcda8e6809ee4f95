//! `imgforge inspect IMAGE`: what an image (or a flashed card) holds: its table, partitions,
//! seed area (slot names and whether seeded, never a value), filesystems, and the manifest
//! beside it. The same report as text or, with --json, for scripts.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::artifact::image::{Depth, Format, Image};
use crate::cli::InspectArgs;
use crate::disk::Table;
use crate::exit::UserError;
use crate::fs::{ext4, fat};
use crate::progress::fmt_bytes;

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Report {
    path: PathBuf,
    format: Format,
    size: u64,
    /// Bytes the file occupies on disk (an .img is sparse).
    allocated: u64,
    table: TableReport,
    partitions: Vec<PartReport>,
    /// The root slots (A, B) and the version each holds; empty for an image from before
    /// the two-slot layout.
    slots: Vec<SlotReport>,
    manifest: Option<ManifestReport>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct SlotReport {
    /// `A` or `B`.
    slot: &'static str,
    partition: u32,
    state: SlotState,
    /// The version the slot holds, when its state is `version`.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
}

#[derive(Serialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum SlotState {
    /// The GPT name carries a version (`root_<version>`).
    Version,
    /// The GPT name says the slot is empty (`_empty`).
    Empty,
    /// An MBR names no partition: the version is inside the slot's filesystem.
    Unnamed,
}

/// The root slots of `parts` in disk order, with what their names say.
fn slots(parts: &[crate::disk::ReadPartition]) -> Vec<SlotReport> {
    let found = parts.iter().filter_map(|p| {
        if p.name == seed_area::disk::EMPTY_SLOT_NAME {
            Some((p.number, SlotState::Empty, None))
        } else if let Some(v) = seed_area::disk::slot_version(&p.name) {
            Some((p.number, SlotState::Version, Some(v.to_string())))
        } else if p.name == "root-a" || p.name == "root-b" {
            Some((p.number, SlotState::Unnamed, None))
        } else {
            None
        }
    });
    ["A", "B"]
        .into_iter()
        .zip(found)
        .map(|(slot, (partition, state, version))| SlotReport {
            slot,
            partition,
            state,
            version,
        })
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct TableReport {
    kind: &'static str,
    /// The GPT's disk GUID, or the MBR's disk signature as 0x%08x.
    id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct PartReport {
    number: u32,
    name: String,
    #[serde(rename = "type")]
    type_name: String,
    partuuid: String,
    offset: u64,
    size: u64,
    content: Content,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
enum Content {
    SeedArea {
        slots: Vec<String>,
        /// How many values are seeded; none when the image is not seeded.
        seeded: Option<usize>,
    },
    Vfat {
        label: String,
        volume_id: String,
        files: Vec<FileEntry>,
    },
    Ext4 {
        label: String,
        uuid: uuid::Uuid,
        size: u64,
        used: u64,
    },
    /// No filesystem imgforge knows.
    Unknown,
}

#[derive(Serialize)]
struct FileEntry {
    path: String,
    size: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ManifestReport {
    path: PathBuf,
    role: serde_json::Value,
    target: serde_json::Value,
    host: serde_json::Value,
    suite: serde_json::Value,
    arch: serde_json::Value,
    kernel: serde_json::Value,
    build_key: serde_json::Value,
    packages: usize,
    inputs: usize,
    /// A card's drivers with their reasons (`initramfs-drivers` in the manifest).
    drivers: Vec<serde_json::Value>,
}

pub fn run(a: InspectArgs) -> Result<()> {
    let report = inspect(&a.image)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

fn inspect(path: &Path) -> Result<Report> {
    let mut image = Image::open(path, Depth::RootSuperblock)?;
    let allocated = crate::artifact::sparse::allocated(path)?;
    let table = match &image.table {
        Table::Gpt { guid, .. } => TableReport {
            kind: "gpt",
            id: guid.to_string(),
        },
        Table::Mbr { signature } => TableReport {
            kind: "mbr",
            id: format!("0x{signature:08x}"),
        },
    };
    let mut partitions = Vec::new();
    for p in image.parts.clone() {
        let content = if p.number == image.seed.number {
            let s = &image.seed_state;
            Content::SeedArea {
                slots: s.slots.iter().map(|s| s.name.clone()).collect(),
                seeded: s.secrets.as_ref().map(|v| v.len()),
            }
        } else if !image.readable(&p, 64 * 1024) {
            Content::Unknown
        } else if let Ok((id, label, files)) = fat::list(image.head(), p.offset, p.len) {
            Content::Vfat {
                label,
                volume_id: format!("{:04X}-{:04X}", id >> 16, id & 0xffff),
                files: files
                    .into_iter()
                    .map(|(path, size)| FileEntry { path, size })
                    .collect(),
            }
        } else if let Some(sb) = ext4::read_superblock(image.head(), p.offset)? {
            Content::Ext4 {
                label: sb.label,
                uuid: sb.uuid,
                size: sb.blocks * sb.block_size,
                used: (sb.blocks - sb.free_blocks) * sb.block_size,
            }
        } else {
            Content::Unknown
        };
        partitions.push(PartReport {
            number: p.number,
            name: p.name,
            type_name: p.type_name,
            partuuid: p.partuuid,
            offset: p.offset,
            size: p.len,
            content,
        });
    }
    let slots = slots(&image.parts);
    Ok(Report {
        path: path.to_path_buf(),
        format: image.format,
        size: image.size,
        allocated,
        table,
        partitions,
        slots,
        manifest: manifest(path)?,
    })
}

/// `<name>.manifest.json` beside `<name>.img` or `<name>.img.xz`, if there is one.
fn manifest(image: &Path) -> Result<Option<ManifestReport>> {
    let Some(name) = image.file_name().and_then(|n| n.to_str()) else {
        return Ok(None);
    };
    let stem = name
        .strip_suffix(".img.xz")
        .or_else(|| name.strip_suffix(".img"))
        .unwrap_or(name);
    let path = image.with_file_name(format!("{stem}.manifest.json"));
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| UserError(format!("{}: {e}", path.display())))?;
    let count = |k: &str| v[k].as_array().map_or(0, |a| a.len());
    Ok(Some(ManifestReport {
        role: v["role"].clone(),
        target: v["target"].clone(),
        host: v["host"].clone(),
        suite: v["suite"].clone(),
        arch: v["arch"].clone(),
        kernel: v["kernel"].clone(),
        build_key: v["build-key"].clone(),
        packages: count("packages"),
        inputs: count("inputs"),
        drivers: v["initramfs-drivers"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        path,
    }))
}

fn print_text(r: &Report) {
    println!(
        "{}: {}{}, {} allocated",
        r.path.display(),
        fmt_bytes(r.size),
        if r.format == Format::Xz {
            " (xz-compressed)"
        } else {
            ""
        },
        fmt_bytes(r.allocated)
    );
    match r.table.kind {
        "gpt" => println!("partition table: gpt, disk guid {}", r.table.id),
        _ => println!("partition table: mbr, disk signature {}", r.table.id),
    }
    for p in &r.partitions {
        println!(
            "  {} {:<6} offset {:>10} size {:>10}  type {}  partuuid {}",
            p.number,
            p.name,
            p.offset,
            fmt_bytes(p.size),
            p.type_name,
            p.partuuid
        );
        match &p.content {
            Content::SeedArea { slots, seeded } => {
                let seeded = match seeded {
                    Some(n) => format!("seeded ({n} values)"),
                    None => "not seeded".into(),
                };
                println!(
                    "    seed area: slots {}; {seeded}",
                    if slots.is_empty() {
                        "none".into()
                    } else {
                        slots.join(", ")
                    }
                );
            }
            Content::Vfat {
                label,
                volume_id,
                files,
            } => {
                println!("    vfat label {label:?} volume id {volume_id}");
                for f in files {
                    println!("      {} ({} bytes)", f.path, f.size);
                }
            }
            Content::Ext4 {
                label,
                uuid,
                size,
                used,
            } => println!(
                "    ext4 label {label:?} uuid {uuid} size {} used {}",
                fmt_bytes(*size),
                fmt_bytes(*used)
            ),
            Content::Unknown => println!("    (no filesystem recognized)"),
        }
    }
    for s in &r.slots {
        let what = match (s.state, &s.version) {
            (SlotState::Version, Some(v)) => format!("version {v}"),
            (SlotState::Empty, _) => "empty".into(),
            _ => "version not named (MBR)".into(),
        };
        println!("root slot {} (partition {}): {what}", s.slot, s.partition);
    }
    if let Some(m) = &r.manifest {
        println!("manifest {}:", m.path.display());
        let s = |v: &serde_json::Value| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        };
        for (k, v) in [
            ("role", &m.role),
            ("target", &m.target),
            ("host", &m.host),
            ("suite", &m.suite),
            ("arch", &m.arch),
            ("kernel", &m.kernel),
            ("build-key", &m.build_key),
        ] {
            println!("  {k:<10} {}", s(v));
        }
        println!("  packages   {}", m.packages);
        println!("  inputs     {}", m.inputs);
        // A card's drivers: which module each node on the way to the root (or the
        // network) needs, derived from the boards' device trees at build time.
        for part in ["root", "network"] {
            let rows: Vec<&serde_json::Value> =
                m.drivers.iter().filter(|d| d["part"] == part).collect();
            if rows.is_empty() {
                continue;
            }
            println!(
                "  {part} drivers ({}):",
                if part == "root" {
                    "in the initramfs"
                } else {
                    "loaded from the root"
                }
            );
            for d in rows {
                let module = s(&d["module"]);
                let kind = if d["built_in"] == true {
                    "built in"
                } else {
                    "module"
                };
                println!("    {module:<28} {kind:<9} {}", s(&d["needed_by"]));
            }
        }
    }
}
