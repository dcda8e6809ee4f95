//! HTTPS: certificates from files (made by openssl) and from Pebble, Let's Encrypt's test
//! ACME server (Debian package `pebble`), over HTTP-01 against the gateway's own listener.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// A self-signed certificate for `san` (openssl), not a CA (webpki refuses a CA certificate
/// as a server's): (cert path, key path).
fn openssl_cert(
    dir: &Path,
    stem: &str,
    cn: &str,
    san: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
        ])
        .arg(format!("/CN={cn}"))
        .args([
            "-addext",
            &format!("subjectAltName={san}"),
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (cert, key)
}

/// curl over HTTPS to `name` at 127.0.0.1:`port`, trusting `ca`: (status, body).
fn curl_tls(port: u16, name: &str, path: &str, ca: &Path) -> (u16, String) {
    let o = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}", "--cacert"])
        .arg(ca)
        .args([
            "--resolve",
            &format!("{name}:{port}:127.0.0.1"),
            &format!("https://{name}:{port}{path}"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn certificates_from_files_are_picked_by_name_and_http_redirects_to_https_where_one_is_held() {
    let (_up, http, _) = upstream();
    let dir = scratch("tls-files");
    let (a_cert, a_key) = openssl_cert(&dir, "a", "a.example.test", "DNS:a.example.test");
    let (b_cert, b_key) = openssl_cert(&dir, "b", "b.example.test", "DNS:b.example.test");
    let (port, tls_port) = (free_port(), free_port());
    let cfg = config(
        &dir,
        &format!(
            "[server]\nhttps = \"127.0.0.1:{tls_port}\"\n\n[tls]\ncerts = [{{ cert = \"{}\", key = \"{}\" }}, {{ cert = \"{}\", key = \"{}\" }}]\n\n\
             [[route]]\nupstream = \"http://127.0.0.1:{http}\"\n",
            a_cert.display(), a_key.display(), b_cert.display(), b_key.display()
        ),
    );
    let _gw = gateway(&cfg, port);
    let (s, body) = curl_tls(tls_port, "a.example.test", "/x", &a_cert);
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    assert_eq!(
        curl_tls(tls_port, "b.example.test", "/x", &b_cert).0,
        200,
        "the second name gets its own certificate"
    );
    assert_eq!(
        curl_tls(tls_port, "b.example.test", "/x", &a_cert).0,
        0,
        "and not the first's"
    );
    let (s, head, _) = curl(port, "a.example.test", "/page?q=1", &[]);
    assert_eq!(s, 301);
    assert!(
        head.contains(&format!(
            "location: https://a.example.test:{tls_port}/page?q=1"
        )),
        "{head}"
    );
    // A name no certificate covers (yet) is served over plain HTTP, not sent to a
    // handshake that would fail.
    let (s, _, body) = curl(port, "c.example.test", "/page", &[]);
    assert_eq!(s, 200, "{body}");
}

#[test]
fn pebble_issues_a_certificate_over_http01_that_the_gateway_then_serves() {
    let (_up, http, _) = upstream();
    let dir = scratch("tls-acme");
    let (port, tls_port, acme_port, mgmt_port, dns_port, cts_mgmt) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    // Pebble's own HTTPS certificate, which the gateway is told to trust for the ACME API.
    let (pebble_cert, pebble_key) =
        openssl_cert(&dir, "pebble", "localhost", "DNS:localhost,IP:127.0.0.1");
    // Every name resolves to 127.0.0.1 through pebble-challtestsrv's DNS.
    let _dns = Proc(
        Command::new("pebble-challtestsrv")
            .args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
            ])
            .args([
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{cts_mgmt}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (package pebble)"),
    );
    let pcfg = dir.join("pebble.json");
    std::fs::write(
        &pcfg,
        format!(
            r#"{{"pebble": {{"listenAddress": "127.0.0.1:{acme_port}", "managementListenAddress": "127.0.0.1:{mgmt_port}",
              "certificate": "{}", "privateKey": "{}", "httpPort": {port}, "tlsPort": {tls_port},
              "ocspResponderURL": "", "externalAccountBindingRequired": false}}}}"#,
            pebble_cert.display(),
            pebble_key.display()
        ),
    )
    .unwrap();
    let _pebble = Proc(
        Command::new("pebble")
            .arg("-config")
            .arg(&pcfg)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            // No random validation delays and no rejected nonces: the test measures the
            // gateway, not Pebble's chaos settings.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", acme_port)).is_err() {
        assert!(Instant::now() < deadline, "pebble did not start");
        std::thread::sleep(Duration::from_millis(100));
    }

    let state = dir.join("acme");
    let cfg = config(
        &dir,
        &format!(
            "[server]\nhttps = \"127.0.0.1:{tls_port}\"\n\n[tls.acme]\ndirectory = \"https://127.0.0.1:{acme_port}/dir\"\nemail = \"admin@example.test\"\n\
             state-dir = \"{}\"\nca-file = \"{}\"\n\n[[route]]\nhost = \"app.example.test\"\nupstream = \"http://127.0.0.1:{http}\"\n",
            state.display(),
            pebble_cert.display()
        ),
    );
    let _gw = gateway(&cfg, port);

    // Pebble's issuing root, from its management API.
    let root = dir.join("root.pem");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = Command::new("curl")
            .args(["-s", "--cacert"])
            .arg(&pebble_cert)
            .arg(format!("https://127.0.0.1:{mgmt_port}/roots/0"))
            .output()
            .unwrap();
        if o.status.success() && o.stdout.starts_with(b"-----BEGIN") {
            std::fs::write(&root, &o.stdout).unwrap();
            let (s, body) = curl_tls(tls_port, "app.example.test", "/hello", &root);
            if s == 200 {
                assert!(body.contains("\"path\": \"/hello\""), "{body}");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no certificate from Pebble within 60 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Kept on disk (the key private) for the next start.
    assert!(state.join("cert.pem").exists() && state.join("account.json").exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(state.join("key.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

/// Each worker listens on its own SO_REUSEPORT socket; a plain bind checked first keeps
/// what a plain bind gave: a second gateway on the port in use, or `https` on the `http`
/// address, fails to start naming the address, instead of taking a share of the
/// connections (which the reuse-port group alone would have allowed).
#[test]
fn a_second_gateway_on_the_same_port_or_https_on_the_http_address_fails_to_start() {
    let dir = scratch("bind-twice");
    let port = free_port();
    let cfg = config(&dir, "[[route]]\nupstream = \"http://127.0.0.1:9\"\n");
    let _first = gateway(&cfg, port);
    let mut serve = Command::new(gateway_bin());
    serve
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--threads", "2"]);
    let second = exits_within_5_s(&mut serve);
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("binding 127.0.0.1:{port}")), "{err}");
    assert!(err.contains("in use"), "{err}");

    let other = free_port();
    let (cert, key) = openssl_cert(&dir, "bind", "bind.test", "DNS:bind.test");
    let same = config(
        &dir,
        &format!(
            "[server]\nhttp = \"127.0.0.1:{other}\"\nhttps = \"127.0.0.1:{other}\"\n\
             [tls]\ncerts = [{{ cert = \"{}\", key = \"{}\" }}]\n\n\
             [[route]]\nupstream = \"http://127.0.0.1:9\"\n",
            cert.display(),
            key.display()
        ),
    );
    let o = exits_within_5_s(Command::new(gateway_bin()).args([
        "serve",
        "--config",
        same.to_str().unwrap(),
        "--threads",
        "2",
    ]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{other}")), "{err}");
}

/// Runs `cmd` to its end; one still running after 5 s (a gateway that started) is killed
/// and fails the test.
fn exits_within_5_s(cmd: &mut Command) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let o = child.wait_with_output().unwrap();
            panic!(
                "it started and served instead of failing:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}
