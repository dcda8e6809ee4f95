//! One function per subcommand. Shared set-up (profiles, plan, build options) lives here.

mod boot;
mod boot_disk;
mod build;
mod flash;
mod generate;
mod initramfs_drivers;
mod inspect;
mod list;
mod lock;
mod plan;
mod publish;
mod seed;
mod test;
mod update;

use std::path::PathBuf;

use anyhow::Result;

use crate::cache::{self, Cache};
use crate::cli::{BuildArgs, Command, ProfileArgs};
use crate::exit::user;
use crate::overlay::OverlaySource;
use crate::plan::{Plan, Request};
use crate::profile::ProfileSource;
use crate::qemu::Firmware;
use crate::stage::BuildOptions;

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Build(a) => build::run(a),
        Command::Test(a) => test::run(a),
        Command::Boot(a) => boot::run(a),
        Command::Plan(a) => plan::run(a),
        Command::List(a) => list::run(a),
        Command::Lock(a) => lock::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Seed(a) => seed::run(a),
        Command::Flash(a) => flash::run(a),
        Command::Publish(a) => publish::run(a),
        Command::Keygen(a) => publish::keygen(a),
        Command::Update(a) => update::run(a),
        Command::Generate(a) => generate::run(a),
        Command::InitramfsDrivers(a) => initramfs_drivers::run(a),
    }
}

/// Reads the profiles and resolves the plan; every failure here is the user's to fix.
fn resolve_plan(a: &ProfileArgs) -> Result<Plan> {
    let src = ProfileSource::choose(a.profiles.as_deref()).map_err(user)?;
    let req = Request {
        role: a.role.clone(),
        target: a.target.clone(),
        site: a.site.clone(),
        host: a.host.clone(),
        version: a.image_version.clone(),
    };
    crate::plan::resolve(&src, &req).map_err(user)
}

/// Builds the image (from cache when unchanged) and says how QEMU starts its kernel.
fn build_for_boot(
    a: &BuildArgs,
    direct_kernel: bool,
) -> Result<(Plan, BuildOptions, crate::stage::Built, Firmware)> {
    let plan = resolve_plan(&a.profile)?;
    let opts = build_options(a)?;
    let mut progress = crate::progress::Progress::new(a.quiet);
    let built = crate::stage::build(&plan, &opts, &mut progress)?;
    // A card's target names no UEFI firmware: QEMU starts its kernel itself.
    let firmware = if direct_kernel || plan.qemu.firmware_code.is_none() {
        let mut cmdline = built.compose.cmdline(&plan);
        // The console QEMU reads must be the last console= (a card's names the Pi's UART).
        let serial = format!("console={}", plan.qemu.serial);
        if !cmdline.ends_with(&serial) && !cmdline.contains(&format!("{serial} ")) {
            cmdline.push(' ');
            cmdline.push_str(&serial);
        }
        Firmware::DirectKernel {
            kernel: built.compose.kernel(),
            initrd: built.compose.initrd(),
            cmdline,
        }
    } else {
        Firmware::Uefi
    };
    Ok((plan, opts, built, firmware))
}

fn build_options(a: &BuildArgs) -> Result<BuildOptions> {
    let overlays = OverlaySource::choose(a.overlays.as_deref()).map_err(user)?;
    let cache = Cache::open(a.cache.clone().unwrap_or_else(cache::default_dir))?;
    let source_dir = a
        .source
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    Ok(BuildOptions {
        cache,
        overlays,
        source_dir,
        out_dir: a.out.clone(),
        rebuild_from: a.rebuild,
        key_dir: a.key_dir.clone(),
    })
}
