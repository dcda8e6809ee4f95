use std::fmt::Write as _;

use anyhow::Result;

use crate::cli::ListArgs;
use crate::exit::user;
use crate::profile::load::ProfileSource;
use crate::profile::{Layer, Site};

pub fn run(a: ListArgs) -> Result<()> {
    let src = ProfileSource::choose(a.profiles.as_deref()).map_err(user)?;
    // Gathered first, printed at once: a closed stdout then ends the command quietly.
    let mut o = String::new();
    for (sub, kind) in [("roles", "role"), ("targets", "target")] {
        let _ = writeln!(o, "{sub}:");
        for name in src.list(sub)? {
            let (layer, _) = src.load_named::<Layer>(sub, kind, &name).map_err(user)?;
            let _ = writeln!(o, "  {name:<14} {}", layer.description.unwrap_or_default());
        }
    }
    let _ = writeln!(o, "sites:");
    for name in src.list("sites")? {
        let (site, _) = src
            .load_named::<Site>("sites", "site", &name)
            .map_err(user)?;
        let hosts: Vec<String> = site
            .hosts
            .iter()
            .map(|h| format!("{} ({})", h.name, h.role))
            .collect();
        let _ = writeln!(o, "  {name:<14} {}: {}", site.domain, hosts.join(", "));
    }
    crate::stdout::print(&o)
}
