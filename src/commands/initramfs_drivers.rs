//! `imgforge initramfs-drivers`: the board's root drivers derived in a root (hidden; the
//! base stage calls it from mmdebstrap's customize hook, after the kernel is installed and
//! before the initramfs is built).

use std::fs;

use anyhow::{anyhow, bail, Context, Result};

use crate::board::root_drivers;
use crate::cli::InitramfsDriversArgs;
use crate::exit::user;
use crate::plan::{resolve, Request};
use crate::profile::machine::RootDevice;
use crate::profile::ProfileSource;

/// The walk for `target`'s boards, as the base stage would do it.
fn spec_of_target(target: &str, device: Option<RootDevice>) -> Result<root_drivers::Spec> {
    let req = Request {
        role: crate::plan::DEFAULT_ROLE.to_string(),
        target: target.to_string(),
        site: crate::plan::DEFAULT_SITE.to_string(),
        host: None,
        // The walk reads the target only; no image is made, so no version is asked for.
        version: None,
    };
    let plan = resolve(&ProfileSource::choose(None)?, &req)?;
    let r = plan
        .raspi
        .as_ref()
        .ok_or_else(|| user(anyhow!("target {target} has no [raspi] table")))?;
    let device = device.unwrap_or(r.root_device);
    let storage = r.storage.get(&device).ok_or_else(|| {
        user(anyhow!(
            "target {target} has no [raspi.storage.{device}] (it describes: {})",
            r.storage
                .keys()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    Ok(root_drivers::Spec {
        device_trees: r.device_trees.clone(),
        root_device: device.to_string(),
        storage: storage.clone(),
        extra_modules: plan.initramfs_modules.clone(),
    })
}

pub fn run(a: InitramfsDriversArgs) -> Result<()> {
    let spec = match (&a.spec, &a.target) {
        (Some(path), _) => root_drivers::read_spec(path)?,
        (None, Some(target)) => spec_of_target(target, a.root_device)?,
        (None, None) => unreachable!("clap requires --spec or --target"),
    };
    let d = root_drivers::derive(&a.root, &spec)?;
    let tsv = d.to_tsv();
    match &a.reasons {
        Some(path) => {
            fs::write(path, &tsv).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{tsv}"),
    }
    if !d.problems.is_empty() {
        let lines: Vec<String> = d
            .problems
            .iter()
            .map(|p| format!("  {} {}: {}", p.device_tree, p.node, p.what))
            .collect();
        bail!(
            "the root-device `{}` cannot be reached on every board:\n{}",
            spec.root_device,
            lines.join("\n")
        );
    }
    if let Some(path) = &a.modules {
        let mut text = String::from(
            "# Written by imgforge: the drivers the card's root needs, derived from the boards'\n\
             # device trees and the kernel's modules.alias (see initramfs-drivers.tsv).\n",
        );
        for m in d.initramfs_modules() {
            text.push_str(m);
            text.push('\n');
        }
        fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
