//! The device (or file) an image is written to, and the checks before writing it.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::exit::UserError;
use crate::progress::fmt_bytes;
use crate::tool;

/// What lsblk says of a device and its partitions.
#[derive(Debug, Deserialize)]
pub struct BlockDev {
    pub name: String,
    pub path: String,
    pub size: u64,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub rm: bool,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub mountpoints: Vec<Option<String>>,
    #[serde(default)]
    pub children: Vec<BlockDev>,
}

#[derive(Debug, Deserialize)]
struct Lsblk {
    blockdevices: Vec<BlockDev>,
}

pub enum Target {
    Device { path: PathBuf, info: BlockDev },
    File { path: PathBuf },
}

impl Target {
    pub fn path(&self) -> &Path {
        match self {
            Target::Device { path, .. } | Target::File { path } => path,
        }
    }
}

fn user(msg: String) -> anyhow::Error {
    UserError(msg).into()
}

/// Resolves and checks `path`. A regular file is written only with `file_target`.
pub fn check(path: &Path, image_size: u64, force: bool, file_target: bool) -> Result<Target> {
    let meta = std::fs::metadata(path);
    match meta {
        Ok(m) if m.file_type().is_block_device() => {}
        Ok(m) if m.is_file() => {
            if !file_target {
                return Err(user(format!("{} is a regular file, not a device; pass --file-target to write the image into a file", path.display())));
            }
            return Ok(Target::File {
                path: path.to_path_buf(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && file_target => {
            return Ok(Target::File {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(user(format!("{}: {e}", path.display()))),
        Ok(_) => {
            return Err(user(format!(
                "{} is neither a block device nor a regular file",
                path.display()
            )))
        }
    }
    let info = lsblk(path)?;
    if info.kind == "part" {
        return Err(user(format!(
            "{} is a partition; give the whole device (the image holds its own partition table)",
            path.display()
        )));
    }
    let mut mounted = Vec::new();
    collect_mounts(&info, &mut mounted);
    if !mounted.is_empty() {
        return Err(user(format!(
            "{} is in use: mounted at {}; unmount it first",
            path.display(),
            mounted.join(", ")
        )));
    }
    let names = all_names(&info);
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    for line in swaps.lines().skip(1) {
        let dev = line.split_whitespace().next().unwrap_or("");
        let base = Path::new(dev)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if names.contains(&base) {
            return Err(user(format!(
                "{} is in use: {dev} is active swap; swapoff it first",
                path.display()
            )));
        }
    }
    for n in &names {
        let holders = std::fs::read_dir(format!("/sys/class/block/{n}/holders"))
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if !holders.is_empty() {
            return Err(user(format!(
                "{} is in use: /dev/{n} is held by {} (LVM, RAID or encryption)",
                path.display(),
                holders.join(", ")
            )));
        }
    }
    if !info.rm && !force {
        return Err(user(format!(
            "{} ({}) is not a removable device; pass --force if you are sure it is the card",
            path.display(),
            describe(&info)
        )));
    }
    if info.size < image_size {
        return Err(user(format!(
            "{} holds {}, less than the image's {}",
            path.display(),
            fmt_bytes(info.size),
            fmt_bytes(image_size)
        )));
    }
    Ok(Target::Device {
        path: path.to_path_buf(),
        info,
    })
}

fn lsblk(path: &Path) -> Result<BlockDev> {
    tool::require(&tool::HostTool {
        program: "lsblk",
        package: "util-linux",
    })?;
    let out = tool::run(
        Command::new("lsblk")
            .args([
                "-J",
                "-b",
                "-o",
                "NAME,PATH,SIZE,MODEL,SERIAL,RM,TYPE,MOUNTPOINTS",
            ])
            .arg(path),
    )?;
    let mut l: Lsblk = serde_json::from_slice(&out).context("reading lsblk's JSON")?;
    l.blockdevices
        .pop()
        .with_context(|| format!("lsblk knows no device {}", path.display()))
}

fn collect_mounts(d: &BlockDev, out: &mut Vec<String>) {
    for m in d.mountpoints.iter().flatten() {
        out.push(format!("{m} ({})", d.path));
    }
    for c in &d.children {
        collect_mounts(c, out);
    }
}

fn all_names(d: &BlockDev) -> Vec<String> {
    let mut v = vec![d.name.clone()];
    for c in &d.children {
        v.extend(all_names(c));
    }
    v
}

pub fn describe(d: &BlockDev) -> String {
    format!(
        "{}, serial {}, {}, {}",
        d.model
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .unwrap_or("unknown model"),
        d.serial
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .unwrap_or("unknown"),
        format_args!("{:.1} GiB", d.size as f64 / (1u64 << 30) as f64),
        if d.rm { "removable" } else { "fixed" }
    )
}

/// Shows what will be erased and asks; `yes` answers for the user.
pub fn confirm(target: &Target, image: &Path, yes: bool) -> Result<()> {
    let what = match target {
        Target::Device { path, info } => format!("{}: {}", path.display(), describe(info)),
        Target::File { path } => format!("{} (a file)", path.display()),
    };
    eprintln!("imgforge: target {what}");
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(user("refusing to erase without confirmation: pass --yes when standard input is not a terminal".into()));
    }
    eprint!(
        "Write {} to {}? Everything on it will be erased. Type yes: ",
        image.display(),
        target.path().display()
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        return Err(user("not confirmed; nothing written".into()));
    }
    Ok(())
}

/// Opens the target for writing; a device exclusively (O_EXCL: the kernel refuses if
/// anything has it mounted or claimed in the meantime).
pub fn open(target: &Target, image_size: u64) -> Result<(File, u64)> {
    match target {
        Target::Device { path, info } => {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_EXCL)
                .open(path)
                .with_context(|| {
                    format!("opening {} exclusively (is it in use?)", path.display())
                })?;
            Ok((f, info.size))
        }
        Target::File { path } => {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            if f.metadata()?.len() < image_size {
                f.set_len(image_size)?;
            }
            let len = f.metadata()?.len();
            Ok((f, len))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lsblk_json() {
        let json = r#"{"blockdevices":[{"name":"sdb","path":"/dev/sdb","size":31914983424,"model":"SD Card Reader ","serial":"0123","rm":true,"type":"disk","mountpoints":[null],
            "children":[{"name":"sdb1","path":"/dev/sdb1","size":268435456,"model":null,"serial":null,"rm":true,"type":"part","mountpoints":["/media/boot"]}]}]}"#;
        let l: Lsblk = serde_json::from_str(json).unwrap();
        let d = &l.blockdevices[0];
        assert_eq!(
            describe(d),
            "SD Card Reader, serial 0123, 29.7 GiB, removable"
        );
        let mut m = Vec::new();
        collect_mounts(d, &mut m);
        assert_eq!(m, ["/media/boot (/dev/sdb1)"]);
        assert_eq!(all_names(d), ["sdb", "sdb1"]);
    }
}
