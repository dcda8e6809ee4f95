//! The lock: a requirements file in pip's `--require-hashes` form, every requirement pinned
//! with `==` and carrying the sha256 of each file it may be installed from.

use anyhow::{bail, Result};

/// One pinned requirement.
#[derive(Debug, Clone, PartialEq)]
pub struct Req {
    /// As written: `psycopg[binary]==3.3.9`.
    pub spec: String,
    /// Normalized (PEP 503): `psycopg`.
    pub name: String,
    pub version: String,
    /// Lower-case hex sha256 digests.
    pub hashes: Vec<String>,
    /// 1-based line where the requirement begins.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Lock {
    /// The file, as the user knows it (`examples/flask-celery/requirements.txt`).
    pub file: String,
    /// The Python the lock says it was made for, and the line that says so.
    pub python: Option<(String, usize)>,
    pub reqs: Vec<Req>,
}

impl Lock {
    /// `FILE line N: `spec``: where a requirement is, for messages.
    pub fn at(&self, r: &Req) -> String {
        format!("{} line {}: `{}`", self.file, r.line, r.spec)
    }

    pub fn find(&self, name: &str) -> Option<&Req> {
        let n = normalize(name);
        self.reqs.iter().find(|r| r.name == n)
    }
}

/// PEP 503 name normalization: lower case, runs of `-_.` as one `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The header `imgforge lock` writes; a lock made by pip-compile or uv names its Python
/// its own way, read too.
pub const HEADER: &str = "# imgforge-lock: python";

fn python_of_comment(c: &str) -> Option<String> {
    let version_after = |s: &str| -> Option<String> {
        let v: String = s
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let v = v.trim_end_matches('.');
        (v.split('.').count() >= 2).then(|| v.split('.').take(2).collect::<Vec<_>>().join("."))
    };
    if let Some(rest) = c.strip_prefix(HEADER) {
        return version_after(rest);
    }
    if let Some(i) = c.find("--python-version") {
        return version_after(c[i + "--python-version".len()..].trim_start_matches('='));
    }
    if let Some(i) = c.find("with Python ") {
        return version_after(&c[i + "with Python ".len()..]);
    }
    None
}

/// Parses a hashed requirements file; `file` names it in messages.
pub fn parse(file: &str, text: &str) -> Result<Lock> {
    let mut lock = Lock {
        file: file.to_string(),
        python: None,
        reqs: Vec::new(),
    };
    let mut logical = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        if logical.is_empty() {
            start = i + 1;
        }
        let t = raw.trim();
        if logical.is_empty() && t.starts_with('#') {
            if lock.python.is_none() {
                if let Some(v) = python_of_comment(t) {
                    lock.python = Some((v, i + 1));
                }
            }
            continue;
        }
        // An inline comment starts at " #".
        let t = match t.find(" #") {
            Some(at) => t[..at].trim_end(),
            None => t,
        };
        if let Some(body) = t.strip_suffix('\\') {
            logical.push_str(body);
            logical.push(' ');
            continue;
        }
        logical.push_str(t);
        let line = std::mem::take(&mut logical);
        if !line.trim().is_empty() {
            lock.reqs.push(parse_req(file, start, line.trim())?);
        }
    }
    if !logical.trim().is_empty() {
        lock.reqs.push(parse_req(file, start, logical.trim())?);
    }
    for (i, r) in lock.reqs.iter().enumerate() {
        if let Some(o) = lock.reqs[..i].iter().find(|o| o.name == r.name) {
            bail!(
                "{} line {}: `{}` is locked twice (line {} has `{}`)",
                file,
                r.line,
                r.spec,
                o.line,
                o.spec
            );
        }
    }
    if lock.reqs.is_empty() {
        bail!("{file}: the lock names no requirement");
    }
    Ok(lock)
}

fn parse_req(file: &str, line: usize, text: &str) -> Result<Req> {
    if text.contains(';') {
        bail!(
            "{file} line {line}: `{text}`: environment markers are not supported in a lock (they would be read for the build machine, not the image): run `imgforge lock`, which resolves for the image"
        );
    }
    let mut words = text.split_whitespace().peekable();
    let mut spec = None;
    let mut hashes = Vec::new();
    while let Some(w) = words.next() {
        let value = if w == "--hash" {
            words.next().unwrap_or("")
        } else if let Some(v) = w.strip_prefix("--hash=") {
            v
        } else if w.starts_with('-') {
            bail!(
                "{file} line {line}: option `{w}` is not supported in a lock: the index comes from the machine's pip configuration, and each requirement is one `name==version --hash=sha256:...` line"
            );
        } else if spec.is_none() {
            spec = Some(w.to_string());
            continue;
        } else {
            bail!(
                "{file} line {line}: `{w}` after `{}`: one requirement per line",
                spec.unwrap_or_default()
            );
        };
        let Some(hex) = value.strip_prefix("sha256:") else {
            bail!("{file} line {line}: `--hash={value}`: only sha256 hashes are accepted");
        };
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("{file} line {line}: `--hash={value}` is not a sha256 (64 hex digits)");
        }
        hashes.push(hex.to_ascii_lowercase());
    }
    let Some(spec) = spec else {
        bail!("{file} line {line}: hashes without a requirement");
    };
    let Some((name_part, version)) = spec.split_once("==") else {
        bail!(
            "{file} line {line}: `{spec}` is not pinned with `==`: a lock names one version of each package (run `imgforge lock` to write one)"
        );
    };
    let name = name_part.split('[').next().unwrap_or_default();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || version.is_empty()
        || version.contains(['*', '=', '<', '>', '!', ',', '~'])
    {
        bail!("{file} line {line}: `{spec}` is not `name==version`");
    }
    if hashes.is_empty() {
        bail!(
            "{file} line {line}: `{spec}` has no `--hash=sha256:`: every file installed from PyPI is checked against the lock (run `imgforge lock` to write one)"
        );
    }
    Ok(Req {
        name: normalize(name),
        version: version.to_string(),
        spec,
        hashes,
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: &str = "0793764fac48b5f0bf4d7154e38c60def4fa0cce16caa60b737f770bd29016ac";
    const H2: &str = "08689018e9169ca8e6769f5b3f2ce748442bda95b5f1ec260995a8ff63e6d6a4";

    #[test]
    fn hashed_lines_with_continuations_parse() {
        let text = format!(
            "# imgforge-lock: python 3.13, x86_64 and aarch64\n\
             psycopg[binary]==3.3.9 \\\n    --hash=sha256:{H1} \\\n    --hash=sha256:{H2}\n\
             \n# a comment\nFlask_Login==0.6.3 --hash sha256:{H1}  # inline\n"
        );
        let l = parse("req.txt", &text).unwrap();
        assert_eq!(l.python, Some(("3.13".into(), 1)));
        assert_eq!(l.reqs.len(), 2);
        assert_eq!(l.reqs[0].name, "psycopg");
        assert_eq!(l.reqs[0].hashes, [H1, H2]);
        assert_eq!(l.reqs[0].line, 2);
        assert_eq!(l.reqs[1].name, "flask-login");
        assert_eq!(l.reqs[1].line, 7);
        assert_eq!(l.at(&l.reqs[1]), "req.txt line 7: `Flask_Login==0.6.3`");
    }

    #[test]
    fn other_tools_headers_name_their_python() {
        for h in [
            "#    uv pip compile req.in --python-version 3.11 --generate-hashes",
            "# This file is autogenerated by pip-compile with Python 3.11",
        ] {
            let l = parse("r", &format!("{h}\na==1 --hash=sha256:{H1}\n")).unwrap();
            assert_eq!(l.python.unwrap().0, "3.11", "{h}");
        }
    }

    #[test]
    fn mistakes_name_the_line_and_requirement() {
        for (text, want) in [
            ("flask>=2\n".to_string(), "line 1: `flask>=2` is not pinned"),
            (
                "\nflask==3.1\n".to_string(),
                "line 2: `flask==3.1` has no `--hash",
            ),
            (format!("flask==3 --hash=md5:{H1}"), "only sha256"),
            ("flask==3 --hash=sha256:abc".to_string(), "is not a sha256"),
            (
                format!("-i http://x/simple\nflask==3 --hash=sha256:{H1}"),
                "option `-i`",
            ),
            (
                format!("a==1; python_version<'3.12' --hash=sha256:{H1}"),
                "environment markers",
            ),
            (
                format!("a==1 --hash=sha256:{H1}\nA==2 --hash=sha256:{H2}"),
                "line 2: `A==2` is locked twice (line 1",
            ),
        ] {
            let e = parse("r.txt", &text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.starts_with("r.txt line"), "{e}");
        }
    }
}
