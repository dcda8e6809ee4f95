//! What a user sees from the fast commands: list, plan, help, man pages and completions, and
//! errors with exit codes.

use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;
use common::{imgforge_in as imgforge, text};

/// A copy of the repository's profiles in a fresh folder, to edit.
fn profiles_copy(dir: &Path) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    let dst = dir.join("profiles");
    for sub in ["", "targets", "roles", "sites"] {
        std::fs::create_dir_all(dst.join(sub)).unwrap();
        for e in std::fs::read_dir(src.join(sub)).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), dst.join(sub).join(e.file_name())).unwrap();
            }
        }
    }
    dst
}

#[test]
fn list_shows_embedded_roles_targets_and_sites() {
    let dir = tempfile::tempdir().unwrap();
    let out = imgforge(dir.path(), &["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for role in ["django-app", "prospectlab", "proxy", "vm-ia"] {
        assert!(s.contains(&format!("\n  {role} ")), "{role}: {s}");
    }
    assert!(
        s.contains("targets:\n") && s.contains("  x86_64-vm "),
        "{s}"
    );
    assert!(s.contains("example.test: edge (proxy)"), "{s}");
}

#[test]
fn plan_toml_prints_the_merged_profile() {
    let dir = tempfile::tempdir().unwrap();
    let out = imgforge(
        dir.path(),
        &["plan", "--toml", "--role", "proxy", "--target", "x86_64-vm"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: toml::Value = toml::from_str(&text(&out.stdout)).expect("plan is TOML");
    assert_eq!(v["role"].as_str(), Some("proxy"));
    assert_eq!(v["arch"].as_str(), Some("amd64"));
    let pkgs: Vec<&str> = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        pkgs.contains(&"systemd") && pkgs.contains(&"linux-image-amd64"),
        "{pkgs:?}"
    );
    assert_eq!(v["service"][0]["name"].as_str(), Some("gateway"));
    assert_eq!(v["host"]["fqdn"].as_str(), Some("edge.example.test"));
}

#[test]
fn a_typo_in_a_profile_names_file_line_column_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = profiles_copy(dir.path());
    let target = profiles.join("targets/x86_64-vm.toml");
    let mut t = std::fs::read_to_string(&target).unwrap();
    t.push_str("memroy-mib = 2048\n");
    std::fs::write(&target, &t).unwrap();
    let line = t.lines().count();
    // ./profiles in the working directory replaces the embedded ones.
    let out = imgforge(dir.path(), &["plan"]);
    assert_eq!(out.status.code(), Some(1), "a user error exits 1");
    let err = text(&out.stderr);
    // The key is in the [qemu] table (the last one in the file).
    let want = format!("imgforge: error: profiles/targets/x86_64-vm.toml:{line}:1: key `qemu.memroy-mib`: unknown field `memroy-mib`");
    assert!(err.starts_with(&want), "want {want}\ngot {err}");
}

#[test]
fn unknown_role_lists_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = imgforge(dir.path(), &["build", "--role", "mailserver"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("unknown role `mailserver`; known roles: django-app, prospectlab, proxy, vm-ia (embedded profiles)"),
        "{err}"
    );
    assert!(
        !dir.path().join("images").exists(),
        "nothing written for bad input"
    );
}

#[test]
fn help_lists_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = imgforge(dir.path(), &["--help"]);
    assert!(out.status.success());
    let s = text(&out.stdout);
    for cmd in ["build", "test", "boot", "plan", "list", "inspect"] {
        assert!(
            s.contains(&format!("\n  {cmd} ")),
            "{cmd} missing from:\n{s}"
        );
    }
    let out = imgforge(dir.path(), &["build", "--help"]);
    let s = text(&out.stdout);
    assert!(
        s.contains("--rebuild <STAGE>")
            && s.contains("[default: proxy]")
            && s.contains("[default: x86_64-vm]"),
        "{s}"
    );
}

#[test]
fn inspect_of_a_missing_file_is_a_user_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = imgforge(dir.path(), &["inspect", "nope.img"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("opening nope.img"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_usage_error_exits_1_with_clap_message_and_help_and_version_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let out = imgforge(dir.path(), &["build", "--rol", "proxy"]);
    assert_eq!(out.status.code(), Some(1), "a usage error is a user error");
    let err = text(&out.stderr);
    assert!(
        err.contains("error: unexpected argument '--rol' found")
            && err.contains("Usage: imgforge build"),
        "{err}"
    );
    let out = imgforge(dir.path(), &["plan", "--toml", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("error: the argument '--toml' cannot be used with '--json'"),
        "{err}"
    );
    // No subcommand: clap prints the help to stderr, and it is still a mistake.
    let out = imgforge(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("Usage: imgforge <COMMAND>"),
        "{}",
        text(&out.stderr)
    );
    let out = imgforge(dir.path(), &["flash", "only-one.img"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("the following required arguments were not provided:\n  <TARGET>"),
        "{}",
        text(&out.stderr)
    );

    for args in [&["--help"][..], &["plan", "--help"], &["--version"]] {
        let out = imgforge(dir.path(), args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = imgforge(dir.path(), &["--version"]);
    assert_eq!(
        text(&out.stdout),
        format!("imgforge {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// Runs imgforge with stdout a pipe whose reader is already gone, as `imgforge list | head
/// -1` is once head has its line.
fn imgforge_into_closed_pipe(cwd: &Path, args: &[&str]) -> Output {
    let (reader, writer) = rustix::pipe::pipe().expect("pipe");
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_imgforge"))
        .current_dir(cwd)
        .args(args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("run imgforge")
}

#[test]
fn output_to_a_closed_pipe_ends_quietly_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["list"][..],
        &["plan"],
        &["plan", "--toml"],
        &["plan", "--json"],
        &["--help"],
        &["generate", "completions", "bash"],
    ] {
        let out = imgforge_into_closed_pipe(dir.path(), args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} printed: {err}");
    }
}

#[test]
fn man_pages_render_with_man() {
    let dir = tempfile::tempdir().unwrap();
    let man_dir = dir.path().join("man1");
    let out = imgforge(dir.path(), &["generate", "man", man_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    for page in [
        "imgforge.1",
        "imgforge-build.1",
        "imgforge-test.1",
        "imgforge-boot.1",
        "imgforge-plan.1",
        "imgforge-list.1",
        "imgforge-inspect.1",
        "imgforge-seed.1",
        "imgforge-flash.1",
    ] {
        assert!(
            man_dir.join(page).is_file(),
            "{page} missing; wrote:\n{listed}"
        );
        assert!(listed.contains(page), "{listed}");
    }
    assert!(
        !man_dir.join("imgforge-generate.1").exists() && !man_dir.join("imgforge-help.1").exists(),
        "hidden commands get no page"
    );
    if Command::new("man").arg("--version").output().is_err() {
        println!("SKIPPED the rendering: no `man` on this machine (Debian: man-db, groff-base)");
        return;
    }
    let render = |page: &str| {
        let out = Command::new("man")
            .arg("-l")
            .arg(man_dir.join(page))
            .env("MANWIDTH", "100")
            .output()
            .expect("run man");
        // groff reports what it cannot render on stderr (a bad macro, an unescaped line).
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "man -l {page}: {}{}",
            out.status,
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    // man justifies lines by widening spaces: compare with runs of white space as one.
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let top = render("imgforge.1");
    let top_words = words(&top);
    for want in [
        "NAME",
        "imgforge - Turns a server's role into a bootable disk image",
        "SYNOPSIS",
        "imgforge-build(1)",
        "imgforge-flash(1)",
        "EXIT STATUS",
        "A user or configuration error",
    ] {
        assert!(top_words.contains(want), "{want} missing from:\n{top}");
    }
    assert!(
        !top.contains("generate"),
        "the hidden command shows:\n{top}"
    );
    let build = render("imgforge-build.1");
    for want in [
        "imgforge-build",
        "--rebuild",
        "--role",
        "SEE ALSO",
        "imgforge(1)",
    ] {
        assert!(
            words(&build).contains(want),
            "{want} missing from:\n{build}"
        );
    }
}

#[test]
fn completions_are_written_for_bash_zsh_and_fish_and_bash_parses_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("completions");
    // Each names the subcommands and the options in its own syntax.
    for (shell, file, option) in [
        ("bash", "imgforge.bash", "--rebuild"),
        ("zsh", "_imgforge", "--rebuild"),
        ("fish", "imgforge.fish", "-l rebuild"),
    ] {
        let out = imgforge(
            dir.path(),
            &["generate", "completions", shell, out_dir.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out.stderr));
        let script = std::fs::read_to_string(out_dir.join(file)).expect(file);
        assert!(
            script.contains(option) && script.contains("flash"),
            "{shell}: {script}"
        );
    }
    let out = Command::new("bash")
        .arg("-n")
        .arg(out_dir.join("imgforge.bash"))
        .output()
        .expect("bash");
    assert!(out.status.success(), "bash -n: {}", text(&out.stderr));
    // Without DIR the script goes to stdout, byte for byte the same.
    let out = imgforge(dir.path(), &["generate", "completions", "bash"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        std::fs::read_to_string(out_dir.join("imgforge.bash")).unwrap()
    );
    let out = imgforge(dir.path(), &["generate", "completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("invalid value 'tcsh' for '<SHELL>'"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn plan_summary_shows_disk_outputs_services_who_may_reach_them_and_slots() {
    let dir = tempfile::tempdir().unwrap();
    let out = imgforge(dir.path(), &["plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for want in [
        "proxy on x86_64-vm: host edge.example.test of site example",
        "DISK (gpt, boots by systemd-boot)",
        // number, name, filesystem, start, size
        "  1  esp            vfat  1 MiB    64 MiB             systemd-boot",
        "  2  imgforge-seed  -     65 MiB   1 MiB              secrets",
        // Slot A is named for the version (by default `0~` and a hash of the plan).
        "  3  root_0~",
        "ext4  66 MiB   1024 MiB           root slot A",
        "  4  _empty         -     1090 MiB 1024 MiB           root slot B",
        "  5  imgforge-data  ext4  2114 MiB content + 256 MiB  all state (/var)",
        "  proxy-x86_64-vm.img\n",
        "  proxy-x86_64-vm.qcow2\n",
        "  SHA256SUMS\n",
        "openssh-server",
        "  gateway  imgforge gateway (reverse proxy)\n",
        "    80/tcp    from anyone (public)\n",
        "    443/tcp   from anyone (public)\n",
        "    22/tcp    from lan (192.168.50.0/24)\n",
        "  jupyter.example.test/            -> vm-ia:8888, from any, auth basic\n",
        "  portal.example.test/chat/        -> vm-ia:5000, from any, auth login\n",
        "  jupyter-htpasswd  htpasswd     for gateway; required: give it when seeding\n",
        "  session-key       secret       for gateway; generated on first boot unless seeded\n",
        "  login-users       login-users  for gateway; optional\n",
    ] {
        assert!(s.contains(want), "`{want}` missing from:\n{s}");
    }

    // A host behind the proxy: each port open to exactly the hosts the site names.
    let out = imgforge(dir.path(), &["plan", "--role", "vm-ia"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for want in [
        "vm-ia on x86_64-vm: host vm-ia.example.test of site example",
        // The portal's /chat/ reaches the app through the proxy's sign-in, not the portal.
        "    5000/tcp  from edge (192.168.50.10)\n",
        "    8888/tcp  from edge (192.168.50.10)\n",
        "APPS\n  chat",
    ] {
        assert!(s.contains(want), "`{want}` missing from:\n{s}");
    }
    assert!(!s.contains("from portal"), "{s}");

    // A card: an MBR, the firmware's A/B boot partitions, an .img.xz.
    let out = imgforge(dir.path(), &["plan", "--target", "rpi4"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for want in [
        "DISK (mbr, boots by raspi-firmware)",
        "  1  autoboot       vfat  1 MiB    40 MiB             autoboot.txt",
        "  2  boot-a         vfat  41 MiB   256 MiB            slot A's Pi firmware",
        "  3  boot-b         vfat  297 MiB  256 MiB            slot B's boot files",
        // The seed area, both slots and the data partition are logical partitions, each
        // after its boot record.
        "  5  imgforge-seed  -     554 MiB  1 MiB              secrets",
        "  6  root-a         ext4  556 MiB  1024 MiB           root slot A",
        "  7  root-b         -     1581 MiB 1024 MiB           root slot B",
        "  8  imgforge-data  ext4  2606 MiB content + 256 MiB  all state (/var)",
        "  root on sd: the build derives its initramfs drivers",
        "  proxy-rpi4.img.xz\n",
    ] {
        assert!(s.contains(want), "`{want}` missing from:\n{s}");
    }
}

#[test]
fn plan_json_has_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = imgforge(dir.path(), &["plan", "--json", "--role", "vm-ia"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan --json is JSON");
    assert_eq!(v["role"], "vm-ia");
    assert_eq!(v["target"], "x86_64-vm");
    assert_eq!(v["host"]["fqdn"], "vm-ia.example.test");
    assert_eq!(v["host"]["address"], "192.168.50.12/24");
    assert_eq!(v["arch"], "amd64");
    assert_eq!(v["disk"]["partition_table"], "gpt");
    let parts = v["disk"]["partitions"].as_array().unwrap();
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names[..2], ["esp", "imgforge-seed"]);
    assert!(names[2].starts_with("root_0~"), "{names:?}");
    assert_eq!(names[3..], ["_empty", "imgforge-data"]);
    assert_eq!(parts[0]["size_mib"], 64);
    assert_eq!(parts[0]["start_mib"], 1);
    // Both slots are root-slot-mib (vm-ia's file sets 3072), so the data partition's start is
    // known; its size follows from the content.
    assert_eq!(parts[2]["size_mib"], 3072);
    assert_eq!(parts[3]["start_mib"], 3138);
    assert_eq!(parts[3]["size_mib"], 3072);
    assert_eq!(parts[4]["start_mib"], 6210);
    assert_eq!(parts[4]["size_mib"], serde_json::Value::Null);
    assert_eq!(parts[4]["free_mib"], 256);
    assert!(v["outputs"]
        .as_array()
        .unwrap()
        .contains(&"vm-ia-x86_64-vm.qcow2".into()));
    assert!(v["packages"]
        .as_array()
        .unwrap()
        .contains(&"jupyterlab".into()));
    let svc = |name: &str| {
        v["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no service {name}: {}", v["services"]))
            .clone()
    };
    let lab = svc("jupyterlab");
    assert_eq!(lab["ports"][0]["port"], 8888);
    assert_eq!(lab["ports"][0]["open_to"], "hosts");
    assert_eq!(lab["ports"][0]["from"][0]["name"], "edge");
    assert_eq!(lab["ports"][0]["from"][0]["address"], "192.168.50.10");
    assert_eq!(
        svc("ssh")["ports"][0]["from"][0]["address"],
        "192.168.50.0/24"
    );
    let slot = &v["slots"][0];
    assert_eq!(slot["name"], "jupyter-token");
    for key in ["kind", "service", "required", "generate", "description"] {
        assert!(!slot[key].is_null(), "slot lacks {key}: {slot}");
    }
    assert_eq!(v["apps"][0]["name"], "chat");
    for key in ["routes", "databases", "jobs"] {
        assert!(v[key].is_array(), "{key}: {v}");
    }
}
