//! `worker backup`: one PostgreSQL dump per run, checked, then rotated.
//!
//! The unit runs it as the `postgres` user (peer authentication, no password), into a
//! folder systemd creates for it (StateDirectory=). A dump is written to a temporary name
//! and renamed only once `pg_restore --list` has read it back, so a failed run never leaves
//! a file that looks like a backup. Rotation keeps the newest dump of each of the last
//! `keep_daily` days and of each of the last `keep_weekly` ISO weeks (Monday to Sunday).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

pub struct Options<'a> {
    pub database: &'a str,
    pub dir: &'a Path,
    pub keep_daily: usize,
    pub keep_weekly: usize,
}

/// Runs one backup and returns its log line.
pub fn run(o: &Options) -> Result<String> {
    let started = Instant::now();
    fs::create_dir_all(o.dir).with_context(|| format!("creating {}", o.dir.display()))?;
    // A run killed half-way (power cut, timeout) left a partial file: it was never a backup.
    for e in fs::read_dir(o.dir)?.flatten() {
        let n = e.file_name();
        if n.to_str().is_some_and(|n| {
            n.starts_with(&format!(".{}-", o.database)) && n.ends_with(".dump.partial")
        }) {
            fs::remove_file(e.path())
                .with_context(|| format!("removing the partial dump {}", e.path().display()))?;
        }
    }
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?
        .as_secs();
    let name = format!("{}-{}.dump", o.database, stamp(secs));
    let tmp = o.dir.join(format!(".{name}.partial"));
    let result = dump_and_check(o.database, &tmp);
    let entries = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let file = o.dir.join(&name);
    fs::rename(&tmp, &file).with_context(|| format!("naming {}", file.display()))?;
    File::open(o.dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", o.dir.display()))?;
    let bytes = fs::metadata(&file)?.len();

    let prefix = format!("{}-", o.database);
    let mut dumps: Vec<String> = fs::read_dir(o.dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n.starts_with(&prefix)
                && n.ends_with(".dump")
                && parse_stamp(&n[prefix.len()..n.len() - 5]).is_some()
        })
        .collect();
    dumps.sort();
    let remove = rotation(&dumps, &prefix, o.keep_daily, o.keep_weekly);
    for r in &remove {
        fs::remove_file(o.dir.join(r)).with_context(|| format!("removing the old dump {r}"))?;
    }
    Ok(format!(
        "imgforge-backup: database={} file={} bytes={bytes} entries={entries} kept={} removed={} in {:.1} s",
        o.database,
        file.display(),
        dumps.len() - remove.len(),
        remove.len(),
        started.elapsed().as_secs_f64()
    ))
}

/// pg_dump in custom format into `out`, then `pg_restore --list` on it: the number of
/// entries in its table of contents.
fn dump_and_check(database: &str, out: &Path) -> Result<usize> {
    let f = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let st = Command::new("pg_dump")
        .args(["--format=custom", "--dbname", database])
        .stdout(f.try_clone()?)
        .status()
        .context("running pg_dump")?;
    if !st.success() {
        bail!("pg_dump of `{database}` failed ({st})");
    }
    f.sync_all()
        .with_context(|| format!("syncing {}", out.display()))?;
    let list = Command::new("pg_restore")
        .arg("--list")
        .arg(out)
        .stderr(Stdio::inherit())
        .output()
        .context("running pg_restore --list")?;
    if !list.status.success() {
        bail!(
            "pg_restore --list cannot read the new dump of `{database}` ({})",
            list.status
        );
    }
    toc_entries(&String::from_utf8_lossy(&list.stdout)).with_context(|| {
        format!("pg_restore --list printed no `TOC Entries:` line for the dump of `{database}`")
    })
}

/// The archive's table-of-contents size from `pg_restore --list`'s header
/// (`;     TOC Entries: 4`). The header is what proves the archive was read: an empty
/// database's dump selects no entry for listing, yet has a table of contents.
pub fn toc_entries(list: &str) -> Option<usize> {
    list.lines().find_map(|l| {
        l.trim_start_matches(';')
            .trim()
            .strip_prefix("TOC Entries:")?
            .trim()
            .parse()
            .ok()
    })
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the epoch (UTC), so names sort by time.
pub fn stamp(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let (y, m, d) = civil_from_days(days);
    let s = secs % 86400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Days since the epoch of a stamp's date, `None` if it is not a stamp.
fn parse_stamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16
        || b[8] != b'T'
        || b[15] != b'Z'
        || !s[..8]
            .bytes()
            .chain(s[9..15].bytes())
            .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let (y, m, d) = (
        s[..4].parse().ok()?,
        s[4..6].parse().ok()?,
        s[6..8].parse().ok()?,
    );
    Some(days_from_civil(y, m, d))
}

/// Howard Hinnant's days-from-civil and its inverse (proleptic Gregorian calendar).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// Which of `dumps` (sorted oldest first, all named `<prefix><stamp>.dump`) to remove.
pub fn rotation(
    dumps: &[String],
    prefix: &str,
    keep_daily: usize,
    keep_weekly: usize,
) -> Vec<String> {
    let day = |n: &String| parse_stamp(&n[prefix.len()..n.len() - 5]).expect("filtered to stamps");
    // 1970-01-01 was a Thursday: shifting by 3 days makes weeks start on Monday.
    let week = |n: &String| (day(n) + 3).div_euclid(7);
    let mut keep = BTreeSet::new();
    for (key, limit) in [
        (&day as &dyn Fn(&String) -> i64, keep_daily),
        (&week, keep_weekly),
    ] {
        let mut seen = BTreeSet::new();
        for n in dumps.iter().rev() {
            if seen.len() == limit && !seen.contains(&key(n)) {
                break;
            }
            if seen.insert(key(n)) {
                keep.insert(n.clone());
            }
        }
    }
    // The dump just made is never removed, even with both limits at 0.
    if let Some(newest) = dumps.last() {
        keep.insert(newest.clone());
    }
    dumps
        .iter()
        .filter(|n| !keep.contains(*n))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toc_entries_come_from_pg_restores_header() {
        let list = ";\n; Archive created at 2026-11-21 19:17:01 UTC\n;     dbname: app\n;     TOC Entries: 4\n;     Compression: gzip\n;\n; Selected TOC Entries:\n;\n";
        assert_eq!(toc_entries(list), Some(4));
        assert_eq!(toc_entries("; Selected TOC Entries:\n"), None);
    }

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(stamp(0), "19700101T000000Z");
        assert_eq!(stamp(1735689600), "20250101T000000Z");
        assert_eq!(stamp(1709164800 + 3661), "20240229T010101Z", "leap day");
        assert_eq!(parse_stamp("20250101T000000Z"), Some(1735689600 / 86400));
        assert_eq!(parse_stamp("2025010xT000000Z"), None);
    }

    #[test]
    fn rotation_keeps_the_newest_of_each_recent_day_and_week() {
        // Two dumps a day from Monday 2026-11-02 to Saturday 2026-11-21 (20 days).
        let start = days_from_civil(2026, 11, 2) as u64 * 86400;
        let mut dumps = Vec::new();
        for d in 0..20u64 {
            for h in [3u64, 15] {
                dumps.push(format!("app-{}.dump", stamp(start + d * 86400 + h * 3600)));
            }
        }
        let remove = rotation(&dumps, "app-", 3, 2);
        let kept: Vec<&String> = dumps.iter().filter(|d| !remove.contains(d)).collect();
        // 3 days (21st, 20th, 19th at 15:00) and 2 weeks: the week of the 16th's newest is
        // the 21st (already kept), the week of the 9th's newest is Sunday the 15th.
        assert_eq!(
            kept,
            [
                "app-20261115T150000Z.dump",
                "app-20261119T150000Z.dump",
                "app-20261120T150000Z.dump",
                "app-20261121T150000Z.dump"
            ]
        );
        assert_eq!(
            rotation(&dumps[..1], "app-", 0, 0),
            Vec::<String>::new(),
            "the newest dump always stays"
        );
    }
}
