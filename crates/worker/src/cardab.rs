//! A Raspberry Pi card's A/B on the node: which slot runs, whether it runs on trial, and what
//! the role's readiness does about it (seed_area::card has the slots and autoboot.txt).
//!
//! The Pi's bootloader boots the slot autoboot.txt commits to, unless the one-shot tryboot
//! flag is set, when it boots the other slot once. So a node running a slot that autoboot.txt
//! does not commit to is on trial (Rugix tells a trial the same way; the device tree's
//! `chosen/bootloader/tryboot` says it too, but only on a real Pi, and this works wherever
//! the card's root runs). On trial:
//! - READY commits: autoboot.txt is rewritten to commit to the running slot (`commit`);
//! - not READY reboots (`fallback`): the flag was consumed by this boot, so the bootloader
//!   starts the committed slot, the previous version. A hang does the same through the
//!   watchdog, a panic through `panic=`.
//!
//! On the committed slot both are no-ops: a version that is committed and not ready has no
//! other to return to, and rebooting would only loop.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use seed_area::card::{self, CardSlot};

/// Where the autoboot partition is mounted while it is read or written: a folder per
/// process (`autoboot.<pid>`), so a status read and a commit never stack on one mount point.
const MOUNT_DIR: &str = "/run/imgforge/autoboot";

/// The card's slots as the node sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// The whole card, e.g. /dev/mmcblk0.
    pub disk: PathBuf,
    /// The slot whose root is mounted at /.
    pub running: CardSlot,
    /// The slot autoboot.txt boots without the tryboot flag.
    pub committed: CardSlot,
}

impl State {
    pub fn on_trial(&self) -> bool {
        self.running != self.committed
    }
}

/// The block device behind `/` as (disk name, partition number), from sysfs: the root's
/// st_dev names /sys/dev/block/MAJ:MIN, a link into the disk's folder.
fn root_partition() -> Result<(String, u32)> {
    let dev = fs::metadata("/").context("reading /")?.dev();
    let (major, minor) = (libc_major(dev), libc_minor(dev));
    let sys = fs::canonicalize(format!("/sys/dev/block/{major}:{minor}"))
        .with_context(|| format!("the root's device {major}:{minor} is not a block device"))?;
    let number: u32 = fs::read_to_string(sys.join("partition"))
        .with_context(|| format!("the root ({}) is not on a partition", sys.display()))?
        .trim()
        .parse()
        .context("reading the root's partition number")?;
    let disk = sys
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .with_context(|| format!("no disk above {}", sys.display()))?
        .to_string();
    Ok((disk, number))
}

// glibc's gnu_dev_major/minor, without a libc dependency for two shifts.
fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)
}
fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)
}

/// The device node of partition `number` of `disk` (mmcblk0p1, sda1, vda1: the kernel's
/// naming differs, its `partition` files do not).
pub fn partition_device(disk: &str, number: u32) -> Result<PathBuf> {
    let dir = PathBuf::from("/sys/class/block").join(disk);
    for e in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e?;
        let n = fs::read_to_string(e.path().join("partition")).unwrap_or_default();
        if n.trim() == number.to_string() {
            return Ok(PathBuf::from("/dev").join(e.file_name()));
        }
    }
    bail!("/dev/{disk} has no partition {number}")
}

/// Runs `f` with the autoboot partition mounted (read-only unless `write`), and unmounts it
/// after, whatever `f` returned: unmounting flushes what `f` wrote.
fn with_autoboot<T>(disk: &str, write: bool, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let dev = partition_device(disk, card::AUTOBOOT_PARTITION)?;
    let dir = PathBuf::from(format!("{MOUNT_DIR}.{}", std::process::id()));
    let dir = dir.as_path();
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let opts = if write { "rw,sync,umask=0077" } else { "ro,umask=0077" };
    let st = Command::new("mount")
        .args(["-t", "vfat", "-o", opts])
        .arg(&dev)
        .arg(dir)
        .status()
        .context("running mount (util-linux)")?;
    if !st.success() {
        bail!("mounting the autoboot partition {} failed", dev.display());
    }
    let out = f(dir);
    let st = Command::new("umount").arg(dir).status();
    let unmounted = matches!(st, Ok(s) if s.success());
    if unmounted {
        let _ = fs::remove_dir(dir);
    }
    let value = out?;
    if !unmounted {
        bail!("unmounting {} failed", dir.display());
    }
    Ok(value)
}

/// Which slot runs and which autoboot.txt commits to.
pub fn state() -> Result<State> {
    let (disk, number) = root_partition()?;
    let running = CardSlot::of_root_partition(number).with_context(|| {
        format!("the root is partition {number} of /dev/{disk}, not a card's root slot (6 or 7)")
    })?;
    let text = with_autoboot(&disk, false, |dir| {
        let p = dir.join(card::AUTOBOOT_FILE);
        fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    })?;
    let committed = card::committed_slot(&text)?;
    Ok(State {
        disk: PathBuf::from("/dev").join(disk),
        running,
        committed,
    })
}

/// What `commit` did.
#[derive(Debug, PartialEq)]
pub enum Commit {
    /// autoboot.txt now boots the running slot.
    Committed { from: CardSlot, to: CardSlot },
    /// The running slot was the committed one already.
    AlreadyCommitted(CardSlot),
}

/// Makes the running slot the one the bootloader boots: autoboot.txt is written under a
/// temporary name, synced, and renamed over the old one (a FAT rename rewrites one
/// directory entry; RAUC's Pi backend commits the same way), then the folder is synced.
pub fn commit() -> Result<Commit> {
    let s = state()?;
    if !s.on_trial() {
        return Ok(Commit::AlreadyCommitted(s.running));
    }
    let disk = s.disk.file_name().and_then(|n| n.to_str()).unwrap_or("");
    with_autoboot(disk, true, |dir| {
        let tmp = dir.join("autoboot.new");
        let dst = dir.join(card::AUTOBOOT_FILE);
        let mut f = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(card::autoboot_txt(s.running).as_bytes())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &dst).with_context(|| format!("renaming to {}", dst.display()))?;
        File::open(dir)?.sync_all()?;
        // Read back: the commit is what the bootloader will read.
        let back = fs::read_to_string(&dst)?;
        if card::committed_slot(&back)? != s.running {
            bail!("{} does not commit to slot {} after the write", dst.display(), s.running);
        }
        Ok(())
    })?;
    Ok(Commit::Committed {
        from: s.committed,
        to: s.running,
    })
}

/// On trial and not ready: reboot, and the bootloader starts the committed slot. Returns
/// the state it acted on.
pub fn fallback() -> Result<State> {
    let s = state()?;
    if s.on_trial() {
        let st = Command::new("systemctl")
            .args(["reboot", "--no-block"])
            .status()
            .context("running systemctl reboot")?;
        if !st.success() {
            bail!("systemctl reboot failed");
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_split_as_glibc_does() {
        // makedev(179, 6) (mmcblk0p6) and makedev(259, 70000), a large minor.
        let mk = |ma: u64, mi: u64| {
            ((ma & 0xffff_f000) << 32) | ((ma & 0xfff) << 8) | ((mi & 0xffff_ff00) << 12) | (mi & 0xff)
        };
        assert_eq!((libc_major(mk(179, 6)), libc_minor(mk(179, 6))), (179, 6));
        assert_eq!(
            (libc_major(mk(259, 70_000)), libc_minor(mk(259, 70_000))),
            (259, 70_000)
        );
    }

    #[test]
    fn a_trial_is_a_running_slot_autoboot_does_not_commit_to() {
        let s = |running, committed| State {
            disk: "/dev/mmcblk0".into(),
            running,
            committed,
        };
        assert!(s(CardSlot::B, CardSlot::A).on_trial());
        assert!(!s(CardSlot::A, CardSlot::A).on_trial());
    }
}
