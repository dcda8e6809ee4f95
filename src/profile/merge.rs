//! The layering rule, implemented once: common.toml, then the target, then the role.
//!
//! - A single value set by a later layer overrides the earlier one.
//! - Lists append (packages, kernel command line, modules); duplicates are dropped later,
//!   when the plan is resolved.
//! - Services are keyed by name: a later service of the same name replaces the earlier.
//! - The `[qemu]` table merges field by field.

use super::schema::{Layer, Qemu};

pub trait Merge {
    /// Applies `later` on top of `self`.
    fn merge(&mut self, later: Self);
}

impl<T> Merge for Option<T> {
    fn merge(&mut self, later: Self) {
        if later.is_some() {
            *self = later;
        }
    }
}

impl Merge for Qemu {
    fn merge(&mut self, later: Self) {
        self.binary.merge(later.binary);
        self.machine.merge(later.machine);
        self.cpu.merge(later.cpu);
        self.memory_mib.merge(later.memory_mib);
        self.smp.merge(later.smp);
        self.firmware_code.merge(later.firmware_code);
        self.firmware_vars.merge(later.firmware_vars);
        self.serial.merge(later.serial);
    }
}

/// A later item replaces the earlier one of the same name; new names append.
fn merge_by_name<T>(items: &mut Vec<T>, later: Vec<T>, name: fn(&T) -> &str) {
    for item in later {
        match items.iter_mut().find(|i| name(i) == name(&item)) {
            Some(existing) => *existing = item,
            None => items.push(item),
        }
    }
}

impl Merge for Layer {
    fn merge(&mut self, later: Self) {
        self.description.merge(later.description);
        self.suite.merge(later.suite);
        self.arch.merge(later.arch);
        self.rust_target.merge(later.rust_target);
        self.partition_table.merge(later.partition_table);
        self.boot.merge(later.boot);
        self.packages.extend(later.packages);
        self.apt_components.extend(later.apt_components);
        self.outputs.extend(later.outputs);
        self.raspi.merge(later.raspi);
        self.enable_units.extend(later.enable_units);
        self.initramfs_modules.extend(later.initramfs_modules);
        self.kernel_cmdline.extend(later.kernel_cmdline);
        self.esp_size_mib.merge(later.esp_size_mib);
        self.root_slot_mib.merge(later.root_slot_mib);
        self.root_free_mib.merge(later.root_free_mib);
        self.boot_timeout_secs.merge(later.boot_timeout_secs);
        merge_by_name(&mut self.services, later.services, |s| s.name.as_str());
        merge_by_name(&mut self.slots, later.slots, |s| s.name.as_str());
        merge_by_name(&mut self.databases, later.databases, |d| d.name.as_str());
        merge_by_name(&mut self.jobs, later.jobs, |j| j.name.as_str());
        merge_by_name(&mut self.apps, later.apps, |a| a.name.as_str());
        match (&mut self.qemu, later.qemu) {
            (Some(q), Some(l)) => q.merge(l),
            (q @ None, l) => *q = l,
            (Some(_), None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::schema::Service;

    fn svc(name: &str, desc: &str) -> Service {
        Service {
            description: desc.parse().unwrap(),
            ..Service::for_test(name, &[], false)
        }
    }

    #[test]
    fn singles_override_lists_append_services_replace_by_name() {
        let mut a = Layer {
            suite: Some("trixie".parse().unwrap()),
            arch: Some(crate::profile::machine::Arch::Amd64),
            packages: vec!["systemd".parse().unwrap()],
            services: vec![svc("gateway", "old"), svc("other", "kept")],
            qemu: Some(Qemu {
                memory_mib: Some(512),
                machine: Some("q35".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let b = Layer {
            suite: Some("forky".parse().unwrap()),
            packages: vec!["nftables".parse().unwrap()],
            services: vec![svc("gateway", "new")],
            qemu: Some(Qemu {
                memory_mib: Some(2048),
                ..Default::default()
            }),
            ..Default::default()
        };
        a.merge(b);
        assert_eq!(a.suite.as_deref(), Some("forky"));
        assert_eq!(
            a.arch,
            Some(crate::profile::machine::Arch::Amd64),
            "unset in the later layer: kept"
        );
        let pkgs: Vec<&str> = a.packages.iter().map(|p| p.as_str()).collect();
        assert_eq!(pkgs, ["systemd", "nftables"]);
        assert_eq!(a.services.len(), 2);
        assert_eq!(a.services[0].description, "new");
        let q = a.qemu.unwrap();
        assert_eq!(q.memory_mib, Some(2048));
        assert_eq!(q.machine.as_deref(), Some("q35"));
    }
}
