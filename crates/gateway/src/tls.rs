//! The certificates the HTTPS listener serves, picked per connection by the name the client
//! asks for (SNI). Certificates come from files (`[[tls.certs]]`) or from ACME (`acme.rs`),
//! which adds and replaces them while the gateway runs: no restart at renewal.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, Default)]
pub struct CertStore {
    certs: RwLock<Vec<Arc<CertifiedKey>>>,
    /// `covers` answers by name, kept until the certificates change: every plain HTTP
    /// request asks (redirect or not), and each answer parses every certificate held
    /// (1.8% of the gateway's time under bench/gateway.sh before this cache).
    covered: RwLock<HashMap<String, bool>>,
}

/// The most names `covers` remembers: the Host is the client's, so the cache is emptied
/// when full rather than allowed to grow.
const COVERED_MAX: usize = 1024;

impl CertStore {
    /// Adds a certificate, replacing any earlier one valid for the same first name.
    pub fn put(&self, key: Arc<CertifiedKey>) {
        {
            let mut certs = self.certs.write().expect("not poisoned");
            let first = names(&key).into_iter().next();
            certs.retain(|c| names(c).into_iter().next() != first);
            certs.push(key);
        }
        // After the certificates' lock is let go (`covers` takes the two the other way
        // round); an answer computed meanwhile from the old list is cleared here.
        self.covered.write().expect("not poisoned").clear();
    }

    pub fn is_empty(&self) -> bool {
        self.certs.read().expect("not poisoned").is_empty()
    }

    /// Whether a certificate valid for `name` is held.
    pub fn covers(&self, name: &str) -> bool {
        if let Some(&known) = self.covered.read().expect("not poisoned").get(name) {
            return known;
        }
        // The certificates are read before the cache is written, under its lock: a `put`
        // in between clears what this would add, never the other way round.
        let mut covered = self.covered.write().expect("not poisoned");
        let certs = self.certs.read().expect("not poisoned");
        let answer = certs.iter().any(|c| valid_for(c, name));
        drop(certs);
        if covered.len() >= COVERED_MAX {
            covered.clear();
        }
        covered.insert(name.to_string(), answer);
        answer
    }

    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.read().expect("not poisoned");
        match sni {
            Some(name) => certs
                .iter()
                .find(|c| valid_for(c, name))
                .cloned()
                .or_else(|| certs.first().cloned()),
            None => certs.first().cloned(),
        }
    }
}

fn valid_for(c: &CertifiedKey, name: &str) -> bool {
    let Ok(sn) = ServerName::try_from(name) else {
        return false;
    };
    webpki::EndEntityCert::try_from(&c.cert[0])
        .is_ok_and(|e| e.verify_is_valid_for_subject_name(&sn).is_ok())
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// The DNS names in a certificate's subjectAltName.
pub fn names(key: &CertifiedKey) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&key.cert[0]) else {
        return vec![];
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return vec![];
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

/// Seconds since the epoch at which the certificate expires.
pub fn not_after(cert: &CertificateDer) -> Option<i64> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(c.validity().not_after.timestamp())
}

/// A certificate chain and key from PEM text.
pub fn certified_key(
    chain_pem: &[u8],
    key_pem: &[u8],
    display: &str,
) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &chain_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{display}: reading certificates: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{display}: no certificate in the file"));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| format!("{display}: reading the key: {e}"))?
        .ok_or_else(|| format!("{display}: no private key in the file"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("{display}: unusable key: {e}"))?;
    Ok(CertifiedKey::new(chain, signing))
}

pub fn load_files(cert: &std::path::Path, key: &std::path::Path) -> Result<CertifiedKey, String> {
    let c = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let k = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
    certified_key(&c, &k, &cert.display().to_string())
}

/// With `http2`, ALPN offers h2 before http/1.1 (a client that speaks both picks h2).
pub fn server_config(store: Arc<CertStore>, http2: bool) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Arc::new(cfg)
}
