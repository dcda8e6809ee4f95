//! Where an app slot's files come from: a folder or a tarball the site names (relative to
//! the site file), or, with the embedded profiles, the embedded copy of `examples/`. All
//! read into one sorted list of files, whose hash keys the apps stage.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use include_dir::{include_dir, Dir};

static EMBEDDED_EXAMPLES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/examples");

/// One file of an app: its path inside the app folder, content and mode.
#[derive(Debug, Clone, PartialEq)]
pub struct AppFile {
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
}

/// Resolves `rel` (as written in the site file) against the site file's folder. With
/// embedded profiles, `site_dir` is None and the path must lead into `examples/`.
pub fn resolve(site_dir: Option<&Path>, rel: &str) -> String {
    match site_dir {
        Some(d) => normalize(&d.join(rel)).display().to_string(),
        None => format!(
            "embedded:{}",
            normalize(&Path::new("profiles/sites").join(rel)).display()
        ),
    }
}

/// Lexically removes `.` and `..` (the embedded paths are not on disk to canonicalize).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Reads every file of the source.
pub fn read(source: &str) -> Result<Vec<AppFile>> {
    let mut files = BTreeMap::new();
    if let Some(rel) = source.strip_prefix("embedded:") {
        let sub = rel.strip_prefix("examples/").ok_or_else(|| {
            anyhow!("app source `{rel}`: with the embedded profiles only examples/ is available; pass --profiles DIR to use your own")
        })?;
        let dir = EMBEDDED_EXAMPLES.get_dir(sub).ok_or_else(|| {
            anyhow!("app source `{rel}`: no such folder in the embedded examples")
        })?;
        walk_embedded(dir, sub, &mut files);
    } else {
        let p = Path::new(source);
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if p.is_dir() {
            walk_dir(p, p, &mut files)?;
        } else if name.ends_with(".tar") || name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            read_tar(p, name.ends_with(".tar"), &mut files)?;
        } else if p.exists() {
            bail!("app source {source}: not a folder, .tar or .tar.gz");
        } else {
            bail!("app source {source} does not exist");
        }
    }
    if files.is_empty() {
        bail!("app source {source} holds no files");
    }
    Ok(files.into_values().collect())
}

fn walk_embedded(dir: &Dir, base: &str, out: &mut BTreeMap<String, AppFile>) {
    for f in dir.files() {
        let path = f
            .path()
            .strip_prefix(base)
            .unwrap_or(f.path())
            .display()
            .to_string();
        // include_dir keeps no modes: scripts of the examples are run through their
        // interpreter, so 0644 is right for all.
        add(out, path, f.contents().to_vec(), false);
    }
    for d in dir.dirs() {
        walk_embedded(d, base, out);
    }
}

/// Records one file; an executable one keeps its x bits, every other is 0644.
fn add(out: &mut BTreeMap<String, AppFile>, path: String, content: Vec<u8>, executable: bool) {
    let mode = if executable { 0o755 } else { 0o644 };
    out.insert(
        path.clone(),
        AppFile {
            path,
            content,
            mode,
        },
    );
}

/// Python's caches and version control are never part of an app.
fn skipped(name: &str) -> bool {
    matches!(
        name,
        "__pycache__" | ".git" | ".venv" | "venv" | "node_modules"
    ) || name.ends_with(".pyc")
}

fn walk_dir(root: &Path, dir: &Path, out: &mut BTreeMap<String, AppFile>) -> Result<()> {
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if skipped(&name) {
            continue;
        }
        let p = e.path();
        let meta = fs::symlink_metadata(&p)?;
        if meta.is_dir() {
            walk_dir(root, &p, out)?;
        } else if meta.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            let content = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            add(out, rel, content, meta.permissions().mode() & 0o111 != 0);
        } else {
            bail!(
                "app source {}: {} is neither a file nor a folder (links are not copied)",
                root.display(),
                p.display()
            );
        }
    }
    Ok(())
}

fn read_tar(p: &Path, plain: bool, out: &mut BTreeMap<String, AppFile>) -> Result<()> {
    let f = fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let reader: Box<dyn Read> = if plain {
        Box::new(f)
    } else {
        Box::new(flate2::read::GzDecoder::new(f))
    };
    let mut ar = tar::Archive::new(reader);
    for e in ar
        .entries()
        .with_context(|| format!("reading {}", p.display()))?
    {
        let mut e = e.with_context(|| format!("reading {}", p.display()))?;
        let path = e.path()?.to_path_buf();
        let rel = normalize(&path);
        if rel.starts_with("..") || rel.is_absolute() {
            bail!(
                "{}: entry {} points outside the app",
                p.display(),
                path.display()
            );
        }
        if rel
            .components()
            .any(|c| skipped(&c.as_os_str().to_string_lossy()))
        {
            continue;
        }
        if e.header().entry_type().is_file() {
            let executable = e.header().mode()? & 0o111 != 0;
            let mut content = Vec::new();
            e.read_to_end(&mut content)?;
            add(out, rel.display().to_string(), content, executable);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_resolve_against_the_site_file() {
        assert_eq!(
            resolve(Some(Path::new("/p/profiles/sites")), "../../examples/a"),
            "/p/examples/a"
        );
        assert_eq!(resolve(None, "../../examples/a"), "embedded:examples/a");
    }

    #[test]
    fn the_embedded_examples_read_like_the_folder() {
        let embedded = read(&resolve(None, "../../examples/flask-prefix")).unwrap();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/flask-prefix");
        let on_disk = read(dir).unwrap();
        let names = |v: &[AppFile]| {
            v.iter()
                .map(|f| (f.path.clone(), f.content.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&embedded), names(&on_disk));
        assert!(embedded.iter().any(|f| f.path == "templates/index.html"));
        let err = read(&resolve(None, "../../elsewhere/app"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("only examples/ is available"), "{err}");
    }

    #[test]
    fn a_folder_and_its_tarball_read_the_same_files() {
        let d = tempfile::tempdir().unwrap();
        let app = d.path().join("app");
        fs::create_dir_all(app.join("templates")).unwrap();
        fs::create_dir_all(app.join("__pycache__")).unwrap();
        fs::write(app.join("app.py"), "print(1)\n").unwrap();
        fs::write(app.join("templates/base.html"), "<p>\n").unwrap();
        fs::write(app.join("__pycache__/app.cpython-313.pyc"), "x").unwrap();
        let from_dir = read(&app.display().to_string()).unwrap();
        assert_eq!(
            from_dir.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["app.py", "templates/base.html"]
        );
        let tarball = d.path().join("app.tar");
        let ok = std::process::Command::new("tar")
            .arg("-C")
            .arg(&app)
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .status()
            .unwrap();
        assert!(ok.success());
        assert_eq!(read(&tarball.display().to_string()).unwrap(), from_dir);
        assert!(read("/nonexistent/app")
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
    }
}
