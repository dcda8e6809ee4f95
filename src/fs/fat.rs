//! The FAT writer: a FAT32 volume written in one pass into a region of the disk file.
//!
//! Why not the `fatfs` crate's writer: its newest release (0.3.6) writes every
//! directory's `.` and `..` entries with long-name records and points
//! `..` at the root's cluster, which `fsck.fat` rejects (the fix is only in its unreleased
//! branch). A fresh volume with known files is a small, fixed job: boot sector, FSInfo and
//! their backups, two FATs, then folders and files in contiguous clusters. `fatfs` stays as
//! the independent reader (`read_file`, `list`), and the tests check our output with it,
//! `fsck.fat` and mtools.
//!
//! Deterministic: fixed volume id and timestamps, entries in the order given, sorted folders.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{bail, Context, Result};
use fatfs::{FileSystem, FsOptions};
use fscommon::{BufStream, StreamSlice};

const SECTOR: u64 = 512;
const RESERVED_SECTORS: u64 = 32;
const FATS: u64 = 2;
/// FAT32 needs at least this many clusters; with fewer, tools take the volume for FAT16.
const MIN_FAT32_CLUSTERS: u64 = 65_525;
const ROOT_CLUSTER: u32 = 2;
const END_OF_CHAIN: u32 = 0x0FFF_FFFF;

/// A file to put on the volume: its path there (`EFI/BOOT/BOOTX64.EFI`) and content.
pub struct FatFile<'a> {
    pub path: String,
    pub content: &'a [u8],
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (DOS date, DOS time) of a Unix time; FAT dates run from 1980 to 2107.
fn dos_datetime(epoch: u64) -> (u16, u16) {
    let (y, m, d) = civil_from_days((epoch / 86_400) as i64);
    let y = y.clamp(1980, 2107) as u16;
    let secs = epoch % 86_400;
    let date = ((y - 1980) << 9) | ((m as u16) << 5) | d as u16;
    let time = (((secs / 3600) as u16) << 11)
        | (((secs / 60 % 60) as u16) << 5)
        | ((secs % 60) / 2) as u16;
    (date, time)
}

/// Volume geometry for `sectors` sectors.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    sectors: u64,
    per_cluster: u64,
    fat_sectors: u64,
    clusters: u64,
}

impl Geometry {
    fn new(sectors: u64) -> Result<Self> {
        // Small ESPs need 512-byte clusters to stay above FAT32's cluster minimum.
        let per_cluster = match sectors {
            s if s < 532_480 => 1,    // < 260 MiB
            s if s < 16_777_216 => 8, // < 8 GiB
            _ => 32,
        };
        let mut fat_sectors = 1;
        loop {
            let data = sectors.saturating_sub(RESERVED_SECTORS + FATS * fat_sectors);
            let clusters = data / per_cluster;
            let need = ((clusters + 2) * 4).div_ceil(SECTOR);
            if need <= fat_sectors {
                if clusters < MIN_FAT32_CLUSTERS {
                    bail!(
                        "a FAT32 volume needs at least 33 MiB; this one has {} MiB",
                        sectors * SECTOR >> 20
                    );
                }
                return Ok(Geometry {
                    sectors,
                    per_cluster,
                    fat_sectors,
                    clusters,
                });
            }
            fat_sectors = need;
        }
    }
    fn cluster_bytes(&self) -> u64 {
        self.per_cluster * SECTOR
    }
    fn data_start(&self) -> u64 {
        (RESERVED_SECTORS + FATS * self.fat_sectors) * SECTOR
    }
    fn cluster_offset(&self, c: u32) -> u64 {
        self.data_start() + (u64::from(c) - 2) * self.cluster_bytes()
    }
}

/// A folder being laid out: its children by name, in insertion order of first appearance.
#[derive(Default)]
struct DirNode {
    dirs: BTreeMap<String, DirNode>,
    files: Vec<(String, usize)>,
    cluster: u32,
    clusters: u32,
}

/// A short (8.3) name usable as is: upper case, valid characters, no long name needed.
fn plain_short_name(name: &str) -> Option<[u8; 11]> {
    let (base, ext) = match name.rsplit_once('.') {
        Some((b, e)) => (b, e),
        None => (name, ""),
    };
    let ok = |s: &str, max: usize| {
        !s.is_empty() || max == 3
    } && s.len() <= max
        && s.bytes().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || b"!#$%&'()-@^_`{}~".contains(&c));
    if base.is_empty() || !ok(base, 8) || !ok(ext, 3) || (name.contains('.') && ext.is_empty()) {
        return None;
    }
    let mut out = [b' '; 11];
    out[..base.len()].copy_from_slice(base.as_bytes());
    out[8..8 + ext.len()].copy_from_slice(ext.as_bytes());
    Some(out)
}

/// The short alias of a long name: `BASIS~N.EXT`, unique within its folder.
fn short_alias(name: &str, taken: &mut Vec<[u8; 11]>) -> [u8; 11] {
    let clean = |s: &str| -> Vec<u8> {
        s.bytes()
            .filter(|c| *c != b' ' && *c != b'.')
            .map(|c| {
                let c = c.to_ascii_uppercase();
                if c.is_ascii_uppercase() || c.is_ascii_digit() || b"!#$%&'()-@^_`{}~".contains(&c)
                {
                    c
                } else {
                    b'_'
                }
            })
            .collect()
    };
    let (base, ext) = match name.rsplit_once('.') {
        Some((b, e)) if !b.is_empty() => (clean(b), clean(e)),
        _ => (clean(name), Vec::new()),
    };
    for n in 1..1_000_000u32 {
        let tail = format!("~{n}");
        let keep = (8 - tail.len()).min(base.len());
        let mut out = [b' '; 11];
        out[..keep].copy_from_slice(&base[..keep]);
        out[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
        let e = ext.len().min(3);
        out[8..8 + e].copy_from_slice(&ext[..e]);
        if !taken.contains(&out) {
            taken.push(out);
            return out;
        }
    }
    unreachable!("a folder holds fewer than a million names")
}

fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &c| (sum >> 1 | sum << 7).wrapping_add(c))
}

/// The 32-byte records of one folder entry: long-name records (if needed), then the short one.
fn entry_records(
    name: &str,
    taken: &mut Vec<[u8; 11]>,
    attr: u8,
    cluster: u32,
    size: u32,
    when: (u16, u16),
) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    let short = match plain_short_name(name) {
        Some(s) if !taken.contains(&s) => {
            taken.push(s);
            s
        }
        _ => {
            // A lower-case name that fits 8.3 gets its upper-case self as the short name, not
            // an alias: `config.txt` is CONFIG.TXT plus the long name, as Linux's vfat writes
            // it, so firmware that matches only short names (the Pi's bootloader looking
            // for autoboot.txt and start4.elf) finds it.
            let short = match plain_short_name(&name.to_ascii_uppercase()) {
                Some(s) if !taken.contains(&s) => {
                    taken.push(s);
                    s
                }
                _ => short_alias(name, taken),
            };
            let units: Vec<u16> = name.encode_utf16().collect();
            let pieces = units.len().div_ceil(13);
            let sum = lfn_checksum(&short);
            // Long-name records come last piece first, the first of them flagged 0x40.
            for i in (0..pieces).rev() {
                let mut r = [0u8; 32];
                r[0] = (i as u8 + 1) | if i == pieces - 1 { 0x40 } else { 0 };
                r[11] = 0x0F;
                r[13] = sum;
                let slots = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
                for (k, off) in slots.iter().enumerate() {
                    let idx = i * 13 + k;
                    let u = match idx.cmp(&units.len()) {
                        std::cmp::Ordering::Less => units[idx],
                        std::cmp::Ordering::Equal => 0x0000,
                        std::cmp::Ordering::Greater => 0xFFFF,
                    };
                    r[*off..off + 2].copy_from_slice(&u.to_le_bytes());
                }
                out.push(r);
            }
            short
        }
    };
    out.push(short_record(&short, attr, cluster, size, when));
    out
}

fn short_record(
    name: &[u8; 11],
    attr: u8,
    cluster: u32,
    size: u32,
    (date, time): (u16, u16),
) -> [u8; 32] {
    let mut r = [0u8; 32];
    r[..11].copy_from_slice(name);
    r[11] = attr;
    r[14..16].copy_from_slice(&time.to_le_bytes());
    r[16..18].copy_from_slice(&date.to_le_bytes());
    r[18..20].copy_from_slice(&date.to_le_bytes());
    r[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
    r[22..24].copy_from_slice(&time.to_le_bytes());
    r[24..26].copy_from_slice(&date.to_le_bytes());
    r[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
    r[28..32].copy_from_slice(&size.to_le_bytes());
    r
}

const ATTR_DIR: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_VOLUME: u8 = 0x08;

/// Records of a folder's entries; the folder's own and its children's clusters must be set.
fn dir_records(
    dir: &DirNode,
    parent_cluster: u32,
    is_root: bool,
    label: &[u8; 11],
    file_clusters: &[u32],
    files: &[FatFile],
    when: (u16, u16),
) -> Vec<[u8; 32]> {
    let mut recs = Vec::new();
    let mut taken = Vec::new();
    if is_root {
        recs.push(short_record(label, ATTR_VOLUME, 0, 0, when));
    } else {
        recs.push(short_record(b".          ", ATTR_DIR, dir.cluster, 0, when));
        // ".." of a folder in the root names cluster 0, not the root's cluster (FAT spec).
        recs.push(short_record(
            b"..         ",
            ATTR_DIR,
            parent_cluster,
            0,
            when,
        ));
    }
    for (name, sub) in &dir.dirs {
        recs.extend(entry_records(
            name,
            &mut taken,
            ATTR_DIR,
            sub.cluster,
            0,
            when,
        ));
    }
    for (name, idx) in &dir.files {
        recs.extend(entry_records(
            name,
            &mut taken,
            ATTR_ARCHIVE,
            file_clusters[*idx],
            files[*idx].content.len() as u32,
            when,
        ));
    }
    recs
}

fn count_records(dir: &DirNode, is_root: bool) -> u64 {
    let mut taken = Vec::new();
    let mut n = if is_root { 1 } else { 2 };
    let names = dir
        .dirs
        .keys()
        .map(String::as_str)
        .chain(dir.files.iter().map(|(n, _)| n.as_str()));
    for name in names {
        n += entry_records(name, &mut taken, 0, 0, 0, (0, 0)).len() as u64;
    }
    n
}

/// Formats `len` bytes at `offset` of `disk` as FAT32 holding `files`.
pub fn write_volume(
    disk: &mut File,
    offset: u64,
    len: u64,
    volume_id: u32,
    label: &str,
    epoch: u64,
    files: &[FatFile],
) -> Result<()> {
    let g = Geometry::new(len / SECTOR)?;
    let when = dos_datetime(epoch);
    let mut label_bytes = [b' '; 11];
    for (dst, src) in label_bytes.iter_mut().zip(label.bytes()) {
        *dst = src.to_ascii_uppercase();
    }

    // The tree of folders; files keep their index into `files`.
    let mut root = DirNode::default();
    for (i, f) in files.iter().enumerate() {
        let parts: Vec<&str> = f.path.split('/').collect();
        let (name, dirs) = parts.split_last().expect("split yields one part");
        if name.is_empty() || dirs.iter().any(|d| d.is_empty()) || name.len() > 255 {
            bail!("`{}` is not a valid path on a FAT volume", f.path);
        }
        let mut node = &mut root;
        for d in dirs {
            node = node.dirs.entry(d.to_string()).or_default();
        }
        if node.files.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
            || node.dirs.keys().any(|d| d.eq_ignore_ascii_case(name))
        {
            bail!(
                "`{}` is on the FAT volume twice (names are case-insensitive)",
                f.path
            );
        }
        node.files.push((name.to_string(), i));
    }

    // Clusters: folders first (root at 2, then depth-first by name), then files in order.
    let cb = g.cluster_bytes();
    let mut next = ROOT_CLUSTER;
    fn place_dirs(d: &mut DirNode, is_root: bool, next: &mut u32, cb: u64) {
        d.cluster = *next;
        d.clusters = (count_records(d, is_root) * 32).div_ceil(cb).max(1) as u32;
        *next += d.clusters;
        for sub in d.dirs.values_mut() {
            place_dirs(sub, false, next, cb);
        }
    }
    place_dirs(&mut root, true, &mut next, cb);
    let mut file_clusters = vec![0u32; files.len()];
    let mut chains: Vec<(u32, u32)> = Vec::new();
    fn dir_chains(d: &DirNode, out: &mut Vec<(u32, u32)>) {
        out.push((d.cluster, d.clusters));
        for sub in d.dirs.values() {
            dir_chains(sub, out);
        }
    }
    dir_chains(&root, &mut chains);
    for (i, f) in files.iter().enumerate() {
        let n = (f.content.len() as u64).div_ceil(cb) as u32;
        if n > 0 {
            file_clusters[i] = next;
            chains.push((next, n));
            next += n;
        }
    }
    let used = u64::from(next - ROOT_CLUSTER);
    if used > g.clusters {
        bail!(
            "the files need {} MiB but the FAT volume holds {} MiB",
            used * cb >> 20,
            g.clusters * cb >> 20
        );
    }

    let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut *disk);
    let at =
        |w: &mut std::io::BufWriter<&mut File>, pos: u64| w.seek(SeekFrom::Start(offset + pos));

    // Boot sector, FSInfo, and their backups at sectors 6 and 7.
    let boot = boot_sector(&g, volume_id, &label_bytes, offset / SECTOR);
    let info = fsinfo(g.clusters - used, u64::from(next));
    for base in [0, 6] {
        at(&mut w, base * SECTOR)?;
        w.write_all(&boot)?;
        w.write_all(&info)?;
    }
    // Both FATs.
    let mut fat = vec![0u8; (g.fat_sectors * SECTOR) as usize];
    let mut set =
        |c: u32, v: u32| fat[c as usize * 4..c as usize * 4 + 4].copy_from_slice(&v.to_le_bytes());
    set(0, 0x0FFF_FFF8);
    set(1, END_OF_CHAIN);
    for (start, n) in &chains {
        for c in *start..start + n {
            set(
                c,
                if c + 1 == start + n {
                    END_OF_CHAIN
                } else {
                    c + 1
                },
            );
        }
    }
    for i in 0..FATS {
        at(&mut w, (RESERVED_SECTORS + i * g.fat_sectors) * SECTOR)?;
        w.write_all(&fat)?;
    }
    // Folders, then files.
    fn write_dirs(
        w: &mut std::io::BufWriter<&mut File>,
        d: &DirNode,
        parent: u32,
        is_root: bool,
        ctx: (&Geometry, u64, &[u8; 11], &[u32], &[FatFile], (u16, u16)),
    ) -> std::io::Result<()> {
        let (g, offset, label, fc, files, when) = ctx;
        let recs = dir_records(d, parent, is_root, label, fc, files, when);
        let mut bytes: Vec<u8> = recs.concat();
        bytes.resize((u64::from(d.clusters) * g.cluster_bytes()) as usize, 0);
        w.seek(SeekFrom::Start(offset + g.cluster_offset(d.cluster)))?;
        w.write_all(&bytes)?;
        for sub in d.dirs.values() {
            write_dirs(w, sub, if is_root { 0 } else { d.cluster }, false, ctx)?;
        }
        Ok(())
    }
    write_dirs(
        &mut w,
        &root,
        0,
        true,
        (&g, offset, &label_bytes, &file_clusters, files, when),
    )?;
    for (i, f) in files.iter().enumerate() {
        if !f.content.is_empty() {
            at(&mut w, g.cluster_offset(file_clusters[i]))?;
            w.write_all(f.content)
                .with_context(|| format!("writing {} to the FAT volume", f.path))?;
        }
    }
    w.flush().context("writing the FAT volume")?;
    Ok(())
}

fn boot_sector(g: &Geometry, volume_id: u32, label: &[u8; 11], hidden: u64) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
    b[3..11].copy_from_slice(b"IMGFORGE");
    b[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    b[13] = g.per_cluster as u8;
    b[14..16].copy_from_slice(&(RESERVED_SECTORS as u16).to_le_bytes());
    b[16] = FATS as u8;
    b[21] = 0xF8; // fixed disk
    b[24..26].copy_from_slice(&32u16.to_le_bytes()); // sectors per track (CHS, unused)
    b[26..28].copy_from_slice(&64u16.to_le_bytes()); // heads (CHS, unused)
    b[28..32].copy_from_slice(&(hidden as u32).to_le_bytes());
    b[32..36].copy_from_slice(&(g.sectors as u32).to_le_bytes());
    b[36..40].copy_from_slice(&(g.fat_sectors as u32).to_le_bytes());
    b[44..48].copy_from_slice(&ROOT_CLUSTER.to_le_bytes());
    b[48..50].copy_from_slice(&1u16.to_le_bytes()); // FSInfo sector
    b[50..52].copy_from_slice(&6u16.to_le_bytes()); // backup boot sector
    b[64] = 0x80;
    b[66] = 0x29;
    b[67..71].copy_from_slice(&volume_id.to_le_bytes());
    b[71..82].copy_from_slice(label);
    b[82..90].copy_from_slice(b"FAT32   ");
    b[510] = 0x55;
    b[511] = 0xAA;
    b
}

fn fsinfo(free: u64, next_free: u64) -> [u8; 512] {
    let mut s = [0u8; 512];
    s[..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    s[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    s[488..492].copy_from_slice(&(free as u32).to_le_bytes());
    s[492..496].copy_from_slice(&(next_free as u32).to_le_bytes());
    s[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes());
    s
}

/// Reads a file from the FAT volume at `offset` (used by `inspect` and the tests).
pub fn read_file(disk: &mut File, offset: u64, len: u64, path: &str) -> Result<Vec<u8>> {
    let slice = StreamSlice::new(&mut *disk, offset, offset + len)?;
    let fs = FileSystem::new(BufStream::new(slice), FsOptions::new())
        .context("opening the FAT volume")?;
    let mut f = fs
        .root_dir()
        .open_file(path)
        .with_context(|| format!("opening {path} on the FAT volume"))?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    Ok(data)
}

/// Volume id, label and the files (paths) on the FAT volume at `offset`.
pub fn list(disk: &mut File, offset: u64, len: u64) -> Result<(u32, String, Vec<(String, u64)>)> {
    let slice = StreamSlice::new(&mut *disk, offset, offset + len)?;
    let fs = FileSystem::new(BufStream::new(slice), FsOptions::new())
        .context("opening the FAT volume")?;
    let mut files = Vec::new();
    walk(&fs.root_dir(), "", &mut files)?;
    Ok((
        fs.volume_id(),
        fs.volume_label().trim_end().to_string(),
        files,
    ))
}

fn walk<T: fatfs::ReadWriteSeek>(
    dir: &fatfs::Dir<T>,
    prefix: &str,
    out: &mut Vec<(String, u64)>,
) -> Result<()> {
    for e in dir.iter() {
        let e = e?;
        let name = e.file_name();
        if name == "." || name == ".." {
            continue;
        }
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if e.is_dir() {
            walk(&e.to_dir(), &path, out)?;
        } else {
            out.push((path, e.len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const MIB: u64 = 1024 * 1024;

    fn volume(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        let mut f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        f.set_len(66 * MIB).unwrap();
        let big = vec![0xa5u8; 3 * 1024 * 1024 + 17];
        let files = [
            FatFile {
                path: "EFI/BOOT/BOOTX64.EFI".into(),
                content: b"MZ-efi",
            },
            FatFile {
                path: "loader/entries/imgforge.conf".into(),
                content: b"title x\n",
            },
            FatFile {
                path: "imgforge/vmlinuz".into(),
                content: &big,
            },
        ];
        write_volume(
            &mut f,
            MIB,
            64 * MIB,
            0x1234_5678,
            "esp",
            1_735_689_600,
            &files,
        )
        .unwrap();
        path
    }

    #[test]
    fn fsck_fat_and_mtools_accept_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        let disk = volume(dir.path(), "d.img");
        // Check the partition on its own, as a firmware or fsck sees it.
        let part = dir.path().join("esp.img");
        let data = std::fs::read(&disk).unwrap();
        std::fs::write(&part, &data[MIB as usize..(65 * MIB) as usize]).unwrap();
        let out = Command::new("fsck.fat")
            .arg("-n")
            .arg(&part)
            .output()
            .expect("fsck.fat (package dosfstools)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "fsck.fat -n: {text}");
        // fsck.fat counts folders too: 5 folders, 3 files, and the root.
        assert!(text.contains(": 9 files,"), "{text}");
        assert!(
            text.lines().count() == 2,
            "fsck.fat found something to repair: {text}"
        );
        let out = Command::new("mdir")
            .args(["-i", part.to_str().unwrap(), "-/", "::"])
            .output()
            .expect("mdir (package mtools)");
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{listing}");
        assert!(
            listing.contains("BOOTX64  EFI") && listing.contains(" imgforge.conf\n"),
            "{listing}"
        );
        // mtools shows the short name first: vmlinuz's is VMLINUZ, not an alias.
        assert!(
            listing.contains("VMLINUZ ") && !listing.contains("VMLINU~"),
            "{listing}"
        );
        assert!(listing.contains("1234-5678"), "volume id: {listing}");

        let mut f = File::open(&disk).unwrap();
        let back = read_file(&mut f, MIB, 64 * MIB, "imgforge/vmlinuz").unwrap();
        assert_eq!(back.len(), 3 * 1024 * 1024 + 17);
        let (id, label, files) = list(&mut f, MIB, 64 * MIB).unwrap();
        assert_eq!((id, label.as_str()), (0x1234_5678, "ESP"));
        assert_eq!(files.len(), 3);
    }

    #[test]
    fn short_and_long_names() {
        assert_eq!(&plain_short_name("BOOTX64.EFI").unwrap(), b"BOOTX64 EFI");
        assert!(
            plain_short_name("loader.conf").is_none(),
            "lower case needs a long name"
        );
        let mut taken = Vec::new();
        assert_eq!(&short_alias("imgforge.conf", &mut taken), b"IMGFOR~1CON");
        assert_eq!(&short_alias("imgforge.conf2", &mut taken), b"IMGFOR~2CON");
        let recs = entry_records("initrd.img", &mut taken, ATTR_ARCHIVE, 5, 1, (0, 0));
        assert_eq!(recs.len(), 2, "one long-name record, one short");
        assert_eq!(recs[0][0], 0x41);
        // A lower-case 8.3 name keeps itself, upper-cased, as the short name (no ~1 alias),
        // as Linux's vfat writes it; a second file with the same upper-case name gets an
        // alias.
        assert_eq!(&recs[1][..11], b"INITRD  IMG");
        let recs = entry_records("autoboot.txt", &mut taken, ATTR_ARCHIVE, 6, 1, (0, 0));
        assert_eq!(&recs[1][..11], b"AUTOBOOTTXT");
        let recs = entry_records("AutoBoot.txt", &mut taken, ATTR_ARCHIVE, 7, 1, (0, 0));
        assert_eq!(&recs[1][..11], b"AUTOBO~1TXT");
    }

    #[test]
    fn too_small_or_too_full_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = File::create(dir.path().join("x")).unwrap();
        assert!(write_volume(&mut f, 0, 16 * MIB, 1, "x", 0, &[]).is_err());
        let big = vec![1u8; 70 * MIB as usize];
        let err = write_volume(
            &mut f,
            0,
            64 * MIB,
            1,
            "x",
            0,
            &[FatFile {
                path: "big".into(),
                content: &big,
            }],
        )
        .unwrap_err();
        assert!(err.to_string().contains("the files need"), "{err}");
    }

    #[test]
    fn same_files_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let a = std::fs::read(volume(dir.path(), "a.img")).unwrap();
        let b = std::fs::read(volume(dir.path(), "b.img")).unwrap();
        assert!(a == b, "two volumes from the same files differ");
    }

    #[test]
    fn epoch_to_dos_date() {
        let (date, time) = dos_datetime(1_735_689_600 + 3662);
        assert_eq!(
            (date >> 9, (date >> 5) & 15, date & 31),
            (45, 1, 1),
            "2025-01-01"
        );
        assert_eq!((time >> 11, (time >> 5) & 63, (time & 31) * 2), (1, 1, 2));
        let (y, m, d) = civil_from_days(19_783); // 2024-03-01, after a leap day
        assert_eq!((y, m, d), (2024, 3, 1));
    }
}
