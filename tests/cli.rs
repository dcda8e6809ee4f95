//! What a user sees from the fast commands: list, plan, help, and errors with exit codes.

use std::path::Path;
use std::process::{Command, Output};

fn imgforge(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgforge"))
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("run imgforge")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

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
fn plan_prints_the_merged_profile_as_toml() {
    let dir = tempfile::tempdir().unwrap();
    let out = imgforge(
        dir.path(),
        &["plan", "--role", "proxy", "--target", "x86_64-vm"],
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
