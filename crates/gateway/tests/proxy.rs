//! The gateway against real peers: curl as the client, a Python application (Debian's
//! python3) as the upstream, python3-websockets on both ends of a WebSocket, htpasswd from
//! apache2-utils for the password file. Each test starts its own gateway on a free port.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

#[test]
fn routes_strip_prefixes_set_forwarded_headers_and_rewrite_redirects_and_cookies() {
    let (_up, http, _) = upstream();
    let dir = scratch("routing");
    let port = free_port();
    let cfg = config(
        &dir,
        &format!(
            "[[route]]\nhost = \"app.example.test\"\nupstream = \"http://127.0.0.1:{http}\"\n\n\
             [[route]]\nhost = \"app.example.test\"\nprefix = \"/ao/\"\nupstream = \"http://127.0.0.1:{http}\"\n"
        ),
    );
    let _gw = gateway(&cfg, port);

    let (s, _, body) = curl(
        port,
        "app.example.test",
        "/ao/items?x=1",
        &["-H", "X-Forwarded-For: 6.6.6.6"],
    );
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["path"], "/items?x=1", "prefix stripped");
    assert_eq!(v["headers"]["x-forwarded-prefix"], "/ao");
    assert_eq!(
        v["headers"]["x-forwarded-for"], "127.0.0.1",
        "a spoofed X-Forwarded-For from an untrusted client is replaced"
    );
    assert_eq!(v["headers"]["x-forwarded-proto"], "http");
    assert_eq!(v["headers"]["x-forwarded-host"], "app.example.test");

    // The node's own readiness check answers whatever host the routes serve.
    let (s, _, body) = curl(port, "127.0.0.1", "/.well-known/imgforge/health", &[]);
    assert_eq!((s, body.as_str()), (200, "ok\n"));

    let (s, head, _) = curl(port, "app.example.test", "/ao?y=2", &[]);
    assert_eq!(s, 301);
    assert!(head.contains("location: /ao/?y=2"), "{head}");
    let (s, head, _) = curl(port, "app.example.test", "/ao/redirect", &[]);
    assert_eq!(s, 302);
    assert!(head.contains("location: /ao/login?next=/"), "{head}");
    let (_, head, _) = curl(port, "app.example.test", "/ao/absolute-redirect", &[]);
    assert!(
        head.contains("location: /ao/done"),
        "an absolute URL to the upstream becomes a gateway path: {head}"
    );
    let (_, head, _) = curl(port, "app.example.test", "/ao/cookie", &[]);
    assert!(
        head.contains("set-cookie: sid=abc; path=/ao/; httponly"),
        "{head}"
    );
    let (s, _, body) = curl(port, "app.example.test", "/other", &[]);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((s, v["path"].as_str().unwrap()), (200, "/other"));
    assert!(v["headers"].get("x-forwarded-prefix").is_none());
    let (s, _, body) = curl(port, "unknown.example.test", "/", &[]);
    assert_eq!(s, 404, "{body}");
}

#[test]
fn upstream_failures_give_502_and_504_pages_naming_the_upstream() {
    let (_up, http, _) = upstream();
    let dir = scratch("failures");
    let port = free_port();
    let dead = free_port();
    let cfg = config(
        &dir,
        &format!(
            "[[route]]\nprefix = \"/down/\"\nupstream = \"http://127.0.0.1:{dead}\"\n\n\
             [[route]]\nprefix = \"/slow/\"\nupstream = \"http://127.0.0.1:{http}/slow\"\nread-timeout-secs = 1\n"
        ),
    );
    let _gw = gateway(&cfg, port);
    let (s, _, body) = curl(port, "x.test", "/down/", &[]);
    assert_eq!(s, 502);
    assert!(
        body.contains(&format!("127.0.0.1:{dead}")) && !body.contains("onnection refused"),
        "{body}"
    );
    let t = Instant::now();
    let (s, _, body) = curl(port, "x.test", "/slow/", &[]);
    assert_eq!(s, 504, "{body}");
    assert!(
        t.elapsed() < Duration::from_millis(2800),
        "the 1 s read timeout, not the upstream's 3 s"
    );
}

#[test]
fn lan_only_routes_keep_public_paths_and_basic_auth_uses_htpasswd() {
    let (_up, http, _) = upstream();
    let dir = scratch("access");
    let port = free_port();
    let pw = dir.join("htpasswd");
    let o = Command::new("htpasswd")
        .args(["-nbB", "laurent", "jupyter-pass"])
        .output()
        .expect("htpasswd (apache2-utils)");
    std::fs::write(&pw, &o.stdout).unwrap();
    let cfg = config(
        &dir,
        &format!(
            "[server]\nlan = [\"10.0.0.0/8\"]\n\n\
             [[route]]\nhost = \"prospect.test\"\nupstream = \"http://127.0.0.1:{http}\"\naccess = \"lan\"\npublic-paths = [\"/track/\", \"/api/public/\"]\n\n\
             [[route]]\nhost = \"jupyter.test\"\nupstream = \"http://127.0.0.1:{http}\"\nauth = {{ kind = \"basic\", htpasswd = \"{}\", realm = \"JupyterLab\" }}\n",
            pw.display()
        ),
    );
    let _gw = gateway(&cfg, port);
    // 127.0.0.1 is outside this site's LAN.
    assert_eq!(curl(port, "prospect.test", "/admin/", &[]).0, 403);
    assert_eq!(curl(port, "prospect.test", "/track/abc", &[]).0, 200);
    assert_eq!(curl(port, "prospect.test", "/api/public/x", &[]).0, 200);
    let (s, head, _) = curl(port, "jupyter.test", "/lab", &[]);
    assert_eq!(s, 401);
    assert!(
        head.contains("www-authenticate: basic realm=\"jupyterlab\""),
        "{head}"
    );
    assert_eq!(
        curl(port, "jupyter.test", "/lab", &["-u", "laurent:wrong"]).0,
        401
    );
    assert_eq!(
        curl(
            port,
            "jupyter.test",
            "/lab",
            &["-u", "laurent:jupyter-pass"]
        )
        .0,
        200
    );
}

#[test]
fn forward_auth_lets_2xx_through_and_returns_the_rest() {
    let (_up, http, _) = upstream();
    let dir = scratch("forward");
    let port = free_port();
    let cfg = config(
        &dir,
        &format!("[[route]]\nupstream = \"http://127.0.0.1:{http}\"\nauth = {{ kind = \"forward\", url = \"http://127.0.0.1:{http}/auth\" }}\n"),
    );
    let _gw = gateway(&cfg, port);
    assert_eq!(curl(port, "x.test", "/page", &[]).0, 401);
    let (s, _, body) = curl(port, "x.test", "/page", &["-H", "X-Token: let-me-in"]);
    assert_eq!(s, 200);
    assert!(body.contains("\"path\": \"/page\""), "{body}");
}

#[test]
fn websockets_pass_both_ways_and_survive_a_reload() {
    let (_up, _, ws) = upstream();
    let dir = scratch("ws");
    let port = free_port();
    let route =
        format!("[[route]]\nprefix = \"/kernels/\"\nupstream = \"http://127.0.0.1:{ws}\"\n");
    let cfg = config(&dir, &route);
    let gw = gateway(&cfg, port);
    let url = format!("ws://127.0.0.1:{port}/kernels/");
    let o = Command::new("/usr/bin/python3")
        .arg(peers().join("ws_client.py"))
        .args([&url, "hello", "again"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello\nagain\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A connection open across a SIGHUP reload keeps working; the new route answers after it.
    let client = Command::new("/usr/bin/python3")
        .arg(peers().join("ws_client.py"))
        .args(["--hold", "2", &url, "before", "after"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    std::fs::write(
        &cfg,
        format!(
            "{route}\n[[route]]\nprefix = \"/new/\"\nupstream = \"http://127.0.0.1:{}\"\n",
            free_port()
        ),
    )
    .unwrap();
    let st = Command::new("kill")
        .args(["-HUP", &gw.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = client.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "before\nafter\n");
    assert_eq!(
        curl(port, "x.test", "/new/", &[]).0,
        502,
        "the reloaded route exists (its upstream is down)"
    );
}

#[test]
fn check_names_the_line_and_key_and_a_bad_reload_keeps_the_running_config() {
    let dir = scratch("check");
    let cfg = config(&dir, "[[route]]\nprefix = \"/a/\"\nupstream = \"http://127.0.0.1:9\"\n\n[[route]]\nprefix = \"/b\"\nupstream = \"http://127.0.0.1:9\"\n");
    let o = Command::new(gateway_bin())
        .args(["check", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains(&format!(
            "{}:6:10: key `route[1].prefix`: prefix `/b` must start and end with `/`",
            cfg.display()
        )),
        "{err}"
    );

    // A file a key names that cannot be read: the key, its line, and the file.
    let missing = dir.join("no-such-htpasswd");
    std::fs::write(
        &cfg,
        format!(
            "[[route]]\nupstream = \"http://127.0.0.1:9\"\n\
             auth = {{ kind = \"basic\", htpasswd = \"{}\" }}\n",
            missing.display()
        ),
    )
    .unwrap();
    let o = Command::new(gateway_bin())
        .args(["check", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{}:3:37: key `route[0].auth.htpasswd`: {}: No such file or directory",
            cfg.display(),
            missing.display()
        )),
        "{err}"
    );
    // `public-paths = ["/"]` would open a LAN-only route to everyone.
    std::fs::write(
        &cfg,
        "[[route]]\nupstream = \"http://127.0.0.1:9\"\naccess = \"lan\"\npublic-paths = [\"/\"]\n",
    )
    .unwrap();
    let o = Command::new(gateway_bin())
        .args(["check", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{}:4:17: key `route[0].public-paths[0]`: public path `/` covers the whole route",
            cfg.display()
        )),
        "{err}"
    );

    std::fs::write(
        &cfg,
        "[[route]]\nprefix = \"/a/\"\nupstream = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let o = Command::new(gateway_bin())
        .args(["check", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let port = free_port();
    let gw = gateway(&cfg, port);
    std::fs::write(&cfg, "[[route]]\nprefx = \"/a/\"\n").unwrap();
    Command::new("kill")
        .args(["-HUP", &gw.0.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        curl(port, "x.test", "/a/", &[]).0,
        502,
        "still the old route"
    );
}

#[test]
fn a_route_failing_its_health_check_is_answered_502_at_once() {
    let (_up, http, _) = upstream();
    let dir = scratch("health");
    let port = free_port();
    let cfg = config(
        &dir,
        &format!(
            "[server]\nhealth-interval-secs = 1\n\n\
             [[route]]\nprefix = \"/good/\"\nupstream = \"http://127.0.0.1:{http}\"\nhealth = \"/\"\n\n\
             [[route]]\nprefix = \"/sick/\"\nupstream = \"http://127.0.0.1:{http}\"\nhealth = \"/status500\"\n"
        ),
    );
    let _gw = gateway(&cfg, port);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(curl(port, "x.test", "/good/x", &[]).0, 200);
    // The upstream itself would answer /x; its failing health check keeps clients away.
    let (s, _, body) = curl(port, "x.test", "/sick/x", &[]);
    assert_eq!(s, 502);
    assert!(body.contains(&format!("127.0.0.1:{http}")), "{body}");
}
