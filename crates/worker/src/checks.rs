//! The readiness checks of a role: its units active, no unit failed, its ports accepting
//! connections, its health URLs answering 2xx or 3xx.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::Command;
use std::time::Duration;

use crate::config::NodeConfig;

#[derive(Debug, Clone)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    pub detail: Option<String>,
    /// The checked unit is in the failed state: it has used up its restarts, so waiting
    /// longer cannot make this check pass.
    pub gave_up: bool,
}

fn result(name: String, r: Result<(), String>) -> CheckResult {
    CheckResult {
        name,
        ok: r.is_ok(),
        detail: r.err(),
        gave_up: false,
    }
}

pub fn run_all(cfg: &NodeConfig) -> Vec<CheckResult> {
    let mut out = Vec::new();
    // First boot ran before any of this (the ready unit is ordered after it): a slot still
    // without a value will not get one by waiting.
    for s in cfg.slots.iter().filter(|s| s.required || s.generate) {
        let ok = crate::secrets::present(std::path::Path::new(crate::secrets::DIR), &s.name);
        let detail = (!ok).then(|| {
            format!(
                "no value for the slot `{}` (read by {}.service): seed it with `imgforge seed`",
                s.name, s.service
            )
        });
        out.push(CheckResult {
            name: format!("slot:{}", s.name),
            ok,
            detail,
            gave_up: !ok,
        });
    }
    for u in &cfg.checks.units {
        let (r, gave_up) = unit_active(u);
        out.push(CheckResult {
            gave_up,
            ..result(u.clone(), r)
        });
    }
    for j in &cfg.checks.jobs {
        let (r, gave_up) = job_done(j);
        out.push(CheckResult {
            gave_up,
            ..result(j.clone(), r)
        });
    }
    out.push(result("no-failed-units".into(), no_failed_units()));
    for p in &cfg.checks.tcp_ports {
        out.push(result(format!("tcp:{p}"), tcp(&format!("127.0.0.1:{p}"))));
    }
    for url in &cfg.checks.http {
        out.push(result(url.clone(), http_ok(url)));
    }
    out
}

/// How long a unit must have been active to count: a crash-looping service is "active" from
/// each fork until systemd reaps its exit, and a snapshot taken then would call it ready. On
/// an emulated machine under load that window passed 1 s (a CI run saw `/bin/false` counted
/// as running), so the wait is longer, and longer still for a unit that has restarted.
const SETTLE_SECS: f64 = 3.0;
const SETTLE_AFTER_RESTART_SECS: f64 = 10.0;

/// The unit's check, and whether the unit is in the failed state (gave up restarting).
fn unit_active(unit: &str) -> (Result<(), String>, bool) {
    let out = match Command::new("systemctl")
        .args([
            "show",
            unit,
            "-p",
            "ActiveState",
            "-p",
            "SubState",
            "-p",
            "NRestarts",
            "-p",
            "ActiveEnterTimestampMonotonic",
        ])
        .output()
    {
        Ok(o) => o,
        Err(e) => return (Err(format!("systemctl: {e}")), false),
    };
    let props = String::from_utf8_lossy(&out.stdout);
    let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let uptime_secs: f64 = uptime
        .split_whitespace()
        .next()
        .and_then(|u| u.parse().ok())
        .unwrap_or(0.0);
    let gave_up = props.lines().any(|l| l == "ActiveState=failed");
    (judge_unit(unit, &props, uptime_secs), gave_up)
}

/// Decides a unit check from `systemctl show` properties and the time since boot.
pub fn judge_unit(unit: &str, props: &str, uptime_secs: f64) -> Result<(), String> {
    let get = |k: &str| {
        props
            .lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or("")
    };
    let state = get("ActiveState");
    if state == "failed" {
        return Err(format!("{unit} is failed"));
    }
    if state != "active" {
        return Err(format!(
            "{unit} is {state} ({}, {} restarts)",
            get("SubState"),
            get("NRestarts")
        ));
    }
    let since = get("ActiveEnterTimestampMonotonic")
        .parse::<f64>()
        .unwrap_or(0.0)
        / 1e6;
    let active_for = uptime_secs - since;
    let restarted = get("NRestarts").parse::<u32>().unwrap_or(0) > 0;
    let settle = if restarted {
        SETTLE_AFTER_RESTART_SECS
    } else {
        SETTLE_SECS
    };
    if active_for < settle {
        return Err(format!("{unit} active for only {active_for:.1} s"));
    }
    Ok(())
}

/// A oneshot job that runs at boot: done once it has exited successfully in this boot.
fn job_done(unit: &str) -> (Result<(), String>, bool) {
    let props = match Command::new("systemctl")
        .args([
            "show",
            unit,
            "-p",
            "ActiveState",
            "-p",
            "Result",
            "-p",
            "ExecMainExitTimestampMonotonic",
        ])
        .output()
    {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => return (Err(format!("systemctl: {e}")), false),
    };
    judge_job(unit, &props)
}

pub fn judge_job(unit: &str, props: &str) -> (Result<(), String>, bool) {
    let get = |k: &str| {
        props
            .lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or("")
    };
    if get("ActiveState") == "failed" {
        return (Err(format!("{unit} failed ({})", get("Result"))), true);
    }
    let exited = get("ExecMainExitTimestampMonotonic")
        .parse::<u64>()
        .unwrap_or(0)
        > 0;
    match (exited, get("ActiveState"), get("Result")) {
        (true, "inactive", "success") => (Ok(()), false),
        (_, state, _) => (Err(format!("{unit} has not finished yet ({state})")), false),
    }
}

fn no_failed_units() -> Result<(), String> {
    let out = Command::new("systemctl")
        .args([
            "list-units",
            "--state=failed",
            "--plain",
            "--no-legend",
            "--no-pager",
        ])
        .output()
        .map_err(|e| format!("systemctl: {e}"))?;
    let failed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("failed units: {}", failed.join(", ")))
    }
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))
}

fn tcp(addr: &str) -> Result<(), String> {
    TcpStream::connect_timeout(&resolve(addr)?, Duration::from_secs(2))
        .map(|_| ())
        .map_err(|e| format!("{addr}: {e}"))
}

/// Splits `http://host:port/path` into (host:port, path).
pub fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// is checked"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

/// The status code in an HTTP/1.x status line.
pub fn status_code(head: &str) -> Option<u16> {
    let mut words = head.lines().next()?.split_whitespace();
    let proto = words.next()?;
    if !proto.starts_with("HTTP/1.") {
        return None;
    }
    words.next()?.parse().ok()
}

fn http_ok(url: &str) -> Result<(), String> {
    let (authority, path) = split_url(url)?;
    let mut s = TcpStream::connect_timeout(&resolve(&authority)?, Duration::from_secs(2))
        .map_err(|e| format!("{url}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let host = authority.split(':').next().unwrap_or("localhost");
    // One write: `write!` on a socket sends each piece separately, and a server that reads
    // once and closes would reset the connection.
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: imgforge-worker\r\n\r\n");
    s.write_all(request.as_bytes())
        .map_err(|e| format!("{url}: {e}"))?;
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).map_err(|e| format!("{url}: {e}"))?;
    let head = String::from_utf8_lossy(&buf[..n]);
    match status_code(&head) {
        Some(c) if (200..400).contains(&c) => Ok(()),
        Some(c) => Err(format!("{url} answered {c}")),
        None => Err(format!("{url}: not an HTTP answer")),
    }
}

pub fn to_json(cfg: &NodeConfig, results: &[CheckResult]) -> String {
    let checks: Vec<serde_json::Value> = results
        .iter()
        .map(|r| serde_json::json!({"name": r.name, "ok": r.ok, "detail": r.detail}))
        .collect();
    serde_json::json!({
        "role": cfg.role,
        "target": cfg.target,
        "host": cfg.host,
        "ready": results.iter().all(|r| r.ok),
        "checks": checks,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_unit_counts_once_it_has_stayed_active() {
        let props = |state: &str, since_us: u64| {
            format!("ActiveState={state}\nSubState=running\nNRestarts=0\nActiveEnterTimestampMonotonic={since_us}\n")
        };
        assert!(judge_unit("a.service", &props("active", 10_000_000), 20.0).is_ok());
        let err = judge_unit("a.service", &props("active", 19_500_000), 20.0).unwrap_err();
        assert!(err.contains("active for only 0.5 s"), "{err}");
        let err = judge_unit("a.service", &props("active", 18_000_000), 20.0).unwrap_err();
        assert!(err.contains("active for only 2.0 s"), "{err}");
        // After a restart it must stay up longer: 5 s is not enough, 12 s is.
        let restarted = |since_us: u64| {
            format!("ActiveState=active\nSubState=running\nNRestarts=2\nActiveEnterTimestampMonotonic={since_us}\n")
        };
        assert!(judge_unit("a.service", &restarted(15_000_000), 20.0).is_err());
        assert!(judge_unit("a.service", &restarted(8_000_000), 20.0).is_ok());
        assert_eq!(
            judge_unit("a.service", &props("failed", 0), 20.0).unwrap_err(),
            "a.service is failed"
        );
        let err = judge_unit(
            "a.service",
            "ActiveState=activating\nSubState=auto-restart\nNRestarts=3\n",
            20.0,
        )
        .unwrap_err();
        assert_eq!(err, "a.service is activating (auto-restart, 3 restarts)");
    }

    #[test]
    fn a_job_counts_once_it_has_exited_successfully() {
        let p = |state: &str, result: &str, exit: u64| {
            format!("ActiveState={state}\nResult={result}\nExecMainExitTimestampMonotonic={exit}\n")
        };
        assert!(judge_job("j", &p("inactive", "success", 5)).0.is_ok());
        assert_eq!(
            judge_job("j", &p("inactive", "success", 0)),
            (Err("j has not finished yet (inactive)".into()), false)
        );
        assert_eq!(judge_job("j", &p("activating", "success", 0)).1, false);
        assert_eq!(
            judge_job("j", &p("failed", "exit-code", 5)),
            (Err("j failed (exit-code)".into()), true)
        );
    }

    #[test]
    fn url_and_status_parsing() {
        assert_eq!(
            split_url("http://127.0.0.1:80/health").unwrap(),
            ("127.0.0.1:80".into(), "/health".into())
        );
        assert_eq!(
            split_url("http://localhost").unwrap(),
            ("localhost:80".into(), "/".into())
        );
        assert!(split_url("https://x/").is_err());
        assert_eq!(status_code("HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code("SSH-2.0-OpenSSH\r\n"), None);
    }

    #[test]
    fn http_check_against_a_real_socket() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for (i, s) in l.incoming().take(2).enumerate() {
                let mut s = s.unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.ends_with(b"\r\n\r\n") {
                    let n = s.read(&mut buf).unwrap();
                    assert!(n > 0, "request ended early");
                    req.extend_from_slice(&buf[..n]);
                }
                let reply = if i == 0 {
                    "HTTP/1.1 200 OK\r\n\r\nok"
                } else {
                    "HTTP/1.1 503 Busy\r\n\r\n"
                };
                s.write_all(reply.as_bytes()).unwrap();
            }
        });
        let url = format!("http://{addr}/");
        assert!(http_ok(&url).is_ok());
        let err = http_ok(&url).unwrap_err();
        assert!(err.contains("503"), "{err}");
        server.join().unwrap();
        assert!(
            tcp(&addr.to_string()).is_err(),
            "listener closed: the port no longer answers"
        );
    }
}
