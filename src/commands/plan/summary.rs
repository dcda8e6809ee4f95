//! What `imgforge plan` shows a person (and, as JSON, a script): the image a role on a target
//! becomes, in the spirit of mkosi's `summary`. Built from the resolved [`Plan`] and the site
//! it was resolved against (who may reach each port is the site's to say).
//!
//! Plan fields are formatted with `{}` / `to_string()`, never matched as strings where that
//! can be helped, so they may become enums with Display without this module changing.

use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;

use crate::disk::ids::Part;
use crate::disk::layout::{self, MIB};
use crate::plan::Plan;
use crate::profile::machine::PartitionTable;
use crate::site::firewall::PROXY_ROLE;
use crate::site::{SiteView, Sources};

/// The summary. Its JSON form (`plan --json`) is documented in the README; keep the two in
/// step and only add keys.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub role: String,
    pub target: String,
    pub site: String,
    pub host: Host,
    pub suite: String,
    pub arch: String,
    pub disk: Disk,
    /// File names written to the output folder.
    pub outputs: Vec<String>,
    pub packages: Vec<String>,
    /// The role's services, then sshd (every image has it).
    pub services: Vec<Service>,
    /// The gateway's routes this host serves (empty unless it runs the gateway).
    pub routes: Vec<Route>,
    pub slots: Vec<Slot>,
    pub apps: Vec<App>,
    pub databases: Vec<Database>,
    pub jobs: Vec<Job>,
}

#[derive(Debug, Serialize)]
pub struct Host {
    pub name: String,
    pub fqdn: String,
    /// `dhcp` or ADDRESS/PREFIX.
    pub address: String,
}

#[derive(Debug, Serialize)]
pub struct Disk {
    pub partition_table: String,
    pub boot: String,
    /// A Pi card's root storage (`sd`, `nvme`, `usb`): the initramfs's drivers follow it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_storage: Option<String>,
    pub partitions: Vec<Partition>,
}

#[derive(Debug, Serialize)]
pub struct Partition {
    pub number: u32,
    /// The GPT partition name, or for an MBR the part imgforge gives it.
    pub name: String,
    /// `vfat`, `ext4`, or `-` (the seed area is raw).
    pub filesystem: String,
    /// None for the partitions after the first root slot: they follow it, and it is sized
    /// at build time from its content.
    pub start_mib: Option<u64>,
    /// None for the root slots and data: they are sized at build time from their content.
    pub size_mib: Option<u64>,
    /// The root's room beyond its content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_mib: Option<u64>,
    pub holds: String,
}

#[derive(Debug, Serialize)]
pub struct Service {
    pub name: String,
    pub description: String,
    pub ports: Vec<Port>,
}

#[derive(Debug, Serialize)]
pub struct Port {
    pub port: u16,
    pub open_to: OpenTo,
    /// Who may connect when `open_to` is `hosts`.
    pub from: Vec<Source>,
}

/// Who the firewall lets reach a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenTo {
    /// The service is public (the gateway's 80 and 443).
    Public,
    /// The site's `[[access]]` says `from = ["any"]`.
    Any,
    /// The hosts and networks in `from`.
    Hosts,
    /// No host of the site reaches it: only the node itself.
    NodeOnly,
}

#[derive(Debug, Serialize)]
pub struct Source {
    /// A host of the site, or `lan`.
    pub name: String,
    /// Its address or network.
    pub address: String,
}

#[derive(Debug, Serialize)]
pub struct Route {
    pub domain: String,
    pub prefix: String,
    pub to: String,
    pub access: String,
    pub auth: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Slot {
    pub name: String,
    pub kind: String,
    pub service: String,
    pub required: bool,
    pub generate: bool,
    pub description: String,
}

#[derive(Debug, Serialize)]
pub struct App {
    pub name: String,
    pub description: String,
    pub source: String,
}

#[derive(Debug, Serialize)]
pub struct Database {
    pub name: String,
    pub owner: String,
    pub password_slot: String,
}

#[derive(Debug, Serialize)]
pub struct Job {
    pub name: String,
    pub description: String,
    pub schedule: String,
    pub at_boot: bool,
}

pub fn summarize(plan: &Plan, view: &SiteView) -> Result<Summary> {
    let host = &plan.host.name;
    let mut services = Vec::new();
    for s in &plan.services {
        let mut ports = Vec::new();
        for port in &s.ports {
            let port = port.get();
            ports.push(if s.public {
                Port {
                    port,
                    open_to: OpenTo::Public,
                    from: vec![],
                }
            } else {
                reach(port, view.sources(host, port, PROXY_ROLE)?)
            });
        }
        services.push(Service {
            name: s.name.to_string(),
            description: s.description.to_string(),
            ports,
        });
    }
    // The firewall lets ssh in from the site's LAN, or from anywhere when it names none.
    let lan = view.lan();
    let ssh = if lan.is_empty() {
        Port {
            port: 22,
            open_to: OpenTo::Any,
            from: vec![],
        }
    } else {
        Port {
            port: 22,
            open_to: OpenTo::Hosts,
            from: lan
                .iter()
                .map(|n| Source {
                    name: "lan".into(),
                    address: n.to_string(),
                })
                .collect(),
        }
    };
    services.push(Service {
        name: "ssh".into(),
        description: "OpenSSH server (keys only)".into(),
        ports: vec![ssh],
    });

    let mut routes = Vec::new();
    if plan.gateway_config.is_some() {
        for (i, r) in view.site.routes.iter().enumerate() {
            if view.via(i, PROXY_ROLE)? == *host {
                routes.push(Route {
                    domain: r.domain.to_string(),
                    prefix: r.prefix.to_string(),
                    to: r.to.to_string(),
                    access: r.access.to_string(),
                    auth: r.auth.as_ref().map(|a| a.to_string()),
                });
            }
        }
    }

    Ok(Summary {
        role: plan.role.clone(),
        target: plan.target.clone(),
        site: plan.site.clone(),
        host: Host {
            name: plan.host.name.clone(),
            fqdn: plan.host.fqdn.clone(),
            address: plan.host.address.to_string(),
        },
        suite: plan.suite.clone(),
        arch: plan.arch.to_string(),
        disk: disk(plan),
        outputs: outputs(plan),
        packages: plan.packages.iter().map(|p| p.to_string()).collect(),
        services,
        routes,
        slots: plan
            .slots
            .iter()
            .map(|s| Slot {
                name: s.name.clone(),
                kind: slot_kind(s.kind).into(),
                service: s.service.clone(),
                required: s.required,
                generate: s.generate,
                description: s.description.clone(),
            })
            .collect(),
        apps: plan
            .apps
            .iter()
            .map(|a| App {
                name: a.name.clone(),
                description: a.description.clone(),
                source: a.source.clone(),
            })
            .collect(),
        databases: plan
            .databases
            .iter()
            .map(|d| Database {
                name: d.name.clone(),
                owner: d.owner.clone(),
                password_slot: d.password_slot.clone(),
            })
            .collect(),
        jobs: plan
            .jobs
            .iter()
            .map(|j| Job {
                name: j.name.clone(),
                description: j.description.to_string(),
                schedule: j.schedule.to_string(),
                at_boot: j.at_boot,
            })
            .collect(),
    })
}

/// A slot kind as the profiles spell it.
fn slot_kind(k: seed_area::SlotKind) -> &'static str {
    match k {
        seed_area::SlotKind::Secret => "secret",
        seed_area::SlotKind::Htpasswd => "htpasswd",
        seed_area::SlotKind::LoginUsers => "login-users",
    }
}

/// Who may reach a non-public port, from the site's answer.
fn reach(port: u16, sources: Option<Sources>) -> Port {
    let (open_to, from) = match sources {
        Some(Sources::Any) => (OpenTo::Any, vec![]),
        Some(Sources::Nets(nets)) => (
            OpenTo::Hosts,
            nets.into_iter()
                .map(|(net, name)| Source {
                    name,
                    address: net.to_string(),
                })
                .collect(),
        ),
        None => (OpenTo::NodeOnly, vec![]),
    };
    Port {
        port,
        open_to,
        from,
    }
}

/// The partitions `disk::layout` places (the stage `image` writes them in this order).
fn disk(plan: &Plan) -> Disk {
    // The slots are fixed; the data partition's size depends on the composed /var.
    let lay = layout::plan(
        plan.partition_table,
        plan.esp_size_mib,
        crate::seed::SIZE,
        plan.root_slot_mib * MIB,
        0,
    );
    let table = plan.partition_table.as_str();
    // A Pi card (boot by raspi-firmware, which the plan only allows with a [raspi] table and
    // an MBR) names its first partition `boot`; a UEFI disk's is the ESP.
    let (boot_name, boot_holds) = if plan.raspi.is_some() {
        (
            "boot-a",
            "slot A's Pi firmware, config.txt, device trees, kernel, initramfs",
        )
    } else {
        ("esp", "systemd-boot, kernel, initramfs")
    };
    // An MBR has no names: the summary gives the ones `inspect` shows.
    let (slot_a, slot_b) = if plan.partition_table == PartitionTable::Mbr {
        ("root-a".to_string(), "root-b".to_string())
    } else {
        (
            seed_area::disk::slot_name(&plan.version),
            seed_area::disk::EMPTY_SLOT_NAME.to_string(),
        )
    };
    let part = |number: u32,
                name: &str,
                fs: &str,
                start: Option<u64>,
                size: Option<u64>,
                free: Option<u64>,
                holds: &str| Partition {
        number,
        name: name.into(),
        filesystem: fs.into(),
        start_mib: start,
        size_mib: size,
        free_mib: free,
        holds: holds.into(),
    };
    Disk {
        partition_table: plan.partition_table.to_string(),
        boot: plan.boot.to_string(),
        root_storage: plan.raspi.as_ref().map(|r| r.root_device.to_string()),
        partitions: [
            lay.card.map(|c| {
                part(
                    crate::disk::ids::MBR_AUTOBOOT,
                    "autoboot",
                    "vfat",
                    Some(c.autoboot.offset / MIB),
                    Some(c.autoboot.len / MIB),
                    None,
                    "autoboot.txt: which slot's boot partition the Pi firmware starts",
                )
            }),
            Some(part(
                Part::Boot.number(table),
                boot_name,
                "vfat",
                Some(lay.esp.offset / MIB),
                Some(lay.esp.len / MIB),
                None,
                boot_holds,
            )),
            lay.card.map(|c| {
                part(
                    crate::disk::ids::MBR_BOOT_B,
                    "boot-b",
                    "vfat",
                    Some(c.boot_b.offset / MIB),
                    Some(c.boot_b.len / MIB),
                    None,
                    "slot B's boot files: empty until an update writes them",
                )
            }),
            Some(part(
                Part::Seed.number(table),
                crate::seed::PART_NAME,
                "-",
                Some(lay.seed.offset / MIB),
                Some(lay.seed.len / MIB),
                None,
                "secrets given by `seed` or `flash --secrets`",
            )),
            Some(part(
                Part::RootA.number(table),
                &slot_a,
                "ext4",
                Some(lay.root_a.offset / MIB),
                Some(lay.root_a.len / MIB),
                None,
                "root slot A: the system, read-only; this version",
            )),
            Some(part(
                Part::RootB.number(table),
                &slot_b,
                "-",
                Some(lay.root_b.offset / MIB),
                Some(lay.root_b.len / MIB),
                None,
                "root slot B: empty until an update writes it",
            )),
            Some(part(
                Part::Data.number(table),
                seed_area::disk::DATA_PART_NAME,
                "ext4",
                Some(lay.data.offset / MIB),
                None,
                Some(256),
                "all state (/var); grows to the disk's end at first boot",
            )),
        ]
        .into_iter()
        .flatten()
        .collect(),
    }
}

/// The files `build` writes into the output folder.
fn outputs(plan: &Plan) -> Vec<String> {
    let name = plan.image_name();
    let mut v = vec![format!("{name}.img"), format!("{name}.img.bmap")];
    v.extend(plan.outputs.iter().map(|o| format!("{name}.{o}")));
    v.push(format!("{name}.manifest.json"));
    v.push("SHA256SUMS".into());
    v
}

/// The summary for a person: one section per subject, columns aligned.
pub fn render(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} on {}: host {} of site {}",
        s.role, s.target, s.host.fqdn, s.site
    );
    let _ = writeln!(o, "  system      Debian {}, {}", s.suite, s.arch);
    let _ = writeln!(o, "  address     {}", s.host.address);

    let _ = writeln!(
        o,
        "\nDISK ({}, boots by {})",
        s.disk.partition_table, s.disk.boot
    );
    if let Some(dev) = &s.disk.root_storage {
        let _ = writeln!(
            o,
            "  root on {dev}: the build derives its initramfs drivers from the boards' device trees"
        );
    }
    let _ = writeln!(
        o,
        "  #  {:<14} {:<5} {:<8} {:<18} holds",
        "name", "fs", "start", "size"
    );
    for p in &s.disk.partitions {
        let size = match (p.size_mib, p.free_mib) {
            (Some(mib), _) => format!("{mib} MiB"),
            (None, Some(free)) => format!("content + {free} MiB"),
            (None, None) => "content".into(),
        };
        let start = p
            .start_mib
            .map_or_else(|| "follows".to_string(), |m| format!("{m} MiB"));
        let _ = writeln!(
            o,
            "  {}  {:<14} {:<5} {start:<8} {size:<18} {}",
            p.number, p.name, p.filesystem, p.holds
        );
    }

    let _ = writeln!(o, "\nOUTPUTS");
    for f in &s.outputs {
        let _ = writeln!(o, "  {f}");
    }

    let _ = writeln!(o, "\nPACKAGES ({})", s.packages.len());
    wrap(&mut o, &s.packages, 88);

    let _ = writeln!(o, "\nSERVICES (ports, and who may reach each)");
    let width = s.services.iter().map(|x| x.name.len()).max().unwrap_or(0);
    for svc in &s.services {
        let _ = writeln!(o, "  {:<width$}  {}", svc.name, svc.description);
        if svc.ports.is_empty() {
            let _ = writeln!(o, "    no ports");
        }
        for p in &svc.ports {
            let who = match p.open_to {
                OpenTo::Public => "anyone (public)".to_string(),
                OpenTo::Any => "anyone".to_string(),
                OpenTo::NodeOnly => "the node itself only (no host of the site reaches it)".into(),
                OpenTo::Hosts => {
                    let v: Vec<String> = p
                        .from
                        .iter()
                        .map(|f| format!("{} ({})", f.name, f.address))
                        .collect();
                    v.join(", ")
                }
            };
            let port = format!("{}/tcp", p.port);
            let _ = writeln!(o, "    {port:<9} from {who}");
        }
    }

    if !s.routes.is_empty() {
        let _ = writeln!(o, "\nROUTES (served by this host's gateway)");
        let width = s
            .routes
            .iter()
            .map(|r| r.domain.len() + r.prefix.len())
            .max()
            .unwrap_or(0);
        for r in &s.routes {
            let public = format!("{}{}", r.domain, r.prefix);
            let auth = r
                .auth
                .as_ref()
                .map(|a| format!(", auth {a}"))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "  {public:<width$}  -> {}, from {}{auth}",
                r.to, r.access
            );
        }
    }

    let _ = writeln!(o, "\nSLOTS (secrets, never in the image)");
    if s.slots.is_empty() {
        let _ = writeln!(o, "  none");
    }
    let width = s.slots.iter().map(|x| x.name.len()).max().unwrap_or(0);
    let kinds = s.slots.iter().map(|x| x.kind.len()).max().unwrap_or(0);
    for slot in &s.slots {
        let need = match (slot.required, slot.generate) {
            (_, true) => "generated on first boot unless seeded",
            (true, false) => "required: give it when seeding",
            (false, false) => "optional",
        };
        let _ = writeln!(
            o,
            "  {:<width$}  {:<kinds$}  for {}; {need}",
            slot.name, slot.kind, slot.service
        );
    }

    let _ = writeln!(o, "\nAPPS");
    if s.apps.is_empty() {
        let _ = writeln!(o, "  none");
    }
    let width = s.apps.iter().map(|x| x.name.len()).max().unwrap_or(0);
    for a in &s.apps {
        let _ = writeln!(o, "  {:<width$}  /opt/{} from {}", a.name, a.name, a.source);
    }

    if !s.databases.is_empty() {
        let _ = writeln!(o, "\nDATABASES (PostgreSQL)");
        for d in &s.databases {
            let _ = writeln!(
                o,
                "  {}  owner {}, password from slot {}",
                d.name, d.owner, d.password_slot
            );
        }
    }
    if !s.jobs.is_empty() {
        let _ = writeln!(o, "\nJOBS");
        for j in &s.jobs {
            let boot = if j.at_boot { ", and at every boot" } else { "" };
            let _ = writeln!(o, "  {}  {}: {}{boot}", j.name, j.description, j.schedule);
        }
    }
    o
}

/// Words on indented lines of at most `width` columns.
fn wrap(o: &mut String, words: &[String], width: usize) {
    let mut line = String::from(" ");
    for w in words {
        if line.len() + 1 + w.len() > width && line.len() > 1 {
            let _ = writeln!(o, "{line}");
            line = String::from(" ");
        }
        line.push(' ');
        line.push_str(w);
    }
    if line.len() > 1 {
        let _ = writeln!(o, "{line}");
    }
}
