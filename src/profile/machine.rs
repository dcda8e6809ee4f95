//! What machine an image is for: its architecture, partition table, boot method, Raspberry
//! Pi model and the files written beside it. Each is an enum read by serde, so a value
//! outside the set is refused while the profile is parsed, with its file, line, column and
//! key (`targets/x.toml:3:8: key `arch`: unknown variant `i386`, expected `amd64` or
//! `arm64``).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Debian architecture of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

/// The disk's partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionTable {
    /// GUID partition table: UEFI machines.
    Gpt,
    /// MBR: the Raspberry Pi's boot ROM reads nothing else.
    Mbr,
}

impl PartitionTable {
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionTable::Gpt => "gpt",
            PartitionTable::Mbr => "mbr",
        }
    }
}

/// How the image boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootMethod {
    /// systemd-boot from the ESP, started by UEFI firmware.
    SystemdBoot,
    /// The Pi's own firmware reads config.txt from the first FAT partition.
    RaspiFirmware,
}

impl BootMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            BootMethod::SystemdBoot => "systemd-boot",
            BootMethod::RaspiFirmware => "raspi-firmware",
        }
    }

    /// The partition table the method reads.
    pub fn partition_table(self) -> PartitionTable {
        match self {
            BootMethod::SystemdBoot => PartitionTable::Gpt,
            BootMethod::RaspiFirmware => PartitionTable::Mbr,
        }
    }
}

/// A file written beside the image on request (the .img, its .bmap, the manifest and
/// SHA256SUMS are always written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
pub enum Output {
    /// A disk image for hypervisors.
    #[serde(rename = "qcow2")]
    Qcow2,
    /// The raw image compressed by xz, for card writers and bmaptool.
    #[serde(rename = "img.xz")]
    ImgXz,
}

impl Output {
    pub fn as_str(self) -> &'static str {
        match self {
            Output::Qcow2 => "qcow2",
            Output::ImgXz => "img.xz",
        }
    }
}

/// The Raspberry Pi model a card is for, as firmware/config.txt.tera tests it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum RaspiModel {
    #[serde(rename = "4")]
    Pi4,
    #[serde(rename = "5")]
    Pi5,
}

impl RaspiModel {
    pub fn as_str(self) -> &'static str {
        match self {
            RaspiModel::Pi4 => "4",
            RaspiModel::Pi5 => "5",
        }
    }
}

/// Where a card's root filesystem lives: the SD card (the default), an NVMe drive on the
/// PCIe connector (Pi 5), or a USB disk. The kernel command line names the root by its
/// partition's identifier either way; the initramfs's drivers follow the device.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Deserialize,
    Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum RootDevice {
    #[default]
    Sd,
    Nvme,
    Usb,
}

impl RootDevice {
    pub fn as_str(self) -> &'static str {
        match self {
            RootDevice::Sd => "sd",
            RootDevice::Nvme => "nvme",
            RootDevice::Usb => "usb",
        }
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}

display_as_str!(
    Arch,
    PartitionTable,
    BootMethod,
    Output,
    RaspiModel,
    RootDevice
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::load::parse_toml;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct T {
        arch: Option<Arch>,
        partition_table: Option<PartitionTable>,
        boot: Option<BootMethod>,
        #[serde(default)]
        outputs: Vec<Output>,
        model: Option<RaspiModel>,
    }

    #[test]
    fn values_read_and_print_as_the_profiles_write_them() {
        let t: T = parse_toml(
            "t.toml",
            "arch = \"arm64\"\npartition-table = \"mbr\"\nboot = \"raspi-firmware\"\noutputs = [\"img.xz\", \"qcow2\"]\nmodel = \"5\"\n",
        )
        .unwrap();
        assert_eq!(t.arch, Some(Arch::Arm64));
        assert_eq!(t.boot.unwrap().partition_table(), PartitionTable::Mbr);
        assert_eq!(t.outputs, [Output::ImgXz, Output::Qcow2]);
        let shown: Vec<String> = [
            t.arch.unwrap().to_string(),
            t.partition_table.unwrap().to_string(),
            t.boot.unwrap().to_string(),
            t.outputs[0].to_string(),
            t.model.unwrap().to_string(),
        ]
        .into();
        assert_eq!(shown, ["arm64", "mbr", "raspi-firmware", "img.xz", "5"]);
        assert_eq!(
            serde_json::to_string(&t.outputs).unwrap(),
            "[\"img.xz\",\"qcow2\"]"
        );
    }

    #[test]
    fn a_value_outside_the_set_names_line_column_key_and_the_choices() {
        let err = parse_toml::<T>("targets/t.toml", "\narch = \"i386\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "targets/t.toml:2:8: key `arch`: unknown variant `i386`, expected `amd64` or `arm64`"
            ),
            "{err}"
        );
        let err = parse_toml::<T>("t.toml", "outputs = [\"qcow2\", \"vmdk\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("t.toml:1:21: key `outputs[1]`: unknown variant `vmdk`"),
            "{err}"
        );
        let err = parse_toml::<T>("t.toml", "boot = \"grub\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("key `boot`: unknown variant `grub`"), "{err}");
    }
}
