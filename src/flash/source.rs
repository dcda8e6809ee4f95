//! The image to flash: a raw .img, or an .img.xz decoded in-process by liblzma as it is
//! read; and its bmap (`<name>.img.bmap`, the name bmaptool also looks for), checked against
//! the image before anything is written.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::artifact::bmap::{self, Bmap};
use crate::artifact::image::{Format, Image};
use crate::artifact::xz;
use crate::exit::UserError;

pub struct Source {
    pub path: PathBuf,
    pub size: u64,
    pub compressed: bool,
}

/// A sequential reader of the image's bytes.
pub enum Reader {
    Raw(File),
    Xz(Box<liblzma::read::XzDecoder<File>>),
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Reader::Raw(f) => f.read(buf),
            Reader::Xz(d) => d.read(buf),
        }
    }
}

impl Source {
    /// The image, already checked as one of ours.
    pub fn new(image: &Image) -> Self {
        Source {
            path: image.path.clone(),
            size: image.size,
            compressed: image.format == Format::Xz,
        }
    }

    pub fn reader(&self) -> Result<Reader> {
        if self.compressed {
            Ok(Reader::Xz(Box::new(xz::decoder(&self.path)?)))
        } else {
            Ok(Reader::Raw(File::open(&self.path).with_context(|| {
                format!("opening {}", self.path.display())
            })?))
        }
    }
}

/// Reads the bmap at `path` and checks that it describes an image of `image`'s size.
pub fn load_bmap(path: &Path, image: &Image) -> Result<Bmap> {
    let user = |msg: String| -> anyhow::Error { UserError(msg).into() };
    let text =
        std::fs::read_to_string(path).map_err(|e| user(format!("{}: {e}", path.display())))?;
    let map = bmap::parse(&text).map_err(|e| user(format!("{}: {e:#}", path.display())))?;
    if map.image_size != image.size {
        return Err(user(format!(
            "{} describes a {}-byte image, but {} has {} bytes{}",
            path.display(),
            map.image_size,
            image.path.display(),
            image.size,
            if image.format == Format::Xz {
                " (as its xz index says)"
            } else {
                ""
            }
        )));
    }
    Ok(map)
}

/// For a seeded raw image: the bmap ranges that cover the seed area hash as the bmap says.
/// An image seeded after its bmap was written (by an imgforge before `seed` rewrote the bmap,
/// or with another bmap given by --bmap) fails here, before anything is written, with what
/// to do. Any other mismatch is found while writing, where every range is hashed anyway (the
/// range over the seed area may run on through the root's data: it is read twice only for a
/// seeded image).
pub fn check_seed_ranges(image: &Image, map: &Bmap, map_path: &Path) -> Result<()> {
    if image.format != Format::Raw || image.seed_state.secrets.is_none() {
        return Ok(());
    }
    let f = File::open(&image.path).with_context(|| format!("opening {}", image.path.display()))?;
    let (s, e) = (image.seed.offset, image.seed.offset + image.seed.len);
    let mut buf = vec![0u8; 1 << 20];
    for (r, (off, len)) in map.ranges.iter().zip(map.extents()) {
        if off >= e || off + len <= s {
            continue;
        }
        let mut h = Sha256::new();
        let mut at = off;
        while at < off + len {
            let n = (off + len - at).min(buf.len() as u64) as usize;
            f.read_exact_at(&mut buf[..n], at)
                .with_context(|| format!("reading {} at byte {at}", image.path.display()))?;
            h.update(&buf[..n]);
            at += n as u64;
        }
        if crate::cache::hex(&h.finalize()) != r.sha256 {
            let img = image.path.display();
            return Err(UserError(format!(
                "{img} was seeded after {} was written, so the bmap's checksum of its seed area \
                 (blocks {}-{}) no longer holds. Run `imgforge seed {img} --secrets FILE` again \
                 (it rewrites the bmap beside the image), or flash with --no-bmap; nothing was \
                 written",
                map_path.display(),
                r.first,
                r.last
            ))
            .into());
        }
    }
    Ok(())
}
