//! Identifiers written into an image (partition GUIDs, filesystem UUIDs, the FAT volume id),
//! derived from the build's input hash: the same inputs give the same image, bit for bit,
//! and different inputs give different identifiers.
//!
//! A leaf: it imports nothing from the rest of the crate, so the partition tables (`gpt`,
//! `mbr`), the seed area and the stages can all use it without a cycle.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A fixed namespace for imgforge's name-based (v5) UUIDs.
const NAMESPACE: Uuid = Uuid::from_u128(0x5f0d_2a8e_7c41_4b4e_9a57_1d2c_3e4f_6a7b);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ids {
    pub disk_guid: Uuid,
    pub esp_partuuid: Uuid,
    pub seed_partuuid: Uuid,
    /// Root slot A's partition (the slot the image boots first).
    pub root_partuuid: Uuid,
    pub root_fs_uuid: Uuid,
    pub root_hash_seed: Uuid,
    /// Root slot B's partition, empty until an update writes it.
    #[serde(default)]
    pub root_b_partuuid: Uuid,
    /// The data partition (mounted at /var) and its filesystem.
    #[serde(default)]
    pub data_partuuid: Uuid,
    #[serde(default)]
    pub data_fs_uuid: Uuid,
    #[serde(default)]
    pub data_hash_seed: Uuid,
    pub fat_volume_id: u32,
    /// The disk signature of an MBR (Raspberry Pi cards); never zero. Not of one build but
    /// of the card (`card_signature`): a card keeps the signature it was flashed with while
    /// updates replace its slots, so every version must name its partitions
    /// (`by-partuuid/SSSSSSSS-05`, the seed area) by the same signature.
    #[serde(default)]
    pub mbr_signature: u32,
}

/// The partitions every imgforge disk has, in the order they lie on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Boot,
    Seed,
    /// Root slot A, which the built image boots.
    RootA,
    /// Root slot B.
    RootB,
    /// All state, mounted at /var.
    Data,
}

impl Part {
    /// The partition's number under `table` (`gpt` or `mbr`), as Linux numbers it. A GPT
    /// numbers them in disk order. A card's MBR has the firmware's A/B boot partitions as
    /// primaries (1: autoboot.txt alone, 2: slot A's boot files, 3: slot B's), the extended
    /// partition as 4, and in it the seed area, both root slots and the data partition as
    /// logical partitions 5 to 8 (see `disk::mbr`). `Part::Boot` is slot A's boot partition.
    pub fn number(self, table: &str) -> u32 {
        use seed_area::card::{CardSlot, DATA_PARTITION, SEED_PARTITION};
        match (table, self) {
            ("mbr", Part::Boot) => CardSlot::A.boot_partition(),
            ("mbr", Part::Seed) => SEED_PARTITION,
            ("mbr", Part::RootA) => CardSlot::A.root_partition(),
            ("mbr", Part::RootB) => CardSlot::B.root_partition(),
            ("mbr", Part::Data) => DATA_PARTITION,
            (_, Part::Boot) => 1,
            (_, Part::Seed) => 2,
            (_, Part::RootA) => 3,
            (_, Part::RootB) => 4,
            (_, Part::Data) => 5,
        }
    }
}

/// On a card's MBR: the small FAT that holds only autoboot.txt (`seed_area::card`).
pub const MBR_AUTOBOOT: u32 = seed_area::card::AUTOBOOT_PARTITION;
/// On a card's MBR: slot B's boot partition (slot A's is `Part::Boot`).
pub const MBR_BOOT_B: u32 = seed_area::card::CardSlot::B.boot_partition();
/// The number of the extended partition on an MBR disk.
pub const MBR_EXTENDED: u32 = seed_area::card::EXTENDED_PARTITION;

/// The MBR signature of every card of `disk` (a string naming the site, host and target):
/// the same for each version a card takes, other for other hosts.
pub fn card_signature(disk: &str) -> u32 {
    let sig = Uuid::new_v5(&NAMESPACE, format!("{disk}/mbr-signature").as_bytes());
    u32::from_le_bytes(sig.as_bytes()[..4].try_into().expect("4 bytes")).max(1)
}

impl Ids {
    pub fn derive(seed: &str) -> Self {
        let id = |what: &str| Uuid::new_v5(&NAMESPACE, format!("{seed}/{what}").as_bytes());
        let vol = id("fat-volume-id");
        let sig = id("mbr-signature");
        Ids {
            disk_guid: id("disk"),
            esp_partuuid: id("esp-partition"),
            seed_partuuid: id("seed-partition"),
            root_partuuid: id("root-partition"),
            root_fs_uuid: id("root-filesystem"),
            root_hash_seed: id("root-hash-seed"),
            root_b_partuuid: id("root-b-partition"),
            data_partuuid: id("data-partition"),
            data_fs_uuid: id("data-filesystem"),
            data_hash_seed: id("data-hash-seed"),
            fat_volume_id: u32::from_le_bytes(vol.as_bytes()[..4].try_into().expect("4 bytes")),
            mbr_signature: u32::from_le_bytes(sig.as_bytes()[..4].try_into().expect("4 bytes"))
                .max(1),
        }
    }

    /// The PARTUUID Linux shows for `part` under the given partition table (`gpt` or `mbr`).
    pub fn partuuid(&self, table: &str, part: Part) -> String {
        if table == "mbr" {
            return mbr_partuuid(self.mbr_signature, part.number(table));
        }
        match part {
            Part::Boot => self.esp_partuuid,
            Part::Seed => self.seed_partuuid,
            Part::RootA => self.root_partuuid,
            Part::RootB => self.root_b_partuuid,
            Part::Data => self.data_partuuid,
        }
        .to_string()
    }

    /// The device node udev makes for the seed area: by its GPT name, or on an MBR (which has
    /// no names) by its PARTUUID.
    pub fn seed_device(&self, table: &str) -> String {
        if table == "mbr" {
            format!("/dev/disk/by-partuuid/{}", self.partuuid(table, Part::Seed))
        } else {
            format!("/dev/disk/by-partlabel/{}", seed_area::PART_NAME)
        }
    }

    /// The FAT volume id as Linux shows it in /dev/disk/by-uuid: `ABCD-EF01`.
    pub fn fat_uuid(&self) -> String {
        let v = self.fat_volume_id;
        format!("{:04X}-{:04X}", v >> 16, v & 0xffff)
    }
}

/// The PARTUUID Linux shows for partition `number` of an MBR disk with `signature`
/// (`SSSSSSSS-NN`: an MBR has no partition GUIDs).
pub fn mbr_partuuid(signature: u32, number: u32) -> String {
    format!("{signature:08x}-{number:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_ids_other_seed_other_ids() {
        assert_eq!(Ids::derive("a"), Ids::derive("a"));
        let (a, b) = (Ids::derive("a"), Ids::derive("b"));
        assert_ne!(a.root_partuuid, b.root_partuuid);
        assert_ne!(a.fat_volume_id, b.fat_volume_id);
        assert_ne!(a.root_partuuid, a.esp_partuuid);
        assert_eq!(
            Ids {
                fat_volume_id: 0x1234_abcd,
                ..a
            }
            .fat_uuid(),
            "1234-ABCD"
        );
    }

    #[test]
    fn a_cards_signature_is_its_hosts_not_its_builds() {
        let a = card_signature("example/edge/rpi4");
        assert_eq!(a, card_signature("example/edge/rpi4"));
        assert_ne!(a, card_signature("example/portal/rpi4"));
        assert_ne!(a, 0);
    }

    #[test]
    fn partuuids_follow_the_partition_table() {
        let ids = Ids::derive("a");
        assert_eq!(
            ids.partuuid("gpt", Part::RootA),
            ids.root_partuuid.to_string()
        );
        assert_eq!(
            ids.partuuid("gpt", Part::Data),
            ids.data_partuuid.to_string()
        );
        assert_ne!(ids.root_b_partuuid, ids.root_partuuid);
        let mbr = ids.partuuid("mbr", Part::RootA);
        assert_eq!(mbr, format!("{:08x}-06", ids.mbr_signature));
        assert_eq!(
            ids.partuuid("mbr", Part::Data),
            format!("{:08x}-08", ids.mbr_signature)
        );
        assert_eq!(
            ids.partuuid("mbr", Part::Boot),
            format!("{:08x}-02", ids.mbr_signature)
        );
        assert_eq!(
            ids.seed_device("mbr"),
            format!("/dev/disk/by-partuuid/{:08x}-05", ids.mbr_signature)
        );
        assert_eq!(
            ids.seed_device("gpt"),
            "/dev/disk/by-partlabel/imgforge-seed"
        );
    }
}
