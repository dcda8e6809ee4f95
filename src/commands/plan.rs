//! `imgforge plan`: what the image will be (the summary), the merged profile (`--toml`), or
//! the summary as JSON (`--json`).

mod summary;

use anyhow::{Context, Result};

use crate::cli::{PlanArgs, PlanFormat};
use crate::exit::user;
use crate::profile::ProfileSource;

pub fn run(a: PlanArgs) -> Result<()> {
    let plan = super::resolve_plan(&a.profile)?;
    let text = match a.format() {
        PlanFormat::Toml => plan.to_toml(),
        format => {
            // The plan keeps what the site rendered, not the site: read it again for who
            // may reach each port (resolve_plan has already checked it).
            let src = ProfileSource::choose(a.profile.profiles.as_deref()).map_err(user)?;
            let sf = crate::plan::load_site(&src, &a.profile.site).map_err(user)?;
            let view = sf.view();
            let s = summary::summarize(&plan, &view).map_err(user)?;
            if format == PlanFormat::Json {
                let mut j = serde_json::to_string_pretty(&s).context("the plan as JSON")?;
                j.push('\n');
                j
            } else {
                summary::render(&s)
            }
        }
    };
    crate::stdout::print(&text)
}
