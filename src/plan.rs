//! The resolve stage: merge common, target and role layers with the site into the
//! effective [`Plan`] that every later stage reads, and validate it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use anyhow::{anyhow, bail, Result};
use serde::Serialize;

use crate::cache::sha256_bytes;
use crate::profile::check::{at_item, check_file, LayerFile};
use crate::profile::load::parse_toml;
use crate::profile::machine::{Arch, BootMethod, Output, PartitionTable};
use crate::profile::merge::Merge;
use crate::profile::{Database, Job, Layer, ProfileSource, Qemu, Raspi, Service, Site, Slot};
use crate::site::{HostAddress, SiteView};

pub const DEFAULT_ROLE: &str = "proxy";
pub const DEFAULT_TARGET: &str = "x86_64-vm";
pub const DEFAULT_SITE: &str = "example";

/// Timestamps in the image when SOURCE_DATE_EPOCH is not set: 2025-01-01T00:00:00Z.
pub const DEFAULT_EPOCH: u64 = 1_735_689_600;

/// What was asked for on the command line.
#[derive(Debug, Clone)]
pub struct Request {
    pub role: String,
    pub target: String,
    pub site: String,
    pub host: Option<String>,
    /// `--version`: the image's version, else `default_version`.
    pub version: Option<String>,
}

/// The effective, validated build plan.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Plan {
    pub role: String,
    pub target: String,
    pub site: String,
    pub host: HostPlan,
    pub suite: String,
    pub arch: Arch,
    pub rust_target: String,
    pub partition_table: PartitionTable,
    pub boot: BootMethod,
    pub packages: Vec<String>,
    /// Archive components beyond main.
    pub apt_components: Vec<String>,
    /// Extra outputs: qcow2, img.xz.
    pub outputs: Vec<Output>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raspi: Option<Raspi>,
    pub enable_units: Vec<String>,
    pub initramfs_modules: Vec<String>,
    pub kernel_cmdline: Vec<String>,
    pub esp_size_mib: u64,
    pub root_free_mib: u64,
    /// Each root slot's size (`root-slot-mib`); the root filesystem inside may be smaller.
    pub root_slot_mib: u64,
    pub boot_timeout_secs: u64,
    pub source_date_epoch: u64,
    /// The image's version: named in root slot A's partition name, written into the root
    /// (seed_area::version::PATH) and reported by the worker (see `default_version`).
    pub version: String,
    #[serde(rename = "service")]
    pub services: Vec<Service>,
    #[serde(rename = "slot")]
    pub slots: Vec<Slot>,
    #[serde(rename = "database")]
    pub databases: Vec<Database>,
    #[serde(rename = "job")]
    pub jobs: Vec<Job>,
    #[serde(rename = "app")]
    pub apps: Vec<AppPlan>,
    /// The nftables ruleset (/etc/nftables.conf), rendered from the services and the site.
    pub firewall: String,
    /// The gateway's configuration, for a host whose role runs the gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_config: Option<String>,
    /// The site's hosts with static addresses, for /etc/hosts.
    pub site_hosts: Vec<SiteHost>,
    pub qemu: QemuPlan,
    /// The profile files read, with their hashes (recorded in manifest.json).
    pub inputs: Vec<Input>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct HostPlan {
    pub name: String,
    pub fqdn: String,
    pub address: HostAddress,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
    /// The site's `updates` for this host: the image carries sysupdate's transfers and a
    /// timer (see stage::updates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updates: Option<crate::site::updates::HostUpdates>,
    /// The site's `admin-ssh-keys`: root's authorized keys on the node.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub admin_ssh_keys: Vec<crate::site::ssh_key::SshPublicKey>,
}

/// An app slot with the source the site gives it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AppPlan {
    pub name: String,
    pub description: String,
    pub requirements: String,
    pub deps: crate::profile::schema::Deps,
    /// The venv sees the role's Debian Python packages.
    pub system_site_packages: bool,
    /// A path, or `embedded:examples/...` (see `app_source`).
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SiteHost {
    pub name: String,
    pub fqdn: String,
    pub address: IpAddr,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct QemuPlan {
    pub binary: String,
    pub machine: String,
    pub cpu: String,
    pub memory_mib: u64,
    pub smp: u32,
    /// UEFI firmware code and variables; none for a card QEMU boots by `-kernel` only.
    pub firmware_code: Option<String>,
    pub firmware_vars: Option<String>,
    pub serial: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Input {
    pub path: String,
    pub sha256: String,
}

impl Plan {
    /// Image file stem: `<role>-<target>`.
    pub fn image_name(&self) -> String {
        format!("{}-{}", self.role, self.target)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("plan serializes")
    }
}

/// Reads one layer file and runs the checks of a single file on it.
fn load_layer(file: crate::profile::load::ProfileFile) -> Result<LayerFile> {
    let layer: Layer = parse_toml(&file.display, &file.text)?;
    let f = LayerFile {
        layer,
        display: file.display,
        text: file.text,
    };
    check_file(&f)?;
    Ok(f)
}

/// A site file, parsed, with where it came from.
pub struct SiteFile {
    pub site: Site,
    pub display: String,
    pub text: String,
    /// The folder of the site file on disk (app sources are relative to it); `None` when
    /// it is the embedded copy.
    pub dir: Option<std::path::PathBuf>,
}

impl SiteFile {
    pub fn view(&self) -> SiteView<'_> {
        SiteView {
            site: &self.site,
            display: &self.display,
            text: &self.text,
        }
    }
}

/// Reads the site `name` and checks it as a whole: every host, access rule and route,
/// against the roles its hosts run (common.toml and each role merged), and each proxy
/// host's rendered gateway.toml against the gateway's parser.
pub fn load_site(src: &ProfileSource, name: &str) -> Result<SiteFile> {
    let (site, file) = src.load_named::<Site>("sites", "site", name)?;
    let sf = SiteFile {
        site,
        display: file.display,
        text: file.text,
        dir: file.dir.map(|d| d.join("sites")),
    };
    let view = sf.view();
    let common = match src.read("common.toml")? {
        Some(f) => Some(load_layer(f)?),
        None => None,
    };
    let known = src.list("roles")?;
    let mut roles: BTreeMap<String, Layer> = BTreeMap::new();
    for (i, h) in sf.site.hosts.iter().enumerate() {
        if roles.contains_key(h.role.as_str()) {
            continue;
        }
        if !known.iter().any(|k| *k == *h.role) {
            bail!(
                "{}: host `{}` runs role `{}`, which is not a role; known roles: {} ({})",
                view.at(&format!("host[{i}].role")),
                h.name,
                h.role,
                known.join(", "),
                src.describe()
            );
        }
        let file = src
            .read(&format!("roles/{}.toml", h.role))?
            .ok_or_else(|| anyhow!("roles/{}.toml vanished", h.role))?;
        let role = load_layer(file)?;
        let mut merged = common.as_ref().map(|c| c.layer.clone()).unwrap_or_default();
        merged.merge(role.layer.clone());
        // A mistake inside the role is named in the role's file, not in the site's.
        let files: Vec<&LayerFile> = common.iter().chain(std::iter::once(&role)).collect();
        check_references(&merged, &files)?;
        roles.insert(h.role.to_string(), merged);
    }
    crate::site::check::check(&view, &roles)?;
    Ok(sf)
}

pub fn resolve(src: &ProfileSource, req: &Request) -> Result<Plan> {
    let mut inputs = Vec::new();
    let mut record = |display: &str, text: &str| {
        inputs.push(Input {
            path: display.to_string(),
            sha256: sha256_bytes(text.as_bytes()),
        })
    };

    let mut files: Vec<LayerFile> = Vec::new();
    if let Some(common) = src.read("common.toml")? {
        record(&common.display, &common.text);
        files.push(load_layer(common)?);
    }
    let (_, tfile) = src.load_named::<Layer>("targets", "target", &req.target)?;
    record(&tfile.display, &tfile.text);
    files.push(load_layer(tfile)?);
    let (_, rfile) = src.load_named::<Layer>("roles", "role", &req.role)?;
    record(&rfile.display, &rfile.text);
    files.push(load_layer(rfile)?);
    let sfile = load_site(src, &req.site)?;
    record(&sfile.display, &sfile.text);
    let site = &sfile.site;
    let view = sfile.view();

    let mut layer = Layer::default();
    for f in &files {
        layer.merge(f.layer.clone());
    }
    let refs: Vec<&LayerFile> = files.iter().collect();
    let tdisplay = refs[refs.len() - 2].display.clone();
    let rdisplay = refs[refs.len() - 1].display.clone();
    let layers: Vec<&str> = refs.iter().map(|f| f.display.as_str()).collect();
    let layers = layers.join(", ");
    // The last file that sets a single value, for a message about it.
    let setter = |key: &str, set: fn(&Layer) -> bool| -> String {
        refs.iter()
            .rev()
            .find(|f| set(&f.layer))
            .map_or(tdisplay.clone(), |f| f.at(key))
    };

    fn need<T>(v: Option<T>, key: &str, layers: &str) -> Result<T> {
        v.ok_or_else(|| anyhow!("no layer sets `{key}` (read: {layers}); the target usually does"))
    }
    let arch = need(layer.arch, "arch", &layers)?;
    let partition_table = need(layer.partition_table, "partition-table", &layers)?;
    let boot = need(layer.boot, "boot", &layers)?;
    if boot.partition_table() != partition_table {
        bail!(
            "{}: `boot = \"{boot}\"` goes with `partition-table = \"{}\"`, not \"{partition_table}\"",
            setter("partition-table", |l| l.partition_table.is_some()),
            boot.partition_table()
        );
    }
    if boot == BootMethod::RaspiFirmware && layer.raspi.is_none() {
        bail!(
            "{}: `boot = \"raspi-firmware\"` needs a [raspi] table (model, firmware, \
             device-trees)",
            setter("boot", |l| l.boot.is_some())
        );
    }
    let suite = layer
        .suite
        .as_ref()
        .map_or_else(|| "trixie".to_string(), |s| s.to_string());
    // `name/backports` is the name from this suite's backports.
    let packages: Vec<String> = layer
        .packages
        .iter()
        .map(|p| match p.strip_suffix("/backports") {
            Some(name) => format!("{name}/{suite}-backports"),
            None => p.to_string(),
        })
        .collect();

    let host = pick_host(&view, req)?;
    let root_device_from_site = apply_site_root_device(&view, &host.name, &mut layer, &tdisplay)?;
    if let Some(r) = &layer.raspi {
        if !r.storage.contains_key(&r.root_device) {
            bail!(
                "{}: `root-device = \"{}\"` has no [raspi.storage.{}] table saying where that \
                 storage sits in the boards' device trees (the target describes: {})",
                root_device_from_site.unwrap_or_else(|| setter("raspi", |l| l.raspi.is_some())),
                r.root_device,
                r.root_device,
                r.storage
                    .keys()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    check_references(&layer, &refs)?;
    let firewall = crate::site::firewall::ruleset(&view, &host.name, &req.role, &layer.services)?;
    let gateway_config = match crate::site::gateway_toml::gateway_service(&layer.services) {
        Some(gw) => Some(crate::site::gateway_toml::render(
            &view,
            &host.name,
            &gw.name,
            &layer.slots,
        )?),
        None => None,
    };
    let site_host = view.find(&host.name);
    let mut apps = Vec::new();
    for app in &layer.apps {
        let Some(rel) = site_host.and_then(|(_, h)| h.apps.get(&app.name)) else {
            bail!(
                "{}: role `{}` has the app slot `{}`: host `{}` must name its source (apps = {{ {} = \"path/to/app\" }})",
                sfile.display, req.role, app.name, host.name, app.name
            );
        };
        apps.push(AppPlan {
            name: app.name.clone(),
            description: app.description.to_string(),
            requirements: app.requirements.clone(),
            deps: app.deps,
            system_site_packages: app
                .system_site_packages
                .unwrap_or(app.deps == crate::profile::schema::Deps::Debian),
            source: crate::app_source::resolve(sfile.dir.as_deref(), rel),
        });
    }
    if let Some((i, h)) = site_host {
        for name in h.apps.keys() {
            if !layer.apps.iter().any(|a| &a.name == name) {
                bail!(
                    "{}: host `{}`: role `{}` has no app slot `{name}`",
                    view.at(&format!("host[{i}].apps.{name}")),
                    h.name,
                    req.role
                );
            }
        }
    }
    let site_hosts = site
        .hosts
        .iter()
        .filter_map(|h| {
            Some(SiteHost {
                name: h.name.to_string(),
                fqdn: format!("{}.{}", h.name, site.domain),
                address: h.address.ip()?,
            })
        })
        .collect();
    let q = layer.qemu.clone().unwrap_or_default();
    let qemu = resolve_qemu(q, &tdisplay)?;
    let _ = &rdisplay;

    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds"))?,
        Err(_) => DEFAULT_EPOCH,
    };

    let strings = |v: &[crate::profile::unit_values::Line]| -> Vec<String> {
        v.iter().map(|l| l.to_string()).collect()
    };
    let mut plan = Plan {
        role: req.role.clone(),
        target: req.target.clone(),
        site: req.site.clone(),
        host,
        suite,
        arch,
        rust_target: need(layer.rust_target.clone(), "rust-target", &layers)?,
        partition_table,
        boot,
        packages: sorted_unique(packages),
        apt_components: sorted_unique(strings(&layer.apt_components)),
        outputs: layer
            .outputs
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        raspi: layer.raspi,
        enable_units: sorted_unique(layer.enable_units.iter().map(|u| u.to_string()).collect()),
        initramfs_modules: sorted_unique(strings(&layer.initramfs_modules)),
        kernel_cmdline: unique_in_order(strings(&layer.kernel_cmdline)),
        esp_size_mib: layer.esp_size_mib.unwrap_or(64),
        root_free_mib: layer.root_free_mib.unwrap_or(256),
        root_slot_mib: layer.root_slot_mib.unwrap_or(DEFAULT_ROOT_SLOT_MIB),
        boot_timeout_secs: layer.boot_timeout_secs.unwrap_or(300),
        source_date_epoch,
        version: String::new(),
        services: layer.services,
        slots: layer.slots,
        databases: layer.databases,
        jobs: layer.jobs,
        apps,
        firewall,
        gateway_config,
        site_hosts,
        qemu,
        inputs,
    };
    if plan.host.updates.is_some() {
        // The engine and what it needs on the node (see stage::updates).
        let needs: &[&str] = match plan.boot {
            BootMethod::SystemdBoot => &UPDATE_PACKAGES,
            BootMethod::RaspiFirmware => &CARD_UPDATE_PACKAGES,
        };
        plan.packages.extend(needs.iter().map(|p| p.to_string()));
        plan.packages = sorted_unique(std::mem::take(&mut plan.packages));
    }
    plan.version = match &req.version {
        Some(v) => check_version(v)?,
        None => default_version(&plan),
    };
    Ok(plan)
}

/// The Debian (trixie) packages a node that updates itself needs: systemd-container
/// (/usr/lib/systemd/systemd-sysupdate, and systemd-pull, which fetches and verifies),
/// systemd-boot (systemd-bless-boot and its generator, which mark a counted boot good once
/// boot-complete.target is reached), gpg (/usr/bin/gpg: systemd-pull verifies
/// SHA256SUMS.gpg by running it; gpgv alone is not what it runs).
pub const UPDATE_PACKAGES: [&str; 3] = ["gpg", "systemd-boot", "systemd-container"];

/// What a card's update engine (the worker's `card-update`) runs: curl fetches, gpg
/// verifies SHA256SUMS.gpg as systemd-pull would, xz decompresses onto the other slot.
pub const CARD_UPDATE_PACKAGES: [&str; 3] = ["curl", "gpg", "xz-utils"];

/// A version as systemd-sysupdate reads it from a partition name (`root_@v`) and file
/// names: letters, digits and `.+~^_-`, starting with a letter or digit, at most 64 bytes.
fn check_version(v: &str) -> Result<String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~^_-".contains(c));
    if !ok {
        bail!(
            "--version `{}`: a version is 1 to 64 letters, digits and `.+~^_-`, starting with a letter or digit",
            v.escape_debug()
        );
    }
    Ok(v.to_string())
}

/// Each root slot's size when no profile says (profiles/common.toml says the same): over
/// three times the proxy's root; larger roles set their own.
pub const DEFAULT_ROOT_SLOT_MIB: u64 = 1024;

/// The version of an image no one named: `0~` and the first 12 hex digits of the plan's
/// hash, so the same inputs give the same version. `~` sorts before everything in
/// systemd's version comparison, so any version a user names (`1`, `2024.1`) is newer than
/// every default one.
fn default_version(plan: &Plan) -> String {
    let json = serde_json::to_vec(plan).expect("plan serializes");
    format!("0~{}", &crate::cache::sha256_bytes(&json)[..12])
}

/// What one item of the merged layers says of another: a service's app slot and the
/// slots its environment names, a slot's service, a database's password slot. Each error
/// names the file and line of the item that refers.
fn check_references(layer: &Layer, files: &[&LayerFile]) -> Result<()> {
    for svc in &layer.services {
        if let Some(a) = &svc.app {
            if !layer.apps.iter().any(|x| &x.name == a) {
                bail!(
                    "{}: service `{}` runs app `{a}`, which is not an app slot of the role ([[app]])",
                    at_item(files, "service", &svc.name, "app"),
                    svc.name
                );
            }
        }
        for (k, v) in &svc.env {
            for slot in env_slots(v) {
                if !layer.slots.iter().any(|s| s.name == slot) {
                    bail!(
                        "{}: service `{}`: env `{k}` names `${{slot:{slot}}}`, which is not a slot of the role",
                        at_item(files, "service", &svc.name, &format!("env.{k}")),
                        svc.name
                    );
                }
            }
        }
    }
    for slot in &layer.slots {
        if !layer.services.iter().any(|s| s.name == *slot.service) {
            bail!(
                "{}: slot `{}` is read by service `{}`, which the role does not run",
                at_item(files, "slot", &slot.name, "service"),
                slot.name,
                slot.service
            );
        }
    }
    let uses_pg = !layer.databases.is_empty() || !layer.jobs.is_empty();
    if uses_pg && !layer.packages.iter().any(|p| p == "postgresql") {
        let (list, name) = match layer.databases.first() {
            Some(d) => ("database", d.name.as_str()),
            None => ("job", layer.jobs[0].name.as_str()),
        };
        bail!(
            "{}: databases and pg-dump jobs need PostgreSQL: add \"postgresql\" to `packages`",
            at_item(files, list, name, "")
        );
    }
    for d in &layer.databases {
        if !layer.slots.iter().any(|s| s.name == d.password_slot) {
            bail!(
                "{}: database `{}`: password-slot `{}` is not a slot of the role",
                at_item(files, "database", &d.name, "password-slot"),
                d.name,
                d.password_slot
            );
        }
    }
    Ok(())
}

/// The slot names a value refers to as `${slot:NAME}`.
pub fn env_slots(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = v;
    while let Some(i) = rest.find("${slot:") {
        let after = &rest[i + 7..];
        match after.find('}') {
            Some(j) => {
                out.push(&after[..j]);
                rest = &after[j + 1..];
            }
            None => break,
        }
    }
    out
}

/// A site host's `root-device` replaces the target's. Returns where it was set (file, line
/// and key), for a message about it. On a target that is not a Raspberry Pi (a VM boots from
/// the disk it is given) the key is an error rather than ignored: the site says the host is
/// a Pi booting from that storage, and an image for another machine is not that host.
fn apply_site_root_device(
    view: &SiteView,
    host: &str,
    layer: &mut Layer,
    target_display: &str,
) -> Result<Option<String>> {
    let Some((i, h)) = view.find(host) else {
        return Ok(None);
    };
    let Some(device) = h.root_device else {
        return Ok(None);
    };
    let at = view.at(&format!("host[{i}].root-device"));
    match layer.raspi.as_mut() {
        Some(r) => {
            r.root_device = device;
            Ok(Some(at))
        }
        None => bail!(
            "{at}: host `{host}` sets `root-device = \"{device}\"`, which only a Raspberry Pi \
             target chooses; this host's target ({target_display}) boots from the disk it is \
             written to"
        ),
    }
}

fn pick_host(view: &SiteView, req: &Request) -> Result<HostPlan> {
    let site = view.site;
    let host = match &req.host {
        Some(name) => {
            let h = site
                .hosts
                .iter()
                .find(|h| h.name == **name)
                .ok_or_else(|| {
                    anyhow!(
                        "{}: no host `{name}`; hosts: {}",
                        view.display,
                        view.host_names()
                    )
                })?;
            if h.role != *req.role {
                bail!(
                    "{}: host `{name}` runs role `{}`, not `{}`",
                    view.display,
                    h.role,
                    req.role
                );
            }
            Some(h)
        }
        None => site.hosts.iter().find(|h| h.role == *req.role),
    };
    // A role with no host in the site still builds: the image is named after the role.
    let updates = host.and_then(|h| h.updates.clone());
    let (name, address, gateway, dns) = match host {
        Some(h) => (h.name.to_string(), h.address, h.gateway, h.dns.clone()),
        None => {
            let name: crate::site::names::HostName = req.role.parse().map_err(|e| {
                anyhow!(
                    "{}: role `{}` has no host in the site, so the image's hostname would be the role's name: {e}",
                    view.display,
                    req.role
                )
            })?;
            (name.to_string(), HostAddress::Dhcp, None, vec![])
        }
    };
    Ok(HostPlan {
        fqdn: format!("{name}.{}", site.domain),
        name,
        address,
        gateway,
        dns,
        updates,
        admin_ssh_keys: site.admin_ssh_keys.clone(),
    })
}

fn resolve_qemu(q: Qemu, display: &str) -> Result<QemuPlan> {
    let need = |v: Option<String>, key: &str| {
        v.ok_or_else(|| anyhow!("{display}: [qemu] does not set `{key}`"))
    };
    Ok(QemuPlan {
        binary: need(q.binary, "binary")?,
        machine: need(q.machine, "machine")?,
        cpu: q.cpu.unwrap_or_else(|| "max".into()),
        memory_mib: q.memory_mib.unwrap_or(1024),
        smp: q.smp.unwrap_or(1),
        firmware_code: q.firmware_code,
        firmware_vars: q.firmware_vars,
        serial: q.serial.unwrap_or_else(|| "ttyS0".into()),
    })
}

fn sorted_unique(v: Vec<String>) -> Vec<String> {
    v.into_iter().collect::<BTreeSet<_>>().into_iter().collect()
}

fn unique_in_order(v: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    v.into_iter().filter(|s| seen.insert(s.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(role: &str, target: &str) -> Request {
        Request {
            version: None,
            role: role.into(),
            target: target.into(),
            site: DEFAULT_SITE.into(),
            host: None,
        }
    }

    #[test]
    fn default_plan_merges_layers() {
        let plan = resolve(&ProfileSource::Embedded, &req(DEFAULT_ROLE, DEFAULT_TARGET)).unwrap();
        assert_eq!(plan.arch, Arch::Amd64);
        assert_eq!(plan.suite, "trixie");
        assert!(
            plan.packages.contains(&"systemd".to_string()),
            "from common.toml"
        );
        assert!(
            plan.packages.contains(&"linux-image-amd64".to_string()),
            "from the target"
        );
        assert!(
            plan.services.iter().any(|s| s.name == "gateway"),
            "from the role"
        );
        assert_eq!(plan.host.name, "edge");
        assert_eq!(plan.host.fqdn, "edge.example.test");
        assert_eq!(
            plan.kernel_cmdline.last().map(String::as_str),
            Some("console=ttyS0,115200n8")
        );
        assert_eq!(plan.inputs.len(), 4);
    }

    #[test]
    fn card_targets_resolve_to_mbr_with_their_boot_files_and_backports_kernel() {
        let rpi4 = resolve(&ProfileSource::Embedded, &req("proxy", "rpi4")).unwrap();
        assert_eq!(
            (rpi4.partition_table.as_str(), rpi4.boot.as_str()),
            ("mbr", "raspi-firmware")
        );
        assert_eq!(
            rpi4.raspi.as_ref().unwrap().firmware,
            ["start4.elf", "fixup4.dat", "start4cd.elf", "fixup4cd.dat"]
        );
        assert_eq!(rpi4.apt_components, ["non-free-firmware"]);
        assert_eq!(rpi4.outputs, [Output::ImgXz]);
        let rpi5 = resolve(&ProfileSource::Embedded, &req("proxy", "rpi5")).unwrap();
        assert!(
            rpi5.packages
                .contains(&"linux-image-arm64/trixie-backports".to_string()),
            "{:?}",
            rpi5.packages
        );
        assert!(
            rpi5.raspi.unwrap().firmware.is_empty(),
            "a Pi 5 boots from its EEPROM"
        );
    }

    #[test]
    fn a_boot_method_on_the_wrong_partition_table_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let profiles = dir.path().join("profiles");
        for sub in ["targets", "roles", "sites"] {
            std::fs::create_dir_all(profiles.join(sub)).unwrap();
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        for f in ["common.toml", "roles/proxy.toml", "sites/example.toml"] {
            std::fs::copy(root.join(f), profiles.join(f)).unwrap();
        }
        let rpi4 = std::fs::read_to_string(root.join("targets/rpi4.toml")).unwrap();
        std::fs::write(
            profiles.join("targets/rpi4.toml"),
            rpi4.replace("partition-table = \"mbr\"", "partition-table = \"gpt\""),
        )
        .unwrap();
        let err = resolve(&ProfileSource::Dir(profiles), &req("proxy", "rpi4"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("targets/rpi4.toml")
                && err
                    .contains("`boot = \"raspi-firmware\"` goes with `partition-table = \"mbr\"`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_target_lists_known() {
        let err = resolve(&ProfileSource::Embedded, &req("proxy", "pdp11"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown target `pdp11`; known targets: ") && err.contains("x86_64-vm"),
            "{err}"
        );
    }

    #[test]
    fn bad_host_address_is_refused_at_parse_time_with_line_and_key() {
        let err = parse_toml::<Site>(
            "sites/x.toml",
            "domain = \"example.test\"\n[[host]]\nname = \"edge\"\nrole = \"proxy\"\naddress = \"10.0.0.1\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("sites/x.toml:5:11: key `host[0].address`: `10.0.0.1` must be \"dhcp\" or ADDRESS/PREFIX"),
            "{err}"
        );
    }

    #[test]
    fn a_folder_adds_to_the_embedded_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let profiles = dir.path().join("profiles");
        std::fs::create_dir_all(profiles.join("roles")).unwrap();
        let proxy = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/roles/proxy.toml"),
        )
        .unwrap();
        std::fs::write(
            profiles.join("roles/proxy.toml"),
            proxy.replacen("description = ", "description = \"mine\"\n# ", 1),
        )
        .unwrap();
        let src = ProfileSource::Dir(profiles);
        // The embedded targets and site are still there; the folder's proxy role wins.
        let plan = resolve(&src, &req("proxy", "rpi4")).unwrap();
        assert_eq!(plan.arch, Arch::Arm64);
        assert!(
            plan.inputs[2].path.ends_with("profiles/roles/proxy.toml"),
            "{:?}",
            plan.inputs
        );
        assert!(
            plan.inputs[1].path.ends_with("(embedded)"),
            "{:?}",
            plan.inputs
        );
        assert_eq!(
            src.origin("roles", "proxy"),
            crate::profile::load::Origin::Replaces
        );
        assert_eq!(
            src.origin("roles", "vm-ia"),
            crate::profile::load::Origin::Embedded
        );
        assert!(src
            .list("targets")
            .unwrap()
            .contains(&"x86_64-vm".to_string()));
    }
}
