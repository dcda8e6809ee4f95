//! The built-in login page: user name, password (bcrypt or argon2 hash) and a TOTP code
//! (RFC 6238: HMAC-SHA1, 30 s steps, 6 digits, one step of clock drift either way), giving
//! a session cookie signed with HMAC-SHA256 under the node's `session-key` secret. This is
//! what the user's Django views did with @login_required and @otp_required, in front of any
//! app. Failed attempts are limited per client address; a code is accepted once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};

use crate::config::Login;

pub const LOGIN_PATH: &str = "/.gateway/login";
pub const LOGOUT_PATH: &str = "/.gateway/logout";
pub const COOKIE: &str = "gateway_session";

struct User {
    hash: String,
    totp_secret: Vec<u8>,
}

pub struct LoginState {
    users: HashMap<String, User>,
    key: Vec<u8>,
    pub session_secs: u64,
    max_failures: u32,
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
    /// The last TOTP step each user logged in with: a code is good once.
    last_step: Mutex<HashMap<String, u64>>,
}

pub enum Outcome {
    Ok { cookie: String },
    Refused,
    TooMany,
}

impl LoginState {
    pub fn load(cfg: &Login) -> Result<LoginState, String> {
        let text = std::fs::read_to_string(&cfg.users)
            .map_err(|e| format!("{}: {e}", cfg.users.display()))?;
        let key = std::fs::read(&cfg.session_key)
            .map_err(|e| format!("{}: {e}", cfg.session_key.display()))?;
        Self::parse(&cfg.users.display().to_string(), &text, key, cfg)
    }

    fn parse(display: &str, text: &str, key: Vec<u8>, cfg: &Login) -> Result<LoginState, String> {
        if key.len() < 16 {
            return Err("the session key has fewer than 16 bytes".into());
        }
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The hash holds `$` but no `:`; the user and the secret hold neither.
            let mut parts = line.splitn(3, ':');
            let (Some(user), Some(hash), Some(secret)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!(
                    "{display}:{}: not `user:password-hash:totp-secret`",
                    n + 1
                ));
            };
            let totp_secret = data_encoding::BASE32_NOPAD
                .decode(
                    secret
                        .trim()
                        .trim_end_matches('=')
                        .to_ascii_uppercase()
                        .as_bytes(),
                )
                .map_err(|_| {
                    format!(
                        "{display}:{}: user `{user}`: the TOTP secret is not base32",
                        n + 1
                    )
                })?;
            users.insert(
                user.to_string(),
                User {
                    hash: hash.to_string(),
                    totp_secret,
                },
            );
        }
        Ok(LoginState {
            users,
            key,
            session_secs: cfg.session_hours * 3600,
            max_failures: cfg.max_failures_per_minute,
            failures: Mutex::new(HashMap::new()),
            last_step: Mutex::new(HashMap::new()),
        })
    }

    /// Checks a login attempt from `client`.
    pub fn attempt(&self, client: IpAddr, user: &str, password: &str, code: &str) -> Outcome {
        {
            let mut f = self.failures.lock().expect("not poisoned");
            let list = f.entry(client).or_default();
            list.retain(|t| t.elapsed() < Duration::from_secs(60));
            if list.len() as u32 >= self.max_failures {
                return Outcome::TooMany;
            }
        }
        let ok = self.users.get(user).is_some_and(|u| {
            crate::basic_auth::verify_password(password, &u.hash)
                && self.code_ok(user, &u.totp_secret, code, now())
        });
        if ok {
            self.failures.lock().expect("not poisoned").remove(&client);
            Outcome::Ok {
                cookie: self.sign(user, now() + self.session_secs),
            }
        } else {
            self.failures
                .lock()
                .expect("not poisoned")
                .entry(client)
                .or_default()
                .push(Instant::now());
            Outcome::Refused
        }
    }

    fn code_ok(&self, user: &str, secret: &[u8], code: &str, t: u64) -> bool {
        let step = t / 30;
        for s in [step, step.wrapping_sub(1), step + 1] {
            if constant_eq(totp(secret, s).as_bytes(), code.trim().as_bytes()) {
                let mut last = self.last_step.lock().expect("not poisoned");
                if last.get(user).is_some_and(|l| *l >= s) {
                    return false;
                }
                last.insert(user.to_string(), s);
                return true;
            }
        }
        false
    }

    /// `user.expiry.signature`, all base64url.
    fn sign(&self, user: &str, expiry: u64) -> String {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = format!("{}.{}", b.encode(user), expiry);
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(payload.as_bytes());
        format!("{payload}.{}", b.encode(mac.finalize().into_bytes()))
    }

    /// The user of a valid, unexpired session cookie value.
    pub fn verify(&self, cookie: &str) -> Option<String> {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (payload, sig) = cookie.rsplit_once('.')?;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(payload.as_bytes());
        mac.verify_slice(&b.decode(sig).ok()?).ok()?;
        let (user, expiry) = payload.split_once('.')?;
        if expiry.parse::<u64>().ok()? <= now() {
            return None;
        }
        String::from_utf8(b.decode(user).ok()?).ok()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// RFC 6238 TOTP for time step `step`: 6 digits.
pub fn totp(secret: &[u8], step: u64) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).expect("any key length");
    mac.update(&step.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let off = (h[19] & 0x0f) as usize;
    let bin = u32::from_be_bytes([h[off] & 0x7f, h[off + 1], h[off + 2], h[off + 3]]);
    format!("{:06}", bin % 1_000_000)
}

/// The value of cookie `name` in a Cookie header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A Cookie header without the gateway's own cookie (apps never see the session).
pub fn without_session(header: &str) -> String {
    header
        .split(';')
        .map(str::trim)
        .filter(|c| !c.starts_with(&format!("{COOKIE}=")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where to go after login: a path on this site only, else `/`. Strictly: a single `/`,
/// then (if anything) a path character, and only URL characters throughout (RFC 3986's
/// unreserved, sub-delims, `:@%/?#`): no `//host` or `/\host` (browsers read both as
/// another host), no scheme, and no space or control character, since browsers drop a tab
/// or newline inside a URL (`/\t/evil.test` becomes `//evil.test`) and CR/LF cannot be in a
/// Location header at all.
pub fn safe_next(next: &str) -> &str {
    let url_char = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@%/?#".contains(c);
    if next.starts_with('/') && !next.starts_with("//") && next.chars().all(url_char) {
        next
    } else {
        "/"
    }
}

pub fn page(next: &str, message: Option<&str>) -> String {
    let esc = crate::pages::escape;
    let msg = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(m)))
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in</title>
<style>body{{font-family:system-ui,sans-serif;max-width:22rem;margin:4rem auto;padding:0 1rem}}label{{display:block;margin-top:1rem}}input{{width:100%;padding:.4rem;font-size:1rem}}button{{margin-top:1.2rem;padding:.5rem 1.2rem;font-size:1rem}}.error{{color:#a00}}</style>
</head><body>
<h1>Sign in</h1>
{msg}
<form method="post" action="{LOGIN_PATH}">
<input type="hidden" name="next" value="{next}">
<label for="user">User name</label><input id="user" name="user" autocomplete="username" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<label for="code">Code from your authenticator app</label><input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{{6}}" required>
<button type="submit">Sign in</button>
</form>
</body></html>
"#,
        next = esc(next),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> LoginState {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let cfg = Login {
            users: "u".into(),
            session_key: "k".into(),
            session_hours: 1,
            max_failures_per_minute: 3,
        };
        // RFC 6238's test secret, "12345678901234567890", in base32.
        LoginState::parse(
            "users",
            &format!("anne:{hash}:GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n"),
            vec![7u8; 32],
            &cfg,
        )
        .unwrap()
    }

    #[test]
    fn totp_matches_rfc_6238_test_vectors() {
        let secret = b"12345678901234567890";
        // RFC 6238 appendix B, SHA1, last 6 of the 8 digits.
        assert_eq!(totp(secret, 59 / 30), "287082");
        assert_eq!(totp(secret, 1111111109 / 30), "081804");
        assert_eq!(totp(secret, 20000000000 / 30), "353130");
    }

    #[test]
    fn a_code_is_good_once_and_failures_are_limited() {
        let s = state();
        let t = now();
        let code = totp(b"12345678901234567890", t / 30);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let cookie = match s.attempt(ip, "anne", "pw", &code) {
            Outcome::Ok { cookie } => cookie,
            _ => panic!("refused"),
        };
        assert_eq!(s.verify(&cookie).as_deref(), Some("anne"));
        let mut bad = cookie.clone();
        bad.replace_range(0..1, if bad.starts_with('Y') { "Z" } else { "Y" });
        assert_eq!(s.verify(&bad), None, "a changed cookie is refused");
        assert!(
            matches!(s.attempt(ip, "anne", "pw", &code), Outcome::Refused),
            "replayed code"
        );
        assert!(matches!(
            s.attempt(ip, "anne", "wrong", "000000"),
            Outcome::Refused
        ));
        assert!(matches!(
            s.attempt(ip, "anne", "wrong", "000000"),
            Outcome::Refused
        ));
        assert!(
            matches!(s.attempt(ip, "anne", "pw", &code), Outcome::TooMany),
            "3 failures in a minute"
        );
        assert!(
            matches!(
                s.attempt("192.0.2.2".parse().unwrap(), "nobody", "x", "1"),
                Outcome::Refused
            ),
            "per address"
        );
    }

    #[test]
    fn next_and_cookies() {
        assert_eq!(safe_next("/app/x?y=1"), "/app/x?y=1");
        assert_eq!(safe_next("//evil.test/"), "/");
        assert_eq!(safe_next("https://evil.test/"), "/");
        assert_eq!(safe_next("/\t/evil.test/"), "/", "browsers drop the tab");
        assert_eq!(safe_next("/\\evil.test/"), "/");
        assert_eq!(safe_next("/x\r\nSet-Cookie: a=b"), "/");
        assert_eq!(safe_next("/a b"), "/");
        assert_eq!(safe_next("/"), "/");
        assert_eq!(
            safe_next("/%09/x"),
            "/%09/x",
            "an escape stays an escape in the path"
        );
        assert_eq!(
            cookie_value("a=1; gateway_session=xyz; b=2", COOKIE),
            Some("xyz")
        );
        assert_eq!(without_session("a=1; gateway_session=xyz; b=2"), "a=1; b=2");
    }
}
