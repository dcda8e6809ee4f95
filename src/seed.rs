//! The host side of the seed area (its format is the `seed-area` crate, shared with the
//! worker that reads it on the node): finding it in an image or card, checking a secrets
//! file against its slots, and writing the values. No value is ever printed or logged.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use crate::disk;
use crate::profile::Slot;
pub use seed_area::{initial_area, SeedState, PART_NAME, SIZE};

/// The seed partition of the disk or image open as `dev`: (offset, length).
pub fn locate(dev: &mut File) -> Result<(u64, u64)> {
    let (_, parts) = disk::read(dev)?;
    let p = parts.iter().find(|p| p.name == PART_NAME).ok_or_else(|| {
        anyhow!("no `{PART_NAME}` partition: this image was not built with a seed area")
    })?;
    Ok((p.offset, p.len))
}

fn read_area(dev: &mut File, offset: u64) -> Result<Vec<u8>> {
    let mut area = vec![0u8; SIZE as usize];
    dev.seek(SeekFrom::Start(offset))?;
    dev.read_exact(&mut area).context("reading the seed area")?;
    Ok(area)
}

pub fn read(dev: &mut File) -> Result<SeedState> {
    let (offset, _) = locate(dev)?;
    seed_area::parse(&read_area(dev, offset)?)
}

/// Checks a secrets file (TOML, one `slot-name = "value"` per slot) against the slots.
/// Errors name the file, line and key, never a value.
pub fn check_secrets(
    display: &str,
    text: &str,
    slots: &[Slot],
) -> Result<BTreeMap<String, String>> {
    type Spanned<T> = toml::Spanned<T>;
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
        crate::profile::load::parse_toml(display, text).map_err(crate::exit::user)?;
    let names: Vec<&str> = slots.iter().map(|s| s.name.as_str()).collect();
    let mut out = BTreeMap::new();
    for (k, v) in &table {
        let (line, col) = crate::profile::load::line_col(text, k.span().start);
        let key = k.get_ref();
        if !names.contains(&key.as_str()) {
            bail!(crate::exit::UserError(format!(
                "{display}:{line}:{col}: key `{key}`: the image has no slot of this name (slots: {})",
                names.join(", ")
            )));
        }
        let value = match v.get_ref() {
            toml::Value::String(s) if !s.is_empty() => s.clone(),
            // The value's type or emptiness only: never the value itself.
            toml::Value::String(_) => bail!(crate::exit::UserError(format!(
                "{display}:{line}:{col}: key `{key}`: the value is empty"
            ))),
            other => bail!(crate::exit::UserError(format!(
                "{display}:{line}:{col}: key `{key}`: the value must be a string, not a {}",
                other.type_str()
            ))),
        };
        if let Some(slot) = slots.iter().find(|s| &s.name == key) {
            if let Err(why) = slot.kind.check(&value) {
                bail!(crate::exit::UserError(format!(
                    "{display}:{line}:{col}: key `{key}`: {why}"
                )));
            }
        }
        out.insert(key.clone(), value);
    }
    let missing: Vec<&str> = slots
        .iter()
        .filter(|s| s.required && !s.generate && !out.contains_key(&s.name))
        .map(|s| s.name.as_str())
        .collect();
    if !missing.is_empty() {
        bail!(crate::exit::UserError(format!(
            "{display}: no value for the required slot(s) {}",
            missing.join(", ")
        )));
    }
    Ok(out)
}

/// Seeds the image or disk open as `dev` with the secrets in `secrets_file`; returns the
/// names seeded. The area's secrets record is replaced whole, then synced.
pub fn seed(dev: &mut File, secrets_file: &Path) -> Result<Vec<String>> {
    let state = read(dev)?;
    let values = check_file(secrets_file, &state.slots)?;
    write_values(dev, &values)?;
    Ok(values.into_keys().collect())
}

/// Reads a secrets file and checks it against `slots` ([`check_secrets`]) and against the
/// room in the seed area, so that nothing is written for a file that cannot be seeded.
pub fn check_file(secrets_file: &Path, slots: &[Slot]) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(secrets_file)
        .with_context(|| format!("reading {}", secrets_file.display()))
        .map_err(crate::exit::user)?;
    let values = check_secrets(&secrets_file.display().to_string(), &text, slots)?;
    seed_area::secrets_region(&values)
        .map_err(|e| crate::exit::UserError(format!("{}: {e:#}", secrets_file.display())))?;
    Ok(values)
}

/// Writes `values` (already checked against the slots) as the seed area's secrets record,
/// replacing any earlier one, then syncs.
pub fn write_values(dev: &mut File, values: &BTreeMap<String, String>) -> Result<()> {
    let region = seed_area::secrets_region(values)?;
    let (offset, _) = locate(dev)?;
    dev.seek(SeekFrom::Start(offset + seed_area::SECRETS_AT))?;
    dev.write_all(&region).context("writing the seed area")?;
    dev.sync_all().context("syncing the seed area")?;
    Ok(())
}

/// Throwaway values for a boot test: 32 random bytes as hex for every slot the node does not
/// generate itself. They exist only in the test's copy of the image.
pub fn test_values(slots: &[Slot]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut urandom = File::open("/dev/urandom").context("opening /dev/urandom")?;
    for s in slots.iter().filter(|s| !s.generate) {
        let mut b = [0u8; 32];
        urandom.read_exact(&mut b)?;
        let random: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let value = match s.kind {
            seed_area::SlotKind::Secret => random,
            // A line the gateway accepts, for a password no one knows (cost 4: a test).
            seed_area::SlotKind::Htpasswd => format!(
                "imgforge-test:{}",
                bcrypt::hash(&random, 4).context("hashing a throwaway htpasswd password")?
            ),
            // A sign-in user no one can use: an unknown password and a random TOTP secret
            // (32 base32 digits: 20 bytes).
            seed_area::SlotKind::LoginUsers => {
                const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
                let totp: String = b
                    .iter()
                    .map(|x| BASE32[(x % 32) as usize] as char)
                    .collect();
                format!(
                    "imgforge-test:{}:{totp}",
                    bcrypt::hash(&random, 4).context("hashing a throwaway sign-in password")?
                )
            }
        };
        out.insert(s.name.clone(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots() -> Vec<Slot> {
        let s = |name: &str, required: bool, generate: bool| Slot {
            name: name.into(),
            description: "d".into(),
            service: "gateway".into(),
            required,
            generate,
            kind: Default::default(),
        };
        vec![
            s("jupyter-htpasswd", true, false),
            s("session-key", false, true),
        ]
    }

    #[test]
    fn secrets_file_errors_name_line_and_key_never_the_value() {
        let text = "jupyter-htpasswd = \"admin:$2y$hash\"\nsesion-key = \"TOPSECRET\"\n";
        let err = check_secrets("s.toml", text, &slots())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("s.toml:2:1: key `sesion-key`: the image has no slot of this name"),
            "{err}"
        );
        assert!(!err.contains("TOPSECRET"), "{err}");
        let err = check_secrets("s.toml", "session-key = \"x\"\n", &slots())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "s.toml: no value for the required slot(s) jupyter-htpasswd"
        );
        let err = check_secrets("s.toml", "jupyter-htpasswd = 12345\n", &slots())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("must be a string, not a integer") && !err.contains("12345"),
            "{err}"
        );
        let ok = check_secrets("s.toml", "jupyter-htpasswd = \"a:b\"\n", &slots()).unwrap();
        assert_eq!(ok.len(), 1, "a generated slot may be left out");
    }

    #[test]
    fn htpasswd_slots_are_checked_and_get_a_working_test_line() {
        let slot = Slot {
            name: "h".into(),
            description: "d".into(),
            service: "gateway".into(),
            required: true,
            generate: false,
            kind: seed_area::SlotKind::Htpasswd,
        };
        let err = check_secrets(
            "s.toml",
            "h = \"ops:plain-password\"\n",
            std::slice::from_ref(&slot),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("s.toml:1:1: key `h`: line 1 is not `user:hash`"),
            "{err}"
        );
        assert!(!err.contains("plain-password"), "never the value: {err}");
        let v = test_values(std::slice::from_ref(&slot)).unwrap();
        let (user, hash) = v["h"].split_once(':').unwrap();
        assert_eq!(user, "imgforge-test");
        assert!(hash.starts_with("$2") && slot.kind.check(&v["h"]).is_ok());
    }

    #[test]
    fn login_users_slots_are_checked_and_get_a_line_the_gateway_accepts() {
        let slot = Slot {
            name: "u".into(),
            description: "d".into(),
            service: "gateway".into(),
            required: false,
            generate: false,
            kind: seed_area::SlotKind::LoginUsers,
        };
        // An htpasswd line without its TOTP secret, and a secret that is not base32.
        for bad in ["ops:$2y$05$abc", "ops:$2y$05$abc:not-base32!"] {
            let err = check_secrets(
                "s.toml",
                &format!("u = '{bad}'\n"),
                std::slice::from_ref(&slot),
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with("s.toml:1:1: key `u`: line 1 is not `user:hash:totp-secret`"),
                "{err}"
            );
        }
        let ok = "ops:$2y$05$abc:JBSWY3DPEHPK3PXP\n";
        assert!(slot.kind.check(ok).is_ok());
        // The throwaway value of a boot test is a line the gateway's users file takes: three
        // fields, a bcrypt hash, 32 base32 digits (20 bytes).
        let v = test_values(std::slice::from_ref(&slot)).unwrap();
        let f: Vec<&str> = v["u"].splitn(3, ':').collect();
        assert_eq!(f.len(), 3, "{}", v["u"]);
        assert!(f[1].starts_with("$2") && f[2].len() == 32, "{}", v["u"]);
        assert!(slot.kind.check(&v["u"]).is_ok());
    }
}
