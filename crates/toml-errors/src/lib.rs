//! TOML into a typed value, with errors a person can act on: the file, line and column,
//! and the dotted key path (`route[2].upstream`), e.g.
//! `gateway.toml:14:12: key `route[2].upstream`: not an http:// URL`.
//! imgforge's profile loader and the gateway's `check` both use it.

use serde::de::DeserializeOwned;

/// Parses `text` (read from `display`) into `T`.
pub fn parse<T: DeserializeOwned>(display: &str, text: &str) -> Result<T, String> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let key = err.path().to_string();
        let inner = err.into_inner();
        let (line, col) = inner
            .span()
            .map(|s| line_col(text, s.start))
            .unwrap_or((1, 1));
        let key = if key == "." {
            String::new()
        } else {
            format!("key `{key}`: ")
        };
        format!(
            "{display}:{line}:{col}: {key}{}",
            inner.message().trim_end()
        )
    })
}

/// `FILE:LINE:COL: key `KEY`` for a mistake found after parsing, where `key` is a path
/// as the parse errors print it (`route[2].to`, `host[0].apps.chat`). The position is the
/// value's (or, for a key the file leaves out, the nearest enclosing table's); a text that
/// does not parse gives `FILE: key `KEY``.
pub fn at(display: &str, text: &str, key: &str) -> String {
    match position(text, key) {
        Some((line, col)) => format!("{display}:{line}:{col}: key `{key}`"),
        None => format!("{display}: key `{key}`"),
    }
}

/// 1-based line and column of `key` in `text` (see [`at`]).
pub fn position(text: &str, key: &str) -> Option<(usize, usize)> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut node = Node::Item(doc.as_item());
    let mut best = None;
    for seg in segments(key) {
        let next = match (seg, node) {
            (Seg::Key(k), Node::Item(i)) => {
                i.as_table_like().and_then(|t| t.get(k)).map(Node::Item)
            }
            (Seg::Key(k), Node::Value(toml_edit::Value::InlineTable(t))) => {
                t.get(k).map(Node::Value)
            }
            (Seg::Index(n), Node::Item(toml_edit::Item::ArrayOfTables(a))) => {
                a.get(n).map(Node::Table)
            }
            (Seg::Index(n), Node::Item(toml_edit::Item::Value(toml_edit::Value::Array(a))))
            | (Seg::Index(n), Node::Value(toml_edit::Value::Array(a))) => a.get(n).map(Node::Value),
            (Seg::Key(k), Node::Table(t)) => t.get(k).map(Node::Item),
            _ => None,
        };
        let Some(next) = next else { break };
        node = next;
        best = node.span().or(best);
    }
    best.map(|s| line_col(text, s.start))
}

#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a toml_edit::Item),
    Table(&'a toml_edit::Table),
    Value(&'a toml_edit::Value),
}

impl Node<'_> {
    fn span(&self) -> Option<std::ops::Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Table(t) => t.span(),
            Node::Value(v) => v.span(),
        }
    }
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// `a.b[2].c` as a, b, 2, c.
fn segments(key: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if !name.is_empty() {
            out.push(Seg::Key(name));
        }
        while let Some((n, r)) = rest.split_once(']') {
            if let Ok(i) = n.parse() {
                out.push(Seg::Index(i));
            }
            rest = r.strip_prefix('[').unwrap_or(r);
        }
    }
    out
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        a: u32,
        #[serde(default)]
        item: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        name: String,
    }

    #[test]
    fn errors_name_file_line_column_and_key_path() {
        let err = parse::<T>(
            "f.toml",
            "a = 1\n[[item]]\nname = \"x\"\n[[item]]\nnmae = \"y\"\n",
        )
        .unwrap_err();
        assert!(
            err.starts_with("f.toml:5:1: key `item[1].nmae`: unknown field `nmae`"),
            "{err}"
        );
        let err = parse::<T>("f.toml", "a = \"one\"\n").unwrap_err();
        assert!(
            err.starts_with("f.toml:1:5: key `a`: invalid type: string"),
            "{err}"
        );
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn a_key_path_found_after_parsing_names_its_line() {
        let text = "a = 1\nlist = [\"x\", \"y\"]\n[[item]]\nname = \"x\"\n\n[[item]]\nname = \"y\"\nt = { k = 5 }\n";
        assert_eq!(
            at("f.toml", text, "item[1].name"),
            "f.toml:7:8: key `item[1].name`"
        );
        assert_eq!(position(text, "list[1]"), Some((2, 14)));
        assert_eq!(position(text, "item[1].t.k"), Some((8, 11)));
        // A key the file leaves out: the table that would hold it.
        assert_eq!(position(text, "item[1].prefix"), Some((6, 1)));
        assert_eq!(at("f.toml", "a = [", "a"), "f.toml: key `a`");
    }
}
