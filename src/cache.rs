//! The stage cache: content-hash keys and atomically committed stage outputs.
//!
//! Each stage's output lives in `<cache>/stages/<stage>/<key>/`. A stage builds into a
//! temporary folder beside it and renames it into place only once complete, so an
//! interrupted build never leaves a half-written entry that a later build would trust.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// How a stage output being written is named, before the writing process's id:
/// `<cache>/stages/<stage>/.tmp-<pid>-<random>`.
pub const PENDING_PREFIX: &str = ".tmp-";

/// Bumped when a stage's output format changes, so old cache entries stop matching.
pub const FORMAT_VERSION: &str = "imgforge-cache-1";

/// Where caches live: `$IMGFORGE_CACHE`, else `$XDG_CACHE_HOME/imgforge`, else
/// `~/.cache/imgforge`. Always outside the checkout so CI on this machine reuses it.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("IMGFORGE_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("imgforge");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/imgforge")
}

/// Builds a key from labelled parts; labels keep `("a","bc")` and `("ab","c")` apart.
#[derive(Clone)]
pub struct KeyBuilder(Sha256);

impl KeyBuilder {
    pub fn new(stage: &str) -> Self {
        let mut h = Sha256::new();
        h.update(FORMAT_VERSION.as_bytes());
        let mut kb = KeyBuilder(h);
        kb.add("stage", stage.as_bytes());
        kb
    }

    pub fn add(&mut self, label: &str, value: &[u8]) -> &mut Self {
        self.0.update((label.len() as u64).to_le_bytes());
        self.0.update(label.as_bytes());
        self.0.update((value.len() as u64).to_le_bytes());
        self.0.update(value);
        self
    }

    pub fn add_str(&mut self, label: &str, value: &str) -> &mut Self {
        self.add(label, value.as_bytes())
    }

    /// The source files of the code producing the stage (see `stage::code`).
    pub fn add_code(&mut self, sources: &[&[u8]]) -> &mut Self {
        for (i, src) in sources.iter().enumerate() {
            self.add(&format!("code-{i}"), src);
        }
        self
    }

    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_bytes(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// The cache folder and its stage entries.
pub struct Cache {
    root: PathBuf,
}

/// A stage output being written; becomes visible to others only through `commit`.
pub struct Pending {
    tmp: tempfile::TempDir,
    dest: PathBuf,
}

impl Cache {
    pub fn open(root: PathBuf) -> Result<Self> {
        fs::create_dir_all(root.join("stages"))
            .with_context(|| format!("creating cache folder {}", root.display()))?;
        Ok(Cache { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Long-lived folders that are not stage outputs (apt's download cache, cargo's target).
    pub fn aux_dir(&self, name: &str) -> Result<PathBuf> {
        let d = self.root.join(name);
        fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }

    fn entry(&self, stage: &str, key: &str) -> PathBuf {
        self.root.join("stages").join(stage).join(key)
    }

    /// The committed output folder of `stage` under `key`, if there is one. A hit is
    /// recorded (the `.complete` marker's mtime) so pruning keeps entries still in use.
    pub fn lookup(&self, stage: &str, key: &str) -> Option<PathBuf> {
        let p = self.entry(stage, key);
        let marker = p.join(".complete");
        if !marker.is_file() {
            return None;
        }
        let _ = fs::File::options()
            .append(true)
            .open(&marker)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        Some(p)
    }

    /// Removes the least recently used committed entries of `stage` beyond the newest
    /// `keep`, sparing any used in the last hour (another build may be copying it out, or a
    /// test suite's other lane may still read an entry it looked up at its start).
    /// Without this every overlay edit would leave a root tar and a disk image behind.
    pub fn prune(&self, stage: &str, keep: usize) -> Result<Vec<PathBuf>> {
        prune_dir(&self.root.join("stages").join(stage), keep)
    }

    /// Starts writing the output of `stage` under `key` in a temporary folder.
    pub fn begin(&self, stage: &str, key: &str) -> Result<Pending> {
        let parent = self.root.join("stages").join(stage);
        fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
        // The process id in the name says whose build a pending folder is: builds run side
        // by side on one cache (the test suite's two lanes, a user's two terminals).
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{PENDING_PREFIX}{}-", std::process::id()))
            .tempdir_in(&parent)
            .with_context(|| format!("creating a temporary folder in {}", parent.display()))?;
        Ok(Pending {
            tmp,
            dest: self.entry(stage, key),
        })
    }
}

/// How many entries of each stage a commit keeps: enough root tars and disk images for the
/// roles and targets built in turn on one machine, few of the disk images (up to 2 GiB each,
/// and quick to remake from the root tar), more of the small binaries and venvs.
fn keep_for(stage: &str) -> usize {
    match stage {
        "binaries" => 16,
        "apps" => 8,
        "image" => 4,
        // The test suite's CI part builds ten bases (on x86_64: four roles, two test
        // roles, the proxy with the update engine, the wheel test's; the proxy on rpi4);
        // boot-arm64.sh and the apps bench add four arm64 ones. Each is minutes to remake,
        // under emulation many, so none may push out another on a machine that runs both.
        "base" => 14,
        _ => 6,
    }
}

/// How long an entry is kept after its last use whatever the counts say. An hour: the test
/// suite's slow lanes run side by side, and one lane's image tests read entries they looked
/// up minutes earlier while the other lane commits many more.
const PRUNE_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

fn prune_dir(dir: &Path, keep: usize) -> Result<Vec<PathBuf>> {
    let Ok(rd) = fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut entries = Vec::new();
    for e in rd.flatten() {
        let path = e.path();
        if e.file_name().to_string_lossy().starts_with('.') {
            continue; // another build's pending output
        }
        if let Ok(m) = fs::metadata(path.join(".complete")).and_then(|m| m.modified()) {
            entries.push((m, path));
        }
    }
    entries.sort_by(|a, b| b.0.cmp(&a.0));
    let recent = std::time::SystemTime::now() - PRUNE_GRACE;
    let mut removed = Vec::new();
    for (used, path) in entries.into_iter().skip(keep) {
        if used > recent {
            continue;
        }
        // The marker goes first: a half-removed entry is then never trusted.
        fs::remove_file(path.join(".complete"))
            .with_context(|| format!("pruning {}", path.display()))?;
        fs::remove_dir_all(&path).with_context(|| format!("pruning {}", path.display()))?;
        removed.push(path);
    }
    Ok(removed)
}

impl Pending {
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Marks the output complete and renames it into place. If another build committed the
    /// same key first, that entry wins (same key, same content) and ours is dropped.
    pub fn commit(self) -> Result<PathBuf> {
        fs::write(self.tmp.path().join(".complete"), b"")
            .with_context(|| format!("marking {} complete", self.tmp.path().display()))?;
        let tmp = self.tmp.keep();
        // Rename first, check after: two builds of one key (the suite's two lanes, two
        // terminals) may commit at the same moment, and a check-then-rename could remove an
        // entry the other has just committed and is reading.
        for attempt in 0..2 {
            match fs::rename(&tmp, &self.dest) {
                Ok(()) => break,
                // The other build's entry won (same key, same content): ours goes.
                Err(_) if self.dest.join(".complete").is_file() => {
                    let _ = fs::remove_dir_all(&tmp);
                    break;
                }
                // An incomplete leftover (a crash between mkdir and rename cannot make one,
                // but a hand-edited cache can): replace it, once.
                Err(_) if attempt == 0 && self.dest.exists() => {
                    fs::remove_dir_all(&self.dest)
                        .with_context(|| format!("removing stale {}", self.dest.display()))?;
                }
                Err(e) => {
                    let _ = fs::remove_dir_all(&tmp);
                    return Err(e).with_context(|| {
                        format!("renaming {} to {}", tmp.display(), self.dest.display())
                    });
                }
            }
        }
        if let (Some(dir), Some(stage)) = (
            self.dest.parent(),
            self.dest.parent().and_then(|p| p.file_name()),
        ) {
            // Pruning is housekeeping: failing at it must not fail the build.
            if let Err(e) = prune_dir(dir, keep_for(&stage.to_string_lossy())) {
                eprintln!("imgforge: warning: {e:#}");
            }
        }
        Ok(self.dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_labels_and_values() {
        let k = |parts: &[(&str, &str)]| {
            let mut b = KeyBuilder::new("s");
            for (l, v) in parts {
                b.add_str(l, v);
            }
            b.finish()
        };
        assert_eq!(k(&[("a", "x")]), k(&[("a", "x")]));
        assert_ne!(k(&[("a", "bc")]), k(&[("ab", "c")]));
        assert_ne!(k(&[("a", "x")]), k(&[("a", "y")]));
    }

    #[test]
    fn entry_is_visible_only_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().to_path_buf()).unwrap();
        assert!(cache.lookup("base", "k1").is_none());
        let p = cache.begin("base", "k1").unwrap();
        fs::write(p.path().join("out"), b"data").unwrap();
        assert!(cache.lookup("base", "k1").is_none());
        let dest = p.commit().unwrap();
        assert_eq!(fs::read(dest.join("out")).unwrap(), b"data");
        assert!(cache.lookup("base", "k1").is_some());
    }

    #[test]
    fn prune_keeps_the_most_recently_used_and_the_recently_touched() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().to_path_buf()).unwrap();
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(10 * 86400);
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            let d = cache.begin("image", k).unwrap().commit().unwrap();
            let f = fs::File::options()
                .append(true)
                .open(d.join(".complete"))
                .unwrap();
            f.set_modified(long_ago + std::time::Duration::from_secs(i as u64))
                .unwrap();
        }
        // "a" is the oldest but was just used: a lookup records it.
        assert!(cache.lookup("image", "a").is_some());
        let removed = cache.prune("image", 2).unwrap();
        let names: Vec<_> = removed
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["c", "b"], "a was used now and d is the newest");
        assert!(cache.lookup("image", "a").is_some() && cache.lookup("image", "d").is_some());
        assert!(cache.lookup("image", "b").is_none());
    }

    #[test]
    fn two_builds_of_one_key_both_commit_and_the_first_entry_stays() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().to_path_buf()).unwrap();
        let first = cache.begin("binaries", "k").unwrap();
        let second = cache.begin("binaries", "k").unwrap();
        fs::write(first.path().join("out"), b"first").unwrap();
        fs::write(second.path().join("out"), b"second").unwrap();
        let a = first.commit().unwrap();
        // The second finds the key committed when its rename fails, and drops its own.
        let b = second.commit().unwrap();
        assert_eq!(a, b);
        assert_eq!(fs::read(a.join("out")).unwrap(), b"first");
        let names: Vec<_> = fs::read_dir(dir.path().join("stages/binaries"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["k"], "no pending folder left");
    }

    #[test]
    fn a_pending_folder_names_its_process() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().to_path_buf()).unwrap();
        let p = cache.begin("image", "k").unwrap();
        let name = p.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(&format!("{PENDING_PREFIX}{}-", std::process::id())),
            "{name}"
        );
    }

    #[test]
    fn dropped_pending_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().to_path_buf()).unwrap();
        {
            let p = cache.begin("compose", "k").unwrap();
            fs::write(p.path().join("half"), b"x").unwrap();
        }
        let left: Vec<_> = fs::read_dir(dir.path().join("stages/compose"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
