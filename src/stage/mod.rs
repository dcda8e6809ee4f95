//! The build pipeline (DESIGN.md section 3). Each stage reads its inputs, hashes everything
//! it reads into a key, and either finds its output in the cache under that key or builds it
//! in a temporary folder that is renamed into place when complete.

pub mod apps;
pub mod base;
pub mod binaries;
pub mod builder;
mod card_units;
mod chroot;
pub mod compose;
pub mod image;
pub mod outputs;
pub mod toolchain;
pub mod units;
pub mod updates;

use std::path::PathBuf;

use anyhow::Result;
use clap::ValueEnum;

use crate::cache::Cache;
use crate::overlay::OverlaySource;
use crate::plan::Plan;
use crate::progress::Progress;

/// The stages, in order. `--rebuild STAGE` ignores the cache from that stage on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Stage {
    Base,
    Binaries,
    Compose,
    Image,
    Outputs,
}

pub struct BuildOptions {
    pub cache: Cache,
    pub overlays: OverlaySource,
    /// The imgforge workspace holding crates/gateway and crates/worker.
    pub source_dir: PathBuf,
    pub out_dir: PathBuf,
    pub rebuild_from: Option<Stage>,
    /// The signing key folder whose public key goes into images of hosts with `updates`
    /// (None: the default, ~/.config/imgforge/signing).
    pub key_dir: Option<PathBuf>,
}

impl BuildOptions {
    fn forced(&self, stage: Stage) -> bool {
        self.rebuild_from.is_some_and(|from| stage >= from)
    }
}

/// What a build produced.
pub struct Built {
    pub image: PathBuf,
    pub outputs: outputs::Outputs,
    pub compose: compose::Composed,
}

pub fn build(plan: &Plan, opts: &BuildOptions, progress: &mut Progress) -> Result<Built> {
    let result = run_stages(plan, opts, progress);
    if result.is_err() {
        progress.abort();
    }
    result
}

fn run_stages(plan: &Plan, opts: &BuildOptions, progress: &mut Progress) -> Result<Built> {
    use crate::interrupt::check;
    // A host with `updates` needs the signing key's public half: say so before building.
    compose::update_public_key(plan, opts)?;
    // cargo builds the binaries while mmdebstrap builds the base.
    // A bad lock fails here, before anything is built; the wheels download once.
    let wheels = apps::fetch_wheels(plan, opts, progress)?;
    check()?;
    let bins = binaries::start(plan, opts)?;
    let base = base::run(plan, opts, progress)?;
    check()?;
    let bins = binaries::finish(bins, opts, progress)?;
    check()?;
    let apps = apps::run(plan, opts, &base, &wheels, progress)?;
    check()?;
    let composed = compose::run(plan, opts, &base, &bins, &apps, progress)?;
    check()?;
    let image = image::run(plan, opts, &composed, progress)?;
    check()?;
    let outputs = outputs::run(plan, opts, &base, &composed, &image, progress)?;
    let mut lines = vec![
        ("image".to_string(), outputs.image.display().to_string()),
        (
            "size".to_string(),
            crate::progress::fmt_bytes(outputs.image_size),
        ),
        (
            "allocated".to_string(),
            crate::progress::fmt_bytes(outputs.image_allocated),
        ),
    ];
    if let Some(x) = &outputs.xz {
        lines.push(("img.xz".to_string(), x.display().to_string()));
    }
    if let Some(q) = &outputs.qcow2 {
        lines.push(("qcow2".to_string(), q.display().to_string()));
    }
    progress.summary(&lines);
    Ok(Built {
        image: outputs.image.clone(),
        outputs,
        compose: composed,
    })
}

/// The source of the code that makes each stage's output: part of the stage's cache key, so
/// that a change in how a stage works (not only in what it is given) is never hidden by an
/// output cached by an older imgforge.
pub(crate) mod code {
    pub const BASE: &[&[u8]] = &[
        include_bytes!("base.rs"),
        include_bytes!("../apt_sources.rs"),
        include_bytes!("../board/device_tree.rs"),
        include_bytes!("../board/kernel_tables.rs"),
        include_bytes!("../board/root_drivers.rs"),
        include_bytes!("../../firmware/z50-imgforge-boot-files"),
    ];
    pub const APPS: &[&[u8]] = &[
        include_bytes!("apps.rs"),
        include_bytes!("../app_source.rs"),
    ];
    pub const PYDEPS: &[&[u8]] = &[
        include_bytes!("../pydeps/mod.rs"),
        include_bytes!("../pydeps/lock.rs"),
        include_bytes!("../pydeps/install.rs"),
        include_bytes!("../pydeps/install_wheels.py"),
        include_bytes!("../pydeps/bytecode.rs"),
    ];
    pub const COMPOSE: &[&[u8]] = &[
        include_bytes!("compose.rs"),
        include_bytes!("units.rs"),
        include_bytes!("card_units.rs"),
        include_bytes!("updates.rs"),
        include_bytes!("../site/firewall.rs"),
        include_bytes!("../site/gateway_toml.rs"),
        include_bytes!("../site/mod.rs"),
        include_bytes!("../overlay.rs"),
        include_bytes!("../disk/ids.rs"),
        include_bytes!("../../crates/seed-area/src/disk.rs"),
        include_bytes!("../../crates/seed-area/src/version.rs"),
    ];
    pub const IMAGE: &[&[u8]] = &[
        include_bytes!("image.rs"),
        include_bytes!("../fs/fat.rs"),
        include_bytes!("../fs/ext4.rs"),
        include_bytes!("../disk/gpt.rs"),
        include_bytes!("../disk/mbr.rs"),
        include_bytes!("../../firmware/config.txt.tera"),
        include_bytes!("../../firmware/cmdline.txt.tera"),
        include_bytes!("../disk/layout.rs"),
        include_bytes!("../seed.rs"),
        include_bytes!("../../crates/seed-area/src/lib.rs"),
        include_bytes!("../../crates/seed-area/src/disk.rs"),
        include_bytes!("../../crates/seed-area/src/card.rs"),
    ];
    pub const OUTPUTS: &[&[u8]] = &[
        include_bytes!("outputs.rs"),
        include_bytes!("../artifact/bmap.rs"),
        include_bytes!("../artifact/sparse.rs"),
        include_bytes!("../artifact/xz.rs"),
    ];
}
