//! Growing the data partition (the last) of an MBR card to the end of the card, at first boot.
//!
//! On GPT disks systemd-repart does this; it does not handle MBR, which the Raspberry Pi
//! boot ROM needs. The data partition is the card's last: a logical partition (8), the last
//! in the extended partition, which ends with it. Growing it moves two ends: the extended
//! partition's in the MBR and the data partition's in its extended boot record (and in the
//! previous record's link to it). The kernel is told with `partx` (util-linux; the BLKPG
//! ioctl, which works on a mounted partition), and systemd-growfs, ordered after this step,
//! grows the ext4 (`x-systemd.growfs` in /etc/fstab). A primary partition that is last (the
//! layout of cards built before the firmware's A/B) is grown the same way, alone.

use std::fs::{self, File};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const SECTOR: u32 = 512;

/// What was done, for the journal.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Grown { from_sectors: u32, to_sectors: u32 },
    AlreadyFull,
}

/// The whole-disk device and partition number of a partition device (following a
/// /dev/disk/by-partuuid link): /dev/mmcblk0p3 gives (/dev/mmcblk0, 3).
pub fn disk_of(partition: &Path) -> Result<(PathBuf, usize)> {
    let real = fs::canonicalize(partition)
        .with_context(|| format!("resolving {}", partition.display()))?;
    let name = real
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no device name", real.display()))?;
    let sys = PathBuf::from("/sys/class/block").join(name);
    let number: usize = fs::read_to_string(sys.join("partition"))
        .with_context(|| format!("{} is not a partition", real.display()))?
        .trim()
        .parse()
        .context("reading the partition number")?;
    // /sys/class/block/<part> links into the disk's folder: its parent names the disk.
    let parent = fs::canonicalize(&sys)?
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .with_context(|| format!("no parent disk for {}", real.display()))?;
    Ok((PathBuf::from("/dev").join(parent), number))
}

/// Rewrites MBR partition `number` of `disk` (an open file of `disk_sectors` sectors) to end
/// at the disk's end, if it is the last partition and does not already; a logical
/// partition's extended partition is grown with it.
pub fn grow_entry(disk: &mut File, disk_sectors: u64, number: usize) -> Result<Outcome> {
    let mut mbr = mbrman::MBR::read_from(&mut *disk, SECTOR).context("reading the MBR")?;
    let logical = number > 4;
    let p = if logical {
        mbr.logical_partitions
            .get(number - 5)
            .map(|l| l.partition.clone())
            .with_context(|| format!("MBR partition {number} does not exist"))?
    } else {
        mbr[number].clone()
    };
    if !p.is_used() {
        bail!("MBR partition {number} is empty");
    }
    let start = u64::from(p.starting_lba);
    let extended = (1..=4).find(|&i| mbr[i].is_used() && mbr[i].is_extended());
    for (i, other) in mbr.iter() {
        // The extended partition starts before its logicals: it is grown with them.
        let around = logical && Some(i) == extended;
        if i != number && !around && other.is_used() && u64::from(other.starting_lba) > start {
            bail!("partition {number} is not the last on the disk (partition {i} follows it)");
        }
    }
    // An MBR counts sectors in 32 bits: a card over 2 TiB keeps the first 2 TiB.
    let to_end = |from: u64| (disk_sectors - from).min(u64::from(u32::MAX)) as u32;
    let want = to_end(start);
    if want <= p.sectors {
        return Ok(Outcome::AlreadyFull);
    }
    if logical {
        let ext = extended.context("a logical partition without an extended partition")?;
        mbr[ext].sectors = to_end(u64::from(mbr[ext].starting_lba));
        let l = &mut mbr.logical_partitions[number - 5];
        l.partition.sectors = want;
        // The previous record's link gives the size from this record to the partition's end
        // (the first logical's record is the extended partition's start: no link).
        if l.ebr_sectors.is_some() {
            l.ebr_sectors = Some(to_end(u64::from(l.absolute_ebr_lba)));
        }
    } else {
        mbr[number].sectors = want;
    }
    disk.seek(SeekFrom::Start(0))?;
    mbr.write_into(&mut *disk).context("writing the MBR")?;
    disk.sync_all()?;
    Ok(Outcome::Grown {
        from_sectors: p.sectors,
        to_sectors: want,
    })
}

/// Grows `partition` to the end of its disk and tells the kernel.
pub fn run(partition: &Path) -> Result<Outcome> {
    let (disk_path, number) = disk_of(partition)?;
    let name = disk_path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let sectors: u64 = fs::read_to_string(format!("/sys/class/block/{name}/size"))
        .with_context(|| format!("reading the size of {}", disk_path.display()))?
        .trim()
        .parse()
        .context("parsing the disk size")?;
    let mut disk = File::options()
        .read(true)
        .write(true)
        .open(&disk_path)
        .with_context(|| format!("opening {}", disk_path.display()))?;
    let outcome = grow_entry(&mut disk, sectors, number)?;
    if let Outcome::Grown { .. } = outcome {
        let st = Command::new("partx")
            .args(["--update", "--nr", &number.to_string()])
            .arg(&disk_path)
            .status()
            .context("running partx (util-linux)")?;
        if !st.success() {
            bail!(
                "partx --update --nr {number} {} failed",
                disk_path.display()
            );
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blank card of `sectors` sectors whose MBR `fill` lays out.
    fn blank(sectors: u64, fill: impl FnOnce(&mut mbrman::MBR)) -> (tempfile::NamedTempFile, File) {
        let t = tempfile::NamedTempFile::new().unwrap();
        let mut f = t.reopen().unwrap();
        f.set_len(sectors * 512).unwrap();
        let mut mbr = mbrman::MBR::new_from(&mut f, SECTOR, [1, 2, 3, 4]).unwrap();
        fill(&mut mbr);
        mbr.write_into(&mut f).unwrap();
        (t, f)
    }

    fn entry(start: u32, n: u32, sys: u8) -> mbrman::MBRPartitionEntry {
        mbrman::MBRPartitionEntry {
            boot: mbrman::BOOT_INACTIVE,
            first_chs: mbrman::CHS::empty(),
            sys,
            last_chs: mbrman::CHS::empty(),
            starting_lba: start,
            sectors: n,
        }
    }

    /// A card as laid out before the firmware's A/B: the data partition primary 3, last.
    fn card(sectors: u64) -> (tempfile::NamedTempFile, File) {
        blank(sectors, |mbr| {
            mbr[1] = entry(2048, 2048, 0x0c);
            mbr[2] = entry(4096, 2048, 0xda);
            mbr[3] = entry(6144, 4096, 0x83);
        })
    }

    #[test]
    fn grows_the_last_partition_to_the_end_once() {
        let (t, mut f) = card(100_000);
        assert_eq!(
            grow_entry(&mut f, 100_000, 3).unwrap(),
            Outcome::Grown {
                from_sectors: 4096,
                to_sectors: 100_000 - 6144
            }
        );
        assert_eq!(
            grow_entry(&mut f, 100_000, 3).unwrap(),
            Outcome::AlreadyFull
        );
        // sfdisk, not our reader, sees the new end, and the others unchanged.
        let out = Command::new("sfdisk")
            .arg("--json")
            .arg(t.path())
            .output()
            .expect("sfdisk (package fdisk)");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let parts = v["partitiontable"]["partitions"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(parts[2]["size"], 100_000 - 6144);
        assert_eq!(parts[1]["size"], 2048);
    }

    /// A card as imgforge lays it out now: three FATs, and an extended partition whose
    /// logicals are the seed area, both root slots and the data partition, last.
    fn ab_card(sectors: u64) -> (tempfile::NamedTempFile, File) {
        blank(sectors, |mbr| {
            mbr[1] = entry(2048, 2048, 0x0c);
            mbr[2] = entry(4096, 2048, 0x0c);
            mbr[3] = entry(6144, 2048, 0x0c);
            mbr[4] = entry(8192, 4 * 4096, 0x0f);
            for (i, sys) in [0xda, 0x83, 0x83, 0x83].into_iter().enumerate() {
                mbr.push(sys, 8192 + 4096 * i as u32, 4096).unwrap();
            }
        })
    }

    fn sfdisk_parts(path: &Path) -> Vec<serde_json::Value> {
        let out = Command::new("sfdisk")
            .arg("--json")
            .arg(path)
            .output()
            .expect("sfdisk (package fdisk)");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["partitiontable"]["partitions"].as_array().unwrap().clone()
    }

    #[test]
    fn grows_the_last_logical_partition_and_its_extended_partition() {
        let (t, mut f) = ab_card(100_000);
        let data_start = 8192 + 3 * 4096 + 2048;
        assert_eq!(
            grow_entry(&mut f, 100_000, 8).unwrap(),
            Outcome::Grown {
                from_sectors: 2048,
                to_sectors: 100_000 - data_start
            }
        );
        assert_eq!(
            grow_entry(&mut f, 100_000, 8).unwrap(),
            Outcome::AlreadyFull
        );
        drop(f);
        // sfdisk, not our reader, accepts the grown table and sees the new ends.
        let verify = Command::new("sfdisk")
            .arg("-V")
            .arg(t.path())
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "sfdisk -V: {}{}",
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        );
        let parts = sfdisk_parts(t.path());
        assert_eq!(parts.len(), 8, "{parts:?}");
        assert_eq!(parts[3]["size"], 100_000 - 8192, "the extended partition");
        assert_eq!(parts[7]["start"], data_start);
        assert_eq!(parts[7]["size"], 100_000 - data_start, "the data partition");
        assert_eq!(parts[6]["size"], 2048, "root slot B unchanged");
        // sfdisk checks overlaps, not the chain's link sizes: read the link in the boot
        // record before the data partition's (logical 7's, at LBA 16384) from the bytes. Its
        // second entry gives the data partition's record (LBA 20480) relative to the
        // extended partition (8192) and the sectors from there to the card's end.
        let bytes = std::fs::read(t.path()).unwrap();
        let link = 16384 * 512 + 446 + 16;
        let le = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_eq!(le(link + 8), 20480 - 8192, "the link's start");
        assert_eq!(le(link + 12), 100_000 - 20480, "the link's size reaches the card's end");
        let e = grow_entry(&mut File::options().read(true).write(true).open(t.path()).unwrap(), 100_000, 7)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not the last"), "{e}");
    }

    #[test]
    fn refuses_a_partition_that_is_not_last() {
        let (_t, mut f) = card(100_000);
        let e = grow_entry(&mut f, 100_000, 2).unwrap_err().to_string();
        assert!(e.contains("not the last"), "{e}");
    }
}
