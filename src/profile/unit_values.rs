//! Values of a role that end up in generated files (unit files, env files, node.toml, the
//! kernel command line), checked when the profile is read: a newline in a description or
//! an exec word would start a new line of the unit file, a unit name `..` or a `state-dir`
//! with `..` would point outside its folder.

use std::fmt;
use std::num::NonZeroU16;

use serde::{Deserialize, Serialize};

use super::checked::{checked_string, control_char};

fn one_line(s: &str) -> Result<(), String> {
    match control_char(s) {
        Some(c) => Err(format!(
            "{s:?} holds a control character ({c}): generated files take one line of plain text"
        )),
        None => Ok(()),
    }
}

checked_string!(
    /// One line of text without control characters: a description, an exec word, an
    /// environment value, a kernel command line word.
    Line,
    one_line
);

fn unit_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 200
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && !s.contains("..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a unit name: letters, digits, '-', '_', '.' and ':', starting with a letter or digit, no \"..\" (a service is a plain unit, not a template with '@')",
            s.escape_debug()
        ))
    }
}

checked_string!(
    /// A service's name: its unit is `<name>.service`, its env file `<name>.env`.
    UnitName,
    unit_name
);

const UNIT_SUFFIXES: [&str; 11] = [
    "service",
    "socket",
    "target",
    "timer",
    "path",
    "mount",
    "automount",
    "swap",
    "device",
    "slice",
    "scope",
];

fn unit_ref(s: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "`{}` is not a full unit name such as `postgresql.service` (NAME.TYPE, or PREFIX@INSTANCE.TYPE for an instance)",
            s.escape_debug()
        )
    };
    let (stem, suffix) = s.rsplit_once('.').ok_or_else(bad)?;
    if !UNIT_SUFFIXES.contains(&suffix) {
        return Err(bad());
    }
    match stem.split_once('@') {
        Some((prefix, instance)) => {
            if unit_name(prefix).is_err()
                || instance.is_empty()
                || !instance
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:\\".contains(c))
            {
                return Err(bad());
            }
        }
        None => unit_name(stem).map_err(|_| bad())?,
    }
    Ok(())
}

checked_string!(
    /// A unit another one orders itself after, or a package's unit to enable.
    UnitRef,
    unit_ref
);

fn user_name(s: &str) -> Result<(), String> {
    let ok = s.len() <= 31
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a user name: lower-case letters, digits, '_' and '-', starting with a letter or '_', at most 31",
            s.escape_debug()
        ))
    }
}

checked_string!(
    /// A service's (dynamic) user.
    UserName,
    user_name
);

/// Linux capabilities (capabilities(7)), as systemd's CapabilityBoundingSet= takes them.
const CAPABILITIES: [&str; 41] = [
    "CAP_AUDIT_CONTROL",
    "CAP_AUDIT_READ",
    "CAP_AUDIT_WRITE",
    "CAP_BLOCK_SUSPEND",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_KILL",
    "CAP_LEASE",
    "CAP_LINUX_IMMUTABLE",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_MKNOD",
    "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_RAW",
    "CAP_PERFMON",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYSLOG",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_CHROOT",
    "CAP_SYS_MODULE",
    "CAP_SYS_NICE",
    "CAP_SYS_PACCT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_WAKE_ALARM",
];

fn capability(s: &str) -> Result<(), String> {
    if CAPABILITIES.contains(&s) {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a Linux capability (capabilities(7): CAP_NET_BIND_SERVICE, CAP_NET_RAW, ...)",
            s.escape_debug()
        ))
    }
}

checked_string!(
    /// A Linux capability granted to a service.
    Capability,
    capability
);

fn state_dir(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a folder under /var/lib: a relative path of letters, digits, '-', '_' and '.', without \"..\", \".\" or empty parts",
            s.escape_debug()
        ))
    }
}

checked_string!(
    /// A folder under /var/lib (StateDirectory=).
    StateDir,
    state_dir
);

fn package_name(s: &str) -> Result<(), String> {
    // NAME/SUITE: `backports` (the image's suite's), or another suite's codename (a newer
    // firmware from the next release, pinned to that one package: src/stage/base.rs).
    let (name, suite) = s.split_once('/').unwrap_or((s, "backports"));
    let suite_ok = !suite.is_empty() && suite.chars().all(|c| c.is_ascii_lowercase());
    let ok = suite_ok
        && name.len() >= 2
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a Debian package name (a-z, 0-9, '+', '-', '.'; `NAME/backports` for the suite's backports, `NAME/CODENAME` for another suite's)",
            s.escape_debug()
        ))
    }
}

checked_string!(
    /// A Debian package, `NAME`, `NAME/backports` or `NAME/CODENAME`.
    PackageName,
    package_name
);

fn health_url(s: &str) -> Result<(), String> {
    let ok = s.strip_prefix("http://").is_some_and(|rest| {
        !rest.is_empty()
            && !rest.starts_with('/')
            && rest
                .chars()
                .all(|c| c.is_ascii_graphic() && !"\"\\'<>`{}|^".contains(c))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not an http:// URL inside the node (e.g. http://127.0.0.1:8000/health)",
            s.escape_debug()
        ))
    }
}

checked_string!(
    /// An HTTP URL inside the node that answers when a service is ready.
    HealthUrl,
    health_url
);

/// A TCP port, 1-65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(NonZeroU16);

impl Port {
    pub fn get(self) -> u16 {
        self.0.get()
    }

    pub fn new(p: u16) -> Option<Port> {
        NonZeroU16::new(p).map(Port)
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for Port {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let n: u16 = s
            .parse()
            .map_err(|_| format!("`{}` is not a port (1-65535)", s.escape_debug()))?;
        Port::new(n).ok_or_else(|| "port 0 is not a port (1-65535)".to_string())
    }
}

impl Serialize for Port {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.get())
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u16::deserialize(d)?;
        Port::new(n).ok_or_else(|| serde::de::Error::custom("port 0 is not a port (1-65535)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_refuse_control_characters() {
        assert!("Gateway: the front door".parse::<Line>().is_ok());
        let e = "two\nlines".parse::<Line>().unwrap_err();
        assert!(
            e.contains("\"two\\nlines\" holds a control character (U+000A)"),
            "{e}"
        );
        assert!("tab\there".parse::<Line>().is_err());
        assert!("del\u{7f}".parse::<Line>().is_err());
    }

    #[test]
    fn unit_names_are_plain() {
        for ok in ["gateway", "prospectlab-celery", "a.b", "x_1:2"] {
            assert!(ok.parse::<UnitName>().is_ok(), "{ok}");
        }
        for bad in ["", "..", "foo@", "a/b", ".hidden", "a..b", "sp ace", "-x"] {
            let e = bad.parse::<UnitName>().unwrap_err();
            assert!(e.contains("is not a unit name"), "{bad}: {e}");
        }
    }

    #[test]
    fn unit_refs_have_a_type_and_maybe_an_instance() {
        for ok in [
            "postgresql.service",
            "getty@tty1.service",
            "network-online.target",
        ] {
            assert!(ok.parse::<UnitRef>().is_ok(), "{ok}");
        }
        for bad in [
            "postgresql",
            "foo@.service",
            "@x.service",
            "a.b.c",
            "x.service\n",
        ] {
            assert!(bad.parse::<UnitRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn users_capabilities_state_dirs_packages_and_urls() {
        assert!("ia".parse::<UserName>().is_ok());
        assert!("Root".parse::<UserName>().is_err());
        assert!("a b".parse::<UserName>().is_err());
        assert!("CAP_NET_BIND_SERVICE".parse::<Capability>().is_ok());
        assert!("CAP_NET_BIND_SERVIC".parse::<Capability>().is_err());
        assert!("prospectlab".parse::<StateDir>().is_ok());
        assert!("imgforge/backups".parse::<StateDir>().is_ok());
        for bad in ["..", "../etc", "a/../b", "/abs", "a//b", ""] {
            assert!(bad.parse::<StateDir>().is_err(), "{bad}");
        }
        assert!("linux-image-arm64/backports".parse::<PackageName>().is_ok());
        assert!("raspi-firmware/forky".parse::<PackageName>().is_ok());
        assert!("raspi-firmware/".parse::<PackageName>().is_err());
        assert!("raspi-firmware/Forky1".parse::<PackageName>().is_err());
        assert!("g++".parse::<PackageName>().is_ok());
        assert!("Bad_Name".parse::<PackageName>().is_err());
        assert!("http://127.0.0.1:80/health".parse::<HealthUrl>().is_ok());
        assert!("https://x/".parse::<HealthUrl>().is_err());
        assert!("http://x/\"".parse::<HealthUrl>().is_err());
    }

    #[test]
    fn port_zero_is_refused() {
        #[derive(Debug, Deserialize)]
        struct T {
            #[allow(dead_code)]
            ports: Vec<Port>,
        }
        let err = crate::profile::load::parse_toml::<T>("r.toml", "ports = [80, 0]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("r.toml:1:9: key `ports[1]`: port 0 is not a port"),
            "{err}"
        );
        assert_eq!("8080".parse::<Port>().unwrap().get(), 8080);
        assert!("0".parse::<Port>().is_err());
    }
}
