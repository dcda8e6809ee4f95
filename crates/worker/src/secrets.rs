//! Where the node keeps its secrets: one file per slot in /var/lib/imgforge/secrets, mode
//! 0600 and owned by root. Services never read that folder: their units name each secret
//! in `LoadCredential=`, so systemd hands it to the service's own (dynamic) user in a
//! private, read-only credentials directory.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub const DIR: &str = "/var/lib/imgforge/secrets";

pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Whether the slot has a non-empty value on this node.
pub fn present(dir: &Path, name: &str) -> bool {
    fs::metadata(path(dir, name))
        .map(|m| m.is_file() && m.len() > 0)
        .unwrap_or(false)
}

/// Writes a secret so that a crash leaves the old file or the new one, never a partial one:
/// a 0600 temporary file in the same folder, synced, renamed over, then the folder synced.
pub fn write(dir: &Path, name: &str, value: &[u8]) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(value)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path(dir, name))
        .with_context(|| format!("placing the secret `{name}` in {}", dir.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

/// A new random secret: 32 bytes from the kernel's CSPRNG as 64 hex digits, a form every
/// consumer accepts (Django SECRET_KEY, PostgreSQL passwords, cookie keys).
pub fn generate() -> Result<String> {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_secrets_are_private_and_replace_whole() {
        let dir = std::env::temp_dir().join(format!("worker-secrets-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert!(!present(&dir, "k"));
        write(&dir, "k", b"one").unwrap();
        write(&dir, "k", b"two").unwrap();
        assert_eq!(fs::read(path(&dir, "k")).unwrap(), b"two");
        assert_eq!(
            fs::metadata(path(&dir, "k")).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(present(&dir, "k"));
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert!(a.len() == 64 && a.chars().all(|c| c.is_ascii_hexdigit()) && a != b);
        fs::remove_dir_all(&dir).unwrap();
    }
}
