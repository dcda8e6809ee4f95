//! Issue 16's proof, as far as QEMU allows: a Raspberry Pi 4 card's A/B on its own root.
//!
//! No QEMU machine runs the Pi's bootloader, so this test plays it ([`PiBootloader`]), from
//! Raspberry Pi's documentation of autoboot.txt (config_txt/autoboot.adoc) and of the boot
//! flow (bootflow-2711.adoc): read autoboot.txt from the card's first FAT; boot the
//! `[tryboot]` partition if the one-shot tryboot flag is set, clearing the flag first, else
//! the `[all]` one; start the kernel and initramfs that partition's config.txt names, with
//! its cmdline.txt. QEMU's virt machine runs them (with virt's UART added as the last
//! console), and each reset (a reboot: QEMU runs with -no-reboot) goes back to the model.
//! Everything the node does is the card's own: its units, its worker, its autoboot.txt.
//!
//! 1. version 1 boots from slot A and is READY; nothing is on trial;
//! 2. version 2 is written into slot B (boot partition 3, root partition 7, the bytes an
//!    update writes) and the tryboot flag set: the card boots it once, it is READY, and the
//!    worker commits it (autoboot.txt, read back here with mtools, now boots partition 3);
//!    a reboot without the flag stays on version 2;
//! 3. version 3, whose role has a service that always fails, is written into slot A and
//!    tried: it is not READY, the worker reboots, and the card is back on version 2 by itself
//!    (autoboot.txt unchanged);
//! 4. the data partition's machine id and SSH host key are the same throughout.
//!
//! What this does not run: the tryboot flag set through the firmware (a reboot with `0
//! tryboot` on a Pi), the update's download, the watchdog (QEMU's virt has no bcm2835 one).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;
use common::{free_port, imgforge, partition, run, serial, text, tmp, Server};
use imgforge::qemu::{self, session::Session, BootOptions, Firmware, Verdict};

const TARGET: &str = "rpi4";
const BOOT: Duration = Duration::from_secs(900);

/// A config.txt-style file's `key=value` settings per section (`[all]` before any).
fn setting(text: &str, section: &str, key: &str) -> Option<String> {
    let mut current = "all".to_string();
    let mut found = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            if current == section && k.trim() == key {
                found = Some(v.trim().to_string());
            }
        }
    }
    found
}

/// One FAT file of partition `n` of `disk`, through mtools (a reader we did not write).
fn fat_file(disk: &Path, n: usize, path: &str) -> Vec<u8> {
    let (off, _) = partition(disk, n);
    let o = Command::new("mtype")
        .arg("-i")
        .arg(format!("{}@@{off}", disk.display()))
        .arg(format!("::/{path}"))
        .output()
        .expect("mtype (package mtools)");
    assert!(
        o.status.success(),
        "mtype partition {n} ::/{path}: {}",
        text(&o.stderr)
    );
    o.stdout
}

fn autoboot(disk: &Path) -> String {
    String::from_utf8(fat_file(disk, 1, "autoboot.txt")).unwrap()
}

/// The Pi 4 bootloader's choice of boot partition, and what it starts from there.
struct PiBootloader {
    disk: PathBuf,
    work: PathBuf,
    /// The one-shot flag (`reboot "0 tryboot"` sets it on a Pi).
    tryboot: bool,
    boots: u32,
}

impl PiBootloader {
    /// Picks the partition as the bootloader does, consuming the flag, and returns QEMU's
    /// options to start that partition's kernel, initramfs and command line.
    fn pick(&mut self, plan: &imgforge::plan::Plan) -> (usize, BootOptions) {
        let text = autoboot(&self.disk);
        assert_eq!(
            setting(&text, "all", "tryboot_a_b").as_deref(),
            Some("1"),
            "{text}"
        );
        let section = if std::mem::take(&mut self.tryboot) {
            "tryboot"
        } else {
            "all"
        };
        let n: usize = setting(&text, section, "boot_partition")
            .unwrap_or_else(|| panic!("no boot_partition in [{section}]: {text}"))
            .parse()
            .unwrap();
        let config = String::from_utf8(fat_file(&self.disk, n, "config.txt")).unwrap();
        let kernel = setting(&config, "all", "kernel").expect("config.txt names a kernel");
        let initramfs = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("initramfs "))
            .and_then(|r| r.split_whitespace().next())
            .expect("config.txt names an initramfs")
            .to_string();
        self.boots += 1;
        let dir = self.work.join(format!("boot{}", self.boots));
        std::fs::create_dir_all(&dir).unwrap();
        let (k, i) = (dir.join("kernel"), dir.join("initrd"));
        std::fs::write(&k, fat_file(&self.disk, n, &kernel)).unwrap();
        std::fs::write(&i, fat_file(&self.disk, n, &initramfs)).unwrap();
        let cmdline = String::from_utf8(fat_file(&self.disk, n, "cmdline.txt")).unwrap();
        // virt's PL011 is the console QEMU reads: the last console= wins.
        let cmdline = format!("{} console={}", cmdline.trim(), plan.qemu.serial);
        let opts = BootOptions {
            qemu: plan.qemu.clone(),
            image: self.disk.clone(),
            firmware: Firmware::DirectKernel {
                kernel: k,
                initrd: i,
                cmdline,
            },
            cmdline_extra: vec![],
            forwards: vec![],
            snapshot: false,
            timeout: BOOT,
            network: qemu::Network::user_for(&plan.host),
            reboots: false,
            shell: None,
        };
        (n, opts)
    }
}

/// The worker's line about the trial, printed on the console after the verdict.
fn worker_line(s: &mut Session) -> String {
    s.wait_for("the worker's card-commit or card-fallback line", BOOT, |l| {
        (l.contains("worker: ")
            && (l.contains("committed") || l.contains("not READY") || l.contains("nothing to commit")))
        .then(|| l.to_string())
    })
    .unwrap()
}

fn ready_version(v: &Verdict) -> Option<String> {
    match v {
        Verdict::Ready(l) => seed_area::ready::parse(l).map(|r| r.version),
        _ => None,
    }
}

/// Partition `from` of `src` copied over partition `to` of `dst` (both the same size: a
/// card's slots are fixed for life), as an update writes a slot.
fn copy_partition(src: &Path, from: usize, dst: &Path, to: usize) {
    let (s_off, s_len) = partition(src, from);
    let (d_off, d_len) = partition(dst, to);
    assert_eq!(s_len, d_len, "partition {from} of the new version and {to} of the card");
    run(Command::new("dd")
        .arg(format!("if={}", src.display()))
        .arg(format!("of={}", dst.display()))
        .args(["bs=1M", "iflag=skip_bytes,count_bytes", "oflag=seek_bytes"])
        .arg(format!("skip={s_off}"))
        .arg(format!("seek={d_off}"))
        .arg(format!("count={s_len}"))
        .args(["conv=notrunc,sparse", "status=none"]));
}

/// What must survive every version: the node's machine id and SSH host key, on the data
/// partition (logical 8). The test ends each boot by stopping QEMU, a power cut: the
/// partition is copied out and its journal replayed (`e2fsck -E journal_only`, as the next
/// mount would) before debugfs reads it.
fn kept_state(disk: &Path, work: &Path) -> String {
    let (off, len) = partition(disk, 8);
    let copy = work.join("data-copy.ext4");
    run(Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", copy.display()))
        .args(["bs=1M", "iflag=skip_bytes,count_bytes", "conv=sparse", "status=none"])
        .arg(format!("skip={off}"))
        .arg(format!("count={len}")));
    let st = Command::new("e2fsck")
        .args(["-E", "journal_only", "-p"])
        .arg(&copy)
        .status()
        .expect("e2fsck (package e2fsprogs)");
    assert!(st.code().is_some_and(|c| c <= 1), "e2fsck -E journal_only: {st}");
    let id = common::debugfs(&copy, 0, "cat /lib/imgforge/machine-id");
    let key = common::debugfs(&copy, 0, "cat /lib/imgforge/ssh/ssh_host_ed25519_key.pub");
    let _ = std::fs::remove_file(&copy);
    assert!(
        id.trim().len() == 32 && key.contains("ssh-ed25519"),
        "machine id {id:?}, host key {key:?}"
    );
    format!("{id}{key}")
}

fn build(profiles: &Path, version: &str, out: &Path) -> PathBuf {
    let o = imgforge(&[
        "build",
        "--quiet",
        "--profiles",
        profiles.to_str().unwrap(),
        "--target",
        TARGET,
        "--version",
        version,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "build {version}: {}", text(&o.stderr));
    out.join(format!("proxy-{TARGET}.img"))
}

/// A copy of the checkout's profiles under `dir` (its `profiles` folder returned); with
/// `site` as sites/upd.toml; `broken` adds version 3's mistake to the proxy role, a
/// service that always fails.
fn profiles_copy(dir: &Path, site: Option<&str>, broken: bool) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir).unwrap();
    run(Command::new("cp").arg("-r").arg(root.join("profiles")).arg(dir));
    let p = dir.join("profiles");
    if let Some(site) = site {
        std::fs::write(p.join("sites/upd.toml"), site).unwrap();
    }
    if broken {
        let role = p.join("roles/proxy.toml");
        let mut t = std::fs::read_to_string(&role).unwrap();
        t.push_str(
            "\n[[service]]\nname = \"broken\"\n\
             description = \"version 3's mistake: a service that always fails\"\n\
             exec = [\"/bin/false\"]\n",
        );
        std::fs::write(&role, t).unwrap();
    }
    p
}

/// Version 1's plan for the proxy card from `profiles` (what QEMU boots it with).
fn card_plan(profiles: &Path, site: &str, host: Option<String>) -> imgforge::plan::Plan {
    imgforge::plan::resolve(
        &imgforge::profile::ProfileSource::Dir(profiles.to_path_buf()),
        &imgforge::plan::Request {
            role: "proxy".into(),
            version: Some("1".into()),
            target: TARGET.into(),
            site: site.into(),
            host,
        },
    )
    .unwrap()
}

/// The card: `image` copied to `work/card.img`, 1 GiB larger as real cards are, the proxy's
/// required slot seeded as the operator would.
fn seeded_card(image: &Path, work: &Path) -> PathBuf {
    let disk = work.join("card.img");
    run(Command::new("cp").arg("--sparse=always").arg(image).arg(&disk));
    run(Command::new("truncate").arg("-s").arg("+1G").arg(&disk));
    let htpasswd = run(Command::new("htpasswd").args(["-nbB", "ops", "correct horse"]));
    let secrets = work.join("secrets.toml");
    std::fs::write(
        &secrets,
        format!("jupyter-htpasswd = '''\n{}'''\n", htpasswd.trim_end()),
    )
    .unwrap();
    let o = imgforge(&["seed", disk.to_str().unwrap(), "--secrets", secrets.to_str().unwrap()]);
    assert!(o.status.success(), "seed: {}", text(&o.stderr));
    disk
}

#[test]
#[ignore = "heavy: builds three versions of the rpi4 card (~3 min each warm) and boots them five times on virt (~15 min); scripts/boot-arm64.sh"]
fn heavy_card_ab_keeps_a_ready_version_and_returns_from_a_broken_one_by_itself() {
    let _g = serial();
    let work = tmp("card-ab");
    let good = profiles_copy(&work.join("p-good"), None, false);
    let broken = profiles_copy(&work.join("p-broken"), None, true);

    let v1 = build(&good, "1", &work.join("v1"));
    let v2 = build(&good, "2", &work.join("v2"));
    let v3 = build(&broken, "3", &work.join("v3"));
    // Every version of a card names its partitions by the card's MBR signature (the seed
    // area is by-partuuid/<signature>-05): the same in each version's image.
    let signature = |img: &Path| {
        let o = run(Command::new("sfdisk").arg("--json").arg(img));
        let v: serde_json::Value = serde_json::from_str(&o[o.find('{').unwrap()..]).unwrap();
        v["partitiontable"]["id"].as_str().unwrap().to_string()
    };
    assert_eq!(signature(&v1), signature(&v2));
    assert_eq!(signature(&v1), signature(&v3));

    let disk = seeded_card(&v1, &work);

    let plan = card_plan(&good, "example", None);
    let mut fw = PiBootloader {
        disk: disk.clone(),
        work: work.clone(),
        tryboot: false,
        boots: 0,
    };
    let boot = |fw: &mut PiBootloader, what: &str| -> (usize, Verdict, String) {
        let (n, opts) = fw.pick(&plan);
        let log = work.join(format!("console-{}.log", fw.boots));
        let mut s = Session::start(&opts, &log).unwrap();
        let v = s.wait_verdict(BOOT).unwrap();
        let said = worker_line(&mut s);
        eprintln!("card A/B test: {what}: boot partition {n}: {v:?}\n  {said}");
        if said.contains("not READY") && said.contains("rebooting") {
            // The node reboots by itself: QEMU (-no-reboot) exits.
            s.wait_exit(Duration::from_secs(300)).unwrap();
        }
        // Otherwise the node runs on; the worker's line came after it unmounted the
        // autoboot partition, so the card's bytes are final (QEMU writes straight through).
        drop(s);
        (n, v, said)
    };

    // 1. Version 1 from slot A.
    let (n, v, said) = boot(&mut fw, "version 1");
    assert_eq!((n, ready_version(&v).as_deref()), (2, Some("1")), "{v:?}");
    assert!(said.contains("slot A is the committed slot"), "{said}");
    let state = kept_state(&disk, &work);

    // 2. Version 2 written into slot B and tried once: READY, committed.
    copy_partition(&v2, 2, &disk, 3);
    copy_partition(&v2, 6, &disk, 7);
    fw.tryboot = true;
    let (n, v, said) = boot(&mut fw, "version 2 on trial");
    assert_eq!((n, ready_version(&v).as_deref()), (3, Some("2")), "{v:?}");
    assert!(said.contains("committed (autoboot.txt boots slot B, was A)"), "{said}");
    let ab = autoboot(&disk);
    assert_eq!(setting(&ab, "all", "boot_partition").as_deref(), Some("3"), "{ab}");
    assert_eq!(setting(&ab, "tryboot", "boot_partition").as_deref(), Some("2"), "{ab}");
    let (n, v, said) = boot(&mut fw, "version 2 after a reboot");
    assert_eq!((n, ready_version(&v).as_deref()), (3, Some("2")), "{v:?}");
    assert!(said.contains("slot B is the committed slot"), "{said}");

    // 3. Version 3 written into slot A and tried: not READY, back to version 2 by itself.
    copy_partition(&v3, 2, &disk, 2);
    copy_partition(&v3, 6, &disk, 6);
    fw.tryboot = true;
    let (n, v, said) = boot(&mut fw, "version 3 on trial");
    assert_eq!(n, 2);
    assert!(matches!(&v, Verdict::Failed(l) if l.contains("version=3")), "{v:?}");
    assert!(
        said.contains("version 3 on trial in slot A is not READY: rebooting into the committed slot B"),
        "{said}"
    );
    let (n, v, _) = boot(&mut fw, "after version 3's reset");
    assert_eq!((n, ready_version(&v).as_deref()), (3, Some("2")), "{v:?}");
    let ab = autoboot(&disk);
    assert_eq!(setting(&ab, "all", "boot_partition").as_deref(), Some("3"), "{ab}");

    // 4. The node's own state never changed.
    assert_eq!(kept_state(&disk, &work), state);
    run(Command::new("sfdisk").arg("-V").arg(&disk));
    let _ = std::fs::remove_dir_all(&work);
}

/// Stops the gpg-agent a signing started in `0` (a gpg home) when the test ends.
struct Agent(PathBuf);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.0)
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

/// The kernel's last words on a reboot with an argument (kernel/reboot.c, kernel_restart):
/// what a Raspberry Pi kernel, or imgforge's module, turns into the tryboot flag.
const TRYBOOT_RESTART: &str = "Restarting system with command '0 tryboot'";

#[test]
#[ignore = "heavy: builds the rpi4 card with `updates` (its own arm64 base: ~15 min cold), publishes versions 2 and 3 (~4 min each), and boots the card through two updates on virt (~20 min); scripts/boot-arm64.sh"]
fn heavy_card_update_takes_a_published_version_and_returns_from_a_broken_one() {
    let _g = serial();
    let work = tmp("card-update");
    let key_home = tempfile::Builder::new()
        .prefix("imgforge-card-keys")
        .tempdir_in("/tmp")
        .unwrap();
    let keys = key_home.path().join("signing");
    let _agent = Agent(keys.join("gnupg"));
    let o = imgforge(&["keygen", "--key-dir", keys.to_str().unwrap(), "--name", "card test"]);
    assert!(o.status.success(), "keygen: {}", text(&o.stderr));
    let admin = key_home.path().join("admin");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "admin@card-test", "-f"])
        .arg(&admin));
    let admin_pub = std::fs::read_to_string(admin.with_extension("pub")).unwrap();
    let port = free_port();
    let url = format!("http://10.0.2.2:{port}/node/");

    // Two profile folders: the good role, and version 3's mistake; the site gives host
    // `node` updates from the test's web server and lets the admin key log in.
    let site = format!(
        "domain = \"example.test\"\nlan = [\"10.0.2.0/24\"]\n\
         admin-ssh-keys = [\"{}\"]\n\n\
         # The proxy's gateway listens on 443 (its tcp:443 check) when the site has TLS.\n\
         [tls]\nacme-directory = \"https://acme-v02.api.letsencrypt.org/directory\"\n\
         acme-email = \"admin@example.test\"\n\n\
         [[host]]\nname = \"node\"\nrole = \"proxy\"\n\
         updates = {{ url = \"{url}\", on-calendar = \"Sun 03:00\" }}\n",
        admin_pub.trim()
    );
    let good = profiles_copy(&work.join("p-good"), Some(&site), false);
    let broken = profiles_copy(&work.join("p-broken"), Some(&site), true);
    let common = |p: &Path, v: &str| -> Vec<String> {
        [
            "--profiles", p.to_str().unwrap(), "--site", "upd", "--role", "proxy",
            "--target", TARGET, "--version", v, "--key-dir", keys.to_str().unwrap(), "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let images = work.join("images");
    let mut a = vec!["build".to_string(), "--out".into(), images.display().to_string()];
    a.extend(common(&good, "1"));
    let o = imgforge(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "build 1: {}", text(&o.stderr));
    let served = work.join("served");
    std::fs::create_dir_all(&served).unwrap();
    let publish = |p: &Path, v: &str| -> PathBuf {
        let out = work.join(format!("v{v}"));
        let mut a = vec![
            "publish".to_string(),
            "--out".into(),
            out.display().to_string(),
            "--images".into(),
            work.join(format!("images-{v}")).display().to_string(),
        ];
        a.extend(common(p, v));
        let o = imgforge(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "publish {v}: {}", text(&o.stderr));
        for kind in ["root.xz", "boot.xz", "manifest.json"] {
            assert!(out.join(format!("proxy_{v}.{kind}")).is_file(), "{kind}");
        }
        out
    };
    let (v2, v3) = (publish(&good, "2"), publish(&broken, "3"));
    let serve = |dir: &Path| {
        let link = served.join("node");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(dir, &link).unwrap();
    };

    let disk = seeded_card(&images.join(format!("proxy-{TARGET}.img")), &work);

    let plan = card_plan(&good, "upd", Some("node".into()));
    let ssh_port = free_port();
    let mut fw = PiBootloader {
        disk: disk.clone(),
        work: work.clone(),
        tryboot: false,
        boots: 0,
    };
    let _server = Server::start(&served, port);

    // Boots the card through the model until a boot's QEMU is left running READY (the
    // node's resets in between go back to the model); returns that session and the
    // partitions booted.
    let run_until_settled = |fw: &mut PiBootloader| -> (Session, Vec<(usize, Verdict)>) {
        let mut booted = Vec::new();
        loop {
            let (n, mut opts) = fw.pick(&plan);
            opts.forwards = vec![(ssh_port, 22)];
            let log = work.join(format!("console-{}.log", fw.boots));
            let mut s = Session::start(&opts, &log).unwrap();
            let v = s.wait_verdict(BOOT).unwrap();
            let said = worker_line(&mut s);
            eprintln!("card update test: boot {}: partition {n}: {v:?}\n  {said}", fw.boots);
            booted.push((n, v.clone()));
            if matches!(v, Verdict::Ready(_)) {
                return (s, booted);
            }
            assert!(
                said.contains("rebooting into the committed slot"),
                "not READY and not on trial: nothing will reset the card: {said}\n{booted:?}"
            );
            s.wait_exit(Duration::from_secs(300)).unwrap();
        }
    };
    // Runs `imgforge update --host node` while the model boots what the node's reboots ask
    // for; returns update's exit code, its stdout and stderr, and the boots.
    let update = |fw: &mut PiBootloader, mut s: Session| {
        let known = format!("UserKnownHostsFile={}", work.join("known_hosts").display());
        // READY does not wait for sshd (the role's checks are its services): wait until the
        // admin key logs in, as an operator would try again.
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        while !Command::new("ssh")
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new", "-o", &known])
            .args(["-o", "ConnectTimeout=10", "-p", &ssh_port.to_string(), "-i"])
            .arg(&admin)
            .args(["root@127.0.0.1", "true"])
            .status()
            .is_ok_and(|st| st.success())
        {
            assert!(std::time::Instant::now() < deadline, "the node's sshd never let the admin key in");
            std::thread::sleep(Duration::from_secs(5));
        }
        let child = Command::new(env!("CARGO_BIN_EXE_imgforge"))
            .args(["update", "--host", "node", "--site", "upd", "--profiles"])
            .arg(&good)
            .args(["--address", "127.0.0.1", "--port", &ssh_port.to_string(), "-i"])
            .arg(&admin)
            .args(["--ssh-option", &known, "--timeout", "2400"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The node installs, then reboots asking for a trial: QEMU exits.
        s.wait_exit(Duration::from_secs(1800)).unwrap();
        let log = std::fs::read_to_string(work.join(format!("console-{}.log", fw.boots))).unwrap();
        fw.tryboot = log.contains(TRYBOOT_RESTART);
        let (s, booted) = run_until_settled(fw);
        let o = child.wait_with_output().unwrap();
        (o.status.code(), text(&o.stdout), text(&o.stderr), booted, s, fw.tryboot)
    };

    // 1. Version 1.
    let (s, booted) = run_until_settled(&mut fw);
    assert_eq!(booted.len(), 1);
    assert_eq!(ready_version(&booted[0].1).as_deref(), Some("1"));
    let state = {
        drop(s);
        kept_state(&disk, &work)
    };
    let (s, _) = run_until_settled(&mut fw);

    // 2. Version 2: fetched, verified, written into slot B, tried, READY, committed.
    serve(&v2);
    let (code, out, err, booted, s, _) = update(&mut fw, s);
    assert_eq!(code, Some(0), "imgforge update: {out}\n{err}");
    assert!(out.contains("node: version 2 READY"), "{out}");
    assert!(err.contains("version 2 written into slot B"), "{err}");
    assert_eq!(booted.len(), 1, "{booted:?}");
    assert_eq!((booted[0].0, ready_version(&booted[0].1).as_deref()), (3, Some("2")));
    let ab = autoboot(&disk);
    assert_eq!(setting(&ab, "all", "boot_partition").as_deref(), Some("3"), "{ab}");

    // 3. Version 3: tried, not READY, the node reboots, and the card is on 2 again.
    serve(&v3);
    let (code, out, err, booted, s, _) = update(&mut fw, s);
    assert_eq!(code, Some(3), "imgforge update: {out}\n{err}");
    let parts: Vec<usize> = booted.iter().map(|(n, _)| *n).collect();
    assert_eq!(parts, [2, 3], "version 3 in slot A tried, then slot B: {booted:?}");
    assert!(matches!(&booted[0].1, Verdict::Failed(l) if l.contains("version=3")));
    assert_eq!(ready_version(&booted[1].1).as_deref(), Some("2"));
    let ab = autoboot(&disk);
    assert_eq!(setting(&ab, "all", "boot_partition").as_deref(), Some("3"), "{ab}");

    // 4. A folder signed by a key the node does not trust: refused, nothing written.
    let forged = work.join("v4");
    std::fs::create_dir_all(&forged).unwrap();
    for e in std::fs::read_dir(&v2).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if !name.starts_with("SHA256SUMS") {
            std::fs::copy(v2.join(&name), forged.join(name.replace("_2.", "_4."))).unwrap();
        }
    }
    let sums = run(Command::new("sh").arg("-c").arg("sha256sum -- *").current_dir(&forged));
    std::fs::write(forged.join("SHA256SUMS"), sums).unwrap();
    let forger = key_home.path().join("forger");
    std::fs::create_dir_all(&forger).unwrap();
    run(Command::new("chmod").arg("700").arg(&forger));
    let _forger_agent = Agent(forger.clone());
    run(Command::new("gpg").arg("--homedir").arg(&forger).args([
        "--batch", "--passphrase", "", "--quick-gen-key", "forger <forger@example.test>",
        "ed25519", "sign", "never",
    ]));
    run(Command::new("gpg")
        .arg("--homedir")
        .arg(&forger)
        .args(["--batch", "--yes", "--detach-sign", "--output", "SHA256SUMS.gpg", "SHA256SUMS"])
        .current_dir(&forged));
    serve(&forged);
    let known = format!("UserKnownHostsFile={}", work.join("known_hosts").display());
    let o = Command::new(env!("CARGO_BIN_EXE_imgforge"))
        .args(["update", "--host", "node", "--site", "upd", "--profiles"])
        .arg(&good)
        .args(["--address", "127.0.0.1", "--port", &ssh_port.to_string(), "-i"])
        .arg(&admin)
        .args(["--ssh-option", &known, "--timeout", "600"])
        .output()
        .unwrap();
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(
        err.contains("no newer version (or the folder could not be read and verified)"),
        "{out}\n{err}"
    );
    drop(s);
    assert_eq!(setting(&autoboot(&disk), "all", "boot_partition").as_deref(), Some("3"));
    assert_eq!(kept_state(&disk, &work), state);
    let _ = std::fs::remove_dir_all(&work);
}
