use anyhow::Result;

use crate::cli::BuildArgs;
use crate::progress::Progress;

pub fn run(a: BuildArgs) -> Result<()> {
    let plan = super::resolve_plan(&a.profile)?;
    let opts = super::build_options(&a)?;
    let mut progress = Progress::new(a.quiet);
    if !a.quiet {
        eprintln!(
            "imgforge: building role {} for target {} (host {})",
            plan.role, plan.target, plan.host.fqdn
        );
    }
    let built = crate::stage::build(&plan, &opts, &mut progress)?;
    println!("{}", built.image.display());
    Ok(())
}
