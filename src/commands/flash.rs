use std::io::IsTerminal;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

use crate::artifact::bmap;
use crate::artifact::image::{Depth, Image};
use crate::cli::FlashArgs;
use crate::flash::source::{self, Source};
use crate::flash::{same_file, target, write};
use crate::progress::fmt_bytes;

/// A bar with throughput and time left on a terminal; a line every 10% otherwise.
struct FlashProgress {
    bar: Option<ProgressBar>,
    started: std::time::Instant,
    what: String,
    total: u64,
    done: u64,
    next_tenth: u64,
}

impl write::Progress for FlashProgress {
    fn phase(&mut self, what: &str, total: u64) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        self.what = what.to_string();
        self.total = total;
        self.done = 0;
        self.next_tenth = 1;
        self.started = std::time::Instant::now();
        if std::io::stderr().is_terminal() {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg:<10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b.set_message(what.to_string());
            self.bar = Some(b);
        } else {
            eprintln!("==> {what} {}", fmt_bytes(total));
        }
    }

    fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        match &self.bar {
            Some(b) => b.inc(bytes),
            None => {
                while self.total > 0
                    && self.next_tenth <= 10
                    && self.done * 10 >= self.total * self.next_tenth
                {
                    let secs = self.started.elapsed().as_secs_f64().max(0.001);
                    let rate = self.done as f64 / secs;
                    let left = (self.total - self.done.min(self.total)) as f64 / rate.max(1.0);
                    eprintln!(
                        "    {} {:>3}%  {}/s  {:.0} s left",
                        self.what,
                        self.next_tenth * 10,
                        fmt_bytes(rate as u64),
                        left
                    );
                    self.next_tenth += 1;
                }
            }
        }
    }
}

pub fn run(a: FlashArgs) -> Result<()> {
    // Everything that can be checked, before the target is opened: a mistake here must not
    // cost a card (or the image) its data.
    let image = Image::open(&a.image, Depth::SeedArea)?;
    same_file::refuse(&a.image, &a.target)?;
    let src = Source::new(&image);
    let bmap_path = a.bmap.clone().unwrap_or_else(|| bmap::beside(&image.path));
    let map = if a.no_bmap || (a.bmap.is_none() && !bmap_path.exists()) {
        None
    } else {
        let map = source::load_bmap(&bmap_path, &image)?;
        source::check_seed_ranges(&image, &map, &bmap_path)?;
        Some(map)
    };
    // The slots come from the image's own seed area (for an .img.xz, decoded from its head).
    let values = match &a.secrets {
        Some(file) => Some(crate::seed::check_file(file, &image.seed_state.slots)?),
        None => None,
    };
    let tgt = target::check(&a.target, src.size, a.force, a.file_target)?;
    target::confirm(&tgt, &a.image, a.yes)?;
    let (dev, dev_size) = target::open(&tgt, src.size)?;
    match &map {
        Some(m) => eprintln!(
            "imgforge: {} of {} mapped by {}",
            fmt_bytes(m.mapped_bytes()),
            fmt_bytes(src.size),
            bmap_path.display()
        ),
        None => eprintln!("imgforge: no bmap: writing all {}", fmt_bytes(src.size)),
    }
    let mut progress = FlashProgress {
        bar: None,
        started: std::time::Instant::now(),
        what: String::new(),
        total: 0,
        done: 0,
        next_tenth: 1,
    };
    let result = write::write_image(
        &src,
        map.as_ref(),
        &dev,
        dev_size,
        &mut progress,
        a.fail_after_mib.map(|m| m * 1024 * 1024),
    )
    .and_then(|report| {
        if let Some(values) = &values {
            let mut dev = dev.try_clone()?;
            crate::seed::write_values(&mut dev, values)?;
            // Names only: a value never reaches a terminal or a log.
            let names: Vec<&str> = values.keys().map(String::as_str).collect();
            eprintln!(
                "imgforge: seeded {} secret(s): {}",
                names.len(),
                names.join(", ")
            );
        }
        Ok(report)
    });
    if let Some(b) = progress.bar.take() {
        b.finish_and_clear();
    }
    match result {
        Ok(r) => {
            eprintln!(
                "imgforge: wrote {} and verified {} to {} in {:.1} s ({}/s)",
                fmt_bytes(r.written),
                fmt_bytes(r.verified),
                tgt.path().display(),
                r.seconds,
                fmt_bytes((r.written as f64 / r.seconds.max(0.001)) as u64)
            );
            Ok(())
        }
        Err(e) => {
            let wiped = write::wipe(&dev, dev_size, src.size);
            let note = match wiped {
                Ok(()) => format!("flashing {} failed; its partition tables were wiped so it cannot boot half-written", tgt.path().display()),
                Err(w) => format!("flashing {} failed, and wiping its partition tables failed too ({w:#}): do not boot it", tgt.path().display()),
            };
            Err(e.context(note))
        }
    }
}
