//! Issue 14's proof: one x86_64-vm disk file, booted again and again, takes versions from a
//! publish folder served on this machine's loopback (the guest reaches it as 10.0.2.2
//! through QEMU's user network), as a node does from its site's `updates` URL.
//!
//! 1. version 1 boots to READY; a row goes into PostgreSQL; the secret was seeded;
//! 2. version 2 is published and pushed with `imgforge update --host` (over SSH, the site's
//!    admin key): the node fetches, verifies, writes the other slot, reboots into it, becomes
//!    READY and is blessed; it stays on version 2 across a further reboot;
//! 3. version 3 has a service that always fails: it is not blessed and the node comes back
//!    to version 2 by itself;
//! 4. a version 4 signed by a key the node does not trust, then one whose root was altered
//!    after signing, are refused, and the node stays on version 2;
//! 5. the row, the seeded secret, the generated key, machine-id and SSH host key never change.
//!
//! The role is tests/fixtures/roles/pg-backup.toml (PostgreSQL, a seeded password, a
//! generated key, a pg_dump job). The test drives the guest through systemd's debug shell on
//! a second serial port (`imgforge::qemu::session`). Gated with #[ignore]; see tests/README.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{free_port, imgforge, run, serial, text, tmp, Server};
use imgforge::qemu::{self, session::Session, BootOptions, Firmware, Verdict};

const ROLE: &str = "pg-backup";
const HOST: &str = "node";

/// A profiles folder with the test role and a site whose host `node` takes updates from
/// `url` and lets `admin_key` log in; `broken` adds version 3's mistake, a service that
/// always fails.
fn profiles(dir: &Path, url: &str, admin_key: &str, broken: bool) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    run(Command::new("cp")
        .arg("-r")
        .arg(root.join("profiles"))
        .arg(dir));
    let p = dir.join("profiles");
    let mut role =
        std::fs::read_to_string(root.join("tests/fixtures/roles/pg-backup.toml")).unwrap();
    if broken {
        role.push_str(
            "\n[[service]]\nname = \"broken\"\n\
             description = \"version 3's mistake: a service that always fails\"\n\
             exec = [\"/bin/false\"]\n",
        );
    }
    std::fs::write(p.join("roles/pg-backup.toml"), role).unwrap();
    std::fs::write(
        p.join("sites/upd.toml"),
        format!(
            "domain = \"example.test\"\nlan = [\"10.0.2.0/24\"]\n\
             admin-ssh-keys = [\"{admin_key}\"]\n\n[[host]]\nname = \"{HOST}\"\n\
             role = \"{ROLE}\"\nupdates = {{ url = \"{url}\", on-calendar = \"Sun 03:00\" }}\n"
        ),
    )
    .unwrap();
    p
}

fn args<'a>(profiles: &'a Path, version: &'a str, keys: &'a Path) -> Vec<&'a str> {
    vec![
        "--profiles",
        profiles.to_str().unwrap(),
        "--site",
        "upd",
        "--role",
        ROLE,
        "--version",
        version,
        "--key-dir",
        keys.to_str().unwrap(),
        "--quiet",
    ]
}

fn publish(profiles: &Path, version: &str, keys: &Path, out: &Path, images: &Path) {
    let mut a = vec!["publish", "--out", out.to_str().unwrap()];
    a.extend(["--images", images.to_str().unwrap()]);
    a.extend(args(profiles, version, keys));
    let o = imgforge(&a);
    assert!(o.status.success(), "publish {version}: {}", text(&o.stderr));
}

/// Stops the gpg-agents the test's signing started (one per gpg home), also when it fails:
/// an agent outlives its home folder otherwise.
struct Agents(Vec<PathBuf>);

impl Drop for Agents {
    fn drop(&mut self) {
        for home in &self.0 {
            let _ = Command::new("gpgconf")
                .arg("--homedir")
                .arg(home)
                .args(["--kill", "gpg-agent"])
                .status();
        }
    }
}

/// Makes `served/node` the folder `version_dir`: what a publish into the served folder does.
fn serve(served: &Path, version_dir: &Path) {
    let link = served.join(HOST);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(version_dir, &link).unwrap();
}

/// A copy of a published version renamed to `version`, its SHA256SUMS signed by `sign`
/// (a gpg home), and its root replaced by `substitute` after signing.
fn forged(
    from: &Path,
    from_v: &str,
    version: &str,
    dst: &Path,
    sign: &Path,
    substitute: Option<&Path>,
) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("SHA256SUMS") {
            continue;
        }
        let renamed = name.replace(&format!("_{from_v}."), &format!("_{version}."));
        std::fs::copy(from.join(&name), dst.join(renamed)).unwrap();
    }
    let sums = run(Command::new("sh")
        .arg("-c")
        .arg("sha256sum -- *")
        .current_dir(dst));
    std::fs::write(dst.join("SHA256SUMS"), sums).unwrap();
    run(Command::new("gpg")
        .arg("--homedir")
        .arg(sign)
        .args([
            "--batch",
            "--yes",
            "--detach-sign",
            "--output",
            "SHA256SUMS.gpg",
            "SHA256SUMS",
        ])
        .current_dir(dst));
    if let Some(other) = substitute {
        // After signing, the root is replaced by another valid one (version 3's): only the
        // hash in SHA256SUMS tells them apart.
        std::fs::copy(other, dst.join(format!("{ROLE}_{version}.root.xz"))).unwrap();
    }
}

/// What must never change on the node, read in the guest.
const STATE: &str =
    "psql_row=$(runuser -u postgres -- psql -d app -tAc 'select note from kept order by id');\
    echo \"row=$psql_row\";\
    echo \"secret=$(sha256sum < /var/lib/imgforge/secrets/db-password | cut -c1-16)\";\
    echo \"generated=$(sha256sum < /var/lib/imgforge/secrets/app-key | cut -c1-16)\";\
    echo \"machine-id=$(cat /etc/machine-id)\";\
    echo \"ssh=$(ssh-keygen -lf /var/lib/imgforge/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f2)\"";

fn ready_version(v: &Verdict) -> Option<String> {
    match v {
        Verdict::Ready(l) => seed_area::ready::parse(l).map(|r| r.version),
        _ => None,
    }
}

const BOOT: Duration = Duration::from_secs(900);
const SHELL: Duration = Duration::from_secs(120);

/// The entries on the ESP, and the running version's blessing (systemd-bless-boot ran).
fn entries(s: &mut Session) -> String {
    s.sh_ok("ls /boot/efi/loader/entries | sort | tr '\\n' ' '", SHELL)
        .unwrap()
}

/// Waits until systemd-bless-boot has run for this boot (boot-complete.target reached).
fn wait_blessed(s: &mut Session) -> String {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (code, _) = s
            .sh(
                "systemctl is-active --quiet systemd-bless-boot.service",
                SHELL,
            )
            .unwrap();
        if code == 0 {
            return entries(s);
        }
        assert!(
            Instant::now() < deadline,
            "systemd-bless-boot did not run: {}",
            s.sh("systemctl status boot-complete.target systemd-bless-boot.service imgforge-ready.service --no-pager 2>&1 | tail -30", SHELL)
                .unwrap()
                .1
        );
        std::thread::sleep(Duration::from_secs(5));
    }
}

#[test]
#[ignore = "slow: builds versions 1-3 of a PostgreSQL role (~15 min warm) and boots one disk through three updates (~25 min); needs gpg, python3"]
fn update_ab_a_node_takes_a_good_version_returns_from_a_broken_one_and_refuses_a_forged_one() {
    let _g = serial();
    let work = tmp("update-ab");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    // The key folder lies outside the checkout (keygen refuses one inside it).
    let key_home = tempfile::Builder::new()
        .prefix("imgforge-update-keys")
        .tempdir_in("/tmp")
        .unwrap();
    let keys = key_home.path().join("signing");
    let _agents = Agents(vec![keys.join("gnupg"), key_home.path().join("forger")]);
    let o = imgforge(&[
        "keygen",
        "--key-dir",
        keys.to_str().unwrap(),
        "--name",
        "update test",
    ]);
    assert!(o.status.success(), "keygen: {}", text(&o.stderr));
    // A second key the node does not trust: version 4's forger.
    let forger = key_home.path().join("forger");
    std::fs::create_dir_all(&forger).unwrap();
    run(Command::new("chmod").arg("700").arg(&forger));
    run(Command::new("gpg").arg("--homedir").arg(&forger).args([
        "--batch",
        "--passphrase",
        "",
        "--quick-gen-key",
        "forger <forger@example.test>",
        "ed25519",
        "sign",
        "never",
    ]));

    // The admin's SSH key: `imgforge update --host` logs in with it.
    let admin = key_home.path().join("admin");
    run(Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "admin@update-test",
            "-f",
        ])
        .arg(&admin));
    let admin_pub = std::fs::read_to_string(admin.with_extension("pub")).unwrap();
    let port = free_port();
    let url = format!("http://10.0.2.2:{port}/{HOST}/");
    let good = profiles(&work.join("p-good"), &url, admin_pub.trim(), false);
    let broken = profiles(&work.join("p-broken"), &url, admin_pub.trim(), true);
    let served = work.join("served");
    std::fs::create_dir_all(&served).unwrap();

    // Version 1: the image flashed. Versions 2 and 3: published (each its own folder,
    // served in turn).
    let images = work.join("images");
    let mut build = vec!["build", "--out", images.to_str().unwrap()];
    build.extend(args(&good, "1", &keys));
    let o = imgforge(&build);
    assert!(o.status.success(), "build 1: {}", text(&o.stderr));
    let (v2, v3) = (work.join("v2"), work.join("v3"));
    publish(&good, "2", &keys, &v2, &work.join("images-2"));
    publish(&broken, "3", &keys, &v3, &work.join("images-3"));
    let (v4_sig, v4_alt) = (work.join("v4-signature"), work.join("v4-altered"));
    forged(&v2, "2", "4", &v4_sig, &forger, None);
    let v3_root = v3.join(format!("{ROLE}_3.root.xz"));
    forged(&v2, "2", "4", &v4_alt, &keys.join("gnupg"), Some(&v3_root));

    // The disk: the image, 1 GiB larger as a real disk is, seeded with the password.
    let disk = work.join("disk.img");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(images.join(format!("{ROLE}-x86_64-vm.img")))
        .arg(&disk));
    run(Command::new("truncate").arg("-s").arg("+1G").arg(&disk));
    let secrets = work.join("secrets.toml");
    std::fs::write(&secrets, "db-password = \"kept-across-versions\"\n").unwrap();
    let o = imgforge(&[
        "seed",
        disk.to_str().unwrap(),
        "--secrets",
        secrets.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "seed: {}", text(&o.stderr));

    let plan = imgforge::plan::resolve(
        &imgforge::profile::ProfileSource::Dir(good.clone()),
        &imgforge::plan::Request {
            role: ROLE.into(),
            version: Some("1".into()),
            target: "x86_64-vm".into(),
            site: "upd".into(),
            host: Some(HOST.into()),
        },
    )
    .unwrap();
    let ssh_port = free_port();
    let opts = BootOptions {
        qemu: plan.qemu.clone(),
        image: disk.clone(),
        firmware: Firmware::Uefi,
        cmdline_extra: vec![],
        forwards: vec![(ssh_port, 22)],
        snapshot: false,
        timeout: BOOT,
        network: qemu::Network::user_for(&plan.host),
        reboots: true,
        shell: Some(work.join("shell.sock")),
    };
    let _server = Server::start(&served, port);
    let mut s = Session::start(&opts, &work.join("console.log")).unwrap();

    // 1. Version 1, READY; the row and what must stay.
    let started = Instant::now();
    let v = s.wait_verdict(BOOT).unwrap();
    eprintln!(
        "update test: version 1 READY {:.0} s after power-on (its first boot)",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(ready_version(&v).as_deref(), Some("1"), "{v:?}");
    s.sh_ok(
        "runuser -u postgres -- psql -d app -c \"create table kept (id serial primary key, note text); insert into kept (note) values ('written by version 1')\"",
        SHELL,
    )
    .unwrap();
    let before = s.sh_ok(STATE, SHELL).unwrap();
    eprintln!("update test: version 1 READY; state:\n{before}");
    assert!(before.contains("row=written by version 1"), "{before}");
    for line in before.lines() {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        assert!(!value.is_empty(), "nothing read for {key}: {before}");
    }
    // The seeded password is the node's (the test's own value, not a real secret).
    s.sh_ok(
        "grep -qx kept-across-versions /var/lib/imgforge/secrets/db-password",
        SHELL,
    )
    .unwrap();
    // The flashed version is not counted: nothing to return to.
    assert_eq!(entries(&mut s).trim(), "imgforge_1.conf");

    // 2. Version 2: found, verified, written, rebooted into, READY, blessed. Pushed now by
    // `imgforge update --host` over SSH (the admin key from the site, the port QEMU forwards).
    serve(&served, &v2);
    let ssh_port_s = ssh_port.to_string();
    let known_hosts = format!("UserKnownHostsFile={}", work.join("known_hosts").display());
    let o = imgforge(&[
        "update",
        "--host",
        HOST,
        "--site",
        "upd",
        "--profiles",
        good.to_str().unwrap(),
        "--address",
        "127.0.0.1",
        "--port",
        &ssh_port_s,
        "-i",
        admin.to_str().unwrap(),
        "--ssh-option",
        &known_hosts,
        "--timeout",
        "1500",
    ]);
    let said = text(&o.stdout);
    assert!(
        o.status.success(),
        "imgforge update: {said}\n{}",
        text(&o.stderr)
    );
    // e.g. `node: version 2 READY, 234 s after the update started (was 1)`
    let secs = said
        .strip_prefix(&format!("{HOST}: version 2 READY, "))
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("{said}"));
    eprintln!("update test: version 2 READY {secs} s after the update started");
    // The node's script, as `update` showed it: the dump came before the slot was written.
    let err = text(&o.stderr);
    let (dumping, switching) = (
        err.find("version 2 found; dumping the databases first"),
        err.find("version 2 installed; rebooting"),
    );
    assert!(
        dumping.is_some() && switching.is_some() && dumping < switching,
        "the update did not dump the database before switching:\n{err}"
    );
    let v = s.wait_verdict(BOOT).unwrap();
    assert_eq!(ready_version(&v).as_deref(), Some("2"), "{v:?}");
    let e = wait_blessed(&mut s);
    assert!(
        e.contains("imgforge_2.conf ") && !e.contains("imgforge_2+"),
        "v2 not blessed: {e}"
    );
    assert_eq!(
        s.sh_ok(STATE, SHELL).unwrap(),
        before,
        "state changed by version 2"
    );
    // The previous boot's journal (kept on the data partition) has the update's dump
    // besides the one the job makes at boot.
    let log = s
        .sh_ok(
            "journalctl -b -1 --no-pager -o cat -u imgforge-job-backup-app.service",
            SHELL,
        )
        .unwrap();
    assert!(
        log.matches("imgforge-backup: database=app file=").count() >= 2,
        "no dump by the update in the previous boot's journal:\n{log}"
    );
    // A further reboot stays on version 2.
    s.sh_ok("systemctl reboot --no-block", SHELL).unwrap();
    let v = s.wait_verdict(BOOT).unwrap();
    assert_eq!(ready_version(&v).as_deref(), Some("2"), "{v:?}");

    // 3. Version 3 never becomes READY; the node returns to version 2 with no one acting.
    serve(&served, &v3);
    s.sh_ok("systemctl start --no-block imgforge-update.service", SHELL)
        .unwrap();
    let v = s.wait_verdict(BOOT).unwrap();
    match &v {
        Verdict::Failed(l) => assert!(
            l.contains("version=3") && l.contains("broken.service"),
            "{l}"
        ),
        other => panic!("version 3 should fail its checks: {other:?}"),
    }
    let v = s.wait_verdict(BOOT).unwrap();
    assert_eq!(
        ready_version(&v).as_deref(),
        Some("2"),
        "back on version 2: {v:?}"
    );
    let e = entries(&mut s);
    assert!(
        e.contains("imgforge_2.conf ") && e.contains("imgforge_3+0-"),
        "version 3 should be marked bad and version 2 kept: {e}"
    );
    // The timer's path (imgforge-update.service) this time: its journal, two boots back,
    // has the dump before the switch.
    let log = s
        .sh_ok(
            "journalctl -b -2 --no-pager -o cat -u imgforge-update.service -u imgforge-job-backup-app.service",
            SHELL,
        )
        .unwrap();
    let (dumping, switching) = (
        log.find("version 3 found; dumping the databases first"),
        log.find("version 3 installed"),
    );
    assert!(
        dumping.is_some() && switching.is_some() && dumping < switching,
        "the update service did not dump the database before switching:\n{log}"
    );
    assert_eq!(
        s.sh_ok(STATE, SHELL).unwrap(),
        before,
        "state changed by version 3"
    );

    // 4. Forged versions are refused and the node stays on version 2.
    for (what, dir, says) in [
        (
            "a signature by an untrusted key",
            &v4_sig,
            ["signature", "gpg"],
        ),
        (
            "a root altered after signing",
            &v4_alt,
            ["checksum", "hash"],
        ),
    ] {
        serve(&served, dir);
        let (code, out) = s
            .sh("/usr/lib/imgforge/update 2>&1; echo \"exit=$?\"", BOOT)
            .unwrap();
        eprintln!("update test: {what}:\n{out}");
        assert_eq!(code, 0);
        assert!(
            !out.contains("rebooting"),
            "{what}: the node took version 4:\n{out}"
        );
        let journal = s
            .sh_ok("journalctl -b --no-pager -o cat | grep -i -E 'sysupdate|pull|gpg|hash|checksum|signature' | tail -20", SHELL)
            .unwrap();
        let said = format!("{out}\n{journal}").to_lowercase();
        assert!(
            says.iter().any(|w| said.contains(w)),
            "{what}: the log does not say why:\n{out}\n{journal}"
        );
        let running = s.sh_ok("cat /usr/lib/imgforge/version", SHELL).unwrap();
        assert_eq!(running.trim(), "2");
    }
    let e = entries(&mut s);
    assert!(
        !e.contains("imgforge_4"),
        "a version 4 entry was written: {e}"
    );

    // 5. A cold start of the same disk (a fresh firmware variable store) is version 2, with
    // the state as version 1 left it.
    s.sh_ok("systemctl poweroff --no-block", SHELL).unwrap();
    s.wait_exit(Duration::from_secs(180)).unwrap();
    drop(s);
    let mut s = Session::start(&opts, &work.join("console-cold.log")).unwrap();
    let v = s.wait_verdict(BOOT).unwrap();
    assert_eq!(ready_version(&v).as_deref(), Some("2"), "{v:?}");
    assert_eq!(
        s.sh_ok(STATE, SHELL).unwrap(),
        before,
        "state after a cold start"
    );
}
