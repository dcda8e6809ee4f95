//! Any host and path through the route matcher and the rewrites: no panic, and a matched
//! route's prefix is a prefix of the path; the upstream path keeps the upstream's base.
#![no_main]
use libfuzzer_sys::fuzz_target;

use gateway::{config, rewrite, router};

const ROUTES: &str = r#"
[[route]]
host = "app.example.test"
upstream = "http://10.0.0.1:8000"
[[route]]
host = "app.example.test"
prefix = "/chat/"
upstream = "http://10.0.0.2:5000/base"
[[route]]
prefix = "/ao/"
upstream = "http://10.0.0.3:5002"
[[route]]
host = "*"
prefix = "/a/b/"
upstream = "http://10.0.0.4"
"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (host, rest) = text.split_once('\n').unwrap_or(("app.example.test", text));
    let path = if rest.starts_with('/') { rest.to_string() } else { format!("/{rest}") };
    let routes = config::parse("routes", ROUTES).expect("valid").routes;
    let host = router::host_of(host);
    match router::find(&routes, &host, &path) {
        router::Match::Route(i) => {
            let r = &routes[i];
            assert!(path.starts_with(&r.prefix.0));
            let up = router::upstream_path(r, &path);
            assert!(up.starts_with(&r.upstream.path) && up[r.upstream.path.len()..].starts_with('/'), "{up}");
            let _ = rewrite::location(&path, r, &host);
            let _ = rewrite::set_cookie(&path, r);
        }
        router::Match::AddSlash(to) => assert_eq!(to, format!("{path}/")),
        router::Match::None => {}
    }
});
