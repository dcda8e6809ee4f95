//! Where an image's version is written in its root, for the node's worker (the ready line,
//! `worker version`) and the units that act on the first boot of a new version.

/// The file in the root slot holding the image's version, one line.
pub const PATH: &str = "/usr/lib/imgforge/version";

/// The version in the text of [`PATH`].
pub fn parse(text: &str) -> Option<&str> {
    let v = text.trim();
    (!v.is_empty()).then_some(v)
}
