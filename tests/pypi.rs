//! Apps with their dependencies from PyPI (deps = "pypi"): the same lock gives the same
//! venv bytes, a warm rebuild of the apps stage opens no connection, and a lock that
//! contradicts the role's Debian Python is refused. Slow (they build images): `#[ignore]`d.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{serial, text, tmp};

fn cache_dir() -> PathBuf {
    imgforge::cache::default_dir()
}

/// A cache that is the machine's (base roots, binaries, apt, tools, wheels, later stages)
/// but with no apps stage output: a build with it runs the apps stage, and its output is
/// the one tar in `<dir>/stages/apps`.
fn cache_without_apps(name: &str) -> PathBuf {
    let dir = tmp(name);
    let shared = cache_dir();
    std::fs::create_dir_all(dir.join("stages/apps")).unwrap();
    for e in std::fs::read_dir(&shared).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "stages" {
            std::os::unix::fs::symlink(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
    for e in std::fs::read_dir(shared.join("stages")).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "apps" {
            std::os::unix::fs::symlink(e.path(), dir.join("stages").join(e.file_name())).unwrap();
        }
    }
    dir
}

/// `imgforge build` (in the checkout), under `unshare -n` (no network at all) when `offline`.
fn build(args: &[&str], offline: bool) -> Output {
    let exe = env!("CARGO_BIN_EXE_imgforge");
    let mut cmd = if offline {
        let mut c = Command::new("unshare");
        c.args(["--net", "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("build")
        .args(args)
        .output()
        .expect("run imgforge")
}

/// Builds prospectlab with the network cut and no apps stage output cached, so the apps
/// stage runs from the wheel cache, with `bytecode` as its bytecode cache; returns the apps
/// tar it wrote and the build's stderr.
fn rebuild_apps_offline(out: &Path, name: &str, bytecode: &Path) -> (PathBuf, String) {
    let cache = cache_without_apps(name);
    std::fs::remove_file(cache.join("bytecode")).ok();
    std::os::unix::fs::symlink(bytecode, cache.join("bytecode")).unwrap();
    let o = build(
        &[
            "--role",
            "prospectlab",
            "--out",
            out.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ],
        true,
    );
    let err = text(&o.stderr);
    assert!(o.status.success(), "offline rebuild failed:\n{err}");
    let tars: Vec<_> = std::fs::read_dir(cache.join("stages/apps"))
        .unwrap()
        .map(|e| e.unwrap().path().join("apps.tar"))
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(tars.len(), 1, "one apps stage output: {tars:?}\n{err}");
    (tars[0].clone(), err)
}

fn sha256(p: &Path) -> String {
    imgforge::cache::sha256_file(p).unwrap()
}

#[test]
#[ignore = "slow: builds prospectlab three times (~3 min warm); needs root, network for the first"]
fn the_same_lock_gives_the_same_venv_bytes_and_a_warm_rebuild_downloads_nothing() {
    let _g = serial();
    let out = tmp("pypi-repro");
    // Warm the caches (wheels included) with the network.
    let o = build(
        &["--role", "prospectlab", "--out", out.to_str().unwrap()],
        false,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));

    // The first rebuild with an empty bytecode cache: the image's Python compiles every
    // source. The second finds them all in that cache and runs no Python: the tars must
    // still be the same bytes.
    let bytecode = tmp("pypi-repro-bytecode");
    let (tar1, err1) = rebuild_apps_offline(&out, "pypi-repro-cache1", &bytecode);
    let first = sha256(&tar1);
    assert!(err1.contains("wheels       cached"), "{err1}");
    assert!(
        err1.contains("36 wheels unpacked for x86_64, bytecode of 0 sources from the cache"),
        "{err1}"
    );
    assert!(err1.contains("sources by the image's Python"), "{err1}");
    let (tar2, err2) = rebuild_apps_offline(&out, "pypi-repro-cache2", &bytecode);
    assert!(
        !err2.contains("by the image's Python"),
        "all bytecode from the cache:\n{err2}"
    );
    let compiled: usize = err1
        .split("prospectlab: bytecode of ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("how many sources were compiled:\n{err1}"));
    assert!(
        err2.contains(&format!("bytecode of {compiled} sources from the cache")),
        "{err2}"
    );
    assert_eq!(
        tar1.parent().unwrap().file_name(),
        tar2.parent().unwrap().file_name(),
        "same inputs, same stage key"
    );
    assert_eq!(
        sha256(&tar2),
        first,
        "the same lock gives the same apps tar"
    );

    // What is in it: the venv's interpreter is the image's, the compiled wheel is there for
    // the image's CPU, bytecode, RECORD sorted, INSTALLER ours.
    let list = common::run(Command::new("tar").arg("-tvf").arg(&tar2));
    assert!(
        list.contains("opt/prospectlab/venv/bin/python3.13 -> /usr/bin/python3.13"),
        "{list}"
    );
    assert!(list.contains("psycopg_binary/_psycopg.cpython-313-x86_64-linux-gnu.so"));
    // Bytecode written by the image's Python (the same bytes twice, checked above).
    assert!(
        list.contains("site-packages/psycopg/__pycache__/connection.cpython-313.pyc"),
        "{list}"
    );
    let scratch = tmp("pypi-repro-x");
    common::run(
        Command::new("tar")
            .arg("-C")
            .arg(&scratch)
            .arg("-xf")
            .arg(&tar2),
    );
    let site = scratch.join("opt/prospectlab/venv/lib/python3.13/site-packages");
    let dist = std::fs::read_dir(&site)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.to_string_lossy().contains("psycopg_binary-")
                && p.extension().is_some_and(|x| x == "dist-info")
        })
        .expect("psycopg_binary's dist-info");
    assert_eq!(
        std::fs::read_to_string(dist.join("INSTALLER")).unwrap(),
        "imgforge\n"
    );
    let record = std::fs::read_to_string(dist.join("RECORD")).unwrap();
    let lines: Vec<_> = record.lines().collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "RECORD is sorted");
    let cfg = std::fs::read_to_string(scratch.join("opt/prospectlab/venv/pyvenv.cfg")).unwrap();
    assert!(
        cfg.contains("include-system-site-packages = false"),
        "{cfg}"
    );
    let gunicorn =
        std::fs::read_to_string(scratch.join("opt/prospectlab/venv/bin/gunicorn")).unwrap();
    assert!(
        gunicorn.starts_with("#!/opt/prospectlab/venv/bin/python\n"),
        "{gunicorn}"
    );
    let _ = std::fs::remove_dir_all(&scratch);
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&bytecode);
}

#[test]
#[ignore = "slow: builds vm-ia up to its apps stage (~1 min with its base cached); needs root"]
fn a_locked_package_the_roles_debian_python_has_at_another_version_is_refused_naming_both() {
    let _g = serial();
    let dir = tmp("pypi-debian-conflict");
    let src = Path::new(env!("CARGO_MANIFEST_DIR"));
    for sub in [
        "profiles/roles",
        "profiles/sites",
        "profiles/targets",
        "examples/chat-pydantic/templates",
        "examples/flask-prefix/templates",
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for e in std::fs::read_dir(src.join(sub)).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), dir.join(sub).join(e.file_name())).unwrap();
            }
        }
    }
    for f in ["examples/chat-pydantic", "examples/flask-prefix"] {
        for e in std::fs::read_dir(src.join(f)).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), dir.join(f).join(e.file_name())).unwrap();
            }
        }
    }
    // The chat app's venv sees the Debian side, where JupyterLab and Flask bring their
    // own (older) versions of what the lock pins.
    let role = dir.join("profiles/roles/vm-ia.toml");
    let t = std::fs::read_to_string(&role).unwrap();
    std::fs::write(
        &role,
        t.replacen(
            "deps = \"pypi\"\n",
            "deps = \"pypi\"\nsystem-site-packages = true\n",
            1,
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_imgforge"))
        .current_dir(&dir)
        .args(["build", "--quiet", "--role", "vm-ia", "--out"])
        .arg(dir.join("images"))
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for part in [
        "imgforge: error: app `chat`: examples/chat-pydantic/requirements.txt line ",
        "the role's Debian Python already provides ",
        "(/usr/lib/python3/dist-packages/",
        "system-site-packages = true",
    ] {
        assert!(err.contains(part), "missing {part:?} in\n{err}");
    }
    assert!(!dir.join("images").join("vm-ia-x86_64-vm.img").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// prospectlab's card for a Pi 4, from the same PyPI lock: its aarch64 wheels (psycopg's
/// compiled binary among them) unpacked on this x86_64 machine, the card's root booted on
/// QEMU's virt machine, READY with every check: the health URL answers only when the app
/// imported psycopg_binary and reached PostgreSQL and Redis with it.
#[test]
#[ignore = "heavy: builds prospectlab's rpi4 card (its own arm64 root: ~20 min cold) and boots it on virt (~8 min); scripts/boot-arm64.sh"]
fn heavy_prospectlab_rpi4_card_boots_to_ready_with_its_aarch64_wheels() {
    let _g = serial();
    let out = tmp("pypi-rpi4");
    let o = Command::new(env!("CARGO_BIN_EXE_imgforge"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["test", "--role", "prospectlab", "--target", "rpi4", "--out"])
        .arg(&out)
        .output()
        .expect("run imgforge");
    let err = text(&o.stderr);
    assert!(o.status.success(), "imgforge test:\n{err}");
    let line = text(&o.stdout).trim().to_string();
    let (head, counts) = line.rsplit_once("checks=").unwrap_or(("", ""));
    let (n, m) = counts.split_once('/').unwrap_or(("", "-"));
    assert!(
        head.starts_with("IMGFORGE-READY role=prospectlab target=rpi4") && n == m,
        "{line}\n{err}"
    );
    // The venv holds the aarch64 build of the compiled dependency, not the build machine's
    // (read from the card's root slot A, logical partition 6 of its MBR, with debugfs).
    let img = out.join("prospectlab-rpi4.img");
    let (root_off, _) = common::partition(&img, 6);
    let dir = "/opt/prospectlab/venv/lib/python3.13/site-packages/psycopg_binary";
    let listing = common::debugfs(&img, root_off, &format!("ls {dir}"));
    assert!(
        listing.contains("cpython-313-aarch64-linux-gnu.so")
            && !listing.contains("x86_64-linux-gnu"),
        "{dir}:\n{listing}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// A copy of the checkout's profiles with the test role crc-src and its site, whose app
/// source is `app` (tests/fixtures/apps/crc-src or a copy of it).
fn profiles_with_crc_role(name: &str, app: &Path) -> PathBuf {
    let dir = tmp(name);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    common::run(
        Command::new("cp")
            .arg("-r")
            .arg(root.join("profiles"))
            .arg(&dir),
    );
    std::fs::copy(
        root.join("tests/fixtures/roles/crc-src.toml"),
        dir.join("profiles/roles/crc-src.toml"),
    )
    .unwrap();
    let site = std::fs::read_to_string(root.join("tests/fixtures/sites/crc-src.toml")).unwrap();
    std::fs::write(
        dir.join("profiles/sites/crc-src.toml"),
        site.replace("APP_DIR", app.to_str().unwrap()),
    )
    .unwrap();
    dir.join("profiles")
}

/// The machine's cache (base and builder roots, apt, binaries) with an empty wheel cache
/// and no apps stage output: a build with it fetches and builds every wheel.
fn cache_with_empty_wheels(name: &str) -> PathBuf {
    // The builder roots are the machine's too, even before the first is made.
    std::fs::create_dir_all(cache_dir().join("stages/builder")).unwrap();
    let dir = cache_without_apps(name);
    std::fs::remove_file(dir.join("wheels")).unwrap();
    std::fs::create_dir(dir.join("wheels")).unwrap();
    dir
}

/// The arguments that pick the crc-src role and site from a profiles copy.
fn crc_role(profiles: &Path) -> [&str; 6] {
    [
        "--profiles",
        profiles.to_str().unwrap(),
        "--role",
        "crc-src",
        "--site",
        "crc-src",
    ]
}

fn build_crc(profiles: &Path, target: &str, out: &Path, cache: &Path, offline: bool) -> Output {
    build(
        &[
            &crc_role(profiles)[..],
            &[
                "--target",
                target,
                "--out",
                out.to_str().unwrap(),
                "--cache",
                cache.to_str().unwrap(),
            ],
        ]
        .concat(),
        offline,
    )
}

/// The one apps tar in a test cache's own apps folder.
fn only_apps_tar(cache: &Path) -> PathBuf {
    let tars: Vec<_> = std::fs::read_dir(cache.join("stages/apps"))
        .unwrap()
        .map(|e| e.unwrap().path().join("apps.tar"))
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(tars.len(), 1, "one apps stage output: {tars:?}");
    tars[0].clone()
}

/// `imgforge lock` for a requirement that publishes no wheel (crcmod): wheels alone cannot
/// satisfy it (uv's reason shown), so the lock is resolved for both CPUs with source
/// archives allowed, pins crcmod with its source archive's hash, and says that the build
/// compiles it. Fast (~10 s); the network.
#[test]
fn lock_pins_a_package_without_wheels_by_its_source_archive_and_says_it_will_be_built() {
    let app = tmp("crc-lock-app");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        root.join("tests/fixtures/apps/crc-src/check.py"),
        app.join("check.py"),
    )
    .unwrap();
    std::fs::write(app.join("requirements.in"), "crcmod==1.7\n").unwrap();
    let profiles = profiles_with_crc_role("crc-lock-profiles", &app);
    // The machine's uv (tools) with a wheel cache of the test's own.
    let cache = tmp("crc-lock-cache");
    let shared = cache_dir().join("tools");
    if shared.is_dir() {
        std::os::unix::fs::symlink(&shared, cache.join("tools")).unwrap();
    }
    let o = common::imgforge(
        &[
            &["lock", "crc"][..],
            &crc_role(&profiles),
            &["--cache", cache.to_str().unwrap()],
        ]
        .concat(),
    );
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("wheels alone do not satisfy it for")
            && err.contains("crcmod==1.7 has no usable wheels")
            && err.contains("x86_64, glibc 2.41, source archives allowed")
            && err.contains("aarch64, glibc 2.41, source archives allowed"),
        "{err}"
    );
    assert!(
        err.contains("no wheel for x86_64 of crcmod")
            && err.contains("no wheel for aarch64 of crcmod")
            && err.contains("`imgforge build` builds them from source"),
        "{err}"
    );
    let lock = std::fs::read_to_string(app.join("requirements.txt")).unwrap();
    assert!(lock.contains("crcmod==1.7"), "{lock}");
    assert!(
        lock.contains(&format!("--hash=sha256:{CRCMOD_SDIST}")),
        "{lock}"
    );
}

const CRCMOD_SDIST: &str = "dc7051a0db5f2bd48665a990d3ec1cc305a466a77358ca4492826f41f283601e";

/// crcmod 1.7 publishes a source archive only, with a C extension: the build compiles it for
/// the image (cp313, x86_64) in the builder root, says so, and installs the compiled module;
/// the next build (network cut, apps stage rerun) builds and downloads nothing and gives the
/// same apps tar; a build with another empty wheel cache compiles the same wheel bytes.
#[test]
#[ignore = "slow: builds the crc-src test role three times (~2.5 min with its base and builder roots cached, ~6 min cold); needs root and the network"]
fn a_package_without_a_wheel_is_built_from_source_for_the_target_then_cached() {
    let _g = serial();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apps/crc-src");
    let profiles = profiles_with_crc_role("crc-profiles", &src);
    let out = tmp("crc-out");
    let cache = cache_with_empty_wheels("crc-cache1");
    let o = build_crc(&profiles, "x86_64-vm", &out, &cache, false);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("app crc: built crcmod 1.7 from source for x86_64 (native) in "),
        "{err}"
    );
    let wheel = cache.join(format!(
        "wheels/built/{CRCMOD_SDIST}/cp313-x86_64-glibc2.41/crcmod-1.7-cp313-cp313-linux_x86_64.whl"
    ));
    assert!(wheel.is_file(), "{}\n{err}", wheel.display());
    let tar1 = only_apps_tar(&cache);
    let list = common::run(Command::new("tar").arg("-tf").arg(&tar1));
    assert!(
        list.contains(
            "opt/crc/venv/lib/python3.13/site-packages/crcmod/_crcfunext.cpython-313-x86_64-linux-gnu.so"
        ),
        "{list}"
    );

    // Warm, offline, the apps stage rerun: nothing fetched, nothing built, the same tar.
    let first = sha256(&tar1);
    std::fs::remove_dir_all(tar1.parent().unwrap()).unwrap();
    let o = build_crc(&profiles, "x86_64-vm", &out, &cache, true);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("wheels       cached"), "{err}");
    assert!(!err.contains("from source"), "{err}");
    assert_eq!(
        sha256(&only_apps_tar(&cache)),
        first,
        "same lock, same venv"
    );

    // Another empty wheel cache: crcmod compiled again, to the same wheel bytes.
    let cache2 = cache_with_empty_wheels("crc-cache2");
    let o = build_crc(&profiles, "x86_64-vm", &out, &cache2, false);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("built crcmod 1.7 from source"), "{err}");
    assert_eq!(
        sha256(&cache2.join(wheel.strip_prefix(&cache).unwrap())),
        sha256(&wheel),
        "the wheel built from source is reproducible"
    );
    for d in [&out, &cache, &cache2, &profiles] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A lock whose hash for crcmod is not its source archive's: refused before anything is
/// built, naming the app, the file and line, and the requirement.
#[test]
#[ignore = "slow: asks the package index (~5 s); needs the network"]
fn a_lock_without_the_source_archives_hash_is_refused_naming_app_file_line_and_requirement() {
    let _g = serial();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let app = tmp("crc-badhash-app");
    std::fs::copy(
        root.join("tests/fixtures/apps/crc-src/check.py"),
        app.join("check.py"),
    )
    .unwrap();
    let lock =
        std::fs::read_to_string(root.join("tests/fixtures/apps/crc-src/requirements.txt")).unwrap();
    std::fs::write(
        app.join("requirements.txt"),
        lock.replace(CRCMOD_SDIST, &"0".repeat(64)),
    )
    .unwrap();
    let profiles = profiles_with_crc_role("crc-badhash-profiles", &app);
    let out = tmp("crc-badhash-out");
    let cache = cache_with_empty_wheels("crc-badhash-cache");
    let o = build_crc(&profiles, "x86_64-vm", &out, &cache, false);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let want = format!(
        "app `crc`: {}/requirements.txt line 3: `crcmod==1.7`: no wheel of crcmod 1.7 fits the image (Python 3.13 (cp313), x86_64, glibc 2.41), so it is built from its source archive, but the lock lists no hash of that archive (the index's has sha256 {CRCMOD_SDIST})",
        app.display()
    );
    assert!(err.contains(&want), "missing {want:?} in\n{err}");
    assert!(!err.contains("built crcmod"), "{err}");
    for d in [&out, &cache, &app, &profiles] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The same for a Pi 4 card: crcmod compiled by the aarch64 builder root under qemu-user.
#[test]
#[ignore = "heavy: builds crc-src for rpi4 (arm64 base and builder roots under emulation: ~25 min cold, ~1.5 min with them cached)"]
fn heavy_a_package_without_a_wheel_is_built_from_source_for_aarch64_under_emulation() {
    let _g = serial();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apps/crc-src");
    let profiles = profiles_with_crc_role("crc-arm-profiles", &src);
    let out = tmp("crc-arm-out");
    let cache = cache_with_empty_wheels("crc-arm-cache");
    let o = build_crc(&profiles, "rpi4", &out, &cache, false);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("app crc: built crcmod 1.7 from source for aarch64 (emulated) in "),
        "{err}"
    );
    assert!(cache
        .join(format!(
            "wheels/built/{CRCMOD_SDIST}/cp313-aarch64-glibc2.41/crcmod-1.7-cp313-cp313-linux_aarch64.whl"
        ))
        .is_file());
    let list = common::run(Command::new("tar").arg("-tf").arg(only_apps_tar(&cache)));
    assert!(
        list.contains(
            "opt/crc/venv/lib/python3.13/site-packages/crcmod/_crcfunext.cpython-313-aarch64-linux-gnu.so"
        ),
        "{list}"
    );
    for d in [&out, &cache, &profiles] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// psycopg2's source archive (its hash listed) does not build in the builder, which has no
/// PostgreSQL headers nor pg_config: refused naming the app, the file and line, the
/// requirement, with the tail of the build's log.
#[test]
#[ignore = "slow: unpacks the x86_64 builder root and runs the failing build (~30 s with the root cached); needs root and the network"]
fn a_source_archive_that_does_not_build_is_refused_with_the_tail_of_its_log() {
    let _g = serial();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let app = tmp("crc-nobuild-app");
    std::fs::copy(
        root.join("tests/fixtures/apps/crc-src/check.py"),
        app.join("check.py"),
    )
    .unwrap();
    std::fs::write(
        app.join("requirements.txt"),
        "psycopg2==2.9.10 --hash=sha256:12ec0b40b0273f95296233e8750441339298e6a572f7039da5b260e3c8b60e11\n",
    )
    .unwrap();
    let profiles = profiles_with_crc_role("crc-nobuild-profiles", &app);
    let out = tmp("crc-nobuild-out");
    let cache = cache_with_empty_wheels("crc-nobuild-cache");
    let o = build_crc(&profiles, "x86_64-vm", &out, &cache, false);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let want = format!(
        "app `crc`: {}/requirements.txt line 1: `psycopg2==2.9.10`: no wheel of psycopg2 2.9.10 fits the image, and building it from source for x86_64 failed: ",
        app.display()
    );
    assert!(err.contains(&want), "missing {want:?} in\n{err}");
    assert!(err.contains("The build's last lines:"), "{err}");
    assert!(err.contains("pg_config"), "the log's tail: {err}");
    assert!(!out.join("crc-src-x86_64-vm.img").exists());
    for d in [&out, &cache, &app, &profiles] {
        let _ = std::fs::remove_dir_all(d);
    }
}
