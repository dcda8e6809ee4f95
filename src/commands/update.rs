//! `imgforge update --host NAME`: the node takes its newest published version now. Over SSH
//! (root, a key from the site's `admin-ssh-keys`) it runs the node's own update script, the
//! one its timer runs (sysupdate checks the signature and hashes, the databases are dumped,
//! the other slot written, the node reboots), then waits for the node to come back and says
//! which version it runs: READY on the new one, or back on the old one by itself.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::cli::UpdateArgs;
use crate::exit::{user, BootFailed};
use crate::profile::ProfileSource;
use crate::stage::updates::{found_version, UPDATE_SCRIPT};

/// How ssh reaches the node.
struct Ssh {
    dest: String,
    port: u16,
    identity: Option<PathBuf>,
    options: Vec<String>,
}

impl Ssh {
    fn command(&self, remote: &str) -> Command {
        let mut c = Command::new("ssh");
        // BatchMode: never a password prompt (keys only, as the node's sshd). A node makes
        // its host key on first boot, so the first contact accepts it and later ones check
        // it (accept-new); ServerAlive ends a session the node's reboot cut.
        c.args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=accept-new",
        ])
        .args(["-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5"])
        .args(["-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"])
        .args(["-p", &self.port.to_string()]);
        if let Some(i) = &self.identity {
            c.arg("-i").arg(i);
        }
        for o in &self.options {
            c.args(["-o", o]);
        }
        c.arg(format!("root@{}", self.dest)).arg(remote);
        c
    }

    /// Runs `remote`; its stdout, or the error with what ssh said.
    fn output(&self, remote: &str) -> Result<String> {
        let o = self
            .command(remote)
            .stdin(Stdio::null())
            .output()
            .context("running ssh (package openssh-client)")?;
        if !o.status.success() {
            bail!(
                "ssh root@{} -p {} `{remote}`: {}",
                self.dest,
                self.port,
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    }
}

/// What the node reports once it answers again.
struct NodeState {
    boot_id: String,
    version: String,
    ready: Readiness,
}

/// The worker's verdict on this boot, from imgforge-ready.service (a oneshot: inactive once
/// it has run, so its result and exit time say whether it ran and how it ended).
#[derive(Debug, PartialEq)]
enum Readiness {
    Pending,
    Ready,
    Failed,
}

impl Readiness {
    /// From `systemctl show -p Result -p ExecMainExitTimestampMonotonic` (KEY=VALUE lines).
    fn parse(show: &str) -> Readiness {
        let get = |k: &str| {
            show.lines()
                .find_map(|l| l.trim().strip_prefix(k)?.strip_prefix('='))
                .unwrap_or("")
        };
        let ran = !matches!(get("ExecMainExitTimestampMonotonic"), "" | "0");
        match get("Result") {
            "success" if ran => Readiness::Ready,
            "success" | "" => Readiness::Pending,
            _ => Readiness::Failed,
        }
    }
}

fn state(ssh: &Ssh) -> Result<NodeState> {
    let out = ssh.output(&format!(
        "cat /proc/sys/kernel/random/boot_id {}; systemctl show -p Result -p ExecMainExitTimestampMonotonic imgforge-ready.service",
        seed_area::version::PATH
    ))?;
    let mut lines = out.lines().map(str::trim);
    let mut next = |what: &str| {
        lines
            .next()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the node's answer lacks its {what}: {out}"))
    };
    Ok(NodeState {
        boot_id: next("boot id")?,
        version: next("version")?,
        ready: Readiness::parse(&out),
    })
}

pub fn run(a: UpdateArgs) -> Result<()> {
    let src = ProfileSource::choose(a.profiles.as_deref()).map_err(user)?;
    let sf = crate::plan::load_site(&src, &a.site).map_err(user)?;
    let host = sf
        .site
        .hosts
        .iter()
        .find(|h| h.name == *a.host.as_str())
        .ok_or_else(|| {
            let names: Vec<&str> = sf.site.hosts.iter().map(|h| h.name.as_str()).collect();
            user(anyhow!(
                "{}: no host `{}`; hosts: {}",
                sf.display,
                a.host,
                names.join(", ")
            ))
        })?;
    if host.updates.is_none() {
        return Err(user(anyhow!(
            "{}: host `{}` has no `updates`, so its image carries no update engine: give it \
             `updates = {{ url = \"...\" }}`, then build and flash it once",
            sf.display,
            a.host
        )));
    }
    if sf.site.admin_ssh_keys.is_empty() {
        eprintln!(
            "imgforge: warning: {} has no admin-ssh-keys: the node's sshd will refuse every key",
            sf.display
        );
    }
    let dest = a.address.clone().unwrap_or_else(|| {
        host.address.ip().map_or_else(
            || format!("{}.{}", host.name, sf.site.domain),
            |ip| ip.to_string(),
        )
    });
    let ssh = Ssh {
        dest,
        port: a.port,
        identity: a.identity.clone(),
        options: a.ssh_options.clone(),
    };
    let before = state(&ssh).with_context(|| format!("reaching host `{}`", a.host))?;
    eprintln!(
        "imgforge: {} runs version {}; asking its publish folder for a newer one",
        a.host, before.version
    );

    // The node's own script, its output shown as it comes; the node's reboot ends the session.
    let started = Instant::now();
    let mut child = ssh
        .command(UPDATE_SCRIPT)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("running ssh (package openssh-client)")?;
    let mut found = None;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.unwrap_or_default();
        eprintln!("    {}: {line}", a.host);
        if let Some(v) = found_version(&line) {
            found = Some(v.to_string());
        }
    }
    let status = child.wait()?;
    let Some(new) = found else {
        if !status.success() {
            bail!(
                "the update script on `{}` failed ({status}); its output is above",
                a.host
            );
        }
        println!("{}: no newer version than {}", a.host, before.version);
        return Ok(());
    };
    eprintln!(
        "imgforge: {} is installing version {new} and rebooting into it",
        a.host
    );

    // Back on the new version and READY; or back on the old one after a further boot (the
    // new one was not READY and systemd-boot returned to the old one by itself).
    let deadline = started + Duration::from_secs(a.timeout);
    let mut last = String::from("no answer yet");
    loop {
        crate::interrupt::check()?;
        if Instant::now() > deadline {
            return Err(BootFailed(format!(
                "host `{}` did not come back READY within {} s of the update's start (last: {last})",
                a.host, a.timeout
            ))
            .into());
        }
        match state(&ssh) {
            Ok(s) if s.boot_id != before.boot_id => {
                last = format!("version {}, {:?}", s.version, s.ready);
                if s.version == new && s.ready == Readiness::Ready {
                    println!(
                        "{}: version {new} READY, {:.0} s after the update started (was {})",
                        a.host,
                        started.elapsed().as_secs_f64(),
                        before.version
                    );
                    return Ok(());
                }
                if s.version == before.version && s.ready == Readiness::Ready {
                    return Err(BootFailed(format!(
                        "host `{}`: version {new} did not become READY; the node returned to \
                         version {} by itself and is READY on it (on the node, `journalctl -b -1` \
                         says why)",
                        a.host, before.version
                    ))
                    .into());
                }
            }
            Ok(_) => last = "not rebooted yet".into(),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_comes_from_the_oneshots_result_and_whether_it_ran() {
        // systemctl show of imgforge-ready.service: before it runs, after READY, after FAILED.
        let before = "Result=success\nExecMainExitTimestampMonotonic=0\n";
        let ready = "Result=success\nExecMainExitTimestampMonotonic=97314711\n";
        let failed = "Result=exit-code\nExecMainExitTimestampMonotonic=88123001\n";
        assert_eq!(Readiness::parse(before), Readiness::Pending);
        assert_eq!(Readiness::parse(ready), Readiness::Ready);
        assert_eq!(Readiness::parse(failed), Readiness::Failed);
        assert_eq!(Readiness::parse(""), Readiness::Pending);
    }
}
