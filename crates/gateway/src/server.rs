//! Listeners (HTTP, and HTTPS with certificates picked by SNI) and the configuration in
//! force: each connection is served by hyper with
//! upgrades on; SIGHUP reloads the configuration file (a bad file is reported and the
//! running configuration kept), and connections already open keep the configuration they
//! started with, so a reload drops none of them. SIGTERM stops the gateway.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use tokio_rustls::TlsAcceptor;

use crate::acme::Challenges;
use crate::config::{self, Config};
use crate::proxy::{self, Conn, Runtime};
use crate::tls::CertStore;

pub struct Options {
    pub config: Option<PathBuf>,
    /// Overrides `server.http` (and, without a config, is the only setting).
    pub listen: Option<std::net::SocketAddr>,
}

fn load(o: &Options) -> Result<Runtime, String> {
    match &o.config {
        Some(path) => {
            let mut cfg = config::load(path)?;
            if o.listen.is_some() {
                cfg.server.http = o.listen;
            }
            Runtime::new(cfg, None)
        }
        None => {
            let mut cfg: Config = config::parse("(defaults)", "").expect("empty config is valid");
            cfg.server.http = o.listen.or(cfg.server.http);
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into());
            Runtime::new(cfg, Some(format!("imgforge gateway on {host}\n")))
        }
    }
}

/// What every connection shares: the configuration in force, the ACME challenges in
/// progress, the certificates.
struct Shared {
    current: ArcSwap<Runtime>,
    challenges: Arc<Challenges>,
    certs: Arc<CertStore>,
}

fn serve_conn<S>(shared: Arc<Shared>, stream: S, conn: Conn)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let svc = service_fn(move |req| {
            // Each request takes the configuration in force when it arrives.
            let rt = shared.current.load_full();
            let ch = shared.challenges.clone();
            let certs = shared.certs.clone();
            async move {
                Ok::<_, std::convert::Infallible>(proxy::handle(rt, ch, &certs, conn, req).await)
            }
        });
        // Over TLS, one flattened write per response makes one TLS record, where vectored
        // writes would make one per header and body buffer.
        let mut b = http1::Builder::new();
        b.writev(!conn.https);
        if let Err(e) = b
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades()
            .await
        {
            if !e.is_incomplete_message() {
                eprintln!("gateway: connection from {}: {e}", conn.peer);
            }
        }
    });
}

pub async fn serve(o: Options) -> Result<()> {
    let rt = load(&o).map_err(anyhow::Error::msg)?;
    let addr = rt.cfg.server.http.context("no listener: set server.http")?;
    let https = rt.cfg.server.https;
    let certs = Arc::new(CertStore::default());
    for c in &rt.file_certs {
        certs.put(c.clone());
    }
    let challenges = Arc::new(Challenges::default());
    if let Some(acme) = rt.cfg.tls.as_ref().and_then(|t| t.acme.clone()) {
        tokio::spawn(crate::acme::maintain(
            acme,
            rt.cfg.acme_domains(),
            certs.clone(),
            challenges.clone(),
        ));
    }
    let rt = Arc::new(rt);
    crate::health::spawn(&rt);
    let shared = Arc::new(Shared {
        current: ArcSwap::new(rt),
        challenges,
        certs: certs.clone(),
    });
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let tls_listener = match https {
        Some(a) => Some((
            TcpListener::bind(a)
                .await
                .with_context(|| format!("binding {a}"))?,
            TlsAcceptor::from(crate::tls::server_config(certs)),
        )),
        None => None,
    };
    eprintln!(
        "gateway: listening on http://{addr}{} ({} routes)",
        https
            .map(|a| format!(" and https://{a}"))
            .unwrap_or_default(),
        shared.current.load().cfg.routes.len()
    );
    let accept_tls = async |l: &Option<(TcpListener, TlsAcceptor)>| match l {
        Some((l, _)) => l.accept().await,
        None => std::future::pending().await,
    };

    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    loop {
        tokio::select! {
            r = listener.accept() => {
                let (stream, peer) = match r {
                    Ok(x) => x,
                    Err(e) => { eprintln!("gateway: accept: {e}"); continue; }
                };
                let _ = stream.set_nodelay(true);
                serve_conn(shared.clone(), stream, Conn { peer, https: false });
            }
            r = accept_tls(&tls_listener) => {
                let (stream, peer) = match r {
                    Ok(x) => x,
                    Err(e) => { eprintln!("gateway: accept: {e}"); continue; }
                };
                let _ = stream.set_nodelay(true);
                let acceptor = tls_listener.as_ref().expect("accepted on it").1.clone();
                let shared = shared.clone();
                tokio::spawn(async move {
                    // The handshake runs in the connection's task: a slow client holds up no one.
                    match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_conn(shared, tls, Conn { peer, https: true }),
                        Ok(Err(e)) => eprintln!("gateway: TLS handshake with {peer}: {e}"),
                        Err(_) => eprintln!("gateway: TLS handshake with {peer}: timed out"),
                    }
                });
            }
            _ = hup.recv() => {
                match load(&o) {
                    Ok(rt) => {
                        if rt.cfg.server.http != Some(addr) {
                            eprintln!("gateway: reload: the listener address changed; it takes effect at restart");
                        }
                        for c in &rt.file_certs {
                            shared.certs.put(c.clone());
                        }
                        eprintln!("gateway: reloaded ({} routes)", rt.cfg.routes.len());
                        let rt = Arc::new(rt);
                        crate::health::spawn(&rt);
                        shared.current.store(rt);
                    }
                    Err(e) => eprintln!("gateway: reload refused, the running configuration stays: {e}"),
                }
            }
            _ = term.recv() => { eprintln!("gateway: stopping"); return Ok(()); }
            _ = tokio::signal::ctrl_c() => { eprintln!("gateway: stopping"); return Ok(()); }
        }
    }
}
