use std::time::Duration;

use anyhow::{bail, Result};

use super::boot_disk::BootDisk;
use crate::cli::BootArgs;
use crate::qemu::{self, BootOptions};

pub fn run(a: BootArgs) -> Result<()> {
    let (plan, opts, built, firmware) = super::build_for_boot(&a.build, a.direct_kernel)?;
    let disk = BootDisk::prepare(&a.disk, &plan, &built.image, &opts.out_dir)?;
    let boot = BootOptions {
        qemu: plan.qemu.clone(),
        image: disk.path().to_path_buf(),
        firmware,
        cmdline_extra: vec![],
        forwards: a.forwards,
        snapshot: disk.snapshot(),
        network: qemu::Network::choose(a.disk.tap.as_deref(), &plan.host),
        reboots: false,
        shell: None,
        timeout: Duration::MAX,
    };
    for (h, g) in &boot.forwards {
        eprintln!("imgforge: guest port {g} is on 127.0.0.1:{h}");
    }
    let status = qemu::interactive(&boot)?;
    if !status.success() {
        bail!("QEMU exited with {status}");
    }
    Ok(())
}
