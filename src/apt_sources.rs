//! The Debian mirrors this machine's apt is set up with.
//!
//! The image's sources come from the host's own configuration, so no registry host is ever
//! written in the project: whatever mirror the building machine uses, the image uses too.

use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mirrors {
    /// The archive serving the release and its -updates suite.
    pub main: Option<String>,
    /// The archive serving the -security suite.
    pub security: Option<String>,
}

impl Mirrors {
    /// apt source lines for `suite`, as mmdebstrap takes them: main and the `extra`
    /// components (non-free-firmware, ...), and `<suite>-backports` when `backports`.
    pub fn source_lines(&self, suite: &str, extra: &[String], backports: bool) -> Vec<String> {
        let components = std::iter::once("main")
            .chain(extra.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        let mut v = Vec::new();
        if let Some(m) = &self.main {
            v.push(format!("deb {m} {suite} {components}"));
            v.push(format!("deb {m} {suite}-updates {components}"));
            if backports {
                v.push(format!("deb {m} {suite}-backports {components}"));
            }
        }
        if let Some(s) = &self.security {
            v.push(format!("deb {s} {suite}-security {components}"));
        }
        v
    }
}

impl Mirrors {
    /// The line for another suite of the same archive (the next release), if the machine
    /// has a Debian mirror.
    pub fn suite_line(&self, suite: &str, extra: &[String]) -> Option<String> {
        let m = self.main.as_ref()?;
        let components = std::iter::once("main")
            .chain(extra.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        Some(format!("deb {m} {suite} {components}"))
    }
}

/// Reads `/etc/apt/sources.list` and `/etc/apt/sources.list.d/*` (one-line and deb822).
pub fn host_mirrors() -> Mirrors {
    let mut texts = Vec::new();
    for p in ["/etc/apt/sources.list"] {
        if let Ok(t) = std::fs::read_to_string(p) {
            texts.push((false, t));
        }
    }
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            let deb822 = p.extension().is_some_and(|e| e == "sources");
            let list = p.extension().is_some_and(|e| e == "list");
            if deb822 || list {
                if let Ok(t) = std::fs::read_to_string(&p) {
                    texts.push((deb822, t));
                }
            }
        }
    }
    let mut entries = Vec::new();
    for (deb822, t) in &texts {
        if *deb822 {
            entries.extend(parse_deb822(t));
        } else {
            entries.extend(parse_one_line(t));
        }
    }
    pick(&entries)
}

/// (uri, suites) pairs of `deb` entries.
type Entry = (String, Vec<String>);

fn parse_one_line(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next()?.trim();
            let rest = l.strip_prefix("deb ")?.trim_start();
            let rest = if rest.starts_with('[') {
                rest.split_once(']')?.1.trim_start()
            } else {
                rest
            };
            let mut words = rest.split_whitespace();
            let uri = words.next()?.to_string();
            let suite = words.next()?.to_string();
            Some((uri, vec![suite]))
        })
        .collect()
}

fn parse_deb822(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut types = String::new();
        let mut uris = Vec::new();
        let mut suites = Vec::new();
        let mut enabled = true;
        for l in stanza.lines() {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k.trim() {
                "Types" => types = v.to_string(),
                "URIs" => uris = v.split_whitespace().map(str::to_string).collect(),
                "Suites" => suites = v.split_whitespace().map(str::to_string).collect(),
                "Enabled" => enabled = v != "no",
                _ => {}
            }
        }
        if enabled && types.split_whitespace().any(|t| t == "deb") {
            for u in uris {
                out.push((u, suites.clone()));
            }
        }
    }
    out
}

/// The main archive is the first entry with a plain release suite (no `-` in it, like
/// `bookworm`) that serves Debian's main archive; the security archive is the first entry
/// whose suite ends in `-security`.
fn pick(entries: &[Entry]) -> Mirrors {
    let main = entries
        .iter()
        .find(|(u, s)| {
            s.iter().any(|s| !s.contains('-') && !s.contains('/')) && is_debian_archive(u)
        })
        .map(|(u, _)| u.trim_end_matches('/').to_string());
    let security = entries
        .iter()
        .find(|(_, s)| s.iter().any(|s| s.ends_with("-security")))
        .map(|(u, _)| u.trim_end_matches('/').to_string());
    Mirrors { main, security }
}

/// A third-party repository (a vendor's `nodistro` list, say) is not Debian's archive.
fn is_debian_archive(uri: &str) -> bool {
    let path = uri
        .split("://")
        .nth(1)
        .and_then(|r| r.split_once('/'))
        .map_or("", |(_, p)| p);
    Path::new(path)
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("debian"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_and_one_line_sources() {
        let deb822 = "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\nComponents: main\n\nTypes: deb\nURIs: https://vendor.invalid/node_20.x\nSuites: nodistro\n";
        let mut e = parse_deb822(deb822);
        e.extend(parse_one_line("deb [arch=amd64] https://other.invalid/apt cloud-sdk main\n# deb http://x.invalid/debian sid main\n"));
        let m = pick(&e);
        assert_eq!(m.main.as_deref(), Some("http://mirror.invalid/debian"));
        assert_eq!(
            m.security.as_deref(),
            Some("http://mirror.invalid/debian-security")
        );
        assert_eq!(
            m.source_lines("trixie", &[], false),
            [
                "deb http://mirror.invalid/debian trixie main",
                "deb http://mirror.invalid/debian trixie-updates main",
                "deb http://mirror.invalid/debian-security trixie-security main",
            ]
        );
        assert_eq!(
            m.source_lines("trixie", &["non-free-firmware".into()], true)[2],
            "deb http://mirror.invalid/debian trixie-backports main non-free-firmware"
        );
    }
}
