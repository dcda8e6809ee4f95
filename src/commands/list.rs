use std::fmt::Write as _;

use anyhow::Result;

use crate::cli::ListArgs;
use crate::exit::{user, UserError};
use crate::profile::load::{Origin, ProfileSource};
use crate::profile::Layer;

/// Lists roles, targets and sites. A profile that does not parse, or a site that fails its
/// checks, is listed as broken with its error, the rest are listed as usual, and the
/// command then fails (exit 1) naming how many are broken.
pub fn run(a: ListArgs) -> Result<()> {
    let src = ProfileSource::choose(a.profiles.as_deref()).map_err(user)?;
    // Gathered first, printed at once: a closed stdout then ends the command quietly.
    let mut o = String::new();
    let mut broken: Vec<String> = Vec::new();
    for (sub, kind) in [("roles", "role"), ("targets", "target")] {
        let _ = writeln!(o, "{sub}:");
        for name in src.list(sub)? {
            let from = origin_note(&src, sub, &name);
            match src.load_named::<Layer>(sub, kind, &name) {
                Ok((layer, _)) => {
                    let _ = writeln!(
                        o,
                        "  {name:<14} {}{from}",
                        layer.description.as_deref().unwrap_or_default()
                    );
                }
                Err(e) => {
                    let _ = writeln!(o, "  {name:<14} BROKEN: {e:#}");
                    broken.push(format!("{e:#}"));
                }
            }
        }
    }
    let _ = writeln!(o, "sites:");
    for name in src.list("sites")? {
        let from = origin_note(&src, "sites", &name);
        match crate::plan::load_site(&src, &name) {
            Ok(sf) => {
                let hosts: Vec<String> = sf
                    .site
                    .hosts
                    .iter()
                    .map(|h| format!("{} ({})", h.name, h.role))
                    .collect();
                let _ = writeln!(
                    o,
                    "  {name:<14} {}: {}{from}",
                    sf.site.domain,
                    hosts.join(", ")
                );
            }
            Err(e) => {
                let _ = writeln!(o, "  {name:<14} BROKEN: {e:#}");
                broken.push(format!("{e:#}"));
            }
        }
    }
    crate::stdout::print(&o)?;
    match broken.len() {
        0 => Ok(()),
        n => {
            for b in &broken {
                eprintln!("imgforge: {b}");
            }
            Err(UserError(format!(
                "{n} broken profile{} ({})",
                if n == 1 { "" } else { "s" },
                src.describe()
            ))
            .into())
        }
    }
}

/// Where a profile from the folder comes from, for a reader who wonders which file is used.
fn origin_note(src: &ProfileSource, sub: &str, name: &str) -> String {
    let ProfileSource::Dir(d) = src else {
        return String::new();
    };
    let path = d.join(sub).join(format!("{name}.toml"));
    match src.origin(sub, name) {
        Origin::Embedded => String::new(),
        Origin::Folder => format!("  [{}]", path.display()),
        Origin::Replaces => format!("  [{}, replacing the built-in]", path.display()),
    }
}
