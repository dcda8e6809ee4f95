//! The line the worker prints on the console when the role's checks pass, and the one
//! parser of it (the boot tests, `imgforge test`, the update's health gate read it):
//! `IMGFORGE-READY role=<role> target=<target> version=<version> checks=<passed>/<total>`.

/// The marker the line starts with.
pub const MARKER: &str = "IMGFORGE-READY";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub role: String,
    pub target: String,
    pub version: String,
    pub passed: usize,
    pub total: usize,
}

impl std::fmt::Display for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{MARKER} role={} target={} version={} checks={}/{}",
            self.role, self.target, self.version, self.passed, self.total
        )
    }
}

/// The ready line found in `line` (a console line may carry a prefix), or None.
pub fn parse(line: &str) -> Option<Ready> {
    let rest = &line[line.find(MARKER)? + MARKER.len()..];
    let mut words = rest.split_whitespace();
    let mut field = |key: &str| {
        words
            .next()
            .and_then(|w| w.strip_prefix(key))
            .and_then(|w| w.strip_prefix('='))
            .map(str::to_string)
    };
    let role = field("role")?;
    let target = field("target")?;
    let version = field("version")?;
    let checks = field("checks")?;
    let (passed, total) = checks.split_once('/')?;
    Some(Ready {
        role,
        target,
        version,
        passed: passed.parse().ok()?,
        total: total.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_round_trips_and_a_broken_one_is_none() {
        let r = Ready {
            role: "proxy".into(),
            target: "x86_64-vm".into(),
            version: "2".into(),
            passed: 8,
            total: 8,
        };
        let line = r.to_string();
        assert_eq!(
            line,
            "IMGFORGE-READY role=proxy target=x86_64-vm version=2 checks=8/8"
        );
        assert_eq!(parse(&format!("[   20.1] worker[301]: {line}\r")), Some(r));
        assert_eq!(parse("IMGFORGE-READY role=proxy target=x checks=8/8"), None);
        assert_eq!(parse("IMGFORGE-FAILED role=proxy"), None);
    }
}
