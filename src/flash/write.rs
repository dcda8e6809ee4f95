//! The write procedure. Order matters for a card that may be pulled or a process that may be
//! killed at any moment:
//!
//! 1. Wipe the target's old partition tables (its first and last MiB): from here on, until
//!    step 4, nothing on the card is bootable.
//! 2. Write the body: every byte, or with a bmap only the mapped ranges (never "skip zeros"
//!    on a device: discard does not promise zeros). The image's first MiB (MBR/GPT) and last
//!    MiB (backup GPT) are held back.
//! 3. Sync, drop the cached pages, read the body back and compare hashes.
//! 4. Write the held-back last MiB, then the first MiB, sync, and read them back.
//!
//! On any error the caller wipes the tables again ([`wipe`]).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::source::Source;
use crate::artifact::bmap::Bmap;
use crate::artifact::sparse::read_full;

const MIB: u64 = 1024 * 1024;

pub struct Report {
    pub written: u64,
    pub verified: u64,
    pub seconds: f64,
}

/// Progress of the write, in bytes of the image's mapped content.
pub trait Progress {
    fn phase(&mut self, what: &str, total: u64);
    fn advance(&mut self, bytes: u64);
}

/// Zeroes the regions that hold partition tables: the first MiB, the last MiB of the
/// target, and the last MiB of where the image ends (its backup GPT), then syncs.
pub fn wipe(dev: &File, dev_size: u64, image_size: u64) -> Result<()> {
    let zeros = vec![0u8; MIB as usize];
    let mut spots = vec![
        0,
        dev_size.saturating_sub(MIB),
        image_size.saturating_sub(MIB),
    ];
    spots.sort();
    spots.dedup();
    for at in spots {
        let len = MIB.min(dev_size.saturating_sub(at)) as usize;
        dev.write_all_at(&zeros[..len], at)
            .with_context(|| format!("wiping the partition table area at byte {at}"))?;
    }
    dev.sync_all().context("syncing the wiped partition tables")
}

/// Intersection of [a, a+al) and [b, b+bl) as (start, end), if any.
fn overlap(a: u64, al: u64, b: u64, bl: u64) -> Option<(u64, u64)> {
    let s = a.max(b);
    let e = (a + al).min(b + bl);
    (s < e).then_some((s, e))
}

pub fn write_image(
    src: &Source,
    map: Option<&Bmap>,
    dev: &File,
    dev_size: u64,
    progress: &mut dyn Progress,
    fail_after: Option<u64>,
) -> Result<Report> {
    let started = Instant::now();
    let size = src.size;
    if size < 2 * MIB || size % 512 != 0 {
        bail!("{} is not a disk image ({size} bytes)", src.path.display());
    }
    let extents = map.map(|m| m.extents()).unwrap_or_else(|| vec![(0, size)]);
    let total: u64 = extents.iter().map(|(_, l)| l).sum();
    // The regions held back until the body is verified.
    let head = (0, MIB);
    let tail = (size - MIB, MIB);
    let mut held_head = vec![0u8; MIB as usize];
    let mut held_tail = vec![0u8; MIB as usize];
    let body = |s: u64, e: u64| overlap(s, e - s, MIB, size - 2 * MIB);

    wipe(dev, dev_size, size)?;

    progress.phase("writing", total);
    let mut written = 0u64;
    let mut range_hash: Vec<Sha256> = extents.iter().map(|_| Sha256::new()).collect();
    // A range wholly inside the body is verified against its source hash; a range that
    // reaches into the held-back head or tail needs a hash of its body part alone.
    let inside: Vec<bool> = extents
        .iter()
        .map(|(o, l)| *o >= MIB && o + l <= size - MIB)
        .collect();
    let mut body_hash: Vec<Sha256> = extents.iter().map(|_| Sha256::new()).collect();
    let mut process = |i: usize, s: u64, part: &[u8]| -> Result<()> {
        let e = s + part.len() as u64;
        for (held, (ho, hl)) in [(&mut held_head, head), (&mut held_tail, tail)] {
            if let Some((hs, he)) = overlap(s, e - s, ho, hl) {
                held[(hs - ho) as usize..(he - ho) as usize]
                    .copy_from_slice(&part[(hs - s) as usize..(he - s) as usize]);
            }
        }
        range_hash[i].update(part);
        progress.advance(e - s);
        if let Some((bs, be)) = body(s, e) {
            let piece = &part[(bs - s) as usize..(be - s) as usize];
            if fail_after.is_some_and(|limit| written >= limit) {
                bail!("simulated write error after {written} bytes (--fail-after-mib)");
            }
            dev.write_all_at(piece, bs)
                .with_context(|| format!("writing at byte {bs}"))?;
            if !inside[i] {
                body_hash[i].update(piece);
            }
            written += piece.len() as u64;
        }
        Ok(())
    };
    let mut buf = vec![0u8; MIB as usize];
    if map.is_some() && !src.compressed {
        // A raw image with a bmap: read only the mapped ranges, at their offsets (a mostly
        // empty card image is mostly holes, which need not be read at all).
        let f = File::open(&src.path).with_context(|| format!("opening {}", src.path.display()))?;
        for (i, (eo, el)) in extents.iter().enumerate() {
            let mut s = *eo;
            while s < eo + el {
                crate::interrupt::check()?;
                let len = (eo + el - s).min(MIB) as usize;
                f.read_exact_at(&mut buf[..len], s)
                    .with_context(|| format!("reading {} at byte {s}", src.path.display()))?;
                process(i, s, &buf[..len])?;
                s += len as u64;
            }
        }
    } else {
        // Compressed, or every byte: one sequential pass.
        let mut reader = src.reader()?;
        let mut pos = 0u64;
        while pos < size {
            crate::interrupt::check()?;
            let n = read_full(&mut reader, &mut buf)
                .with_context(|| format!("reading {}", src.path.display()))?
                as u64;
            if n == 0 {
                bail!("{} ended after {pos} of {size} bytes", src.path.display());
            }
            for (i, (eo, el)) in extents.iter().enumerate() {
                if let Some((s, e)) = overlap(pos, n, *eo, *el) {
                    process(i, s, &buf[(s - pos) as usize..(e - pos) as usize])?;
                }
            }
            pos += n;
        }
    }
    let range_sums: Vec<[u8; 32]> = range_hash
        .into_iter()
        .map(|h| h.finalize().into())
        .collect();
    if let Some(m) = map {
        for (i, (sum, r)) in range_sums.iter().zip(&m.ranges).enumerate() {
            if crate::cache::hex(sum) != r.sha256 {
                bail!("the image does not match its bmap (range {i}, blocks {}-{}): a damaged download?", r.first, r.last);
            }
        }
    }
    dev.sync_data().context("syncing the written image")?;

    // Read back what was written, from the device rather than the page cache.
    progress.phase("verifying", written);
    let _ = rustix::fs::fadvise(
        dev,
        0,
        std::num::NonZeroU64::new(size),
        rustix::fs::Advice::DontNeed,
    );
    let mut verified = 0u64;
    for (i, ((eo, el), bh)) in extents.iter().zip(body_hash).enumerate() {
        let Some((mut s, e)) = body(*eo, eo + el) else {
            continue;
        };
        let mut check = Sha256::new();
        while s < e {
            crate::interrupt::check()?;
            let len = (e - s).min(MIB) as usize;
            dev.read_exact_at(&mut buf[..len], s)
                .with_context(|| format!("reading back at byte {s}"))?;
            check.update(&buf[..len]);
            progress.advance(len as u64);
            verified += len as u64;
            s += len as u64;
        }
        let expected: [u8; 32] = if inside[i] {
            range_sums[i]
        } else {
            bh.finalize().into()
        };
        if <[u8; 32]>::from(check.finalize()) != expected {
            bail!("read-back verification failed at bytes {eo}..{}: the target does not hold what was written (a failing card?)", eo + el);
        }
    }

    // The partition tables last: backup GPT at the end, then the first MiB.
    for (held, (at, len)) in [(&held_tail, tail), (&held_head, head)] {
        dev.write_all_at(&held[..len as usize], at)
            .with_context(|| format!("writing the partition table area at byte {at}"))?;
        dev.sync_data().context("syncing the partition tables")?;
        let _ = rustix::fs::fadvise(
            dev,
            at,
            std::num::NonZeroU64::new(len),
            rustix::fs::Advice::DontNeed,
        );
        let mut back = vec![0u8; len as usize];
        dev.read_exact_at(&mut back, at)?;
        if &back != held {
            bail!("read-back verification of the partition tables failed at byte {at}");
        }
        written += len;
        verified += len;
    }
    dev.sync_all().context("syncing the target")?;
    Ok(Report {
        written,
        verified,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps() {
        assert_eq!(overlap(0, 10, 5, 10), Some((5, 10)));
        assert_eq!(overlap(0, 5, 5, 10), None);
        assert_eq!(overlap(7, 1, 0, 100), Some((7, 8)));
    }
}
