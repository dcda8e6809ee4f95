//! Listeners and the configuration in force: each connection is served by hyper with
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

use crate::config::{self, Config};
use crate::proxy::{self, Conn, Runtime};

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
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into());
            Runtime::new(cfg, Some(format!("imgforge gateway on {host}\n")))
        }
    }
}

pub async fn serve(o: Options) -> Result<()> {
    let rt = load(&o).map_err(anyhow::Error::msg)?;
    let addr = rt.cfg.server.http.context("no listener: set server.http")?;
    let current = Arc::new(ArcSwap::from_pointee(rt));
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    eprintln!("gateway: listening on http://{addr} ({} routes)", current.load().cfg.routes.len());

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
                let current = current.clone();
                tokio::spawn(async move {
                    let conn = Conn { peer, https: false };
                    let svc = service_fn(move |req| {
                        // Each request takes the configuration in force when it arrives.
                        let rt = current.load_full();
                        async move { Ok::<_, std::convert::Infallible>(proxy::handle(rt, conn, req).await) }
                    });
                    if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).with_upgrades().await {
                        if !e.is_incomplete_message() {
                            eprintln!("gateway: connection from {peer}: {e}");
                        }
                    }
                });
            }
            _ = hup.recv() => {
                match load(&o) {
                    Ok(rt) => {
                        if rt.cfg.server.http != Some(addr) {
                            eprintln!("gateway: reload: the listener address changed; it takes effect at restart");
                        }
                        eprintln!("gateway: reloaded ({} routes)", rt.cfg.routes.len());
                        current.store(Arc::new(rt));
                    }
                    Err(e) => eprintln!("gateway: reload refused, the running configuration stays: {e}"),
                }
            }
            _ = term.recv() => { eprintln!("gateway: stopping"); return Ok(()); }
            _ = tokio::signal::ctrl_c() => { eprintln!("gateway: stopping"); return Ok(()); }
        }
    }
}
