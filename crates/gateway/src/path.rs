//! The one normalisation of a request's path, done before anything looks at it: the ACME
//! and health paths, the login endpoint, routing, LAN access, public paths, auth, and the
//! path the upstream receives all see the same string, so no spelling of a path can be
//! judged as one path and served as another (`/files/track/../admin/`, `//admin/`,
//! `/%61dmin/` were all ways past a prefix check that looked at the raw bytes).
//!
//! The rule, applied to the path only (the query is passed on untouched):
//!
//! 1. The path must be origin-form (start with `/`); `*` and anything else is refused.
//! 2. `%XX` escapes are checked: a `%` not followed by two hex digits is refused. An escape
//!    of an unreserved character (RFC 3986 section 2.3: `A-Z a-z 0-9 - . _ ~`) is decoded
//!    (`%61` is `a`, `%2e` is `.`), as RFC 3986 section 6.2.2.2 says is equivalent. An
//!    escaped `/` (`%2F`), `\` (`%5C`) or NUL (`%00`) is refused: whether `/a%2Fb` is one
//!    segment or two depends on the upstream, so no prefix decision about it could be
//!    trusted. Every other escape is kept, with its hex digits upper-cased (`%3f` becomes
//!    `%3F`), because decoding it would change what the path means (`%3F` is not `?`).
//! 3. Runs of `/` are merged into one.
//! 4. Dot segments (`.` and `..`, also when spelt with escapes, as step 2 has decoded
//!    them) are resolved as RFC 3986 section 5.2.4 does; a `..` that would climb above the
//!    root is refused rather than clamped, since no legitimate client sends one.
//!
//! Refusals answer 400. The result is what the upstream receives (under the route's
//! prefix handling), so the upstream serves exactly the path the gateway judged.
//!
//! Compared with the usual proxies:
//! - nginx: `merge_slashes on` (its default) merges runs of `/` as we do, and for its
//!   `location` matching it decodes every `%XX` (including `%2F`, which becomes a segment
//!   separator) and resolves dot segments, answering 400 to a path above the root as we
//!   do. But `proxy_pass` without a URI part forwards the request line as the client sent
//!   it, so the upstream may see `/x/../admin/` where nginx matched `/admin/`: the judged
//!   path and the served path can differ. We always forward the normalised form, and we
//!   refuse `%2F` instead of decoding it, and keep reserved escapes, so decoding never
//!   changes a path's meaning.
//! - Caddy: its path matchers unescape and clean the path before matching (caddy issue
//!   4407 was this very bypass, `//admin` and escapes past a `basicauth` matcher), while
//!   `reverse_proxy` forwards the original request URI. Caddy lets a `%2F` match a `/` in
//!   the matcher unless the pattern spells it escaped; we refuse it. Caddy's path
//!   matching is case-insensitive; ours is exact, since upstream paths are case-sensitive
//!   and the upstream receives the normalised path unchanged in case.

use std::fmt;

/// Why a path was refused (each answers 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not origin-form: does not start with `/`.
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// `%2F`, `%5C` or `%00`: the upstream could read it as a separator or a terminator.
    EncodedSeparator,
    /// A `..` that climbs above the root.
    AboveRoot,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Refused::NotAbsolute => "the path does not start with `/`",
            Refused::BadEscape => "the path has a `%` not followed by two hex digits",
            Refused::EncodedSeparator => {
                "the path has an encoded `/`, `\\` or NUL (`%2F`, `%5C`, `%00`)"
            }
            Refused::AboveRoot => "the path climbs above the root with `..`",
        })
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Step 2 for one segment (no `/` inside): unreserved escapes decoded, others upper-cased.
fn decode_segment(seg: &str) -> Result<String, Refused> {
    let b = seg.as_bytes();
    let mut out = String::with_capacity(seg.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(Refused::BadEscape);
            };
            let c = h << 4 | l;
            if matches!(c, b'/' | b'\\' | 0) {
                return Err(Refused::EncodedSeparator);
            }
            if unreserved(c) {
                out.push(c as char);
            } else {
                out.push('%');
                out.push(b[i + 1].to_ascii_uppercase() as char);
                out.push(b[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
        } else {
            // Copy the run up to the next `%` whole (it may hold multi-byte UTF-8).
            let end = b[i..]
                .iter()
                .position(|&c| c == b'%')
                .map_or(b.len(), |p| i + p);
            out.push_str(&seg[i..end]);
            i = end;
        }
    }
    Ok(out)
}

/// The normalised form of `path` (without its query), or why it is refused.
pub fn normalize(path: &str) -> Result<String, Refused> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(Refused::NotAbsolute);
    };
    let mut segs: Vec<String> = Vec::new();
    // Whether the path ends in a directory (a trailing `/`, or a final `.` or `..`).
    let mut trailing = true;
    for raw in rest.split('/') {
        if raw.is_empty() {
            // Merged slashes (step 3); an empty last segment is the trailing `/`.
            trailing = true;
            continue;
        }
        let seg = decode_segment(raw)?;
        match seg.as_str() {
            "." => trailing = true,
            ".." => {
                segs.pop().ok_or(Refused::AboveRoot)?;
                trailing = true;
            }
            _ => {
                segs.push(seg);
                trailing = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    if trailing || segs.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_path_become_one() {
        for p in [
            "/admin/secret.txt",
            "//admin/secret.txt",
            "/./admin/secret.txt",
            "/x/../admin/secret.txt",
            "/%61dmin/secret.txt",
            "/admin//secret.txt",
            "/admin/./secret.txt",
            "/x/%2e%2e/admin/secret.txt",
            "/x/%2E./admin/secret%2etxt",
        ] {
            assert_eq!(normalize(p), Ok("/admin/secret.txt".into()), "{p}");
        }
        assert_eq!(normalize("/"), Ok("/".into()));
        assert_eq!(normalize("//"), Ok("/".into()));
        assert_eq!(normalize("/a/."), Ok("/a/".into()));
        assert_eq!(normalize("/a/b/.."), Ok("/a/".into()));
        assert_eq!(normalize("/a/.."), Ok("/".into()));
        assert_eq!(normalize("/a/"), Ok("/a/".into()));
        assert_eq!(normalize("/a"), Ok("/a".into()));
        assert_eq!(normalize("/a..b/...c"), Ok("/a..b/...c".into()));
    }

    #[test]
    fn reserved_escapes_are_kept_upper_cased() {
        assert_eq!(normalize("/a%3fb%20c"), Ok("/a%3Fb%20c".into()));
        assert_eq!(normalize("/%e2%82%ac"), Ok("/%E2%82%AC".into()));
        assert_eq!(normalize("/a%25/x"), Ok("/a%25/x".into()));
        assert_eq!(normalize("/é"), Ok("/é".into()));
    }

    #[test]
    fn separators_escapes_and_climbs_are_refused() {
        assert_eq!(normalize("/admin%2fsecret"), Err(Refused::EncodedSeparator));
        assert_eq!(normalize("/admin%2Fsecret"), Err(Refused::EncodedSeparator));
        assert_eq!(normalize("/a/..%2fadmin"), Err(Refused::EncodedSeparator));
        assert_eq!(normalize("/a%5c..%5cb"), Err(Refused::EncodedSeparator));
        assert_eq!(normalize("/a%00.txt"), Err(Refused::EncodedSeparator));
        assert_eq!(normalize("/a%2"), Err(Refused::BadEscape));
        assert_eq!(normalize("/a%zz"), Err(Refused::BadEscape));
        assert_eq!(normalize("/.."), Err(Refused::AboveRoot));
        assert_eq!(normalize("/a/../../etc"), Err(Refused::AboveRoot));
        assert_eq!(normalize("/%2e%2e/x"), Err(Refused::AboveRoot));
        assert_eq!(normalize("*"), Err(Refused::NotAbsolute));
        assert_eq!(normalize(""), Err(Refused::NotAbsolute));
    }
}
