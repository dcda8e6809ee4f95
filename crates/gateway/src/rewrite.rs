//! Headers on the way through: X-Forwarded-* set (incoming ones believed only from trusted
//! proxies), hop-by-hop headers dropped, and for prefixed apps the upstream's Location and
//! Set-Cookie paths moved under the prefix, so an app that knows nothing of its prefix still
//! redirects and scopes its cookies right.

use std::net::IpAddr;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{Net, Route};

/// Connection-level headers (RFC 9110 section 7.6.1) never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers, and those the Connection header names. With `upgrade`, the
/// WebSocket handshake's `Connection: upgrade` and `Upgrade` are put back.
pub fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: Option<HeaderValue>) {
    let named: Vec<String> = h
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    for n in named
        .iter()
        .map(String::as_str)
        .chain(HOP_BY_HOP.iter().copied())
    {
        if let Ok(name) = HeaderName::from_bytes(n.as_bytes()) {
            h.remove(name);
        }
    }
    if let Some(u) = upgrade {
        h.insert("connection", HeaderValue::from_static("upgrade"));
        h.insert("upgrade", u);
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the nearest
/// untrusted address in its X-Forwarded-For.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Net]) -> IpAddr {
    let peer = crate::config::canonical(peer);
    if !trusted.iter().any(|n| n.contains(peer)) {
        return peer;
    }
    let chain: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    chain
        .into_iter()
        .rev()
        .find(|ip| !trusted.iter().any(|n| n.contains(*ip)))
        .unwrap_or(peer)
}

/// Headers that claim something about the client or the original request, which only the
/// gateway (or a trusted proxy before it) may set: every X-Forwarded-*, Forwarded
/// (RFC 7239) and X-Real-IP. Names are lower-case (hyper's HeaderName).
pub fn claims_a_client(name: &str) -> bool {
    name.starts_with("x-forwarded-") || name == "forwarded" || name == "x-real-ip"
}

/// Sets X-Forwarded-For/-Proto/-Host (and -Prefix when the route strips its prefix) and
/// X-Real-IP (the client as `client_ip` finds it). From a peer that is not a trusted proxy,
/// every other header claiming a client (`claims_a_client`) is dropped first.
pub fn set_forwarded(
    h: &mut HeaderMap,
    peer: IpAddr,
    trusted: &[Net],
    proto: &str,
    host: &str,
    route: &Route,
) {
    let real = client_ip(peer, h, trusted);
    let peer = crate::config::canonical(peer);
    let from_trusted = trusted.iter().any(|n| n.contains(peer));
    if !from_trusted {
        // X-Forwarded-For/-Proto/-Host/-Prefix are set again below.
        let spoofed: Vec<HeaderName> = h
            .keys()
            .filter(|k| claims_a_client(k.as_str()))
            .cloned()
            .collect();
        for k in spoofed {
            h.remove(k);
        }
    }
    h.insert(
        "x-real-ip",
        HeaderValue::from_str(&real.to_string()).expect("addresses are ASCII"),
    );
    let prior = if from_trusted {
        h.get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        String::new()
    };
    let xff = if prior.is_empty() {
        peer.to_string()
    } else {
        format!("{prior}, {peer}")
    };
    let keep = |h: &HeaderMap, name: &str| from_trusted.then(|| h.get(name).cloned()).flatten();
    let proto = keep(h, "x-forwarded-proto")
        .unwrap_or_else(|| HeaderValue::from_str(proto).expect("scheme"));
    let fhost = keep(h, "x-forwarded-host").or_else(|| HeaderValue::from_str(host).ok());
    h.insert(
        "x-forwarded-for",
        HeaderValue::from_str(&xff).expect("addresses are ASCII"),
    );
    h.insert("x-forwarded-proto", proto);
    match fhost {
        Some(v) => h.insert("x-forwarded-host", v),
        None => h.remove("x-forwarded-host"),
    };
    if route.strips() {
        let p = route.prefix.0.trim_end_matches('/');
        h.insert(
            "x-forwarded-prefix",
            HeaderValue::from_str(p).expect("prefix is a path"),
        );
    } else if !from_trusted {
        h.remove("x-forwarded-prefix");
    }
}

/// A Location the upstream sent, as the client must see it: absolute URLs pointing at the
/// upstream, or at the public host the app was asked through (apps build those from the
/// Host header the gateway passes on), become paths on the gateway; paths outside the
/// prefix move under it.
pub fn location(value: &str, route: &Route, public_host: &str) -> String {
    let up = format!("http://{}", route.upstream.authority);
    let up80 = up.strip_suffix(":80").map(str::to_string);
    let public = ["http", "https"].map(|s| format!("{s}://{public_host}"));
    let mut v = value.to_string();
    for base in std::iter::once(up).chain(up80).chain(public) {
        if let Some(rest) = value.strip_prefix(&base) {
            if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') {
                v = if rest.starts_with('/') {
                    rest.to_string()
                } else {
                    format!("/{rest}")
                };
                break;
            }
        }
    }
    if !v.starts_with('/') || v.starts_with("//") {
        return v;
    }
    let v = v
        .strip_prefix(route.upstream.path.as_str())
        .filter(|r| r.starts_with('/'))
        .map(str::to_string)
        .unwrap_or(v);
    under_prefix(&v, route)
}

fn under_prefix(path: &str, route: &Route) -> String {
    if !route.strips() || path.starts_with(&route.prefix.0) {
        return path.to_string();
    }
    format!("{}{}", route.prefix.0.trim_end_matches('/'), path)
}

/// A Set-Cookie with its Path attribute under the prefix (a cookie without one gets the
/// prefix, which is what the browser would have defaulted to had the app lived there).
pub fn set_cookie(value: &str, route: &Route) -> String {
    if !route.strips() {
        return value.to_string();
    }
    let mut parts: Vec<String> = value.split(';').map(|s| s.to_string()).collect();
    let mut found = false;
    for p in parts.iter_mut().skip(1) {
        let t = p.trim();
        // By bytes: the attribute may hold any UTF-8 (found by the router fuzz target).
        if t.as_bytes()
            .get(..5)
            .is_some_and(|b| b.eq_ignore_ascii_case(b"path="))
        {
            *p = format!(" Path={}", under_prefix(&t[5..], route));
            found = true;
        }
    }
    if !found {
        parts.push(format!(" Path={}", route.prefix.0));
    }
    parts.join(";")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn route(strip: bool) -> Route {
        let text = format!("[[route]]\nprefix = \"/ao/\"\nupstream = \"http://10.0.0.2:5002\"\nstrip-prefix = {strip}\n");
        parse("t", &text).unwrap().routes.remove(0)
    }

    #[test]
    fn locations_move_under_the_prefix() {
        let r = route(true);
        let h = "app.test";
        assert_eq!(location("/login?next=/", &r, h), "/ao/login?next=/");
        assert_eq!(location("http://10.0.0.2:5002/x", &r, h), "/ao/x");
        assert_eq!(location("https://app.test/done", &r, h), "/ao/done");
        assert_eq!(location("/ao/already", &r, h), "/ao/already");
        assert_eq!(
            location("https://elsewhere.test/", &r, h),
            "https://elsewhere.test/"
        );
        assert_eq!(location("//cdn.test/x", &r, h), "//cdn.test/x");
        assert_eq!(location("/login", &route(false), h), "/login");
    }

    #[test]
    fn cookie_paths_move_under_the_prefix() {
        let r = route(true);
        assert_eq!(
            set_cookie("sid=1; Path=/; HttpOnly", &r),
            "sid=1; Path=/ao/; HttpOnly"
        );
        assert_eq!(
            set_cookie("sid=1; HttpOnly", &r),
            "sid=1; HttpOnly; Path=/ao/"
        );
        assert_eq!(set_cookie("sid=1; path=/x", &r), "sid=1; Path=/ao/x");
        assert_eq!(
            set_cookie("a; éé", &r),
            "a; éé; Path=/ao/",
            "multi-byte text where `path=` would be"
        );
    }

    #[test]
    fn forwarded_headers_trust_only_trusted_proxies() {
        let trusted: Vec<Net> = vec!["10.0.0.1".parse().unwrap()];
        let r = route(true);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.test"));
        // From an untrusted peer, the spoofed values are replaced.
        let mut a = h.clone();
        set_forwarded(
            &mut a,
            "192.168.1.5".parse().unwrap(),
            &trusted,
            "https",
            "app.test",
            &r,
        );
        assert_eq!(a["x-forwarded-for"], "192.168.1.5");
        assert_eq!(a["x-forwarded-host"], "app.test");
        assert_eq!(a["x-forwarded-proto"], "https");
        assert_eq!(a["x-forwarded-prefix"], "/ao");
        assert_eq!(
            client_ip("192.168.1.5".parse().unwrap(), &h, &trusted).to_string(),
            "192.168.1.5"
        );
        // From the trusted proxy, the chain is extended and the client is the first hop.
        let mut b = h.clone();
        set_forwarded(
            &mut b,
            "10.0.0.1".parse().unwrap(),
            &trusted,
            "http",
            "app.test",
            &r,
        );
        assert_eq!(b["x-forwarded-for"], "6.6.6.6, 10.0.0.1");
        assert_eq!(b["x-forwarded-host"], "evil.test");
        assert_eq!(
            client_ip("10.0.0.1".parse().unwrap(), &h, &trusted).to_string(),
            "6.6.6.6"
        );
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("5"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h, None);
        assert_eq!(h.len(), 1);
        let mut h2 = HeaderMap::new();
        h2.insert("connection", HeaderValue::from_static("Upgrade"));
        strip_hop_by_hop(&mut h2, Some(HeaderValue::from_static("websocket")));
        assert_eq!(h2["upgrade"], "websocket");
    }
}
