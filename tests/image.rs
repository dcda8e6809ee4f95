//! Slow tests: build the real proxy x86_64-vm image (mmdebstrap, mke2fs, qemu-img) and
//! boot it in QEMU under OVMF. Gated with #[ignore]; `scripts/test` runs them. See
//! tests/README.md for how long each takes.
//!
//! The tests share one built image (built once) and run one at a time: QEMU under TCG and a
//! build on the same two cores would only slow each other.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

mod common;
use common::{debugfs, imgforge, partition, run, serial, text, tmp, verify_generated_units};

static BUILT: OnceLock<PathBuf> = OnceLock::new();

/// The output folder of the shared build.
fn built() -> &'static Path {
    BUILT.get_or_init(|| {
        let out = tmp("image-out");
        let o = imgforge(&["build", "--out", out.to_str().unwrap()]);
        assert!(o.status.success(), "build failed:\n{}", text(&o.stderr));
        out
    })
}

fn image() -> PathBuf {
    built().join("proxy-x86_64-vm.img")
}

fn stage_lines(stderr: &str) -> Vec<(String, String)> {
    let summary = stderr.split("summary:\n").nth(1).expect("a summary");
    let mut rows = Vec::new();
    for l in summary.lines() {
        let mut w = l.split_whitespace();
        let (Some(k), Some(v)) = (w.next(), w.next()) else {
            break;
        };
        rows.push((k.to_string(), v.to_string()));
        if k == "total" {
            break;
        }
    }
    rows
}

/// The version in root slot A's GPT name (`root_<version>`), as sfdisk reads it.
fn slot_a_version(img: &Path) -> String {
    let o = Command::new("sfdisk")
        .arg("--json")
        .arg(img)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["partitiontable"]["partitions"][2]["name"]
        .as_str()
        .and_then(|n| n.strip_prefix("root_"))
        .unwrap_or_else(|| panic!("slot A is not named root_<version>: {v}"))
        .to_string()
}

fn sha256(p: &Path) -> String {
    common::sha256_of(p, None)
}

/// The cache the imgforge under test uses (its default, as `cache::default_dir` picks it).
fn cache_dir() -> PathBuf {
    imgforge::cache::default_dir()
}

#[test]
#[ignore = "slow: builds a real image (~1 min warm, ~4 min cold)"]
fn image_passes_sfdisk_fsck_fat_and_e2fsck() {
    let _g = serial();
    let img = image();
    run(Command::new("sfdisk").arg("-V").arg(&img));
    let (esp_off, esp_len) = partition(&img, 1);
    let (root_off, _) = partition(&img, 3);

    // The ESP on its own, as firmware and fsck.fat see it.
    let esp = tmp("esp").join("esp.img");
    let data = std::fs::read(&img).unwrap();
    std::fs::write(&esp, &data[esp_off as usize..(esp_off + esp_len) as usize]).unwrap();
    let fsck = run(Command::new("fsck.fat").arg("-n").arg(&esp));
    assert_eq!(
        fsck.lines().count(),
        2,
        "fsck.fat found something to repair:\n{fsck}"
    );
    let listing = run(Command::new("mdir").args(["-i", esp.to_str().unwrap(), "-/", "-b", "::"]));
    // Each version's files carry its version (what sysupdate's transfers match), the one
    // slot A holds (its GPT name, root_<version>).
    let version = slot_a_version(&img);
    let entry_path = format!("::/loader/entries/imgforge_{version}.conf");
    for f in [
        "::/EFI/BOOT/BOOTX64.EFI",
        "::/loader/loader.conf",
        &entry_path,
        &format!("::/imgforge/vmlinuz_{version}"),
        &format!("::/imgforge/initrd_{version}"),
    ] {
        assert!(
            listing.lines().any(|l| l == f),
            "{f} missing from the ESP:\n{listing}"
        );
    }
    let entry = run(Command::new("mtype").args(["-i", esp.to_str().unwrap(), &entry_path]));
    assert!(
        entry.contains("options root=UUID=")
            && entry.contains(" ro ")
            && entry.contains("console=ttyS0")
            && entry.contains(&format!("linux /imgforge/vmlinuz_{version}\n"))
            && entry.contains(&format!("version {version}\n")),
        "{entry}"
    );
    // No `default`: systemd-boot picks the newest entry whose tries are not used up.
    let loader =
        run(Command::new("mtype").args(["-i", esp.to_str().unwrap(), "::/loader/loader.conf"]));
    assert!(!loader.contains("default"), "{loader}");

    let e2 = run(Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset={root_off}", img.display())));
    assert!(e2.contains("files") && !e2.contains("Fix?"), "{e2}");
    // Slot B is as large as A and empty; the data partition is an empty ext4 (the node
    // fills it from the slot's /var at first boot).
    let (b_off, b_len) = partition(&img, 4);
    let (a_off, a_len) = partition(&img, 3);
    assert_eq!(b_len, a_len);
    assert_eq!(b_off, a_off + a_len);
    let (data_off, _) = partition(&img, 5);
    let e2 = run(Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset={data_off}", img.display())));
    assert!(e2.contains("imgforge-data") && !e2.contains("Fix?"), "{e2}");

    // What compose put in the root, and what it kept out.
    let ssh = debugfs(&img, root_off, "ls -l /etc/ssh");
    assert!(
        !ssh.contains("ssh_host_"),
        "the image must carry no SSH host keys:\n{ssh}"
    );
    let node = debugfs(&img, root_off, "cat /etc/imgforge/node.toml");
    assert!(
        node.contains("role = \"proxy\"")
            && node.contains("units = [\"nftables.service\", \"gateway.service\"]"),
        "{node}"
    );
    // The firewall and the gateway's routes, rendered from the site.
    let rules = debugfs(&img, root_off, "cat /etc/nftables.conf");
    assert!(
        rules.contains("policy drop;") && rules.contains("tcp dport 443 accept"),
        "{rules}"
    );
    let gw = debugfs(&img, root_off, "cat /etc/imgforge/gateway.toml");
    assert!(
        gw.contains("upstream = \"http://192.168.50.12:8888\""),
        "{gw}"
    );
    let wants = debugfs(
        &img,
        root_off,
        "ls /etc/systemd/system/multi-user.target.wants",
    );
    assert!(
        wants.contains("gateway.service") && wants.contains("imgforge-ready.service"),
        "{wants}"
    );
    let hostname = debugfs(&img, root_off, "cat /etc/hostname");
    assert!(hostname.contains("edge"), "{hostname}");
    let gw = debugfs(&img, root_off, "stat /usr/local/bin/gateway");
    assert!(
        gw.contains("Mode:  0755") && gw.contains("User:     0"),
        "{gw}"
    );

    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(built().join("proxy-x86_64-vm.manifest.json")).unwrap(),
    )
    .unwrap();
    let pkgs = manifest["packages"].as_array().unwrap();
    assert!(
        pkgs.iter()
            .any(|p| p["name"] == "systemd" && p["version"].as_str().unwrap().starts_with("257")),
        "trixie's systemd 257"
    );
    assert!(manifest["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["sha256"].as_str().unwrap().len() == 64));
    let sums = std::fs::read_to_string(built().join("SHA256SUMS")).unwrap();
    assert!(
        sums.contains(&format!("{}  proxy-x86_64-vm.img", sha256(&img))),
        "{sums}"
    );
    run(Command::new("qemu-img")
        .arg("check")
        .arg(built().join("proxy-x86_64-vm.qcow2")));
}

#[test]
#[ignore = "slow: builds a real image twice (~1 min warm)"]
fn same_inputs_give_the_same_image() {
    let _g = serial();
    let first = sha256(&image());
    let out = tmp("rebuilt");
    // Compose and every later stage run again from the same base and binaries.
    let o = imgforge(&[
        "build",
        "--rebuild",
        "compose",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stages = stage_lines(&text(&o.stderr));
    assert!(
        stages.iter().any(|(s, t)| s == "compose" && t != "cached"),
        "compose ran again: {stages:?}"
    );
    assert_eq!(
        sha256(&out.join("proxy-x86_64-vm.img")),
        first,
        "two builds of the same inputs differ"
    );
}

#[test]
#[ignore = "slow: composes the proxy's root (cached after the tests above, ~1 min warm)"]
fn a_root_larger_than_the_fixed_slot_is_refused_naming_the_key() {
    let _g = serial();
    built();
    // The same profiles with slots too small for the proxy's root.
    let dir = tmp("small-slots");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    run(Command::new("cp")
        .arg("-r")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles"))
        .arg(&dir));
    let common = dir.join("profiles/common.toml");
    let text_of = std::fs::read_to_string(&common).unwrap();
    assert!(text_of.contains("root-slot-mib = 1024"));
    std::fs::write(
        &common,
        text_of.replace("root-slot-mib = 1024", "root-slot-mib = 300"),
    )
    .unwrap();
    let out = dir.join("out");
    let o = imgforge(&[
        "build",
        "--profiles",
        dir.join("profiles").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("role proxy: its root needs")
            && err.contains("more than a root slot's 300 MiB (root-slot-mib"),
        "{err}"
    );
    assert!(
        !out.join("proxy-x86_64-vm.img").exists(),
        "an image was written"
    );
}

#[test]
#[ignore = "slow: builds a real image (~1 min warm)"]
fn unchanged_build_is_cached_and_an_overlay_edit_reruns_compose_onward() {
    let _g = serial();
    built();
    let o = imgforge(&["build", "--out", built().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stages = stage_lines(&text(&o.stderr));
    let names: Vec<&str> = stages.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        names,
        [
            "base",
            "binaries",
            "compose",
            "disk",
            "filesystems",
            "outputs",
            "total"
        ]
    );
    for (s, t) in &stages[..6] {
        assert_eq!(t, "cached", "{s} rebuilt with nothing changed");
    }

    // One overlay file changed: base and binaries come from cache, the rest runs.
    let overlays = tmp("overlays");
    run(Command::new("cp")
        .arg("-r")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("overlays/."))
        .arg(&overlays));
    let conf = overlays.join("common/etc/ssh/sshd_config.d/imgforge.conf");
    // The edit is unique to this run: the cache is content-addressed and shared with earlier
    // runs, so a fixed edit would find the compose output a previous run already stored.
    let stamp = format!(
        "# edited by the overlay test {:?}\n",
        std::time::SystemTime::now()
    );
    let mut t = std::fs::read_to_string(&conf).unwrap();
    t.push_str(&stamp);
    std::fs::write(&conf, t).unwrap();
    let out = tmp("overlay-out");
    let o = imgforge(&[
        "build",
        "--overlays",
        overlays.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stages = stage_lines(&text(&o.stderr));
    for (s, t) in &stages[..6] {
        let want_cached = s == "base" || s == "binaries";
        assert_eq!(t == "cached", want_cached, "{s}: {t} ({stages:?})");
    }
    let img = out.join("proxy-x86_64-vm.img");
    let (root_off, _) = partition(&img, 3);
    assert!(
        debugfs(&img, root_off, "cat /etc/ssh/sshd_config.d/imgforge.conf").contains(stamp.trim())
    );
}

#[test]
#[ignore = "slow: boots the image in QEMU under OVMF (~30-60 s under TCG)"]
fn boot_test_reaches_ready_through_uefi_firmware() {
    let _g = serial();
    let out = built();
    let o = imgforge(&["test", "--out", out.to_str().unwrap()]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "imgforge test failed:\n{err}");
    assert!(err.contains("(UEFI firmware, systemd-boot)"), "{err}");
    let line = text(&o.stdout).trim().to_string();
    let ready =
        seed_area::ready::parse(&line).unwrap_or_else(|| panic!("not a ready line: {line}"));
    assert_eq!(
        (
            ready.role.as_str(),
            ready.target.as_str(),
            ready.passed,
            ready.total
        ),
        ("proxy", "x86_64-vm", 8, 8),
        "{line}"
    );
    // The version the image was built with (by default `0~` and a hash of the plan).
    assert!(ready.version.starts_with("0~"), "{line}");
    assert!(
        err.contains("==> seed: the boot copy with throwaway test values for jupyter-htpasswd"),
        "{err}"
    );
    assert!(
        err.contains(", powered off"),
        "the worker powers off on imgforge.poweroff:\n{err}"
    );
    let log = std::fs::read_to_string(out.join("proxy-x86_64-vm.serial.log")).unwrap();
    assert!(log.contains("IMGFORGE-READY"), "{log}");
}

#[test]
#[ignore = "slow: boots the image with its required slot left empty (~30-60 s)"]
fn an_unseeded_required_slot_fails_the_boot_naming_the_slot() {
    let _g = serial();
    let out = built();
    let o = imgforge(&["test", "--unseeded", "--out", out.to_str().unwrap()]);
    let err = text(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(3),
        "an unseeded required slot fails the boot test:\n{err}"
    );
    assert!(
        err.contains("IMGFORGE-FAILED role=proxy version=0~")
            && err.contains(" failed=slot:jupyter-htpasswd,gateway.service"),
        "{err}"
    );
    let log = std::fs::read_to_string(out.join("proxy-x86_64-vm.serial.log")).unwrap();
    assert!(
        log.contains("imgforge-firstboot: seeded=- generated=session-key missing=jupyter-htpasswd"),
        "{log}"
    );
}

#[test]
#[ignore = "slow: builds and boots an image whose service fails (~1-2 min)"]
fn a_failing_service_fails_the_boot_test_with_the_console_tail() {
    let _g = serial();
    built();
    let dir = tmp("broken-profiles");
    run(Command::new("cp")
        .arg("-r")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles"))
        .arg(&dir));
    std::fs::write(
        dir.join("profiles/roles/broken.toml"),
        "description = \"a role whose service always exits 1\"\n\n[[service]]\nname = \"always-fails\"\ndescription = \"fails\"\nexec = [\"/bin/false\"]\n",
    )
    .unwrap();
    let out = tmp("broken-out");
    let o = imgforge(&[
        "test",
        "--role",
        "broken",
        "--profiles",
        dir.join("profiles").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = text(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(3),
        "a failed boot test exits 3:\n{err}"
    );
    assert!(
        err.contains("IMGFORGE-FAILED role=broken version=")
            && err.contains(" failed=always-fails.service"),
        "{err}"
    );
    assert!(
        err.contains("--- last lines of the serial console"),
        "{err}"
    );
}

#[test]
#[ignore = "slow: starts a build and interrupts it (~10 s warm)"]
fn an_interrupted_build_leaves_no_output_and_no_temporary_files() {
    let _g = serial();
    built();
    let out = tmp("interrupted-out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgforge"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--rebuild",
            "compose",
            "--out",
            out.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Base and binaries come from cache at once; compose, image and outputs take ~6 s.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    run(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "interrupted builds exit 130:\n{err}"
    );
    assert!(
        err.contains("interrupted; temporary files removed"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "nothing may be left in the output folder: {left:?}"
    );
    let left = temporary_stage_folders(child.id());
    assert!(
        left.is_empty(),
        "the interrupted build left temporary stage folders in the cache: {left:?}"
    );
}

/// The pending stage folders (`.tmp-<pid>-*`) process `pid` has in the cache. The cache is
/// shared with every build on the machine (the suite's other lane among them), so only
/// the interrupted build's own count.
fn temporary_stage_folders(pid: u32) -> Vec<String> {
    let mine = format!("{}{pid}-", imgforge::cache::PENDING_PREFIX);
    let mut found = Vec::new();
    for stage in std::fs::read_dir(cache_dir().join("stages")).unwrap() {
        for e in std::fs::read_dir(stage.unwrap().path()).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with(&mine) {
                found.push(name);
            }
        }
    }
    found
}

#[test]
#[ignore = "slow: extracts the composed root (~5 s); needs root for chroot"]
fn generated_units_pass_the_images_own_systemd_analyze_verify() {
    let _g = serial();
    let units = verify_generated_units(
        &built().join("proxy-x86_64-vm.manifest.json"),
        "verify-root",
    );
    assert_eq!(
        units.len(),
        6,
        "gateway and imgforge's firstboot, machine-id, ready, ssh-keygen, var: {units:?}"
    );
}

#[test]
#[ignore = "slow: boots the image and fetches the gateway's page through a forwarded port (~30-60 s)"]
fn boot_forwards_a_port_and_the_gateway_answers_from_the_host_with_the_sites_routes() {
    let _g = serial();
    let out = built();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgforge"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "boot",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
            "--forward",
            &format!("{port}:80"),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    // The gateway runs the configuration rendered from the site: portal.example.test goes
    // to the portal's address, which no VM holds here, so the gateway answers 502 naming it.
    let (mut code, mut page) = (String::new(), String::new());
    while std::time::Instant::now() < deadline {
        let o = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "15",
                "-H",
                "Host: portal.example.test",
                "-w",
                "\n%{http_code}",
                &format!("http://127.0.0.1:{port}/"),
            ])
            .output()
            .unwrap();
        let t = text(&o.stdout);
        if let Some((body, c)) = t.rsplit_once('\n') {
            (page, code) = (body.to_string(), c.trim().to_string());
        }
        if o.status.success() && code != "000" && !code.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let status = child.wait().unwrap();
    assert!(
        (code == "502" || code == "504") && page.contains("192.168.50.11:8000"),
        "the gateway's answer through 127.0.0.1:{port}: {code} {page}"
    );
    assert_eq!(
        status.code(),
        Some(130),
        "SIGTERM stops imgforge boot and its QEMU"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let still = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "2",
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .unwrap();
    assert!(
        !still.status.success(),
        "QEMU must not outlive imgforge boot"
    );
}
