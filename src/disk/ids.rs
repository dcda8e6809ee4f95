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
    pub root_partuuid: Uuid,
    pub root_fs_uuid: Uuid,
    pub root_hash_seed: Uuid,
    pub fat_volume_id: u32,
    /// The disk signature of an MBR (Raspberry Pi cards); never zero.
    #[serde(default)]
    pub mbr_signature: u32,
}

/// The three partitions every imgforge disk has, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Boot = 1,
    Seed = 2,
    Root = 3,
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
            fat_volume_id: u32::from_le_bytes(vol.as_bytes()[..4].try_into().expect("4 bytes")),
            mbr_signature: u32::from_le_bytes(sig.as_bytes()[..4].try_into().expect("4 bytes"))
                .max(1),
        }
    }

    /// The PARTUUID Linux shows for `part` under the given partition table (`gpt` or `mbr`).
    pub fn partuuid(&self, table: &str, part: Part) -> String {
        if table == "mbr" {
            return mbr_partuuid(self.mbr_signature, part as u32);
        }
        match part {
            Part::Boot => self.esp_partuuid,
            Part::Seed => self.seed_partuuid,
            Part::Root => self.root_partuuid,
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
    fn partuuids_follow_the_partition_table() {
        let ids = Ids::derive("a");
        assert_eq!(
            ids.partuuid("gpt", Part::Root),
            ids.root_partuuid.to_string()
        );
        let mbr = ids.partuuid("mbr", Part::Root);
        assert_eq!(mbr, format!("{:08x}-03", ids.mbr_signature));
        assert_eq!(
            ids.seed_device("mbr"),
            format!("/dev/disk/by-partuuid/{:08x}-02", ids.mbr_signature)
        );
        assert_eq!(
            ids.seed_device("gpt"),
            "/dev/disk/by-partlabel/imgforge-seed"
        );
    }
}
