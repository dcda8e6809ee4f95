//! The image to flash: a raw .img or an .img.xz (decompressed by xz as it is read), and its
//! bmap (`<name>.img.bmap`, the name bmaptool also looks for).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::artifact::bmap::{self, Bmap};
use crate::tool::{self, HostTool};

pub const XZ: HostTool = HostTool {
    program: "xz",
    package: "xz-utils",
};

pub struct Source {
    pub path: PathBuf,
    pub size: u64,
    pub compressed: bool,
}

/// A sequential reader of the image's bytes.
pub enum Reader {
    Raw(File),
    Xz(Child),
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Reader::Raw(f) => f.read(buf),
            Reader::Xz(c) => c.stdout.as_mut().expect("piped").read(buf),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Reader::Xz(c) = self {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Source {
    pub fn open_path(path: &Path) -> Result<Self> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("opening {}", path.display()))?;
        let compressed = path.extension().is_some_and(|e| e == "xz");
        let size = if compressed {
            xz_size(path)?
        } else {
            meta.len()
        };
        Ok(Source {
            path: path.to_path_buf(),
            size,
            compressed,
        })
    }

    pub fn reader(&self) -> Result<Reader> {
        if self.compressed {
            tool::require(&XZ)?;
            let child = Command::new("xz")
                .args(["-dc", "-T0"])
                .arg(&self.path)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .with_context(|| format!("starting xz -dc {}", self.path.display()))?;
            Ok(Reader::Xz(child))
        } else {
            Ok(Reader::Raw(File::open(&self.path).with_context(|| {
                format!("opening {}", self.path.display())
            })?))
        }
    }

    /// `<name>.img.bmap` beside `<name>.img` or `<name>.img.xz`.
    pub fn default_bmap(&self) -> PathBuf {
        let p = if self.compressed {
            self.path.with_extension("")
        } else {
            self.path.clone()
        };
        let mut s = p.into_os_string();
        s.push(".bmap");
        PathBuf::from(s)
    }
}

/// The uncompressed size recorded in an .xz file's index.
fn xz_size(path: &Path) -> Result<u64> {
    tool::require(&XZ)?;
    let out = tool::run(Command::new("xz").args(["--robot", "--list"]).arg(path))?;
    let text = String::from_utf8_lossy(&out);
    // "totals <streams> <blocks> <compressed> <uncompressed> ..."
    let total = text
        .lines()
        .find(|l| l.starts_with("totals"))
        .and_then(|l| l.split('\t').nth(4));
    match total.and_then(|t| t.parse().ok()) {
        Some(n) => Ok(n),
        None => bail!("xz --list gave no uncompressed size for {}", path.display()),
    }
}

pub fn load_bmap(path: &Path, image_size: u64) -> Result<Bmap> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let map = bmap::parse(&text).with_context(|| format!("reading bmap {}", path.display()))?;
    if map.image_size != image_size {
        bail!(
            "{} describes a {}-byte image, but the image has {} bytes",
            path.display(),
            map.image_size,
            image_size
        );
    }
    Ok(map)
}
