//! Copying and hashing disk files without filling their holes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

const CHUNK: usize = 1 << 20;

/// One chunk of zeros: the bytes of a hole, hashed without reading it, and what a read
/// chunk is compared with (a slice comparison is a vectorised memcmp; a per-byte loop made
/// this copy take most of a 6.5 GiB image's outputs stage).
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// Where the input's next data starts at or after `pos` (its length if only a hole is
/// left): a root slot is mostly a hole in the image file, and reading a hole only makes the
/// kernel fill pages with zeros.
fn next_data(input: &File, pos: u64, len: u64) -> std::io::Result<u64> {
    match rustix::fs::seek(input, rustix::fs::SeekFrom::Data(pos)) {
        Ok(off) => Ok(off),
        Err(rustix::io::Errno::NXIO) => Ok(len),
        // A filesystem without SEEK_DATA: treat everything as data.
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) => Ok(pos),
        Err(e) => Err(e.into()),
    }
}

/// Copies `src` to `dst` (created new), leaving all-zero MiB chunks as holes, and returns
/// the sha256 of the whole content and its block map, computed in the same pass. Chunks
/// inside `always_mapped` (offset, len) extents are mapped even when zero.
pub fn copy_and_hash(
    src: &Path,
    dst: &Path,
    always_mapped: &[(u64, u64)],
) -> Result<(String, crate::artifact::bmap::Bmap)> {
    let mut input = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let len = input.metadata()?.len();
    let mut out = File::options()
        .write(true)
        .create_new(true)
        .open(dst)
        .with_context(|| format!("creating {}", dst.display()))?;
    let mut h = Sha256::new();
    let mut map = crate::artifact::bmap::Builder::new();
    let mut pos = 0u64;
    let mut buf = vec![0u8; CHUNK];
    // The input holds only zeros in [pos, hole_end).
    let mut hole_end = 0u64;
    while pos < len {
        crate::interrupt::check()?;
        let n = (len - pos).min(CHUNK as u64) as usize;
        if pos >= hole_end {
            hole_end = next_data(&input, pos, len)
                .with_context(|| format!("reading {}", src.display()))?;
        }
        let in_hole = pos + n as u64 <= hole_end;
        let chunk: &[u8] = if in_hole {
            &ZEROS[..n]
        } else {
            input.seek(SeekFrom::Start(pos))?;
            let got = read_full(&mut input, &mut buf[..n])
                .with_context(|| format!("reading {}", src.display()))?;
            anyhow::ensure!(got == n, "{} shrank while it was read", src.display());
            &buf[..n]
        };
        h.update(chunk);
        let zero = in_hole || chunk == &ZEROS[..n];
        let forced = always_mapped
            .iter()
            .any(|(o, l)| pos < o + l && *o < pos + n as u64);
        map.feed(chunk, !zero || forced);
        if !zero {
            out.seek(SeekFrom::Start(pos))?;
            out.write_all(chunk)
                .with_context(|| format!("writing {}", dst.display()))?;
        }
        pos += n as u64;
    }
    out.set_len(len)?;
    out.sync_all()?;
    Ok((crate::cache::hex(&h.finalize()), map.finish()))
}

/// Reads until `buf` is full or the input ends; returns how much was read.
pub fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Bytes the file really occupies on disk.
pub fn allocated(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .blocks()
        * 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_keeps_content_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a");
        let mut f = File::create(&src).unwrap();
        f.set_len(64 * 1024 * 1024).unwrap();
        f.seek(SeekFrom::Start(10 * 1024 * 1024 + 3)).unwrap();
        f.write_all(b"data").unwrap();
        drop(f);
        let dst = dir.path().join("b");
        let (hash, map) = copy_and_hash(&src, &dst, &[(40 * 1024 * 1024, 4096)]).unwrap();
        assert_eq!(
            map.extents(),
            [
                (10 * 1024 * 1024, 1024 * 1024),
                (40 * 1024 * 1024, 1024 * 1024)
            ],
            "data and forced chunks"
        );
        assert_eq!(hash, crate::cache::sha256_file(&src).unwrap());
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        assert!(
            allocated(&dst).unwrap() <= 2 * 1024 * 1024,
            "holes kept: {}",
            allocated(&dst).unwrap()
        );
    }
}
