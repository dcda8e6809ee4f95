//! `worker exec`: start a service's command with the environment of its env file, where
//! `${slot:NAME}` is replaced by the systemd credential NAME (the slot's value, which
//! systemd placed in $CREDENTIALS_DIRECTORY for this service only). The env file in the
//! image holds no secret; the value lives only in the started process's environment.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

/// Reads `KEY=VALUE` lines (blank lines and `#` comments skipped) and fills in the slots.
pub fn environment(
    env_file: &Path,
    credentials: Option<&Path>,
) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(env_file)
        .with_context(|| format!("reading {}", env_file.display()))?;
    let mut env = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| anyhow!("{}:{}: expected KEY=VALUE", env_file.display(), i + 1))?;
        let value = fill(v, |slot| {
            let dir = credentials.ok_or_else(|| {
                anyhow!("{}:{}: `{k}` needs the credential `{slot}`, but there is no $CREDENTIALS_DIRECTORY (the unit's LoadCredential=)", env_file.display(), i + 1)
            })?;
            let p = dir.join(slot);
            let v = std::fs::read_to_string(&p).with_context(|| {
                format!(
                    "{}:{}: `{k}` needs the credential `{slot}` ({})",
                    env_file.display(),
                    i + 1,
                    p.display()
                )
            })?;
            Ok(v.trim_end_matches(['\n', '\r']).to_string())
        })?;
        env.insert(k.to_string(), value);
    }
    Ok(env)
}

fn fill(v: &str, mut get: impl FnMut(&str) -> Result<String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = v;
    while let Some(i) = rest.find("${slot:") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 7..];
        let j = after
            .find('}')
            .ok_or_else(|| anyhow!("unclosed `${{slot:` in `{v}`"))?;
        out.push_str(&get(&after[..j])?);
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Replaces this process with `command`, its environment extended by the env file's.
pub fn run(env_file: &Path, command: &[String]) -> Result<std::convert::Infallible> {
    let Some((program, args)) = command.split_first() else {
        bail!("no command to run after --");
    };
    let creds = std::env::var_os("CREDENTIALS_DIRECTORY");
    let env = environment(env_file, creds.as_deref().map(Path::new))?;
    let err = std::process::Command::new(program)
        .args(args)
        .envs(env)
        .exec();
    Err(anyhow!(err).context(format!("starting {program}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_filled_from_credentials_and_a_missing_one_is_named() {
        let d = tempfile::tempdir().unwrap();
        let creds = d.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        std::fs::write(creds.join("db-password"), "s3cret\n").unwrap();
        let f = d.path().join("app.env");
        std::fs::write(
            &f,
            "# comment\nURL=postgresql://u:${slot:db-password}@h/db\nPLAIN=x=y\n",
        )
        .unwrap();
        let env = environment(&f, Some(&creds)).unwrap();
        assert_eq!(env["URL"], "postgresql://u:s3cret@h/db");
        assert_eq!(env["PLAIN"], "x=y");
        std::fs::write(&f, "KEY=${slot:other}\n").unwrap();
        let err = format!("{:#}", environment(&f, Some(&creds)).unwrap_err());
        assert!(
            err.contains("app.env:1: `KEY` needs the credential `other`"),
            "{err}"
        );
        assert!(!err.contains("s3cret"));
    }
}
