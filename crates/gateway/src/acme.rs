//! Certificates from an ACME server (Let's Encrypt, or Pebble in tests) by HTTP-01: the
//! challenge answers are served by the plain HTTP listener (which never redirects
//! `/.well-known/acme-challenge/`), the account and the certificates are kept in `state-dir`,
//! and a certificate is renewed `renew-before-days` before it expires, checked twice a day.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};

use crate::config::Acme;
use crate::tls::{self, CertStore};

/// Tokens of the HTTP-01 challenges in progress and their key authorizations.
#[derive(Default)]
pub struct Challenges(Mutex<HashMap<String, String>>);

impl Challenges {
    pub fn answer(&self, token: &str) -> Option<String> {
        self.0.lock().expect("not poisoned").get(token).cloned()
    }
}

/// Keeps the certificate for `domains` valid, forever.
pub async fn maintain(
    acme: Acme,
    domains: Vec<String>,
    store: Arc<CertStore>,
    challenges: Arc<Challenges>,
) {
    loop {
        match ensure(&acme, &domains, &store, &challenges).await {
            Ok(msg) => println!("acme: {msg}"),
            Err(e) => eprintln!("gateway: acme: {e:#}; retrying in 5 minutes"),
        }
        let wait = if store.is_empty() {
            Duration::from_secs(300)
        } else {
            Duration::from_secs(12 * 3600)
        };
        tokio::time::sleep(wait).await;
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

async fn ensure(
    acme: &Acme,
    domains: &[String],
    store: &CertStore,
    challenges: &Challenges,
) -> Result<String> {
    std::fs::create_dir_all(&acme.state_dir)
        .with_context(|| format!("creating {}", acme.state_dir.display()))?;
    let (cert_path, key_path) = (
        acme.state_dir.join("cert.pem"),
        acme.state_dir.join("key.pem"),
    );
    if let Ok(k) = tls::load_files(&cert_path, &key_path) {
        let until = tls::not_after(&k.cert[0]).unwrap_or(0);
        let covers = domains.iter().all(|d| tls::names(&k).contains(d));
        if covers && until - now() > acme.renew_before_days as i64 * 86400 {
            store.put(Arc::new(k));
            return Ok(format!(
                "certificate for {} valid for {} more days",
                domains.join(", "),
                (until - now()) / 86400
            ));
        }
    }
    let (chain, key) = obtain(acme, domains, challenges).await?;
    let k = tls::certified_key(chain.as_bytes(), key.as_bytes(), "the new certificate")
        .map_err(|e| anyhow!(e))?;
    write_private(&key_path, key.as_bytes())?;
    write_private(&cert_path, chain.as_bytes())?;
    let days = (tls::not_after(&k.cert[0]).unwrap_or(0) - now()) / 86400;
    store.put(Arc::new(k));
    Ok(format!(
        "new certificate for {}, valid {days} days",
        domains.join(", ")
    ))
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

async fn account(acme: &Acme) -> Result<Account> {
    let builder = || -> Result<_> {
        Ok(match &acme.ca_file {
            Some(ca) => Account::builder_with_root(ca)
                .with_context(|| format!("trusting {}", ca.display()))?,
            None => Account::builder()?,
        })
    };
    let saved = acme.state_dir.join("account.json");
    if let Ok(text) = std::fs::read_to_string(&saved) {
        let creds: AccountCredentials =
            serde_json::from_str(&text).context("reading the saved ACME account")?;
        return Ok(builder()?.from_credentials(creds).await?);
    }
    let contact = acme.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, creds) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            acme.directory.clone(),
            None,
        )
        .await
        .with_context(|| format!("creating an account at {}", acme.directory))?;
    write_private(&saved, serde_json::to_string(&creds)?.as_bytes())?;
    Ok(account)
}

async fn obtain(
    acme: &Acme,
    domains: &[String],
    challenges: &Challenges,
) -> Result<(String, String)> {
    let account = account(acme).await?;
    let ids: Vec<Identifier> = domains.iter().map(|d| Identifier::Dns(d.clone())).collect();
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .context("ordering a certificate")?;
    let mut tokens = Vec::new();
    let mut auths = order.authorizations();
    while let Some(a) = auths.next().await {
        let mut a = a?;
        if a.status != AuthorizationStatus::Pending {
            continue;
        }
        let mut ch = a
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| anyhow!("the ACME server offers no http-01 challenge"))?;
        let token = ch.token.clone();
        challenges
            .0
            .lock()
            .expect("not poisoned")
            .insert(token.clone(), ch.key_authorization().as_str().to_string());
        tokens.push(token);
        ch.set_ready().await?;
    }
    let status = order.poll_ready(&RetryPolicy::default()).await;
    for t in &tokens {
        challenges.0.lock().expect("not poisoned").remove(t);
    }
    let status = status?;
    if status != OrderStatus::Ready {
        bail!("the order for {} ended {status:?} (is port 80 of this host reachable for the ACME server?)", domains.join(", "));
    }
    let key = order.finalize().await?;
    let chain = order.poll_certificate(&RetryPolicy::default()).await?;
    Ok((chain, key))
}
