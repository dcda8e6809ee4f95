//! Strings that check their text when they are read, so a bad value is refused by serde
//! with the file, line, column and key of the profile, like a syntax error.

/// Declares `pub struct $name(String)` whose text passed `$check: fn(&str) -> Result<(),
/// String>` (the error says what is wrong with the value, naming it). It reads and writes
/// as a TOML string, derefs to `str` and prints as its text.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $check(s)?;
                Ok($name(s.to_string()))
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $check(&s).map_err(serde::de::Error::custom)?;
                Ok($name(s))
            }
        }
    };
}

pub(crate) use checked_string;

/// The first control character in `s` (a line break, a tab, ...), as `U+000A`.
pub fn control_char(s: &str) -> Option<String> {
    s.chars()
        .find(|c| c.is_control())
        .map(|c| format!("U+{:04X}", c as u32))
}
