//! The gateway's configuration: one TOML file (the roles issue renders it per site).
//!
//! Every value is checked while it is read, so `gateway check` names the file, line, column
//! and key of the first mistake (`gateway.toml:12:12: key `route[1].upstream`: ...`), and a
//! reload with a bad file keeps the running configuration.
//!
//! ```toml
//! [server]
//! http = "0.0.0.0:80"
//! https = "0.0.0.0:443"
//! trusted-proxies = ["192.168.50.1/32"]
//! lan = ["192.168.50.0/24"]
//!
//! [tls.acme]
//! directory = "https://acme.example.test/directory"
//! state-dir = "/var/lib/gateway/acme"
//!
//! [[route]]
//! host = "jupyter.example.test"
//! upstream = "http://192.168.50.4:8888"
//! read-timeout-secs = 300
//! auth = { kind = "basic", htpasswd = "/run/credentials/gateway.service/jupyter-htpasswd" }
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub server: Server,
    pub tls: Option<Tls>,
    /// The built-in login page (routes with `auth = { kind = "login" }`).
    pub login: Option<Login>,
    #[serde(default, rename = "route")]
    pub routes: Vec<Route>,
    /// The file's name and text, so a check made later (a file a key names cannot be
    /// read) still names the file, line and key (`Config::at`).
    #[serde(skip)]
    pub source: Source,
}

#[derive(Debug, Clone, Default)]
pub struct Source {
    pub display: String,
    pub text: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Server {
    /// Plain HTTP listener; with an HTTPS listener it redirects to HTTPS, except ACME's
    /// challenges.
    #[serde(default = "default_http")]
    pub http: Option<SocketAddr>,
    /// HTTPS listener (needs `[tls]`).
    pub https: Option<SocketAddr>,
    /// Offer HTTP/2 on the HTTPS listener (ALPN h2; plain HTTP stays HTTP/1.1). Routing,
    /// path normalisation, access and auth are the same whatever the version; WebSockets
    /// use HTTP/1.1 (browsers open one for them).
    #[serde(default = "yes")]
    pub http2: bool,
    /// Peers whose X-Forwarded-For/-Proto/-Host are believed; from anyone else they are
    /// replaced.
    #[serde(default)]
    pub trusted_proxies: Vec<Net>,
    /// The local network, for routes with `access = "lan"`.
    #[serde(default = "default_lan")]
    pub lan: Vec<Net>,
    /// One line per request on standard output (the journal).
    #[serde(default = "yes")]
    pub access_log: bool,
    /// Seconds between active health checks of upstreams that have a `health` path.
    #[serde(default = "ten")]
    pub health_interval_secs: u64,
    // The connection limits and timeouts, with defaults near nginx's where it has one.
    // None may be zero. They are read as each connection opens (the body size per
    // request), so a reload applies them to new connections; max-connections is read once,
    // at start.
    /// Longest time to receive a request's head (request line and headers), counted from
    /// the connection's start or, between requests, from the first byte of the next one;
    /// a slow client (slowloris) is disconnected after it. nginx's client_header_timeout
    /// is 60 s; browsers send a head in one packet, so 10 s is plenty.
    #[serde(default = "ten_nz")]
    pub header_read_timeout_secs: NonZeroU64,
    /// Longest silence on a kept-alive connection between a response and the next
    /// request (nginx's keepalive_timeout is 75 s).
    #[serde(default = "sixty_nz")]
    pub keepalive_idle_secs: NonZeroU64,
    /// Longest TLS handshake.
    #[serde(default = "ten_nz")]
    pub tls_handshake_timeout_secs: NonZeroU64,
    /// Connections open at once; past it a plain HTTP client gets a 503 and is
    /// disconnected, a TLS one is disconnected. Each proxied request also holds a
    /// connection to its upstream: keep it under half the unit's LimitNOFILE (65536).
    #[serde(default = "max_conns")]
    pub max_connections: NonZeroUsize,
    /// Largest request head (request line and headers, bytes); larger answers 431. nginx
    /// allows 4 buffers of 8 KiB (large_client_header_buffers 4 8k).
    #[serde(default = "head_bytes")]
    pub max_header_bytes: NonZeroUsize,
    /// Longest request target (path and query, bytes); longer answers 414 (nginx: one
    /// 8 KiB buffer).
    #[serde(default = "uri_bytes")]
    pub max_uri_bytes: NonZeroUsize,
    /// Largest request body (bytes); larger answers 413. A route's `max-body-bytes`
    /// overrides it. nginx's 1 MiB default breaks uploads to notebooks, hence 100 MiB.
    #[serde(default = "body_bytes")]
    pub max_body_bytes: NonZeroU64,
    /// Longest silence inside a request's body; then it answers 408 (nginx's
    /// client_body_timeout is 60 s). A route's `body-idle-timeout-secs` overrides it.
    #[serde(default = "sixty_nz")]
    pub body_idle_timeout_secs: NonZeroU64,
    /// Longest silence inside an upstream's response body; then the client's connection
    /// is cut (the response cannot be completed) and the stall logged. nginx's
    /// proxy_read_timeout (60 s) is the same clock. A route's
    /// `upstream-body-idle-timeout-secs` overrides it.
    #[serde(default = "sixty_nz")]
    pub upstream_body_idle_timeout_secs: NonZeroU64,
    /// Failed HTTP Basic attempts allowed per client address, and per user name, within
    /// `auth-failure-window-secs`; past it the gateway answers 429 with Retry-After and
    /// checks no password (a password hash costs a core tens of milliseconds).
    #[serde(default = "ten_nz32")]
    pub auth_failure_limit: NonZeroU32,
    /// The window of `auth-failure-limit`, and of the login page's
    /// `max-failures-per-minute` (whose name says its default).
    #[serde(default = "sixty_nz")]
    pub auth_failure_window_secs: NonZeroU64,
}

fn ten_nz32() -> NonZeroU32 {
    NonZeroU32::new(10).expect("not zero")
}

fn ten_nz() -> NonZeroU64 {
    NonZeroU64::new(10).expect("not zero")
}

fn sixty_nz() -> NonZeroU64 {
    NonZeroU64::new(60).expect("not zero")
}

fn max_conns() -> NonZeroUsize {
    NonZeroUsize::new(16384).expect("not zero")
}

fn head_bytes() -> NonZeroUsize {
    NonZeroUsize::new(32 * 1024).expect("not zero")
}

fn uri_bytes() -> NonZeroUsize {
    NonZeroUsize::new(8 * 1024).expect("not zero")
}

fn body_bytes() -> NonZeroU64 {
    NonZeroU64::new(100 << 20).expect("not zero")
}

impl Default for Server {
    fn default() -> Self {
        Server {
            http: default_http(),
            https: None,
            http2: true,
            trusted_proxies: vec![],
            lan: default_lan(),
            access_log: true,
            health_interval_secs: 10,
            header_read_timeout_secs: ten_nz(),
            keepalive_idle_secs: sixty_nz(),
            tls_handshake_timeout_secs: ten_nz(),
            max_connections: max_conns(),
            max_header_bytes: head_bytes(),
            max_uri_bytes: uri_bytes(),
            max_body_bytes: body_bytes(),
            body_idle_timeout_secs: sixty_nz(),
            upstream_body_idle_timeout_secs: sixty_nz(),
            auth_failure_limit: ten_nz32(),
            auth_failure_window_secs: sixty_nz(),
        }
    }
}

fn default_http() -> Option<SocketAddr> {
    Some(SocketAddr::from(([0, 0, 0, 0], 80)))
}

fn default_lan() -> Vec<Net> {
    [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "::1/128",
        "fc00::/7",
    ]
    .iter()
    .map(|s| s.parse().expect("valid default"))
    .collect()
}

fn yes() -> bool {
    true
}

fn ten() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Login {
    /// Lines `user:password-hash:TOTP-secret-base32` (bcrypt or argon2 hashes).
    pub users: PathBuf,
    /// A file whose bytes key the session cookies' HMAC (the `session-key` slot).
    pub session_key: PathBuf,
    #[serde(default = "twelve")]
    pub session_hours: u64,
    /// Failed logins allowed per client address, and per user name, within the server's
    /// `auth-failure-window-secs` (60 s unless set).
    #[serde(default = "five")]
    pub max_failures_per_minute: u32,
    /// Where the login keeps what must outlive a reload or a restart: the TOTP codes
    /// already used and the sessions signed out, each until it would have expired anyway.
    #[serde(default = "login_state_dir")]
    pub state_dir: PathBuf,
}

/// Under the gateway unit's StateDirectory (the proxy role's `state-dir = "gateway"`).
fn login_state_dir() -> PathBuf {
    "/var/lib/gateway/login".into()
}

fn twelve() -> u64 {
    12
}

fn five() -> u32 {
    5
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Tls {
    /// Certificates from an ACME server by HTTP-01, kept in `state-dir` and renewed.
    pub acme: Option<Acme>,
    /// Certificates from files (PEM chain and key), picked by the name the client asks for.
    #[serde(default)]
    pub certs: Vec<CertFiles>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Acme {
    /// The ACME directory URL.
    pub directory: String,
    pub email: Option<String>,
    /// Names to certify (default: every route host that is not `*`).
    #[serde(default)]
    pub domains: Vec<String>,
    pub state_dir: PathBuf,
    /// Renew this many days before expiry.
    #[serde(default = "thirty")]
    pub renew_before_days: u64,
    /// A CA certificate (PEM) to trust for the ACME server itself, e.g. a test server's.
    pub ca_file: Option<PathBuf>,
}

fn thirty() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Route {
    /// Host name the route answers (the Host header, without port), or `*`.
    #[serde(default = "star")]
    pub host: String,
    /// Path prefix, starting and ending with `/`.
    #[serde(default)]
    pub prefix: Prefix,
    pub upstream: Upstream,
    /// Remove the prefix before forwarding (sending it as X-Forwarded-Prefix). Default: yes
    /// when the prefix is not `/`.
    pub strip_prefix: Option<bool>,
    #[serde(default = "five_u64")]
    pub connect_timeout_secs: u64,
    /// Longest wait for the upstream's response head.
    #[serde(default = "sixty")]
    pub read_timeout_secs: u64,
    /// Longest silence on an upgraded (WebSocket) connection before it is closed.
    #[serde(default = "six_hundred")]
    pub idle_timeout_secs: u64,
    #[serde(default)]
    pub access: Access,
    /// Path prefixes reachable from anywhere when `access = "lan"`.
    #[serde(default)]
    pub public_paths: Vec<String>,
    pub auth: Option<Auth>,
    /// A path on the upstream answering 2xx when it is healthy (checked actively).
    pub health: Option<String>,
    /// Largest request body for this route (bytes), instead of the server's.
    pub max_body_bytes: Option<NonZeroU64>,
    /// Longest silence inside a request's body for this route, instead of the server's.
    pub body_idle_timeout_secs: Option<NonZeroU64>,
    /// Longest silence inside the upstream's response body, instead of the server's.
    pub upstream_body_idle_timeout_secs: Option<NonZeroU64>,
    /// Pass the gateway's own credentials to the upstream: its session cookie and, on a
    /// route with `auth = { kind = "basic" }`, the Authorization header it checked. Off by
    /// default: an app has no use for them, and one that logs or leaks headers would leak
    /// a working login.
    #[serde(default)]
    pub forward_credentials: bool,
}

impl Route {
    pub fn strips(&self) -> bool {
        self.strip_prefix.unwrap_or(self.prefix.0 != "/")
    }
}

fn star() -> String {
    "*".into()
}

fn five_u64() -> u64 {
    5
}

fn sixty() -> u64 {
    60
}

fn six_hundred() -> u64 {
    600
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    #[default]
    Any,
    Lan,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", tag = "kind")]
pub enum Auth {
    /// HTTP Basic against an htpasswd file (bcrypt `$2y$` or argon2 `$argon2id$` hashes).
    Basic {
        htpasswd: PathBuf,
        #[serde(default = "realm")]
        realm: String,
    },
    /// The built-in login page: password and TOTP, then a signed session cookie.
    Login,
    /// Ask this URL with the request's headers; 2xx lets the request through.
    Forward { url: Upstream },
}

fn realm() -> String {
    "restricted".into()
}

/// A path prefix: starts and ends with `/`.
#[derive(Debug, Clone, PartialEq)]
pub struct Prefix(pub String);

impl Default for Prefix {
    fn default() -> Self {
        Prefix("/".into())
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if !s.starts_with('/')
            || !s.ends_with('/')
            || s.contains("//")
            || s.contains(['?', '#', ' '])
        {
            return Err(serde::de::Error::custom(format!(
                "prefix `{s}` must start and end with `/` (e.g. \"/chat/\")"
            )));
        }
        Ok(Prefix(s))
    }
}

/// An upstream base URL: `http://host:port` (no path).
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub authority: String,
    pub path: String,
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

impl FromStr for Upstream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| format!("`{s}` is not an http:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("`{s}` has no host (or has user info)"));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Upstream {
            authority,
            path: path.trim_end_matches('/').to_string(),
        })
    }
}

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A network in CIDR form (`192.168.50.0/24`; a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Net {
    addr: IpAddr,
    bits: u8,
}

impl Net {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => mask_eq(&n.octets(), &a.octets(), self.bits),
            (IpAddr::V6(n), IpAddr::V6(a)) => mask_eq(&n.octets(), &a.octets(), self.bits),
            _ => false,
        }
    }
}

/// An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn mask_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = (bits / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rem = bits % 8;
    rem == 0 || (a[full] ^ b[full]) & (0xffu8 << (8 - rem)) == 0
}

impl FromStr for Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, bits) = match s.split_once('/') {
            Some((a, b)) => (
                a,
                Some(
                    b.parse::<u8>()
                        .map_err(|_| format!("`{s}`: bad prefix length"))?,
                ),
            ),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{s}` is not an address or network (e.g. 192.168.1.0/24)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        if bits > max {
            return Err(format!("`{s}`: prefix length above {max}"));
        }
        Ok(Net {
            addr: canonical(addr),
            bits,
        })
    }
}

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Reads and checks a configuration file.
pub fn load(path: &std::path::Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&path.display().to_string(), &text)
}

/// Parses and checks; errors are `FILE:LINE:COL: key `K`: message`.
pub fn parse(display: &str, text: &str) -> Result<Config, String> {
    let mut cfg: Config = toml_errors::parse(display, text)?;
    cfg.source = Source {
        display: display.to_string(),
        text: text.to_string(),
    };
    // Checks across values, located by the route's table in the text.
    let route_at = |i: usize| -> String {
        let mut seen = 0;
        for (n, line) in text.lines().enumerate() {
            if line.trim() == "[[route]]" {
                if seen == i {
                    return format!("{display}:{}:1: key `route[{i}]`", n + 1);
                }
                seen += 1;
            }
        }
        format!("{display}: key `route[{i}]`")
    };
    for (i, r) in cfg.routes.iter().enumerate() {
        if let Some(j) = cfg.routes[..i]
            .iter()
            .position(|o| o.host == r.host && o.prefix == r.prefix)
        {
            return Err(format!(
                "{}: the same host and prefix as route[{j}] ({} {})",
                route_at(i),
                r.host,
                r.prefix.0
            ));
        }
        if matches!(r.auth, Some(Auth::Login)) && cfg.login.is_none() {
            return Err(format!(
                "{}: auth kind `login` needs a [login] table",
                route_at(i)
            ));
        }
        if let Some(h) = r.health.as_ref().filter(|h| !h.starts_with('/')) {
            return Err(format!(
                "{}: health `{h}` must be a path starting with `/`",
                route_at(i)
            ));
        }
        if let Some(p) = r.public_paths.iter().find(|p| !p.starts_with('/')) {
            return Err(format!(
                "{}: public path `{p}` must start with `/`",
                route_at(i)
            ));
        }
        // An error, not a warning: `access = "lan"` says the route is private, and a
        // public path covering the whole route says the opposite. Whoever means public
        // writes `access = "any"`; a warning in a journal nobody reads would leave a LAN
        // app on the internet.
        if r.access == Access::Lan {
            if let Some((k, p)) = r
                .public_paths
                .iter()
                .enumerate()
                .find(|(_, p)| r.prefix.0.starts_with(p.as_str()))
            {
                return Err(format!(
                    "{}: public path `{p}` covers the whole route (prefix `{}`), which `access = \"lan\"` keeps to the LAN: name the public part under the prefix (e.g. \"{}track/\"), or set access = \"any\"",
                    toml_errors::at(display, text, &format!("route[{i}].public-paths[{k}]")),
                    r.prefix.0,
                    r.prefix.0
                ));
            }
        }
    }
    if cfg.server.https.is_some() && cfg.tls.is_none() {
        return Err(format!(
            "{display}: key `server.https`: an HTTPS listener needs a [tls] table"
        ));
    }
    if let Some(t) = &cfg.tls {
        if t.acme.is_none() && t.certs.is_empty() {
            return Err(format!(
                "{display}: key `tls`: give [tls.acme] or [[tls.certs]]"
            ));
        }
        if let Some(a) = &t.acme {
            if !a.directory.starts_with("https://") {
                return Err(format!(
                    "{display}: key `tls.acme.directory`: `{}` is not an https:// URL",
                    a.directory
                ));
            }
        }
    }
    Ok(cfg)
}

impl Config {
    /// `FILE:LINE:COL: key `KEY`` for a key of this file, for errors found after parsing.
    pub fn at(&self, key: &str) -> String {
        toml_errors::at(&self.source.display, &self.source.text, key)
    }

    /// The names ACME certifies: the configured list, else every named route host.
    pub fn acme_domains(&self) -> Vec<String> {
        let Some(a) = self.tls.as_ref().and_then(|t| t.acme.as_ref()) else {
            return vec![];
        };
        if !a.domains.is_empty() {
            return a.domains.clone();
        }
        let mut d: Vec<String> = self
            .routes
            .iter()
            .filter(|r| r.host != "*")
            .map(|r| r.host.clone())
            .collect();
        d.sort();
        d.dedup();
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
http = "127.0.0.1:8080"
trusted-proxies = ["10.0.0.1"]

[[route]]
host = "django.example.test"
upstream = "http://192.168.50.3:8000"

[[route]]
host = "django.example.test"
prefix = "/chat/"
upstream = "http://192.168.50.4:5000"
read-timeout-secs = 300
access = "lan"
public-paths = ["/chat/track/"]
auth = { kind = "basic", htpasswd = "/etc/gw/htpasswd" }
"#;

    #[test]
    fn a_good_file_parses_with_defaults() {
        let c = parse("g.toml", GOOD).unwrap();
        assert_eq!(c.routes.len(), 2);
        assert!(!c.routes[0].strips() && c.routes[1].strips());
        assert_eq!(c.routes[1].upstream.authority, "192.168.50.4:5000");
        assert_eq!(c.routes[1].access, Access::Lan);
        assert!(c.server.access_log);
        assert!(c.server.trusted_proxies[0].contains("10.0.0.1".parse().unwrap()));
        assert_eq!(c.server.header_read_timeout_secs.get(), 10);
        assert_eq!(c.server.max_header_bytes.get(), 32 * 1024);
        assert_eq!(c.routes[1].max_body_bytes, None);
    }

    #[test]
    fn mistakes_name_line_and_key() {
        let bad = GOOD.replace("http://192.168.50.4:5000", "https://x");
        let e = parse("g.toml", &bad).unwrap_err();
        assert!(
            e.starts_with(
                "g.toml:13:12: key `route[1].upstream`: `https://x` is not an http:// URL"
            ),
            "{e}"
        );
        let bad = GOOD.replace("prefix = \"/chat/\"", "prefix = \"/chat\"");
        let e = parse("g.toml", &bad).unwrap_err();
        assert!(
            e.starts_with("g.toml:12:10: key `route[1].prefix`: prefix `/chat` must start and end"),
            "{e}"
        );
        let bad = GOOD.replace("read-timeout-secs", "read-timout-secs");
        let e = parse("g.toml", &bad).unwrap_err();
        assert!(
            e.starts_with("g.toml:14:1: key `route[1].read-timout-secs`: unknown field"),
            "{e}"
        );
        let bad = GOOD.replace("prefix = \"/chat/\"\n", "");
        let e = parse("g.toml", &bad).unwrap_err();
        assert_eq!(e, "g.toml:10:1: key `route[1]`: the same host and prefix as route[0] (django.example.test /)");
        let bad = GOOD.replace("trusted-proxies", "max-connections = 0\ntrusted-proxies");
        let e = parse("g.toml", &bad).unwrap_err();
        assert!(
            e.starts_with("g.toml:4:19: key `server.max-connections`: invalid value: integer `0`"),
            "{e}"
        );
        let bad = GOOD.replace("\"10.0.0.1\"", "\"10.0.0.300\"");
        assert!(parse("g.toml", &bad)
            .unwrap_err()
            .contains("key `server.trusted-proxies[0]`"));
    }

    #[test]
    fn a_public_path_covering_a_lan_route_is_refused() {
        let bad = GOOD.replace(
            "public-paths = [\"/chat/track/\"]",
            "public-paths = [\"/chat/track/\", \"/\"]",
        );
        let e = parse("g.toml", &bad).unwrap_err();
        assert!(
            e.starts_with("g.toml:16:33: key `route[1].public-paths[1]`: public path `/` covers the whole route (prefix `/chat/`)"),
            "{e}"
        );
        let bad = GOOD.replace(
            "public-paths = [\"/chat/track/\"]",
            "public-paths = [\"/chat/\"]",
        );
        assert!(parse("g.toml", &bad)
            .unwrap_err()
            .contains("key `route[1].public-paths[0]`"));
        // On a route open to all, public paths change nothing.
        let ok = bad.replace("access = \"lan\"\n", "");
        assert!(parse("g.toml", &ok).is_ok());
    }

    #[test]
    fn networks_match_by_prefix() {
        let n: Net = "192.168.50.0/24".parse().unwrap();
        assert!(n.contains("192.168.50.7".parse().unwrap()));
        assert!(
            n.contains("::ffff:192.168.50.7".parse().unwrap()),
            "v4-mapped peers"
        );
        assert!(!n.contains("192.168.51.7".parse().unwrap()));
        let n: Net = "10.0.0.0/9".parse().unwrap();
        assert!(
            n.contains("10.127.0.1".parse().unwrap()) && !n.contains("10.128.0.1".parse().unwrap())
        );
        assert!("1.2.3.4/33".parse::<Net>().is_err());
    }
}
