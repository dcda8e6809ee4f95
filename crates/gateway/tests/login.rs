//! The login page with password and TOTP: curl with a code from oathtool (an independent
//! RFC 6238 implementation), and a real browser (Debian's chromium, headless, driven by
//! Selenium) signing in the way a person does.

use std::path::Path;
use std::process::Command;

mod common;
use common::*;

const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

fn oathtool() -> String {
    let o = Command::new("oathtool")
        .args(["--totp", "-b", SECRET])
        .output()
        .expect("oathtool");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A gateway with one login-protected route under /app/: (gateway, upstream, port).
fn setup(dir: &Path) -> (Proc, Proc, u16) {
    let (up, http, _) = upstream();
    let hash = Command::new("htpasswd")
        .args(["-nbB", "anne", "correct horse"])
        .output()
        .unwrap();
    let hash = String::from_utf8_lossy(&hash.stdout)
        .trim()
        .split_once(':')
        .unwrap()
        .1
        .to_string();
    std::fs::write(dir.join("users"), format!("anne:{hash}:{SECRET}\n")).unwrap();
    std::fs::write(dir.join("session-key"), [42u8; 32]).unwrap();
    let port = free_port();
    let cfg = config(
        dir,
        &format!(
            "[login]\nusers = \"{}\"\nsession-key = \"{}\"\nstate-dir = \"{}\"\n\
             max-failures-per-minute = 3\n\n\
             [[route]]\nprefix = \"/app/\"\nupstream = \"http://127.0.0.1:{http}\"\nauth = {{ kind = \"login\" }}\n",
            dir.join("users").display(),
            dir.join("session-key").display(),
            dir.join("state").display()
        ),
    );
    (gateway(&cfg, port), up, port)
}

#[test]
fn a_totp_code_from_oathtool_signs_in_and_failures_are_limited() {
    let dir = scratch("login-curl");
    let (_gw, _up, port) = setup(&dir);
    let (s, head, _) = curl(port, "app.test", "/app/page?x=1", &[]);
    assert_eq!(s, 302);
    assert!(
        head.contains("location: /.gateway/login?next=%2fapp%2fpage%3fx%3d1"),
        "{head}"
    );
    let (s, _, body) = curl(port, "app.test", "/.gateway/login?next=/app/", &[]);
    assert!(s == 200 && body.contains("name=\"code\""), "{body}");

    let jar = dir.join("cookies");
    let post = |user: &str, pw: &str, code: &str| {
        curl(
            port,
            "app.test",
            "/.gateway/login",
            &[
                "-c",
                jar.to_str().unwrap(),
                "--data-urlencode",
                &format!("user={user}"),
                "--data-urlencode",
                &format!("password={pw}"),
                "--data-urlencode",
                &format!("code={code}"),
                "--data-urlencode",
                "next=/app/page",
            ],
        )
    };
    let code = oathtool();
    let (s, head, _) = post("anne", "correct horse", &code);
    assert_eq!(s, 303, "{head}");
    assert!(head.contains("location: /app/page"), "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a session cookie")
        .to_string();
    assert!(
        cookie.contains("httponly") && cookie.contains("samesite=lax"),
        "{cookie}"
    );
    // The value as sent (the helper lower-cases headers), from curl's cookie jar.
    let jar_text = std::fs::read_to_string(&jar).unwrap();
    let value = jar_text
        .lines()
        .find_map(|l| {
            l.split('\t')
                .collect::<Vec<_>>()
                .get(5..7)
                .filter(|f| f[0] == "gateway_session")
                .map(|f| format!("{}={}", f[0], f[1]))
        })
        .expect("cookie in the jar");
    let (s, _, body) = curl(
        port,
        "app.test",
        "/app/page",
        &["-H", &format!("Cookie: other=1; {value}")],
    );
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["headers"]["cookie"], "other=1",
        "the app does not see the gateway's session cookie"
    );
    // A forged or altered session is refused.
    let forged = format!("{}x", value);
    assert_eq!(
        curl(
            port,
            "app.test",
            "/app/page",
            &["-H", &format!("Cookie: {forged}")]
        )
        .0,
        302
    );

    // The same code twice is refused (replay); then 3 failures in a minute lock the address.
    assert_eq!(post("anne", "correct horse", &code).0, 401);
    assert_eq!(post("anne", "wrong", "123456").0, 401);
    assert_eq!(post("anne", "wrong", "123456").0, 401);
    assert_eq!(post("anne", "correct horse", &oathtool()).0, 429);
}

#[test]
fn a_person_signs_in_with_chromium() {
    let dir = scratch("login-browser");
    let (_gw, _up, port) = setup(&dir);
    let o = Command::new("/usr/bin/python3")
        .arg(peers().join("browser_login.py"))
        .args([
            &port.to_string(),
            "app.example.test",
            "/app/",
            "anne",
            "correct horse",
            SECRET,
        ])
        .output()
        .expect("python3");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("error shown: Wrong user name, password or code."),
        "{out}"
    );
    assert!(
        out.contains(&format!("landed on: http://app.example.test:{port}/app/")),
        "{out}"
    );
    assert!(
        out.contains("\"path\": \"/\""),
        "the app's page, its prefix stripped: {out}"
    );
    assert!(out.contains("session cookie httpOnly: True"), "{out}");
}

#[test]
fn next_forms_that_leave_the_site_go_to_the_root_even_in_chromium() {
    let dir = scratch("login-next");
    let (_gw, _up, port) = setup(&dir);
    // The login form carries `next` as a hidden field: only a path on this site survives.
    for (query, kept) in [
        ("/app/x%3Fy%3D1", "/app/x?y=1"),
        ("/%09/evil.test/", "/"),
        ("//evil.test/", "/"),
        ("/%5Cevil.test/", "/"),
        ("https://evil.test/", "/"),
        ("/%0d%0aSet-Cookie:%20a=b", "/"),
        ("/%20/evil.test/", "/"),
    ] {
        let (s, _, body) = curl(
            port,
            "app.test",
            &format!("/.gateway/login?next={query}"),
            &[],
        );
        assert_eq!(s, 200, "{query}: {body}");
        assert!(
            body.contains(&format!("name=\"next\" value=\"{kept}\"")),
            "{query}: {body}"
        );
    }
    // A browser signing in with the tab form (issue 13's open redirect) stays on the site.
    let o = Command::new("/usr/bin/python3")
        .arg(peers().join("browser_next.py"))
        .args([
            &port.to_string(),
            "app.example.test",
            "/%09/evil.test/",
            "anne",
            "correct horse",
            SECRET,
        ])
        .output()
        .expect("python3");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains(&format!("landed on: http://app.example.test:{port}/\n")),
        "{out}"
    );
}
