//! Which route a request takes: the route whose host equals the request's (else a `*`
//! route) with the longest prefix the path starts with. A path equal to a prefix without its
//! trailing slash (`/chat`) is answered by a redirect to the prefix (`/chat/`), so relative
//! links in the app resolve under it.

use crate::config::Route;

#[derive(Debug, PartialEq)]
pub enum Match {
    Route(usize),
    /// Redirect to this path (the prefix with its trailing slash).
    AddSlash(String),
    None,
}

/// The host part of a Host header: lower-cased, port removed (IPv6 brackets kept).
pub fn host_of(header: &str) -> String {
    let h = header.trim().to_ascii_lowercase();
    if h.starts_with('[') {
        return h.split_once(']').map(|(a, _)| format!("{a}]")).unwrap_or(h);
    }
    match h.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name.to_string(),
        _ => h,
    }
}

/// Why a request's host was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadHost {
    /// An HTTP/1.1 request without a Host header.
    Missing,
    /// Two Host headers or more.
    Repeated,
    /// A Host that is no host name or address (`[::1]`, `a.test:8080`).
    Invalid,
}

impl std::fmt::Display for BadHost {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            BadHost::Missing => "an HTTP/1.1 request needs a Host header",
            BadHost::Repeated => "the request has more than one Host header",
            BadHost::Invalid => "the Host header is not a host name or address",
        })
    }
}

/// The host a request is for, as RFC 9112 section 3.2 says: the absolute-form target's
/// host when there is one (the Host header is then ignored), else the single Host header;
/// none (in HTTP/1.1) or two are refused. Lower-cased, the port and a trailing dot
/// removed (`App.Example.test.:443` is `app.example.test`), so the route is the same
/// whatever the spelling.
pub fn request_host(req: &hyper::Request<hyper::body::Incoming>) -> Result<String, BadHost> {
    let raw = if let Some(h) = req.uri().host() {
        h.to_string()
    } else {
        let mut all = req.headers().get_all(hyper::header::HOST).iter();
        match (all.next(), all.next()) {
            (Some(h), None) => h.to_str().map_err(|_| BadHost::Invalid)?.to_string(),
            (Some(_), Some(_)) => return Err(BadHost::Repeated),
            (None, _) if req.version() == hyper::Version::HTTP_11 => return Err(BadHost::Missing),
            (None, _) => String::new(),
        }
    };
    let host = host_of(&raw);
    let host = host.strip_suffix('.').unwrap_or(&host).to_string();
    let valid = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        host.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    };
    if !valid || (host.is_empty() && !raw.is_empty()) {
        return Err(BadHost::Invalid);
    }
    Ok(host)
}

pub fn find(routes: &[Route], host: &str, path: &str) -> Match {
    let pick = |exact: bool| -> Option<(usize, usize)> {
        routes
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                if exact {
                    r.host.eq_ignore_ascii_case(host)
                } else {
                    r.host == "*"
                }
            })
            .filter(|(_, r)| path.starts_with(&r.prefix.0))
            .map(|(i, r)| (i, r.prefix.0.len()))
            .max_by_key(|(_, len)| *len)
    };
    if let Some((i, _)) = pick(true).or_else(|| pick(false)) {
        // A longer prefix whose bare form is this path wins over a shorter route: `/chat`
        // means the `/chat/` app, not the `/` app.
        let bare = routes.iter().any(|r| {
            (r.host.eq_ignore_ascii_case(host) || r.host == "*")
                && r.prefix.0.len() > routes[i].prefix.0.len()
                && r.prefix.0.trim_end_matches('/') == path
        });
        if bare {
            return Match::AddSlash(format!("{path}/"));
        }
        return Match::Route(i);
    }
    let bare = routes.iter().any(|r| {
        (r.host.eq_ignore_ascii_case(host) || r.host == "*")
            && r.prefix.0.len() > 1
            && r.prefix.0.trim_end_matches('/') == path
    });
    if bare {
        Match::AddSlash(format!("{path}/"))
    } else {
        Match::None
    }
}

/// The path sent upstream: the prefix removed (keeping the leading `/`) when the route
/// strips it, under the upstream's own base path.
pub fn upstream_path(route: &Route, path_and_query: &str) -> String {
    let rest = if route.strips() {
        &path_and_query[route.prefix.0.len() - 1..]
    } else {
        path_and_query
    };
    format!("{}{}", route.upstream.path, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn routes() -> Vec<Route> {
        parse(
            "t",
            r#"
[[route]]
host = "app.example.test"
upstream = "http://10.0.0.1:8000"
[[route]]
host = "app.example.test"
prefix = "/chat/"
upstream = "http://10.0.0.2:5000/base"
[[route]]
upstream = "http://10.0.0.9:80"
"#,
        )
        .unwrap()
        .routes
    }

    #[test]
    fn longest_prefix_on_the_exact_host_then_the_wildcard() {
        let r = routes();
        assert_eq!(find(&r, "app.example.test", "/chat/x?y=1"), Match::Route(1));
        assert_eq!(find(&r, "app.example.test", "/chatty"), Match::Route(0));
        assert_eq!(
            find(&r, "app.example.test", "/chat"),
            Match::AddSlash("/chat/".into())
        );
        assert_eq!(find(&r, "other.test", "/chat/"), Match::Route(2));
        assert_eq!(find(&r[..2], "other.test", "/"), Match::None);
    }

    #[test]
    fn prefix_stripped_under_the_upstream_base() {
        let r = routes();
        assert_eq!(
            upstream_path(&r[1], "/chat/api/send?x=1"),
            "/base/api/send?x=1"
        );
        assert_eq!(upstream_path(&r[1], "/chat/"), "/base/");
        assert_eq!(upstream_path(&r[0], "/chat2/a"), "/chat2/a");
    }

    #[test]
    fn host_header_forms() {
        assert_eq!(host_of("App.Example.test:8443"), "app.example.test");
        assert_eq!(host_of("[::1]:80"), "[::1]");
        assert_eq!(host_of("example.test"), "example.test");
    }
}
