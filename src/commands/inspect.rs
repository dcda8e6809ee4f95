use std::fs::File;

use anyhow::{Context, Result};

use crate::cli::InspectArgs;
use crate::disk;
use crate::exit::user;
use crate::fs::{ext4, fat};
use crate::progress::fmt_bytes;

pub fn run(a: InspectArgs) -> Result<()> {
    let path = &a.image;
    let mut f = File::open(path)
        .with_context(|| format!("opening {}", path.display()))
        .map_err(user)?;
    let size = f.metadata()?.len();
    println!(
        "{}: {}, {} allocated",
        path.display(),
        fmt_bytes(size),
        fmt_bytes(crate::artifact::sparse::allocated(path)?)
    );
    let (table, parts) = disk::read(&mut f)
        .with_context(|| format!("{} has no readable partition table", path.display()))
        .map_err(user)?;
    println!("partition table: {table}");
    for p in &parts {
        println!(
            "  {} {:<6} offset {:>10} size {:>10}  type {}  partuuid {}",
            p.number,
            p.name,
            p.offset,
            fmt_bytes(p.len),
            p.type_name,
            p.partuuid
        );
        if p.name == crate::seed::PART_NAME {
            let state = crate::seed::read(&mut f)?;
            let names: Vec<&str> = state.slots.iter().map(|s| s.name.as_str()).collect();
            let seeded = match &state.secrets {
                Some(v) => format!("seeded ({} values)", v.len()),
                None => "not seeded".into(),
            };
            println!(
                "    seed area: slots {}; {seeded}",
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            );
        } else if let Ok((id, label, files)) = fat::list(&mut f, p.offset, p.len) {
            println!(
                "    vfat label {label:?} volume id {:04X}-{:04X}",
                id >> 16,
                id & 0xffff
            );
            for (name, len) in files {
                println!("      {name} ({len} bytes)");
            }
        } else if let Some(sb) = ext4::read_superblock(&mut f, p.offset)? {
            let used = (sb.blocks - sb.free_blocks) * sb.block_size;
            println!(
                "    ext4 label {:?} uuid {} size {} used {}",
                sb.label,
                sb.uuid,
                fmt_bytes(sb.blocks * sb.block_size),
                fmt_bytes(used)
            );
        } else {
            println!("    (no filesystem recognized)");
        }
    }
    let manifest = path.with_extension("manifest.json");
    if let Ok(text) = std::fs::read_to_string(&manifest) {
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", manifest.display()))?;
        println!("manifest {}:", manifest.display());
        for k in [
            "role",
            "target",
            "host",
            "suite",
            "arch",
            "kernel",
            "build-key",
        ] {
            println!(
                "  {k:<10} {}",
                v[k].as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v[k].to_string())
            );
        }
        println!(
            "  packages   {}",
            v["packages"].as_array().map_or(0, |a| a.len())
        );
        println!(
            "  inputs     {}",
            v["inputs"].as_array().map_or(0, |a| a.len())
        );
    }
    Ok(())
}
