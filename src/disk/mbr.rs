//! Writing and reading the MBR of Raspberry Pi cards with the `mbrman` crate: the Pi's boot
//! ROM reads only an MBR and starts from its first FAT partition, where autoboot.txt sends
//! it on to a slot's boot partition. The disk signature is
//! derived from the build's inputs, so each partition's PARTUUID (`SSSSSSSS-NN`, the form
//! Linux gives MBR partitions) is known when the image is composed.

use std::fs::File;

use anyhow::{anyhow, Context, Result};

use super::ids::{mbr_partuuid, Part, MBR_AUTOBOOT, MBR_BOOT_B, MBR_EXTENDED};
use super::layout::{Extent, Layout, SECTOR};
use super::{Device, ReadPartition};

/// FAT32 with LBA addressing: the type the Pi firmware looks for.
pub const TYPE_FAT32_LBA: u8 = 0x0c;
/// "Non-FS data": nothing mounts it; imgforge finds its seed area here (partition 5).
pub const TYPE_SEED: u8 = 0xda;
pub const TYPE_LINUX: u8 = 0x83;
/// An extended partition addressed by LBA: holds the seed area, both root slots and the
/// data partition.
pub const TYPE_EXTENDED_LBA: u8 = 0x0f;
/// The protective MBR of a GPT disk.
pub const TYPE_GPT_PROTECTIVE: u8 = 0xee;

/// Writes a card's MBR: the autoboot FAT (1), slot A's and slot B's boot FATs (2, 3), and
/// the extended partition (4) holding the seed area (5), root slot A (6), root slot B (7) and
/// the data partition (8), which is last on the disk.
///
/// An MBR has four primary entries and a card needs eight partitions. The firmware's A/B
/// wants its three FATs as primaries (the layout of Rugix's and rpi-image-gen's cards); the
/// rest are logical, the data partition last so the worker's grow step only moves the ends
/// of the extended partition and of that one logical.
pub fn write(file: &mut File, layout: &Layout, signature: u32) -> Result<()> {
    let mut mbr = mbrman::MBR::new_from(&mut *file, SECTOR as u32, signature.to_le_bytes())
        .context("initializing the MBR")?;
    let lba = |bytes: u64, what: &str| -> Result<u32> {
        u32::try_from(bytes / SECTOR)
            .map_err(|_| anyhow!("{what} lies beyond 2 TiB, which an MBR cannot say"))
    };
    let entry = |ext: &Extent, sys: u8| -> Result<mbrman::MBRPartitionEntry> {
        Ok(mbrman::MBRPartitionEntry {
            boot: mbrman::BOOT_INACTIVE,
            first_chs: mbrman::CHS::empty(),
            sys,
            last_chs: mbrman::CHS::empty(),
            starting_lba: lba(ext.offset, "a partition's start")?,
            sectors: lba(ext.len, "a partition's size")?,
        })
    };
    let extended = layout
        .extended
        .ok_or_else(|| anyhow!("the layout has no extended partition for an MBR"))?;
    let card = layout
        .card
        .ok_or_else(|| anyhow!("the layout has no card boot partitions for an MBR"))?;
    mbr[MBR_AUTOBOOT as usize] = entry(&card.autoboot, TYPE_FAT32_LBA)?;
    mbr[Part::Boot.number("mbr") as usize] = entry(&layout.esp, TYPE_FAT32_LBA)?;
    mbr[MBR_BOOT_B as usize] = entry(&card.boot_b, TYPE_FAT32_LBA)?;
    mbr[MBR_EXTENDED as usize] = entry(&extended, TYPE_EXTENDED_LBA)?;
    // Each logical's boot record sits in the MiB before it (layout::plan leaves it free);
    // mbrman puts the partition one alignment unit (1 MiB) after the record.
    for (ext, sys) in [
        (&layout.seed, TYPE_SEED),
        (&layout.root_a, TYPE_LINUX),
        (&layout.root_b, TYPE_LINUX),
        (&layout.data, TYPE_LINUX),
    ] {
        let ebr = ext.offset - super::layout::MIB;
        mbr.push(
            sys,
            lba(ebr, "a logical partition")?,
            lba(ext.len + super::layout::MIB, "a logical partition")?,
        )
        .context("adding a logical partition")?;
    }
    mbr.write_into(&mut *file).context("writing the MBR")?;
    Ok(())
}

/// The name imgforge gives partition `number` of an MBR by its place and type (an MBR has
/// no names): what `read` reports and the seed tools look for.
fn name_of(number: u32, sys: u8) -> &'static str {
    match (number, sys) {
        (MBR_AUTOBOOT, TYPE_FAT32_LBA) => "autoboot",
        (n, TYPE_FAT32_LBA) if n == Part::Boot.number("mbr") => "boot-a",
        (MBR_BOOT_B, TYPE_FAT32_LBA) => "boot-b",
        (MBR_EXTENDED, TYPE_EXTENDED_LBA) => "extended",
        (n, TYPE_LINUX) if n == Part::Data.number("mbr") => seed_area::disk::DATA_PART_NAME,
        (n, TYPE_SEED) if n == Part::Seed.number("mbr") => seed_area::PART_NAME,
        (n, TYPE_LINUX) if n == Part::RootA.number("mbr") => "root-a",
        (n, TYPE_LINUX) if n == Part::RootB.number("mbr") => "root-b",
        _ => "",
    }
}

/// The disk signature and used partitions (primary and logical) of an MBR disk.
pub fn read(file: &mut impl Device) -> Result<(u32, Vec<ReadPartition>)> {
    let mbr = mbrman::MBR::read_from(&mut *file, SECTOR as u32).context("reading the MBR")?;
    let signature = u32::from_le_bytes(mbr.header.disk_signature);
    let mut out = Vec::new();
    for (n, p) in mbr.iter() {
        if !p.is_used() {
            continue;
        }
        let number = n as u32;
        out.push(ReadPartition {
            number,
            name: name_of(number, p.sys).to_string(),
            type_name: format!("0x{:02x}", p.sys),
            partuuid: mbr_partuuid(signature, number),
            offset: u64::from(p.starting_lba) * SECTOR,
            len: u64::from(p.sectors) * SECTOR,
        });
    }
    // Disk order, so a report reads from the first sector to the last.
    out.sort_by_key(|p| (p.offset, p.number));
    Ok((signature, out))
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
        let path = dir.path().join("card.img");
        let layout = plan(PartitionTable::Mbr, 256, MIB, 100 * MIB, 50 * MIB);
        let mut f = blank_disk(&path, layout.total);
        write(&mut f, &layout, 0x1234_abcd).unwrap();
        drop(f);

        let t = &sfdisk_table(&path);
        assert_eq!(t["label"], "dos");
        assert_eq!(t["id"], "0x1234abcd");
        let parts = t["partitions"].as_array().unwrap();
        let by_node = |n: u32| {
            parts
                .iter()
                .find(|p| p["node"].as_str().unwrap().ends_with(&n.to_string()))
                .unwrap_or_else(|| panic!("no partition {n} in {parts:?}"))
        };
        assert_eq!(parts.len(), 8, "{parts:?}");
        let card = layout.card.unwrap();
        assert_eq!(by_node(1)["start"], 2048);
        assert_eq!(by_node(1)["size"], card.autoboot.len / SECTOR);
        for n in 1..=3 {
            assert_eq!(by_node(n)["type"], "c", "partition {n} is a FAT");
        }
        assert_eq!(by_node(2)["start"], layout.esp.first_lba());
        assert_eq!(by_node(2)["size"], 256 * 2048);
        assert_eq!(by_node(3)["start"], card.boot_b.first_lba());
        assert_eq!(by_node(3)["size"], 256 * 2048);
        assert_eq!(by_node(4)["type"], "f");
        assert_eq!(by_node(5)["type"], "da");
        assert_eq!(by_node(5)["start"], layout.seed.first_lba());
        assert_eq!(by_node(6)["start"], layout.root_a.first_lba());
        assert_eq!(by_node(6)["size"], layout.root_a.len / SECTOR);
        assert_eq!(by_node(7)["start"], layout.root_b.first_lba());
        assert_eq!(by_node(7)["size"], layout.root_a.len / SECTOR);
        assert_eq!(by_node(8)["type"], "83");
        assert_eq!(by_node(8)["start"], layout.data.first_lba());
        assert_eq!(by_node(8)["size"], layout.data.len / SECTOR);
        assert_eq!(
            by_node(4)["start"].as_u64().unwrap() + by_node(4)["size"].as_u64().unwrap(),
            layout.data.end() / SECTOR,
            "the extended partition ends with the data partition"
        );

        let mut f = File::open(&path).unwrap();
        let (sig, read_back) = read(&mut f).unwrap();
        assert_eq!(sig, 0x1234_abcd);
        let names: Vec<&str> = read_back.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "autoboot",
                "boot-a",
                "boot-b",
                "extended",
                seed_area::PART_NAME,
                "root-a",
                "root-b",
                "imgforge-data"
            ]
        );
        assert_eq!(read_back[5].partuuid, "1234abcd-06");
        assert_eq!(read_back[5].offset, layout.root_a.offset);
        assert_eq!(read_back[5].len, layout.root_a.len);
        assert_eq!(read_back[7].partuuid, "1234abcd-08");
        assert_eq!(read_back[7].offset, layout.data.offset);
    }
}
