//! First boot: take the secrets `imgforge seed` or `imgforge flash --secrets` left in the
//! seed area, place them, generate the generated ones, then wipe the seed area. Runs before
//! the role's services (their units are ordered after it) and until it has completed once:
//! a card first booted unseeded can be seeded and booted again.
//!
//! Growing the data partition to the disk is systemd's job on GPT disks (systemd-repart grows the
//! last partition, `x-systemd.growfs` in fstab grows the filesystem); this step only
//! reports the sizes it finds.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result};
use seed_area::Slot;

use crate::secrets;

pub const SEED_DEVICE: &str = "/dev/disk/by-partlabel/imgforge-seed";
pub const MARKER: &str = "/var/lib/imgforge/firstboot.done";

/// What one run did, names only: it is logged, so it must never hold a value.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub seeded: Vec<String>,
    pub ignored: Vec<String>,
    pub generated: Vec<String>,
    pub missing: Vec<String>,
    pub wiped: bool,
}

impl Outcome {
    pub fn log_line(&self) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(",")
            }
        };
        format!(
            "imgforge-firstboot: seeded={} generated={} missing={} seed-area={}{}",
            list(&self.seeded),
            list(&self.generated),
            list(&self.missing),
            if self.wiped { "wiped" } else { "empty" },
            if self.ignored.is_empty() {
                String::new()
            } else {
                format!(" ignored-unknown={}", self.ignored.join(","))
            },
        )
    }
}

/// Runs first boot against `device` (the seed partition, or an image file in tests) and the
/// secrets folder `dir`.
pub fn run(slots: &[Slot], device: &Path, dir: &Path) -> Result<Outcome> {
    let mut out = Outcome::default();
    match OpenOptions::new().read(true).write(true).open(device) {
        Ok(mut dev) => {
            let mut area = vec![0u8; seed_area::SIZE as usize];
            dev.read_exact(&mut area)
                .with_context(|| format!("reading the seed area {}", device.display()))?;
            let state = seed_area::parse(&area)
                .with_context(|| format!("reading the seed area {}", device.display()))?;
            if let Some(values) = state.secrets {
                for (name, value) in &values {
                    if slots.iter().any(|s| &s.name == name) {
                        secrets::write(dir, name, value.as_bytes())?;
                        out.seeded.push(name.clone());
                    } else {
                        out.ignored.push(name.clone());
                    }
                }
                // Every value is on disk and synced before the only other copy goes.
                wipe(&mut dev)
                    .with_context(|| format!("wiping the seed area {}", device.display()))?;
                out.wiped = true;
            }
        }
        // An image without a seed area (or a disk moved to another machine) still boots:
        // seeded slots are then missing and reported as such.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("opening the seed area {}", device.display()))
        }
    }
    for s in slots {
        if secrets::present(dir, &s.name) {
            continue;
        }
        if s.generate {
            secrets::write(dir, &s.name, secrets::generate()?.as_bytes())?;
            out.generated.push(s.name.clone());
        } else if s.required {
            out.missing.push(s.name.clone());
        } else if !secrets::path(dir, &s.name).exists() {
            // An optional slot left empty is an empty credential: the unit's LoadCredential=
            // needs a file, and the service reads "no value" as "feature off".
            secrets::write(dir, &s.name, b"")?;
        }
    }
    Ok(out)
}

/// Zeroes the secrets region (the slot list stays: it names slots, holds no value) and
/// syncs, so the values leave the card once they are in the root filesystem.
fn wipe(dev: &mut File) -> std::io::Result<()> {
    let len = (seed_area::SIZE - seed_area::SECRETS_AT) as usize;
    dev.seek(SeekFrom::Start(seed_area::SECRETS_AT))?;
    dev.write_all(&vec![0u8; len])?;
    dev.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn slot(name: &str, required: bool, generate: bool) -> Slot {
        Slot {
            name: name.into(),
            description: "d".into(),
            service: "s".into(),
            required,
            generate,
            kind: Default::default(),
        }
    }

    #[test]
    fn places_seeded_values_generates_the_rest_and_wipes() {
        let base = std::env::temp_dir().join(format!("worker-firstboot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let (dev, dir) = (base.join("seed"), base.join("secrets"));
        let slots = [
            slot("htpasswd", true, false),
            slot("key", false, true),
            slot("opt", false, false),
            slot("token", true, false),
        ];

        // Unseeded: the generated slot is made, the required ones are reported missing.
        std::fs::write(&dev, seed_area::initial_area(&slots).unwrap()).unwrap();
        let o = run(&slots, &dev, &dir).unwrap();
        assert_eq!(
            (o.generated.clone(), o.missing.clone(), o.wiped),
            (
                vec!["key".to_string()],
                vec!["htpasswd".to_string(), "token".to_string()],
                false
            )
        );
        let key = std::fs::read(dir.join("key")).unwrap();
        assert_eq!(
            std::fs::read(dir.join("opt")).unwrap(),
            b"",
            "an optional slot is an empty credential"
        );

        // Seeded later: values placed, the seed area's secrets region zeroed, the generated
        // key left as it was, an unknown name ignored and named (never its value).
        let mut area = std::fs::read(&dev).unwrap();
        let values = BTreeMap::from([
            ("htpasswd".to_string(), "u:$2y$hash".to_string()),
            ("token".to_string(), "T0KEN-VALUE".to_string()),
            ("stray".to_string(), "STRAY-VALUE".to_string()),
        ]);
        area[seed_area::SECRETS_AT as usize..]
            .copy_from_slice(&seed_area::secrets_region(&values).unwrap());
        std::fs::write(&dev, &area).unwrap();
        let o = run(&slots, &dev, &dir).unwrap();
        assert_eq!(o.seeded, ["htpasswd", "token"]);
        assert_eq!(o.ignored, ["stray"]);
        assert!(o.generated.is_empty() && o.missing.is_empty() && o.wiped);
        assert_eq!(std::fs::read(dir.join("token")).unwrap(), b"T0KEN-VALUE");
        assert_eq!(
            std::fs::read(dir.join("key")).unwrap(),
            key,
            "a generated secret survives later runs"
        );
        let after = std::fs::read(&dev).unwrap();
        assert!(
            after[seed_area::SECRETS_AT as usize..]
                .iter()
                .all(|b| *b == 0),
            "secrets region wiped"
        );
        assert_eq!(
            seed_area::parse(&after).unwrap().slots,
            slots,
            "the slot list stays"
        );
        let line = o.log_line();
        assert!(
            !line.contains("VALUE")
                && line.contains("seeded=htpasswd,token")
                && line.contains("ignored-unknown=stray"),
            "{line}"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
