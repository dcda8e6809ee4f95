//! What `imgforge test` and `imgforge boot` boot: the built image never receives a secret
//! value, so a boot of an image with slots runs on a seeded throwaway copy of it.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::DiskArgs;
use crate::plan::Plan;

pub enum BootDisk {
    /// The built image behind a QEMU snapshot: nothing written to it.
    Snapshot(PathBuf),
    /// A seeded copy in a temporary folder, deleted when dropped.
    Copy {
        path: PathBuf,
        _dir: tempfile::TempDir,
    },
    /// The user's disk file, writes kept.
    Given(PathBuf),
}

impl BootDisk {
    pub fn prepare(a: &DiskArgs, plan: &Plan, image: &Path, out_dir: &Path) -> Result<BootDisk> {
        if let Some(d) = &a.disk {
            File::open(d)
                .with_context(|| format!("opening the disk {}", d.display()))
                .map_err(crate::exit::user)?;
            eprintln!("==> disk: booting {} as it is (writes kept)", d.display());
            return Ok(BootDisk::Given(d.clone()));
        }
        if a.unseeded || plan.slots.is_empty() {
            if a.unseeded {
                eprintln!("==> seed: none (--unseeded): required slots stay empty");
            }
            return Ok(BootDisk::Snapshot(image.to_path_buf()));
        }
        let dir = tempfile::Builder::new()
            .prefix(".boot-copy-")
            .tempdir_in(out_dir)
            .with_context(|| {
                format!(
                    "creating a folder for the boot copy in {}",
                    out_dir.display()
                )
            })?;
        let path = dir
            .path()
            .join(image.file_name().expect("image has a file name"));
        seeded_copy(image, &path, a.secrets.as_deref())?;
        Ok(BootDisk::Copy { path, _dir: dir })
    }

    pub fn path(&self) -> &Path {
        match self {
            BootDisk::Snapshot(p) | BootDisk::Given(p) | BootDisk::Copy { path: p, .. } => p,
        }
    }

    /// Whether QEMU should discard the guest's writes.
    pub fn snapshot(&self) -> bool {
        matches!(self, BootDisk::Snapshot(_))
    }
}

/// A sparse copy of the image, seeded with `secrets` or with throwaway values.
fn seeded_copy(image: &Path, copy: &Path, secrets: Option<&Path>) -> Result<()> {
    crate::artifact::sparse::copy_and_hash(image, copy, &[])
        .context("copying the image to boot it")?;
    let mut dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(copy)?;
    match secrets {
        Some(file) => {
            let names = crate::seed::seed(&mut dev, file)?;
            eprintln!(
                "==> seed: the boot copy with {} from {}",
                names.join(", "),
                file.display()
            );
        }
        None => {
            let slots = crate::seed::read(&mut dev)?.slots;
            let values = crate::seed::test_values(&slots)?;
            crate::seed::write_values(&mut dev, &values)?;
            let names: Vec<&str> = values.keys().map(String::as_str).collect();
            eprintln!(
                "==> seed: the boot copy with throwaway test values for {}",
                if names.is_empty() {
                    "no slot".to_string()
                } else {
                    names.join(", ")
                }
            );
        }
    }
    Ok(())
}
