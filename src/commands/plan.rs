use anyhow::Result;

use crate::cli::ProfileArgs;

pub fn run(a: ProfileArgs) -> Result<()> {
    let plan = super::resolve_plan(&a)?;
    print!("{}", plan.to_toml());
    Ok(())
}
