//! A Raspberry Pi card's update engine: find a newer version in the site's publish folder,
//! check it, and write it into the slot that is not running.
//!
//! On the UEFI targets systemd-sysupdate does this; its partition transfers need a GPT, and
//! a card has an MBR (the Pi 4's boot ROM reads nothing else). So the card does what
//! sysupdate does, with the same tools and the same publish folder:
//! - `SHA256SUMS` is fetched with its detached signature `SHA256SUMS.gpg` (curl) and
//!   verified by gpg against the image's keyring, the one sysupdate's systemd-pull uses
//!   (`/usr/lib/systemd/import-pubring.gpg`, the site's key only);
//! - versions are compared by systemd's own rule (`systemd-analyze compare-versions`, the
//!   comparison sysupdate makes), and a version is offered when both its files are listed:
//!   `<role>_<v>.root.xz` (the root filesystem) and `<role>_<v>.boot.xz` (the boot
//!   partition: firmware, config.txt, cmdline.txt, kernel, initramfs);
//! - each file is downloaded to the data partition, its hash compared with the signed list,
//!   then decompressed onto the other slot's partition, which must hold it.
//!
//! The running slot is never written. The new slot starts only through the bootloader's
//! one-shot trial (`systemctl reboot --reboot-argument='0 tryboot'`, see cardab.rs): if it never becomes
//! READY, the card is back on the running version at the next reset.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use seed_area::card::CardSlot;
use sha2::{Digest, Sha256};

use crate::cardab;

/// The keyring the image carries: the site's public signing key and nothing else.
pub const KEYRING: &str = "/usr/lib/systemd/import-pubring.gpg";
/// Downloads wait here, on the data partition (a root is hundreds of MiB: not for /run).
pub const WORK_DIR: &str = "/var/lib/imgforge/update";
/// The publish folder's file kinds for a card version.
pub const ROOT_KIND: &str = "root.xz";
pub const BOOT_KIND: &str = "boot.xz";

/// A publish folder and the role whose versions the node takes from it.
pub struct Source<'a> {
    /// The folder's URL, ending in `/`.
    pub url: &'a str,
    pub role: &'a str,
    pub keyring: &'a Path,
}

impl Source<'_> {
    fn file_url(&self, name: &str) -> String {
        format!("{}{name}", self.url)
    }
    fn name(&self, version: &str, kind: &str) -> String {
        format!("{}_{version}.{kind}", self.role)
    }
}

fn fetch(url: &str, dst: &Path) -> Result<()> {
    let st = Command::new("curl")
        .args(["--fail", "--silent", "--show-error", "--location", "--retry", "3"])
        .arg("--output")
        .arg(dst)
        .arg(url)
        .status()
        .context("running curl")?;
    if !st.success() {
        bail!("fetching {url} failed (curl exit {})", st.code().unwrap_or(-1));
    }
    Ok(())
}

/// The folder's SHA256SUMS, once its signature verifies against `keyring` (gpg in a
/// throw-away home, trusting only that keyring, as systemd-pull runs it).
fn verified_sums(src: &Source, work: &Path) -> Result<String> {
    let sums = work.join("SHA256SUMS");
    let sig = work.join("SHA256SUMS.gpg");
    fetch(&src.file_url("SHA256SUMS"), &sums)?;
    fetch(&src.file_url("SHA256SUMS.gpg"), &sig)?;
    let home = work.join("gnupg");
    let _ = fs::remove_dir_all(&home);
    fs::create_dir_all(&home)?;
    fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let out = Command::new("gpg")
        .args(["--no-options", "--no-default-keyring", "--no-auto-key-locate"])
        .args(["--no-auto-check-trustdb", "--batch", "--trust-model=always"])
        .arg("--homedir")
        .arg(&home)
        .arg("--keyring")
        .arg(src.keyring)
        .arg("--verify")
        .arg(&sig)
        .arg(&sums)
        .output()
        .context("running gpg")?;
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(&home)
        .args(["--kill", "all"])
        .status();
    let _ = fs::remove_dir_all(&home);
    if !out.status.success() {
        bail!(
            "the signature of {}SHA256SUMS does not verify against {}: {}",
            src.url,
            src.keyring.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    fs::read_to_string(&sums).context("reading SHA256SUMS")
}

/// `hash  name` (or `hash *name`) lines of a SHA256SUMS as (name, hash).
pub fn parse_sums(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let (hash, name) = l.split_once(' ')?;
            let name = name.trim_start_matches([' ', '*']);
            (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| (name.to_string(), hash.to_ascii_lowercase()))
        })
        .collect()
}

/// The versions of `role` the list offers whole (both files listed).
pub fn offered(sums: &[(String, String)], role: &str) -> Vec<String> {
    let prefix = format!("{role}_");
    let suffix = format!(".{ROOT_KIND}");
    sums.iter()
        .filter_map(|(name, _)| name.strip_prefix(&prefix)?.strip_suffix(&suffix))
        .filter(|v| valid_version(v))
        .filter(|v| {
            let boot = format!("{prefix}{v}.{BOOT_KIND}");
            sums.iter().any(|(n, _)| *n == boot)
        })
        .map(str::to_string)
        .collect()
}

/// A version as imgforge writes one (letters, digits and `.+~^_-`, starting with a letter
/// or digit, at most 64 bytes): a name from the list that is not one is no version, and
/// never reaches a path or a command line.
fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || ".+~^_-".contains(c))
}

/// The file recording the version last written into the other slot. A version written and
/// not running now was tried and left (or its trial never started): it is not taken again,
/// or a card would rewrite its other slot and reboot at every timer run.
pub const ATTEMPTED_FILE: &str = "attempted";

fn attempted(work: &Path) -> Option<String> {
    let v = fs::read_to_string(work.join(ATTEMPTED_FILE)).ok()?;
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// `a` is newer than `b` by systemd's version comparison (sysupdate's).
fn newer(a: &str, b: &str) -> Result<bool> {
    let st = Command::new("systemd-analyze")
        .args(["compare-versions", a, "gt", b])
        .stdout(Stdio::null())
        .status()
        .context("running systemd-analyze compare-versions")?;
    match st.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => bail!("systemd-analyze compare-versions {a} gt {b} failed"),
    }
}

fn newest_above(versions: &[String], current: &str) -> Result<Option<String>> {
    let mut best: Option<String> = None;
    for v in versions {
        if newer(v, current)? && best.as_ref().map_or(Ok(true), |b| newer(v, b))? {
            best = Some(v.clone());
        }
    }
    Ok(best)
}

fn work_dir(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.to_path_buf())
}

/// The newest version the folder offers above `current`, if any.
pub fn check(src: &Source, current: &str, work: &Path) -> Result<Option<String>> {
    let work = work_dir(work)?;
    let sums = parse_sums(&verified_sums(src, &work)?);
    let versions = offered(&sums, src.role);
    let (versions, skipped) = not_retried(versions, attempted(&work), current);
    if let Some(tried) = skipped {
        eprintln!(
            "worker: version {tried} was written into the other slot before and is not running \
             (its trial was left, or never started); not taking it again (delete {} to retry)",
            work.join(ATTEMPTED_FILE).display()
        );
    }
    newest_above(&versions, current)
}

/// `versions` without the one written before (`tried`) unless it is the running one; and
/// the version left out, if any.
fn not_retried(
    mut versions: Vec<String>,
    tried: Option<String>,
    current: &str,
) -> (Vec<String>, Option<String>) {
    match tried {
        Some(t) if t != current && versions.contains(&t) => {
            versions.retain(|v| *v != t);
            (versions, Some(t))
        }
        _ => (versions, None),
    }
}

/// Copies `r` into `w`, returning the byte count and the sha256 of what was copied.
fn copy_hashing(mut r: impl Read, mut w: impl Write) -> io::Result<(u64, String)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        w.write_all(&buf[..k])?;
        n += k as u64;
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((n, hex))
}

/// Decompresses `xz_file` onto `device` (whose size is `capacity` bytes), refusing a
/// stream larger than the partition, and syncs it.
fn write_partition(xz_file: &Path, device: &Path, capacity: u64) -> Result<u64> {
    let mut xz = Command::new("xz")
        .args(["--decompress", "--stdout"])
        .arg(xz_file)
        .stdout(Stdio::piped())
        .spawn()
        .context("running xz (xz-utils)")?;
    let mut dev = File::options()
        .write(true)
        .open(device)
        .with_context(|| format!("opening {}", device.display()))?;
    let mut limited = xz.stdout.take().expect("piped").take(capacity);
    let copied = copy_hashing(&mut limited, &mut dev);
    let (n, _) = match copied {
        Ok(c) => c,
        Err(e) => {
            let _ = xz.kill();
            let _ = xz.wait();
            return Err(e).with_context(|| format!("writing {}", device.display()));
        }
    };
    // One byte more than the partition holds means the stream does not fit.
    let mut one = [0u8; 1];
    let more = limited.into_inner().read(&mut one).map(|k| k > 0).unwrap_or(false);
    if more {
        let _ = xz.kill();
        let _ = xz.wait();
        bail!(
            "{} decompresses to more than {} ({capacity} bytes): the version needs larger slots than this card has",
            xz_file.display(),
            device.display()
        );
    }
    let st = xz.wait()?;
    if !st.success() {
        bail!("xz could not decompress {}", xz_file.display());
    }
    dev.sync_all()
        .with_context(|| format!("syncing {}", device.display()))?;
    Ok(n)
}

fn partition_bytes(device: &Path) -> Result<u64> {
    let real = fs::canonicalize(device)?;
    let name = real.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let sectors: u64 = fs::read_to_string(format!("/sys/class/block/{name}/size"))
        .with_context(|| format!("reading the size of {}", real.display()))?
        .trim()
        .parse()?;
    Ok(sectors * 512)
}

/// What `install` wrote.
pub struct Installed {
    pub slot: CardSlot,
    pub root_bytes: u64,
    pub boot_bytes: u64,
}

/// Downloads `version`, checks each file against the signed list, and writes it into the
/// slot that is not running: the root first, the boot partition last (a slot whose boot
/// partition is incomplete is never tried: the trial starts only after this returns).
pub fn install(src: &Source, version: &str, work: &Path) -> Result<Installed> {
    if !valid_version(version) {
        bail!("`{version}` is not a version (letters, digits and .+~^_-)");
    }
    let s = cardab::state()?;
    if s.on_trial() {
        bail!(
            "slot {} runs on trial (autoboot.txt commits to slot {}): an update waits until it is kept or left",
            s.running,
            s.committed
        );
    }
    let target = s.running.other();
    let disk = s.disk.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
    let work = work_dir(work)?;
    let sums = parse_sums(&verified_sums(src, &work)?);
    // Both files downloaded and checked before either is written: a failed download leaves
    // the other slot (the previous version, until now a way back) as it was.
    let mut files = Vec::new();
    for (kind, part) in [
        (ROOT_KIND, target.root_partition()),
        (BOOT_KIND, target.boot_partition()),
    ] {
        let name = src.name(version, kind);
        let want = sums
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, h)| h.clone())
            .with_context(|| format!("{}SHA256SUMS does not list {name}", src.url))?;
        let file = work.join(&name);
        fetch(&src.file_url(&name), &file)?;
        let (_, got) = copy_hashing(File::open(&file)?, io::sink())?;
        if got != want {
            let _ = fs::remove_file(&file);
            bail!("{name}: its sha256 is {got}, the signed SHA256SUMS says {want}; nothing written");
        }
        files.push((file, part));
    }
    // Recorded before the slot is written: a version that cannot be written or booted is
    // not taken again by itself (see ATTEMPTED_FILE).
    fs::write(work.join(ATTEMPTED_FILE), format!("{version}\n"))
        .context("recording the version being installed")?;
    let mut written = [0u64; 2];
    for (i, (file, part)) in files.iter().enumerate() {
        let device = cardab::partition_device(&disk, *part)?;
        written[i] = write_partition(file, &device, partition_bytes(&device)?)?;
        fs::remove_file(file)?;
    }
    Ok(Installed {
        slot: target,
        root_bytes: written[0],
        boot_bytes: written[1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_offered_when_both_its_files_are_listed() {
        let h = "a".repeat(64);
        let text = format!(
            "{h}  proxy_1.root.xz\n{h}  proxy_1.boot.xz\n{h} *proxy_2.root.xz\n\
             {h}  proxy_3.boot.xz\n{h}  other_4.root.xz\n{h}  other_4.boot.xz\nnot a line\n"
        );
        let sums = parse_sums(&text);
        assert_eq!(sums.len(), 6);
        assert_eq!(offered(&sums, "proxy"), ["1"]);
        assert_eq!(offered(&sums, "other"), ["4"]);
    }

    #[test]
    fn a_version_written_and_not_running_is_not_taken_again() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // Version 3 was written; the node runs 2: 3 was left (or never tried).
        assert_eq!(
            not_retried(v(&["2", "3"]), Some("3".into()), "2"),
            (v(&["2"]), Some("3".to_string()))
        );
        // A newer 4 is still taken.
        assert_eq!(
            not_retried(v(&["3", "4"]), Some("3".into()), "2"),
            (v(&["4"]), Some("3".to_string()))
        );
        // Version 3 was kept: it runs.
        assert_eq!(not_retried(v(&["3"]), Some("3".into()), "3"), (v(&["3"]), None));
        assert_eq!(not_retried(v(&["3"]), None, "2"), (v(&["3"]), None));
    }

    #[test]
    fn a_name_that_is_no_version_is_not_offered() {
        let h = "b".repeat(64);
        let text = format!(
            "{h}  proxy_../x.root.xz\n{h}  proxy_../x.boot.xz\n{h}  proxy_-rf.root.xz\n\
             {h}  proxy_-rf.boot.xz\n{h}  proxy_2.root.xz\n{h}  proxy_2.boot.xz\n"
        );
        assert_eq!(offered(&parse_sums(&text), "proxy"), ["2"]);
    }

    #[test]
    fn the_newest_version_above_the_running_one_by_systemds_rule() {
        // systemd-analyze is the host's here, the node's there: the same rule.
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            newest_above(&v(&["1", "10", "9", "2~rc1"]), "2").unwrap().as_deref(),
            Some("10")
        );
        assert_eq!(newest_above(&v(&["2~rc1", "1"]), "2").unwrap(), None);
        // imgforge's default version (0~ and a hash) sorts before any a user names.
        assert_eq!(
            newest_above(&v(&["1"]), "0~0123456789ab").unwrap().as_deref(),
            Some("1")
        );
    }

    #[test]
    fn a_stream_larger_than_the_partition_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("root");
        fs::write(&raw, vec![7u8; 10_000]).unwrap();
        let st = Command::new("xz").arg("-k").arg(&raw).status().unwrap();
        assert!(st.success());
        let dev = dir.path().join("partition");
        fs::write(&dev, vec![0u8; 8192]).unwrap();
        let e = write_partition(&dir.path().join("root.xz"), &dev, 8192).unwrap_err();
        assert!(format!("{e:#}").contains("larger slots"), "{e:#}");
        fs::write(&dev, vec![0u8; 10_000]).unwrap();
        assert_eq!(
            write_partition(&dir.path().join("root.xz"), &dev, 10_000).unwrap(),
            10_000
        );
        assert_eq!(fs::read(&dev).unwrap(), vec![7u8; 10_000]);
    }
}
