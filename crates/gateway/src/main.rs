//! gateway: imgforge's reverse proxy. First version: answers HTTP with a plain page naming
//! the node, so the proxy role's image has a real service on port 80; the gateway issue
//! makes it the real proxy (routing, TLS, ACME, auth).

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn usage() -> &'static str {
    "usage: gateway serve [--listen ADDR:PORT] | gateway --version"
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut listen: SocketAddr = "0.0.0.0:80".parse().expect("valid default");
    let mut serve = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "serve" => serve = true,
            "--listen" => {
                let v = it.next().context("--listen needs ADDR:PORT")?;
                listen = v.parse().with_context(|| format!("--listen `{v}` is not ADDR:PORT"))?;
            }
            "--version" => {
                println!("gateway {}", env!("CARGO_PKG_VERSION"));
                return Ok(());
            }
            other => bail!("unexpected argument `{other}`; {}", usage()),
        }
    }
    if !serve {
        bail!("{}", usage());
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(serve_plain(listen))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

async fn serve_plain(addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    eprintln!("gateway: listening on {addr}");
    let page = Bytes::from(format!("imgforge gateway on {}\n", hostname()));
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    };
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => r.context("accepting a connection")?,
            _ = &mut shutdown => {
                eprintln!("gateway: stopping");
                return Ok(());
            }
        };
        let page = page.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let page = page.clone();
                async move {
                    eprintln!("{peer} {} {}", req.method(), req.uri());
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "text/plain; charset=utf-8")
                            .body(Full::new(page))
                            .expect("valid response"),
                    )
                }
            });
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await {
                eprintln!("gateway: connection from {peer}: {e}");
            }
        });
    }
}
