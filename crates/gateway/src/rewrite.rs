//! Headers on the way through: X-Forwarded-* set (incoming ones believed only from trusted
//! proxies), hop-by-hop headers dropped, and for prefixed apps the upstream's Location and
//! Set-Cookie paths moved under the prefix, so an app that knows nothing of its prefix still
//! redirects and scopes its cookies right.

use std::net::IpAddr;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::{Net, Route};

/// Connection-level headers (RFC 9110 section 7.6.1) never forwarded. Parsed names, made
/// once: parsing them on every request (twice: request and response) was 2.7% of the
/// gateway's time under bench/gateway.sh.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// Removes hop-by-hop headers, and those the Connection header names. With `upgrade`, the
/// WebSocket handshake's `Connection: upgrade` and `Upgrade` are put back.
pub fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: Option<HeaderValue>) {
    // Most requests name nothing in Connection (HTTP/1.1 keeps alive by default, h2 has no
    // such header): no list is built for them.
    if h.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // Removed below anyway, and what most upstreams send: not parsed again.
            .filter(|s| !s.eq_ignore_ascii_case("keep-alive"))
            // from_bytes lower-cases the name.
            .filter_map(|s| HeaderName::from_bytes(s.as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    // One pass over the few headers present finds which are hop-by-hop (most requests have
    // none, most responses only Connection): nine removals cost a hash lookup each.
    let mut present = 0u16;
    for k in h.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|n| n == k) {
            present |= 1 << i;
        }
    }
    for (i, n) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(n);
        }
    }
    if let Some(u) = upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, u);
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
    proto: &'static str,
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
    h.insert(X_REAL_IP.clone(), ip_value(real));
    let prior = if from_trusted {
        h.get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        String::new()
    };
    let xff = if prior.is_empty() {
        ip_value(peer)
    } else {
        HeaderValue::from_str(&format!("{prior}, {peer}")).expect("addresses are ASCII")
    };
    let keep =
        |h: &HeaderMap, name: &HeaderName| from_trusted.then(|| h.get(name).cloned()).flatten();
    let proto = keep(h, &X_FORWARDED_PROTO).unwrap_or(HeaderValue::from_static(proto));
    let fhost = keep(h, &X_FORWARDED_HOST).or_else(|| HeaderValue::from_str(host).ok());
    h.insert(X_FORWARDED_FOR.clone(), xff);
    h.insert(X_FORWARDED_PROTO.clone(), proto);
    match fhost {
        Some(v) => h.insert(X_FORWARDED_HOST.clone(), v),
        None => h.remove(&X_FORWARDED_HOST),
    };
    if route.strips() {
        let p = route.prefix.0.trim_end_matches('/');
        h.insert(
            X_FORWARDED_PREFIX.clone(),
            HeaderValue::from_str(p).expect("prefix is a path"),
        );
    } else if !from_trusted {
        h.remove(&X_FORWARDED_PREFIX);
    }
}

/// An address as a header value. IPv4 is written by hand: through `fmt` it cost 1,500
/// instructions a call (callgrind), twice a request.
fn ip_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).expect("addresses are ASCII");
    };
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (i, o) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if o >= 100 {
            buf[n] = b'0' + o / 100;
            n += 1;
        }
        if o >= 10 {
            buf[n] = b'0' + o / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + o % 10;
        n += 1;
    }
    HeaderValue::from_bytes(&buf[..n]).expect("digits and dots")
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

    #[test]
    fn ip_values_match_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "192.168.9.99",
            "::1",
            "2001:db8::7",
        ] {
            let a: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_value(a).to_str().unwrap(), ip);
        }
    }
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
