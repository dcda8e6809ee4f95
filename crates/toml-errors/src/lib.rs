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
}
