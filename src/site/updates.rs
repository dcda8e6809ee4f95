//! A host's `updates` key: where its node takes new versions (a folder `imgforge publish`
//! wrote, served by any web server) and when it looks (a systemd calendar event). Both end
//! up in files of the image (a sysupdate transfer's `Path=`, a timer's `OnCalendar=`), so a
//! value is refused when the site is read, naming the line and key.

use serde::{Deserialize, Serialize};

use crate::profile::checked::checked_string;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HostUpdates {
    /// The publish folder's URL (http:// is enough: sysupdate checks SHA256SUMS's signature
    /// and every file's hash, not the transport).
    pub url: UpdateUrl,
    /// When the node looks for a new version (systemd.time(7)), e.g. "daily" or
    /// "Sun 03:00". Default: daily.
    #[serde(default = "daily")]
    pub on_calendar: OnCalendar,
}

fn daily() -> OnCalendar {
    OnCalendar("daily".into())
}

fn update_url(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    let host = rest.map(|r| r.split('/').next().unwrap_or(""));
    let chars = s
        .chars()
        .all(|c| c.is_ascii_graphic() && !"\"\\?#<>`{}|^%".contains(c));
    if host.is_some_and(|h| !h.is_empty()) && chars {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not an http:// or https:// URL of a folder (no query, fragment or `%`)",
            s.escape_debug()
        ))
    }
}

checked_string!(
    /// The URL of a publish folder.
    UpdateUrl,
    update_url
);

impl UpdateUrl {
    /// The URL ending in `/`: sysupdate appends SHA256SUMS and the files' names to it.
    pub fn folder(&self) -> String {
        let s = self.as_str();
        if s.ends_with('/') {
            s.to_string()
        } else {
            format!("{s}/")
        }
    }
}

fn on_calendar(s: &str) -> Result<(), String> {
    // systemd parses the expression itself; here only what could break the unit file.
    let ok = !s.trim().is_empty()
        && s.len() <= 100
        && s.chars()
            .all(|c| c == ' ' || (c.is_ascii_graphic() && !"\"\\%;".contains(c)));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a calendar event (systemd.time(7): e.g. \"daily\" or \"Sun 03:00\")",
            s.escape_debug()
        ))
    }
}

checked_string!(
    /// A systemd calendar event (OnCalendar=).
    OnCalendar,
    on_calendar
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_calendar_events_that_could_break_a_unit_file_are_refused() {
        for good in ["http://10.0.2.2:8000/", "https://updates.example.test/edge"] {
            assert!(good.parse::<UpdateUrl>().is_ok(), "{good}");
        }
        for bad in ["ftp://x/", "http://", "http://x/a b", "http://x/%41", "x/y"] {
            assert!(bad.parse::<UpdateUrl>().is_err(), "{bad}");
        }
        let u: UpdateUrl = "https://u.test/edge".parse().unwrap();
        assert_eq!(u.folder(), "https://u.test/edge/");
        assert!("Sun *-*-* 03:00".parse::<OnCalendar>().is_ok());
        for bad in ["", "daily\nExecStart=/bin/sh", "%h"] {
            assert!(bad.parse::<OnCalendar>().is_err(), "{bad:?}");
        }
    }
}
