//! What an installed kernel says about its drivers, read from its own files in a root:
//! `modules.alias` (which module claims a device, by the device's modalias), `modules.dep`
//! (what a module needs loaded first), `modules.builtin` (modules compiled in), and the
//! kernel image itself for drivers compiled in.
//!
//! A driver compiled into the kernel leaves no alias behind (Debian's
//! `modules.builtin.modinfo` holds no `of:` aliases), but its match table does: an
//! `of_device_id` keeps each compatible string as a NUL-padded array in the image. So a
//! compatible found NUL-delimited in the uncompressed image is served by built-in code.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub struct KernelTables {
    pub version: String,
    /// (pattern, module) from modules.alias, in file order.
    aliases: Vec<(glob::Pattern, String)>,
    /// module -> (file relative to the modules folder, direct dependencies).
    modules: HashMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
    image: Vec<u8>,
}

/// How the kernel provides a driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    Module(String),
    BuiltIn,
}

impl KernelTables {
    /// The one kernel installed in `root` (its /usr/lib/modules/<version>).
    pub fn load(root: &Path) -> Result<KernelTables> {
        let modules_dir = root.join("usr/lib/modules");
        let mut versions: Vec<String> = fs::read_dir(&modules_dir)
            .with_context(|| format!("reading {}", modules_dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("modules.dep").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        versions.sort();
        let version = match versions.as_slice() {
            [one] => one.clone(),
            [] => bail!(
                "no kernel with a modules.dep under {} (is a kernel package installed?)",
                modules_dir.display()
            ),
            many => bail!(
                "{} kernels under {} ({}): a card carries one",
                many.len(),
                modules_dir.display(),
                many.join(", ")
            ),
        };
        let dir = modules_dir.join(&version);
        let image_path = kernel_image(root, &version)?;
        Ok(KernelTables {
            aliases: parse_aliases(&read(&dir.join("modules.alias"))?)?,
            modules: parse_dep(&read(&dir.join("modules.dep"))?),
            builtin: read(&dir.join("modules.builtin"))?
                .lines()
                .map(module_name)
                .collect(),
            image: fs::read(&image_path)
                .with_context(|| format!("reading the kernel {}", image_path.display()))?,
            version,
        })
    }

    /// Folder of the kernel's device trees in `root` (the package's broadcom/ and others).
    pub fn dtb_dir(&self, root: &Path) -> PathBuf {
        root.join("usr/lib")
            .join(format!("linux-image-{}", self.version))
    }

    /// The modules whose alias patterns match `modalias`.
    pub fn modules_for(&self, modalias: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .aliases
            .iter()
            .filter(|(p, _)| p.matches(modalias))
            .map(|(_, m)| m.clone())
            .collect();
        out.dedup();
        out
    }

    /// A device-tree compatible that built-in code matches (see the module comment).
    pub fn builtin_compatible(&self, compatible: &str) -> bool {
        let mut needle = Vec::with_capacity(compatible.len() + 2);
        needle.push(0);
        needle.extend_from_slice(compatible.as_bytes());
        needle.push(0);
        self.image.windows(needle.len()).any(|w| w == needle)
    }

    /// A module named in a profile: loadable, compiled in, or unknown to this kernel.
    pub fn named(&self, name: &str) -> Option<Provider> {
        let name = name.replace('-', "_");
        if self.modules.contains_key(&name) {
            Some(Provider::Module(name))
        } else if self.builtin.contains(&name) {
            Some(Provider::BuiltIn)
        } else {
            None
        }
    }

    /// The modules `module` needs loaded before it, recursively (modules.dep).
    pub fn dependencies(&self, module: &str) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![module.to_string()];
        while let Some(m) = stack.pop() {
            for d in self
                .modules
                .get(&m)
                .map(|(_, d)| d.as_slice())
                .unwrap_or(&[])
            {
                if seen.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
        seen.into_iter().collect()
    }

    /// The module's file, relative to /usr/lib/modules/<version>.
    pub fn file(&self, module: &str) -> Option<&str> {
        self.modules.get(module).map(|(f, _)| f.as_str())
    }
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The uncompressed kernel image: /boot/vmlinuz-<v> (6.12) or the modules folder's vmlinuz
/// (the split packages of 7.x).
fn kernel_image(root: &Path, version: &str) -> Result<PathBuf> {
    let candidates = [
        root.join(format!("boot/vmlinuz-{version}")),
        root.join(format!("usr/lib/modules/{version}/vmlinuz")),
    ];
    for c in &candidates {
        if c.is_file() {
            let head = fs::read(c).map(|b| b.get(..2).map(|h| h.to_vec()))?;
            if head.as_deref() == Some(&[0x1f, 0x8b]) {
                bail!(
                    "{} is gzip-compressed; built-in drivers are found in an uncompressed \
                     arm64 Image",
                    c.display()
                );
            }
            return Ok(c.clone());
        }
    }
    bail!(
        "no kernel image for {version} (looked for {})",
        candidates[0].display()
    )
}

/// `kernel/drivers/regulator/gpio-regulator.ko.xz` -> `gpio_regulator`: the kernel's own
/// names use `_` where file names may use `-`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

fn parse_aliases(text: &str) -> Result<Vec<(glob::Pattern, String)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        if words.next() != Some("alias") {
            continue;
        }
        let (Some(pattern), Some(module)) = (words.next(), words.next()) else {
            bail!(
                "modules.alias line {}: expected `alias PATTERN MODULE`",
                n + 1
            );
        };
        // Only device aliases: of: (device tree), pci:, usb:, platform: (a device a driver
        // creates, as dwc3 creates its xHCI). The rest (fs-, net-pf-, ...) name no device.
        if !["of:", "pci:", "usb:", "platform:"]
            .iter()
            .any(|p| pattern.starts_with(p))
        {
            continue;
        }
        let p = glob::Pattern::new(pattern)
            .with_context(|| format!("modules.alias line {}: pattern {pattern}", n + 1))?;
        out.push((p, module.replace('-', "_")));
    }
    Ok(out)
}

fn parse_dep(text: &str) -> HashMap<String, (String, Vec<String>)> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(file, deps)| {
            (
                module_name(file),
                (
                    file.to_string(),
                    deps.split_whitespace().map(module_name).collect(),
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_files() {
        assert_eq!(
            module_name("kernel/drivers/regulator/gpio-regulator.ko.xz"),
            "gpio_regulator"
        );
        assert_eq!(
            module_name("kernel/drivers/mmc/host/sdhci-iproc.ko"),
            "sdhci_iproc"
        );
    }

    #[test]
    fn an_of_alias_matches_the_kernels_modalias() {
        let aliases = parse_aliases(
            "alias of:N*T*Cbrcm,sdhci-brcmstbC* sdhci_brcmstb\n\
             alias of:N*T*Cbrcm,sdhci-brcmstb sdhci_brcmstb\n\
             alias fs-ext4 ext4\n",
        )
        .unwrap();
        assert_eq!(aliases.len(), 2);
        let m = "of:NmmcT(null)Cbrcm,bcm2712-sdhciCbrcm,sdhci-brcmstb";
        assert!(aliases.iter().any(|(p, _)| p.matches(m)));
        assert!(!aliases
            .iter()
            .any(|(p, _)| p.matches("of:NmmcT(null)Cbrcm,other")));
    }

    #[test]
    fn dependencies_are_closed() {
        let deps = parse_dep("a.ko: b.ko\nb.ko: c.ko\nc.ko:\n");
        let t = KernelTables {
            version: "v".into(),
            aliases: vec![],
            modules: deps,
            builtin: BTreeSet::new(),
            image: b"x\0regulator-fixed\0".to_vec(),
        };
        assert_eq!(t.dependencies("a"), ["b", "c"]);
        assert!(t.builtin_compatible("regulator-fixed"));
        assert!(!t.builtin_compatible("regulator-fix"));
    }
}
