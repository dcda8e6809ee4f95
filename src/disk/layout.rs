//! Partition placement: 1 MiB aligned. The boot partition (ESP or the Pi's FAT) first, the
//! seed area, root slot A, root slot B (the same size: an update writes one slot while the
//! other runs), and the data partition last, so it alone grows to fill the disk at first
//! boot.
//!
//! A Raspberry Pi card (MBR) has the firmware's own A/B in front: a small FAT holding only
//! autoboot.txt (the bootloader reads the first FAT and is sent from there to a slot's boot
//! partition), then slot A's and slot B's boot partitions, the same size. An MBR has four
//! primary entries, so the seed area, both slots and the data partition are logical
//! partitions inside an extended one that reaches the disk's end; each logical is preceded
//! by 1 MiB that holds its extended boot record.

use crate::profile::machine::PartitionTable;

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
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub esp: Extent,
    /// The seed area (secrets given at flash time).
    pub seed: Extent,
    /// The slot the image boots first, holding the built root.
    pub root_a: Extent,
    /// The other slot, empty until the first update writes it.
    pub root_b: Extent,
    /// All state (mounted at /var); last, so it can grow to the disk's end.
    pub data: Extent,
    /// On an MBR, the extended partition around the seed area, both slots and the data
    /// partition.
    pub extended: Option<Extent>,
    /// On a Raspberry Pi card, the firmware's A/B boot partitions besides `esp` (slot A's).
    pub card: Option<CardBoot>,
    pub total: u64,
}

/// A card's boot partitions beyond slot A's (`Layout::esp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardBoot {
    /// The first FAT, holding only autoboot.txt.
    pub autoboot: Extent,
    /// Slot B's boot partition, the size of slot A's.
    pub boot_b: Extent,
}

/// The autoboot partition's size: the smallest FAT32 imgforge writes is 33 MiB (FAT32's
/// cluster minimum at 512-byte clusters); the firmware reads FAT16 too, but one FAT writer
/// serves every boot partition.
pub const AUTOBOOT_MIB: u64 = 40;

impl Layout {
    /// The root slots in order (A, B).
    pub fn slots(&self) -> [Extent; 2] {
        [self.root_a, self.root_b]
    }
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

/// The data partition as built: room for the slot's /var, which the node copies into it at
/// first boot (`imgforge-var.service`), and 256 MiB more; it grows to the disk's end then.
pub fn data_size(var_bytes: u64, var_entries: u64) -> u64 {
    root_size(var_bytes, var_entries, 256)
}

pub fn plan(
    table: PartitionTable,
    esp_mib: u64,
    seed_bytes: u64,
    root_bytes: u64,
    data_bytes: u64,
) -> Layout {
    let mib = |b: u64| b.div_ceil(MIB) * MIB;
    // The 1 MiB before each logical partition of an MBR holds its extended boot record.
    let (ebr, card) = match table {
        PartitionTable::Mbr => {
            let autoboot = Extent {
                offset: MIB,
                len: AUTOBOOT_MIB * MIB,
            };
            let boot_b = Extent {
                offset: autoboot.end() + esp_mib * MIB,
                len: esp_mib * MIB,
            };
            (MIB, Some(CardBoot { autoboot, boot_b }))
        }
        PartitionTable::Gpt => (0, None),
    };
    let esp = Extent {
        offset: card.map_or(MIB, |c| c.autoboot.end()),
        len: esp_mib * MIB,
    };
    let boot_end = card.map_or(esp.end(), |c| c.boot_b.end());
    let seed = Extent {
        offset: boot_end + ebr,
        len: mib(seed_bytes),
    };
    let root_a = Extent {
        offset: seed.end() + ebr,
        len: mib(root_bytes),
    };
    let root_b = Extent {
        offset: root_a.end() + ebr,
        len: root_a.len,
    };
    let data = Extent {
        offset: root_b.end() + ebr,
        len: mib(data_bytes),
    };
    let extended = (ebr > 0).then(|| Extent {
        offset: boot_end,
        len: data.end() - boot_end,
    });
    // 1 MiB at the end holds the backup GPT (33 sectors) and keeps the size MiB-aligned.
    Layout {
        esp,
        seed,
        root_a,
        root_b,
        data,
        extended,
        card,
        total: data.end() + MIB,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_aligned_disjoint_and_the_slots_the_same_size() {
        let l = plan(PartitionTable::Gpt, 64, MIB, 300 * MIB + 5, 100 * MIB);
        for e in [l.esp, l.seed, l.root_a, l.root_b, l.data] {
            assert_eq!(e.offset % MIB, 0, "{e:?}");
            assert_eq!(e.len % MIB, 0, "{e:?}");
        }
        assert_eq!(l.seed.offset, l.esp.end());
        assert_eq!(l.root_a.offset, l.seed.end());
        assert_eq!(l.root_b.offset, l.root_a.end());
        assert_eq!(l.data.offset, l.root_b.end());
        assert_eq!(l.root_a.len, 301 * MIB);
        assert_eq!(l.root_b.len, l.root_a.len);
        assert_eq!(l.total, l.data.end() + MIB);
        assert_eq!(l.extended, None);
        assert_eq!(l.esp.first_lba(), 2048);
        assert_eq!(l.esp.last_lba(), 2048 + 64 * 2048 - 1);
    }

    #[test]
    fn a_card_has_the_firmwares_boot_partitions_then_logicals_to_the_end() {
        let l = plan(PartitionTable::Mbr, 256, MIB, 300 * MIB, 100 * MIB);
        let card = l.card.expect("a card's boot partitions");
        assert_eq!(card.autoboot.offset, MIB);
        assert_eq!(l.esp.offset, card.autoboot.end());
        assert_eq!(card.boot_b.offset, l.esp.end());
        assert_eq!(card.boot_b.len, l.esp.len, "both slots' boot partitions alike");
        let ext = l.extended.expect("an extended partition");
        assert_eq!(ext.offset, card.boot_b.end());
        assert_eq!(l.seed.offset, ext.offset + MIB);
        assert_eq!(l.root_a.offset, l.seed.end() + MIB);
        assert_eq!(l.root_b.offset, l.root_a.end() + MIB);
        assert_eq!(l.data.offset, l.root_b.end() + MIB);
        assert_eq!(ext.end(), l.data.end(), "data is the extended partition's last");
        assert_eq!(l.total, l.data.end() + MIB);
        assert_eq!(plan(PartitionTable::Gpt, 64, MIB, MIB, MIB).card, None);
    }

    #[test]
    fn root_has_room_beyond_its_data() {
        let data = 260 * MIB;
        let size = root_size(data, 20_000, 256);
        assert!(size > data + 256 * MIB + 64 * MIB, "{size}");
        assert_eq!(size % MIB, 0);
    }
}
