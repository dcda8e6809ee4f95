use std::time::Duration;

use anyhow::{bail, Result};

use crate::cli::BootArgs;
use crate::progress::Progress;
use crate::qemu::{self, BootOptions, Firmware};

pub fn run(a: BootArgs) -> Result<()> {
    let plan = super::resolve_plan(&a.build.profile)?;
    let opts = super::build_options(&a.build)?;
    let mut progress = Progress::new(a.build.quiet);
    let built = crate::stage::build(&plan, &opts, &mut progress)?;
    let firmware = if a.direct_kernel {
        Firmware::DirectKernel {
            kernel: built.compose.kernel(),
            initrd: built.compose.initrd(),
            cmdline: built.compose.cmdline(&plan),
        }
    } else {
        Firmware::Uefi
    };
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
