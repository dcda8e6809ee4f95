//! Copying and hashing disk files without filling their holes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

const CHUNK: usize = 1 << 20;

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
    loop {
        crate::interrupt::check()?;
        let n = read_full(&mut input, &mut buf)
            .with_context(|| format!("reading {}", src.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        let zero = buf[..n].iter().all(|b| *b == 0);
        let forced = always_mapped
            .iter()
            .any(|(o, l)| pos < o + l && *o < pos + n as u64);
        map.feed(&buf[..n], !zero || forced);
        pos += n as u64;
        if zero {
            out.seek(SeekFrom::Current(n as i64))?;
        } else {
            out.write_all(&buf[..n])
                .with_context(|| format!("writing {}", dst.display()))?;
        }
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
