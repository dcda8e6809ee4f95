//! The disk: where partitions lie (`layout`), the identifiers written into it (`ids`), and
//! the table that describes them: a GPT for UEFI machines (`gpt`), an MBR for Raspberry Pi
//! cards (`mbr`).

pub mod gpt;
pub mod ids;
pub mod layout;
pub mod mbr;

use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{bail, Context, Result};

/// A partition as read back from an image or card.
#[derive(Debug, Clone)]
pub struct ReadPartition {
    pub number: u32,
    /// The GPT name, or for an MBR the role imgforge gives that slot (boot, imgforge-seed,
    /// root); empty for a partition imgforge did not write.
    pub name: String,
    pub type_name: String,
    /// As Linux shows it in /dev/disk/by-partuuid.
    pub partuuid: String,
    pub offset: u64,
    pub len: u64,
}

/// Which partition table a disk carries, with its identifier.
#[derive(Debug, Clone, PartialEq)]
pub enum Table {
    Gpt {
        guid: uuid::Uuid,
        /// The sector of the backup header, which a GPT puts in the disk's last sector: an
        /// image shorter than this was cut short.
        backup_lba: u64,
    },
    Mbr {
        signature: u32,
    },
}

/// A disk or image to read a table from: a file, a device, or bytes in memory. (Write only
/// because the `gpt` crate asks it of every device; nothing here writes.)
pub trait Device: Read + Write + Seek + std::fmt::Debug {}
impl<T: Read + Write + Seek + std::fmt::Debug> Device for T {}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Table::Gpt { guid, .. } => write!(f, "gpt, disk guid {guid}"),
            Table::Mbr { signature } => write!(f, "mbr, disk signature 0x{signature:08x}"),
        }
    }
}

/// Reads whichever table the disk has: a GPT behind its protective MBR, else a plain MBR.
pub fn read(file: &mut impl Device) -> Result<(Table, Vec<ReadPartition>)> {
    let mut sector = [0u8; 512];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut sector)
        .context("reading the first sector")?;
    if sector[510..] != [0x55, 0xaa] {
        bail!("no partition table (the first sector lacks the 55 AA boot signature)");
    }
    // The four MBR entries start at byte 446; each one's type byte is its fifth.
    let protective = (0..4).any(|i| sector[446 + 16 * i + 4] == mbr::TYPE_GPT_PROTECTIVE);
    if protective {
        let (guid, backup_lba, parts) = gpt::read(file)?;
        Ok((Table::Gpt { guid, backup_lba }, parts))
    } else {
        let (signature, parts) = mbr::read(file)?;
        Ok((Table::Mbr { signature }, parts))
    }
}

/// For the partition table tests: a blank sparse disk, and sfdisk's verdict and reading.
#[cfg(test)]
pub(crate) mod test_support {
    use std::fs::File;
    use std::path::Path;
    use std::process::Command;

    /// A new sparse file of `len` bytes at `path`, open for reading and writing.
    pub fn blank_disk(path: &Path, len: u64) -> File {
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .unwrap();
        f.set_len(len).unwrap();
        f
    }

    /// Fails the test unless `sfdisk -V` accepts the table; returns `sfdisk --json`'s
    /// `partitiontable`.
    pub fn sfdisk_table(path: &Path) -> serde_json::Value {
        let out = Command::new("sfdisk")
            .arg("-V")
            .arg(path)
            .output()
            .expect("sfdisk (package fdisk)");
        assert!(
            out.status.success(),
            "sfdisk -V: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let json = Command::new("sfdisk")
            .arg("--json")
            .arg(path)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        v["partitiontable"].clone()
    }
}
