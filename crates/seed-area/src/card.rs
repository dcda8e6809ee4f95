//! A Raspberry Pi card's A/B slots: which MBR partitions form each slot, and autoboot.txt,
//! the file with which the Pi's bootloader picks one. imgforge writes the card and its first
//! autoboot.txt; the node's worker reads which slot it runs and rewrites autoboot.txt when
//! a new version becomes ready. One definition for both.
//!
//! The bootloader reads autoboot.txt from the card's first FAT partition (it holds nothing
//! else). `[all] boot_partition=N` is the slot it boots; with `tryboot_a_b=1`, a reboot with
//! the firmware's one-shot tryboot flag set boots the `[tryboot]` partition instead, loading
//! that partition's own config.txt. The flag is cleared before the slot starts, so any reset
//! during the trial (a failed readiness check, the watchdog, a panic) boots `[all]` again.
//! Raspberry Pi's documentation: config_txt/autoboot.adoc.

use anyhow::{bail, Context, Result};

/// The FAT partition that holds only autoboot.txt: the first, where the bootloader looks.
pub const AUTOBOOT_PARTITION: u32 = 1;
/// The file's name on that partition.
pub const AUTOBOOT_FILE: &str = "autoboot.txt";
/// The extended partition around the seed area, the root slots and the data partition.
pub const EXTENDED_PARTITION: u32 = 4;
/// The seed area (a logical partition).
pub const SEED_PARTITION: u32 = 5;
/// The data partition, mounted at /var: the last logical, last on the card.
pub const DATA_PARTITION: u32 = 8;

/// One of a card's two slots: a boot FAT (firmware, config.txt, kernel, initramfs) and the
/// root partition its cmdline.txt names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardSlot {
    A,
    B,
}

impl CardSlot {
    /// The slot's boot partition: the number autoboot.txt's `boot_partition` names.
    pub const fn boot_partition(self) -> u32 {
        match self {
            CardSlot::A => 2,
            CardSlot::B => 3,
        }
    }

    /// The slot's root partition (logical).
    pub const fn root_partition(self) -> u32 {
        match self {
            CardSlot::A => 6,
            CardSlot::B => 7,
        }
    }

    pub const fn other(self) -> CardSlot {
        match self {
            CardSlot::A => CardSlot::B,
            CardSlot::B => CardSlot::A,
        }
    }

    /// The slot whose root is partition `n` (how a node tells which slot it runs from the
    /// device its root is mounted from).
    pub fn of_root_partition(n: u32) -> Option<CardSlot> {
        [CardSlot::A, CardSlot::B]
            .into_iter()
            .find(|s| s.root_partition() == n)
    }

    /// The slot whose boot partition is `n`.
    pub fn of_boot_partition(n: u32) -> Option<CardSlot> {
        [CardSlot::A, CardSlot::B]
            .into_iter()
            .find(|s| s.boot_partition() == n)
    }
}

impl std::fmt::Display for CardSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CardSlot::A => "A",
            CardSlot::B => "B",
        })
    }
}

/// autoboot.txt for a card whose committed (default) slot is `committed`; a tryboot reboot
/// tries the other one.
pub fn autoboot_txt(committed: CardSlot) -> String {
    format!(
        "# Written by imgforge: the Raspberry Pi bootloader boots slot {committed}'s boot partition;\n\
         # a reboot with the tryboot flag boots slot {other}'s once (an update's trial).\n\
         [all]\n\
         tryboot_a_b=1\n\
         boot_partition={}\n\
         [tryboot]\n\
         boot_partition={}\n",
        committed.boot_partition(),
        committed.other().boot_partition(),
        other = committed.other(),
    )
}

/// The committed slot an autoboot.txt names: its `[all]` section's `boot_partition`
/// (a `[tryboot]` section's is the trial's). Refuses a file that names no slot of a card.
pub fn committed_slot(text: &str) -> Result<CardSlot> {
    let mut section = "all".to_string();
    let mut found = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        if let Some(v) = line.strip_prefix("boot_partition=") {
            if section == "all" {
                let n: u32 = v
                    .trim()
                    .parse()
                    .with_context(|| format!("{AUTOBOOT_FILE} line {}: `{line}`", i + 1))?;
                found = Some(CardSlot::of_boot_partition(n).with_context(|| {
                    format!(
                        "{AUTOBOOT_FILE} line {}: boot_partition={n} is no slot's boot partition (2 or 3)",
                        i + 1
                    )
                })?);
            }
        }
    }
    match found {
        Some(s) => Ok(s),
        None => bail!("{AUTOBOOT_FILE} has no boot_partition in its [all] section"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autoboot_txt_names_the_committed_slot_and_tries_the_other() {
        for s in [CardSlot::A, CardSlot::B] {
            let t = autoboot_txt(s);
            assert_eq!(committed_slot(&t).unwrap(), s, "{t}");
            let trial = t.split("[tryboot]").nth(1).unwrap();
            assert!(
                trial.contains(&format!("boot_partition={}", s.other().boot_partition())),
                "{t}"
            );
            assert!(t.contains("tryboot_a_b=1\n"), "{t}");
        }
    }

    #[test]
    fn a_slot_is_known_by_its_boot_or_root_partition() {
        for s in [CardSlot::A, CardSlot::B] {
            assert_eq!(CardSlot::of_root_partition(s.root_partition()), Some(s));
            assert_eq!(CardSlot::of_boot_partition(s.boot_partition()), Some(s));
            assert_ne!(s.other(), s);
        }
        assert_eq!(CardSlot::of_root_partition(DATA_PARTITION), None);
        assert_eq!(CardSlot::of_boot_partition(AUTOBOOT_PARTITION), None);
    }

    #[test]
    fn a_file_naming_no_slot_is_refused() {
        let e = committed_slot("[all]\nboot_partition=5\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
        assert!(committed_slot("[tryboot]\nboot_partition=2\n").is_err());
        assert!(committed_slot("").is_err());
    }
}
