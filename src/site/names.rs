//! Names in a site file: a host's short name, DNS names (the site's domain, a route's
//! public name) and the role a host runs. Checked when the file is read.

use crate::profile::checked::checked_string;

fn label_ok(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && !l.starts_with('-')
        && !l.ends_with('-')
        && l.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn host_name(s: &str) -> Result<(), String> {
    if label_ok(s) {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a host name: lower-case letters, digits and '-' (not first or last), at most 63",
            s.escape_debug()
        ))
    }
}

checked_string!(
    /// A host's short name (`edge`): its hostname, and how the site names it.
    HostName,
    host_name
);

fn domain_name(s: &str) -> Result<(), String> {
    if s.len() <= 253 && s.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a DNS name: dot-separated labels of lower-case letters, digits and '-' (e.g. jupyter.example.test)",
            s.escape_debug()
        ))
    }
}

checked_string!(
    /// A DNS name: the site's domain, the name a route answers.
    DomainName,
    domain_name
);

fn profile_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a profile name (a file in roles/ without .toml: letters, digits, '-', '_', '.')",
            s.escape_debug()
        ))
    }
}

checked_string!(
    /// The name of a profile file (a role), not a path.
    ProfileName,
    profile_name
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_domain_names() {
        assert!("vm-ia".parse::<HostName>().is_ok());
        for bad in ["", "-x", "x-", "Edge", "a.b", "a_b"] {
            assert!(bad.parse::<HostName>().is_err(), "{bad}");
        }
        assert!("jupyter.example.test".parse::<DomainName>().is_ok());
        for bad in [
            "jupyter..test",
            "http://x.test",
            "x.test/",
            "*.x.test",
            "",
            "a b",
        ] {
            let e = bad.parse::<DomainName>().unwrap_err();
            assert!(e.contains("is not a DNS name"), "{bad}: {e}");
        }
        assert!("django-app".parse::<ProfileName>().is_ok());
        assert!("../x".parse::<ProfileName>().is_err());
    }
}
