//! Growing the data partition (the last) of an MBR card to the end of the card, at first boot.
//!
//! On GPT disks systemd-repart does this; it does not handle MBR, which the Raspberry Pi
//! boot ROM needs. The data partition is the card's last (primary 3), so growing it only moves its end:
//! the MBR entry's sector count is rewritten, the kernel is told with `partx` (util-linux;
//! the BLKPG ioctl, which works on a mounted partition), and systemd-growfs, ordered after
//! this step, grows the ext4 (`x-systemd.growfs` in /etc/fstab).

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

/// Rewrites MBR entry `number` of `disk` (an open file of `disk_sectors` sectors) to end at
/// the disk's end, if it is the last partition and does not already.
pub fn grow_entry(disk: &mut File, disk_sectors: u64, number: usize) -> Result<Outcome> {
    let mut mbr = mbrman::MBR::read_from(&mut *disk, SECTOR).context("reading the MBR")?;
    let p = mbr[number].clone();
    if !p.is_used() {
        bail!("MBR partition {number} is empty");
    }
    let start = u64::from(p.starting_lba);
    for (i, other) in mbr.iter() {
        if i != number && other.is_used() && u64::from(other.starting_lba) > start {
            bail!("partition {number} is not the last on the disk (partition {i} follows it)");
        }
    }
    // An MBR counts sectors in 32 bits: a card over 2 TiB keeps the first 2 TiB.
    let want = (disk_sectors - start).min(u64::from(u32::MAX)) as u32;
    if want <= p.sectors {
        return Ok(Outcome::AlreadyFull);
    }
    mbr[number].sectors = want;
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

    fn card(sectors: u64) -> (tempfile::NamedTempFile, File) {
        let t = tempfile::NamedTempFile::new().unwrap();
        let mut f = t.reopen().unwrap();
        f.set_len(sectors * 512).unwrap();
        let mut mbr = mbrman::MBR::new_from(&mut f, SECTOR, [1, 2, 3, 4]).unwrap();
        let e = |start: u32, n: u32, sys: u8| mbrman::MBRPartitionEntry {
            boot: mbrman::BOOT_INACTIVE,
            first_chs: mbrman::CHS::empty(),
            sys,
            last_chs: mbrman::CHS::empty(),
            starting_lba: start,
            sectors: n,
        };
        mbr[1] = e(2048, 2048, 0x0c);
        mbr[2] = e(4096, 2048, 0xda);
        mbr[3] = e(6144, 4096, 0x83);
        mbr.write_into(&mut f).unwrap();
        (t, f)
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

    #[test]
    fn refuses_a_partition_that_is_not_last() {
        let (_t, mut f) = card(100_000);
        let e = grow_entry(&mut f, 100_000, 2).unwrap_err().to_string();
        assert!(e.contains("not the last"), "{e}");
    }
}
