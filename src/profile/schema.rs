//! The profile file formats. Every struct denies unknown keys so a typo is an error, not a
//! silently ignored setting. Keys are kebab-case.
//!
//! `common.toml`, `targets/*.toml` and `roles/*.toml` share one schema, [`Layer`], merged in
//! that order by [`super::merge`]. `sites/*.toml` is a [`Site`].

use serde::{Deserialize, Serialize};

use super::machine::{Arch, BootMethod, Output, PartitionTable, RaspiModel, RootDevice};
use super::unit_values::{
    Capability, HealthUrl, Line, PackageName, Port, StateDir, UnitName, UnitRef, UserName,
};

/// One layer of settings. Every field is optional so that a layer sets only what it owns.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Layer {
    /// One line saying what this target or role is, shown by `imgforge list`.
    pub description: Option<Line>,
    /// Debian suite of the image (default trixie).
    pub suite: Option<Line>,
    /// Debian architecture: amd64 or arm64.
    pub arch: Option<Arch>,
    /// Rust target triple the gateway and worker are built for.
    pub rust_target: Option<String>,
    /// Partition table of the disk: gpt (UEFI machines) or mbr (Raspberry Pi cards).
    pub partition_table: Option<PartitionTable>,
    /// How the image boots: systemd-boot (from the ESP, by UEFI firmware) or raspi-firmware
    /// (the Pi's own firmware reads config.txt from the first FAT partition).
    pub boot: Option<BootMethod>,
    /// Debian packages installed in the base root. Lists append across layers.
    /// `name/backports` takes the package from `<suite>-backports`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<PackageName>,
    /// Archive components beyond main, e.g. non-free-firmware for raspi-firmware.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apt_components: Vec<Line>,
    /// Files written beside the image: qcow2 (virtual machines) and img.xz (cards, for
    /// bmaptool and card writers). The raw .img, its .bmap, the manifest and SHA256SUMS are
    /// always written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<Output>,
    /// What the Raspberry Pi boot partition holds (targets with boot = "raspi-firmware").
    pub raspi: Option<Raspi>,
    /// Units of Debian packages to enable in the base root (`systemctl enable` in the chroot).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enable_units: Vec<UnitRef>,
    /// Kernel modules the initramfs carries (initramfs-tools MODULES=list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub initramfs_modules: Vec<Line>,
    /// Kernel command line words, after `root=` (which imgforge sets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_cmdline: Vec<Line>,
    /// Size of the EFI system partition.
    pub esp_size_mib: Option<u64>,
    /// Free space left in the root filesystem beyond its content.
    pub root_free_mib: Option<u64>,
    /// Size of each root slot. Fixed, not derived from the content: the slots of a node
    /// flashed today must hold the versions published later, which may be larger.
    pub root_slot_mib: Option<u64>,
    /// How long a boot test waits for the ready line.
    pub boot_timeout_secs: Option<u64>,
    /// Services run by systemd. A later layer's service of the same name replaces it.
    #[serde(default, rename = "service", skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// Secret slots: named places for secrets, filled when the card is seeded or flashed
    /// (or generated on first boot), never stored in the image. Replaced by name.
    #[serde(default, rename = "slot", skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<Slot>,
    /// PostgreSQL databases the node creates at boot, each owned by a login role whose
    /// password is a slot. Replaced by name.
    #[serde(default, rename = "database", skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<Database>,
    /// Jobs run by systemd timers (backups first of all). Replaced by name.
    #[serde(default, rename = "job", skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<Job>,
    /// App slots: the user's Python applications, each installed into /opt/<name> with its
    /// own venv. The site names the source of each. Replaced by name.
    #[serde(default, rename = "app", skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<App>,
    /// How QEMU runs this target in `imgforge test` and `imgforge boot`.
    pub qemu: Option<Qemu>,
}

/// A database the worker creates (if missing) after PostgreSQL starts, at every boot.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Database {
    /// Database name (a-z, 0-9, _).
    pub name: String,
    /// Its owner, a login role (a-z, 0-9, _).
    pub owner: String,
    /// The slot holding the owner's password.
    pub password_slot: String,
}

/// A job run on a schedule by a systemd timer.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Job {
    /// Unit name is `imgforge-job-<name>`.
    pub name: String,
    pub description: Line,
    /// When it runs: a systemd calendar expression (`daily`, `*-*-* 03:00:00`).
    pub schedule: Line,
    /// Also run once at every boot, and count it in the boot's readiness.
    #[serde(default)]
    pub at_boot: bool,
    /// What it does: dump a database of this node with pg_dump, keeping a rotation.
    pub pg_dump: PgDump,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PgDump {
    pub database: String,
    /// Keep the newest dump of each of this many recent days...
    #[serde(default = "seven")]
    pub keep_daily: u32,
    /// ...and of each of this many recent weeks.
    #[serde(default = "four")]
    pub keep_weekly: u32,
}

fn seven() -> u32 {
    7
}

fn four() -> u32 {
    4
}

/// An app slot of a role.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct App {
    /// Installed into /opt/<name>; the venv is /opt/<name>/venv.
    pub name: String,
    pub description: Line,
    /// Requirements file inside the app, installed into the venv at build time.
    #[serde(default = "requirements_txt")]
    pub requirements: String,
    /// Where the requirements come from: the role's Debian packages, or PyPI through a
    /// lock with hashes.
    #[serde(default)]
    pub deps: Deps,
    /// Whether the venv also sees the role's Debian Python packages. Always so with
    /// `deps = "debian"`; with `deps = "pypi"` off unless asked, and then a locked
    /// package the Debian side also has at another version is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_site_packages: Option<bool>,
}

/// An app's dependency source.
///
/// The default is `debian`: the roles written before PyPI locks existed keep building the
/// same venv, offline, from packages the distribution keeps patched; fetching code from
/// PyPI at build time is something a role asks for, not something it gets by default.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Deps {
    /// `pip --no-index` against the role's Debian packages (`python3-...`).
    #[default]
    Debian,
    /// Wheels from PyPI pinned by the requirements file's `--hash=sha256:` lines
    /// (`imgforge lock` writes it), unpacked for the target without emulation.
    Pypi,
}

fn requirements_txt() -> String {
    "requirements.txt".into()
}

/// A secret slot; its definition lives with the seed area's format, which carries it.
pub use seed_area::Slot;

/// A service the role runs, rendered into a systemd unit.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Service {
    /// Unit name without `.service`.
    pub name: UnitName,
    pub description: Line,
    /// Command and arguments; the first word is an absolute path.
    pub exec: Vec<Line>,
    /// Linux capabilities granted to the (unprivileged, dynamic) service user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<Capability>,
    /// TCP ports it listens on; the worker checks each answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// An HTTP URL inside the node that must answer 2xx or 3xx for the service to count as ready.
    pub health: Option<HealthUrl>,
    /// Units it starts after (and pulls in), e.g. `postgresql.service`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<UnitRef>,
    /// Name of the service's own (dynamic) user; services naming the same user share it.
    /// Default: the service's name.
    pub user: Option<UserName>,
    /// The app slot it runs: working directory /opt/<app>, the venv first on PATH.
    pub app: Option<String>,
    /// Environment, written to /etc/imgforge/env/<service>.env. A value may name a secret
    /// slot as `${slot:NAME}`: the worker puts the value in at start, from the service's
    /// credentials, so no secret is ever written to a file in the image.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, Line>,
    /// A folder under /var/lib the service may write (systemd StateDirectory=), shared by
    /// the services of one user.
    pub state_dir: Option<StateDir>,
    /// Its ports are open to anyone (the gateway's 80 and 443). Otherwise the site says
    /// which hosts reach each port, and the firewall drops the rest.
    #[serde(default)]
    pub public: bool,
}

/// The Raspberry Pi model a card is for and the boot files it needs.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Raspi {
    /// The model, as firmware/config.txt.tera tests it: "4" or "5".
    pub model: RaspiModel,
    /// Files of Debian's raspi-firmware (/usr/lib/raspi-firmware) the model's boot ROM or
    /// EEPROM loads: start4.elf and fixup4.dat on a Pi 4; none on a Pi 5, whose firmware is
    /// in its EEPROM.
    #[serde(default)]
    pub firmware: Vec<String>,
    /// Device tree file names from the kernel's broadcom/ folder (bcm2711-rpi-4-b.dtb, ...).
    pub device_trees: Vec<String>,
    /// Where the root lives (sd, nvme, usb); a site's host may choose another the target
    /// describes in `storage`.
    #[serde(default)]
    pub root_device: RootDevice,
    /// For each root device the boards support: where its storage sits in their device
    /// trees. The initramfs's drivers are derived from it at build time
    /// (src/board/root_drivers.rs).
    #[serde(default)]
    pub storage: std::collections::BTreeMap<RootDevice, crate::board::root_drivers::Storage>,
}

/// QEMU settings of a target. Fields merge one by one (a role may raise memory-mib alone).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Qemu {
    pub binary: Option<String>,
    pub machine: Option<String>,
    pub cpu: Option<String>,
    pub memory_mib: Option<u64>,
    pub smp: Option<u32>,
    /// UEFI firmware code and variable-store templates (read-only; the vars are copied).
    pub firmware_code: Option<String>,
    pub firmware_vars: Option<String>,
    /// The serial console device inside the guest, e.g. ttyS0.
    pub serial: Option<String>,
}

/// The site file's format lives with the site (src/site/schema.rs).
pub use crate::site::schema::{Access, Host, Site, SiteRoute, SiteTls};

#[cfg(test)]
impl Service {
    /// A service running /bin/true with these ports, for tests.
    pub fn for_test(name: &str, ports: &[u16], public: bool) -> Service {
        Service {
            name: name.parse().unwrap(),
            description: name.parse().unwrap(),
            exec: vec!["/bin/true".parse().unwrap()],
            capabilities: vec![],
            ports: ports.iter().map(|p| Port::new(*p).unwrap()).collect(),
            health: None,
            after: vec![],
            user: None,
            app: None,
            env: Default::default(),
            state_dir: None,
            public,
        }
    }
}
