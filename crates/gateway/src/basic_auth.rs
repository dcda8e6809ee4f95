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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

const REMEMBER: Duration = Duration::from_secs(300);

pub struct Htpasswd {
    users: HashMap<String, String>,
    /// Checked for a user name the file does not hold, so an unknown user costs what a
    /// wrong password does (same scheme and cost as the file's first hash): answers must
    /// not tell which names exist.
    dummy: String,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
}

/// Basic credentials as sent: the user, the password, and the key under which a good
/// check is remembered (a SHA-256 of the header's value, never the password itself).
pub struct Credentials {
    pub user: String,
    pub password: String,
    key: [u8; 32],
}

/// Reads `Authorization: Basic ...`; None when absent or not Basic credentials.
pub fn credentials(authorization: Option<&str>) -> Option<Credentials> {
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
    Some(Credentials {
        user: user.to_string(),
        password: pass.to_string(),
        key,
    })
}

impl Htpasswd {
    pub fn load(path: &Path) -> Result<Htpasswd, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&path.display().to_string(), &text)
    }

    pub fn parse(display: &str, text: &str) -> Result<Htpasswd, String> {
        let mut users = HashMap::new();
        let mut first = None;
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
            first.get_or_insert_with(|| hash.to_string());
            users.insert(user.to_string(), hash.to_string());
        }
        Ok(Htpasswd {
            users,
            dummy: dummy_like(first.as_deref()),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Whether these credentials were checked good in the last few minutes (no hash to
    /// compute: the page's other requests, and a user whose name is under attack, pass).
    pub fn remembered(&self, c: &Credentials) -> bool {
        let mut v = self.verified.lock().expect("not poisoned");
        v.retain(|_, t| t.elapsed() < REMEMBER);
        v.contains_key(&c.key)
    }

    /// Checks the password off the async threads (`verify_off_thread`), against the
    /// dummy hash for an unknown user; a good check is remembered.
    pub async fn verify(&self, c: &Credentials) -> bool {
        let (hash, known) = match self.users.get(&c.user) {
            Some(h) => (h.clone(), true),
            None => (self.dummy.clone(), false),
        };
        let ok = verify_off_thread(c.password.clone(), hash).await && known;
        if ok {
            self.verified
                .lock()
                .expect("not poisoned")
                .insert(c.key, Instant::now());
        }
        ok
    }

    /// The user name if the Authorization header holds valid Basic credentials (the
    /// checks above in one call, without a limit on failures: tests and tools).
    pub async fn check(&self, authorization: Option<&str>) -> Option<String> {
        let c = credentials(authorization)?;
        (self.remembered(&c) || self.verify(&c).await).then_some(c.user)
    }
}

/// A hash of a random password with the scheme and cost of `like` (bcrypt cost 10 when
/// there is none), for checks against a user who does not exist.
pub fn dummy_like(like: Option<&str>) -> String {
    let mut secret = [0u8; 16];
    crate::random::fill(&mut secret);
    let secret = data_encoding::HEXLOWER.encode(&secret);
    match like {
        Some(h) if h.starts_with("$argon2") => {
            use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
            let salt = SaltString::encode_b64(b"imgforge-dummy-salt").expect("valid salt");
            // The file's own parameters when they parse, so the work is the same.
            let params = PasswordHash::new(h)
                .ok()
                .and_then(|p| argon2::Params::try_from(&p).ok())
                .unwrap_or_default();
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password(secret.as_bytes(), &salt)
                .map(|h| h.to_string())
                .unwrap_or_default()
        }
        other => {
            let cost = other
                .and_then(|h| h.get(4..6))
                .and_then(|c| c.parse().ok())
                .unwrap_or(10);
            bcrypt::hash(secret, cost).unwrap_or_default()
        }
    }
}

/// Password hashes computed since the start (the loopback-only counters page shows it, so
/// tests can see that an unknown user costs a check like a known one).
pub static PASSWORD_CHECKS: AtomicU64 = AtomicU64::new(0);

/// Checks a password against a bcrypt or argon2 hash.
pub fn verify_password(pass: &str, hash: &str) -> bool {
    PASSWORD_CHECKS.fetch_add(1, Ordering::Relaxed);
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

/// `verify_password` on tokio's blocking threads, at most half the CPUs at once (one on
/// two): a hash costs a core tens of milliseconds, and run on the async threads a dozen
/// wrong passwords a second stalled every route. Waiting checks queue here; the failure
/// limits (`crate::failures`) keep the queue short.
pub async fn verify_off_thread(pass: String, hash: String) -> bool {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    let slots = SLOTS.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Semaphore::new((cpus / 2).max(1))
    });
    let Ok(_permit) = slots.acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || verify_password(&pass, &hash))
        .await
        .unwrap_or(false)
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

    #[tokio::test]
    async fn bcrypt_and_argon2_lines_check_and_others_are_refused() {
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
            h.check(Some(&header("laurent", "s3cret"))).await.as_deref(),
            Some("laurent")
        );
        assert_eq!(
            h.check(Some(&header("laurent", "s3cret"))).await.as_deref(),
            Some("laurent"),
            "remembered"
        );
        assert_eq!(h.check(Some(&header("laurent", "wrong"))).await, None);
        assert_eq!(
            h.check(Some(&header("anne", "other"))).await.as_deref(),
            Some("anne")
        );
        let before = PASSWORD_CHECKS.load(Ordering::Relaxed);
        assert_eq!(h.check(Some(&header("nobody", "x"))).await, None);
        assert!(
            PASSWORD_CHECKS.load(Ordering::Relaxed) > before,
            "an unknown user costs a hash too"
        );
        assert_eq!(h.check(None).await, None);
        let err = Htpasswd::parse("h", "bob:$apr1$abc$def\n").err().unwrap();
        assert!(
            err.contains("h:1: user `bob`") && !err.contains("apr1"),
            "{err}"
        );
    }
}
