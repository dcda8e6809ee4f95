//! The built-in login page: user name, password (bcrypt or argon2 hash) and a TOTP code
//! (RFC 6238: HMAC-SHA1, 30 s steps, 6 digits, one step of clock drift either way), giving
//! a session cookie signed with HMAC-SHA256 under the node's `session-key` secret. This is
//! what the user's Django views did with @login_required and @otp_required, in front of any
//! app. Failed attempts are limited per client address; a code is accepted once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};

use crate::config::Login;
use crate::failures::{Failures, Key};
use crate::spent::Spent;

pub const LOGIN_PATH: &str = "/.gateway/login";
pub const LOGOUT_PATH: &str = "/.gateway/logout";
pub const COOKIE: &str = "gateway_session";

struct User {
    hash: String,
    totp_secret: Vec<u8>,
}

pub struct LoginState {
    users: HashMap<String, User>,
    /// Checked for a user name the file does not hold: the same work as a wrong password.
    dummy: String,
    key: Vec<u8>,
    pub session_secs: u64,
    failures: Failures,
    /// TOTP steps used and sessions signed out, kept in the state folder.
    spent: Arc<Spent>,
}

pub enum Outcome {
    Ok {
        cookie: String,
    },
    Refused,
    /// Too many failures from the address or for the user: wait this long.
    TooMany(Duration),
}

/// A valid session cookie's content.
pub struct Session {
    pub user: String,
    nonce: String,
    expiry: u64,
}

impl LoginState {
    /// `window` is the server's auth-failure-window-secs.
    pub fn load(cfg: &Login, window: Duration) -> Result<LoginState, String> {
        let text = std::fs::read_to_string(&cfg.users)
            .map_err(|e| format!("{}: {e}", cfg.users.display()))?;
        let key = std::fs::read(&cfg.session_key)
            .map_err(|e| format!("{}: {e}", cfg.session_key.display()))?;
        let spent = Spent::open(&cfg.state_dir)?;
        Self::parse(
            &cfg.users.display().to_string(),
            &text,
            key,
            cfg,
            window,
            spent,
        )
    }

    fn parse(
        display: &str,
        text: &str,
        key: Vec<u8>,
        cfg: &Login,
        window: Duration,
        spent: Arc<Spent>,
    ) -> Result<LoginState, String> {
        if key.len() < 16 {
            return Err("the session key has fewer than 16 bytes".into());
        }
        let mut users = HashMap::new();
        let mut first = None;
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
            first.get_or_insert_with(|| hash.to_string());
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
            dummy: crate::basic_auth::dummy_like(first.as_deref()),
            key,
            session_secs: cfg.session_hours * 3600,
            failures: Failures::new(cfg.max_failures_per_minute.max(1), window),
            spent,
        })
    }

    /// Checks a login attempt from `client`: limited per address and per user name, the
    /// password hashed off the async threads (against a dummy hash for an unknown user, so
    /// both cost the same), then the TOTP code, spent once for good.
    pub async fn attempt(&self, client: IpAddr, user: &str, password: &str, code: &str) -> Outcome {
        let keys = [Key::Addr(client), Key::User(user.to_string())];
        if let Err(wait) = self.failures.begin(&keys) {
            return Outcome::TooMany(wait);
        }
        let known = self.users.get(user);
        let hash = known.map_or(self.dummy.clone(), |u| u.hash.clone());
        let password_ok = crate::basic_auth::verify_off_thread(password.to_string(), hash).await;
        let ok = match known {
            Some(u) if password_ok => self.code_ok(user, &u.totp_secret, code, now()),
            _ => false,
        };
        if ok {
            self.failures.forgive(&keys);
            Outcome::Ok {
                cookie: self.sign(user, now() + self.session_secs),
            }
        } else {
            Outcome::Refused
        }
    }

    fn code_ok(&self, user: &str, secret: &[u8], code: &str, t: u64) -> bool {
        let step = t / 30;
        for s in [step, step.wrapping_sub(1), step + 1] {
            if constant_eq(totp(secret, s).as_bytes(), code.trim().as_bytes()) {
                return match self.spent.spend(user, s, t) {
                    Ok(fresh) => fresh,
                    Err(e) => {
                        eprintln!("gateway: login refused: the spent code cannot be recorded: {e}");
                        false
                    }
                };
            }
        }
        false
    }

    /// `user.expiry.nonce.signature`, all base64url. The signature covers the user's
    /// password hash too, so a changed password ends the user's sessions.
    fn sign(&self, user: &str, expiry: u64) -> String {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut nonce = [0u8; 16];
        crate::random::fill(&mut nonce);
        let payload = format!("{}.{}.{}", b.encode(user), expiry, b.encode(nonce));
        let hash = self.users.get(user).map_or("", |u| u.hash.as_str());
        format!("{payload}.{}", b.encode(self.mac(&payload, hash)))
    }

    fn mac(&self, payload: &str, hash: &str) -> Vec<u8> {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(payload.as_bytes());
        mac.update(b"\0");
        mac.update(hash.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The session of a valid cookie value: signed with the current key, unexpired, not
    /// signed out, its user still in the users file with the same password.
    pub fn verify(&self, cookie: &str) -> Option<Session> {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (payload, sig) = cookie.rsplit_once('.')?;
        let mut parts = payload.split('.');
        let (user, expiry, nonce) = (parts.next()?, parts.next()?, parts.next()?);
        let user = String::from_utf8(b.decode(user).ok()?).ok()?;
        let u = self.users.get(&user)?;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(payload.as_bytes());
        mac.update(b"\0");
        mac.update(u.hash.as_bytes());
        mac.verify_slice(&b.decode(sig).ok()?).ok()?;
        let expiry = expiry.parse::<u64>().ok()?;
        if expiry <= now() || self.spent.is_revoked(nonce) {
            return None;
        }
        Some(Session {
            user,
            nonce: nonce.to_string(),
            expiry,
        })
    }

    /// Signs a session out for good (logout): its cookie is refused from now on, even if
    /// a copy of it is replayed.
    pub fn revoke(&self, s: &Session) -> Result<(), String> {
        self.spent.revoke(&s.nonce, s.expiry, now())
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

/// Every Cookie header of a request as one value (HTTP/2 clients send one header per
/// cookie).
pub fn cookie_header(h: &hyper::HeaderMap) -> String {
    h.get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ")
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

    fn state(name: &str) -> LoginState {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let dir = std::env::temp_dir().join(format!("login-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = Login {
            users: "u".into(),
            session_key: "k".into(),
            session_hours: 1,
            max_failures_per_minute: 3,
            state_dir: dir.clone(),
        };
        // RFC 6238's test secret, "12345678901234567890", in base32.
        LoginState::parse(
            "users",
            &format!("anne:{hash}:GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n"),
            vec![7u8; 32],
            &cfg,
            Duration::from_secs(60),
            Spent::open(&dir).unwrap(),
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

    #[tokio::test]
    async fn a_code_is_good_once_sessions_revoke_and_failures_are_limited() {
        let s = state("once");
        let t = now();
        let code = totp(b"12345678901234567890", t / 30);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let cookie = match s.attempt(ip, "anne", "pw", &code).await {
            Outcome::Ok { cookie } => cookie,
            _ => panic!("refused"),
        };
        let session = s.verify(&cookie).expect("valid");
        assert_eq!(session.user, "anne");
        let mut bad = cookie.clone();
        bad.replace_range(0..1, if bad.starts_with('Y') { "Z" } else { "Y" });
        assert!(s.verify(&bad).is_none(), "a changed cookie is refused");
        s.revoke(&session).unwrap();
        assert!(s.verify(&cookie).is_none(), "signed out");
        assert!(
            matches!(s.attempt(ip, "anne", "pw", &code).await, Outcome::Refused),
            "replayed code"
        );
        assert!(matches!(
            s.attempt(ip, "anne", "wrong", "000000").await,
            Outcome::Refused
        ));
        assert!(matches!(
            s.attempt(ip, "anne", "wrong", "000000").await,
            Outcome::Refused
        ));
        assert!(
            matches!(
                s.attempt(ip, "anne", "pw", &code).await,
                Outcome::TooMany(_)
            ),
            "3 failures in a minute"
        );
        assert!(
            matches!(
                s.attempt("192.0.2.2".parse().unwrap(), "nobody", "x", "1")
                    .await,
                Outcome::Refused
            ),
            "per address"
        );
        assert!(
            matches!(
                s.attempt("192.0.2.3".parse().unwrap(), "anne", "pw", "1")
                    .await,
                Outcome::TooMany(_)
            ),
            "and per user"
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
