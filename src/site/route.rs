//! The values of a site's routes and access rules, typed so that a mistake is refused when
//! the site is read: where a route goes (`HOST:PORT` or an http:// URL), its auth and
//! access, its prefix and public paths, who an `[[access]]` lets in, the ACME directory.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::names::HostName;
use crate::profile::checked::checked_string;
use crate::profile::unit_values::Port;

/// Where a route sends its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTo {
    /// A port of a host of the site (opened to the proxy by the host's firewall).
    Host { host: HostName, port: Port },
    /// An upstream outside the site, `http://...`.
    Url(String),
}

impl fmt::Display for RouteTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteTo::Host { host, port } => write!(f, "{host}:{port}"),
            RouteTo::Url(u) => f.write_str(u),
        }
    }
}

impl FromStr for RouteTo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.contains("://") {
            // The gateway's own rule for an upstream URL.
            s.parse::<gateway_config::Upstream>()?;
            if crate::profile::checked::control_char(s).is_some() || s.contains([' ', '"']) {
                return Err(format!("`{}` is not a URL", s.escape_debug()));
            }
            return Ok(RouteTo::Url(s.to_string()));
        }
        let (h, p) = s.rsplit_once(':').ok_or_else(|| {
            format!(
                "`{}` must be HOST:PORT (a host of the site) or an http:// URL",
                s.escape_debug()
            )
        })?;
        Ok(RouteTo::Host {
            host: h.parse()?,
            port: p.parse()?,
        })
    }
}

/// How a route checks who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteAuth {
    /// HTTP Basic, htpasswd lines from the proxy role's slot `htpasswd-slot`.
    Basic,
    /// The gateway's password + TOTP page; users from the proxy role's slot `login-users`.
    Login,
}

impl RouteAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteAuth::Basic => "basic",
            RouteAuth::Login => "login",
        }
    }
}

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteAccess {
    #[default]
    Any,
    /// Only the site's `lan` (public paths excepted).
    Lan,
}

impl RouteAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteAccess::Any => "any",
            RouteAccess::Lan => "lan",
        }
    }
}

impl fmt::Display for RouteAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for RouteAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn url_path_chars(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_graphic() && !"\"\\?#<>`{}|^".contains(c))
}

fn path_prefix(s: &str) -> Result<(), String> {
    if s.starts_with('/') && s.ends_with('/') && !s.contains("//") && url_path_chars(s) {
        Ok(())
    } else {
        Err(format!(
            "prefix `{}` must start and end with `/` (e.g. \"/chat/\")",
            s.escape_debug()
        ))
    }
}

checked_string!(
    /// A route's path prefix: starts and ends with `/`.
    PathPrefix,
    path_prefix
);

impl Default for PathPrefix {
    fn default() -> Self {
        PathPrefix("/".into())
    }
}

fn url_path(s: &str) -> Result<(), String> {
    if s.starts_with('/') && url_path_chars(s) {
        Ok(())
    } else {
        Err(format!(
            "`{}` must be a path starting with `/` (e.g. \"/track/\")",
            s.escape_debug()
        ))
    }
}

checked_string!(
    /// A URL path: a public path of a route, an upstream's health path.
    UrlPath,
    url_path
);

fn https_url(s: &str) -> Result<(), String> {
    let host = s
        .strip_prefix("https://")
        .map(|r| r.split('/').next().unwrap_or(""));
    if host.is_some_and(|h| !h.is_empty()) && url_path_chars(s.trim_start_matches("https://")) {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not an https:// URL (ACME directories are served over HTTPS)",
            s.escape_debug()
        ))
    }
}

checked_string!(
    /// An https:// URL: the ACME directory.
    HttpsUrl,
    https_url
);

fn email(s: &str) -> Result<(), String> {
    match s.split_once('@') {
        Some((user, domain))
            if !user.is_empty()
                && !domain.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\') =>
        {
            Ok(())
        }
        _ => Err(format!("`{}` is not an email address", s.escape_debug())),
    }
}

checked_string!(
    /// The ACME account's contact.
    Email,
    email
);

/// Who an `[[access]]` lets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Any,
    /// The site's `lan` networks.
    Lan,
    Host(HostName),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Any => f.write_str("any"),
            Peer::Lan => f.write_str("lan"),
            Peer::Host(h) => f.write_str(h),
        }
    }
}

impl FromStr for Peer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "any" => Ok(Peer::Any),
            "lan" => Ok(Peer::Lan),
            _ => s.parse().map(Peer::Host).map_err(|e| {
                format!("{e}; `from` takes host names of the site, \"lan\" or \"any\"")
            }),
        }
    }
}

macro_rules! serde_by_str {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_by_str!(RouteTo, Peer);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_targets_are_a_host_and_port_or_an_http_url() {
        assert_eq!(
            "vm-ia:8888".parse::<RouteTo>().unwrap().to_string(),
            "vm-ia:8888"
        );
        assert!(matches!(
            "http://10.0.0.9:8080".parse::<RouteTo>().unwrap(),
            RouteTo::Url(_)
        ));
        assert!("vm-ia"
            .parse::<RouteTo>()
            .unwrap_err()
            .contains("HOST:PORT"));
        assert!("vm-ia:0".parse::<RouteTo>().unwrap_err().contains("port 0"));
        assert!("vm-ia:http".parse::<RouteTo>().is_err());
        assert!("https://x.test".parse::<RouteTo>().is_err());
        assert!("VM:80".parse::<RouteTo>().is_err());
    }

    #[test]
    fn prefixes_paths_urls_and_peers() {
        assert!("/chat/".parse::<PathPrefix>().is_ok());
        for bad in ["/chat", "chat/", "", "/a//b/", "/a b/"] {
            let e = bad.parse::<PathPrefix>().unwrap_err();
            assert!(e.contains("must start and end with `/`"), "{bad}: {e}");
        }
        assert!("/track/".parse::<UrlPath>().is_ok());
        assert!("track/".parse::<UrlPath>().is_err());
        assert!("https://acme.test/directory".parse::<HttpsUrl>().is_ok());
        for bad in ["http://acme.test/directory", "https://", "acme.test"] {
            assert!(bad.parse::<HttpsUrl>().is_err(), "{bad}");
        }
        assert!("admin@example.test".parse::<Email>().is_ok());
        assert!("admin".parse::<Email>().is_err());
        assert_eq!("lan".parse::<Peer>().unwrap(), Peer::Lan);
        assert_eq!("portal".parse::<Peer>().unwrap().to_string(), "portal");
        assert!("Portal!"
            .parse::<Peer>()
            .unwrap_err()
            .contains("\"lan\" or \"any\""));
    }
}
