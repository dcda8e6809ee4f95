//! The apps' bytecode, kept per source file: a `.py` compiled once by the image's Python is
//! not compiled again by a later build.
//!
//! Writing the `.pyc` needs the image's own interpreter (its magic number and marshal
//! format), so the apps stage unpacks the base root and runs it in a chroot, under
//! qemu-user for arm64: 20 to 60 s for prospectlab's 36 wheels, most of a warm rebuild of the
//! stage. Yet a `.pyc` written with `--invalidation-mode unchecked-hash` and
//! `PYTHONHASHSEED=0` depends only on the interpreter, the source's bytes and the path it is
//! compiled at (its `co_filename`), and its file mode on the source's. So each one is kept
//! under the hash of exactly those, in `~/.cache/imgforge/bytecode/`; a build whose every
//! `.py` is found there writes the `.pyc` itself and runs no Python at all. A source the
//! compiler refused is recorded too (`.none`), as compileall leaves it: as source.
//!
//! The walk is compileall's: every `*.py` under the app's folder, symlinked folders and
//! `__pycache__` not entered.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Target;
use crate::cache::sha256_bytes;

/// compileall's options, the same for the compile and the cache key (a change to them is
/// a new key, not a stale hit).
pub const COMPILEALL_OPTS: &str = "-q --invalidation-mode unchecked-hash";

pub struct BytecodeCache {
    dir: PathBuf,
    /// `cpython-313`: the tag in a `.pyc`'s name (`importlib.util.cache_from_source`).
    tag: String,
    /// What else a `.pyc` depends on: the interpreter's exact build and CPU, and the options.
    interpreter: String,
}

/// A `.py` whose bytecode the cache does not hold: its path in the image and its key.
pub struct Missing {
    pub path: String,
    key: String,
}

/// What `apply` did for one app folder.
pub struct Applied {
    pub from_cache: usize,
    pub missing: Vec<Missing>,
}

impl BytecodeCache {
    /// `python_build` is the image's interpreter package version (`3.13.5-2`), from the
    /// base's package list: a rebuilt interpreter is a new key.
    pub fn new(dir: PathBuf, target: &Target, python_build: &str) -> BytecodeCache {
        BytecodeCache {
            dir,
            tag: format!("cpython-{}", target.python.replace('.', "")),
            interpreter: format!(
                "python{} {python_build} {} PYTHONHASHSEED=0 compileall {COMPILEALL_OPTS}",
                target.python,
                target.machine()
            ),
        }
    }

    fn entry(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(key)
    }

    /// The `.pyc` path compileall writes for `py` (`a/b.py` -> `a/__pycache__/b.cpython-313.pyc`).
    fn pyc_of(&self, py: &Path) -> PathBuf {
        let stem = py.file_stem().unwrap_or_default().to_string_lossy();
        py.with_file_name("__pycache__")
            .join(format!("{stem}.{}.pyc", self.tag))
    }

    /// Writes, under `root`, the cached bytecode of every `.py` of the image folder `top`
    /// (`/opt/<app>`), and returns the sources the cache does not hold.
    pub fn apply(&self, root: &Path, top: &str) -> Result<Applied> {
        let mut out = Applied {
            from_cache: 0,
            missing: Vec::new(),
        };
        let base = root.join(top.trim_start_matches('/'));
        let walk = walkdir::WalkDir::new(&base)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| !(e.file_type().is_dir() && e.file_name() == "__pycache__"));
        for e in walk {
            let e = e.with_context(|| format!("listing {}", base.display()))?;
            let p = e.path();
            if p.extension().is_none_or(|x| x != "py") || e.file_type().is_dir() {
                continue;
            }
            // compileall compiles what `os.path.isfile` accepts: a symlink to a file too.
            let Ok(meta) = fs::metadata(p) else { continue };
            if !meta.is_file() {
                continue;
            }
            let source = fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let rel = p.strip_prefix(root).expect("under root");
            let path = format!("/{}", rel.display());
            let mut id = format!(
                "imgforge-bytecode-v1\n{}\n{path}\n{:o}\n",
                self.interpreter,
                meta.permissions().mode() & 0o7777
            )
            .into_bytes();
            id.extend_from_slice(&source);
            let key = sha256_bytes(&id);
            let entry = self.entry(&key);
            let cached = entry.with_extension("pyc");
            if cached.is_file() {
                let pyc = self.pyc_of(p);
                let dir = pyc.parent().expect("__pycache__");
                fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                // fs::copy keeps the cached file's mode, which is the one compileall gave.
                fs::copy(&cached, &pyc).with_context(|| {
                    format!("copying {} to {}", cached.display(), pyc.display())
                })?;
                out.from_cache += 1;
            } else if entry.with_extension("none").is_file() {
                out.from_cache += 1;
            } else {
                out.missing.push(Missing { path, key });
            }
        }
        Ok(out)
    }

    /// Keeps what the image's Python wrote under `root` for each of `missing`: its `.pyc`
    /// with its mode, or the fact that it wrote none. Each entry appears whole (a rename),
    /// so two builds storing one key at once both leave a good file.
    pub fn store(&self, root: &Path, missing: &[Missing]) -> Result<()> {
        for m in missing {
            let entry = self.entry(&m.key);
            let dir = entry.parent().expect("two-level entry");
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let pyc = self.pyc_of(&root.join(m.path.trim_start_matches('/')));
            let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), m.key));
            let dest = match fs::metadata(&pyc) {
                Ok(meta) => {
                    fs::copy(&pyc, &tmp).with_context(|| format!("copying {}", pyc.display()))?;
                    fs::set_permissions(
                        &tmp,
                        fs::Permissions::from_mode(meta.permissions().mode()),
                    )?;
                    entry.with_extension("pyc")
                }
                Err(_) => {
                    fs::write(&tmp, b"")?;
                    entry.with_extension("none")
                }
            };
            fs::rename(&tmp, &dest).with_context(|| format!("writing {}", dest.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::machine::Arch;

    fn cache(dir: &Path) -> BytecodeCache {
        let t = Target::for_suite("trixie", Arch::Amd64).unwrap();
        BytecodeCache::new(dir.join("bytecode"), &t, "3.13.5-2")
    }

    fn write(p: &Path, text: &str, mode: u32) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_stored_pyc_comes_back_with_its_mode_and_a_refused_source_stays_source() {
        let d = tempfile::tempdir().unwrap();
        let c = cache(d.path());
        // The same two sources under another root: one that compiles, one that does not.
        let sources = |root: &Path| {
            let app = root.join("opt/web");
            write(&app.join("app.py"), "x = 1\n", 0o644);
            write(
                &app.join("venv/lib/python3.13/site-packages/m/bad.py"),
                "def (\n",
                0o644,
            );
            app
        };
        let root = d.path().join("root");
        let app = sources(&root);
        write(&app.join("venv/bin/tool"), "#!/bin/sh\n", 0o755);
        // A symlinked folder is not entered (compileall does not), a __pycache__ neither.
        std::os::unix::fs::symlink("lib", app.join("venv/lib64")).unwrap();
        write(&app.join("__pycache__/stale.py"), "y = 2\n", 0o644);

        let first = c.apply(&root, "/opt/web").unwrap();
        assert_eq!(first.from_cache, 0);
        let paths: Vec<_> = first.missing.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/opt/web/app.py",
                "/opt/web/venv/lib/python3.13/site-packages/m/bad.py"
            ]
        );
        // What compileall would leave: app.py compiled (mode 0644 from a 0644 source),
        // bad.py not.
        write(&app.join("__pycache__/app.cpython-313.pyc"), "PYC", 0o644);
        c.store(&root, &first.missing).unwrap();

        let again = d.path().join("again");
        let app2 = sources(&again);
        let second = c.apply(&again, "/opt/web").unwrap();
        assert_eq!((second.from_cache, second.missing.len()), (2, 0));
        let pyc = app2.join("__pycache__/app.cpython-313.pyc");
        assert_eq!(fs::read(&pyc).unwrap(), b"PYC");
        assert_eq!(
            fs::metadata(&pyc).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert!(!app2
            .join("venv/lib/python3.13/site-packages/m/__pycache__")
            .exists());
    }

    #[test]
    fn another_path_content_mode_or_interpreter_is_another_key() {
        let d = tempfile::tempdir().unwrap();
        let c = cache(d.path());
        let root = d.path().join("root");
        write(&root.join("opt/web/app.py"), "x = 1\n", 0o644);
        let m = c.apply(&root, "/opt/web").unwrap().missing;
        write(
            &root.join("opt/web/__pycache__/app.cpython-313.pyc"),
            "PYC",
            0o644,
        );
        c.store(&root, &m).unwrap();
        let key = |root: &Path, c: &BytecodeCache, top: &str| {
            let a = c.apply(root, top).unwrap();
            a.missing.first().map(|m| m.key.clone())
        };
        assert_eq!(key(&root, &c, "/opt/web"), None, "the same file is a hit");

        let moved = d.path().join("moved");
        write(&moved.join("opt/api/app.py"), "x = 1\n", 0o644);
        assert!(
            key(&moved, &c, "/opt/api").is_some(),
            "another path (co_filename)"
        );
        let edited = d.path().join("edited");
        write(&edited.join("opt/web/app.py"), "x = 2\n", 0o644);
        assert!(key(&edited, &c, "/opt/web").is_some(), "other bytes");
        let mode = d.path().join("mode");
        write(&mode.join("opt/web/app.py"), "x = 1\n", 0o600);
        assert!(
            key(&mode, &c, "/opt/web").is_some(),
            "another mode (the .pyc's follows it)"
        );
        let t = Target::for_suite("trixie", Arch::Arm64).unwrap();
        let arm = BytecodeCache::new(d.path().join("bytecode"), &t, "3.13.5-2");
        assert!(
            key(&root, &arm, "/opt/web").is_some(),
            "another interpreter"
        );
    }
}
