//! Writing and reading the MBR of Raspberry Pi cards with the `mbrman` crate: the Pi's boot
//! ROM reads only an MBR and boots from its first FAT partition. The disk signature is
//! derived from the build's inputs, so each partition's PARTUUID (`SSSSSSSS-NN`, the form
//! Linux gives MBR partitions) is known when the image is composed.

use std::fs::File;

use anyhow::{anyhow, Context, Result};

use super::ids::mbr_partuuid;
use super::layout::{Extent, Layout, SECTOR};
use super::{Device, ReadPartition};

/// FAT32 with LBA addressing: the type the Pi firmware looks for.
pub const TYPE_FAT32_LBA: u8 = 0x0c;
/// "Non-FS data": nothing mounts it; imgforge finds its seed area here (partition 2).
pub const TYPE_SEED: u8 = 0xda;
pub const TYPE_LINUX: u8 = 0x83;
/// The protective MBR of a GPT disk.
pub const TYPE_GPT_PROTECTIVE: u8 = 0xee;

/// Writes an MBR with the boot FAT (1), seed area (2) and root (3).
pub fn write(file: &mut File, layout: &Layout, signature: u32) -> Result<()> {
    let mut mbr = mbrman::MBR::new_from(&mut *file, SECTOR as u32, signature.to_le_bytes())
        .context("initializing the MBR")?;
    let entry = |ext: &Extent, sys: u8| -> Result<mbrman::MBRPartitionEntry> {
        Ok(mbrman::MBRPartitionEntry {
            boot: mbrman::BOOT_INACTIVE,
            first_chs: mbrman::CHS::empty(),
            sys,
            last_chs: mbrman::CHS::empty(),
            starting_lba: u32::try_from(ext.first_lba())
                .map_err(|_| anyhow!("a partition starts beyond 2 TiB, which an MBR cannot say"))?,
            sectors: u32::try_from(ext.len / SECTOR).map_err(|_| {
                anyhow!("a partition is larger than 2 TiB, which an MBR cannot say")
            })?,
        })
    };
    mbr[1] = entry(&layout.esp, TYPE_FAT32_LBA)?;
    mbr[2] = entry(&layout.seed, TYPE_SEED)?;
    mbr[3] = entry(&layout.root, TYPE_LINUX)?;
    mbr.write_into(&mut *file).context("writing the MBR")?;
    Ok(())
}

/// The disk signature and used primary partitions of an MBR disk.
pub fn read(file: &mut impl Device) -> Result<(u32, Vec<ReadPartition>)> {
    let mbr = mbrman::MBR::read_from(&mut *file, SECTOR as u32).context("reading the MBR")?;
    let signature = u32::from_le_bytes(mbr.header.disk_signature);
    let mut out = Vec::new();
    for (n, p) in mbr.iter() {
        if n > 4 || !p.is_used() {
            continue;
        }
        let number = n as u32;
        let name = match (number, p.sys) {
            (1, TYPE_FAT32_LBA) => "boot",
            (2, TYPE_SEED) => seed_area::PART_NAME,
            (3, TYPE_LINUX) => "root",
            _ => "",
        };
        out.push(ReadPartition {
            number,
            name: name.to_string(),
            type_name: format!("0x{:02x}", p.sys),
            partuuid: mbr_partuuid(signature, number),
            offset: u64::from(p.starting_lba) * SECTOR,
            len: u64::from(p.sectors) * SECTOR,
        });
    }
    Ok((signature, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::layout::{plan, MIB};
    use crate::disk::test_support::{blank_disk, sfdisk_table};

    #[test]
    fn sfdisk_reads_what_we_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card.img");
        let layout = plan(256, MIB, 100 * MIB);
        let mut f = blank_disk(&path, layout.total);
        write(&mut f, &layout, 0x1234_abcd).unwrap();
        drop(f);

        let t = &sfdisk_table(&path);
        assert_eq!(t["label"], "dos");
        assert_eq!(t["id"], "0x1234abcd");
        let parts = t["partitions"].as_array().unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0]["start"], 2048);
        assert_eq!(parts[0]["size"], 256 * 2048);
        assert_eq!(parts[0]["type"], "c");
        assert_eq!(parts[1]["type"], "da");
        assert_eq!(parts[2]["type"], "83");
        assert_eq!(parts[2]["start"], layout.root.first_lba());

        let mut f = File::open(&path).unwrap();
        let (sig, read_back) = read(&mut f).unwrap();
        assert_eq!(sig, 0x1234_abcd);
        assert_eq!(read_back[1].name, seed_area::PART_NAME);
        assert_eq!(read_back[2].partuuid, "1234abcd-03");
        assert_eq!(read_back[2].offset, layout.root.offset);
        assert_eq!(read_back[2].len, layout.root.len);
    }
}
