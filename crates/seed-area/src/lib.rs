//! The seed area: a small raw partition (GPT name `imgforge-seed`) outside the root
//! filesystem. At build time imgforge writes the slot list (names, never values) into it;
//! `imgforge seed` and `imgforge flash --secrets` add the secret values; the node's worker
//! reads them on first boot, places them, and wipes them. This crate is the one definition
//! of that format, so the writer (imgforge) and the reader (worker) cannot drift apart.
//!
//! Layout: the slot record at 0, the secrets record at 64 KiB. A record is a 16-byte magic,
//! the payload length (u32 LE), 4 zero bytes, the payload's sha256, then the TOML payload.
//! An all-zero record is "absent".

pub mod card;
pub mod disk;
pub mod ready;
pub mod version;

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The GPT partition name (and so `/dev/disk/by-partlabel/` name) of the seed area.
pub const PART_NAME: &str = "imgforge-seed";
/// Size of the seed partition.
pub const SIZE: u64 = 1024 * 1024;
const SLOTS_AT: usize = 0;
/// Where the secrets record starts; everything from here to [`SIZE`] is wiped after use.
pub const SECRETS_AT: u64 = 64 * 1024;
const HEADER: usize = 56;
const SLOTS_MAGIC: &[u8; 16] = b"IMGFORGE-SLOTS\0\0";
const SECRETS_MAGIC: &[u8; 16] = b"IMGFORGE-SEED\0\0\0";

/// A named secret the node needs. The image carries the name, never a value.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Slot {
    /// Key of the secret in the secrets file, e.g. `jupyter-htpasswd`.
    pub name: String,
    pub description: String,
    /// The service (unit name without .service) that reads it, as a systemd credential of
    /// the same name.
    pub service: String,
    /// Seeding must give a value (unless `generate` is set).
    #[serde(default = "yes")]
    pub required: bool,
    /// The node may generate the value on first boot when none is seeded.
    #[serde(default)]
    pub generate: bool,
    /// What the value is, so a seeded value can be checked before it is written to a card
    /// and a boot test can make a throwaway one the service accepts.
    #[serde(default, skip_serializing_if = "SlotKind::is_secret")]
    pub kind: SlotKind,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotKind {
    /// Any text: a password, a key, a token (generated: 32 random bytes in hex).
    #[default]
    Secret,
    /// htpasswd lines `user:hash` (bcrypt `$2y$`/`$2b$` or `$argon2id$`).
    Htpasswd,
    /// The gateway's sign-in users: `user:hash:totp-secret` lines (the hash as htpasswd's,
    /// the TOTP secret in base32, as authenticator apps take it).
    LoginUsers,
}

impl SlotKind {
    fn is_secret(&self) -> bool {
        *self == SlotKind::Secret
    }

    /// Why `value` is not a value of this kind (naming the line, never showing it).
    pub fn check(&self, value: &str) -> Result<(), String> {
        match self {
            SlotKind::Secret => Ok(()),
            SlotKind::Htpasswd => {
                for (i, line) in value
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                {
                    let ok = line
                        .split_once(':')
                        .is_some_and(|(user, hash)| !user.is_empty() && is_password_hash(hash));
                    if !ok {
                        return Err(format!(
                            "line {} is not `user:hash` with a bcrypt or argon2id hash (htpasswd -nB USER makes one)",
                            i + 1
                        ));
                    }
                }
                Ok(())
            }
            SlotKind::LoginUsers => {
                for (i, line) in value
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty() && !l.trim().starts_with('#'))
                {
                    let mut parts = line.trim().splitn(3, ':');
                    let (user, hash, secret) = (
                        parts.next().unwrap_or(""),
                        parts.next().unwrap_or(""),
                        parts.next().unwrap_or(""),
                    );
                    let secret = secret.trim().trim_end_matches('=');
                    let base32 = !secret.is_empty()
                        && secret
                            .chars()
                            .all(|c| matches!(c.to_ascii_uppercase(), 'A'..='Z' | '2'..='7'));
                    if user.is_empty() || !is_password_hash(hash) || !base32 {
                        return Err(format!(
                            "line {} is not `user:hash:totp-secret` with a bcrypt or argon2id hash \
                             (htpasswd -nB USER makes one) and a base32 TOTP secret",
                            i + 1
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

/// A hash the gateway verifies: bcrypt (`htpasswd -B`) or argon2id.
fn is_password_hash(hash: &str) -> bool {
    ["$2y$", "$2b$", "$2a$", "$argon2id$"]
        .iter()
        .any(|p| hash.starts_with(p))
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize, Deserialize)]
struct SlotList {
    #[serde(default, rename = "slot")]
    slots: Vec<Slot>,
}

fn encode(magic: &[u8; 16], payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + payload.len());
    v.extend_from_slice(magic);
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(&[0u8; 4]);
    v.extend_from_slice(&Sha256::digest(payload));
    v.extend_from_slice(payload);
    v
}

/// The payload of the record at `at`, `None` if the record is absent (all zero).
fn decode<'a>(area: &'a [u8], at: usize, magic: &[u8; 16], what: &str) -> Result<Option<&'a [u8]>> {
    let Some(head) = area.get(at..at + HEADER) else {
        bail!("the seed area is too short for its {what} record")
    };
    if head.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    if &head[..16] != magic {
        bail!("the seed area's {what} record has an unknown format");
    }
    let len = u32::from_le_bytes(head[16..20].try_into().expect("4 bytes")) as usize;
    let Some(payload) = area.get(at + HEADER..at + HEADER + len) else {
        bail!("the seed area's {what} record is truncated")
    };
    if Sha256::digest(payload).as_slice() != &head[24..56] {
        bail!("the seed area's {what} record fails its checksum");
    }
    Ok(Some(payload))
}

/// The seed partition's bytes as built: the slot record, zeros elsewhere.
pub fn initial_area(slots: &[Slot]) -> Result<Vec<u8>> {
    let text = toml::to_string(&SlotList {
        slots: slots.to_vec(),
    })
    .context("writing the slot list")?;
    let rec = encode(SLOTS_MAGIC, text.as_bytes());
    if rec.len() as u64 > SECRETS_AT {
        bail!("the slot list is larger than the seed area's 64 KiB for it");
    }
    let mut area = vec![0u8; SIZE as usize];
    area[..rec.len()].copy_from_slice(&rec);
    Ok(area)
}

/// The bytes of the secrets region (from [`SECRETS_AT`] to the end) holding `values`.
/// Errors if they do not fit.
pub fn secrets_region(values: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let payload = toml::to_string(values).context("encoding the secrets")?;
    let rec = encode(SECRETS_MAGIC, payload.as_bytes());
    let size = (SIZE - SECRETS_AT) as usize;
    if rec.len() > size {
        bail!(
            "the secrets are larger than the seed area's {} KiB",
            size / 1024
        );
    }
    let mut region = vec![0u8; size];
    region[..rec.len()].copy_from_slice(&rec);
    Ok(region)
}

/// What the seed area holds: the slot list and, if seeded, the values.
pub struct SeedState {
    pub slots: Vec<Slot>,
    pub secrets: Option<BTreeMap<String, String>>,
}

/// Reads a whole seed area (at least up to the end of its records).
pub fn parse(area: &[u8]) -> Result<SeedState> {
    let slots = match decode(area, SLOTS_AT, SLOTS_MAGIC, "slot list")? {
        Some(p) => {
            toml::from_str::<SlotList>(std::str::from_utf8(p)?)
                .context("parsing the slot list")?
                .slots
        }
        None => bail!("the seed area holds no slot list"),
    };
    let secrets = match decode(area, SECRETS_AT as usize, SECRETS_MAGIC, "secrets")? {
        // The parse error is not shown: toml's messages quote the offending text, which
        // here would be a secret.
        Some(p) => Some(
            std::str::from_utf8(p)
                .ok()
                .and_then(|t| toml::from_str(t).ok())
                .context("the seeded secrets record is not a table of strings")?,
        ),
        None => None,
    };
    Ok(SeedState { slots, secrets })
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
    fn records_round_trip_and_detect_damage() {
        let mut area = initial_area(&slots()).unwrap();
        let state = parse(&area).unwrap();
        assert_eq!(state.slots, slots());
        assert!(state.secrets.is_none(), "unseeded");

        let values = BTreeMap::from([("jupyter-htpasswd".to_string(), "u:h".to_string())]);
        area[SECRETS_AT as usize..].copy_from_slice(&secrets_region(&values).unwrap());
        assert_eq!(parse(&area).unwrap().secrets, Some(values));

        let mut bad = area.clone();
        bad[HEADER + 3] ^= 1;
        assert!(parse(&bad).err().unwrap().to_string().contains("checksum"));
        let mut bad = area.clone();
        bad[SECRETS_AT as usize + HEADER] ^= 1;
        assert!(parse(&bad)
            .err()
            .unwrap()
            .to_string()
            .contains("secrets record fails its checksum"));
    }

    #[test]
    fn secrets_too_large_for_the_area_are_refused() {
        let values = BTreeMap::from([("k".to_string(), "x".repeat(SIZE as usize))]);
        assert!(secrets_region(&values)
            .unwrap_err()
            .to_string()
            .contains("larger than"));
    }
}
