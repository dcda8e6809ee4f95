use std::time::Duration;

use anyhow::Result;

use crate::cli::TestArgs;
use crate::progress::Progress;
use crate::qemu::{self, BootOptions, Firmware};

pub fn run(a: TestArgs) -> Result<()> {
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
        image: built.image.clone(),
        firmware,
        cmdline_extra: vec!["imgforge.poweroff".into()],
        forwards: vec![],
        snapshot: true,
        timeout: Duration::from_secs(a.timeout.unwrap_or(plan.boot_timeout_secs)),
    };
    let log = a
        .serial_log
        .clone()
        .unwrap_or_else(|| opts.out_dir.join(format!("{}.serial.log", plan.image_name())));
    let how = if a.direct_kernel { "direct kernel" } else { "UEFI firmware, systemd-boot" };
    eprintln!("==> boot: {} in QEMU {} ({how}), serial console in {}", built.image.display(), plan.qemu.machine, log.display());
    let report = qemu::boot_and_wait(&boot, &log, |_| {})?;
    eprintln!("    {}", report.ready_line);
    eprintln!(
        "    ready after {:.1} s{}",
        report.seconds_to_ready,
        if report.powered_off { ", powered off" } else { "" }
    );
    println!("{}", report.ready_line);
    Ok(())
}
