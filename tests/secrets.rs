//! Slow test of the secrets path end to end, with a test role (tests/fixtures/roles/
//! pg-backup.toml) that runs PostgreSQL: build, seed a copy enlarged by 1 GiB, boot it, boot
//! it again. Gated with #[ignore]; `scripts/test` runs it. See tests/README.md.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{debugfs, imgforge, partition, run, serial, text, tmp, verify_generated_units};

/// A copy of the checkout's profiles with the test role added.
fn profiles_with_test_role() -> PathBuf {
    let dir = tmp("pg-profiles");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    run(Command::new("cp")
        .arg("-r")
        .arg(root.join("profiles"))
        .arg(&dir));
    std::fs::copy(
        root.join("tests/fixtures/roles/pg-backup.toml"),
        dir.join("profiles/roles/pg-backup.toml"),
    )
    .unwrap();
    dir.join("profiles")
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Boots `disk` as it is; returns the serial console of that boot.
fn boot(profiles: &Path, out: &Path, disk: &Path) -> String {
    let log = out.join("boot.serial.log");
    let o = imgforge(&[
        "test",
        "--role",
        "pg-backup",
        "--profiles",
        profiles.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--disk",
        disk.to_str().unwrap(),
        "--serial-log",
        log.to_str().unwrap(),
    ]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "boot test failed:\n{err}");
    assert!(
        text(&o.stdout).starts_with("IMGFORGE-READY role=pg-backup"),
        "{}",
        text(&o.stdout)
    );
    std::fs::read_to_string(log).unwrap()
}

#[test]
#[ignore = "slow: builds a PostgreSQL image and boots it twice (~3-4 min warm, ~5 min cold)"]
fn seeded_secrets_reach_services_the_seed_is_wiped_generated_ones_stay_and_the_root_grows() {
    let _g = serial();
    let profiles = profiles_with_test_role();
    let out = tmp("pg-out");
    let o = imgforge(&[
        "build",
        "--role",
        "pg-backup",
        "--profiles",
        profiles.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "build failed:\n{}", text(&o.stderr));
    let img = out.join("pg-backup-x86_64-vm.img");
    // The database, job and timer units too pass the image's own systemd-analyze verify.
    let units = verify_generated_units(
        &out.join("pg-backup-x86_64-vm.manifest.json"),
        "pg-verify-root",
    );
    for u in [
        "db-client.service",
        "imgforge-pg-init-app.service",
        "imgforge-job-backup-app.service",
        "imgforge-job-backup-app.timer",
        "imgforge-snakeoil.service",
    ] {
        assert!(
            units.iter().any(|v| v.ends_with(u)),
            "{u} not verified: {units:?}"
        );
    }

    // ssl-cert's install-time key (PostgreSQL serves it) is not shared by every card: the
    // image has only a link to where the node makes its own on first boot, on the data
    // partition (checked after the boot below).
    let (img_root, _) = partition(&img, 3);
    let link = debugfs(
        &img,
        img_root,
        "stat /etc/ssl/private/ssl-cert-snakeoil.key",
    );
    assert!(
        link.contains("Type: symlink") && link.contains("/var/lib/imgforge/ssl/"),
        "the image holds a TLS key rather than a link to the data partition:\n{link}"
    );
    // Paths in the data partition's filesystem, which the node mounts at /var.
    let key_path = "/lib/imgforge/ssl/ssl-cert-snakeoil.key";

    // A value unique to this run: the built image cannot hold it, the seeded copy holds it
    // once (in the seed area).
    let password = format!("pw-{:?}", std::time::SystemTime::now())
        .replace(|c: char| !c.is_ascii_alphanumeric(), "");
    assert_eq!(count(&std::fs::read(&img).unwrap(), password.as_bytes()), 0);
    let secrets = out.join("secrets.toml");
    std::fs::write(&secrets, format!("db-password = \"{password}\"\n")).unwrap();

    let disk = out.join("disk.img");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&img)
        .arg(&disk));
    // The card is 1 GiB larger than the image, as a real card is.
    run(Command::new("truncate").arg("-s").arg("+1G").arg(&disk));
    let o = imgforge(&[
        "seed",
        disk.to_str().unwrap(),
        "--secrets",
        secrets.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        !text(&o.stderr).contains(&password) && !text(&o.stdout).contains(&password),
        "a value was printed"
    );
    let (seed_off, seed_len) = partition(&disk, 2);
    let bytes = std::fs::read(&disk).unwrap();
    assert_eq!(count(&bytes, password.as_bytes()), 1);
    assert_eq!(
        count(
            &bytes[seed_off as usize..(seed_off + seed_len) as usize],
            password.as_bytes()
        ),
        1,
        "only in the seed area"
    );
    drop(bytes);

    let log = boot(&profiles, &out, &disk);
    assert!(
        log.contains(
            "imgforge-firstboot: seeded=db-password generated=app-key missing=- seed-area=wiped"
        ),
        "{log}"
    );
    assert!(
        log.contains("imgforge-pg-init: database=app owner=app"),
        "{log}"
    );
    let backup = log
        .lines()
        .find(|l| l.contains("imgforge-backup: database=app"))
        .unwrap_or_else(|| panic!("no backup line:\n{log}"));
    let entries: usize = backup
        .split("entries=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect(backup);
    assert!(
        entries > 0,
        "pg_restore --list read the dump's table of contents: {backup}"
    );
    assert!(!log.contains(&password), "a value reached the console");

    // The seed area's secrets region is zero; the slot list stays.
    let bytes = std::fs::read(&disk).unwrap();
    let seed = &bytes[seed_off as usize..(seed_off + seed_len) as usize];
    assert!(seed[64 * 1024..].iter().all(|b| *b == 0), "seed area wiped");
    assert!(seed.starts_with(b"IMGFORGE-SLOTS"), "slot list kept");
    drop(bytes);

    // The data partition and filesystem fill the enlarged disk (GPT keeps 33 sectors at the
    // end); the root slot is as built: the node never writes it.
    run(Command::new("sfdisk").arg("-V").arg(&disk));
    let disk_len = std::fs::metadata(&disk).unwrap().len();
    // `data_off` names the data partition's filesystem from here on.
    let (data_off, data_len) = partition(&disk, 5);
    assert!(
        disk_len - (data_off + data_len) <= 1024 * 1024,
        "data partition ends {} bytes before the disk's end",
        disk_len - (data_off + data_len)
    );
    let (slot_off, slot_len) = partition(&disk, 3);
    let range = |path: &std::path::Path| {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(path).unwrap();
        f.seek(SeekFrom::Start(slot_off)).unwrap();
        let mut v = vec![0u8; slot_len as usize];
        f.read_exact(&mut v).unwrap();
        v
    };
    assert!(
        range(&img) == range(&disk),
        "root slot A changed on the node"
    );
    let sb = debugfs(&disk, data_off, "stats");
    let field = |k: &str| -> u64 {
        sb.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let fs_len = field("Block count:") * field("Block size:");
    assert!(
        data_len - fs_len < 4 * 1024 * 1024,
        "filesystem {fs_len} bytes in a {data_len}-byte partition"
    );
    assert!(fs_len > 1024 * 1024 * 1024, "grew past the 1 GiB added");
    run(Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset={data_off}", disk.display())));

    assert_eq!(
        debugfs(&disk, data_off, "cat /lib/imgforge/secrets/db-password").trim_end(),
        password
    );
    assert!(
        debugfs(&disk, data_off, &format!("stat {key_path}")).contains("Inode:"),
        "the node made its TLS key"
    );
    let key = debugfs(&disk, data_off, "cat /lib/imgforge/secrets/app-key");
    assert_eq!(key.trim_end().len(), 64, "{key}");
    let dumps = debugfs(&disk, data_off, "ls /lib/imgforge/backups/app");
    let dump = dumps
        .split_whitespace()
        .find(|w| w.starts_with("app-") && w.ends_with(".dump"))
        .unwrap_or_else(|| panic!("{dumps}"));
    let copy = out.join("copy.dump");
    debugfs(
        &disk,
        data_off,
        &format!("dump /lib/imgforge/backups/app/{dump} {}", copy.display()),
    );
    assert!(
        std::fs::read(&copy).unwrap().starts_with(b"PGDMP"),
        "a pg_dump custom-format archive"
    );

    // Second boot: first boot does not run again and the generated key is unchanged.
    let log = boot(&profiles, &out, &disk);
    assert!(
        !log.contains("imgforge-firstboot:"),
        "first boot ran twice:\n{log}"
    );
    assert!(log.contains("imgforge-backup: database=app"), "{log}");
    assert_eq!(
        debugfs(&disk, data_off, "cat /lib/imgforge/secrets/app-key"),
        key,
        "generated secret changed across a reboot"
    );
}
