use std::time::Duration;

use anyhow::Result;

use super::boot_disk::BootDisk;
use crate::cli::TestArgs;
use crate::qemu::{self, BootOptions};

pub fn run(a: TestArgs) -> Result<()> {
    let (plan, opts, built, firmware) = super::build_for_boot(&a.build, a.direct_kernel)?;
    let disk = BootDisk::prepare(&a.disk, &plan, &built.image, &opts.out_dir)?;
    let boot = BootOptions {
        qemu: plan.qemu.clone(),
        image: disk.path().to_path_buf(),
        firmware,
        cmdline_extra: vec!["imgforge.poweroff".into()],
        forwards: vec![],
        snapshot: disk.snapshot(),
        network: qemu::Network::choose(a.disk.tap.as_deref(), &plan.host),
        reboots: false,
        shell: None,
        timeout: Duration::from_secs(a.timeout.unwrap_or(plan.boot_timeout_secs)),
    };
    let log = a.serial_log.clone().unwrap_or_else(|| {
        opts.out_dir
            .join(format!("{}.serial.log", plan.image_name()))
    });
    let how = match &boot.firmware {
        qemu::Firmware::DirectKernel { .. } => "direct kernel",
        qemu::Firmware::Uefi => "UEFI firmware, systemd-boot",
    };
    eprintln!(
        "==> boot: {} in QEMU {} ({how}), serial console in {}",
        disk.path().display(),
        plan.qemu.machine,
        log.display()
    );
    let report = qemu::boot_and_wait(&boot, &log, |_| {})?;
    eprintln!("    {}", report.ready_line);
    eprintln!(
        "    ready after {:.1} s{}",
        report.seconds_to_ready,
        if report.powered_off {
            ", powered off"
        } else {
            ""
        }
    );
    println!("{}", report.ready_line);
    Ok(())
}
