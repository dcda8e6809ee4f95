use anyhow::Result;

use crate::cli::ListArgs;
use crate::exit::user;
use crate::profile::load::ProfileSource;
use crate::profile::{Layer, Site};

pub fn run(a: ListArgs) -> Result<()> {
    let src = ProfileSource::choose(a.profiles.as_deref()).map_err(user)?;
    for (sub, kind) in [("roles", "role"), ("targets", "target")] {
        println!("{sub}:");
        for name in src.list(sub)? {
            let (layer, _) = src.load_named::<Layer>(sub, kind, &name).map_err(user)?;
            println!(
                "  {name:<14} {}",
                layer.description.as_deref().unwrap_or_default()
            );
        }
    }
    println!("sites:");
    for name in src.list("sites")? {
        let (site, _) = src
            .load_named::<Site>("sites", "site", &name)
            .map_err(user)?;
        let hosts: Vec<String> = site
            .hosts
            .iter()
            .map(|h| format!("{} ({})", h.name, h.role))
            .collect();
        println!("  {name:<14} {}: {}", site.domain, hosts.join(", "));
    }
    Ok(())
}
