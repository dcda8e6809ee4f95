//! Reading profile files, from a folder on disk and from the copy embedded in the binary.
//!
//! The embedded copy makes `imgforge` work from any folder. A `profiles/` folder in the
//! working directory, or one named by `--profiles`, adds to it: its files are read first,
//! so a file of the same name (`roles/proxy.toml`) replaces the embedded one, and every
//! other embedded target, role and site stays available.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use include_dir::{include_dir, Dir};
use serde::de::DeserializeOwned;

static EMBEDDED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/profiles");

/// Where profile files come from.
#[derive(Debug, Clone)]
pub enum ProfileSource {
    /// Only the embedded copy.
    Embedded,
    /// This folder's files, then the embedded ones.
    Dir(PathBuf),
}

/// One profile file's text and the name to show in messages.
#[derive(Debug)]
pub struct ProfileFile {
    pub display: String,
    pub text: String,
    /// The folder it was read from; `None` for the embedded copy.
    pub dir: Option<PathBuf>,
}

/// Where a listed profile comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Embedded,
    /// Only in the folder.
    Folder,
    /// In the folder, replacing the embedded file of the same name.
    Replaces,
}

impl ProfileSource {
    /// `--profiles DIR` if given, else `./profiles` if present, else the embedded copy alone.
    pub fn choose(flag: Option<&Path>) -> Result<Self> {
        if let Some(dir) = flag {
            if !dir.is_dir() {
                bail!("profiles folder {} does not exist", dir.display());
            }
            return Ok(ProfileSource::Dir(dir.to_path_buf()));
        }
        let cwd = Path::new("profiles");
        if cwd.is_dir() {
            return Ok(ProfileSource::Dir(cwd.to_path_buf()));
        }
        Ok(ProfileSource::Embedded)
    }

    pub fn describe(&self) -> String {
        match self {
            ProfileSource::Embedded => "embedded profiles".into(),
            ProfileSource::Dir(d) => format!("profiles in {} and the embedded ones", d.display()),
        }
    }

    fn embedded(rel: &str) -> Option<ProfileFile> {
        EMBEDDED.get_file(rel).map(|f| ProfileFile {
            display: format!("profiles/{rel} (embedded)"),
            text: String::from_utf8_lossy(f.contents()).into_owned(),
            dir: None,
        })
    }

    /// Reads `rel` (e.g. `roles/proxy.toml`): the folder's file, else the embedded one;
    /// `None` when neither exists.
    pub fn read(&self, rel: &str) -> Result<Option<ProfileFile>> {
        match self {
            ProfileSource::Embedded => Ok(Self::embedded(rel)),
            ProfileSource::Dir(dir) => {
                let p = dir.join(rel);
                if !p.exists() {
                    return Ok(Self::embedded(rel));
                }
                let text = std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?;
                Ok(Some(ProfileFile {
                    display: p.display().to_string(),
                    text,
                    dir: Some(dir.clone()),
                }))
            }
        }
    }

    /// Where `<sub>/<name>.toml` comes from. A folder's file identical to the embedded one
    /// (the checkout's own profiles/) counts as the embedded one.
    pub fn origin(&self, sub: &str, name: &str) -> Origin {
        let rel = format!("{sub}/{name}.toml");
        let ProfileSource::Dir(d) = self else {
            return Origin::Embedded;
        };
        let Ok(text) = std::fs::read(d.join(&rel)) else {
            return Origin::Embedded;
        };
        match EMBEDDED.get_file(&rel) {
            Some(f) if f.contents() == text.as_slice() => Origin::Embedded,
            Some(_) => Origin::Replaces,
            None => Origin::Folder,
        }
    }

    /// Names (without `.toml`) of the files in `sub` (targets, roles, sites), sorted: the
    /// folder's and the embedded ones.
    pub fn list(&self, sub: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = EMBEDDED
            .get_dir(sub)
            .map(|d| {
                d.files()
                    .filter_map(|f| f.path().file_name()?.to_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if let ProfileSource::Dir(dir) = self {
            match std::fs::read_dir(dir.join(sub)) {
                Ok(rd) => names.extend(rd.filter_map(|e| e.ok()?.file_name().into_string().ok())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("listing {}", dir.join(sub).display()))
                }
            }
        }
        names.retain(|n| n.ends_with(".toml"));
        for n in names.iter_mut() {
            n.truncate(n.len() - ".toml".len());
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Reads and parses `<sub>/<name>.toml`; an unknown name lists the known ones.
    pub fn load_named<T: DeserializeOwned>(
        &self,
        sub: &str,
        kind: &str,
        name: &str,
    ) -> Result<(T, ProfileFile)> {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !name.starts_with('.');
        let file = if valid {
            self.read(&format!("{sub}/{name}.toml"))?
        } else {
            None
        };
        let Some(file) = file else {
            let known = self.list(sub)?;
            return Err(anyhow!(
                "unknown {kind} `{name}`; known {kind}s: {} ({})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                },
                self.describe()
            ));
        };
        let value = parse_toml(&file.display, &file.text)?;
        Ok((value, file))
    }
}

/// Parses TOML into `T`. Errors read `FILE:LINE:COLUMN: key `K`: MESSAGE`.
pub fn parse_toml<T: DeserializeOwned>(display: &str, text: &str) -> Result<T> {
    toml_errors::parse(display, text).map_err(|e| anyhow!(e))
}

pub use toml_errors::line_col;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::schema::{Layer, Site};

    #[test]
    fn unknown_key_names_file_line_column_and_key() {
        let text = "arch = \"amd64\"\n\n[qemu]\nmachine = \"q35\"\nmemroy-mib = 1024\n";
        let err = parse_toml::<Layer>("targets/x.toml", text)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "targets/x.toml:5:1: key `qemu.memroy-mib`: unknown field `memroy-mib`"
            ),
            "{err}"
        );
        assert!(err.contains("memory-mib"), "lists the expected keys: {err}");
    }

    #[test]
    fn wrong_type_names_the_nested_key() {
        let text = "domain = \"example.test\"\n[[host]]\nname = \"edge\"\nrole = 7\n";
        let err = parse_toml::<Site>("sites/s.toml", text)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("sites/s.toml:4:8: key `host[0].role`: invalid type: integer `7`"),
            "{err}"
        );
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse_toml::<Layer>("roles/r.toml", "packages = [\"a\",\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("roles/r.toml:"), "{err}");
    }

    #[test]
    fn embedded_profiles_parse_and_list() {
        let src = ProfileSource::Embedded;
        let targets = src.list("targets").unwrap();
        assert!(targets.contains(&"x86_64-vm".to_string()), "{targets:?}");
        for t in targets {
            src.load_named::<Layer>("targets", "target", &t).unwrap();
        }
        for r in src.list("roles").unwrap() {
            src.load_named::<Layer>("roles", "role", &r).unwrap();
        }
        for s in src.list("sites").unwrap() {
            src.load_named::<Site>("sites", "site", &s).unwrap();
        }
    }

    #[test]
    fn unknown_name_lists_known_ones() {
        let err = ProfileSource::Embedded
            .load_named::<Layer>("roles", "role", "nope")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("unknown role `nope`; known roles: "),
            "{err}"
        );
        assert!(err.contains("proxy"), "{err}");
        let err = ProfileSource::Embedded
            .load_named::<Layer>("roles", "role", "../targets/x86_64-vm")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("unknown role"),
            "a path is not a name: {err}"
        );
    }
}
