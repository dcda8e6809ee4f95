//! Block maps (bmap 2.0, the format of bmaptool): which 4 KiB blocks of an image carry
//! data, with a sha256 per range. Written beside each image so `bmaptool copy` and
//! `imgforge flash` write only the mapped ranges, and read back by `imgforge flash`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

pub const BLOCK: u64 = 4096;

#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    /// First and last block, inclusive.
    pub first: u64,
    pub last: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bmap {
    pub image_size: u64,
    pub ranges: Vec<Range>,
}

impl Bmap {
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| (r.last - r.first + 1) * BLOCK)
            .sum::<u64>()
            .min(self.image_size)
    }

    /// Byte extents (offset, len) of the mapped ranges, clipped to the image.
    pub fn extents(&self) -> Vec<(u64, u64)> {
        self.ranges
            .iter()
            .map(|r| {
                let off = r.first * BLOCK;
                let end = ((r.last + 1) * BLOCK).min(self.image_size);
                (off, end - off)
            })
            .collect()
    }
}

impl Bmap {
    /// Maps the bytes [`offset`, `offset + len`) and hashes again, from `image`, every range
    /// that holds or touches them (merged into one): after `imgforge seed` wrote into the
    /// image's seed area, the bmap describes the seeded image.
    pub fn remap(&mut self, image: &File, offset: u64, len: u64) -> Result<()> {
        let (mut first, mut last) = (offset / BLOCK, (offset + len).div_ceil(BLOCK) - 1);
        let mut kept = Vec::new();
        for r in self.ranges.drain(..) {
            if r.last + 1 < first || r.first > last + 1 {
                kept.push(r);
            } else {
                first = first.min(r.first);
                last = last.max(r.last);
            }
        }
        let start = first * BLOCK;
        let end = ((last + 1) * BLOCK).min(self.image_size);
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = start;
        while at < end {
            let n = (end - at).min(buf.len() as u64) as usize;
            image
                .read_exact_at(&mut buf[..n], at)
                .with_context(|| format!("reading the image at byte {at}"))?;
            h.update(&buf[..n]);
            at += n as u64;
        }
        kept.push(Range {
            first,
            last,
            sha256: crate::cache::hex(&h.finalize()),
        });
        kept.sort_by_key(|r| r.first);
        self.ranges = kept;
        Ok(())
    }
}

/// `<name>.img.bmap` beside `<name>.img` or `<name>.img.xz`: where imgforge writes it and
/// bmaptool looks for it.
pub fn beside(image: &Path) -> PathBuf {
    let raw = if image.extension().is_some_and(|e| e == "xz") {
        image.with_extension("")
    } else {
        image.to_path_buf()
    };
    let mut s = raw.into_os_string();
    s.push(".bmap");
    PathBuf::from(s)
}

/// Builds a bmap from the image's bytes, fed in order in block-aligned chunks.
pub struct Builder {
    ranges: Vec<Range>,
    open: Option<(u64, u64, Sha256)>,
    pos: u64,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    pub fn new() -> Self {
        Builder {
            ranges: Vec::new(),
            open: None,
            pos: 0,
        }
    }

    /// Feeds the next chunk; `mapped` says whether it belongs in the map.
    pub fn feed(&mut self, chunk: &[u8], mapped: bool) {
        let first = self.pos / BLOCK;
        let blocks = (chunk.len() as u64).div_ceil(BLOCK);
        self.pos += chunk.len() as u64;
        if !mapped {
            self.close();
            return;
        }
        match &mut self.open {
            Some((_, last, h)) if *last + 1 == first => {
                *last = first + blocks - 1;
                h.update(chunk);
            }
            _ => {
                self.close();
                let mut h = Sha256::new();
                h.update(chunk);
                self.open = Some((first, first + blocks - 1, h));
            }
        }
    }

    fn close(&mut self) {
        if let Some((first, last, h)) = self.open.take() {
            self.ranges.push(Range {
                first,
                last,
                sha256: crate::cache::hex(&h.finalize()),
            });
        }
    }

    pub fn finish(mut self) -> Bmap {
        self.close();
        Bmap {
            image_size: self.pos,
            ranges: self.ranges,
        }
    }
}

/// The bmap as bmaptool writes it; the file's own checksum is computed over the text with
/// the checksum's value zeroed, as bmaptool verifies it.
pub fn to_xml(b: &Bmap) -> String {
    let blocks = b.image_size.div_ceil(BLOCK);
    let mapped: u64 = b.ranges.iter().map(|r| r.last - r.first + 1).sum();
    let mut ranges = String::new();
    for r in &b.ranges {
        let span = if r.first == r.last {
            r.first.to_string()
        } else {
            format!("{}-{}", r.first, r.last)
        };
        ranges.push_str(&format!(
            "        <Range chksum=\"{}\"> {span} </Range>\n",
            r.sha256
        ));
    }
    let text = |sum: &str| {
        format!(
            "<?xml version=\"1.0\" ?>\n\
             <!-- Written by imgforge. Mapped ranges carry data; the rest may be left unwritten. -->\n\
             <bmap version=\"2.0\">\n    \
             <ImageSize> {} </ImageSize>\n    \
             <BlockSize> {BLOCK} </BlockSize>\n    \
             <BlocksCount> {blocks} </BlocksCount>\n    \
             <MappedBlocksCount> {mapped} </MappedBlocksCount>\n    \
             <ChecksumType> sha256 </ChecksumType>\n    \
             <BmapFileChecksum> {sum} </BmapFileChecksum>\n    \
             <BlockMap>\n{ranges}    </BlockMap>\n</bmap>\n",
            b.image_size
        )
    };
    let zeroed = text(&"0".repeat(64));
    text(&crate::cache::sha256_bytes(zeroed.as_bytes()))
}

fn tag<'a>(xml: &'a str, name: &str) -> Result<&'a str> {
    let open = format!("<{name}>");
    let start = xml
        .find(&open)
        .ok_or_else(|| anyhow!("no <{name}> in the bmap"))?
        + open.len();
    let end = xml[start..]
        .find(&format!("</{name}>"))
        .ok_or_else(|| anyhow!("<{name}> is not closed"))?;
    Ok(xml[start..start + end].trim())
}

/// Reads a bmap written by imgforge or bmaptool (format 2.x, sha256), checking its own
/// checksum.
pub fn parse(xml: &str) -> Result<Bmap> {
    if !xml.contains("<bmap version=\"2.") {
        bail!("only bmap format 2.x is read");
    }
    if tag(xml, "BlockSize")?.parse::<u64>()? != BLOCK {
        bail!("only 4096-byte bmap blocks are read");
    }
    if tag(xml, "ChecksumType")? != "sha256" {
        bail!("only sha256 bmaps are read");
    }
    let sum = tag(xml, "BmapFileChecksum")?;
    if crate::cache::sha256_bytes(xml.replace(sum, &"0".repeat(sum.len())).as_bytes()) != sum {
        bail!("the bmap fails its own checksum (edited or truncated?)");
    }
    let image_size: u64 = tag(xml, "ImageSize")?.parse().context("ImageSize")?;
    let mut ranges = Vec::new();
    let mut rest = tag(xml, "BlockMap")?;
    while let Some(i) = rest.find("<Range") {
        rest = &rest[i..];
        let end = rest
            .find("</Range>")
            .ok_or_else(|| anyhow!("a <Range> is not closed"))?;
        let elem = &rest[..end];
        let sha = elem
            .split("chksum=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .ok_or_else(|| anyhow!("a <Range> has no chksum"))?;
        let span = elem.rsplit('>').next().unwrap_or("").trim();
        let (a, b) = span.split_once('-').unwrap_or((span, span));
        ranges.push(Range {
            first: a.trim().parse()?,
            last: b.trim().parse()?,
            sha256: sha.to_string(),
        });
        rest = &rest[end..];
    }
    Ok(Bmap { image_size, ranges })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remap_hashes_the_changed_blocks_and_merges_what_they_touch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.img");
        let mut data = vec![0u8; 16 * BLOCK as usize];
        data[..BLOCK as usize].fill(1);
        data[5 * BLOCK as usize..6 * BLOCK as usize].fill(2);
        let build = |data: &[u8]| {
            let mut b = Builder::new();
            for c in data.chunks(BLOCK as usize) {
                b.feed(c, c.iter().any(|x| *x != 0));
            }
            b.finish()
        };
        let mut map = build(&data);
        assert_eq!(map.extents(), [(0, BLOCK), (5 * BLOCK, BLOCK)]);
        // "Seed" blocks 6-7: they join block 5's range.
        data[6 * BLOCK as usize + 10] = 9;
        std::fs::write(&path, &data).unwrap();
        map.remap(&File::open(&path).unwrap(), 6 * BLOCK, 2 * BLOCK)
            .unwrap();
        assert_eq!(map.extents(), [(0, BLOCK), (5 * BLOCK, 3 * BLOCK)]);
        assert_eq!(
            map.ranges[1].sha256,
            crate::cache::sha256_bytes(&data[5 * BLOCK as usize..8 * BLOCK as usize])
        );
        assert_eq!(map.ranges[0], build(&data).ranges[0]);
    }

    #[test]
    fn builder_merges_adjacent_chunks_and_round_trips() {
        let mut b = Builder::new();
        let data = vec![7u8; 8192];
        let zero = vec![0u8; 8192];
        b.feed(&data, true);
        b.feed(&data, true);
        b.feed(&zero, false);
        b.feed(&zero, true); // forced: mapped though zero
        let map = b.finish();
        assert_eq!(map.image_size, 32768);
        assert_eq!(map.ranges.len(), 2);
        assert_eq!((map.ranges[0].first, map.ranges[0].last), (0, 3));
        assert_eq!(
            map.ranges[0].sha256,
            crate::cache::sha256_bytes(&[7u8; 16384])
        );
        assert_eq!((map.ranges[1].first, map.ranges[1].last), (6, 7));
        assert_eq!(map.extents(), [(0, 16384), (24576, 8192)]);
        let xml = to_xml(&map);
        assert_eq!(parse(&xml).unwrap(), map);
        assert_eq!(
            beside(Path::new("out/a.img.xz")),
            Path::new("out/a.img.bmap")
        );
        assert_eq!(beside(Path::new("a.img")), Path::new("a.img.bmap"));
        let tampered = xml.replace("> 6-7 <", "> 5-7 <");
        assert!(parse(&tampered)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
    }
}
