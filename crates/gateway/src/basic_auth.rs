//! HTTP Basic against an htpasswd file, as Apache's `AuthType Basic` did for JupyterLab.
//! Hashes: bcrypt (`$2y$`, `$2b$`, `$2a$`, what `htpasswd -B` writes) and argon2 (PHC
//! strings, `$argon2id$...`). Other schemes (MD5 `$apr1$`, SHA1, crypt) are refused when the
//! file is read, not silently never matched.
//!
//! A password hash costs tens of milliseconds by design; a successful check is remembered
//! for a few minutes (keyed by a SHA-256 of the header, never the password) so a page with
//! fifty requests does not pay it fifty times.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};

const REMEMBER: Duration = Duration::from_secs(300);

pub struct Htpasswd {
    users: HashMap<String, String>,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Htpasswd {
    pub fn load(path: &Path) -> Result<Htpasswd, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&path.display().to_string(), &text)
    }

    pub fn parse(display: &str, text: &str) -> Result<Htpasswd, String> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("{display}:{}: not `user:hash`", n + 1))?;
            if !(hash.starts_with("$2y$")
                || hash.starts_with("$2b$")
                || hash.starts_with("$2a$")
                || hash.starts_with("$argon2"))
            {
                // The user is named, the hash is not: it is a secret too.
                return Err(format!("{display}:{}: user `{user}`: only bcrypt (htpasswd -B) and argon2 hashes are accepted", n + 1));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        Ok(Htpasswd {
            users,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// The user name if the Authorization header holds valid Basic credentials.
    pub fn check(&self, authorization: Option<&str>) -> Option<String> {
        let encoded = authorization?
            .strip_prefix("Basic ")
            .or_else(|| authorization?.strip_prefix("basic "))?
            .trim();
        let key: [u8; 32] = Sha256::digest(encoded.as_bytes()).into();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, pass) = text.split_once(':')?;
        {
            let mut v = self.verified.lock().expect("not poisoned");
            v.retain(|_, t| t.elapsed() < REMEMBER);
            if v.contains_key(&key) {
                return Some(user.to_string());
            }
        }
        let hash = self.users.get(user)?;
        if verify_password(pass, hash) {
            self.verified
                .lock()
                .expect("not poisoned")
                .insert(key, Instant::now());
            Some(user.to_string())
        } else {
            None
        }
    }
}

/// Checks a password against a bcrypt or argon2 hash.
pub fn verify_password(pass: &str, hash: &str) -> bool {
    if hash.starts_with("$argon2") {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        PasswordHash::new(hash).is_ok_and(|h| {
            argon2::Argon2::default()
                .verify_password(pass.as_bytes(), &h)
                .is_ok()
        })
    } else {
        bcrypt::verify(pass, hash).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    }

    #[test]
    fn bcrypt_and_argon2_lines_check_and_others_are_refused() {
        let bc = bcrypt::hash("s3cret", 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"saltsaltsalt").unwrap();
        let ar = argon2::Argon2::default()
            .hash_password(b"other", &salt)
            .unwrap()
            .to_string();
        let h = Htpasswd::parse("h", &format!("# users\nlaurent:{bc}\nanne:{ar}\n")).unwrap();
        assert_eq!(
            h.check(Some(&header("laurent", "s3cret"))).as_deref(),
            Some("laurent")
        );
        assert_eq!(
            h.check(Some(&header("laurent", "s3cret"))).as_deref(),
            Some("laurent"),
            "remembered"
        );
        assert_eq!(h.check(Some(&header("laurent", "wrong"))), None);
        assert_eq!(
            h.check(Some(&header("anne", "other"))).as_deref(),
            Some("anne")
        );
        assert_eq!(h.check(Some(&header("nobody", "x"))), None);
        assert_eq!(h.check(None), None);
        let err = Htpasswd::parse("h", "bob:$apr1$abc$def\n").err().unwrap();
        assert!(
            err.contains("h:1: user `bob`") && !err.contains("apr1"),
            "{err}"
        );
    }
}
