//! Listeners (HTTP, and HTTPS with certificates picked by SNI) and the configuration in
//! force: each connection is served by hyper with
//! upgrades on; SIGHUP reloads the configuration file (a bad file is reported and the
//! running configuration kept), and connections already open keep the configuration they
//! started with, so a reload drops none of them. SIGTERM stops the gateway.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;

use tokio_rustls::TlsAcceptor;

use crate::acme::Challenges;
use crate::config::{self, Config};
use crate::proxy::{self, Conn, Runtime};
use crate::tls::CertStore;
use crate::watchdog::{self, Activity, Tracked, Watched};

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

/// The HTTP version a connection speaks, as ALPN settled it (plain HTTP: always 1.1).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    Http1,
    Http2,
}

fn serve_conn<S>(
    shared: Arc<Shared>,
    stream: S,
    conn: Conn,
    version: Version,
    permit: tokio::sync::OwnedSemaphorePermit,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let _permit = permit;
        let (header_read, keepalive, max_head) = {
            let s = &shared.current.load().cfg.server;
            (
                Duration::from_secs(s.header_read_timeout_secs.get()),
                Duration::from_secs(s.keepalive_idle_secs.get()),
                s.max_header_bytes.get(),
            )
        };
        let act = Activity::new(header_read, keepalive);
        let stream = Watched {
            inner: stream,
            act: act.clone(),
        };
        let svc_act = act.clone();
        let svc = service_fn(move |req| {
            svc_act.request_started();
            // Each request takes the configuration in force when it arrives.
            let rt = shared.current.load_full();
            let ch = shared.challenges.clone();
            let certs = shared.certs.clone();
            let act = svc_act.clone();
            async move {
                let resp = proxy::handle(rt, ch, &certs, conn, req).await;
                Ok::<_, std::convert::Infallible>(resp.map(|b| Tracked::new(b, act)))
            }
        });
        let io = TokioIo::new(stream);
        // ALPN has said which protocol the client speaks, so each connection gets the one
        // builder it needs (hyper-util's auto builder would sniff the preface for nothing,
        // and its HTTP/1 settings have no max_header_size, the 431 limit).
        let r = if version == Version::Http2 {
            let mut b = http2::Builder::new(TokioExecutor::new());
            // The same head limit as HTTP/1 (h2 counts the decoded header list).
            b.max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX));
            b.max_concurrent_streams(128);
            let c = b.serve_connection(io, svc);
            tokio::pin!(c);
            tokio::select! {
                r = c.as_mut() => r,
                // Dropping the connection closes it: nothing is owed to a client that
                // is idle or has not finished its head.
                _ = watchdog::expired(&act) => Ok(()),
            }
        } else {
            // Over TLS, one flattened write per response makes one TLS record, where
            // vectored writes would make one per header and body buffer.
            let mut b = http1::Builder::new();
            b.writev(!conn.https);
            // A head over the limit answers 431; the read buffer (which also bounds what a
            // head still arriving may use) stays at hyper's minimum or twice the limit.
            b.max_header_size(max_head);
            b.max_buf_size((2 * max_head).max(64 * 1024));
            let c = b.serve_connection(io, svc).with_upgrades();
            tokio::pin!(c);
            tokio::select! {
                r = c.as_mut() => r,
                _ = watchdog::expired(&act) => Ok(()),
            }
        };
        if let Err(e) = r {
            if !e.is_incomplete_message() {
                eprintln!("gateway: connection from {}: {e}", conn.peer);
            }
        }
    });
}

/// Logs a repeated event at most every few seconds, with how many were not logged: a
/// flood of clients or of accept errors must not flood the journal.
struct Throttled {
    last: Option<std::time::Instant>,
    skipped: u64,
}

impl Throttled {
    const EVERY: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Throttled {
            last: None,
            skipped: 0,
        }
    }

    fn log(&mut self, msg: std::fmt::Arguments) {
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            self.skipped += 1;
            return;
        }
        if self.skipped > 0 {
            eprintln!(
                "gateway: {msg} ({} more since the last such line)",
                self.skipped
            );
        } else {
            eprintln!("gateway: {msg}");
        }
        self.last = Some(std::time::Instant::now());
        self.skipped = 0;
    }
}

/// The pause after a failed accept, doubled while failures go on. Accepting fails mostly
/// when file descriptors run out (EMFILE): the waiting connection stays in the backlog and
/// the listener stays readable, so retrying at once would spin a core and answer no one;
/// pausing lets connections finish and free descriptors.
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Self::MAX);
    }

    fn reset(&mut self) {
        self.0 = Self::FIRST;
    }
}

/// The answer to a plain HTTP client past max-connections, written without reading its
/// request (the connection is closed after it).
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 39\r\nretry-after: 1\r\nconnection: close\r\n\r\nThe gateway is busy: try again shortly.\n";

fn refuse_busy(stream: tokio::net::TcpStream) {
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        // Write, then read what the client sends for a moment before closing: closing
        // with its request unread would send a reset, which can destroy the 503 before
        // the client reads it.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(BUSY).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

/// Runs the gateway on `workers` threads, nginx's model: each thread has its own
/// single-threaded runtime and its own listening sockets (`Listeners`), and a connection,
/// its requests and its upstream connections stay on the thread that accepted it. (On a
/// work-stealing runtime a request and the upstream connection's task woke each other
/// across threads, two hand-offs per request: most of the CPU the gateway spent above
/// nginx's under TLS.) The first thread also runs the signals, reloads, ACME and health
/// checks.
pub fn run(o: Options, workers: usize) -> Result<()> {
    let workers = workers.max(1);
    proxy::set_workers(workers);
    let main = single_threaded().context("starting the runtime")?;
    main.block_on(serve(o, workers))
}

fn single_threaded() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// A worker's listening sockets. Each worker has its own, bound with SO_REUSEPORT, so the
/// kernel spreads new connections across the workers: with one socket shared, the first
/// worker to wake accepted a whole burst of keep-alive clients and served them alone.
/// (A second gateway on the same port would share them too: `bind_group` refuses it.)
struct Listeners {
    http: std::net::TcpListener,
    https: Option<(std::net::TcpListener, TlsAcceptor)>,
}

/// `n` listening sockets on `addr` with SO_REUSEPORT, one per worker (each registers its
/// own with its runtime); the backlog is tokio's `TcpListener::bind`'s. A socket bound
/// first without SO_REUSEPORT, then closed, keeps the safety a plain bind has: a port
/// another program listens on, another gateway of the same user, or `https` set to the
/// `http` address fails the start with "address in use" instead of sharing connections.
fn bind_group(addr: std::net::SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>> {
    let bound = |reuseport: bool| -> std::io::Result<tokio::net::TcpSocket> {
        let s = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        s.set_reuseaddr(true)?;
        s.set_reuseport(reuseport)?;
        s.bind(addr)?;
        Ok(s)
    };
    // Bound, never listening: no client can reach it before it closes.
    drop(bound(false).with_context(|| format!("binding {addr}"))?);
    (0..n)
        .map(|_| {
            bound(true)
                .and_then(|s| s.listen(1024)?.into_std())
                .with_context(|| format!("binding {addr}"))
        })
        .collect()
}

async fn serve(o: Options, workers: usize) -> Result<()> {
    let rt = load(&o).map_err(anyhow::Error::msg)?;
    let addr = rt.cfg.server.http.context("no listener: set server.http")?;
    let https = rt.cfg.server.https;
    let rt_http2 = rt.cfg.server.http2;
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
    crate::access_log::spawn_flusher();
    let shared = Arc::new(Shared {
        current: ArcSwap::new(rt),
        challenges,
        certs: certs.clone(),
    });
    // Before the sockets: a SIGHUP or SIGTERM once the port answers finds its handler.
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let acceptor = https.map(|_| TlsAcceptor::from(crate::tls::server_config(certs, rt_http2)));
    // Every worker's sockets bound here, before the first connection: a port in use fails
    // the start, not a worker later.
    let mut http_group = bind_group(addr, workers)?.into_iter();
    let mut https_group = match https {
        Some(a) => bind_group(a, workers)?,
        None => Vec::new(),
    }
    .into_iter();
    let mut listeners = (0..workers).map(|_| Listeners {
        http: http_group.next().expect("one per worker"),
        https: https_group.next().zip(acceptor.clone()),
    });
    let first = listeners.next().expect("at least one worker");
    eprintln!(
        "gateway: listening on http://{addr}{} ({} routes, {workers} workers)",
        https
            .map(|a| format!(" and https://{a}"))
            .unwrap_or_default(),
        shared.current.load().cfg.routes.len()
    );
    // max-connections counts the whole gateway's, not each worker's.
    let slots = Arc::new(Semaphore::new(
        shared.current.load().cfg.server.max_connections.get(),
    ));
    // Failed handshakes are logged from the connections' tasks, throttled together: a
    // crowd of clients that never finish one must not flood the journal.
    let handshake_failures = Arc::new(std::sync::Mutex::new(Throttled::new()));
    for (w, mine) in (1..).zip(listeners) {
        let (shared, slots, failures) = (shared.clone(), slots.clone(), handshake_failures.clone());
        // Made here, so a runtime that cannot start fails the start.
        let rt = single_threaded().with_context(|| format!("starting worker {w}"))?;
        std::thread::Builder::new()
            .name(format!("gateway-{w}"))
            .spawn(move || {
                proxy::set_worker(w);
                let run = std::panic::AssertUnwindSafe(|| {
                    rt.block_on(accept_loop(shared, mine, slots, failures))
                });
                // The accept loop never ends; if it panics, the gateway would go on with a
                // worker fewer and its share of new connections reset: better to stop whole
                // and be started again (the unit's Restart=).
                let _ = std::panic::catch_unwind(run);
                eprintln!("gateway: error: worker {w} stopped; stopping the gateway");
                crate::access_log::flush();
                std::process::exit(2);
            })
            .context("starting a worker thread")?;
    }
    tokio::spawn(accept_loop(
        shared.clone(),
        first,
        slots,
        handshake_failures,
    ));

    let o = Arc::new(o);
    loop {
        tokio::select! {
            _ = hup.recv() => {
                // Loading hashes a dummy password per login or Basic route (0.5 s and more
                // at bcrypt cost 13): off this thread, which is also worker 0's.
                let loading = o.clone();
                let loaded = tokio::task::spawn_blocking(move || load(&loading))
                    .await
                    .unwrap_or_else(|e| Err(format!("loading the configuration: {e}")));
                match loaded {
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

/// One worker's accepting: connections from both listeners, each served on this thread.
async fn accept_loop(
    shared: Arc<Shared>,
    listeners: Listeners,
    slots: Arc<Semaphore>,
    handshake_failures: Arc<std::sync::Mutex<Throttled>>,
) {
    let register = |l: std::net::TcpListener| {
        TcpListener::from_std(l).expect("a non-blocking listener, in this worker's runtime")
    };
    let listener = register(listeners.http);
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let tls_listener = listeners.https.map(|(l, a)| (register(l), a));
    let accept_tls = async |l: &Option<(TcpListener, TlsAcceptor)>| match l {
        Some((l, _)) => l.accept().await,
        None => std::future::pending().await,
    };
    let mut accept_errors = Throttled::new();
    let mut refusals = Throttled::new();
    let mut backoff = Backoff(Backoff::FIRST);
    loop {
        tokio::select! {
            r = listener.accept() => {
                let (stream, peer) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        accept_errors.log(format_args!("accept on {addr}: {e}; pausing {:?}", backoff.0));
                        backoff.wait().await;
                        continue;
                    }
                };
                backoff.reset();
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    refusals.log(format_args!("max-connections reached: refusing {peer} with 503"));
                    refuse_busy(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                serve_conn(shared.clone(), stream, Conn { peer, https: false }, Version::Http1, permit);
            }
            r = accept_tls(&tls_listener) => {
                let (stream, peer) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        accept_errors.log(format_args!("accept (TLS): {e}; pausing {:?}", backoff.0));
                        backoff.wait().await;
                        continue;
                    }
                };
                backoff.reset();
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    // No HTTP can be spoken before a handshake: the connection is closed.
                    refusals.log(format_args!("max-connections reached: closing TLS connection from {peer}"));
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let acceptor = tls_listener.as_ref().expect("accepted on it").1.clone();
                let shared = shared.clone();
                let failures = handshake_failures.clone();
                let handshake = Duration::from_secs(
                    shared.current.load().cfg.server.tls_handshake_timeout_secs.get(),
                );
                tokio::spawn(async move {
                    // The handshake runs in the connection's task: a slow client holds up no one.
                    match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let version = match tls.get_ref().1.alpn_protocol() {
                                Some(b"h2") => Version::Http2,
                                _ => Version::Http1,
                            };
                            serve_conn(shared, tls, Conn { peer, https: true }, version, permit)
                        }
                        Ok(Err(e)) => failures
                            .lock()
                            .expect("not poisoned")
                            .log(format_args!("TLS handshake with {peer}: {e}")),
                        Err(_) => failures
                            .lock()
                            .expect("not poisoned")
                            .log(format_args!("TLS handshake with {peer}: timed out")),
                    }
                });
            }
        }
    }
}
