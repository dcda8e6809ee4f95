//! The key that signs published versions, kept with the user: an OpenPGP key made and used
//! by the host's gpg, because systemd-sysupdate verifies `SHA256SUMS.gpg` with gpg against
//! a keyring (import-pubring.gpg) and accepts nothing else. The key folder holds gpg's home
//! (the secret key, `gnupg/`) and the exported public key (`import-pubring.gpg`), the only
//! part that goes into an image. Neither the checkout nor a publish folder may hold it: the
//! one is shared, the other served to every node.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use crate::exit::UserError;
use crate::tool::{self, HostTool};

pub const GPG: HostTool = HostTool {
    program: "gpg",
    package: "gpg",
};
/// gpg makes and uses secret keys only through its agent.
pub const GPG_AGENT: HostTool = HostTool {
    program: "gpg-agent",
    package: "gpg-agent",
};

/// The exported public key's file name in the key folder; the image holds the same bytes.
pub const PUBLIC_KEY: &str = "import-pubring.gpg";

/// A folder holding (or to hold) the signing key.
pub struct KeyDir {
    pub path: PathBuf,
}

/// `$XDG_CONFIG_HOME/imgforge/signing`, else `~/.config/imgforge/signing`.
pub fn default_dir() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("imgforge/signing"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow!("neither XDG_CONFIG_HOME nor HOME is set: pass --key-dir"))?;
    Ok(PathBuf::from(home).join(".config/imgforge/signing"))
}

/// `path` made absolute without requiring it to exist (its nearest existing parent is
/// resolved, so a symlink cannot hide that it points into the checkout).
fn resolved(path: &Path) -> Result<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        rest.push(existing.file_name().map(|n| n.to_os_string()));
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    let mut out = existing
        .canonicalize()
        .with_context(|| format!("resolving {}", existing.display()))?;
    for part in rest.into_iter().rev().flatten() {
        out.push(part);
    }
    Ok(out)
}

impl KeyDir {
    /// The key folder `path` (or the default), refused when it lies inside one of
    /// `forbidden` (the checkout, the publish folder), each named by what it is.
    pub fn choose(path: Option<&Path>, forbidden: &[(&str, &Path)]) -> Result<KeyDir> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => default_dir().map_err(|e| UserError(format!("{e:#}")))?,
        };
        let abs = resolved(&path)?;
        for (what, dir) in forbidden {
            let Ok(d) = resolved(dir) else { continue };
            if abs.starts_with(&d) {
                return Err(UserError(format!(
                    "key folder {}: it is inside {what} {}; a signing key must stay out of it (the default is ~/.config/imgforge/signing)",
                    path.display(),
                    d.display()
                ))
                .into());
            }
        }
        Ok(KeyDir { path: abs })
    }

    pub fn gnupg_home(&self) -> PathBuf {
        self.path.join("gnupg")
    }

    pub fn public_key(&self) -> PathBuf {
        self.path.join(PUBLIC_KEY)
    }

    fn gpg(&self) -> Command {
        let mut c = Command::new(GPG.program);
        c.arg("--homedir").arg(self.gnupg_home()).args([
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
        ]);
        c
    }

    /// gpg leaves its agent running for the home; the key folder is not a session.
    fn stop_agent(&self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.gnupg_home())
            .args(["--kill", "gpg-agent"])
            .output();
    }

    /// Fails naming `imgforge keygen` when the folder holds no key.
    pub fn require_key(&self) -> Result<()> {
        if !self.public_key().is_file() || !self.gnupg_home().is_dir() {
            return Err(UserError(format!(
                "key folder {}: no signing key (no {PUBLIC_KEY} and gnupg/): make one with `imgforge keygen --key-dir {}`",
                self.path.display(),
                self.path.display()
            ))
            .into());
        }
        Ok(())
    }

    /// Makes an ed25519 signing key without a passphrase (the folder, mode 0700, is what
    /// protects it: a node's timer cannot type one) and exports its public key. Refuses a
    /// folder that already holds a key: replacing it would strand every node built with
    /// the old public key. Returns the key's fingerprint.
    pub fn generate(&self, user_id: &str) -> Result<String> {
        tool::require(&GPG)?;
        tool::require(&GPG_AGENT)?;
        if self.public_key().exists() || self.gnupg_home().exists() {
            return Err(UserError(format!(
                "key folder {}: it already holds a signing key ({}); nodes built with it trust only it, so it is not replaced",
                self.path.display(),
                if self.public_key().exists() {
                    PUBLIC_KEY
                } else {
                    "gnupg/"
                }
            ))
            .into());
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .with_context(|| format!("creating key folder {}", self.path.display()))?;
        fs::set_permissions(&self.path, fs::Permissions::from_mode(0o700))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(self.gnupg_home())
            .with_context(|| format!("creating {}", self.gnupg_home().display()))?;
        let made = tool::run(self.gpg().args([
            "--passphrase",
            "",
            "--quick-generate-key",
            user_id,
            "ed25519",
            "sign",
            "never",
        ]));
        let fpr = made.and_then(|_| self.fingerprint());
        let exported = fpr.as_ref().ok().map(|_| {
            tool::run(
                self.gpg()
                    .args(["--export", "--output"])
                    .arg(self.public_key()),
            )
        });
        self.stop_agent();
        let fpr = fpr.with_context(|| format!("making a key in {}", self.path.display()))?;
        exported.unwrap_or_else(|| Ok(vec![])).with_context(|| {
            format!(
                "exporting the public key to {}",
                self.public_key().display()
            )
        })?;
        fs::set_permissions(self.public_key(), fs::Permissions::from_mode(0o644))?;
        Ok(fpr)
    }

    /// The fingerprint of the folder's one key.
    pub fn fingerprint(&self) -> Result<String> {
        let out = tool::run(self.gpg().args(["--with-colons", "--list-secret-keys"]))?;
        let text = String::from_utf8_lossy(&out);
        let fprs: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("fpr:"))
            .filter_map(|l| l.split(':').nth(9))
            .collect();
        match fprs.as_slice() {
            [one, ..] => Ok(one.to_string()),
            [] => bail!("gpg lists no secret key in {}", self.gnupg_home().display()),
        }
    }

    /// Writes `<file>.gpg`, a detached binary signature (what sysupdate fetches as
    /// SHA256SUMS.gpg).
    pub fn sign(&self, file: &Path) -> Result<PathBuf> {
        self.require_key()?;
        tool::require(&GPG)?;
        tool::require(&GPG_AGENT)?;
        let mut sig = file.as_os_str().to_owned();
        sig.push(".gpg");
        let sig = PathBuf::from(sig);
        let r = tool::run(
            self.gpg()
                .args(["--passphrase", "", "--yes", "--detach-sign", "--output"])
                .arg(&sig)
                .arg(file),
        );
        self.stop_agent();
        r.with_context(|| {
            format!(
                "signing {} with the key in {}",
                file.display(),
                self.path.display()
            )
        })?;
        fs::set_permissions(&sig, fs::Permissions::from_mode(0o644))?;
        Ok(sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_folder_inside_the_checkout_or_publish_folder_is_refused_naming_both() {
        let t = tempfile::tempdir().unwrap();
        let checkout = t.path().join("checkout");
        fs::create_dir_all(&checkout).unwrap();
        let inside = checkout.join("keys/signing");
        let err = KeyDir::choose(Some(&inside), &[("the checkout", checkout.as_path())])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&format!("key folder {}", inside.display()))
                && err.contains("inside the checkout"),
            "{err}"
        );
        // Through a symlink into the checkout as well.
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&checkout, &link).unwrap();
        assert!(KeyDir::choose(
            Some(&link.join("k")),
            &[("the checkout", checkout.as_path())]
        )
        .is_err());
        let outside = t.path().join("elsewhere");
        let k = KeyDir::choose(Some(&outside), &[("the checkout", checkout.as_path())]).unwrap();
        assert_eq!(k.public_key(), outside.join(PUBLIC_KEY));
    }
}
