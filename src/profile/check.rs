//! Checks of one layer file (common.toml, a target, a role) beyond what its types refuse
//! while it is read: names used twice in one file (which the merge would silently replace),
//! exec and env rules, names that become unit, database or file names. Each error names
//! the file, line and key.

use anyhow::{bail, Result};

use super::schema::Layer;

/// A parsed layer with the text it came from, for messages with line numbers.
#[derive(Debug)]
pub struct LayerFile {
    pub layer: Layer,
    pub display: String,
    pub text: String,
}

impl LayerFile {
    /// `FILE:LINE:COL: key `KEY``.
    pub fn at(&self, key: &str) -> String {
        toml_errors::at(&self.display, &self.text, key)
    }

    fn line_of(&self, key: &str) -> String {
        toml_errors::position(&self.text, key)
            .map_or(String::new(), |(l, _)| format!(" (line {l})"))
    }

    /// The names of a list of the layer (`service`, `slot`, ...) as the file keys it.
    pub fn names(&self, list: &str) -> Vec<&str> {
        let l = &self.layer;
        match list {
            "service" => l.services.iter().map(|s| s.name.as_str()).collect(),
            "slot" => l.slots.iter().map(|s| s.name.as_str()).collect(),
            "database" => l.databases.iter().map(|s| s.name.as_str()).collect(),
            "job" => l.jobs.iter().map(|s| s.name.as_str()).collect(),
            "app" => l.apps.iter().map(|s| s.name.as_str()).collect(),
            _ => vec![],
        }
    }
}

/// `FILE:LINE:COL: key `LIST[i].SUB`` in the last of `files` that defines `name` in `list`
/// (the definition the merge keeps), or the last file when none does.
pub fn at_item(files: &[&LayerFile], list: &str, name: &str, sub: &str) -> String {
    for f in files.iter().rev() {
        if let Some(i) = f.names(list).iter().position(|n| *n == name) {
            let key = if sub.is_empty() {
                format!("{list}[{i}]")
            } else {
                format!("{list}[{i}].{sub}")
            };
            return f.at(&key);
        }
    }
    files.last().map_or(String::new(), |f| f.display.clone())
}

/// Lower-case letters, digits, '_' and `extra`, starting with a letter: a PostgreSQL name,
/// or a name that becomes part of a unit or file name.
pub fn plain_name(s: &str, extra: char) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == extra)
}

pub fn check_file(f: &LayerFile) -> Result<()> {
    for (list, kind) in [
        ("service", "service"),
        ("slot", "slot"),
        ("database", "database"),
        ("job", "job"),
        ("app", "app slot"),
    ] {
        let names = f.names(list);
        for (j, n) in names.iter().enumerate() {
            if let Some(i) = names[..j].iter().position(|o| o == n) {
                bail!(
                    "{}: a second {kind} named `{n}`: {list}[{i}]{} has the name already (in one file a name is used once; a later layer replaces an earlier layer's {kind} by name)",
                    f.at(&format!("{list}[{j}].name")),
                    f.line_of(&format!("{list}[{i}].name"))
                );
            }
        }
    }
    let l = &f.layer;
    for (i, svc) in l.services.iter().enumerate() {
        match svc.exec.first() {
            Some(p) if p.starts_with('/') => {}
            Some(p) => bail!(
                "{}: service `{}`: the program `{p}` must be an absolute path",
                f.at(&format!("service[{i}].exec[0]")),
                svc.name
            ),
            None => bail!(
                "{}: service `{}`: `exec` is empty",
                f.at(&format!("service[{i}].exec")),
                svc.name
            ),
        }
        for k in svc.env.keys() {
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                bail!(
                    "{}: service `{}`: env key `{}` must be letters, digits and '_'",
                    f.at(&format!("service[{i}].env")),
                    svc.name,
                    k.escape_debug()
                );
            }
        }
        if !svc.ports.is_empty() {
            if let Some(k) = svc
                .exec
                .iter()
                .position(|w| w.contains("127.0.0.1:") || w.contains("localhost:"))
            {
                bail!(
                    "{}: service `{}` listens on `{}`, which other hosts cannot reach (the proxy gets a 502): bind 0.0.0.0 and let the firewall say who may connect",
                    f.at(&format!("service[{i}].exec[{k}]")),
                    svc.name,
                    svc.exec[k]
                );
            }
        }
        if svc.user.is_none() {
            if let Err(e) = svc.name.parse::<super::unit_values::UserName>() {
                bail!(
                    "{}: service `{}` runs as the user of its name, but {e}: set `user`",
                    f.at(&format!("service[{i}].name")),
                    svc.name
                );
            }
        }
        if let Some(a) = &svc.app {
            if !plain_name(a, '-') {
                bail!(
                    "{}: service `{}`: app `{a}` is not an app slot name",
                    f.at(&format!("service[{i}].app")),
                    svc.name
                );
            }
        }
    }
    for (i, slot) in l.slots.iter().enumerate() {
        let ok = !slot.name.is_empty()
            && slot
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok {
            bail!(
                "{}: slot name `{}` must be lower-case letters, digits, '-' or '_'",
                f.at(&format!("slot[{i}].name")),
                slot.name.escape_debug()
            );
        }
        if slot.generate && slot.kind != seed_area::SlotKind::Secret {
            bail!(
                "{}: slot `{}`: only a slot of kind \"secret\" can be generated on the node",
                f.at(&format!("slot[{i}].generate")),
                slot.name
            );
        }
    }
    for (i, app) in l.apps.iter().enumerate() {
        if !plain_name(&app.name, '-') {
            bail!(
                "{}: app slot name `{}` must be lower-case letters, digits, '-' or '_'",
                f.at(&format!("app[{i}].name")),
                app.name.escape_debug()
            );
        }
        let req = std::path::Path::new(&app.requirements);
        if app.requirements.is_empty()
            || req.is_absolute()
            || req
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            bail!(
                "{}: app slot `{}`: requirements `{}` must be a path inside the app, without \"..\"",
                f.at(&format!("app[{i}].requirements")),
                app.name,
                app.requirements.escape_debug()
            );
        }
        if app.deps == super::schema::Deps::Debian && app.system_site_packages == Some(false) {
            bail!(
                "{}: app slot `{}`: with deps = \"debian\" the venv is made of the role's Debian packages: system-site-packages = false would hide them (use deps = \"pypi\")",
                f.at(&format!("app[{i}].system-site-packages")),
                app.name
            );
        }
    }
    for (i, d) in l.databases.iter().enumerate() {
        for (what, key, n) in [("database", "name", &d.name), ("owner", "owner", &d.owner)] {
            if !plain_name(n, '_') {
                bail!(
                    "{}: {what} name `{}` must be lower-case letters, digits or '_', starting with a letter",
                    f.at(&format!("database[{i}].{key}")),
                    n.escape_debug()
                );
            }
        }
    }
    for (i, j) in l.jobs.iter().enumerate() {
        if !plain_name(&j.name, '-') {
            bail!(
                "{}: job name `{}` must be lower-case letters, digits, '-' or '_'",
                f.at(&format!("job[{i}].name")),
                j.name.escape_debug()
            );
        }
        if !plain_name(&j.pg_dump.database, '_') {
            bail!(
                "{}: job `{}`: database name `{}` is not a plain name",
                f.at(&format!("job[{i}].pg-dump.database")),
                j.name,
                j.pg_dump.database.escape_debug()
            );
        }
        if j.schedule.is_empty() {
            bail!(
                "{}: job `{}`: schedule must be one systemd calendar expression",
                f.at(&format!("job[{i}].schedule")),
                j.name
            );
        }
    }
    Ok(())
}
