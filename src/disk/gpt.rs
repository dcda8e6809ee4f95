//! Writing and reading the GPT with the `gpt` crate: protective MBR, primary and backup
//! headers, with GUIDs derived from the build's inputs (not random) so images are
//! reproducible.

use std::collections::BTreeMap;
use std::fs::File;

use anyhow::{anyhow, Context, Result};
use gpt::disk::LogicalBlockSize;
use gpt::partition::Partition;
use gpt::partition_types::{self, Type};

use super::ids::Ids;
use super::layout::{Extent, Layout, SECTOR};
use super::{Device, ReadPartition};

/// The root partition type for an architecture (the Discoverable Partitions Specification):
/// tools such as systemd-gpt-auto-generator find the root by it.
pub fn root_type(arch: &str) -> Result<Type> {
    match arch {
        "amd64" => Ok(partition_types::LINUX_ROOT_X64),
        "arm64" => Ok(partition_types::LINUX_ROOT_ARM_64),
        other => Err(anyhow!("no root partition type for arch {other}")),
    }
}

/// imgforge's own type for the seed area: no firmware or OS mounts it.
pub fn seed_type() -> Type {
    Type {
        guid: uuid::Uuid::from_u128(0x8d1c_5e2a_4f3b_4c6d_9e0f_a1b2_c3d4_e5f6),
        os: partition_types::OperatingSystem::None,
    }
}

/// Writes a protective MBR and a GPT with the ESP (1), seed area (2), root slot A (3) named
/// for `version`, root slot B (4) named empty, and the data partition (5). Both slots carry
/// the architecture's root type, the one sysupdate's partition transfers look for.
pub fn write(file: &mut File, layout: &Layout, ids: &Ids, root: Type, version: &str) -> Result<()> {
    let sectors = layout.total / SECTOR;
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(file)
        .context("writing the protective MBR")?;
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .create_from_device(&mut *file, Some(ids.disk_guid))
        .context("initializing the GPT")?;
    let part = |ext: &Extent, ty: Type, guid: uuid::Uuid, name: &str| Partition {
        part_type_guid: ty,
        part_guid: guid,
        first_lba: ext.first_lba(),
        last_lba: ext.last_lba(),
        flags: 0,
        name: name.to_string(),
    };
    let mut parts = BTreeMap::new();
    parts.insert(
        1,
        part(&layout.esp, partition_types::EFI, ids.esp_partuuid, "esp"),
    );
    parts.insert(
        2,
        part(
            &layout.seed,
            seed_type(),
            ids.seed_partuuid,
            seed_area::PART_NAME,
        ),
    );
    parts.insert(
        3,
        part(
            &layout.root_a,
            root.clone(),
            ids.root_partuuid,
            &seed_area::disk::slot_name(version),
        ),
    );
    parts.insert(
        4,
        part(
            &layout.root_b,
            root,
            ids.root_b_partuuid,
            seed_area::disk::EMPTY_SLOT_NAME,
        ),
    );
    parts.insert(
        5,
        part(
            &layout.data,
            partition_types::LINUX_FS,
            ids.data_partuuid,
            seed_area::disk::DATA_PART_NAME,
        ),
    );
    disk.update_partitions(parts)
        .context("setting the partitions")?;
    disk.write_inplace().context("writing the GPT")?;
    Ok(())
}

/// A short name for the partition types imgforge writes, else the type GUID.
fn type_name(t: &Type) -> String {
    if *t == partition_types::EFI {
        "esp".into()
    } else if *t == partition_types::LINUX_ROOT_X64 {
        "root-x86-64".into()
    } else if *t == partition_types::LINUX_ROOT_ARM_64 {
        "root-arm64".into()
    } else if *t == seed_type() {
        "imgforge-seed".into()
    } else if *t == partition_types::LINUX_FS {
        "linux-data".into()
    } else {
        t.guid.to_string()
    }
}

/// The disk GUID, the sector of the backup header (as the primary header records it, else
/// where the backup header was found), and the used partitions.
pub fn read(file: &mut impl Device) -> Result<(uuid::Uuid, u64, Vec<ReadPartition>)> {
    let disk = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(LogicalBlockSize::Lb512)
        .open_from_device(file)
        .context("reading the GPT")?;
    let backup_lba = match disk.primary_header() {
        Ok(h) => h.backup_lba,
        Err(_) => disk.header().current_lba,
    };
    let mut out = Vec::new();
    for (n, p) in disk.partitions() {
        if !p.is_used() {
            continue;
        }
        out.push(ReadPartition {
            number: *n,
            name: p.name.clone(),
            type_name: type_name(&p.part_type_guid),
            partuuid: p.part_guid.to_string(),
            offset: p.first_lba * SECTOR,
            len: (p.last_lba - p.first_lba + 1) * SECTOR,
        });
    }
    Ok((*disk.guid(), backup_lba, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::layout::{plan, MIB};
    use crate::disk::test_support::{blank_disk, sfdisk_table};
    use crate::profile::machine::PartitionTable;

    #[test]
    fn sfdisk_reads_what_we_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let layout = plan(PartitionTable::Gpt, 64, MIB, 100 * MIB, 50 * MIB);
        let mut f = blank_disk(&path, layout.total);
        let ids = Ids::derive("test");
        write(&mut f, &layout, &ids, root_type("amd64").unwrap(), "1.0").unwrap();
        drop(f);

        let t = &sfdisk_table(&path);
        assert_eq!(t["label"], "gpt");
        assert_eq!(
            t["id"].as_str().unwrap().to_lowercase(),
            ids.disk_guid.to_string()
        );
        let parts = t["partitions"].as_array().unwrap();
        assert_eq!(parts.len(), 5);
        assert_eq!(parts[0]["start"], 2048);
        assert_eq!(parts[0]["size"], 64 * 2048);
        assert_eq!(
            parts[0]["type"].as_str().unwrap(),
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
        );
        assert_eq!(parts[1]["name"], "imgforge-seed");
        assert_eq!(
            parts[2]["uuid"].as_str().unwrap().to_lowercase(),
            ids.root_partuuid.to_string()
        );
        assert_eq!(
            parts[2]["type"].as_str().unwrap(),
            "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
        );
        assert_eq!(parts[2]["name"], "root_1.0");
        assert_eq!(parts[3]["name"], "_empty");
        assert_eq!(parts[3]["type"], parts[2]["type"], "both slots are roots");
        assert_eq!(parts[3]["size"], parts[2]["size"]);
        assert_eq!(parts[4]["name"], "imgforge-data");
        assert_eq!(
            parts[4]["type"].as_str().unwrap(),
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
        );

        let mut f = File::open(&path).unwrap();
        let (guid, backup_lba, read_back) = read(&mut f).unwrap();
        assert_eq!(guid, ids.disk_guid);
        assert_eq!(
            backup_lba,
            layout.total / SECTOR - 1,
            "the disk's last sector"
        );
        assert_eq!(read_back[2].offset, layout.root_a.offset);
        assert_eq!(read_back[2].len, layout.root_a.len);
        assert_eq!(read_back[3].offset, layout.root_b.offset);
        assert_eq!(read_back[4].offset, layout.data.offset);
        assert_eq!(read_back[4].name, "imgforge-data");
    }
}
