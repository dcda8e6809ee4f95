//! The node's configuration, written into the image by imgforge's compose stage.

use anyhow::{Context, Result};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeConfig {
    pub role: String,
    pub target: String,
    pub host: String,
    /// How long `worker ready` waits for the checks before reporting failure.
    pub timeout_secs: u64,
    pub checks: Checks,
    /// The role's secret slots (names and rules, never values).
    #[serde(default, rename = "slot")]
    pub slots: Vec<seed_area::Slot>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Checks {
    #[serde(default)]
    pub units: Vec<String>,
    #[serde(default)]
    pub tcp_ports: Vec<u16>,
    #[serde(default)]
    pub http: Vec<String>,
    /// Oneshot job units that run at boot and must have finished successfully.
    #[serde(default)]
    pub jobs: Vec<String>,
}

pub fn load(path: &std::path::Path) -> Result<NodeConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("parsing {}", path.display()))
}

pub fn parse(text: &str) -> Result<NodeConfig> {
    Ok(toml::from_str(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_imgforge_writes() {
        let c = parse("role = \"proxy\"\ntarget = \"x86_64-vm\"\nhost = \"edge\"\ntimeout-secs = 120\n[checks]\nunits = [\"gateway.service\"]\ntcp-ports = [80]\nhttp = [\"http://127.0.0.1:80/\"]\n").unwrap();
        assert_eq!(c.checks.units, ["gateway.service"]);
        assert_eq!(c.checks.tcp_ports, [80]);
        assert!(c.slots.is_empty() && c.checks.jobs.is_empty());
        assert!(parse("role = \"x\"\nbogus = 1\n").is_err());
    }
}
