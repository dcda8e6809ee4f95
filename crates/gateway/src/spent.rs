//! What the login page must remember across reloads and restarts: the last TOTP step each
//! user signed in with (a code is good once, even after a SIGHUP built a new login state)
//! and the sessions signed out (a cookie copied before logout stays refused). Each entry is
//! kept until it would have expired anyway, so the file stays small.
//!
//! One file, `login-state` in the login's `state-dir`, rewritten whole (to a temporary
//! name, then renamed) at each change: changes are sign-ins and sign-outs, a few a minute.
//! Lines are `step USER-BASE64URL STEP` and `revoked NONCE EXPIRY-UNIX-SECS`. Within the
//! process the state is one object per folder, shared by the old and new configurations of
//! a reload.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;

pub struct Spent {
    file: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    steps: HashMap<String, u64>,
    revoked: HashMap<String, u64>,
}

const FILE: &str = "login-state";
/// A code for step s is accepted until step s + 1 ends (one step of drift): (s + 2) * 30.
fn step_expiry(step: u64) -> u64 {
    (step + 2) * 30
}

impl Spent {
    /// The state kept in `dir` (read once per process; a missing file is an empty state).
    pub fn open(dir: &Path) -> Result<Arc<Spent>, String> {
        static OPEN: OnceLock<Mutex<HashMap<PathBuf, Arc<Spent>>>> = OnceLock::new();
        let mut open = OPEN
            .get_or_init(Default::default)
            .lock()
            .expect("not poisoned");
        if let Some(s) = open.get(dir) {
            return Ok(s.clone());
        }
        let file = dir.join(FILE);
        let inner = match std::fs::read_to_string(&file) {
            Ok(text) => parse(&file, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Inner::default(),
            Err(e) => return Err(format!("{}: {e}", file.display())),
        };
        let s = Arc::new(Spent {
            file,
            inner: Mutex::new(inner),
        });
        open.insert(dir.to_path_buf(), s.clone());
        Ok(s)
    }

    /// Records that `user` signed in with a code of `step`, unless a code of that step or a
    /// later one was used already (false). An error (the file cannot be written) refuses
    /// the sign-in: a code not recorded as spent could be used again after a restart.
    pub fn spend(&self, user: &str, step: u64, now: u64) -> Result<bool, String> {
        let mut inner = self.inner.lock().expect("not poisoned");
        if inner.steps.get(user).is_some_and(|l| *l >= step) {
            return Ok(false);
        }
        let before = inner.steps.insert(user.to_string(), step);
        if let Err(e) = self.save(&mut inner, now) {
            match before {
                Some(b) => inner.steps.insert(user.to_string(), b),
                None => inner.steps.remove(user),
            };
            return Err(e);
        }
        Ok(true)
    }

    /// Signs out the session `nonce` (valid until `expiry`).
    pub fn revoke(&self, nonce: &str, expiry: u64, now: u64) -> Result<(), String> {
        let mut inner = self.inner.lock().expect("not poisoned");
        inner.revoked.insert(nonce.to_string(), expiry);
        self.save(&mut inner, now)
    }

    pub fn is_revoked(&self, nonce: &str) -> bool {
        self.inner
            .lock()
            .expect("not poisoned")
            .revoked
            .contains_key(nonce)
    }

    fn save(&self, inner: &mut Inner, now: u64) -> Result<(), String> {
        inner.steps.retain(|_, s| step_expiry(*s) > now);
        inner.revoked.retain(|_, e| *e > now);
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut text = String::new();
        for (user, step) in &inner.steps {
            text.push_str(&format!("step {} {step}\n", b.encode(user)));
        }
        for (nonce, expiry) in &inner.revoked {
            text.push_str(&format!("revoked {nonce} {expiry}\n"));
        }
        let dir = self.file.parent().expect("a file in a folder");
        let tmp = self.file.with_extension("new");
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, &self.file))
            .map_err(|e| format!("{}: {e}", self.file.display()))
    }
}

fn parse(file: &Path, text: &str) -> Result<Inner, String> {
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut inner = Inner::default();
    for (n, line) in text.lines().enumerate() {
        let bad = || {
            format!(
                "{}:{}: not `step USER N` or `revoked NONCE EXPIRY`",
                file.display(),
                n + 1
            )
        };
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["step", user, step] => {
                let user = b
                    .decode(user)
                    .ok()
                    .and_then(|u| String::from_utf8(u).ok())
                    .ok_or_else(bad)?;
                inner.steps.insert(user, step.parse().map_err(|_| bad())?);
            }
            ["revoked", nonce, expiry] => {
                inner
                    .revoked
                    .insert(nonce.to_string(), expiry.parse().map_err(|_| bad())?);
            }
            [] => {}
            _ => return Err(bad()),
        }
    }
    Ok(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_new_process_and_forgets_what_expired() {
        let dir = std::env::temp_dir().join(format!("spent-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Spent::open(&dir).unwrap();
        let now = 1_000_000;
        assert!(s.spend("anne", now / 30, now).unwrap());
        assert!(!s.spend("anne", now / 30, now).unwrap(), "again");
        s.revoke("nonce1", now + 100, now).unwrap();
        s.revoke("old", now - 1, now).unwrap();
        // What a restarted gateway reads.
        let text = std::fs::read_to_string(dir.join(FILE)).unwrap();
        let fresh = parse(&dir.join(FILE), &text).unwrap();
        assert_eq!(fresh.steps.get("anne"), Some(&(now / 30)));
        assert!(fresh.revoked.contains_key("nonce1") && !fresh.revoked.contains_key("old"));
        let e = parse(Path::new("f"), "step x\n").err().unwrap();
        assert!(e.starts_with("f:1: not"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
