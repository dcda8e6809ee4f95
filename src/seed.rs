//! The seed area: a small raw partition (GPT name `imgforge-seed`) outside the root
//! filesystem. At build time it receives the slot list (names only); `imgforge seed` and
//! `imgforge flash --secrets` add the secret values; the node's worker reads them on first
//! boot and wipes the area. No value is ever written to the root filesystem or a log.
//!
//! Layout: the slot record at 0, the secrets record at 64 KiB. A record is a 16-byte magic,
//! the payload length (u32 LE), 4 zero bytes, the payload's sha256, then the TOML payload.
//! An all-zero record is "absent".

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::disk::gpt;
use crate::profile::Slot;

pub const PART_NAME: &str = "imgforge-seed";
pub const SIZE: u64 = 1024 * 1024;
const SLOTS_AT: u64 = 0;
const SECRETS_AT: u64 = 64 * 1024;
const HEADER: usize = 56;
const SLOTS_MAGIC: &[u8; 16] = b"IMGFORGE-SLOTS\0\0";
const SECRETS_MAGIC: &[u8; 16] = b"IMGFORGE-SEED\0\0\0";

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
fn decode(area: &[u8], at: u64, magic: &[u8; 16], what: &str) -> Result<Option<Vec<u8>>> {
    let at = at as usize;
    let head = &area[at..at + HEADER];
    if head.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    if &head[..16] != magic {
        bail!("the seed area's {what} record has an unknown format");
    }
    let len = u32::from_le_bytes(head[16..20].try_into().expect("4 bytes")) as usize;
    let end = at + HEADER + len;
    if end > area.len() {
        bail!("the seed area's {what} record is truncated");
    }
    let payload = &area[at + HEADER..end];
    if Sha256::digest(payload).as_slice() != &head[24..56] {
        bail!("the seed area's {what} record fails its checksum");
    }
    Ok(Some(payload.to_vec()))
}

/// The seed partition's bytes as built: the slot record, zeros elsewhere.
pub fn initial_area(slots: &[Slot]) -> Result<Vec<u8>> {
    let text = toml::to_string(&SlotList { slots: slots.to_vec() }).context("writing the slot list")?;
    let rec = encode(SLOTS_MAGIC, text.as_bytes());
    if rec.len() as u64 > SECRETS_AT {
        bail!("the slot list is larger than the seed area's 64 KiB for it");
    }
    let mut area = vec![0u8; SIZE as usize];
    area[..rec.len()].copy_from_slice(&rec);
    Ok(area)
}

/// The seed partition of the disk or image open as `dev`: (offset, length).
pub fn locate(dev: &mut File) -> Result<(u64, u64)> {
    let (_, parts) = gpt::read(dev)?;
    let p = parts
        .iter()
        .find(|p| p.name == PART_NAME)
        .ok_or_else(|| anyhow!("no `{PART_NAME}` partition: this image was not built with a seed area"))?;
    Ok((p.offset, p.len))
}

fn read_area(dev: &mut File, offset: u64) -> Result<Vec<u8>> {
    let mut area = vec![0u8; SIZE as usize];
    dev.seek(SeekFrom::Start(offset))?;
    dev.read_exact(&mut area).context("reading the seed area")?;
    Ok(area)
}

/// What the seed area holds: the slot list and, if seeded, the values.
pub struct SeedState {
    pub slots: Vec<Slot>,
    pub secrets: Option<BTreeMap<String, String>>,
}

pub fn read(dev: &mut File) -> Result<SeedState> {
    let (offset, _) = locate(dev)?;
    let area = read_area(dev, offset)?;
    let slots = match decode(&area, SLOTS_AT, SLOTS_MAGIC, "slot list")? {
        Some(p) => toml::from_str::<SlotList>(std::str::from_utf8(&p)?).context("parsing the slot list")?.slots,
        None => bail!("the seed area holds no slot list"),
    };
    let secrets = match decode(&area, SECRETS_AT, SECRETS_MAGIC, "secrets")? {
        Some(p) => Some(toml::from_str(std::str::from_utf8(&p)?).context("parsing the seeded secrets")?),
        None => None,
    };
    Ok(SeedState { slots, secrets })
}

/// The slots recorded in the manifest beside an image (`<name>.manifest.json` next to
/// `<name>.img` or `<name>.img.xz`), for checking secrets without reading the image.
pub fn slots_from_manifest(image: &Path) -> Option<Vec<Slot>> {
    let name = image.file_name()?.to_str()?;
    let stem = name.strip_suffix(".img.xz").or_else(|| name.strip_suffix(".img"))?;
    let text = std::fs::read(image.with_file_name(format!("{stem}.manifest.json"))).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    serde_json::from_value(v["slots"].clone()).ok()
}

/// Checks a secrets file (TOML, one `slot-name = "value"` per slot) against the slots.
/// Errors name the file, line and key, never a value.
pub fn check_secrets(display: &str, text: &str, slots: &[Slot]) -> Result<BTreeMap<String, String>> {
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
            toml::Value::String(_) => bail!(crate::exit::UserError(format!("{display}:{line}:{col}: key `{key}`: the value is empty"))),
            other => bail!(crate::exit::UserError(format!(
                "{display}:{line}:{col}: key `{key}`: the value must be a string, not a {}",
                other.type_str()
            ))),
        };
        out.insert(key.clone(), value);
    }
    let missing: Vec<&str> = slots
        .iter()
        .filter(|s| s.required && !s.generate && !out.contains_key(&s.name))
        .map(|s| s.name.as_str())
        .collect();
    if !missing.is_empty() {
        bail!(crate::exit::UserError(format!("{display}: no value for the required slot(s) {}", missing.join(", "))));
    }
    Ok(out)
}

/// Seeds the image or disk open as `dev` with the secrets in `secrets_file`; returns the
/// names seeded. The area's secrets record is replaced whole, then synced.
pub fn seed(dev: &mut File, secrets_file: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(secrets_file)
        .with_context(|| format!("reading {}", secrets_file.display()))
        .map_err(crate::exit::user)?;
    let state = read(dev)?;
    let values = check_secrets(&secrets_file.display().to_string(), &text, &state.slots)?;
    let payload = toml::to_string(&values).context("encoding the secrets")?;
    let rec = encode(SECRETS_MAGIC, payload.as_bytes());
    if rec.len() as u64 > SIZE - SECRETS_AT {
        bail!(crate::exit::UserError(format!("{}: the secrets are larger than the seed area's {} KiB", secrets_file.display(), (SIZE - SECRETS_AT) / 1024)));
    }
    let (offset, _) = locate(dev)?;
    let mut region = vec![0u8; (SIZE - SECRETS_AT) as usize];
    region[..rec.len()].copy_from_slice(&rec);
    dev.seek(SeekFrom::Start(offset + SECRETS_AT))?;
    dev.write_all(&region).context("writing the seed area")?;
    dev.sync_all().context("syncing the seed area")?;
    Ok(values.into_keys().collect())
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
        };
        vec![s("jupyter-htpasswd", true, false), s("session-key", false, true)]
    }

    #[test]
    fn records_round_trip_and_detect_damage() {
        let area = initial_area(&slots()).unwrap();
        assert_eq!(decode(&area, SECRETS_AT, SECRETS_MAGIC, "secrets").unwrap(), None, "unseeded");
        let payload = decode(&area, SLOTS_AT, SLOTS_MAGIC, "slot list").unwrap().unwrap();
        let list: SlotList = toml::from_str(std::str::from_utf8(&payload).unwrap()).unwrap();
        assert_eq!(list.slots, slots());
        let mut bad = area.clone();
        bad[HEADER + 3] ^= 1;
        assert!(decode(&bad, SLOTS_AT, SLOTS_MAGIC, "slot list").unwrap_err().to_string().contains("checksum"));
    }

    #[test]
    fn secrets_file_errors_name_line_and_key_never_the_value() {
        let text = "jupyter-htpasswd = \"admin:$2y$hash\"\nsesion-key = \"TOPSECRET\"\n";
        let err = check_secrets("s.toml", text, &slots()).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:2:1: key `sesion-key`: the image has no slot of this name"), "{err}");
        assert!(!err.contains("TOPSECRET"), "{err}");
        let err = check_secrets("s.toml", "session-key = \"x\"\n", &slots()).unwrap_err().to_string();
        assert_eq!(err, "s.toml: no value for the required slot(s) jupyter-htpasswd");
        let err = check_secrets("s.toml", "jupyter-htpasswd = 12345\n", &slots()).unwrap_err().to_string();
        assert!(err.contains("must be a string, not a integer") && !err.contains("12345"), "{err}");
        let ok = check_secrets("s.toml", "jupyter-htpasswd = \"a:b\"\n", &slots()).unwrap();
        assert_eq!(ok.len(), 1, "a generated slot may be left out");
    }
}
