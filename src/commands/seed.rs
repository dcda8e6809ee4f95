use std::fs::File;

use anyhow::{Context, Result};

use crate::cli::SeedArgs;
use crate::exit::user;

pub fn run(a: SeedArgs) -> Result<()> {
    let mut f = File::options()
        .read(true)
        .write(true)
        .open(&a.image)
        .with_context(|| format!("opening {}", a.image.display()))
        .map_err(user)?;
    let names = crate::seed::seed(&mut f, &a.secrets)?;
    // Names only: a value never reaches a terminal or a log.
    eprintln!(
        "imgforge: seeded {} with {} secret(s): {}",
        a.image.display(),
        names.len(),
        names.join(", ")
    );
    Ok(())
}
