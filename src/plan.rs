//! The resolve stage: merge common, target and role layers with the site into the
//! effective [`Plan`] that every later stage reads, and validate it.

use std::collections::BTreeSet;

use anyhow::{anyhow, bail, Result};
use serde::Serialize;

use crate::cache::sha256_bytes;
use crate::profile::load::parse_toml;
use crate::profile::merge::Merge;
use crate::profile::{Database, Job, Layer, ProfileSource, Qemu, Raspi, Service, Site, Slot};
use crate::site::SiteView;

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
    pub arch: String,
    pub rust_target: String,
    pub partition_table: String,
    pub boot: String,
    pub packages: Vec<String>,
    /// Archive components beyond main.
    pub apt_components: Vec<String>,
    /// Extra outputs: qcow2, img.xz.
    pub outputs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raspi: Option<Raspi>,
    pub enable_units: Vec<String>,
    pub initramfs_modules: Vec<String>,
    pub kernel_cmdline: Vec<String>,
    pub esp_size_mib: u64,
    pub root_free_mib: u64,
    pub boot_timeout_secs: u64,
    pub source_date_epoch: u64,
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
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    pub dns: Vec<String>,
}

/// An app slot with the source the site gives it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AppPlan {
    pub name: String,
    pub description: String,
    pub requirements: String,
    /// A path, or `embedded:examples/...` (see `app_source`).
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SiteHost {
    pub name: String,
    pub fqdn: String,
    pub address: String,
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

pub fn resolve(src: &ProfileSource, req: &Request) -> Result<Plan> {
    let mut inputs = Vec::new();
    let mut record = |display: &str, text: &str| {
        inputs.push(Input {
            path: display.to_string(),
            sha256: sha256_bytes(text.as_bytes()),
        })
    };

    let mut layer = Layer::default();
    let mut origin = Vec::new();
    if let Some(common) = src.read("common.toml")? {
        layer = parse_toml(&common.display, &common.text)?;
        record(&common.display, &common.text);
        origin.push(common.display);
    }
    let (target, tfile) = src.load_named::<Layer>("targets", "target", &req.target)?;
    record(&tfile.display, &tfile.text);
    let (role, rfile) = src.load_named::<Layer>("roles", "role", &req.role)?;
    record(&rfile.display, &rfile.text);
    let (site, sfile) = src.load_named::<Site>("sites", "site", &req.site)?;
    record(&sfile.display, &sfile.text);
    layer.merge(target);
    layer.merge(role);
    let layers = format!(
        "{}, {}, {}",
        origin.join(", "),
        tfile.display,
        rfile.display
    );

    let need = |v: Option<String>, key: &str| {
        v.ok_or_else(|| anyhow!("no layer sets `{key}` (read: {layers}); the target usually does"))
    };
    let arch = need(layer.arch, "arch")?;
    if !["amd64", "arm64"].contains(&arch.as_str()) {
        bail!(
            "{}: `arch = \"{arch}\"` is not supported; use amd64 or arm64",
            tfile.display
        );
    }
    let partition_table = need(layer.partition_table, "partition-table")?;
    let boot = need(layer.boot, "boot")?;
    match (boot.as_str(), partition_table.as_str()) {
        ("systemd-boot", "gpt") => {}
        ("raspi-firmware", "mbr") => {
            if layer.raspi.is_none() {
                bail!(
                    "{}: `boot = \"raspi-firmware\"` needs a [raspi] table (model, firmware, \
                     device-trees)",
                    tfile.display
                );
            }
        }
        ("systemd-boot" | "raspi-firmware", _) => bail!(
            "{}: `boot = \"{boot}\"` goes with `partition-table = \"{}\"`, not \"{partition_table}\"",
            tfile.display,
            if boot == "systemd-boot" { "gpt" } else { "mbr" }
        ),
        _ => bail!(
            "{}: `boot = \"{boot}\"` is not supported; use systemd-boot or raspi-firmware",
            tfile.display
        ),
    }
    for o in &layer.outputs {
        if !["qcow2", "img.xz"].contains(&o.as_str()) {
            bail!(
                "{}: `outputs` names `{o}`; imgforge writes qcow2 and img.xz (the .img, \
                 .bmap, manifest and SHA256SUMS are always written)",
                tfile.display
            );
        }
    }
    let suite = layer.suite.clone().unwrap_or_else(|| "trixie".into());
    // `name/backports` is the name from this suite's backports.
    let packages: Vec<String> = layer
        .packages
        .iter()
        .map(|p| match p.strip_suffix("/backports") {
            Some(name) => format!("{name}/{suite}-backports"),
            None => p.clone(),
        })
        .collect();

    let host = pick_host(&site, &sfile.display, req)?;
    for svc in &layer.services {
        validate_service(svc, &rfile.display)?;
    }
    validate_apps_and_env(&layer.apps, &layer.services, &layer.slots, &rfile.display)?;
    let view = SiteView {
        site: &site,
        display: &sfile.display,
    };
    let firewall = crate::firewall::ruleset(&view, &host.name, &req.role, &layer.services)?;
    let gateway_config = match layer
        .services
        .iter()
        .find(|s| s.exec.first().is_some_and(|e| e.ends_with("/gateway")))
    {
        Some(gw) => Some(crate::gateway_config::render(
            &view,
            &host.name,
            &gw.name,
            &layer.slots,
        )?),
        None => None,
    };
    let site_dir = match src {
        ProfileSource::Dir(d) => Some(d.join("sites")),
        ProfileSource::Embedded => None,
    };
    let site_host = site.hosts.iter().find(|h| h.name == host.name);
    let mut apps = Vec::new();
    for app in &layer.apps {
        let Some(rel) = site_host.and_then(|h| h.apps.get(&app.name)) else {
            bail!(
                "{}: role `{}` has the app slot `{}`: host `{}` must name its source (apps = {{ {} = \"path/to/app\" }})",
                sfile.display, req.role, app.name, host.name, app.name
            );
        };
        apps.push(AppPlan {
            name: app.name.clone(),
            description: app.description.clone(),
            requirements: app.requirements.clone(),
            source: crate::app_source::resolve(site_dir.as_deref(), rel),
        });
    }
    if let Some(h) = site_host {
        for name in h.apps.keys() {
            if !layer.apps.iter().any(|a| &a.name == name) {
                bail!(
                    "{}: host `{}`: role `{}` has no app slot `{name}`",
                    sfile.display,
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
            let net = crate::site::parse_net(&h.address)?;
            Some(SiteHost {
                name: h.name.clone(),
                fqdn: format!("{}.{}", h.name, site.domain),
                address: net.addr.to_string(),
            })
        })
        .collect();
    for slot in &layer.slots {
        let ok = !slot.name.is_empty()
            && slot
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok {
            bail!(
                "{}: slot name `{}` must be lower-case letters, digits, '-' or '_'",
                rfile.display,
                slot.name
            );
        }
        if slot.generate && slot.kind != seed_area::SlotKind::Secret {
            bail!(
                "{}: slot `{}`: only a slot of kind \"secret\" can be generated on the node",
                rfile.display,
                slot.name
            );
        }
        if !layer.services.iter().any(|s| s.name == slot.service) {
            bail!(
                "{}: slot `{}` is read by service `{}`, which the role does not run",
                rfile.display,
                slot.name,
                slot.service
            );
        }
    }
    validate_databases_and_jobs(
        &layer.packages,
        &layer.slots,
        &layer.databases,
        &layer.jobs,
        &rfile.display,
    )?;
    let q = layer.qemu.unwrap_or_default();
    let qemu = resolve_qemu(q, &tfile.display)?;

    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds"))?,
        Err(_) => DEFAULT_EPOCH,
    };

    Ok(Plan {
        role: req.role.clone(),
        target: req.target.clone(),
        site: req.site.clone(),
        host,
        suite,
        arch,
        rust_target: need(layer.rust_target, "rust-target")?,
        partition_table,
        boot,
        packages: sorted_unique(packages),
        apt_components: sorted_unique(layer.apt_components),
        outputs: sorted_unique(layer.outputs),
        raspi: layer.raspi,
        enable_units: sorted_unique(layer.enable_units),
        initramfs_modules: sorted_unique(layer.initramfs_modules),
        kernel_cmdline: unique_in_order(layer.kernel_cmdline),
        esp_size_mib: layer.esp_size_mib.unwrap_or(64),
        root_free_mib: layer.root_free_mib.unwrap_or(256),
        boot_timeout_secs: layer.boot_timeout_secs.unwrap_or(300),
        source_date_epoch,
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
    })
}

/// App slots are plain names; a service's app is one of them; `${slot:NAME}` in its
/// environment names a slot of the role; and a service with ports does not bind loopback.
fn validate_apps_and_env(
    apps: &[crate::profile::App],
    services: &[Service],
    slots: &[Slot],
    display: &str,
) -> Result<()> {
    for app in apps {
        if !plain_name(&app.name, '-') {
            bail!(
                "{display}: app slot name `{}` must be lower-case letters, digits, '-' or '_'",
                app.name
            );
        }
    }
    for svc in services {
        if let Some(a) = &svc.app {
            if !apps.iter().any(|x| &x.name == a) {
                bail!("{display}: service `{}` runs app `{a}`, which is not an app slot of the role ([[app]])", svc.name);
            }
        }
        for (k, v) in &svc.env {
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                bail!(
                    "{display}: service `{}`: env key `{k}` must be letters, digits and '_'",
                    svc.name
                );
            }
            if v.contains('\n') {
                bail!(
                    "{display}: service `{}`: env `{k}` holds a line break",
                    svc.name
                );
            }
            for slot in env_slots(v) {
                if !slots.iter().any(|s| s.name == slot) {
                    bail!("{display}: service `{}`: env `{k}` names `${{slot:{slot}}}`, which is not a slot of the role", svc.name);
                }
            }
        }
        if !svc.ports.is_empty() {
            if let Some(w) = svc
                .exec
                .iter()
                .find(|w| w.contains("127.0.0.1:") || w.contains("localhost:"))
            {
                bail!(
                    "{display}: service `{}` listens on `{w}`, which other hosts cannot reach (the proxy gets a 502): bind 0.0.0.0 and let the firewall say who may connect",
                    svc.name
                );
            }
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

/// A plain PostgreSQL name, or a unit-name-safe job name.
fn plain_name(s: &str, extra: char) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == extra)
}

fn validate_databases_and_jobs(
    packages: &[String],
    slots: &[Slot],
    databases: &[Database],
    jobs: &[Job],
    display: &str,
) -> Result<()> {
    let uses_pg = !databases.is_empty() || !jobs.is_empty();
    if uses_pg && !packages.iter().any(|p| p == "postgresql") {
        bail!("{display}: databases and pg-dump jobs need PostgreSQL: add \"postgresql\" to `packages`");
    }
    for d in databases {
        for (what, n) in [("database", &d.name), ("owner", &d.owner)] {
            if !plain_name(n, '_') {
                bail!("{display}: {what} name `{n}` must be lower-case letters, digits or '_', starting with a letter");
            }
        }
        if !slots.iter().any(|s| s.name == d.password_slot) {
            bail!(
                "{display}: database `{}`: password-slot `{}` is not a slot of the role",
                d.name,
                d.password_slot
            );
        }
    }
    for j in jobs {
        if !plain_name(&j.name, '-') {
            bail!(
                "{display}: job name `{}` must be lower-case letters, digits, '-' or '_'",
                j.name
            );
        }
        if !plain_name(&j.pg_dump.database, '_') {
            bail!(
                "{display}: job `{}`: database name `{}` is not a plain name",
                j.name,
                j.pg_dump.database
            );
        }
        if j.schedule.is_empty() || j.schedule.contains('\n') {
            bail!(
                "{display}: job `{}`: schedule must be one systemd calendar expression",
                j.name
            );
        }
    }
    Ok(())
}

fn pick_host(site: &Site, display: &str, req: &Request) -> Result<HostPlan> {
    let host = match &req.host {
        Some(name) => {
            let h = site.hosts.iter().find(|h| &h.name == name).ok_or_else(|| {
                let names: Vec<_> = site.hosts.iter().map(|h| h.name.as_str()).collect();
                anyhow!("{display}: no host `{name}`; hosts: {}", names.join(", "))
            })?;
            if h.role != req.role {
                bail!(
                    "{display}: host `{name}` runs role `{}`, not `{}`",
                    h.role,
                    req.role
                );
            }
            Some(h)
        }
        None => site.hosts.iter().find(|h| h.role == req.role),
    };
    // A role with no host in the site still builds: the image is named after the role.
    let (name, address, gateway, dns) = match host {
        Some(h) => (
            h.name.clone(),
            h.address.clone(),
            h.gateway.clone(),
            h.dns.clone(),
        ),
        None => (req.role.clone(), "dhcp".to_string(), None, vec![]),
    };
    if !valid_hostname(&name) {
        bail!("{display}: host name `{name}` is not a valid hostname (letters, digits, '-')");
    }
    if address != "dhcp" && !address.contains('/') {
        bail!("{display}: host `{name}`: address `{address}` must be `dhcp` or ADDRESS/PREFIX");
    }
    Ok(HostPlan {
        fqdn: format!("{name}.{}", site.domain),
        name,
        address,
        gateway,
        dns,
    })
}

fn valid_hostname(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !n.starts_with('-')
}

fn validate_service(svc: &Service, display: &str) -> Result<()> {
    let name_ok = !svc.name.is_empty()
        && svc
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if !name_ok {
        bail!(
            "{display}: service name `{}` is not a valid unit name",
            svc.name
        );
    }
    match svc.exec.first() {
        Some(p) if p.starts_with('/') => {}
        _ => bail!(
            "{display}: service `{}`: `exec` must start with an absolute path",
            svc.name
        ),
    }
    if let Some(url) = &svc.health {
        if !url.starts_with("http://") {
            bail!(
                "{display}: service `{}`: health `{url}` must be an http:// URL",
                svc.name
            );
        }
    }
    Ok(())
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
            role: role.into(),
            target: target.into(),
            site: DEFAULT_SITE.into(),
            host: None,
        }
    }

    #[test]
    fn default_plan_merges_layers() {
        let plan = resolve(&ProfileSource::Embedded, &req(DEFAULT_ROLE, DEFAULT_TARGET)).unwrap();
        assert_eq!(plan.arch, "amd64");
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
            ["start4.elf", "fixup4.dat"]
        );
        assert_eq!(rpi4.apt_components, ["non-free-firmware"]);
        assert_eq!(rpi4.outputs, ["img.xz"]);
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
    fn bad_host_address_is_rejected_with_file() {
        let site: Site = parse_toml(
            "sites/x.toml",
            "domain = \"example.test\"\n[[host]]\nname = \"edge\"\nrole = \"proxy\"\naddress = \"10.0.0.1\"\n",
        )
        .unwrap();
        let err = pick_host(&site, "sites/x.toml", &req("proxy", "x86_64-vm"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("sites/x.toml: host `edge`: address `10.0.0.1`"),
            "{err}"
        );
    }
}
