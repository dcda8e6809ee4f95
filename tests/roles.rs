//! The four roles of the example site: their firewalls checked by nft, a role booting to
//! READY with its services answering, and two role images on one network showing the
//! firewall and the gateway's routes. The boots are gated with #[ignore]; see tests/README.md.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use imgforge::plan::{resolve, Request};
use imgforge::profile::ProfileSource;

const ROLES: [&str; 4] = ["proxy", "django-app", "vm-ia", "prospectlab"];

fn plan(role: &str) -> imgforge::plan::Plan {
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    resolve(
        &ProfileSource::Dir(profiles),
        &Request {
            role: role.into(),
            version: None,
            target: "x86_64-vm".into(),
            site: "example".into(),
            host: None,
        },
    )
    .unwrap_or_else(|e| panic!("{role}: {e:#}"))
}

#[test]
fn every_roles_ruleset_passes_nft_check_and_opens_only_what_the_site_says() {
    let dir = tmp("nft-rulesets");
    for role in ROLES {
        let p = plan(role);
        let f = dir.join(format!("{role}.nft"));
        std::fs::write(&f, &p.firewall).unwrap();
        // A network namespace of its own: the check never touches this machine's rules.
        let o = Command::new("unshare")
            .args(["--net", "nft", "-c", "-f"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{role}: nft -c -f:\n{}\n{}",
            text(&o.stderr),
            p.firewall
        );
        assert!(p.firewall.contains("policy drop;"), "{role}");
        assert!(
            p.firewall
                .contains("ip saddr { 192.168.50.0/24 } tcp dport 22 accept"),
            "{role}: ssh from the LAN"
        );
    }
    let ia = plan("vm-ia").firewall;
    assert!(
        ia.contains("ip saddr { 192.168.50.10 } tcp dport 8888 accept"),
        "JupyterLab from the proxy only:\n{ia}"
    );
    // The portal's /chat/, /jupyterlab/ and /ao/ reach vm-ia's apps through the gateway's
    // sign-in: from the proxy, and from no other host (the portal included).
    for port in [5000, 5001, 5002] {
        assert!(
            ia.contains(&format!(
                "ip saddr {{ 192.168.50.10 }} tcp dport {port} accept"
            )),
            "{port} from the proxy only:\n{ia}"
        );
        assert!(
            !ia.contains("192.168.50.11"),
            "the portal reaches vm-ia:\n{ia}"
        );
    }
    let portal = plan("django-app").firewall;
    assert!(
        portal.contains("ip saddr { 192.168.50.10 } tcp dport 8000 accept"),
        "{portal}"
    );
    let edge = plan("proxy").firewall;
    assert!(
        edge.contains("tcp dport 80 accept") && edge.contains("tcp dport 443 accept"),
        "{edge}"
    );
}

/// Builds (cached after the first time) and boots `role` with `imgforge test`.
fn boots_to_ready(role: &str, out: &Path) -> String {
    // A first boot now copies the slot's /var to the data partition before the services
    // start (vm-ia's took 64 s under TCG on a loaded machine): more than the profile's 300 s.
    let o = imgforge(&[
        "test",
        "--role",
        role,
        "--timeout",
        "900",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = text(&o.stderr);
    assert!(
        o.status.success(),
        "imgforge test --role {role} failed:\n{err}"
    );
    let line = text(&o.stdout).trim().to_string();
    let ready = seed_area::ready::parse(&line);
    assert!(
        ready
            .as_ref()
            .is_some_and(|r| r.role == role && r.target == "x86_64-vm" && r.passed == r.total),
        "{line}\n{err}"
    );
    line
}

/// A test's own output folder, removed when the test passes: each role's .img and .qcow2
/// together take 1-4 GB, and a CI run builds six of them. A failed test keeps its folder to
/// look at.
struct OutDir(PathBuf);

impl OutDir {
    fn new(test: &str) -> OutDir {
        OutDir(tmp(&format!("roles-out-{test}")))
    }
}

impl std::ops::Deref for OutDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
#[ignore = "slow: builds vm-ia (JupyterLab, three Flask venvs) and boots it (~3 min warm)"]
fn vm_ia_boots_to_ready_with_its_apps_and_jupyterlab_answering() {
    let _g = serial();
    let out = OutDir::new("vm-ia");
    let line = boots_to_ready("vm-ia", &out);
    // Units, ports and health URLs of the three apps and JupyterLab, and the slot.
    let n = seed_area::ready::parse(&line).unwrap().passed;
    assert!(n >= 12, "{line}");
    let units = verify_generated_units(&out.join("vm-ia-x86_64-vm.manifest.json"), "verify-vm-ia");
    assert!(
        units.iter().any(|u| u.ends_with("/jupyterlab.service")),
        "{units:?}"
    );
}

#[test]
#[ignore = "slow: builds prospectlab (PostgreSQL, Redis, Celery) and boots it (~3 min warm)"]
fn prospectlab_boots_to_ready_with_gunicorn_celery_postgresql_and_redis() {
    let _g = serial();
    let out = OutDir::new("prospectlab");
    boots_to_ready("prospectlab", &out);
    let units = verify_generated_units(
        &out.join("prospectlab-x86_64-vm.manifest.json"),
        "verify-prospectlab",
    );
    for u in [
        "prospectlab.service",
        "prospectlab-celery.service",
        "prospectlab-celerybeat.service",
        "imgforge-job-backup-prospectlab.timer",
    ] {
        assert!(units.iter().any(|x| x.ends_with(u)), "{u} in {units:?}");
    }
}

#[test]
#[ignore = "slow: builds django-app (Django, Gunicorn) and boots it (~2 min warm)"]
fn django_app_boots_to_ready_with_gunicorn_answering() {
    let _g = serial();
    let out = OutDir::new("django-app");
    boots_to_ready("django-app", &out);
    let units = verify_generated_units(
        &out.join("django-app-x86_64-vm.manifest.json"),
        "verify-django-app",
    );
    assert!(
        units.iter().any(|u| u.ends_with("/portal.service")),
        "{units:?}"
    );
}

/// A bridge with a tap per VM and a network namespace playing the site's other hosts.
/// Everything is removed on drop, also when the test fails.
struct Lan {
    bridge: String,
    taps: Vec<String>,
    netns: String,
}

impl Lan {
    fn new(tag: &str, taps: &[&str], addrs: &[&str]) -> Lan {
        let id = std::process::id() % 10000;
        let lan = Lan {
            bridge: format!("br{tag}{id}"),
            taps: taps.iter().map(|t| format!("t{t}{id}")).collect(),
            netns: format!("lan{tag}{id}"),
        };
        let ip = |args: &[&str]| run(Command::new("ip").args(args));
        ip(&["link", "add", &lan.bridge, "type", "bridge"]);
        ip(&["link", "set", &lan.bridge, "up"]);
        for t in &lan.taps {
            ip(&["tuntap", "add", "dev", t, "mode", "tap"]);
            ip(&["link", "set", t, "master", &lan.bridge, "up"]);
        }
        let (veth, peer) = (format!("v{tag}{id}"), format!("p{tag}{id}"));
        ip(&["netns", "add", &lan.netns]);
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &veth, "master", &lan.bridge, "up"]);
        ip(&["link", "set", &peer, "netns", &lan.netns]);
        for a in addrs {
            ip(&["-n", &lan.netns, "addr", "add", a, "dev", &peer]);
        }
        ip(&["-n", &lan.netns, "link", "set", &peer, "up"]);
        ip(&["-n", &lan.netns, "link", "set", "lo", "up"]);
        lan
    }

    /// curl from the namespace, from source address `from`: (HTTP status or 0, body).
    fn curl(&self, from: &str, url: &str, extra: &[&str]) -> (u16, String) {
        let o = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "curl",
                "-s",
                "--max-time",
                "5",
                "--interface",
                from,
            ])
            .args(["-w", "\n%{http_code}"])
            .args(extra)
            .arg(url)
            .output()
            .unwrap();
        let t = text(&o.stdout);
        let (body, code) = t.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        for t in &self.taps {
            let _ = Command::new("ip").args(["link", "del", t]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        // SIGTERM: imgforge stops its QEMU and removes the boot copy.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn boot_on_tap(role: &str, tap: &str, out: &Path, secrets: Option<&Path>) -> Vm {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgforge"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "boot",
        "--quiet",
        "--role",
        role,
        "--tap",
        tap,
        "--out",
        out.to_str().unwrap(),
    ]);
    if let Some(s) = secrets {
        cmd.arg("--secrets").arg(s);
    }
    let log = std::fs::File::create(out.join(format!("{role}.tap-console.log"))).unwrap();
    Vm(cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .unwrap())
}

/// Polls until `ok` holds for curl's answer, or the deadline.
fn wait_for(
    lan: &Lan,
    from: &str,
    url: &str,
    extra: &[&str],
    deadline: Instant,
    ok: impl Fn(u16) -> bool,
) -> (u16, String) {
    loop {
        let r = lan.curl(from, url, extra);
        if ok(r.0) || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

#[test]
#[ignore = "slow: boots the proxy and vm-ia images together on one bridge (~4-5 min warm); needs root"]
fn two_role_images_on_one_network_show_the_firewall_and_the_routes() {
    let _g = serial();
    let out = OutDir::new("two-roles");
    // Both images first (cached when the tests above ran), so the boots start together.
    for role in ["proxy", "vm-ia"] {
        let o = imgforge(&[
            "build",
            "--quiet",
            "--role",
            role,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "build {role}:\n{}", text(&o.stderr));
    }
    // The proxy's Basic auth for JupyterLab and the users of its sign-in page (password and
    // TOTP secret), as the operator would seed them.
    let scratch = tmp("two-vms");
    let htpasswd = run(Command::new("htpasswd").args(["-nbB", "ops", "correct horse"]));
    let hash = htpasswd.trim_end().split_once(':').unwrap().1.to_string();
    const TOTP: &str = "JBSWY3DPEHPK3PXP";
    let secrets = scratch.join("edge-secrets.toml");
    std::fs::write(
        &secrets,
        format!(
            "jupyter-htpasswd = '''\n{}'''\nlogin-users = '''\nops:{hash}:{TOTP}\n'''\n",
            htpasswd.trim_end()
        ),
    )
    .unwrap();

    // 192.168.50.11 is the portal's address in the site; .99 is a LAN address no rule names.
    let (portal, stranger) = ("192.168.50.11", "192.168.50.99");
    let lan = Lan::new(
        "i",
        &["edge", "ia"],
        &[&format!("{portal}/24"), &format!("{stranger}/24")],
    );
    let _edge = boot_on_tap("proxy", &lan.taps[0], &out, Some(&secrets));
    let _ia = boot_on_tap("vm-ia", &lan.taps[1], &out, None);
    // Generous: JupyterLab starts last, and slowly under full emulation on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(900);

    // The portal's /chat/ is vm-ia's chat app behind the gateway's sign-in (the seeds'
    // @login_required + @otp_required proxy views). Without a session: the sign-in page.
    let portal_host = ["-H", "Host: portal.example.test"];
    let chat = "http://192.168.50.10/chat/";
    let (s, body) = wait_for(
        &lan,
        stranger,
        chat,
        &[&portal_host[..], &["-L"]].concat(),
        deadline,
        |s| s == 200,
    );
    assert_eq!(s, 200, "/chat/ without a session: {body}");
    assert!(
        body.contains("Sign in") && body.contains("name=\"code\""),
        "/chat/ without a session answers the sign-in page: {body}"
    );
    // Signing in with the password and a code from oathtool (not the gateway's own TOTP).
    let code = run(Command::new("oathtool").args(["--totp", "-b", TOTP]));
    let jar = scratch.join("cookies");
    let jar = jar.to_str().unwrap();
    let code = format!("code={}", code.trim());
    let (s, _) = lan.curl(
        stranger,
        "http://192.168.50.10/.gateway/login",
        &[
            &portal_host[..],
            &["-c", jar, "--data-urlencode", "user=ops"],
            &["--data-urlencode", "password=correct horse"],
            &["--data-urlencode", &code],
            &["--data-urlencode", "next=/chat/"],
        ]
        .concat(),
    );
    assert_eq!(s, 303, "sign-in with a fresh TOTP code");
    // With the session the chat app answers, its links under /chat/ (X-Forwarded-Prefix).
    let (s, body) = wait_for(
        &lan,
        stranger,
        chat,
        &[&portal_host[..], &["-b", jar]].concat(),
        deadline,
        |s| s == 200,
    );
    assert_eq!(s, 200, "/chat/ with a session: {body}");
    assert!(
        body.contains("href=\"/chat/items/\"") && body.contains("href=\"/chat/back\""),
        "the chat page's links stay under /chat/: {body}"
    );
    let (s, body) = lan.curl(
        stranger,
        "http://192.168.50.10/chat/items/",
        &[&portal_host[..], &["-b", jar]].concat(),
    );
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["url"].as_str(), Some("/chat/items/"), "{body}");
    // vm-ia's app ports are the proxy's to reach: straight from any other host of the LAN,
    // the portal included, the packets are dropped (no answer at all, not refused).
    for from in [portal, stranger] {
        let (s, _) = lan.curl(from, "http://192.168.50.12:5000/items/", &[]);
        assert_eq!(s, 0, "port 5000 answered {from}");
    }

    // JupyterLab (8888) is the proxy's to reach: through the gateway on edge, with Basic
    // auth, JupyterLab answers...
    let url = "http://192.168.50.10/login";
    let host = ["-H", "Host: jupyter.example.test"];
    let (s, body) = wait_for(
        &lan,
        stranger,
        url,
        &[&host[..], &["-u", "ops:correct horse"]].concat(),
        deadline,
        |s| s == 200,
    );
    assert_eq!(s, 200, "JupyterLab through the gateway: {body}");
    assert!(body.contains("Jupyter"), "{body}");
    // ...without the password, the gateway refuses...
    assert_eq!(lan.curl(stranger, url, &host).0, 401);
    // ...and straight to 8888, from any other host, the packets are dropped.
    for from in [portal, stranger] {
        assert_eq!(
            lan.curl(from, "http://192.168.50.12:8888/login", &[]).0,
            0,
            "8888 from {from}"
        );
    }
    // ssh is open to the LAN (the connection is accepted: the banner arrives).
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lan.netns,
            "timeout",
            "10",
            "bash",
            "-c",
            "exec 3<>/dev/tcp/192.168.50.12/22 && head -c 7 <&3",
        ])
        .output()
        .unwrap();
    assert_eq!(text(&o.stdout), "SSH-2.0", "ssh banner from vm-ia");
}
