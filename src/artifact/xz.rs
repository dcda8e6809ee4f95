//! Compressing a disk image to .xz with liblzma's multi-threaded encoder: the format every
//! card writer and `bmaptool copy` reads. The raw image's holes are read as zeros, which
//! xz stores in a few bytes.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use liblzma::stream::{Check, MtStreamBuilder};
use liblzma::write::XzEncoder;

/// Preset 0: on the rpi4 card (1 GiB, 480 MiB of data, 2 cores) `xz -T2 -0` took 18 s for
/// 174 MiB, `-1` 23-27 s for 170 MiB, and xz's default `-6` 102-117 s for 155 MiB. A card
/// image is written next to the machine that flashes it, on every rebuild: speed wins over
/// the last few percent of size.
pub const PRESET: u32 = 0;

/// Compresses `src` into `dst` with one thread per core; returns the compressed size.
pub fn compress(src: &Path, dst: &Path) -> Result<u64> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let stream = MtStreamBuilder::new()
        .threads(threads)
        .preset(PRESET)
        .check(Check::Crc64)
        .encoder()
        .context("starting the xz encoder")?;
    let input = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let output = File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut enc = XzEncoder::new_stream(BufWriter::with_capacity(1 << 20, output), stream);
    let mut reader = BufReader::with_capacity(8 << 20, input);
    let mut buf = vec![0u8; 8 << 20];
    loop {
        crate::interrupt::check()?;
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        enc.write_all(&buf[..n])
            .with_context(|| format!("compressing into {}", dst.display()))?;
    }
    let mut w = enc.finish().context("finishing the xz stream")?;
    w.flush()?;
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    Ok(f.metadata()?.len())
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
    }
}
