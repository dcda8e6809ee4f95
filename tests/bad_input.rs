//! Every class of mistake a user can make in profiles and sites, each refused with exit code
//! 1 and a message naming the file, the line (where the mistake has one), the key and the
//! offending value. Each test edits a copy of the repository's profiles in a temporary
//! folder and runs `imgforge plan` or `imgforge build` there (./profiles adds to the
//! embedded profiles, and its files win).

use std::path::{Path, PathBuf};

mod common;
use common::{imgforge_in as imgforge, text};

/// A copy of the repository's profiles in a fresh folder, to edit.
struct Copy {
    dir: tempfile::TempDir,
}

impl Copy {
    fn new() -> Copy {
        let dir = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let dst = dir.path().join("profiles");
        for sub in ["", "targets", "roles", "sites"] {
            std::fs::create_dir_all(dst.join(sub)).unwrap();
            for e in std::fs::read_dir(src.join(sub)).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_file() {
                    std::fs::copy(e.path(), dst.join(sub).join(e.file_name())).unwrap();
                }
            }
        }
        Copy { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join("profiles").join(rel)
    }

    /// Replaces the first `from` in `profiles/<rel>` with `to`; returns the 1-based line
    /// where `to` begins.
    fn edit(&self, rel: &str, from: &str, to: &str) -> usize {
        let p = self.path(rel);
        let t = std::fs::read_to_string(&p).unwrap();
        let at = t
            .find(from)
            .unwrap_or_else(|| panic!("{rel} has no {from:?}"));
        std::fs::write(&p, t.replacen(from, to, 1)).unwrap();
        t[..at].matches('\n').count() + 1
    }

    /// Appends `more` to `profiles/<rel>`; returns the 1-based line where it begins.
    fn append(&self, rel: &str, more: &str) -> usize {
        let p = self.path(rel);
        let mut t = std::fs::read_to_string(&p).unwrap();
        if !t.ends_with('\n') {
            t.push('\n');
        }
        let line = t.matches('\n').count() + 1;
        t.push_str(more);
        std::fs::write(&p, t).unwrap();
        line
    }

    /// Runs imgforge with `args`, which must fail as a user error (exit 1) before writing
    /// anything; returns its error message.
    fn refused(&self, args: &[&str]) -> String {
        let out = imgforge(self.dir.path(), args);
        let err = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?} must exit 1\nstdout: {}\nstderr: {err}",
            text(&out.stdout)
        );
        assert!(
            !self.dir.path().join("images").exists(),
            "nothing is written for bad input"
        );
        err
    }

    fn plan_refused(&self) -> String {
        self.refused(&["plan"])
    }
}

/// Asserts `err` is `imgforge: error: <want_prefix>...` and contains each of `parts`.
fn expect(err: &str, want_prefix: &str, parts: &[&str]) {
    let want = format!("imgforge: error: {want_prefix}");
    assert!(err.starts_with(&want), "want {want}\ngot  {err}");
    for p in parts {
        assert!(err.contains(p), "missing {p:?} in\n{err}");
    }
}

// ---- typed values, refused while the file is read ----

#[test]
fn an_unknown_architecture_partition_table_boot_method_or_output_is_refused_at_its_line() {
    let c = Copy::new();
    let line = c.edit(
        "targets/x86_64-vm.toml",
        "arch = \"amd64\"",
        "arch = \"i386\"",
    );
    expect(
        &c.plan_refused(),
        &format!("profiles/targets/x86_64-vm.toml:{line}:8: key `arch`: unknown variant `i386`"),
        &["expected `amd64` or `arm64`"],
    );

    let c = Copy::new();
    let line = c.edit(
        "targets/x86_64-vm.toml",
        "outputs = [\"qcow2\"]",
        "outputs = [\"qcow2\", \"vmdk\"]",
    );
    expect(
        &c.plan_refused(),
        &format!(
            "profiles/targets/x86_64-vm.toml:{line}:21: key `outputs[1]`: unknown variant `vmdk`"
        ),
        &["`qcow2`", "`img.xz`"],
    );

    let c = Copy::new();
    let line = c.edit(
        "targets/rpi4.toml",
        "boot = \"raspi-firmware\"",
        "boot = \"uboot\"",
    );
    expect(
        &c.refused(&["plan", "--target", "rpi4"]),
        &format!("profiles/targets/rpi4.toml:{line}:8: key `boot`: unknown variant `uboot`"),
        &["`systemd-boot` or `raspi-firmware`"],
    );

    let c = Copy::new();
    let line = c.edit(
        "targets/rpi4.toml",
        "partition-table = \"mbr\"",
        "partition-table = \"dos\"",
    );
    expect(
        &c.refused(&["plan", "--target", "rpi4"]),
        &format!(
            "profiles/targets/rpi4.toml:{line}:19: key `partition-table`: unknown variant `dos`"
        ),
        &["`gpt` or `mbr`"],
    );
}

#[test]
fn a_boot_method_on_the_wrong_partition_table_names_the_file_and_line() {
    let c = Copy::new();
    let line = c.edit(
        "targets/rpi4.toml",
        "partition-table = \"mbr\"",
        "partition-table = \"gpt\"",
    );
    expect(
        &c.refused(&["build", "--target", "rpi4"]),
        &format!("profiles/targets/rpi4.toml:{line}:19: key `partition-table`: `boot = \"raspi-firmware\"` goes with `partition-table = \"mbr\"`, not \"gpt\""),
        &[],
    );
}

#[test]
fn a_hosts_root_device_is_refused_where_the_target_cannot_take_it() {
    // The site may put a Pi host's root on NVMe or USB; the error names the site's line.
    let c = Copy::new();
    let dns = "dns = [\"192.168.50.1\"]\n";
    let line = c.edit(
        "sites/example.toml",
        dns,
        &format!("{dns}root-device = \"ssd\"\n"),
    ) + 1;
    let site = "profiles/sites/example.toml";
    expect(
        &c.refused(&["plan", "--role", "proxy", "--target", "rpi5"]),
        &format!("{site}:{line}:15: key `host[0].root-device`: unknown variant `ssd`, expected one of `sd`, `nvme`, `usb`"),
        &[],
    );
    c.edit("sites/example.toml", "\"ssd\"", "\"nvme\"");
    // rpi4's device trees describe no NVMe controller.
    expect(
        &c.refused(&["plan", "--role", "proxy", "--target", "rpi4"]),
        &format!("{site}:{line}:15: key `host[0].root-device`: `root-device = \"nvme\"` has no [raspi.storage.nvme] table"),
        &["(the target describes: sd, usb)"],
    );
    // A VM's root is on the disk it boots from; there is nothing to choose.
    expect(
        &c.refused(&["plan", "--role", "proxy", "--target", "x86_64-vm"]),
        &format!("{site}:{line}:15: key `host[0].root-device`: host `edge` sets `root-device = \"nvme\"`, which only a Raspberry Pi target chooses"),
        &[],
    );
    // The same site is right for an rpi5, and the plan says where the root is.
    let out = imgforge(
        c.dir.path(),
        &["plan", "--role", "proxy", "--target", "rpi5"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("root on nvme:"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn an_unknown_route_auth_or_access_is_refused_at_its_line() {
    let c = Copy::new();
    let line = c.edit(
        "sites/example.toml",
        "auth = \"basic\"",
        "auth = \"digest\"",
    );
    expect(
        &c.plan_refused(),
        &format!(
            "profiles/sites/example.toml:{line}:8: key `route[1].auth`: unknown variant `digest`"
        ),
        &["`basic` or `login`"],
    );
    let c = Copy::new();
    let line = c.edit("sites/example.toml", "access = \"lan\"", "access = \"wan\"");
    expect(
        &c.plan_refused(),
        &format!(
            "profiles/sites/example.toml:{line}:10: key `route[2].access`: unknown variant `wan`"
        ),
        &["`any` or `lan`"],
    );
}

#[test]
fn a_public_path_opening_a_whole_lan_route_is_refused_at_its_line() {
    let c = Copy::new();
    let line = c.edit(
        "sites/example.toml",
        "access = \"lan\"\npublic-paths = [\"/track/\", \"/api/public/\"]",
        "access = \"lan\"\npublic-paths = [\"/\", \"/api/public/\"]",
    ) + 1;
    expect(
        &c.plan_refused(),
        &format!(
            "profiles/sites/example.toml:{line}:17: key `route[2].public-paths[0]`: route `prospectlab.example.test/`: public path `/` covers the whole route"
        ),
        &["access = \"any\""],
    );
}

#[test]
fn an_invalid_host_address_is_refused_at_its_line() {
    let c = Copy::new();
    let line = c.edit(
        "sites/example.toml",
        "address = \"192.168.50.13/24\"",
        "address = \"300.1.1.1/24\"",
    );
    // prospectlab's address, though the build is the proxy's: the whole site is read.
    expect(
        &c.refused(&["build"]),
        &format!("profiles/sites/example.toml:{line}:11: key `host[3].address`: `300.1.1.1/24` is not an IP address"),
        &[],
    );
    let c = Copy::new();
    let line = c.edit(
        "sites/example.toml",
        "address = \"192.168.50.11/24\"",
        "address = \"192.168.50.11\"",
    );
    expect(
        &c.plan_refused(),
        &format!("profiles/sites/example.toml:{line}:11: key `host[1].address`: `192.168.50.11` must be \"dhcp\" or ADDRESS/PREFIX"),
        &[],
    );
}

#[test]
fn an_admin_ssh_key_that_is_not_a_whole_public_key_is_refused_at_its_line() {
    let c = Copy::new();
    // A real ed25519 key's line, cut short where its base64 still decodes.
    let line = c.edit(
        "sites/example.toml",
        "lan = [",
        "admin-ssh-keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGQWV8HWs8riZ6KLvkl8oGlK\"]\nlan = [",
    );
    expect(
        &c.plan_refused(),
        &format!("profiles/sites/example.toml:{line}:"),
        &[
            "key `admin-ssh-keys",
            "is not a whole ssh-ed25519 key (a line cut short, or two keys joined?)",
        ],
    );
    let c = Copy::new();
    let line = c.edit(
        "sites/example.toml",
        "lan = [",
        "admin-ssh-keys = [\"-----BEGIN OPENSSH PRIVATE KEY-----\"]\nlan = [",
    );
    expect(
        &c.plan_refused(),
        &format!("profiles/sites/example.toml:{line}:"),
        &["give the .pub file's line, not the private key"],
    );
}

#[test]
fn update_of_an_unknown_host_or_one_without_updates_is_refused_before_any_ssh() {
    let c = Copy::new();
    expect(
        &c.refused(&["update", "--host", "nope"]),
        "profiles/sites/example.toml: no host `nope`; hosts: edge, portal, vm-ia, prospectlab",
        &[],
    );
    expect(
        &c.refused(&["update", "--host", "edge"]),
        "profiles/sites/example.toml: host `edge` has no `updates`",
        &["then build and flash it once"],
    );
}

// ---- values that reach generated files ----

#[test]
fn a_control_character_in_a_value_that_reaches_a_unit_file_is_refused() {
    for (from, to, key, shown) in [
        (
            "description = \"imgforge gateway (reverse proxy)\"",
            "description = \"imgforge gateway\\nExecStartPre=/bin/evil\"",
            "service[0].description",
            "\"imgforge gateway\\nExecStartPre=/bin/evil\" holds a control character (U+000A)",
        ),
        (
            "\"serve\", \"--config\"",
            "\"serve\\r\", \"--config\"",
            "service[0].exec[1]",
            "\"serve\\r\" holds a control character (U+000D)",
        ),
        (
            "capabilities = [\"CAP_NET_BIND_SERVICE\"]",
            "capabilities = [\"CAP_NET_BIND_SERVICE\\nUser=root\"]",
            "service[0].capabilities[0]",
            "`CAP_NET_BIND_SERVICE\\nUser=root` is not a Linux capability",
        ),
        (
            "state-dir = \"gateway\"",
            "state-dir = \"gateway\"\nuser = \"gw\\tx\"\nafter = [\"network.target\"]",
            "service[0].user",
            "`gw\\tx` is not a user name",
        ),
        (
            "state-dir = \"gateway\"",
            "state-dir = \"gateway\"\nafter = [\"postgresql.service\\nBefore=x\"]",
            "service[0].after[0]",
            "`postgresql.service\\nBefore=x` is not a full unit name",
        ),
    ] {
        let c = Copy::new();
        let first = c.edit("roles/proxy.toml", from, to);
        let t = std::fs::read_to_string(c.path("roles/proxy.toml")).unwrap();
        // The line of the offending key within the edited text.
        let leaf = key.rsplit('.').next().unwrap();
        let leaf = leaf.split('[').next().unwrap();
        let line = t
            .lines()
            .enumerate()
            .skip(first - 1)
            .find(|(_, l)| l.starts_with(leaf))
            .map(|(i, _)| i + 1)
            .unwrap();
        expect(
            &c.plan_refused(),
            &format!("profiles/roles/proxy.toml:{line}:"),
            &[&format!("key `{key}`: "), shown],
        );
    }
}

#[test]
fn unit_names_like_dot_dot_or_a_template_are_refused() {
    for bad in ["..", "foo@", "../etc/passwd"] {
        let c = Copy::new();
        let line = c.edit(
            "roles/proxy.toml",
            "name = \"gateway\"",
            &format!("name = \"{bad}\""),
        );
        expect(
            &c.plan_refused(),
            &format!("profiles/roles/proxy.toml:{line}:8: key `service[0].name`: `{bad}` is not a unit name"),
            &[],
        );
    }
}

#[test]
fn a_state_dir_with_dot_dot_is_refused() {
    let c = Copy::new();
    let line = c.edit(
        "roles/proxy.toml",
        "state-dir = \"gateway\"",
        "state-dir = \"../../etc\"",
    );
    expect(
        &c.plan_refused(),
        &format!("profiles/roles/proxy.toml:{line}:13: key `service[0].state-dir`: `../../etc` is not a folder under /var/lib"),
        &[],
    );
}

#[test]
fn port_zero_is_refused_in_a_role_and_in_an_access_rule() {
    let c = Copy::new();
    let line = c.edit("roles/proxy.toml", "ports = [80, 443]", "ports = [80, 0]");
    expect(
        &c.plan_refused(),
        &format!("profiles/roles/proxy.toml:{line}:"),
        &["key `service[0].ports[1]`: port 0 is not a port (1-65535)"],
    );
    let c = Copy::new();
    let line = c.edit("sites/example.toml", "ports = [5000]", "ports = [0]");
    expect(
        &c.plan_refused(),
        &format!("profiles/sites/example.toml:{line}:"),
        &["key `access[0].ports[0]`: port 0 is not a port"],
    );
    let c = Copy::new();
    let line = c.edit(
        "sites/example.toml",
        "to = \"portal:8000\"",
        "to = \"portal:0\"",
    );
    expect(
        &c.plan_refused(),
        &format!("profiles/sites/example.toml:{line}:6: key `route[0].to`: port 0 is not a port"),
        &[],
    );
}

#[test]
fn a_mistake_in_another_hosts_role_is_named_in_that_roles_file() {
    // Building vm-ia reads the proxy's role too (the site's gateway.toml comes from it).
    let c = Copy::new();
    let line = c.edit(
        "roles/proxy.toml",
        "service = \"gateway\"\nrequired = true",
        "service = \"gatewy\"\nrequired = true",
    );
    expect(
        &c.refused(&["plan", "--role", "vm-ia"]),
        &format!("profiles/roles/proxy.toml:{line}:11: key `slot[0].service`: slot `jupyter-htpasswd` is read by service `gatewy`, which the role does not run"),
        &[],
    );
}

// ---- duplicates that would silently replace each other ----

#[test]
fn two_services_or_two_slots_with_one_name_in_a_file_are_refused() {
    let c = Copy::new();
    let line = c.append(
        "roles/proxy.toml",
        "\n[[service]]\nname = \"gateway\"\ndescription = \"a second one\"\nexec = [\"/bin/true\"]\n",
    );
    expect(
        &c.plan_refused(),
        &format!("profiles/roles/proxy.toml:{}:8: key `service[1].name`: a second service named `gateway`: service[0] (line 4) has the name already", line + 2),
        &[],
    );
    // A required slot declared again as optional would have become optional.
    let c = Copy::new();
    let line = c.append(
        "roles/proxy.toml",
        "\n[[slot]]\nname = \"jupyter-htpasswd\"\ndescription = \"again\"\nservice = \"gateway\"\nrequired = false\n",
    );
    expect(
        &c.plan_refused(),
        &format!("profiles/roles/proxy.toml:{}:8: key `slot[3].name`: a second slot named `jupyter-htpasswd`: slot[0] (line 18) has the name already", line + 2),
        &[],
    );
}

#[test]
fn two_hosts_with_one_name_or_one_address_are_refused() {
    let c = Copy::new();
    let line = c.edit(
        "sites/example.toml",
        "name = \"portal\"",
        "name = \"vm-ia\"",
    );
    let t = std::fs::read_to_string(c.path("sites/example.toml")).unwrap();
    let second = t
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "name = \"vm-ia\"")
        .nth(1)
        .unwrap()
        .0
        + 1;
    expect(
        &c.plan_refused(),
        &format!("profiles/sites/example.toml:{second}:8: key `host[2].name`: a second host named `vm-ia`: host[1] (line {line}) has the name already"),
        &[],
    );
    let c = Copy::new();
    let line = c.edit(
        "sites/example.toml",
        "address = \"192.168.50.13/24\"",
        "address = \"192.168.50.11/24\"",
    );
    expect(
        &c.plan_refused(),
        &format!("profiles/sites/example.toml:{line}:11: key `host[3].address`: host `prospectlab` has the address 192.168.50.11 of host `portal`"),
        &[],
    );
}

// ---- the whole site, not only the host being built ----

#[test]
fn an_address_outside_every_lan_is_refused() {
    let c = Copy::new();
    let line = c.edit(
        "sites/example.toml",
        "address = \"192.168.50.12/24\"",
        "address = \"10.9.0.12/24\"",
    );
    expect(
        &c.plan_refused(),
        &format!("profiles/sites/example.toml:{line}:11: key `host[2].address`: host `vm-ia`: 10.9.0.12 is outside every network of `lan` (192.168.50.0/24)"),
        &[],
    );
}

#[test]
fn a_route_or_access_naming_an_unknown_host_is_refused() {
    let c = Copy::new();
    let line = c.edit(
        "sites/example.toml",
        "to = \"vm-ia:8888\"",
        "to = \"vm-iaa:8888\"",
    );
    expect(
        &c.plan_refused(),
        &format!("profiles/sites/example.toml:{line}:6: key `route[1].to`: no host `vm-iaa` in the site; hosts: edge, portal, vm-ia, prospectlab"),
        &[],
    );
    let c = Copy::new();
    let line = c.append(
        "sites/example.toml",
        "[[access]]\nto = \"vm-ia\"\nports = [5000]\nfrom = [\"portl\"]\n",
    ) + 3;
    expect(
        &c.plan_refused(),
        &format!("profiles/sites/example.toml:{line}:"),
        &["key `access[1].from[0]`: no host `portl` in the site"],
    );
    let c = Copy::new();
    let line = c.edit(
        "sites/example.toml",
        "to = \"prospectlab\"",
        "to = \"prospect\"",
    );
    expect(
        &c.plan_refused(),
        &format!("profiles/sites/example.toml:{line}:6: key `access[0].to`: no host `prospect` in the site"),
        &[],
    );
}

#[test]
fn a_route_or_access_to_a_port_nobody_serves_is_refused() {
    let c = Copy::new();
    let line = c.edit(
        "sites/example.toml",
        "to = \"portal:8000\"",
        "to = \"portal:8001\"",
    );
    expect(
        &c.plan_refused(),
        &format!("profiles/sites/example.toml:{line}:6: key `route[0].to`: route `portal.example.test/` reaches port 8001 of `portal`, but no service of role `django-app` listens on it (it serves: 8000)"),
        &[],
    );
    let c = Copy::new();
    let line = c.edit("sites/example.toml", "ports = [5000]", "ports = [5005]");
    expect(
        &c.plan_refused(),
        &format!("profiles/sites/example.toml:{line}:"),
        &["key `access[0].ports[0]`: [[access]] to `prospectlab` reaches port 5005 of `prospectlab`, but no service of role `prospectlab` listens on it"],
    );
}

#[test]
fn a_dhcp_host_named_where_its_address_is_needed_is_refused() {
    // The proxy's address goes into the portal's firewall, whichever host is built.
    let c = Copy::new();
    c.edit(
        "sites/example.toml",
        "address = \"192.168.50.10/24\"",
        "address = \"dhcp\"",
    );
    let t = std::fs::read_to_string(c.path("sites/example.toml")).unwrap();
    let route = t.lines().position(|l| l == "[[route]]").unwrap() + 1;
    expect(
        &c.refused(&["plan", "--role", "django-app"]),
        &format!("profiles/sites/example.toml:{route}:1: key `route[0]`: host `edge` has address \"dhcp\", but the firewall rule letting the proxy reach portal:8000 needs its address"),
        &[],
    );
    let c = Copy::new();
    c.edit(
        "sites/example.toml",
        "address = \"192.168.50.11/24\"",
        "address = \"dhcp\"",
    );
    let line = c.append(
        "sites/example.toml",
        "[[access]]\nto = \"vm-ia\"\nports = [5000]\nfrom = [\"portal\"]\n",
    ) + 3;
    expect(
        &c.refused(&["plan", "--role", "proxy"]),
        &format!("profiles/sites/example.toml:{line}:"),
        &["key `access[1].from[0]`: host `portal` has address \"dhcp\""],
    );
}

#[test]
fn an_unknown_role_on_a_host_is_refused() {
    let c = Copy::new();
    let line = c.edit("sites/example.toml", "role = \"vm-ia\"", "role = \"vm-ai\"");
    expect(
        &c.plan_refused(),
        &format!("profiles/sites/example.toml:{line}:8: key `host[2].role`: host `vm-ia` runs role `vm-ai`, which is not a role; known roles: django-app, prospectlab, proxy, vm-ia"),
        &[],
    );
}

#[test]
fn a_route_domain_that_is_not_a_host_name_is_refused() {
    let c = Copy::new();
    let line = c.edit(
        "sites/example.toml",
        "domain = \"portal.example.test\"",
        "domain = \"https://portal.example.test/\"",
    );
    expect(
        &c.plan_refused(),
        &format!("profiles/sites/example.toml:{line}:10: key `route[0].domain`: `https://portal.example.test/` is not a DNS name"),
        &[],
    );
}

#[test]
fn a_public_path_or_prefix_without_its_slashes_is_refused() {
    let c = Copy::new();
    let line = c.edit(
        "sites/example.toml",
        "public-paths = [\"/track/\", \"/api/public/\"]",
        "public-paths = [\"track/\", \"/api/public/\"]",
    );
    expect(
        &c.plan_refused(),
        &format!("profiles/sites/example.toml:{line}:"),
        &["key `route[2].public-paths[0]`: `track/` must be a path starting with `/`"],
    );
    let c = Copy::new();
    let line = c.edit(
        "sites/example.toml",
        "to = \"portal:8000\"",
        "to = \"portal:8000\"\nprefix = \"/portal\"",
    );
    expect(
        &c.plan_refused(),
        &format!("profiles/sites/example.toml:{}:10: key `route[0].prefix`: prefix `/portal` must start and end with `/`", line + 1),
        &[],
    );
}

#[test]
fn an_acme_directory_that_is_not_an_https_url_is_refused() {
    let c = Copy::new();
    let line = c.edit(
        "sites/example.toml",
        "acme-directory = \"https://",
        "acme-directory = \"http://",
    );
    expect(
        &c.plan_refused(),
        &format!("profiles/sites/example.toml:{line}:18: key `tls.acme-directory`: `http://acme-v02.api.letsencrypt.org/directory` is not an https:// URL"),
        &[],
    );
}

#[test]
fn a_route_needing_a_slot_the_proxy_role_lacks_is_refused_with_the_route_line() {
    let c = Copy::new();
    let line = c.edit(
        "sites/example.toml",
        "htpasswd-slot = \"jupyter-htpasswd\"",
        "htpasswd-slot = \"jupyter-htpaswd\"",
    );
    // Found while rendering the proxy's gateway.toml, for any build of the site.
    expect(
        &c.refused(&["plan", "--role", "vm-ia"]),
        &format!("profiles/sites/example.toml:{line}:17: key `route[1].htpasswd-slot`: route `jupyter.example.test/`: the role of `edge` has no slot `jupyter-htpaswd`"),
        &[],
    );
}

// ---- list ----

#[test]
fn list_reports_a_broken_profile_and_lists_the_rest() {
    let c = Copy::new();
    let line = c.edit(
        "roles/vm-ia.toml",
        "[[service]]",
        "[[service]]\nnmae = \"x\"",
    );
    let out = imgforge(c.dir.path(), &["list"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a broken profile is a user error"
    );
    let s = text(&out.stdout);
    let err = text(&out.stderr);
    let want = format!(
        "profiles/roles/vm-ia.toml:{}:1: key `service[0].nmae`: unknown field `nmae`",
        line + 1
    );
    assert!(
        s.contains(&format!("  vm-ia          BROKEN: {want}")),
        "{s}"
    );
    for rest in [
        "\n  proxy ",
        "\n  prospectlab ",
        "\n  x86_64-vm ",
        "\n  rpi4 ",
    ] {
        assert!(s.contains(rest), "{rest:?} listed:\n{s}");
    }
    // The site runs vm-ia, so it cannot be checked either, and says why.
    assert!(s.contains("  example        BROKEN: "), "{s}");
    assert!(err.contains(&format!("imgforge: {want}")), "{err}");
    assert!(err.contains("imgforge: error: 2 broken profiles"), "{err}");
}

#[test]
fn a_profiles_folder_adds_to_the_built_in_profiles_and_list_says_which_file_wins() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("profiles/roles");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(
        p.join("cache.toml"),
        "description = \"a role of my own\"\npackages = [\"redis-server\"]\n",
    )
    .unwrap();
    let proxy = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/roles/proxy.toml"),
    )
    .unwrap();
    std::fs::write(
        p.join("proxy.toml"),
        proxy.replacen("description = \"edge", "description = \"my edge", 1),
    )
    .unwrap();
    let out = imgforge(dir.path(), &["list"]);
    let s = text(&out.stdout);
    assert!(out.status.success(), "{s}{}", text(&out.stderr));
    assert!(
        s.contains("  cache          a role of my own  [profiles/roles/cache.toml]"),
        "{s}"
    );
    assert!(
        s.contains("  proxy          my edge reverse proxy")
            && s.contains("[profiles/roles/proxy.toml, replacing the built-in]"),
        "{s}"
    );
    // The built-in targets and site are still there.
    assert!(
        s.contains("\n  x86_64-vm ") && s.contains("example.test: edge (proxy)"),
        "{s}"
    );
    let out = imgforge(dir.path(), &["plan", "--toml", "--role", "cache"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: toml::Value = toml::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["host"]["name"].as_str(), Some("cache"));
}

#[test]
fn a_version_sysupdate_could_not_read_is_refused_naming_it() {
    let c = Copy::new();
    for bad in ["1/2", "v 1", ".1", "ü"] {
        expect(
            &c.refused(&["plan", "--version", bad]),
            &format!("--version `{}`: a version is 1 to 64 letters, digits and `.+~^_-`, starting with a letter or digit", bad.escape_debug()),
            &[],
        );
    }
    // A good one is taken and names slot A.
    let out = imgforge(c.dir.path(), &["plan", "--json", "--version", "2.0~rc1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["disk"]["partitions"][2]["name"], "root_2.0~rc1");
}

// ---- an app's PyPI lock (deps = "pypi"); refused before the base stage builds anything ----

/// six 1.17.0's wheel and sdist, as PyPI lists them.
const SIX: &str = "six==1.17.0 \\\n    --hash=sha256:4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274 \\\n    --hash=sha256:ff70335d468e7eb6ec65b95b99d3a2836546063f63acc5171de367e834932a81\n";

impl Copy {
    /// The copy with examples/flask-celery (prospectlab's app, deps = "pypi") whose lock is
    /// `lock`; returns the lock's path.
    fn with_prospectlab_lock(&self, lock: &str) -> PathBuf {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/flask-celery");
        let dst = self.dir.path().join("examples/flask-celery");
        std::fs::create_dir_all(&dst).unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
        std::fs::write(dst.join("requirements.txt"), lock).unwrap();
        dst.join("requirements.txt")
    }

    /// `imgforge build --role prospectlab` with a cache of its own (no wheel cached).
    fn build_prospectlab_refused(&self) -> String {
        let cache = self.dir.path().join("cache");
        self.refused(&[
            "build",
            "--quiet",
            "--role",
            "prospectlab",
            "--cache",
            cache.to_str().unwrap(),
        ])
    }
}

#[test]
fn a_lock_made_for_another_python_is_refused_naming_app_file_and_line() {
    let c = Copy::new();
    c.with_prospectlab_lock(&format!(
        "# imgforge-lock: python 3.11, for x86_64 and aarch64\n{SIX}"
    ));
    expect(
        &c.build_prospectlab_refused(),
        "app `prospectlab`: ",
        &[
            "examples/flask-celery/requirements.txt line 1: this lock was made for Python 3.11; the image's Python is 3.13",
            "imgforge lock prospectlab --role prospectlab",
        ],
    );
}

#[test]
fn an_unpinned_or_unhashed_requirement_is_refused_naming_app_file_line_and_requirement() {
    let c = Copy::new();
    c.with_prospectlab_lock("# pinned\nflask>=3\n");
    expect(
        &c.build_prospectlab_refused(),
        "app `prospectlab`: ",
        &["examples/flask-celery/requirements.txt line 2: `flask>=3` is not pinned with `==`"],
    );
    let c = Copy::new();
    c.with_prospectlab_lock("six==1.17.0\n");
    expect(
        &c.build_prospectlab_refused(),
        "app `prospectlab`: ",
        &["requirements.txt line 1: `six==1.17.0` has no `--hash=sha256:`"],
    );
}

// The next three ask the package index (network), as a build does.

#[test]
fn a_hash_the_index_file_does_not_match_is_refused_naming_the_requirement() {
    let c = Copy::new();
    c.with_prospectlab_lock(&format!("six==1.17.0 --hash=sha256:{}\n", "0".repeat(64)));
    expect(
        &c.build_prospectlab_refused(),
        "app `prospectlab`: ",
        &[
            "examples/flask-celery/requirements.txt line 1: `six==1.17.0`: hash mismatch",
            "which the lock does not list",
        ],
    );
}

#[test]
fn a_version_that_does_not_exist_is_refused_naming_the_requirement() {
    let c = Copy::new();
    c.with_prospectlab_lock(&format!("six==99.0.0 --hash=sha256:{}\n", "0".repeat(64)));
    expect(
        &c.build_prospectlab_refused(),
        "app `prospectlab`: ",
        &[
            "examples/flask-celery/requirements.txt line 1: `six==99.0.0`: version 99.0.0 of six does not exist",
            "1.17.0",
        ],
    );
}

#[test]
fn a_package_with_no_wheel_for_the_target_is_refused_naming_it() {
    // psycopg2 (not -binary) publishes Linux sources only: it would be built from its
    // source archive, whose hash the lock does not list.
    let c = Copy::new();
    c.with_prospectlab_lock(&format!(
        "psycopg2==2.9.10 --hash=sha256:{}\n",
        "0".repeat(64)
    ));
    expect(
        &c.build_prospectlab_refused(),
        "app `prospectlab`: ",
        &[
            "requirements.txt line 1: `psycopg2==2.9.10`: no wheel of psycopg2 2.9.10 fits the image (Python 3.13 (cp313), x86_64, glibc 2.41), so it is built from its source archive, but the lock lists no hash of that archive (the index's has sha256 ",
        ],
    );
}

#[test]
fn a_damaged_cached_wheel_is_refused_naming_the_file_and_requirement() {
    let c = Copy::new();
    let lock = c.with_prospectlab_lock(&format!("{SIX}\n"));
    std::fs::write(lock.with_file_name("requirements.in"), "six==1.17.0\n").unwrap();
    let cache = c.dir.path().join("cache");
    // The uv tool from the machine's cache when it is there (17 MB otherwise).
    let shared = imgforge::cache::default_dir().join("tools");
    std::fs::create_dir_all(&cache).unwrap();
    if shared.is_dir() {
        std::os::unix::fs::symlink(&shared, cache.join("tools")).unwrap();
    }
    // `imgforge lock` writes the lock again and fetches six's wheel into the cache.
    let out = imgforge(
        c.dir.path(),
        &[
            "lock",
            "prospectlab",
            "--role",
            "prospectlab",
            "--cache",
            cache.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let wheels: Vec<_> = std::fs::read_dir(cache.join("wheels"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().len() == 64)
        .collect();
    assert_eq!(wheels.len(), 1, "{wheels:?}");
    let whl = std::fs::read_dir(&wheels[0])
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&whl, b"damaged").unwrap();
    let err = c.build_prospectlab_refused();
    expect(
        &err,
        "app `prospectlab`: ",
        &[
            "requirements.txt line 3: `six==1.17.0`: hash mismatch: the cached wheel",
            "six-1.17.0-py2.py3-none-any.whl has sha256",
            "the cache is damaged",
        ],
    );
}
