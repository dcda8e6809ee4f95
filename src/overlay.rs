//! Overlay files copied into images: `overlays/common/` for every image and
//! `overlays/<role>/` for one role, the role's winning where both have a path.
//!
//! A file ending in `.tera` is rendered with the plan and written without the suffix. A file
//! whose content starts with `#!` is installed executable (0755), every other file 0644:
//! the embedded copy keeps no modes, so the rule must not depend on them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use include_dir::{include_dir, Dir};

static EMBEDDED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/overlays");

#[derive(Debug, Clone)]
pub enum OverlaySource {
    Embedded,
    Dir(PathBuf),
}

/// One overlay file: its path in the image (no leading `/`), content, and origin for errors.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlayFile {
    pub path: String,
    pub content: Vec<u8>,
    pub origin: String,
}

impl OverlayFile {
    pub fn is_template(&self) -> bool {
        self.path.ends_with(".tera")
    }

    pub fn mode(&self) -> u32 {
        if self.content.starts_with(b"#!") {
            0o755
        } else {
            0o644
        }
    }
}

impl OverlaySource {
    /// `--overlays DIR` if given, else `./overlays` if present, else the embedded copy.
    pub fn choose(flag: Option<&Path>) -> Result<Self> {
        if let Some(dir) = flag {
            if !dir.is_dir() {
                bail!("overlays folder {} does not exist", dir.display());
            }
            return Ok(OverlaySource::Dir(dir.to_path_buf()));
        }
        if Path::new("overlays/common").is_dir() {
            return Ok(OverlaySource::Dir(PathBuf::from("overlays")));
        }
        Ok(OverlaySource::Embedded)
    }

    /// The files for `role`: common first, then the role's, keyed by image path.
    pub fn files_for(&self, role: &str) -> Result<BTreeMap<String, OverlayFile>> {
        let mut out = BTreeMap::new();
        for layer in ["common", role] {
            for f in self.layer(layer)? {
                out.insert(f.path.clone(), f);
            }
        }
        Ok(out)
    }

    fn layer(&self, name: &str) -> Result<Vec<OverlayFile>> {
        let mut files = Vec::new();
        match self {
            OverlaySource::Embedded => {
                if let Some(d) = EMBEDDED.get_dir(name) {
                    collect_embedded(d, name, &mut files);
                }
            }
            OverlaySource::Dir(root) => {
                let dir = root.join(name);
                if dir.is_dir() {
                    collect_dir(&dir, &dir, &mut files)?;
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }
}

fn collect_embedded(d: &Dir<'static>, layer: &str, out: &mut Vec<OverlayFile>) {
    for f in d.files() {
        let rel = f.path().strip_prefix(layer).unwrap_or(f.path());
        out.push(OverlayFile {
            path: rel.to_string_lossy().into_owned(),
            content: f.contents().to_vec(),
            origin: format!("overlays/{} (embedded)", f.path().display()),
        });
    }
    for sub in d.dirs() {
        collect_embedded(sub, layer, out);
    }
}

fn collect_dir(root: &Path, dir: &Path, out: &mut Vec<OverlayFile>) -> Result<()> {
    let rd = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for e in rd {
        let e = e?;
        let p = e.path();
        let ft = e.file_type()?;
        if ft.is_dir() {
            collect_dir(root, &p, out)?;
        } else if ft.is_file() {
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            let content = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            out.push(OverlayFile {
                path: rel,
                content,
                origin: p.display().to_string(),
            });
        } else {
            bail!(
                "{}: overlays hold regular files and folders only",
                p.display()
            );
        }
    }
    Ok(())
}
