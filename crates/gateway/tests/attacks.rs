//! The gateway attacked as issue 13 found it could be: the real binary on a free port, the
//! Python upstream behind it, and a raw TCP client (std::net) that sends paths and headers
//! exactly as written, where curl would normalise them. Each test failed on the gateway
//! before the fix it comes with.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// Sends `head` (a request without its final blank line; `Connection: close` is added) and
/// reads the whole answer: (status, headers in lower case, body).
fn raw(port: u16, head: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // A refusing server may answer and close before reading: the answer is what counts.
    let _ = write!(s, "{head}Connection: close\r\n\r\n");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    split_response(&out)
}

fn get(port: u16, host: &str, target: &str, headers: &str) -> (u16, String, String) {
    raw(
        port,
        &format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{headers}"),
    )
}

/// The path the upstream echoed, or None when the answer did not come from it.
fn upstream_path(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["path"].as_str().map(str::to_string)
}

fn htpasswd(dir: &Path, user: &str, pass: &str) -> std::path::PathBuf {
    let pw = dir.join("htpasswd");
    let o = Command::new("htpasswd")
        .args(["-nbB", user, pass])
        .output()
        .expect("htpasswd (apache2-utils)");
    std::fs::write(&pw, &o.stdout).unwrap();
    pw
}

#[test]
fn path_spellings_do_not_reach_a_lan_only_route_from_outside() {
    let (_up, http, _) = upstream();
    let dir = scratch("attack-lan");
    let port = free_port();
    let cfg = config(
        &dir,
        &format!(
            "[server]\nlan = [\"10.0.0.0/8\"]\n\n\
             [[route]]\nhost = \"prospect.test\"\nupstream = \"http://127.0.0.1:{http}\"\n\
             access = \"lan\"\npublic-paths = [\"/files/track/\"]\n"
        ),
    );
    let _gw = gateway(&cfg, port);
    // 127.0.0.1 is outside this site's LAN: only /files/track/ is open to it.
    assert_eq!(
        get(port, "prospect.test", "/files/admin/secret.txt", "").0,
        403
    );
    for attack in [
        "/files/track/../admin/secret.txt",
        "/files/track/%2e%2e/admin/secret.txt",
        "/files/track/%2E%2E/admin/secret.txt",
        "/files/track/./../admin/secret.txt",
    ] {
        let (s, _, body) = get(port, "prospect.test", attack, "");
        assert_eq!(s, 403, "{attack}: {body}");
        assert_eq!(upstream_path(&body), None, "{attack} reached the upstream");
    }
    let (s, _, body) = get(port, "prospect.test", "/files/track/a%2dz//b", "");
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        upstream_path(&body).as_deref(),
        Some("/files/track/a-z/b"),
        "the upstream receives the normalised path"
    );
    for (attack, why) in [
        ("/files/track/..%2fadmin/secret.txt", "encoded `/`"),
        ("/files/track/..%2Fadmin/secret.txt", "encoded `/`"),
        ("/files/track/..%5cadmin/secret.txt", "encoded `/`, `\\`"),
        ("/files/track/../../../etc/passwd", "climbs above the root"),
        ("/files/track/%zz", "`%` not followed by two hex digits"),
    ] {
        let (s, _, body) = get(port, "prospect.test", attack, "");
        assert_eq!(s, 400, "{attack}: {body}");
        assert!(body.contains(why), "{attack}: {body}");
    }
}

#[test]
fn path_spellings_do_not_get_past_basic_auth() {
    let (_up, http, _) = upstream();
    let dir = scratch("attack-auth");
    let port = free_port();
    let pw = htpasswd(&dir, "laurent", "admin-pass");
    let cfg = config(
        &dir,
        &format!(
            "[[route]]\nhost = \"auth.test\"\nupstream = \"http://127.0.0.1:{http}\"\n\n\
             [[route]]\nhost = \"auth.test\"\nprefix = \"/admin/\"\nstrip-prefix = false\n\
             upstream = \"http://127.0.0.1:{http}\"\n\
             auth = {{ kind = \"basic\", htpasswd = \"{}\" }}\n",
            pw.display()
        ),
    );
    let _gw = gateway(&cfg, port);
    let creds = "Authorization: Basic bGF1cmVudDphZG1pbi1wYXNz\r\n"; // laurent:admin-pass
    assert_eq!(get(port, "auth.test", "/admin/secret.txt", "").0, 401);
    assert_eq!(get(port, "auth.test", "/open", "").0, 200);
    for attack in [
        "//admin/secret.txt",
        "/./admin/secret.txt",
        "/x/../admin/secret.txt",
        "/%61dmin/secret.txt",
        "/%61%64%6d%69%6e/secret.txt",
        "///admin//secret.txt",
    ] {
        let (s, head, body) = get(port, "auth.test", attack, "");
        assert_eq!(s, 401, "{attack}: {body}");
        assert!(head.contains("www-authenticate: basic"), "{attack}: {head}");
        // With the password, the same spelling reaches the upstream as the normalised path.
        let (s, _, body) = get(port, "auth.test", attack, creds);
        assert_eq!(s, 200, "{attack}: {body}");
        assert_eq!(
            upstream_path(&body).as_deref(),
            Some("/admin/secret.txt"),
            "{attack}"
        );
    }
    let (s, _, body) = get(port, "auth.test", "/admin%2fsecret.txt", "");
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("encoded `/`"), "{body}");
}

#[test]
fn forward_auth_and_the_upstream_see_the_gateways_own_forwarded_headers() {
    let (_up, http, _) = upstream();
    let dir = scratch("attack-forward");
    let port = free_port();
    let cfg = config(
        &dir,
        &format!(
            "[[route]]\nupstream = \"http://127.0.0.1:{http}\"\n\
             auth = {{ kind = \"forward\", url = \"http://127.0.0.1:{http}/judge-uri\" }}\n"
        ),
    );
    let _gw = gateway(&cfg, port);
    let spoof = "X-Forwarded-Uri: /public/x\r\nX-Forwarded-Host: evil.test\r\n\
                 X-Forwarded-Proto: https\r\nX-Forwarded-For: 6.6.6.6\r\n\
                 X-Forwarded-Method: POST\r\nX-Forwarded-Prefix: /public\r\n\
                 Forwarded: for=6.6.6.6;proto=https\r\nX-Real-IP: 6.6.6.6\r\n";
    // The auth service lets /public/ through: the client claiming that is what it asks for
    // must not make /private/ public.
    for target in ["/private/secret", "/public/../private/secret"] {
        let (s, _, body) = get(port, "x.test", target, spoof);
        assert_eq!(s, 401, "{target}: {body}");
        let seen: serde_json::Value = serde_json::from_str(&body).expect("the judge's answer");
        let one = |k: &str| seen[k].clone();
        assert_eq!(
            one("X-Forwarded-Uri"),
            serde_json::json!(["/private/secret"])
        );
        assert_eq!(one("X-Forwarded-Host"), serde_json::json!(["x.test"]));
        assert_eq!(one("X-Forwarded-Proto"), serde_json::json!(["http"]));
        assert_eq!(one("X-Forwarded-For"), serde_json::json!(["127.0.0.1"]));
        assert_eq!(one("X-Forwarded-Method"), serde_json::json!(["GET"]));
        assert_eq!(one("X-Forwarded-Prefix"), serde_json::Value::Null);
        assert_eq!(one("Forwarded"), serde_json::Value::Null);
        assert_eq!(one("X-Real-IP"), serde_json::json!(["127.0.0.1"]));
    }
    // Let through, the upstream sees no claim of the client's either.
    let (s, _, body) = get(
        port,
        "x.test",
        "/public/page",
        &format!("{spoof}X-Forwarded-Server: evil.test\r\n"),
    );
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let h = &v["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-host"], "x.test");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    for k in [
        "forwarded",
        "x-forwarded-server",
        "x-forwarded-uri",
        "x-forwarded-prefix",
        "x-forwarded-method",
    ] {
        assert!(h.get(k).is_none(), "{k} reached the upstream: {h}");
    }
}

/// Starts the gateway like `common::gateway`, its standard error written to `log` (and
/// its standard output, the access log, to `log` with `.out` added).
fn gateway_logging(config: &Path, port: u16, log: &Path) -> Proc {
    let c = Command::new(gateway_bin())
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        // Two workers whatever the machine: each holds descriptors (its runtime's epoll
        // and eventfd, its listener), and the EMFILE test counts them against 40.
        .args(["--threads", "2"])
        .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "gateway did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Proc(c)
}

/// Whether the server has closed `s` (a read sees the end or an error, or a write fails).
fn closed(s: &mut TcpStream, probe: Option<&[u8]>) -> bool {
    if let Some(p) = probe {
        if s.write_all(p).is_err() {
            return true;
        }
    }
    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    let mut b = [0u8; 4096];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Reads one response (head and Content-Length body) from a kept-alive connection.
fn read_response(s: &mut TcpStream) -> (u16, String, String) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        let n = s.read(&mut b).unwrap();
        assert!(n > 0, "closed before a whole response");
        out.extend_from_slice(&b[..n]);
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return split_response(&out);
            }
        }
    }
}

#[test]
fn slow_heads_and_idle_connections_are_closed_in_time_while_requests_are_answered() {
    let (_up, http, _) = upstream();
    let dir = scratch("attack-slow");
    let port = free_port();
    let cfg = config(
        &dir,
        &format!(
            "[server]\nheader-read-timeout-secs = 2\nkeepalive-idle-secs = 2\n\n\
             [[route]]\nupstream = \"http://127.0.0.1:{http}\"\n"
        ),
    );
    let _gw = gateway(&cfg, port);
    let connect = || TcpStream::connect(("127.0.0.1", port)).unwrap();
    let started = Instant::now();
    // Slowloris: a head begun, then one more header line every 300 ms, never finished.
    let mut slow: Vec<TcpStream> = (0..30)
        .map(|_| {
            let mut s = connect();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x.test\r\n").unwrap();
            s
        })
        .collect();
    // Connections that never send a byte.
    let mut silent: Vec<TcpStream> = (0..10).map(|_| connect()).collect();
    // A kept-alive connection, idle after one answered request.
    let mut idle = connect();
    idle.write_all(b"GET /first HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .unwrap();
    let (s, _, body) = read_response(&mut idle);
    assert_eq!(s, 200, "{body}");

    let mut answered_meanwhile = false;
    let mut closed_at: Vec<Option<Duration>> = vec![None; slow.len() + silent.len() + 1];
    while started.elapsed() < Duration::from_secs(8) && closed_at.iter().any(Option::is_none) {
        std::thread::sleep(Duration::from_millis(300));
        let all = slow
            .iter_mut()
            .map(|s| (s, Some(&b"X-Slow: 1\r\n"[..])))
            .chain(silent.iter_mut().map(|s| (s, None)))
            .chain(std::iter::once((&mut idle, None)));
        for ((s, probe), at) in all.zip(closed_at.iter_mut()) {
            if at.is_none() && closed(s, probe) {
                *at = Some(started.elapsed());
            }
        }
        if !answered_meanwhile && started.elapsed() > Duration::from_secs(1) {
            // With the slow clients holding their connections, a normal request answers.
            let (s, _, body) = get(port, "x.test", "/normal", "");
            assert_eq!(s, 200, "{body}");
            answered_meanwhile = true;
        }
    }
    assert!(answered_meanwhile);
    let open = closed_at.iter().filter(|c| c.is_none()).count();
    assert_eq!(
        open, 0,
        "connections still open 8 s after they began, past the 2 s timeouts: {closed_at:?}"
    );
    eprintln!("closed at: {closed_at:?}");
}

#[test]
fn connections_past_the_maximum_get_a_clean_503() {
    let (_up, http, _) = upstream();
    let dir = scratch("attack-maxconn");
    let port = free_port();
    let cfg = config(
        &dir,
        &format!(
            "[server]\nmax-connections = 4\nheader-read-timeout-secs = 60\n\n\
             [[route]]\nupstream = \"http://127.0.0.1:{http}\"\n"
        ),
    );
    let _gw = gateway(&cfg, port);
    // A request first, so the start-up probe's connection is over and holds no slot.
    assert_eq!(get(port, "x.test", "/before", "").0, 200);
    std::thread::sleep(Duration::from_millis(300));
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (s, head, body) = get(port, "x.test", "/", "");
    assert_eq!(s, 503, "{head}{body}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(body.contains("busy"), "{body}");
    drop(held);
    // The slots come back as the held connections close.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, _, body) = get(port, "x.test", "/after", "");
        if s == 200 {
            assert_eq!(upstream_path(&body).as_deref(), Some("/after"));
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {s} {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn oversized_heads_targets_and_bodies_are_refused() {
    let (_up, http, _) = upstream();
    let dir = scratch("attack-sizes");
    let port = free_port();
    let cfg = config(
        &dir,
        &format!(
            "[[route]]\nupstream = \"http://127.0.0.1:{http}\"\n\n\
             [[route]]\nprefix = \"/upload/\"\nupstream = \"http://127.0.0.1:{http}\"\nmax-body-bytes = 1000\nbody-idle-timeout-secs = 2\n"
        ),
    );
    let _gw = gateway(&cfg, port);
    // One header of 40 kB, over the default 32 KiB head (the upstream would take it).
    let big = format!("X-Big: {}\r\n", "a".repeat(40_000));
    let (s, _, body) = get(port, "x.test", "/", &big);
    assert_eq!(s, 431, "{body}");
    let (s, _, body) = get(port, "x.test", &format!("/?q={}", "a".repeat(9000)), "");
    assert_eq!(s, 414, "{body}");
    assert!(body.contains("8192 bytes"), "{body}");
    let post = |len: usize| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "POST /upload/x HTTP/1.1\r\nHost: x.test\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{}",
            "b".repeat(len)
        )
        .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        split_response(&out)
    };
    let (s, _, body) = post(5000);
    assert_eq!(s, 413, "{body}");
    assert!(body.contains("1000 bytes"), "{body}");
    // Under the limit the request reaches the upstream, body and all.
    let (s, _, body) = post(999);
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("\"body-bytes\": 999"), "{body}");
    // A body that stops half-way answers 408 after the route's 2 s of silence.
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    c.write_all(
        b"POST /upload/stalled HTTP/1.1\r\nHost: x.test\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let (s, _, body) = split_response(&out);
    assert_eq!(s, 408, "{body}");
    assert!(body.contains("stopped arriving for 2 s"), "{body}");
}

#[test]
fn running_out_of_file_descriptors_does_not_spin_or_flood_the_log() {
    let (_up, http, _) = upstream();
    let dir = scratch("attack-emfile");
    let port = free_port();
    let log = dir.join("stderr");
    let cfg = config(
        &dir,
        &format!(
            "[server]\nheader-read-timeout-secs = 60\n\n\
             [[route]]\nupstream = \"http://127.0.0.1:{http}\"\n"
        ),
    );
    let gw = gateway_logging(&cfg, port, &log);
    let pid = gw.0.id();
    let st = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=40:40"])
        .status()
        .expect("prlimit (util-linux)");
    assert!(st.success());
    // More connections than descriptors: the rest wait in the listen backlog, and accept
    // fails with EMFILE while they do.
    let held: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let cpu = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        // utime and stime, fields 14 and 15 (in clock ticks, 100 a second).
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let before = cpu();
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu() - before;
    let lines = std::fs::read_to_string(&log).unwrap().lines().count();
    eprintln!("descriptors exhausted: {used} ticks of CPU in 3 s, {lines} lines logged");
    assert!(
        used < 30,
        "{used} ticks of CPU in 3 s with descriptors exhausted (a busy accept loop)"
    );
    assert!(lines < 20, "{lines} lines logged in 4 s");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("Too many open files"), "{text}");
    drop(held);
    // Once descriptors are free again, requests are answered.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let _ = s.write_all(b"GET /back HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let (st, _, body) = split_response(&out);
        if st == 200 {
            assert_eq!(upstream_path(&body).as_deref(), Some("/back"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no answer after the descriptors came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn host_forms_follow_rfc_9112_and_the_access_log_is_escaped() {
    let (_up, http, _) = upstream();
    let dir = scratch("attack-host");
    let port = free_port();
    let log = dir.join("stderr");
    let dead = free_port();
    let cfg = config(
        &dir,
        &format!(
            "[[route]]\nhost = \"app.example.test\"\nupstream = \"http://127.0.0.1:{http}\"\n\n\
             [[route]]\nupstream = \"http://127.0.0.1:{dead}\"\n"
        ),
    );
    let _gw = gateway_logging(&cfg, port, &log);
    // Case and a trailing dot: the named route, not the catch-all (whose upstream is down).
    let (s, _, body) = get(port, "App.Example.TEST.:80", "/dot", "");
    assert_eq!(s, 200, "{body}");
    assert_eq!(upstream_path(&body).as_deref(), Some("/dot"));
    // The absolute form's host wins over the Host header.
    let (s, _, body) = get(port, "other.test", "http://app.example.test/abs", "");
    assert_eq!(s, 200, "{body}");
    assert_eq!(upstream_path(&body).as_deref(), Some("/abs"));
    let (s, _, body) = raw(port, "GET /none HTTP/1.1\r\n");
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("needs a Host header"), "{body}");
    let (s, _, body) = get(port, "app.example.test", "/two", "Host: other.test\r\n");
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("more than one Host"), "{body}");
    let forged = "evil.test/\" 200 0.1ms upstream=x\r\n";
    let (s, _, body) = get(port, forged.trim_end(), "/", "");
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("not a host name"), "{body}");
    // A chunk size that is not hex is the client's mistake: 400, not the upstream's 502.
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(
        b"POST /chunked HTTP/1.1\r\nHost: app.example.test\r\nTransfer-Encoding: chunked\r\n\
          Connection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let (s, _, body) = split_response(&out);
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("malformed"), "{body}");
    std::thread::sleep(Duration::from_millis(200));
    let access = std::fs::read_to_string(log.with_extension("out")).unwrap();
    let line = access
        .lines()
        .find(|l| l.contains("evil.test"))
        .unwrap_or_else(|| panic!("no access line for the forged host: {access}"));
    assert!(
        line.contains("\"GET evil.test/\\x22\\x20200\\x200.1ms\\x20upstream=x/\" 400 "),
        "{line}"
    );
}

#[test]
fn stalled_tls_handshakes_and_idle_tls_connections_are_closed_in_time() {
    let (_up, http, _) = upstream();
    let dir = scratch("attack-tls");
    let (port, tls) = (free_port(), free_port());
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
        .args(["-nodes", "-days", "30", "-subj", "/CN=x.test"])
        .args(["-addext", "subjectAltName=DNS:x.test"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg = config(
        &dir,
        &format!(
            "[server]\nhttps = \"127.0.0.1:{tls}\"\ntls-handshake-timeout-secs = 2\n\
             header-read-timeout-secs = 2\nkeepalive-idle-secs = 2\n\n\
             [[tls.certs]]\ncert = \"{}\"\nkey = \"{}\"\n\n\
             [[route]]\nupstream = \"http://127.0.0.1:{http}\"\n",
            cert.display(),
            key.display()
        ),
    );
    let _gw = gateway(&cfg, port);
    let started = Instant::now();
    // No handshake at all, and one stopped inside its first record.
    let mut silent = TcpStream::connect(("127.0.0.1", tls)).unwrap();
    let mut partial = TcpStream::connect(("127.0.0.1", tls)).unwrap();
    partial.write_all(b"\x16\x03\x01\x00\xff\x01").unwrap();
    // A finished handshake, then silence (openssl's client waits on its standard input).
    let mut idle = Command::new("openssl")
        .args(["s_client", "-quiet", "-servername", "x.test", "-connect"])
        .arg(format!("127.0.0.1:{tls}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // Meanwhile a real client is served over TLS.
    let o = Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(["--resolve", &format!("x.test:{tls}:127.0.0.1")])
        .arg(format!("https://x.test:{tls}/meanwhile"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "200");
    let (mut s_closed, mut p_closed, mut i_closed) = (false, false, false);
    while started.elapsed() < Duration::from_secs(8) && !(s_closed && p_closed && i_closed) {
        std::thread::sleep(Duration::from_millis(200));
        s_closed = s_closed || closed(&mut silent, None);
        p_closed = p_closed || closed(&mut partial, None);
        i_closed = i_closed || idle.try_wait().unwrap().is_some();
    }
    let _ = idle.kill();
    let _ = idle.wait();
    assert!(
        s_closed && p_closed && i_closed,
        "open 8 s after they began, past the 2 s timeouts: no handshake {}, half a \
         handshake {}, idle after the handshake {}",
        !s_closed,
        !p_closed,
        !i_closed
    );
}

#[test]
fn an_upstream_that_stalls_half_way_through_its_body_is_cut_off_in_time() {
    let (_up, http, _) = upstream();
    let dir = scratch("attack-upstream-stall");
    let port = free_port();
    let log = dir.join("stderr");
    let cfg = config(
        &dir,
        &format!(
            "[[route]]\nupstream = \"http://127.0.0.1:{http}\"\n\
             upstream-body-idle-timeout-secs = 2\n"
        ),
    );
    let _gw = gateway_logging(&cfg, port, &log);
    // The upstream announces 1000 bytes, sends 500, then nothing for 30 s.
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(b"GET /half-body HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let r = s.read_to_end(&mut out);
    let took = started.elapsed();
    let (status, head, body) = split_response(&out);
    assert_eq!(status, 200, "{head}");
    assert!(r.is_ok() || took < Duration::from_secs(15), "{r:?}");
    assert!(
        took < Duration::from_secs(8),
        "the client's connection stayed open {took:?} past the 2 s upstream body timeout"
    );
    assert_eq!(body.len(), 500, "the half that came");
    // Meanwhile and after, the gateway answers.
    assert_eq!(get(port, "x.test", "/after", "").0, 200);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("the response body stopped for 2 s"),
        "the stall is logged: {text}"
    );
}
