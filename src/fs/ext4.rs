//! The root ext4: written by `mke2fs -d root.tar` straight into the disk file at the root
//! partition's offset (e2fsprogs >= 1.47.1 reads a tar; no mount, no loop device, no root).
//! Also a small superblock reader for `inspect`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::tool::{self, HostTool};

pub const MKE2FS: HostTool = HostTool {
    program: "mke2fs",
    package: "e2fsprogs (>= 1.47.1, from bookworm-backports)",
};

pub struct Ext4Options<'a> {
    pub disk: &'a Path,
    pub offset: u64,
    pub size: u64,
    /// The content; None for an empty filesystem (the data partition, filled on the node).
    pub tar: Option<&'a Path>,
    pub uuid: uuid::Uuid,
    pub hash_seed: uuid::Uuid,
    pub label: &'a str,
    pub epoch: u64,
    /// Entries in the tar: the inode table is sized from them (see `inode_count`).
    pub entries: u64,
    /// Free space planned beyond the content.
    pub free_bytes: u64,
}

/// Inodes for the tar's entries with a quarter more, plus the default ratio (one per
/// 16 KiB) over the free space. mke2fs's ratio alone, sized for big files, runs out on
/// roots full of small ones (JupyterLab's Node modules: ~100k files).
pub fn inode_count(entries: u64, free_bytes: u64) -> u64 {
    entries + entries / 4 + free_bytes / 16384 + 1024
}

/// Fails unless mke2fs is new enough to populate from a tar.
pub fn check_mke2fs() -> Result<()> {
    tool::require(&MKE2FS)?;
    let out = Command::new("mke2fs")
        .arg("-V")
        .output()
        .context("running mke2fs -V")?;
    let text = String::from_utf8_lossy(&out.stderr);
    let version = text.split_whitespace().nth(1).unwrap_or("");
    let nums: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    if nums.len() < 3 || (nums[0], nums[1], nums[2]) < (1, 47, 1) {
        bail!("mke2fs {version} cannot read a tar; e2fsprogs >= 1.47.1 is needed (bookworm-backports has it; scripts/setup-host.sh installs it)");
    }
    Ok(())
}

pub fn make_from_tar(o: &Ext4Options) -> Result<()> {
    let extended = format!(
        "offset={},root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1,nodiscard,hash_seed={}",
        o.offset, o.hash_seed
    );
    let mut cmd = Command::new("mke2fs");
    // E2FSPROGS_FAKE_TIME pins the superblock's times, so the bytes depend on inputs only.
    cmd.env("E2FSPROGS_FAKE_TIME", o.epoch.to_string())
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-L", o.label])
        .arg("-U")
        .arg(o.uuid.to_string())
        .arg("-N")
        .arg(inode_count(o.entries, o.free_bytes).to_string());
    if let Some(tar) = o.tar {
        cmd.arg("-d").arg(tar);
    }
    cmd.arg("-E")
        .arg(extended)
        .arg(o.disk)
        // A bare number is read as KiB: say so explicitly.
        .arg(format!("{}k", o.size / 1024));
    tool::run(&mut cmd).with_context(|| format!("writing the {} ext4 with mke2fs", o.label))?;
    Ok(())
}

/// What `inspect` shows of an ext4 superblock.
#[derive(Debug, Clone)]
pub struct Superblock {
    pub label: String,
    pub uuid: uuid::Uuid,
    pub block_size: u64,
    pub blocks: u64,
    pub free_blocks: u64,
}

/// Reads the superblock of the ext4 at `offset`, or `None` if there is none.
pub fn read_superblock(disk: &mut File, offset: u64) -> Result<Option<Superblock>> {
    let mut sb = [0u8; 1024];
    disk.seek(SeekFrom::Start(offset + 1024))?;
    disk.read_exact(&mut sb)?;
    let le32 = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().expect("4 bytes")) as u64;
    if u16::from_le_bytes([sb[56], sb[57]]) != 0xEF53 {
        return Ok(None);
    }
    let label_raw = &sb[120..136];
    let end = label_raw.iter().position(|b| *b == 0).unwrap_or(16);
    Ok(Some(Superblock {
        label: String::from_utf8_lossy(&label_raw[..end]).into_owned(),
        uuid: uuid::Uuid::from_slice(&sb[104..120]).expect("16 bytes"),
        block_size: 1024 << le32(24),
        blocks: le32(4) | (le32(0x150) << 32),
        free_blocks: le32(12) | (le32(0x158) << 32),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mke2fs_writes_at_offset_and_e2fsck_passes() {
        check_mke2fs().expect("host set-up (scripts/setup-host.sh)");
        let dir = tempfile::tempdir().unwrap();
        let tar_path = dir.path().join("root.tar");
        {
            let mut b = tar::Builder::new(File::create(&tar_path).unwrap());
            // mke2fs needs every parent folder before its children, as compose writes them.
            for d in ["usr/", "usr/bin/"] {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_mtime(1);
                b.append_data(&mut h, d, std::io::empty()).unwrap();
            }
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o4755);
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(5);
            h.set_mtime(1);
            b.append_data(&mut h, "usr/bin/suid", &b"hello"[..])
                .unwrap();
            b.finish().unwrap();
        }
        let disk = dir.path().join("disk.img");
        let f = File::create(&disk).unwrap();
        f.set_len(40 * 1024 * 1024).unwrap();
        let uuid = uuid::Uuid::from_u128(7);
        make_from_tar(&Ext4Options {
            disk: &disk,
            offset: 4 * 1024 * 1024,
            size: 32 * 1024 * 1024,
            tar: Some(&tar_path),
            uuid,
            hash_seed: uuid::Uuid::from_u128(8),
            label: "root",
            epoch: 1_735_689_600,
            entries: 3,
            free_bytes: 16 * 1024 * 1024,
        })
        .unwrap();
        let mut f = File::open(&disk).unwrap();
        assert!(
            read_superblock(&mut f, 0).unwrap().is_none(),
            "nothing before the offset"
        );
        let sb = read_superblock(&mut f, 4 * 1024 * 1024)
            .unwrap()
            .expect("superblock");
        assert_eq!(
            (sb.label.as_str(), sb.uuid, sb.block_size, sb.blocks),
            ("root", uuid, 4096, 8192)
        );
        let out = Command::new("e2fsck")
            .arg("-fn")
            .arg(format!("{}?offset={}", disk.display(), 4 * 1024 * 1024))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "e2fsck: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let out = Command::new("debugfs")
            .arg("-R")
            .arg("stat /usr/bin/suid")
            .arg(format!("{}?offset={}", disk.display(), 4 * 1024 * 1024))
            .output()
            .unwrap();
        let stat = String::from_utf8_lossy(&out.stdout);
        assert!(stat.contains("Mode:  04755"), "setuid kept: {stat}");
    }
}
