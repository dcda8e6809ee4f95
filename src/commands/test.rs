use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::TestArgs;
use crate::qemu::{self, BootOptions};

/// What the boot test boots, and how.
enum BootDisk {
    /// The built image behind a QEMU snapshot: nothing written to it.
    Snapshot(PathBuf),
    /// A seeded copy (in a temporary folder), deleted when the test ends.
    Copy { path: PathBuf, _dir: tempfile::TempDir },
    /// The user's disk file, writes kept.
    Given(PathBuf),
}

pub fn run(a: TestArgs) -> Result<()> {
    let (plan, opts, built, firmware) = super::build_for_boot(&a.build, a.direct_kernel)?;
    let disk = if let Some(d) = &a.disk {
        File::open(d).with_context(|| format!("opening the disk {}", d.display())).map_err(crate::exit::user)?;
        eprintln!("==> disk: booting {} as it is (writes kept)", d.display());
        BootDisk::Given(d.clone())
    } else if a.unseeded || plan.slots.is_empty() {
        if a.unseeded {
            eprintln!("==> seed: none (--unseeded): required slots stay empty");
        }
        BootDisk::Snapshot(built.image.clone())
    } else {
        let dir = tempfile::Builder::new()
            .prefix(".boot-test-")
            .tempdir_in(&opts.out_dir)
            .with_context(|| format!("creating a folder for the boot copy in {}", opts.out_dir.display()))?;
        let copy = dir.path().join(built.image.file_name().expect("image has a file name"));
        seeded_copy(&built.image, &copy, a.secrets.as_deref())?;
        BootDisk::Copy { path: copy, _dir: dir }
    };
    let (image, snapshot) = match &disk {
        BootDisk::Snapshot(p) => (p.clone(), true),
        BootDisk::Copy { path, .. } => (path.clone(), false),
        BootDisk::Given(p) => (p.clone(), false),
    };
    let boot = BootOptions {
        qemu: plan.qemu.clone(),
        image: image.clone(),
        firmware,
        cmdline_extra: vec!["imgforge.poweroff".into()],
        forwards: vec![],
        snapshot,
        timeout: Duration::from_secs(a.timeout.unwrap_or(plan.boot_timeout_secs)),
    };
    let log = a
        .serial_log
        .clone()
        .unwrap_or_else(|| opts.out_dir.join(format!("{}.serial.log", plan.image_name())));
    let how = if a.direct_kernel { "direct kernel" } else { "UEFI firmware, systemd-boot" };
    eprintln!("==> boot: {} in QEMU {} ({how}), serial console in {}", image.display(), plan.qemu.machine, log.display());
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

/// A sparse copy of the image, seeded with `secrets` or with throwaway
/// values. The built image itself never holds a value.
fn seeded_copy(image: &Path, copy: &Path, secrets: Option<&Path>) -> Result<()> {
    crate::sparse::copy_and_hash(image, copy, &[]).context("copying the image for the boot test")?;
    let mut dev = std::fs::OpenOptions::new().read(true).write(true).open(copy)?;
    match secrets {
        Some(file) => {
            let names = crate::seed::seed(&mut dev, file)?;
            eprintln!("==> seed: the boot copy with {} from {}", names.join(", "), file.display());
        }
        None => {
            let slots = crate::seed::read(&mut dev)?.slots;
            let values = crate::seed::test_values(&slots)?;
            crate::seed::write_values(&mut dev, &values)?;
            let names: Vec<&str> = values.keys().map(String::as_str).collect();
            eprintln!("==> seed: the boot copy with throwaway test values for {}", if names.is_empty() { "no slot".to_string() } else { names.join(", ") });
        }
    }
    Ok(())
}
