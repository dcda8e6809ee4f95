//! Slow tests of the arm64 targets: the Raspberry Pi 4 and 5 cards (MBR, the boot partition
//! the Pi firmware reads, .img.xz with its .bmap) and the aarch64 VM booted under AAVMF.
//! Each builds an arm64 root with maintainer scripts under qemu-user (minutes cold, cached
//! after) and boots under full emulation. `#[ignore]`d; tests/README.md gives the times.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{imgforge, imgforge_in, partition, run, serial, text, tmp};

/// Builds the proxy for `target` into its own folder; returns the folder.
fn build(target: &str) -> PathBuf {
    let out = tmp(&format!("cards-{target}"));
    let o = imgforge(&[
        "build",
        "--quiet",
        "--target",
        target,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "build {target}:\n{}", text(&o.stderr));
    out
}

/// Every file of a FAT volume as mtools lists it, lower case, without the leading ::/.
fn mtools_listing(volume: &Path) -> BTreeSet<String> {
    let listing =
        run(Command::new("mdir").args(["-i", volume.to_str().unwrap(), "-/", "-b", "::"]));
    listing
        .lines()
        .map(|l| l.trim().trim_start_matches("::/").to_lowercase())
        .filter(|p| !p.is_empty() && !p.ends_with('/'))
        .collect()
}

/// One file's bytes through mtools.
fn mtools_read(volume: &Path, path: &str) -> Vec<u8> {
    let o = Command::new("mtype")
        .args(["-i", volume.to_str().unwrap()])
        .arg(format!("::/{path}"))
        .output()
        .expect("mtype (package mtools)");
    assert!(o.status.success(), "mtype ::/{path}: {}", text(&o.stderr));
    o.stdout
}

/// The card's three FAT partitions (autoboot, slot A's boot, slot B's boot) copied out as
/// volume files, each passed by `fsck.fat -n`.
fn fat_volumes(img: &Path, out: &Path, target: &str) -> Vec<PathBuf> {
    let data = std::fs::read(img).unwrap();
    (1..=3)
        .map(|n| {
            let (off, len) = partition(img, n);
            let volume = out.join(format!("p{n}.vfat"));
            std::fs::write(&volume, &data[off as usize..(off + len) as usize]).unwrap();
            let fsck = run(Command::new("fsck.fat").arg("-n").arg(&volume));
            assert_eq!(fsck.lines().count(), 2, "{target}: fsck.fat of partition {n}:\n{fsck}");
            volume
        })
        .collect()
}

/// A config.txt-style file's sections (`[all]`, `[tryboot]`) with their settings, in order;
/// lines before the first section belong to `[all]`.
fn sections(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = vec![("all".into(), vec![])];
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if out.last().is_some_and(|(n, v)| n == name || v.is_empty()) {
                out.pop();
            }
            out.push((name.to_string(), vec![]));
        } else {
            out.last_mut().unwrap().1.push(line.to_string());
        }
    }
    out
}

/// What config.txt names: the `kernel=` file and the `initramfs` file.
/// `pi4`: the Pi 4 family, whose firmware is start4*.elf.
fn named_by_config(config: &str, pi4: bool) -> Vec<String> {
    let mut names = Vec::new();
    for line in config.lines().map(str::trim) {
        if let Some(k) = line.strip_prefix("kernel=") {
            names.push(k.to_string());
        }
        if let Some(rest) = line.strip_prefix("initramfs ") {
            names.push(rest.split_whitespace().next().unwrap().to_string());
        }
        if let Some(d) = line.strip_prefix("device_tree=") {
            names.push(d.to_string());
        }
        // The Pi 4's firmware takes the cut-down start4cd.elf and fixup4cd.dat when the
        // GPU gets 16 MB or less (config.txt documentation, "gpu_mem"), and the Pi 4's
        // firmware files are start4*.elf: a card that sets it must carry them.
        if let Some(v) = line.strip_prefix("gpu_mem=") {
            if v.trim().parse::<u32>().is_ok_and(|mb| mb <= 16) && pi4 {
                names.extend(["start4cd.elf".to_string(), "fixup4cd.dat".to_string()]);
            }
        }
    }
    names
}

/// Checks a card's boot partition: the files config.txt names and the files the model needs
/// are there, read by our FAT reader and by mtools alike, and cmdline.txt finds the root.
fn check_boot_partition(target: &str, model_files: &[&str], console: &str) {
    let out = build(target);
    let img = out.join(format!("proxy-{target}.img"));
    run(Command::new("sfdisk").arg("-V").arg(&img));
    let o = Command::new("sfdisk")
        .arg("--json")
        .arg(&img)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let table = &v["partitiontable"];
    assert_eq!(
        table["label"], "dos",
        "{target}: the Pi boot ROM reads an MBR"
    );
    assert_eq!(
        table["partitions"][0]["type"], "c",
        "{target}: FAT32 (LBA) first"
    );
    let signature = table["id"]
        .as_str()
        .unwrap()
        .trim_start_matches("0x")
        .to_string();

    // The firmware's A/B: three FAT partitions, each as fsck.fat sees it. The first holds
    // only autoboot.txt, which boots slot A's boot partition (2) and, after an update sets
    // the tryboot flag, slot B's (3) once.
    let volumes = fat_volumes(&img, &out, target);
    let autoboot_files = mtools_listing(&volumes[0]);
    assert_eq!(
        autoboot_files,
        BTreeSet::from(["autoboot.txt".to_string()]),
        "{target}: the first FAT holds autoboot.txt alone"
    );
    let autoboot = String::from_utf8(mtools_read(&volumes[0], "autoboot.txt")).unwrap();
    assert!(autoboot.len() <= 512, "{target}: the firmware reads 512 bytes: {autoboot}");
    assert_eq!(
        sections(&autoboot),
        [
            ("all".to_string(), vec!["tryboot_a_b=1".to_string(), "boot_partition=2".to_string()]),
            ("tryboot".to_string(), vec!["boot_partition=3".to_string()]),
        ],
        "{target}: autoboot.txt:\n{autoboot}"
    );
    // (mdir's batch listing fails on an empty volume: its plain listing says so.)
    let b = run(Command::new("mdir").args(["-i", volumes[2].to_str().unwrap(), "::"]));
    assert!(
        b.contains("No files") && b.contains("BOOT-B"),
        "{target}: slot B's boot partition is empty until an update writes it:\n{b}"
    );
    let volume = &volumes[1];
    let (off, len) = partition(&img, 2);

    // Our reader and mtools list the same files.
    let mut f = std::fs::File::open(&img).unwrap();
    let (_, _, ours) = imgforge::fs::fat::list(&mut f, off, len).unwrap();
    let ours: BTreeSet<String> = ours
        .iter()
        .map(|(p, _)| p.trim_start_matches('/').to_lowercase())
        .collect();
    let theirs = mtools_listing(volume);
    assert_eq!(ours, theirs, "{target}: our FAT reader and mtools disagree");

    let config = String::from_utf8(mtools_read(volume, "config.txt")).unwrap();
    let ours_config = imgforge::fs::fat::read_file(&mut f, off, len, "config.txt").unwrap();
    assert_eq!(config.as_bytes(), ours_config.as_slice());
    assert!(
        config.contains("arm_64bit=1") && config.contains("upstream_kernel=1"),
        "{config}"
    );
    let named = named_by_config(&config, model_files.contains(&"start4.elf"));
    assert!(
        named.len() >= 2,
        "{target}: config.txt names a kernel and an initramfs:\n{config}"
    );
    for name in named
        .iter()
        .map(String::as_str)
        .chain(model_files.iter().copied())
    {
        assert!(
            theirs.contains(&name.to_lowercase()),
            "{target}: {name} is not on the boot partition: {theirs:?}"
        );
    }
    // The kernel is the arm64 Image the root's modules belong to (its magic at 0x38).
    let kernel_name = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("kernel="))
        .expect("config.txt names a kernel");
    let kernel = mtools_read(volume, kernel_name);
    assert_eq!(
        &kernel[0x38..0x3c],
        b"ARM\x64",
        "{target}: not an arm64 Image"
    );

    let cmdline = String::from_utf8(mtools_read(volume, "cmdline.txt")).unwrap();
    assert_eq!(
        cmdline.lines().count(),
        1,
        "{target}: cmdline.txt is one line"
    );
    // The root by its filesystem UUID, which travels with a slot's bytes: root slot A is
    // logical partition 6 of the card.
    let (slot_a, _) = partition(&img, 6);
    let stats = common::debugfs(&img, slot_a, "stats");
    let fs_uuid = stats
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem UUID:"))
        .unwrap_or_else(|| panic!("{target}: no ext4 in slot A: {stats}"))
        .trim();
    assert!(
        cmdline.contains(&format!("root=UUID={fs_uuid}")) && cmdline.contains(" ro "),
        "{target}: the root read-only by slot A's filesystem UUID ({fs_uuid}, card {signature}): {cmdline}"
    );
    assert!(
        cmdline.contains(console) && cmdline.contains("rootwait"),
        "{target}: {cmdline}"
    );

    // The card ships compressed, with a map bmaptool accepts.
    assert!(out.join(format!("proxy-{target}.img.xz")).is_file());
    assert!(out.join(format!("proxy-{target}.img.bmap")).is_file());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
#[ignore = "slow: builds the rpi4 card (an arm64 root under qemu-user: ~10-15 min cold, ~1 min warm)"]
fn rpi4_boot_partition_holds_every_file_config_txt_names_and_the_pi4_firmware() {
    let _g = serial();
    check_boot_partition(
        "rpi4",
        &["start4.elf", "fixup4.dat", "bcm2711-rpi-4-b.dtb"],
        "console=ttyS1,115200",
    );
}

/// scripts/check-card-drivers.py on `target`'s card: every device-tree node on the way to
/// the root's storage (`node`) has its driver in the initramfs or built in, and the wired
/// network's in the root. Then the same checker, started at a node whose driver is loaded
/// from the root (the Ethernet controller), must fail naming it: the check can fail.
fn card_has_the_drivers_its_device_trees_need(
    target: &str,
    node: &str,
    root_only: &str,
    module: &str,
) {
    let out = build(target);
    let img = out.join(format!("proxy-{target}.img"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check-card-drivers.py");
    let o = Command::new(&script)
        .arg(&img)
        .args(["--node", node, "--network"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{target}: the card cannot reach its root on a real board:\n{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(
        text(&o.stdout).contains("0 problems"),
        "{}",
        text(&o.stdout)
    );
    let o = Command::new(&script)
        .arg(&img)
        .args(["--node", root_only])
        .output()
        .unwrap();
    let report = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{report}{}", text(&o.stderr));
    assert!(
        report.contains(&format!("needs module {module} "))
            && report.contains("not in the initramfs"),
        "{report}"
    );
    // imgforge inspect shows the derived drivers with the node that needs each.
    let o = imgforge(&["inspect", img.to_str().unwrap()]);
    let shown = text(&o.stdout);
    assert!(shown.contains("root drivers (in the initramfs)"), "{shown}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
#[ignore = "slow: builds the rpi4 card (~1 min warm) and reads its device trees (~1 min)"]
fn rpi4_card_has_the_drivers_its_device_trees_need() {
    let _g = serial();
    card_has_the_drivers_its_device_trees_need(
        "rpi4",
        "/emmc2bus/mmc@7e340000",
        "/scb/ethernet@7d580000",
        "genet",
    );
}

/// Not in CI (its own arm64 root): scripts/boot-arm64.sh runs it.
#[test]
#[ignore = "heavy: builds the rpi5 card (another arm64 root: ~10-15 min cold); scripts/boot-arm64.sh"]
fn heavy_rpi5_card_has_the_drivers_its_device_trees_need() {
    let _g = serial();
    card_has_the_drivers_its_device_trees_need(
        "rpi5",
        "/soc@107c000000/mmc@fff000",
        "/axi/pcie@1000120000/pci@0,0/dev@0,0/pci-ep-bus@1/ethernet@40100000",
        "macb",
    );
}

/// A Pi 5 whose root is on an NVMe drive: the site's host says `root-device = "nvme"`, and
/// the card's initramfs holds the PCIe controller's chain (its MSI controller among them)
/// and the driver of an NVMe drive, found by the checker from a real drive's modalias (a
/// Samsung 980) in the card's own modules.alias.
#[test]
#[ignore = "heavy: builds an rpi5 card for an NVMe root (its own arm64 root: ~15-20 min cold); scripts/boot-arm64.sh"]
fn heavy_rpi5_nvme_card_has_the_drivers_its_device_trees_need() {
    let _g = serial();
    let dir = tmp("cards-rpi5-nvme");
    let sites = dir.join("profiles/sites");
    std::fs::create_dir_all(&sites).unwrap();
    let dns = "dns = [\"192.168.50.1\"]\n";
    let site = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/sites/example.toml"),
    )
    .unwrap();
    assert!(
        site.contains(dns),
        "the example site's first host has {dns}"
    );
    // The first host is the proxy's (edge); ./profiles/sites wins over the embedded site.
    let site = site.replacen(dns, &format!("{dns}root-device = \"nvme\"\n"), 1);
    std::fs::write(sites.join("example.toml"), site).unwrap();
    let out = dir.join("out");
    let o = imgforge_in(
        &dir,
        &[
            "build",
            "--quiet",
            "--target",
            "rpi5",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        o.status.success(),
        "build rpi5 (nvme):\n{}",
        text(&o.stderr)
    );
    let img = out.join("proxy-rpi5.img");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check-card-drivers.py");
    let o = Command::new(&script)
        .arg(&img)
        .args([
            "--node",
            "/axi/pcie@1000110000",
            "--device",
            "pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02",
        ])
        .output()
        .unwrap();
    let report = text(&o.stdout);
    assert!(
        o.status.success() && report.contains("0 problems"),
        "the card cannot reach an NVMe root on a real board:\n{report}{}",
        text(&o.stderr)
    );
    let shown = text(&imgforge(&["inspect", img.to_str().unwrap()]).stdout);
    assert!(
        shown.contains("nvme") && shown.contains("irq_bcm2712_mip"),
        "{shown}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Not in CI (a third arm64 root, with the backports kernel): scripts/boot-arm64.sh runs it.
#[test]
#[ignore = "heavy: builds the rpi5 card (another arm64 root: ~10-15 min cold); scripts/boot-arm64.sh"]
fn heavy_rpi5_boot_partition_holds_every_file_config_txt_names_and_the_pi5_device_tree() {
    let _g = serial();
    check_boot_partition("rpi5", &["bcm2712-rpi-5-b.dtb"], "console=ttyAMA10,115200");
}

#[test]
#[ignore = "slow: builds the rpi4 card (~1 min warm) and writes it with bmaptool (~1 min)"]
fn bmaptool_copy_of_the_xz_card_gives_the_raw_images_bytes() {
    let _g = serial();
    let out = build("rpi4");
    let img = out.join("proxy-rpi4.img");
    let xz = out.join("proxy-rpi4.img.xz");
    let bmap = out.join("proxy-rpi4.img.bmap");
    let dst = out.join("card.bin");
    run(Command::new("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(&bmap)
        .arg(&xz)
        .arg(&dst));
    let sha = |p: &Path| common::sha256_of(p, None);
    assert_eq!(
        sha(&dst),
        sha(&img),
        "bmaptool's copy differs from the raw image"
    );
    // SHA256SUMS lists the .img.xz as it is on disk.
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    assert!(
        sums.contains(&format!("{}  proxy-rpi4.img.xz", sha(&xz))),
        "{sums}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// `out`'s card for `target` copied to `card.img`, 1 GiB larger as real cards are, with the
/// proxy's one required slot seeded as the operator would.
fn seeded_card_copy(out: &Path, target: &str) -> PathBuf {
    let img = out.join(format!("proxy-{target}.img"));
    let disk = out.join("card.img");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&img)
        .arg(&disk));
    run(Command::new("truncate").arg("-s").arg("+1G").arg(&disk));
    let htpasswd = run(Command::new("htpasswd").args(["-nbB", "ops", "correct horse"]));
    let secrets = out.join("secrets.toml");
    std::fs::write(
        &secrets,
        format!("jupyter-htpasswd = '''\n{}'''\n", htpasswd.trim_end()),
    )
    .unwrap();
    let o = imgforge(&[
        "seed",
        disk.to_str().unwrap(),
        "--secrets",
        secrets.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "seed: {}", text(&o.stderr));
    disk
}

/// A seeded copy of `target`'s card, 1 GiB larger, boots its own kernel, initramfs and root
/// on QEMU's virt machine, and grow-root makes the root fill the card.
fn card_root_boots_on_virt_and_grows_to_fill_the_card(target: &str) {
    let out = build(target);
    let disk = seeded_card_copy(&out, target);
    let log = out.join("card.serial.log");
    let o = imgforge(&[
        "test",
        "--target",
        target,
        "--out",
        out.to_str().unwrap(),
        "--disk",
        disk.to_str().unwrap(),
        "--serial-log",
        log.to_str().unwrap(),
    ]);
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        o.status.success(),
        "boot failed:\n{}\n{console}",
        text(&o.stderr)
    );
    let line = text(&o.stdout);
    assert!(
        line.starts_with(&format!("IMGFORGE-READY role=proxy target={target}")),
        "{line}"
    );
    // The data partition (logical 8, last on the card) now ends at the card's end (sfdisk),
    // and its ext4 fills it: only the worker's grow-root unit moves it on an MBR card
    // (systemd-repart handles only GPT). sfdisk -V accepts the grown table (the boot records'
    // link sizes are checked by growroot's unit test).
    // (Its journal line reaches the serial console on the rpi4 card, not on the rpi5's
    // kernel, so the console is not the evidence.)
    run(Command::new("sfdisk").arg("-V").arg(&disk));
    let (root_off, root_len) = partition(&disk, 8);
    let card = std::fs::metadata(&disk).unwrap().len();
    assert_eq!(
        root_off + root_len,
        card,
        "the data partition does not reach the card's end"
    );
    let stats = common::debugfs(&disk, root_off, "stats");
    let block_count: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("Block count:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        block_count * 4096 + 8 * 1024 * 1024 > root_len,
        "ext4 has {block_count} blocks in a {root_len}-byte partition"
    );
    run(Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset={root_off}", disk.display())));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
#[ignore = "slow: boots the rpi4 card's kernel, initramfs and root on QEMU's virt machine (~3-5 min)"]
fn rpi4_card_root_boots_on_virt_and_grows_to_fill_the_card() {
    let _g = serial();
    card_root_boots_on_virt_and_grows_to_fill_the_card("rpi4");
}

/// Not in CI (its own arm64 root): scripts/boot-arm64.sh runs it.
#[test]
#[ignore = "heavy: boots the rpi5 card's root (the backports kernel) on QEMU's virt machine (~3-5 min)"]
fn heavy_rpi5_card_root_boots_on_virt_and_grows_to_fill_the_card() {
    let _g = serial();
    card_root_boots_on_virt_and_grows_to_fill_the_card("rpi5");
}

/// Not in CI (its own arm64 root): scripts/boot-arm64.sh runs it.
#[test]
#[ignore = "heavy: builds the aarch64-vm image (~10-15 min cold) and boots it under AAVMF (~3-5 min)"]
fn heavy_aarch64_vm_boots_under_aavmf_to_ready() {
    let _g = serial();
    let out = build("aarch64-vm");
    let o = imgforge(&[
        "test",
        "--target",
        "aarch64-vm",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let line = text(&o.stdout);
    assert!(
        line.starts_with("IMGFORGE-READY role=proxy target=aarch64-vm"),
        "{line}"
    );
    let ready = seed_area::ready::parse(&line).unwrap_or_else(|| panic!("{line}"));
    assert_eq!(ready.passed, ready.total, "{line}");
    assert!(
        text(&o.stderr).contains("UEFI firmware, systemd-boot"),
        "{}",
        text(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// The script the kernel-reinstall test puts in the card's root: it records the boot
/// partition's config.txt and cmdline.txt and the initramfs's modules (lsinitramfs, the
/// image's own), reinstalls the kernel package with apt from the host (QEMU's user network
/// reaches it at the default route's gateway) and rebuilds the initramfs, then prints what changed on the
/// serial console. It runs before imgforge-ready.service, so the worker powers off after it.
const KERNEL_REINSTALL_SCRIPT: &str = r#"#!/bin/sh
exec >/dev/ttyAMA0 2>&1
say() { echo "KERNEL-TEST: $*"; }
fw=/boot/firmware
# The root slot is mounted read-only: on an A/B node packages change by publishing a new
# version into the other slot, never by apt on the running one. The kernel hook still
# matters (it runs when a version's root is built, and on a card whose owner remounts to
# repair it), so this test opens the running slot for writing first.
mount -o remount,rw / || { say "FAILED remount / read-write"; exit 1; }
say "boot partition: $(findmnt -n -o SOURCE,FSTYPE $fw || echo not mounted)"
modules() { lsinitramfs "$fw/initrd.img" | grep '\.ko' | sed 's#.*/##' | sort; }
sha256sum "$fw/config.txt" "$fw/cmdline.txt" > /run/boot-files.before
modules > /run/modules.before
say "before: $(wc -l < /run/modules.before) modules in the initramfs"
# QEMU's user network puts the host at the site's gateway address: the default route.
host=$(ip -4 route show default | awk '{print $3; exit}')
/usr/lib/apt/apt-helper download-file "http://$host:@PORT@/@DEB@" /var/tmp/kernel.deb || { say "FAILED download from $host"; exit 1; }
apt-get install --reinstall -y /var/tmp/kernel.deb > /run/apt.log 2>&1 || { tail -n 20 /run/apt.log; say "FAILED apt-get install --reinstall"; exit 1; }
grep -i 'imgforge' /run/apt.log | sed 's/^/KERNEL-TEST: apt: /'
update-initramfs -u > /run/update-initramfs.log 2>&1 || { tail -n 20 /run/update-initramfs.log; say "FAILED update-initramfs -u"; exit 1; }
modules > /run/modules.after
say "after: $(wc -l < /run/modules.after) modules in the initramfs"
if sha256sum -c --quiet /run/boot-files.before; then say "config.txt and cmdline.txt unchanged"; else say "CHANGED boot files"; cat "$fw/config.txt" "$fw/cmdline.txt"; fi
if cmp -s /run/modules.before /run/modules.after; then say "initramfs driver set unchanged"; else say "CHANGED driver set"; diff /run/modules.before /run/modules.after; fi
ls -l --time-style=+%s "$fw/vmlinuz" "$fw/initrd.img" | sed 's/^/KERNEL-TEST: /'
say done
"#;

const KERNEL_REINSTALL_UNIT: &str = "[Unit]
Description=imgforge test: reinstall the kernel and rebuild the initramfs
After=imgforge-growroot.service imgforge-var.service network-online.target
Wants=network-online.target
Before=imgforge-ready.service
RequiresMountsFor=/boot/firmware

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/kernel-reinstall-test
TimeoutStartSec=1500
";

/// Not in CI (several minutes of emulated dpkg and mkinitramfs): scripts/boot-arm64.sh.
/// Inside the booted rpi4 card (its root on virt), `apt-get install --reinstall` of the
/// kernel package and `update-initramfs -u` leave config.txt and cmdline.txt as imgforge
/// wrote them and the initramfs with the same drivers (raspi-firmware's hooks, which would
/// rewrite both files, are diverted; imgforge's hook copies the new kernel and initramfs).
#[test]
#[ignore = "heavy: boots the rpi4 card on virt and reinstalls its kernel inside (~10 min)"]
fn heavy_rpi4_kernel_reinstall_keeps_the_cards_boot_files_and_drivers() {
    let _g = serial();
    let out = build("rpi4");
    let disk = seeded_card_copy(&out, "rpi4");

    // The kernel package the card was built from, from imgforge's apt cache, served on
    // the host's loopback.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("proxy-rpi4.manifest.json")).unwrap())
            .unwrap();
    let kernel = manifest["kernel"].as_str().unwrap().to_string();
    let apt = imgforge::cache::default_dir().join("apt/trixie-arm64");
    let deb = std::fs::read_dir(&apt)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(&format!("linux-image-{kernel}_")) && n.ends_with(".deb"))
        .unwrap_or_else(|| panic!("no linux-image-{kernel} .deb in {}", apt.display()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&apt)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    // The script and its unit, written into the card's root with debugfs: root slot A,
    // logical partition 6 (the one cmdline.txt names).
    let (root_off, _) = partition(&disk, 6);
    let script = out.join("kernel-reinstall-test");
    std::fs::write(
        &script,
        KERNEL_REINSTALL_SCRIPT
            .replace("@PORT@", &port.to_string())
            .replace("@DEB@", &deb),
    )
    .unwrap();
    let unit = out.join("kernel-reinstall-test.service");
    std::fs::write(&unit, KERNEL_REINSTALL_UNIT).unwrap();
    let commands = out.join("debugfs.cmd");
    std::fs::write(
        &commands,
        format!(
            "write {} /usr/local/sbin/kernel-reinstall-test\n\
             sif /usr/local/sbin/kernel-reinstall-test mode 0100755\n\
             write {} /etc/systemd/system/kernel-reinstall-test.service\n\
             symlink /etc/systemd/system/multi-user.target.wants/kernel-reinstall-test.service /etc/systemd/system/kernel-reinstall-test.service\n",
            script.display(),
            unit.display()
        ),
    )
    .unwrap();
    run(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&commands)
        .arg(format!("{}?offset={root_off}", disk.display())));

    let log = out.join("card.serial.log");
    let o = imgforge(&[
        "test",
        "--target",
        "rpi4",
        "--out",
        out.to_str().unwrap(),
        "--disk",
        disk.to_str().unwrap(),
        "--timeout",
        "1800",
        "--serial-log",
        log.to_str().unwrap(),
    ]);
    let _ = server.kill();
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    let report: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("KERNEL-TEST:"))
        .collect();
    eprintln!("{}", report.join("\n"));
    assert!(
        o.status.success(),
        "boot: {}\n{}",
        text(&o.stderr),
        report.join("\n")
    );
    for want in [
        "config.txt and cmdline.txt unchanged",
        "initramfs driver set unchanged",
        "boot partition updated to kernel",
        "KERNEL-TEST: done",
    ] {
        assert!(
            console.contains(want),
            "missing `{want}`:\n{}",
            report.join("\n")
        );
    }
    // The card's drivers, derived at build time, were in the initramfs before and after.
    assert!(!console.contains("CHANGED"), "{}", report.join("\n"));
    let _ = std::fs::remove_dir_all(&out);
}
