//! Refusing a target that is the image itself: the same file (by device and inode, so
//! symlinks and hard links are seen through), the same block device, or a loop device (or a
//! partition of one) whose backing file is the image. Flashing an image onto itself wipes its
//! partition tables first and then copies the wiped bytes back: the image is lost.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::exit::UserError;

/// What a path is, as the kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Id {
    /// A file: its filesystem's device and its inode.
    Inode { dev: u64, ino: u64 },
    /// A block device node: the device number it stands for.
    Device { rdev: u64 },
}

/// A loop device's backing file, as sysfs names it.
struct Backing {
    file: PathBuf,
    id: Id,
}

/// The identities of `path` (none if it does not exist yet), and the loop backing files
/// behind it.
fn identify(path: &Path) -> Result<(Vec<Id>, Vec<Backing>)> {
    let m = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], vec![])),
        Err(e) => return Err(UserError(format!("{}: {e}", path.display())).into()),
    };
    if !m.file_type().is_block_device() {
        return Ok((
            vec![Id::Inode {
                dev: m.dev(),
                ino: m.ino(),
            }],
            vec![],
        ));
    }
    let rdev = m.rdev();
    let mut ids = vec![Id::Device { rdev }];
    let sys = PathBuf::from(format!(
        "/sys/dev/block/{}:{}",
        rustix::fs::major(rdev),
        rustix::fs::minor(rdev)
    ));
    // A partition's sysfs directory sits inside its disk's: the disk's backing file counts.
    let mut dirs = vec![sys.clone()];
    if sys.join("partition").exists() {
        dirs.push(sys.join(".."));
        if let Some(disk) = std::fs::read_to_string(sys.join("../dev"))
            .ok()
            .and_then(|t| parse_dev(t.trim()))
        {
            ids.push(Id::Device { rdev: disk });
        }
    }
    let mut backing = Vec::new();
    for d in dirs {
        let Ok(text) = std::fs::read_to_string(d.join("loop/backing_file")) else {
            continue;
        };
        let file = PathBuf::from(text.trim_end_matches('\n').trim_end_matches(" (deleted)"));
        if let Ok(bm) = std::fs::metadata(&file) {
            backing.push(Backing {
                id: Id::Inode {
                    dev: bm.dev(),
                    ino: bm.ino(),
                },
                file,
            });
        }
    }
    Ok((ids, backing))
}

/// `MAJOR:MINOR` as the kernel encodes it in a dev_t.
fn parse_dev(s: &str) -> Option<u64> {
    let (a, b) = s.split_once(':')?;
    Some(rustix::fs::makedev(a.parse().ok()?, b.parse().ok()?))
}

/// Refuses `target` if it is `image`, or holds it (a loop device over it), or the reverse.
pub fn refuse(image: &Path, target: &Path) -> Result<()> {
    let (img_ids, img_backing) = identify(image)?;
    let (tgt_ids, tgt_backing) = identify(target)?;
    let (i, t) = (image.display(), target.display());
    if img_ids.iter().any(|id| tgt_ids.contains(id)) {
        return Err(UserError(format!(
            "{t} is the image {i} itself: flashing it onto itself would destroy it; nothing \
             was written"
        ))
        .into());
    }
    if let Some(b) = tgt_backing.iter().find(|b| img_ids.contains(&b.id)) {
        return Err(UserError(format!(
            "{t} is a loop device over the image {i} (its backing file {}): flashing would \
             destroy the image; detach it (losetup -d) or choose another target; nothing was \
             written",
            b.file.display()
        ))
        .into());
    }
    if let Some(b) = img_backing.iter().find(|b| tgt_ids.contains(&b.id)) {
        return Err(UserError(format!(
            "the image {i} is a loop device over {t} (its backing file {}): flashing would \
             overwrite what it reads; nothing was written",
            b.file.display()
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_file_by_any_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.img");
        std::fs::write(&a, b"x").unwrap();
        let link = dir.path().join("link.img");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let hard = dir.path().join("hard.img");
        std::fs::hard_link(&a, &hard).unwrap();
        for other in [&a, &link, &hard] {
            let e = refuse(&a, other).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!(
                    "{} is the image {} itself",
                    other.display(),
                    a.display()
                )),
                "{e}"
            );
        }
        let b = dir.path().join("b.img");
        refuse(&a, &b).unwrap();
        std::fs::write(&b, b"x").unwrap();
        refuse(&a, &b).unwrap();
        assert_eq!(parse_dev("7:3"), Some(rustix::fs::makedev(7, 3)));
    }
}
