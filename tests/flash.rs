//! Slow tests of `imgforge flash` and `imgforge seed` on regular files and loop devices,
//! with the real proxy x86_64-vm image (built once, from the shared cache). Gated with
//! #[ignore]; they need root for loop devices and mounts. See tests/README.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

mod common;
use common::{imgforge, run, serial, sha256_of, text, tmp};

static BUILT: OnceLock<PathBuf> = OnceLock::new();
const SECRET: &str = "admin:$2y$05$FLASH-TEST-SECRET-VALUE-7f3a";

/// The built image (with its .img.bmap beside it).
fn image() -> &'static Path {
    BUILT.get_or_init(|| {
        let out = tmp("flash-image");
        let o = imgforge(&["build", "--quiet", "--out", out.to_str().unwrap()]);
        assert!(o.status.success(), "build failed:\n{}", text(&o.stderr));
        out.join("proxy-x86_64-vm.img")
    })
}

fn contains(path: &Path, needle: &str) -> bool {
    let data = std::fs::read(path).unwrap();
    data.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn secrets_file(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("secrets.toml");
    std::fs::write(&p, body).unwrap();
    p
}

fn has_partition_table(path: &Path) -> bool {
    Command::new("sfdisk")
        .arg("--json")
        .arg(path)
        .stderr(Stdio::null())
        .output()
        .unwrap()
        .status
        .success()
}

/// A loop device over a fresh sparse file; detached on drop.
struct Loop(String);

impl Loop {
    fn new(dir: &Path, mib: u64) -> Self {
        let backing = dir.join("loop-backing.img");
        std::fs::File::create(&backing)
            .unwrap()
            .set_len(mib * 1024 * 1024)
            .unwrap();
        Loop(
            run(Command::new("losetup").args(["-f", "--show"]).arg(&backing))
                .trim()
                .to_string(),
        )
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
#[ignore = "slow: builds the image (~1 min warm) and flashes it to files (~10 s)"]
fn flash_to_a_file_writes_the_image_and_seeds_secrets_outside_the_image() {
    let _g = serial();
    let img = image();
    let dir = tmp("flash-file");
    let target = dir.join("card.img");
    let o = imgforge(&[
        "flash",
        img.to_str().unwrap(),
        target.to_str().unwrap(),
        "--file-target",
        "--yes",
    ]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("mapped by") && err.contains("wrote") && err.contains("verified"),
        "{err}"
    );
    assert_eq!(
        sha256_of(&target, None),
        sha256_of(img, None),
        "the written file equals the image"
    );

    let secrets = secrets_file(&dir, &format!("jupyter-htpasswd = \"{SECRET}\"\n"));
    let o = imgforge(&[
        "flash",
        img.to_str().unwrap(),
        target.to_str().unwrap(),
        "--file-target",
        "--yes",
        "--secrets",
        secrets.to_str().unwrap(),
    ]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("seeded 1 secret(s): jupyter-htpasswd") && !err.contains(SECRET),
        "names only, never values:\n{err}"
    );
    assert!(
        !contains(img, SECRET),
        "the image itself never holds a secret"
    );
    assert!(
        contains(&target, SECRET),
        "the card holds it, in its seed area"
    );
    let inspect = run(Command::new(env!("CARGO_BIN_EXE_imgforge"))
        .arg("inspect")
        .arg(&target));
    assert!(
        inspect.contains(
            "seed area: slots jupyter-htpasswd, session-key, login-users; seeded (1 values)"
        ),
        "{inspect}"
    );
    assert!(!inspect.contains(SECRET));

    // `imgforge seed` is the same code on an image file.
    let copy = dir.join("seeded.img");
    std::fs::copy(img, &copy).unwrap();
    let o = imgforge(&[
        "seed",
        copy.to_str().unwrap(),
        "--secrets",
        secrets.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(contains(&copy, SECRET));
}

#[test]
#[ignore = "slow: builds the image (~1 min warm)"]
fn bad_secrets_are_refused_before_anything_is_written() {
    let _g = serial();
    let img = image();
    let dir = tmp("flash-bad-secrets");
    let target = dir.join("card.img");
    std::fs::write(&target, vec![0x5au8; 4 << 20]).unwrap();
    let secrets = secrets_file(
        &dir,
        &format!("jupyter-htpasswd = \"{SECRET}\"\nsesion-key = \"{SECRET}\"\n"),
    );
    let o = imgforge(&[
        "flash",
        img.to_str().unwrap(),
        target.to_str().unwrap(),
        "--file-target",
        "--yes",
        "--secrets",
        secrets.to_str().unwrap(),
    ]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("secrets.toml:2:1: key `sesion-key`: the image has no slot of this name (slots: jupyter-htpasswd, session-key, login-users)"), "{err}");
    assert!(!err.contains(SECRET), "{err}");
    assert_eq!(
        std::fs::read(&target).unwrap(),
        vec![0x5au8; 4 << 20],
        "nothing written"
    );
    let missing = secrets_file(&dir, "session-key = \"abc\"\n");
    let o = imgforge(&[
        "seed",
        img.to_str().unwrap(),
        "--secrets",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("no value for the required slot(s) jupyter-htpasswd"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
#[ignore = "slow: builds the image; needs root for loop devices (~15 s)"]
fn flash_to_a_loop_device_and_refuse_a_mounted_one() {
    let _g = serial();
    let img = image();
    let dir = tmp("flash-loop");
    let size = std::fs::metadata(img).unwrap().len();
    let dev = Loop::new(&dir, size / (1024 * 1024) + 64);
    let o = imgforge(&["flash", img.to_str().unwrap(), &dev.0, "--yes"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("is not a removable device; pass --force"),
        "{}",
        text(&o.stderr)
    );
    let o = imgforge(&["flash", img.to_str().unwrap(), &dev.0, "--yes", "--force"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        sha256_of(Path::new(&dev.0), Some(size)),
        sha256_of(img, None),
        "the device holds the image"
    );

    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&dev.0));
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    run(Command::new("mount").arg(&dev.0).arg(&mnt));
    let o = imgforge(&["flash", img.to_str().unwrap(), &dev.0, "--yes", "--force"]);
    run(Command::new("umount").arg(&mnt));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains(&format!(
            "{} is in use: mounted at {}",
            dev.0,
            mnt.display()
        )),
        "{}",
        text(&o.stderr)
    );
}

#[test]
#[ignore = "slow: builds the image and writes it twice (~20 s)"]
fn a_failed_or_killed_write_leaves_no_bootable_partition_table() {
    let _g = serial();
    let img = image();
    let dir = tmp("flash-fail");
    // The target starts as a good card: a valid GPT at both ends.
    let target = dir.join("card.img");
    std::fs::copy(img, &target).unwrap();
    assert!(has_partition_table(&target));
    let o = imgforge(&[
        "flash",
        img.to_str().unwrap(),
        target.to_str().unwrap(),
        "--file-target",
        "--yes",
        "--no-bmap",
        "--fail-after-mib",
        "100",
    ]);
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("simulated write error") && err.contains("its partition tables were wiped"),
        "{err}"
    );
    assert!(
        !has_partition_table(&target),
        "a failed write leaves no partition table"
    );

    std::fs::copy(img, &target).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgforge"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "flash",
            img.to_str().unwrap(),
            target.to_str().unwrap(),
            "--file-target",
            "--yes",
            "--no-bmap",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        None,
        "killed by the signal, before it finished"
    );
    assert!(
        !has_partition_table(&target),
        "a write killed half-way leaves no partition table (neither primary nor backup GPT)"
    );
}

#[test]
#[ignore = "slow: builds the image, compresses it with xz (~30 s)"]
fn an_xz_image_flashes_to_the_same_bytes() {
    let _g = serial();
    let img = image();
    let dir = tmp("flash-xz");
    let xz = dir.join("proxy-x86_64-vm.img.xz");
    let data = Command::new("xz")
        .args(["-0", "-T0", "-c"])
        .arg(img)
        .output()
        .unwrap();
    assert!(data.status.success());
    std::fs::write(&xz, &data.stdout).unwrap();
    std::fs::copy(
        img.with_extension("img.bmap"),
        dir.join("proxy-x86_64-vm.img.bmap"),
    )
    .unwrap();
    std::fs::copy(
        img.with_extension("manifest.json"),
        dir.join("proxy-x86_64-vm.manifest.json"),
    )
    .unwrap();
    let target = dir.join("card.img");
    // Secrets for an .img.xz are checked against the manifest's slots before writing.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "nope = \"x\"\n").unwrap();
    let o = imgforge(&[
        "flash",
        xz.to_str().unwrap(),
        target.to_str().unwrap(),
        "--file-target",
        "--yes",
        "--secrets",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("bad.toml:1:1: key `nope`"),
        "{}",
        text(&o.stderr)
    );
    assert!(!target.exists(), "nothing written");
    let o = imgforge(&[
        "flash",
        xz.to_str().unwrap(),
        target.to_str().unwrap(),
        "--file-target",
        "--yes",
    ]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("mapped by") && err.contains("proxy-x86_64-vm.img.bmap"),
        "the bmap beside the .img.xz is used:\n{err}"
    );
    assert_eq!(sha256_of(&target, None), sha256_of(img, None));
}
