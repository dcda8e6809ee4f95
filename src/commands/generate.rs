//! `imgforge generate`: the man pages and shell completions, made from the clap definitions
//! so they never disagree with `--help`. For packaging: `scripts/build` installs them.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_mangen::roff::{roman, Roff};
use clap_mangen::Man;

use crate::cli::{Cli, Generate, GenerateArgs};
use crate::exit::user;

pub fn run(a: GenerateArgs) -> Result<()> {
    match a.what {
        Generate::Man { dir } => {
            let written = man_pages(&dir)?;
            crate::stdout::report(|out| {
                for path in written {
                    writeln!(out, "{}", path.display())?;
                }
                Ok(())
            })
        }
        Generate::Completions { shell, dir } => {
            let mut cmd = Cli::command();
            match dir {
                Some(dir) => {
                    create_dir(&dir)?;
                    let path = clap_complete::generate_to(shell, &mut cmd, "imgforge", &dir)
                        .with_context(|| {
                            format!("writing the {shell} completions into {}", dir.display())
                        })?;
                    crate::stdout::print(&format!("{}\n", path.display()))
                }
                None => {
                    // clap_complete panics on a failed write: render into memory first.
                    let mut script = Vec::new();
                    clap_complete::generate(shell, &mut cmd, "imgforge", &mut script);
                    crate::stdout::report(|out| out.write_all(&script))
                }
            }
        }
    }
}

fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)
        .with_context(|| format!("creating {}", dir.display()))
        .map_err(user)
}

/// Writes imgforge.1 and one page per visible subcommand (imgforge-build.1, ...), as git and
/// cargo ship theirs; returns the paths written.
pub fn man_pages(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    create_dir(dir)?;
    let mut top = Cli::command().disable_help_subcommand(true);
    // Gives each subcommand its display name (imgforge-build) and bin name (imgforge build).
    top.build();
    let subs: Vec<clap::Command> = top
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    // The top page's SUBCOMMANDS section already names each subcommand's page.
    let mut written = vec![write_page(dir, top, None)?];
    for sub in subs {
        written.push(write_page(dir, sub, Some("imgforge(1)"))?);
    }
    Ok(written)
}

fn write_page(
    dir: &Path,
    cmd: clap::Command,
    see_also: Option<&str>,
) -> Result<std::path::PathBuf> {
    let has_args = cmd.get_arguments().any(|a| !a.is_hide_set());
    let has_subs = cmd.get_subcommands().any(|s| !s.is_hide_set());
    // Subcommands carry no version of their own (clap_mangen's VERSION section needs one).
    let has_version = cmd.get_version().is_some();
    let man = Man::new(cmd)
        .manual("imgforge Manual")
        .source(format!("imgforge {}", env!("CARGO_PKG_VERSION")))
        // An empty date would shift the .TH arguments (groff drops the empty one).
        .date(page_date());
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    // Writing into a Vec cannot fail.
    render(&man, &mut page, has_args, has_subs, has_version, see_also)
        .expect("rendering into memory");
    let mut f = fs::File::create(&path)
        .with_context(|| format!("creating {}", path.display()))
        .map_err(user)?;
    f.write_all(&page)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// clap_mangen's sections, then EXIT STATUS (the codes src/exit.rs and the README give) and
/// SEE ALSO, before VERSION.
fn render(
    man: &Man,
    w: &mut dyn Write,
    has_args: bool,
    has_subs: bool,
    has_version: bool,
    see_also: Option<&str>,
) -> std::io::Result<()> {
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    if has_args {
        man.render_options_section(w)?;
    }
    if has_subs {
        man.render_subcommands_section(w)?;
    }
    let mut roff = Roff::default();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, what) in [
        ("0", "Success."),
        ("1", "A user or configuration error: a bad flag or argument, a profile or site that does not check, a missing file or tool."),
        ("2", "An internal error."),
        ("3", "A boot test failed: the node reported IMGFORGE-FAILED, panicked, or never became ready."),
        ("130", "Interrupted by Ctrl-C or SIGTERM; temporary files removed, no output written."),
    ] {
        roff.control("TP", []);
        roff.text([roman(code)]);
        roff.text([roman(what)]);
    }
    if let Some(page) = see_also {
        roff.control("SH", ["SEE ALSO"]);
        roff.text([roman(page)]);
    }
    roff.to_writer(w)?;
    if has_version {
        man.render_version_section(w)?;
    }
    Ok(())
}

/// The pages' date: SOURCE_DATE_EPOCH's day when set (a reproducible package build), else
/// today's, as YYYY-MM-DD.
fn page_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    ymd(secs / 86_400)
}

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's days_from_civil, inverted).
fn ymd(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::ymd;

    #[test]
    fn days_become_civil_dates() {
        assert_eq!(ymd(0), "1970-01-01");
        assert_eq!(ymd(1_735_689_600 / 86_400), "2025-01-01");
        // 2024-02-29, a leap day.
        assert_eq!(ymd(19_782), "2024-02-29");
        assert_eq!(ymd(19_783), "2024-03-01");
    }
}
