//! An imgforge disk image, raw (`.img`) or compressed (`.img.xz`), checked as one of ours
//! before anything is done with it: a whole number of sectors, a partition table that fits
//! inside it, and the seed area imgforge writes, readable. For an .img.xz the size comes
//! from the xz index (read without decoding) and only the head is decoded: the tables and
//! the seed area (and for `inspect`, the ESP and the root's superblock), into a sparse
//! temporary file at the same offsets, so the same table and filesystem readers serve both.
//!
//! Every error names the file and is the user's to fix (exit 1): a wrong path, an empty or
//! foreign file, a truncated download.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use seed_area::SeedState;

use super::sparse::read_full;
use super::xz;
use crate::disk::{self, ReadPartition, Table};
use crate::exit::UserError;

const MIB: u64 = 1024 * 1024;
const SECTOR: u64 = 512;
/// The least an image of ours holds: the first MiB (tables), the seed area, the last MiB
/// (backup GPT).
const MIN_SIZE: u64 = 3 * MIB;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Raw,
    Xz,
}

/// How much of an .img.xz to decode when opening it (a raw image is read where needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// The partition tables and the seed area: what `flash` and `seed` check.
    SeedArea,
    /// On to the root filesystem's superblock, the ESP whole: what `inspect` shows.
    RootSuperblock,
}

pub struct Image {
    pub path: PathBuf,
    pub format: Format,
    /// The disk image's size; for an .img.xz the uncompressed size its index records.
    pub size: u64,
    pub table: Table,
    pub parts: Vec<ReadPartition>,
    /// The `imgforge-seed` partition.
    pub seed: ReadPartition,
    /// The slots (and, if seeded, the values) the seed area holds.
    pub seed_state: SeedState,
    /// The image's bytes from 0 to `head_len`: the image itself, or for an .img.xz its
    /// decoded head in a sparse temporary file.
    head: File,
    head_len: u64,
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> anyhow::Error {
    UserError(format!("{}: {msg}", path.display())).into()
}

impl Image {
    pub fn open(path: &Path, depth: Depth) -> Result<Image> {
        let meta = std::fs::metadata(path)
            .map_err(|e| UserError(format!("opening {}: {e}", path.display())))?;
        if meta.is_dir() {
            return Err(bad(path, "is a directory, not a disk image"));
        }
        let compressed = xz::is_xz(path).map_err(|e| bad(path, format!("{e:#}")))?;
        if compressed {
            open_xz(path, depth)
        } else if path.extension().is_some_and(|e| e == "xz") {
            Err(bad(
                path,
                "is named .xz but is not an xz file (it lacks the xz magic bytes)",
            ))
        } else {
            open_raw(path)
        }
    }

    /// Where the image's bytes can be read, at their offsets in the image.
    pub fn head(&mut self) -> &mut File {
        &mut self.head
    }

    /// Whether `p`'s first `len` bytes can be read from [`Image::head`].
    pub fn readable(&self, p: &ReadPartition, len: u64) -> bool {
        p.offset + len.min(p.len) <= self.head_len
    }
}

fn open_raw(path: &Path) -> Result<Image> {
    let mut f = File::open(path).map_err(|e| bad(path, e))?;
    // Seeking to the end gives a block device's size too (its metadata says 0).
    let size = f.seek(SeekFrom::End(0)).map_err(|e| bad(path, e))?;
    check_size(path, size)?;
    let (table, parts, seed) = read_table(path, &mut f, size, Format::Raw)?;
    finish(path, Format::Raw, size, f, size, table, parts, seed)
}

fn open_xz(path: &Path, depth: Depth) -> Result<Image> {
    let size = xz::uncompressed_size(path).map_err(|e| bad(path, format!("{e:#}")))?;
    check_size(path, size)?;
    let mut head = XzHead::new(path, size)?;
    head.decode_to(MIB, true)?;
    let (table, parts, seed) = read_table(path, &mut head.file, size, Format::Xz)?;
    // Only the seed area is kept from here to its end: the ESP before it is not needed to
    // flash, only to inspect.
    let keep_esp = depth == Depth::RootSuperblock;
    head.decode_to(seed.offset, keep_esp)?;
    head.decode_to(seed.offset + seed_area::SIZE, true)?;
    if depth == Depth::RootSuperblock {
        // An ext4 superblock lies 1 KiB into its partition; 64 KiB covers any block size.
        let end = parts
            .iter()
            .map(|p| p.offset + (64 * 1024).min(p.len))
            .max()
            .unwrap_or(0);
        head.decode_to(end, true)?;
    }
    let head_len = head.pos;
    finish(
        path,
        Format::Xz,
        size,
        head.file,
        head_len,
        table,
        parts,
        seed,
    )
}

fn check_size(path: &Path, size: u64) -> Result<()> {
    if size == 0 {
        return Err(bad(path, "is empty: not a disk image"));
    }
    if size % SECTOR != 0 || size < MIN_SIZE {
        return Err(bad(
            path,
            format!(
                "holds {size} bytes: not a disk image (an imgforge image is whole 512-byte \
                 sectors, at least {} MiB)",
                MIN_SIZE / MIB
            ),
        ));
    }
    Ok(())
}

/// The table, its partitions and the seed partition, each checked to lie inside `size`.
fn read_table(
    path: &Path,
    f: &mut File,
    size: u64,
    format: Format,
) -> Result<(Table, Vec<ReadPartition>, ReadPartition)> {
    let (table, parts) =
        disk::read(f).map_err(|e| bad(path, format!("not an imgforge image: {e:#}")))?;
    if let Table::Gpt { backup_lba, .. } = table {
        let end = (backup_lba + 1) * SECTOR;
        if end > size {
            return Err(bad(
                path,
                format!(
                    "truncated: its GPT says the disk has {end} bytes (backup header in sector \
                     {backup_lba}), but the image has {size}"
                ),
            ));
        }
        // A raw image may have been enlarged (the root grows into the room on first boot);
        // an .img.xz is exactly what was built.
        if format == Format::Xz && end != size {
            return Err(bad(
                path,
                format!(
                    "its xz index says the image has {size} bytes, but its GPT says {end}: \
                     not the image this .xz was made from"
                ),
            ));
        }
    }
    for p in &parts {
        if p.offset + p.len > size {
            return Err(bad(
                path,
                format!(
                    "truncated: partition {} ({}) ends at byte {}, beyond the image's {size} bytes",
                    p.number,
                    if p.name.is_empty() {
                        "unnamed"
                    } else {
                        &p.name
                    },
                    p.offset + p.len
                ),
            ));
        }
    }
    let Some(seed) = parts
        .iter()
        .find(|p| p.name == seed_area::PART_NAME)
        .cloned()
    else {
        return Err(bad(
            path,
            format!(
                "not an imgforge image: no `{}` partition (it has {})",
                seed_area::PART_NAME,
                if parts.is_empty() {
                    "none".to_string()
                } else {
                    parts
                        .iter()
                        .map(|p| format!("{} `{}`", p.number, p.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        ));
    };
    if seed.len < seed_area::SIZE {
        return Err(bad(
            path,
            format!(
                "not an imgforge image: its `{}` partition has {} bytes, less than a seed \
                 area's {}",
                seed_area::PART_NAME,
                seed.len,
                seed_area::SIZE
            ),
        ));
    }
    Ok((table, parts, seed))
}

#[allow(clippy::too_many_arguments)]
fn finish(
    path: &Path,
    format: Format,
    size: u64,
    head: File,
    head_len: u64,
    table: Table,
    parts: Vec<ReadPartition>,
    seed: ReadPartition,
) -> Result<Image> {
    let mut area = vec![0u8; seed_area::SIZE as usize];
    head.read_exact_at(&mut area, seed.offset)
        .map_err(|e| bad(path, format!("reading the seed area: {e}")))?;
    let seed_state = seed_area::parse(&area).map_err(|e| {
        bad(
            path,
            format!(
                "the seed area (partition {}) is not one imgforge wrote: {e:#}",
                seed.number
            ),
        )
    })?;
    Ok(Image {
        path: path.to_path_buf(),
        format,
        size,
        table,
        parts,
        seed,
        seed_state,
        head,
        head_len,
    })
}

/// An .img.xz decoded forward into a sparse temporary file of the image's size.
struct XzHead {
    path: PathBuf,
    dec: liblzma::read::XzDecoder<File>,
    pos: u64,
    file: File,
}

impl XzHead {
    fn new(path: &Path, size: u64) -> Result<Self> {
        let dec = xz::decoder(path).map_err(|e| bad(path, format!("{e:#}")))?;
        let file = tempfile::tempfile().map_err(|e| bad(path, format!("a temporary file: {e}")))?;
        file.set_len(size)
            .map_err(|e| bad(path, format!("a temporary file: {e}")))?;
        Ok(XzHead {
            path: path.to_path_buf(),
            dec,
            pos: 0,
            file,
        })
    }

    /// Decodes on to byte `end`, writing what is decoded into the file when `keep` (all-zero
    /// chunks are left as holes), else dropping it.
    fn decode_to(&mut self, end: u64, keep: bool) -> Result<()> {
        let mut buf = vec![0u8; MIB as usize];
        while self.pos < end {
            crate::interrupt::check()?;
            let want = (end - self.pos).min(MIB) as usize;
            let n = read_full(&mut self.dec, &mut buf[..want]).map_err(|e| {
                bad(
                    &self.path,
                    format!(
                        "the xz data is damaged (decoding near byte {}): {e}",
                        self.pos
                    ),
                )
            })?;
            if n == 0 {
                return Err(bad(
                    &self.path,
                    format!(
                        "the xz data ends after {} bytes, short of what its index says",
                        self.pos
                    ),
                ));
            }
            if keep && buf[..n].iter().any(|b| *b != 0) {
                self.file
                    .write_all_at(&buf[..n], self.pos)
                    .map_err(|e| bad(&self.path, format!("a temporary file: {e}")))?;
            }
            self.pos += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::ids::Ids;
    use crate::disk::layout::plan;

    /// A small image of ours: GPT or MBR, an empty seed area with one slot.
    pub(crate) fn small_image(path: &Path, mbr: bool) -> u64 {
        let table = if mbr {
            crate::profile::machine::PartitionTable::Mbr
        } else {
            crate::profile::machine::PartitionTable::Gpt
        };
        let layout = plan(table, 1, seed_area::SIZE, MIB, MIB);
        let mut f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .unwrap();
        f.set_len(layout.total).unwrap();
        if mbr {
            crate::disk::mbr::write(&mut f, &layout, 0x1234_5678).unwrap();
        } else {
            let root = crate::disk::gpt::root_type("amd64").unwrap();
            crate::disk::gpt::write(&mut f, &layout, &Ids::derive("t"), root, "1").unwrap();
        }
        let slot = seed_area::Slot {
            name: "s".into(),
            description: "d".into(),
            service: "svc".into(),
            required: true,
            generate: false,
            kind: Default::default(),
        };
        f.write_all_at(
            &seed_area::initial_area(&[slot]).unwrap(),
            layout.seed.offset,
        )
        .unwrap();
        layout.total
    }

    fn err(path: &Path) -> String {
        match Image::open(path, Depth::SeedArea) {
            Ok(_) => panic!("{} accepted", path.display()),
            Err(e) => {
                assert!(e.is::<UserError>(), "a user error: {e:#}");
                e.to_string()
            }
        }
    }

    #[test]
    fn our_images_open_and_others_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for mbr in [false, true] {
            let p = dir.path().join(format!("ok-{mbr}.img"));
            let size = small_image(&p, mbr);
            let img = Image::open(&p, Depth::SeedArea).unwrap();
            assert_eq!((img.size, img.format), (size, Format::Raw));
            assert_eq!(img.seed_state.slots[0].name, "s");
            assert!(img.seed_state.secrets.is_none());

            let cut = dir.path().join(format!("cut-{mbr}.img"));
            std::fs::write(
                &cut,
                &std::fs::read(&p).unwrap()[..(size - 2 * MIB) as usize],
            )
            .unwrap();
            let e = err(&cut);
            assert!(
                e.starts_with(&format!("{}: truncated: ", cut.display())),
                "{e}"
            );
        }
        let empty = dir.path().join("empty.img");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(
            err(&empty),
            format!("{}: is empty: not a disk image", empty.display())
        );
        let six = dir.path().join("six.img");
        std::fs::write(&six, b"abcdef").unwrap();
        assert!(err(&six).starts_with(&format!(
            "{}: holds 6 bytes: not a disk image",
            six.display()
        )));
        let zeros = dir.path().join("zeros.img");
        std::fs::write(&zeros, vec![0u8; 4 << 20]).unwrap();
        assert!(err(&zeros).starts_with(&format!(
            "{}: not an imgforge image: no partition table",
            zeros.display()
        )));
        let fake = dir.path().join("fake.img.xz");
        std::fs::write(&fake, vec![1u8; 4 << 20]).unwrap();
        assert!(err(&fake).contains("is named .xz but is not an xz file"));
        let missing = dir.path().join("missing.img");
        assert!(err(&missing).starts_with(&format!("opening {}: No such file", missing.display())));
    }

    #[test]
    fn an_xz_image_is_read_from_its_index_and_head() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("a.img");
        let size = small_image(&raw, false);
        let packed = dir.path().join("a.img.xz");
        xz::compress(&raw, &packed).unwrap();
        let img = Image::open(&packed, Depth::RootSuperblock).unwrap();
        assert_eq!((img.size, img.format), (size, Format::Xz));
        assert_eq!(img.seed_state.slots[0].name, "s");

        // Cut short: no index at the end.
        let whole = std::fs::read(&packed).unwrap();
        let cut = dir.path().join("cut.img.xz");
        std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
        assert!(err(&cut).starts_with(&format!("{}: no xz index at its end", cut.display())));
    }
}
