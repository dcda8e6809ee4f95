//! `worker pg-init`: makes a role's database exist, owned by a login role whose password is
//! the secret systemd hands over as a credential. Run as the `postgres` user (peer
//! authentication) after PostgreSQL and first boot; safe to run at every boot, and a
//! changed secret becomes the new password.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Database and role names are plain lower-case identifiers: no quoting question arises
/// where they sit inside the string literals that `\gexec` runs.
pub fn check_name(s: &str) -> Result<()> {
    let mut chars = s.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63;
    if !ok {
        bail!("`{s}` is not a plain PostgreSQL name (a-z, 0-9, _; at most 63)");
    }
    Ok(())
}

/// A string literal, single-quoted (standard_conforming_strings is on by default).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The SQL run through psql's standard input, so the password never appears in a process's
/// arguments. `\gexec` runs the CREATE only when the SELECT finds nothing.
pub fn script(database: &str, owner: &str, password: &str) -> String {
    format!(
        "SELECT 'CREATE ROLE {owner} LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{owner}')\\gexec\n\
         ALTER ROLE {owner} WITH LOGIN PASSWORD {pw};\n\
         SELECT 'CREATE DATABASE {database} OWNER {owner}' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{database}')\\gexec\n",
        pw = literal(password),
    )
}

pub fn init(database: &str, owner: &str, password_file: &Path) -> Result<String> {
    check_name(database)?;
    check_name(owner)?;
    let password = std::fs::read_to_string(password_file).with_context(|| {
        format!(
            "reading the password credential {}",
            password_file.display()
        )
    })?;
    let password = password.trim_end_matches('\n');
    if password.is_empty() {
        bail!(
            "the password credential {} is empty",
            password_file.display()
        );
    }
    // --quiet and no --echo: psql prints neither the script nor, for these statements, its text.
    let mut child = Command::new("psql")
        .args([
            "--quiet",
            "--no-psqlrc",
            "--set",
            "ON_ERROR_STOP=1",
            "--dbname",
            "postgres",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("running psql")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script(database, owner, password).as_bytes())
        .context("writing to psql")?;
    let st = child.wait()?;
    if !st.success() {
        bail!("psql could not set up database `{database}` for `{owner}` ({st})");
    }
    Ok(format!(
        "imgforge-pg-init: database={database} owner={owner} password=from-credential"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_password_are_quoted() {
        let s = script("app", "app", "pa'ss");
        assert!(
            s.contains("ALTER ROLE app WITH LOGIN PASSWORD 'pa''ss';"),
            "{s}"
        );
        assert!(s.contains("WHERE rolname = 'app')\\gexec"), "{s}");
        assert!(s.contains("'CREATE DATABASE app OWNER app' WHERE"), "{s}");
        assert!(check_name("app_2").is_ok());
        for bad in ["", "App", "2app", "a'b", "a\"b", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
