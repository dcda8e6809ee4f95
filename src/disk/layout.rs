//! Partition placement: 1 MiB aligned, the ESP first, the root after it, room at the end
//! for the backup GPT.

pub const SECTOR: u64 = 512;
pub const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
}

impl Extent {
    pub fn first_lba(&self) -> u64 {
        self.offset / SECTOR
    }
    pub fn last_lba(&self) -> u64 {
        (self.offset + self.len) / SECTOR - 1
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub esp: Extent,
    /// The seed area (secrets given at flash time), between the ESP and the root so the
    /// root stays last and can grow to fill the card.
    pub seed: Extent,
    pub root: Extent,
    pub total: u64,
}

/// Root filesystem size for `data_bytes` of file data (already rounded to blocks) in
/// `entries` tar entries, plus `free_mib` of room: ext4's inode tables (256 bytes per
/// 16 KiB), a 16-64 MiB journal, and 5% reserved blocks come on top of the data.
pub fn root_size(data_bytes: u64, entries: u64, free_mib: u64) -> u64 {
    // One 256-byte inode per entry and a quarter more (fs::ext4::inode_count), and
    // directory blocks and extent trees.
    let metadata = entries * 320 + data_bytes / 16;
    let journal = 64 * MIB;
    let want = data_bytes + metadata + journal + free_mib * MIB;
    // Reserved blocks are 5% of the whole filesystem.
    let with_reserve = want * 100 / 95;
    with_reserve.div_ceil(MIB) * MIB
}

pub fn plan(esp_mib: u64, seed_bytes: u64, root_bytes: u64) -> Layout {
    let esp = Extent {
        offset: MIB,
        len: esp_mib * MIB,
    };
    let seed = Extent {
        offset: esp.offset + esp.len,
        len: seed_bytes.div_ceil(MIB) * MIB,
    };
    let root = Extent {
        offset: seed.offset + seed.len,
        len: root_bytes.div_ceil(MIB) * MIB,
    };
    // 1 MiB at the end holds the backup GPT (33 sectors) and keeps the size MiB-aligned.
    Layout {
        esp,
        seed,
        root,
        total: root.offset + root.len + MIB,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_aligned_and_disjoint() {
        let l = plan(64, MIB, 300 * MIB + 5);
        assert_eq!(l.esp.offset % MIB, 0);
        assert_eq!(l.root.offset % MIB, 0);
        assert_eq!(l.seed.offset, l.esp.offset + l.esp.len);
        assert_eq!(l.root.offset, l.seed.offset + l.seed.len);
        assert_eq!(l.root.len, 301 * MIB);
        assert_eq!(l.total, l.root.offset + l.root.len + MIB);
        assert_eq!(l.esp.first_lba(), 2048);
        assert_eq!(l.esp.last_lba(), 2048 + 64 * 2048 - 1);
    }

    #[test]
    fn root_has_room_beyond_its_data() {
        let data = 260 * MIB;
        let size = root_size(data, 20_000, 256);
        assert!(size > data + 256 * MIB + 64 * MIB, "{size}");
        assert_eq!(size % MIB, 0);
    }
}
