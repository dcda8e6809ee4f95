//! A site's `admin-ssh-keys`: OpenSSH public keys (`ssh-ed25519 AAAA... comment`) that may
//! log in as root on every host of the site. Checked when the site is read, with its line
//! and key: the type is one sshd accepts, and the base64 body decodes to a key blob that
//! names that same type (a key pasted with a line break or a missing character fails).

use base64::Engine;

use crate::profile::checked::checked_string;

/// The key types OpenSSH's sshd accepts by default (DSA is gone since OpenSSH 9.8), with the
/// number of length-prefixed fields their public blob holds, its type name first (RFC 4253
/// 6.6, RFC 5656 3.1, RFC 8709 4, OpenSSH's PROTOCOL.u2f).
const TYPES: [(&str, usize); 7] = [
    ("ssh-ed25519", 2),
    ("ssh-rsa", 3),
    ("ecdsa-sha2-nistp256", 3),
    ("ecdsa-sha2-nistp384", 3),
    ("ecdsa-sha2-nistp521", 3),
    ("sk-ssh-ed25519@openssh.com", 3),
    ("sk-ecdsa-sha2-nistp256@openssh.com", 4),
];

/// The blob's length-prefixed fields, if it is exactly a sequence of them.
fn fields(mut blob: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !blob.is_empty() {
        let n = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
        out.push(blob.get(4..4 + n)?);
        blob = &blob[4 + n..];
    }
    Some(out)
}

fn ssh_public_key(s: &str) -> Result<(), String> {
    if let Some(c) = crate::profile::checked::control_char(s) {
        return Err(format!(
            "an SSH public key is one line; this one holds {c} (paste the .pub file's one line)"
        ));
    }
    let mut words = s.split(' ');
    let ty = words.next().unwrap_or("");
    let Some((_, want)) = TYPES.iter().find(|(t, _)| *t == ty) else {
        let names: Vec<&str> = TYPES.iter().map(|(t, _)| *t).collect();
        return Err(format!(
            "`{}` does not start with an SSH key type ({}): give the .pub file's line, not the private key",
            short(s),
            names.join(", ")
        ));
    };
    let body = words.next().unwrap_or("");
    let blob = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("`{}`: the key's base64 does not decode ({e})", short(s)))?;
    let parts = fields(&blob);
    let whole = parts.as_ref().is_some_and(|f| {
        f.len() == *want
            && f[0] == ty.as_bytes()
            // An ed25519 key is 32 bytes.
            && (ty != "ssh-ed25519" || f[1].len() == 32)
    });
    if !whole {
        return Err(format!(
            "`{}`: the key's body is not a whole {ty} key (a line cut short, or two keys joined?)",
            short(s)
        ));
    }
    Ok(())
}

/// The start of a long value, for a message.
fn short(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

checked_string!(
    /// One OpenSSH public key line.
    SshPublicKey,
    ssh_public_key
);

#[cfg(test)]
mod tests {
    use super::*;

    // A real ed25519 public key (made with ssh-keygen for this test; its private half was
    // thrown away).
    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGQWV8HWs8riZ6KLvkl8oGlKJvyq31dOWtG8MGnEhYBl admin@laptop";

    #[test]
    fn a_pub_line_is_accepted_and_broken_ones_say_why() {
        assert!(KEY.parse::<SshPublicKey>().is_ok());
        // Cut short where the base64 still decodes: the blob is not a whole key.
        let err = KEY[..60].parse::<SshPublicKey>().unwrap_err();
        assert!(err.contains("is not a whole ssh-ed25519 key"), "{err}");
        let err = KEY[..61].parse::<SshPublicKey>().unwrap_err();
        assert!(err.contains("does not decode"), "{err}");
        let err = "-----BEGIN OPENSSH PRIVATE KEY-----"
            .parse::<SshPublicKey>()
            .unwrap_err();
        assert!(err.contains("not the private key"), "{err}");
        let err = KEY
            .replace("ssh-ed25519", "ssh-rsa")
            .parse::<SshPublicKey>()
            .unwrap_err();
        assert!(err.contains("is not a whole ssh-rsa key"), "{err}");
        let err = format!("{KEY}\n{KEY}").parse::<SshPublicKey>().unwrap_err();
        assert!(err.contains("U+000A"), "{err}");
    }
}
