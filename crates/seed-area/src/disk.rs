//! The names imgforge gives the disk's partitions, which the node's units and
//! systemd-sysupdate's transfer files match: one definition for the image writer (imgforge)
//! and the node (worker, units).

/// The GPT name of the data partition (mounted at /var, all of the node's state).
pub const DATA_PART_NAME: &str = "imgforge-data";

/// The GPT name of a root slot that holds no version (slot B of a freshly built image):
/// systemd-sysupdate writes a new version into a partition with this name.
pub const EMPTY_SLOT_NAME: &str = "_empty";

/// The prefix of a root slot's GPT name; the version follows it (`root_1.4.0`), the form
/// sysupdate's `MatchPattern=root_@v` reads.
pub const SLOT_PREFIX: &str = "root_";

/// The GPT name of a root slot holding `version`.
pub fn slot_name(version: &str) -> String {
    format!("{SLOT_PREFIX}{version}")
}

/// The version a root slot's GPT name carries, or None for an empty slot or another name.
pub fn slot_version(name: &str) -> Option<&str> {
    name.strip_prefix(SLOT_PREFIX).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_name_carries_its_version_and_the_empty_slot_none() {
        assert_eq!(slot_name("1.2"), "root_1.2");
        assert_eq!(slot_version(&slot_name("1.2")), Some("1.2"));
        assert_eq!(slot_version(EMPTY_SLOT_NAME), None);
        assert_eq!(slot_version("root_"), None);
        assert_eq!(slot_version(DATA_PART_NAME), None);
    }
}
