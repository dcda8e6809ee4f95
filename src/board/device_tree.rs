//! A flattened device tree (.dtb) read into an owned tree that can be walked both ways:
//! parent to children, and from a property that names another node (a phandle) to that
//! node. The `fdt` crate parses the blob; it gives no parent links and finds a phandle by
//! scanning, so the tree is indexed once here.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, Context, Result};

pub struct Node {
    /// Full path, e.g. `/emmc2bus/mmc@7e340000`.
    pub path: String,
    pub parent: Option<usize>,
    props: Vec<(String, Vec<u8>)>,
}

impl Node {
    pub fn prop(&self, name: &str) -> Option<&[u8]> {
        self.props
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn props(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.props.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// The node's name without its unit address (`mmc` for `mmc@7e340000`), as the
    /// kernel writes it in a device's modalias.
    pub fn base_name(&self) -> &str {
        let last = self.path.rsplit('/').next().unwrap_or("");
        last.split('@').next().unwrap_or(last)
    }

    /// The `compatible` strings, most specific first.
    pub fn compatibles(&self) -> Vec<&str> {
        string_list(self.prop("compatible").unwrap_or(&[]))
    }

    /// `status` absent or "okay"/"ok": the kernel creates a device for the node.
    pub fn enabled(&self) -> bool {
        match self.prop("status") {
            None => true,
            Some(v) => matches!(string_list(v).first(), Some(&"okay") | Some(&"ok")),
        }
    }

    pub fn u32(&self, name: &str) -> Option<u32> {
        self.prop(name).and_then(|v| cells(v).first().copied())
    }
}

pub struct Tree {
    pub nodes: Vec<Node>,
    by_path: HashMap<String, usize>,
    by_phandle: HashMap<u32, usize>,
}

impl Tree {
    pub fn read(path: &Path) -> Result<Tree> {
        let blob = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Tree::parse(&blob).with_context(|| format!("device tree {}", path.display()))
    }

    pub fn parse(blob: &[u8]) -> Result<Tree> {
        let fdt = fdt::Fdt::new(blob).map_err(|e| anyhow!("not a device tree blob: {e:?}"))?;
        let mut tree = Tree {
            nodes: Vec::new(),
            by_path: HashMap::new(),
            by_phandle: HashMap::new(),
        };
        let root = fdt
            .find_node("/")
            .ok_or_else(|| anyhow!("the blob has no root node"))?;
        tree.add(root, None);
        Ok(tree)
    }

    fn add(&mut self, node: fdt::node::FdtNode<'_, '_>, parent: Option<usize>) {
        let path = match parent {
            None => "/".to_string(),
            Some(p) if self.nodes[p].path == "/" => format!("/{}", node.name),
            Some(p) => format!("{}/{}", self.nodes[p].path, node.name),
        };
        let props: Vec<(String, Vec<u8>)> = node
            .properties()
            .map(|p| (p.name.to_string(), p.value.to_vec()))
            .collect();
        let index = self.nodes.len();
        self.by_path.insert(path.clone(), index);
        self.nodes.push(Node {
            path,
            parent,
            props,
        });
        for name in ["phandle", "linux,phandle"] {
            if let Some(ph) = self.nodes[index].u32(name) {
                self.by_phandle.insert(ph, index);
            }
        }
        for child in node.children() {
            self.add(child, Some(index));
        }
    }

    pub fn find(&self, path: &str) -> Option<usize> {
        self.by_path.get(path).copied()
    }

    pub fn phandle(&self, ph: u32) -> Option<usize> {
        self.by_phandle.get(&ph).copied()
    }

    /// `/aliases/NAME`'s node.
    pub fn alias(&self, name: &str) -> Option<usize> {
        let aliases = &self.nodes[self.find("/aliases")?];
        let target = string_list(aliases.prop(name)?).first()?.to_string();
        self.find(&target)
    }

    /// Every node below `index`, depth first.
    pub fn descendants(&self, index: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack = vec![index];
        while let Some(i) = stack.pop() {
            for (c, n) in self.nodes.iter().enumerate() {
                if n.parent == Some(i) {
                    out.push(c);
                    stack.push(c);
                }
            }
        }
        out
    }

    /// The interrupt controller that receives `index`'s interrupts: its own
    /// `interrupt-parent`, else its nearest ancestor's (the devicetree specification's rule).
    pub fn interrupt_parent(&self, index: usize) -> Option<usize> {
        let mut at = Some(index);
        while let Some(i) = at {
            if let Some(ph) = self.nodes[i].u32("interrupt-parent") {
                return self.phandle(ph);
            }
            at = self.nodes[i].parent;
        }
        None
    }

    /// The nodes `index` depends on through its properties, each with the property that
    /// names it: supplies, pin configurations, GPIOs, clocks, resets, power domains,
    /// mailboxes, DMA channels, PHYs, IOMMUs, PWMs, MSI and interrupt controllers.
    pub fn references(&self, index: usize) -> Vec<(String, usize)> {
        let node = &self.nodes[index];
        let mut out = Vec::new();
        for (name, value) in node.props() {
            let list = cells(value);
            match reference_kind(name) {
                Some(Kind::Single) => {
                    if let Some(t) = list.first().and_then(|ph| self.phandle(*ph)) {
                        out.push((name.to_string(), t));
                    }
                }
                Some(Kind::List) => {
                    for t in list.iter().filter_map(|ph| self.phandle(*ph)) {
                        out.push((name.to_string(), t));
                    }
                }
                Some(Kind::WithArgs(cells_name)) => {
                    let mut i = 0;
                    while i < list.len() {
                        let ph = list[i];
                        i += 1;
                        // A zero phandle is an empty slot in a GPIO list.
                        if ph == 0 {
                            continue;
                        }
                        let Some(t) = self.phandle(ph) else { break };
                        out.push((name.to_string(), t));
                        i += self.nodes[t].u32(cells_name).unwrap_or(0) as usize;
                    }
                }
                None => {}
            }
        }
        if node.prop("interrupts").is_some() {
            if let Some(ip) = self.interrupt_parent(index) {
                if ip != index {
                    out.push(("interrupts".to_string(), ip));
                }
            }
        }
        out
    }
}

enum Kind {
    /// One phandle, no arguments.
    Single,
    /// Phandles without arguments.
    List,
    /// (phandle, arguments...) entries, the count of arguments read from the provider's
    /// `#...-cells`.
    WithArgs(&'static str),
}

fn reference_kind(prop: &str) -> Option<Kind> {
    Some(match prop {
        // `interrupt-parent` alone is not a dependency: a node that has `interrupts` gets
        // its controller through Tree::interrupt_parent.
        "msi-parent" => Kind::WithArgs("#msi-cells"),
        "phy-handle" => Kind::Single,
        "clocks" | "assigned-clock-parents" => Kind::WithArgs("#clock-cells"),
        "resets" => Kind::WithArgs("#reset-cells"),
        "power-domains" => Kind::WithArgs("#power-domain-cells"),
        "mboxes" => Kind::WithArgs("#mbox-cells"),
        "dmas" => Kind::WithArgs("#dma-cells"),
        "phys" => Kind::WithArgs("#phy-cells"),
        "iommus" => Kind::WithArgs("#iommu-cells"),
        "pwms" => Kind::WithArgs("#pwm-cells"),
        "interrupts-extended" => Kind::WithArgs("#interrupt-cells"),
        "gpios" | "gpio" => Kind::WithArgs("#gpio-cells"),
        p if p.ends_with("-gpios") || p.ends_with("-gpio") => Kind::WithArgs("#gpio-cells"),
        p if p.ends_with("-supply") => Kind::Single,
        p if p
            .strip_prefix("pinctrl-")
            .is_some_and(|n| n.parse::<u32>().is_ok()) =>
        {
            Kind::List
        }
        _ => return None,
    })
}

/// A property's value as big-endian 32-bit cells.
pub fn cells(value: &[u8]) -> Vec<u32> {
    value
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A property's value as a list of NUL-terminated strings.
pub fn string_list(value: &[u8]) -> Vec<&str> {
    value
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| std::str::from_utf8(s).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_kinds() {
        assert!(matches!(reference_kind("vmmc-supply"), Some(Kind::Single)));
        assert!(matches!(reference_kind("pinctrl-0"), Some(Kind::List)));
        assert!(reference_kind("pinctrl-names").is_none());
        assert!(matches!(
            reference_kind("cd-gpios"),
            Some(Kind::WithArgs("#gpio-cells"))
        ));
        assert!(matches!(
            reference_kind("msi-parent"),
            Some(Kind::WithArgs("#msi-cells"))
        ));
        assert!(reference_kind("compatible").is_none());
    }

    #[test]
    fn string_lists_split_on_nul() {
        assert_eq!(
            string_list(b"brcm,bcm2712-sdhci\0brcm,sdhci-brcmstb\0"),
            ["brcm,bcm2712-sdhci", "brcm,sdhci-brcmstb"]
        );
    }
}
