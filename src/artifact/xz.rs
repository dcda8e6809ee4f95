//! The .xz of a disk image, with liblzma in-process both ways: compressing with its
//! multi-threaded encoder (the format every card writer and `bmaptool copy` reads; the raw
//! image's holes are read as zeros, which xz stores in a few bytes), reading the size its
//! index records, and decoding.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use liblzma::read::XzDecoder;
use liblzma::stream::{Check, MtStreamBuilder};
use liblzma::write::XzEncoder;

/// The first bytes of every .xz stream.
pub const MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];

/// Preset 0: on the rpi4 card (1 GiB, 480 MiB of data, 2 cores) `xz -T2 -0` took 18 s for
/// 174 MiB, `-1` 23-27 s for 170 MiB, and xz's default `-6` 102-117 s for 155 MiB. A card
/// image is written next to the machine that flashes it, on every rebuild: speed wins over
/// the last few percent of size.
pub const PRESET: u32 = 0;

/// Compresses `src` into `dst` with one thread per core; returns the compressed size.
pub fn compress(src: &Path, dst: &Path) -> Result<u64> {
    let len = std::fs::metadata(src)
        .with_context(|| format!("reading {}", src.display()))?
        .len();
    compress_range(src, 0, len, dst)
}

/// Compresses `len` bytes of `src` from `offset` (one partition of a disk image) into `dst`;
/// returns the compressed size.
pub fn compress_range(src: &Path, offset: u64, len: u64, dst: &Path) -> Result<u64> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let stream = MtStreamBuilder::new()
        .threads(threads)
        .preset(PRESET)
        .check(Check::Crc64)
        .encoder()
        .context("starting the xz encoder")?;
    let mut input = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    input
        .seek(SeekFrom::Start(offset))
        .with_context(|| format!("seeking to byte {offset} of {}", src.display()))?;
    let output = File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut enc = XzEncoder::new_stream(BufWriter::with_capacity(1 << 20, output), stream);
    let mut reader = BufReader::with_capacity(8 << 20, input).take(len);
    let mut buf = vec![0u8; 8 << 20];
    let mut read = 0u64;
    loop {
        crate::interrupt::check()?;
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        read += n as u64;
        enc.write_all(&buf[..n])
            .with_context(|| format!("compressing into {}", dst.display()))?;
    }
    if read != len {
        bail!(
            "{} ends {} bytes short of byte {}",
            src.display(),
            len - read,
            offset + len
        );
    }
    let mut w = enc.finish().context("finishing the xz stream")?;
    w.flush()?;
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    Ok(f.metadata()?.len())
}

/// Whether the file starts as an .xz stream does.
pub fn is_xz(path: &Path) -> Result<bool> {
    let mut head = [0u8; 6];
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let n = crate::artifact::sparse::read_full(&mut f, &mut head)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(n == head.len() && head == MAGIC)
}

/// The uncompressed size recorded in the index at the end of an .xz file, read with liblzma
/// (stream footer, then index) without decoding anything. A file cut short has no footer
/// and index at its end, so a truncated download fails here, before a byte is written.
/// One stream, as xz and imgforge write it; the size of concatenated streams would be the
/// last one's, and then disagrees with the image's own partition table.
pub fn uncompressed_size(path: &Path) -> Result<u64> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    liblzma::uncompressed_size(BufReader::new(f))
        .map_err(|e| anyhow!("no xz index at its end ({e}): the file is truncated or damaged"))
}

/// A reader of the bytes inside an .xz file, decoded by liblzma's multi-threaded decoder
/// (an .xz written in blocks, as `xz -T` and [`compress`] write it, decodes on every core;
/// a single-block one on one). Corrupt data fails the block's CRC64 as it is read.
pub fn decoder(path: &Path) -> Result<XzDecoder<File>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let stream = MtStreamBuilder::new()
        .threads(threads)
        // Beyond this, liblzma decodes on one thread rather than fail: preset 0-9 blocks
        // need far less.
        .memlimit_threading(1 << 30)
        .memlimit_stop(u64::MAX)
        .decoder()
        .context("starting the xz decoder")?;
    Ok(XzDecoder::new_stream(f, stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn xz_reads_back_what_we_compress() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.img");
        let mut data = vec![0u8; 3 << 20];
        for (i, b) in data.iter_mut().enumerate().skip(1 << 20).take(4096) {
            *b = (i * 7 % 251) as u8;
        }
        std::fs::write(&src, &data).unwrap();
        let dst = dir.path().join("a.img.xz");
        let size = compress(&src, &dst).unwrap();
        assert!(size < 64 * 1024, "{size}");
        let out = Command::new("xz")
            .args(["-dc"])
            .arg(&dst)
            .output()
            .expect("xz (package xz-utils)");
        assert!(out.status.success());
        assert_eq!(out.stdout, data);

        assert!(is_xz(&dst).unwrap() && !is_xz(&src).unwrap());
        assert_eq!(uncompressed_size(&dst).unwrap(), data.len() as u64);
        let mut back = Vec::new();
        decoder(&dst).unwrap().read_to_end(&mut back).unwrap();
        assert!(back == data, "liblzma decodes what it encoded");
    }

    #[test]
    fn a_truncated_xz_has_no_index() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.img");
        std::fs::write(&src, vec![7u8; 1 << 20]).unwrap();
        let dst = dir.path().join("a.img.xz");
        compress(&src, &dst).unwrap();
        let whole = std::fs::read(&dst).unwrap();
        std::fs::write(&dst, &whole[..whole.len() - 20]).unwrap();
        let err = uncompressed_size(&dst).unwrap_err().to_string();
        assert!(err.contains("no xz index at its end"), "{err}");
    }
}
