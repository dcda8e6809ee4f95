//! The drivers a board needs to reach its root, derived from the board's own device trees
//! and the kernel's own tables (not listed by hand): start at the node of the storage the
//! root lives on, follow every node it depends on (its bus parents, supplies, pin
//! controllers, GPIOs, clocks, resets, power domains, interrupt and MSI controllers, and
//! theirs in turn), map each node's `compatible` to the module that claims it in
//! `modules.alias` (or to built-in code), then close the set over `modules.dep`.
//!
//! The same walk from the `ethernet0` alias checks that the wired network's drivers exist in
//! the kernel (they load from the root, after it is mounted, so they stay out of the
//! initramfs).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::device_tree::Tree;
use super::kernel_tables::{KernelTables, Provider};

/// What the walk starts from, for one root device of a target (profiles/targets/*.toml,
/// `[raspi.storage.<device>]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Storage {
    /// Path of the storage controller's node in every device tree of the target.
    pub node: String,
    /// Modaliases of devices the tree does not describe (an NVMe drive or a USB disk
    /// found by probing a bus), matched against modules.alias like a real device's.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Modules the block layer needs on top, by name (mmc_block for an SD card).
    #[serde(default)]
    pub modules: Vec<String>,
}

/// What a walk needs: the device trees' files, where to start, what to add.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Spec {
    pub device_trees: Vec<String>,
    /// The root device's name, for messages (sd, nvme, usb).
    pub root_device: String,
    pub storage: Storage,
    /// The target's own `initramfs-modules` (virtio for QEMU's virt machine).
    pub extra_modules: Vec<String>,
}

/// One module of the result with the first reason found for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Driver {
    pub module: String,
    pub built_in: bool,
    /// Why: the node and the chain of references that led to it, or the module that
    /// depends on it, or the profile that names it.
    pub needed_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub device_tree: String,
    pub node: String,
    pub what: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Derivation {
    pub kernel: String,
    /// Drivers of the root path: what the initramfs must carry (built-in ones shown too).
    pub root: Vec<Driver>,
    /// Drivers of the wired network (loaded from the root).
    pub network: Vec<Driver>,
    pub problems: Vec<Problem>,
}

impl Derivation {
    /// The modules to put in the initramfs (built-in ones need nothing).
    pub fn initramfs_modules(&self) -> Vec<&str> {
        self.root
            .iter()
            .filter(|d| !d.built_in)
            .map(|d| d.module.as_str())
            .collect()
    }

    /// One line per driver: `module<TAB>module|built-in<TAB>reason`, root first.
    pub fn to_tsv(&self) -> String {
        let mut s = format!("# kernel {}\n", self.kernel);
        for (part, list) in [("root", &self.root), ("network", &self.network)] {
            for d in list {
                s.push_str(&format!(
                    "{part}\t{}\t{}\t{}\n",
                    d.module,
                    if d.built_in { "built-in" } else { "module" },
                    d.needed_by
                ));
            }
        }
        s
    }
}

/// Derives the drivers for `spec` from the kernel and device trees installed in `root`.
pub fn derive(root: &Path, spec: &Spec) -> Result<Derivation> {
    let tables = KernelTables::load(root)?;
    let dtb_dir = tables.dtb_dir(root).join("broadcom");
    let mut root_drivers = Drivers::default();
    let mut network = Drivers::default();
    let mut problems = Vec::new();
    for name in &spec.device_trees {
        let tree = Tree::read(&dtb_dir.join(name))?;
        let Some(start) = tree.find(&spec.storage.node) else {
            bail!(
                "{name} (kernel {}) has no node {} for root-device `{}`",
                tables.version,
                spec.storage.node,
                spec.root_device
            );
        };
        let mut starts = vec![start];
        // A bus controller (PCIe) brings the devices described below it (a USB host).
        starts.extend(
            tree.descendants(start)
                .into_iter()
                .filter(|&i| tree.nodes[i].enabled() && !tree.nodes[i].compatibles().is_empty()),
        );
        walk(
            &tree,
            &tables,
            name,
            &starts,
            &mut root_drivers,
            &mut problems,
        );
        if let Some(eth) = tree.alias("ethernet0") {
            walk(&tree, &tables, name, &[eth], &mut network, &mut problems);
        }
    }
    for modalias in &spec.storage.devices {
        let found = tables.modules_for(modalias);
        if found.is_empty() {
            bail!(
                "kernel {}: no module in modules.alias claims {modalias} (root-device `{}`)",
                tables.version,
                spec.root_device
            );
        }
        for m in found {
            root_drivers.add(
                &m,
                false,
                format!("a {} device ({modalias})", spec.root_device),
            );
        }
    }
    let named = spec
        .storage
        .modules
        .iter()
        .map(|m| (m, format!("the {} block layer", spec.root_device)))
        .chain(
            spec.extra_modules
                .iter()
                .map(|m| (m, "the target's initramfs-modules".to_string())),
        );
    for (m, why) in named {
        match tables.named(m) {
            Some(Provider::Module(name)) => root_drivers.add(&name, false, why),
            Some(Provider::BuiltIn) => root_drivers.add(&m.replace('-', "_"), true, why),
            None => bail!("kernel {} has no module {m} ({why})", tables.version),
        }
    }
    // modules.dep: what each module needs loaded first.
    let loadable: Vec<String> = root_drivers
        .list
        .values()
        .filter(|d| !d.built_in)
        .map(|d| d.module.clone())
        .collect();
    for m in loadable {
        for dep in tables.dependencies(&m) {
            root_drivers.add(&dep, false, format!("{m} (modules.dep)"));
        }
    }
    for d in root_drivers.list.values().chain(network.list.values()) {
        if !d.built_in && tables.file(&d.module).is_none() {
            problems.push(Problem {
                device_tree: String::new(),
                node: d.needed_by.clone(),
                what: format!(
                    "module {} is in modules.alias but not in modules.dep",
                    d.module
                ),
            });
        }
    }
    Ok(Derivation {
        kernel: tables.version,
        root: root_drivers.list.into_values().collect(),
        network: network.list.into_values().collect(),
        problems,
    })
}

#[derive(Default)]
struct Drivers {
    list: BTreeMap<String, Driver>,
}

impl Drivers {
    fn add(&mut self, module: &str, built_in: bool, needed_by: String) {
        self.list.entry(module.to_string()).or_insert(Driver {
            module: module.to_string(),
            built_in,
            needed_by,
        });
    }
}

/// Breadth first from `starts`: every node reached needs a driver, found as
/// `driver_of` says; a node without `compatible` (a pin configuration, a regulator's
/// state) stands for its nearest ancestor that has one.
fn walk(
    tree: &Tree,
    tables: &KernelTables,
    dtb: &str,
    starts: &[usize],
    out: &mut Drivers,
    problems: &mut Vec<Problem>,
) {
    let mut seen = HashSet::new();
    let mut queue: VecDeque<(usize, String)> = starts
        .iter()
        .map(|&s| (s, tree.nodes[s].path.clone()))
        .collect();
    while let Some((i, chain)) = queue.pop_front() {
        if !seen.insert(i) {
            continue;
        }
        let node = &tree.nodes[i];
        if node.path == "/" {
            continue;
        }
        let compatibles = node.compatibles();
        if compatibles.is_empty() {
            if let Some(p) = node.parent {
                queue.push_back((p, format!("{chain} -> parent {}", tree.nodes[p].path)));
            }
            continue;
        }
        // A disabled supplier never gets a device, and the kernel's fw_devlink does not
        // make a consumer wait for it (cprman lists the DSI blocks' clocks, for example):
        // not a dependency.
        if !node.enabled() {
            continue;
        }
        match driver_of(tree, tables, i) {
            Some(found) => {
                for (module, built_in) in found {
                    out.add(
                        &module,
                        built_in,
                        format!("{chain} [{}] ({dtb})", compatibles[0]),
                    );
                }
            }
            None => problems.push(Problem {
                device_tree: dtb.to_string(),
                node: node.path.clone(),
                what: format!(
                    "no driver in kernel {} claims {} (needed by {chain})",
                    tables.version,
                    compatibles.join(", ")
                ),
            }),
        }
        if let Some(p) = node.parent {
            queue.push_back((p, format!("{chain} -> bus {}", tree.nodes[p].path)));
        }
        for (prop, t) in tree.references(i) {
            queue.push_back((t, format!("{chain} -> {prop} {}", tree.nodes[t].path)));
        }
    }
}

/// The modules (or built-in code) that bind to node `i`: modules.alias against the
/// modalias the kernel gives the node, then the compatible strings in the kernel image,
/// then, for a PCI device described in the tree (`pciVVVV,DDDD`), its PCI modalias.
fn driver_of(tree: &Tree, tables: &KernelTables, i: usize) -> Option<Vec<(String, bool)>> {
    let node = &tree.nodes[i];
    let compatibles = node.compatibles();
    let mut modalias = format!("of:N{}T", node.base_name());
    modalias.push_str(
        node.prop("device_type")
            .and_then(|v| {
                super::device_tree::string_list(v)
                    .first()
                    .map(|s| s.to_string())
            })
            .as_deref()
            .unwrap_or("(null)"),
    );
    for c in &compatibles {
        modalias.push('C');
        modalias.push_str(c);
    }
    let modules = tables.modules_for(&modalias);
    if !modules.is_empty() {
        return Some(modules.into_iter().map(|m| (m, false)).collect());
    }
    if compatibles.iter().any(|c| tables.builtin_compatible(c)) {
        return Some(vec![(compatibles[0].to_string(), true)]);
    }
    for c in &compatibles {
        if let Some(pci) = pci_modalias(c) {
            let modules = tables.modules_for(&pci);
            if !modules.is_empty() {
                return Some(modules.into_iter().map(|m| (m, false)).collect());
            }
        }
    }
    None
}

/// `pci1de4,1` (a PCI device's compatible, vendor and device in hex) -> the modalias the
/// kernel gives that device, with zero subsystem and class.
fn pci_modalias(compatible: &str) -> Option<String> {
    let ids = compatible.strip_prefix("pci")?;
    let (vendor, device) = ids.split_once(',')?;
    let vendor = u32::from_str_radix(vendor, 16).ok()?;
    let device = u32::from_str_radix(device, 16).ok()?;
    Some(format!(
        "pci:v{vendor:08X}d{device:08X}sv00000000sd00000000bc00sc00i00"
    ))
}

/// One line of a derivation's TSV (Derivation::to_tsv), read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// `root` or `network`.
    pub part: String,
    pub module: String,
    pub built_in: bool,
    pub needed_by: String,
}

pub fn read_tsv(path: &Path) -> Result<Vec<Row>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.splitn(4, '\t').collect();
        let [part, module, kind, needed_by] = f.as_slice() else {
            bail!(
                "{} line {}: expected 4 tab-separated fields",
                path.display(),
                n + 1
            );
        };
        rows.push(Row {
            part: part.to_string(),
            module: module.to_string(),
            built_in: *kind == "built-in",
            needed_by: needed_by.to_string(),
        });
    }
    Ok(rows)
}

/// Reads a derivation's spec (written by the base stage for the mmdebstrap hook).
pub fn read_spec(path: &Path) -> Result<Spec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_compatibles_become_modaliases() {
        assert_eq!(
            pci_modalias("pci1de4,1").as_deref(),
            Some("pci:v00001DE4d00000001sv00000000sd00000000bc00sc00i00")
        );
        assert_eq!(pci_modalias("brcm,bcm2712-pcie"), None);
    }
}
