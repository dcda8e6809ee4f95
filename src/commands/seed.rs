use std::fs::File;

use anyhow::{Context, Result};

use crate::artifact::bmap;
use crate::artifact::image::{Depth, Format, Image};
use crate::cli::SeedArgs;
use crate::exit::{user, UserError};

pub fn run(a: SeedArgs) -> Result<()> {
    let image = Image::open(&a.image, Depth::SeedArea)?;
    if image.format == Format::Xz {
        return Err(UserError(format!(
            "{} is compressed: `imgforge seed` writes into a raw .img; decompress it (unxz -k), \
             or give the secrets to `imgforge flash --secrets`",
            a.image.display()
        ))
        .into());
    }
    // The bmap beside the image hashed the seed area as built: it is hashed again after
    // seeding, so the seeded image flashes by its bmap (with imgforge or bmaptool). Read it
    // first: a broken one stops the seed before anything is written.
    let map_path = bmap::beside(&a.image);
    let map = if map_path.exists() {
        let text = std::fs::read_to_string(&map_path)
            .with_context(|| format!("reading {}", map_path.display()))
            .map_err(user)?;
        let map = bmap::parse(&text)
            .with_context(|| format!("{} (fix or remove it)", map_path.display()))
            .map_err(user)?;
        if map.image_size == image.size {
            Some(map)
        } else {
            eprintln!(
                "imgforge: {} describes a {}-byte image, not {} ({} bytes): left as it is; \
                 flash this image with --no-bmap",
                map_path.display(),
                map.image_size,
                a.image.display(),
                image.size
            );
            None
        }
    } else {
        None
    };
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
    if let Some(mut map) = map {
        map.remap(&f, image.seed.offset, image.seed.len)?;
        let tmp = map_path.with_extension("bmap.tmp");
        std::fs::write(&tmp, bmap::to_xml(&map))
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &map_path)
            .with_context(|| format!("replacing {}", map_path.display()))?;
        // SHA256SUMS records the image as built; a seeded image is no longer that.
        let sums = a.image.with_file_name("SHA256SUMS");
        eprintln!(
            "imgforge: {} now describes the seeded image{}",
            map_path.display(),
            if sums.exists() {
                format!(
                    " ({} still lists the image and bmap as built)",
                    sums.display()
                )
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
