//! Helpers shared by the gateway's integration tests: processes killed on drop, the Python
//! upstream, free ports, curl.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn peers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

/// The upstream application: (process, http port, websocket port).
pub fn upstream() -> (Proc, u16, u16) {
    let mut c = Command::new("/usr/bin/python3")
        .arg(peers().join("upstream.py"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(c.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ports: Vec<u16> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    (Proc(c), ports[0], ports[1])
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The gateway binary under test: this build's, or the one $GATEWAY_BIN names (to run a
/// new attack test against an older gateway and see it fail).
pub fn gateway_bin() -> PathBuf {
    std::env::var_os("GATEWAY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_gateway").into())
}

/// Starts the gateway on `config` and waits until it accepts connections.
pub fn gateway(config: &Path, port: u16) -> Proc {
    let c = Command::new(gateway_bin())
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            // The same two workers on any machine (the default is one per CPU).
            "--threads",
            "2",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "gateway did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Proc(c)
}

/// curl: (status, headers, body).
pub fn curl(port: u16, host: &str, path: &str, extra: &[&str]) -> (u16, String, String) {
    let o = Command::new("curl")
        .args([
            "-s",
            "-i",
            "--max-time",
            "20",
            "-H",
            &format!("Host: {host}"),
        ])
        .args(extra)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    split_response(&o.stdout)
}

/// An HTTP/1 response as read off the wire: (status, the head in lower case, the body).
pub fn split_response(out: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(out).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_lowercase(), body.to_string())
}

pub fn config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("gateway.toml");
    std::fs::write(&p, text).unwrap();
    p
}
