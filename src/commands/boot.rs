use std::time::Duration;

use anyhow::{bail, Result};

use crate::cli::BootArgs;
use crate::qemu::{self, BootOptions};

pub fn run(a: BootArgs) -> Result<()> {
    let (plan, _, built, firmware) = super::build_for_boot(&a.build, a.direct_kernel)?;
    let boot = BootOptions {
        qemu: plan.qemu.clone(),
        image: built.image,
        firmware,
        cmdline_extra: vec![],
        forwards: a.forwards,
        snapshot: !a.persist,
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
