//! HTTP/2 over TLS (issue 13): curl --http2 negotiates h2 by ALPN, and routing, path
//! normalisation, LAN-only access and Basic auth decide exactly as over HTTP/1.1, `..` and
//! encoded-slash attacks included (curl --path-as-is sends the :path as written). Failed on
//! the gateway before this work (ALPN offered http/1.1 only).

use std::path::Path;
use std::process::Command;

mod common;
use common::*;

fn cert(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("x.pem"), dir.join("x.key"));
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "30", "-subj", "/CN=prospect.test"])
        .args(["-addext", "subjectAltName=DNS:prospect.test,DNS:auth.test"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (cert, key)
}

/// curl over TLS: (HTTP version curl used, status, body).
fn h(tls: u16, host: &str, path: &str, extra: &[&str]) -> (String, u16, String) {
    let o = Command::new("curl")
        .args(["-sk", "--path-as-is", "--max-time", "20"])
        .args(["-w", "\n%{http_version} %{http_code}"])
        .args(["--resolve", &format!("{host}:{tls}:127.0.0.1")])
        .args(extra)
        .arg(format!("https://{host}:{tls}{path}"))
        .output()
        .expect("curl");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, tail) = out.rsplit_once('\n').unwrap_or(("", &out));
    let (version, code) = tail.split_once(' ').unwrap_or(("?", "0"));
    (
        version.to_string(),
        code.parse().unwrap_or(0),
        body.to_string(),
    )
}

fn upstream_path(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["path"].as_str().map(str::to_string)
}

#[test]
fn http2_is_negotiated_and_routes_access_auth_and_normalisation_apply_the_same() {
    let (_up, http, _) = upstream();
    let dir = scratch("http2");
    let (port, tls) = (free_port(), free_port());
    let (c, k) = cert(&dir);
    let pw = dir.join("htpasswd");
    let o = Command::new("htpasswd")
        .args(["-nbB", "laurent", "admin-pass"])
        .output()
        .expect("htpasswd (apache2-utils)");
    std::fs::write(&pw, &o.stdout).unwrap();
    let cfg = config(
        &dir,
        &format!(
            "[server]\nhttps = \"127.0.0.1:{tls}\"\nlan = [\"10.0.0.0/8\"]\n\n\
             [[tls.certs]]\ncert = \"{}\"\nkey = \"{}\"\n\n\
             [[route]]\nhost = \"prospect.test\"\nupstream = \"http://127.0.0.1:{http}\"\n\
             access = \"lan\"\npublic-paths = [\"/files/track/\"]\n\n\
             [[route]]\nhost = \"auth.test\"\nupstream = \"http://127.0.0.1:{http}\"\n\n\
             [[route]]\nhost = \"auth.test\"\nprefix = \"/admin/\"\nstrip-prefix = false\n\
             upstream = \"http://127.0.0.1:{http}\"\n\
             auth = {{ kind = \"basic\", htpasswd = \"{}\" }}\n",
            c.display(),
            k.display(),
            pw.display()
        ),
    );
    let _gw = gateway(&cfg, port);
    let h2 = ["--http2"];

    // Negotiated, routed, normalised: the upstream gets the normalised path.
    let (v, s, body) = h(tls, "prospect.test", "/files/track/a%2dz//b", &h2);
    assert_eq!(v, "2", "ALPN h2: {body}");
    assert_eq!(s, 200, "{body}");
    assert_eq!(upstream_path(&body).as_deref(), Some("/files/track/a-z/b"));
    // HTTP/1.1 over the same listener still works.
    let (v, s, _) = h(tls, "prospect.test", "/files/track/x", &["--http1.1"]);
    assert_eq!((v.as_str(), s), ("1.1", 200));

    // LAN-only: 127.0.0.1 is outside the LAN; the climbs are refused as over HTTP/1.1.
    for attack in [
        "/files/admin/secret.txt",
        "/files/track/../admin/secret.txt",
        "/files/track/%2e%2e/admin/secret.txt",
        "/files/track/./../admin/secret.txt",
    ] {
        let (v, s, body) = h(tls, "prospect.test", attack, &h2);
        assert_eq!(v, "2");
        assert_eq!(s, 403, "{attack}: {body}");
        assert_eq!(upstream_path(&body), None, "{attack} reached the upstream");
    }
    for attack in [
        "/files/track/..%2fadmin/secret.txt",
        "/files/track/../../../etc/passwd",
    ] {
        let (_, s, body) = h(tls, "prospect.test", attack, &h2);
        assert_eq!(s, 400, "{attack}: {body}");
    }

    // Basic auth on /admin/, whatever the spelling; with the password, the normalised path.
    for attack in [
        "/admin/secret.txt",
        "//admin/secret.txt",
        "/x/../admin/secret.txt",
        "/%61dmin/secret.txt",
    ] {
        let (v, s, body) = h(tls, "auth.test", attack, &h2);
        assert_eq!(v, "2");
        assert_eq!(s, 401, "{attack}: {body}");
        let (_, s, body) = h(
            tls,
            "auth.test",
            attack,
            &["--http2", "-u", "laurent:admin-pass"],
        );
        assert_eq!(s, 200, "{attack}: {body}");
        assert_eq!(
            upstream_path(&body).as_deref(),
            Some("/admin/secret.txt"),
            "{attack}"
        );
    }
    let (_, s, _) = h(tls, "auth.test", "/open", &h2);
    assert_eq!(s, 200);
}
