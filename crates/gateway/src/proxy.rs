//! One request through the gateway: route, access, auth, then forward to the upstream with
//! its timeouts, rewriting what the client sees; WebSocket upgrades are spliced both ways.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, HOST};
use hyper::http::uri;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::access_log::Escaped;
use crate::basic_auth::Htpasswd;
use crate::config::{Access, Auth, Config, Route};
use crate::failures::{self, Failures, Key};
use crate::login::{self, LoginState};
use crate::pages::{self, Body};
use crate::{rewrite, router};

/// A configuration in force, with what was loaded for it. Replaced whole on reload; requests
/// in flight keep the one they started with.
pub struct Runtime {
    pub cfg: Config,
    /// Certificates read from `[[tls.certs]]` files.
    pub file_certs: Vec<Arc<rustls::sign::CertifiedKey>>,
    htpasswd: Vec<Option<Htpasswd>>,
    /// Failed Basic attempts per address and per user (server.auth-failure-*).
    basic_failures: Failures,
    /// Each worker's upstream clients, one per route (`clients[worker][route]`): a pooled
    /// upstream connection's task runs on the worker that opened it, so a worker uses its
    /// own pools and no request waits on another thread (see `server::run`).
    clients: Vec<Vec<Client<HttpConnector, UpBody>>>,
    /// Each route's upstream authority, parsed once.
    authorities: Vec<uri::Authority>,
    /// With no route at all (no --config), the gateway answers a page naming the node.
    pub node_page: Option<String>,
    login: Option<LoginState>,
    pub health: crate::health::Health,
}

impl Runtime {
    pub fn new(cfg: Config, node_page: Option<String>) -> Result<Runtime, String> {
        // Files the configuration names are read here: their errors name the key too.
        let mut file_certs = Vec::new();
        for (k, c) in cfg.tls.iter().flat_map(|t| &t.certs).enumerate() {
            file_certs
                .push(Arc::new(crate::tls::load_files(&c.cert, &c.key).map_err(
                    |e| format!("{}: {e}", cfg.at(&format!("tls.certs[{k}]"))),
                )?));
        }
        let mut htpasswd = Vec::new();
        let mut clients = vec![Vec::new(); WORKERS.load(Ordering::Relaxed).max(1)];
        let mut authorities = Vec::new();
        for (i, r) in cfg.routes.iter().enumerate() {
            authorities.push(
                r.upstream
                    .authority
                    .parse::<uri::Authority>()
                    .map_err(|e| format!("{}: {e}", cfg.at(&format!("route[{i}].upstream"))))?,
            );
            htpasswd.push(match &r.auth {
                Some(Auth::Basic { htpasswd, .. }) => {
                    Some(Htpasswd::load(htpasswd).map_err(|e| {
                        format!("{}: {e}", cfg.at(&format!("route[{i}].auth.htpasswd")))
                    })?)
                }
                _ => None,
            });
            let mut conn = HttpConnector::new();
            conn.set_connect_timeout(Some(Duration::from_secs(r.connect_timeout_secs)));
            conn.set_nodelay(true);
            for mine in &mut clients {
                mine.push(
                    Client::builder(TokioExecutor::new())
                        .pool_idle_timeout(Duration::from_secs(60))
                        .build(conn.clone()),
                );
            }
        }
        let window = Duration::from_secs(cfg.server.auth_failure_window_secs.get());
        let login = cfg
            .login
            .as_ref()
            .map(|l| LoginState::load(l, window).map_err(|e| format!("{}: {e}", cfg.at("login"))))
            .transpose()?;
        let basic_failures = Failures::new(cfg.server.auth_failure_limit.get(), window);
        let health = crate::health::Health::new(cfg.routes.len());
        Ok(Runtime {
            cfg,
            file_certs,
            htpasswd,
            basic_failures,
            clients,
            authorities,
            node_page,
            login,
            health,
        })
    }
}

impl Runtime {
    /// The calling worker's client for `route`.
    pub fn client(&self, route: usize) -> &Client<HttpConnector, UpBody> {
        let w = WORKER.with(|w| w.get()).min(self.clients.len() - 1);
        &self.clients[w][route]
    }
}

/// How many workers serve (`server::run`): each configuration loaded makes a set of
/// upstream clients for each.
static WORKERS: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// The worker this thread is (0: the first, which also runs signals and health checks).
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

pub fn set_workers(n: usize) {
    WORKERS.store(n, Ordering::Relaxed);
}

pub fn set_worker(w: usize) {
    WORKER.with(|c| c.set(w));
}

/// A request body on its way to an upstream: the client's, cut off with an error past the
/// route's size limit (so the upstream sees an aborted request, never a truncated one).
pub type UpBody = http_body_util::combinators::BoxBody<hyper::body::Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An empty request body for the gateway's own requests (health checks, forward auth).
pub fn no_body() -> UpBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// How the request arrived.
#[derive(Clone, Copy)]
pub struct Conn {
    pub peer: SocketAddr,
    pub https: bool,
}

const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";
/// Answered `ok` to clients on the node itself (the worker's readiness check), whatever the
/// routes: the gateway is up and serving. Other clients reach the routes as usual.
pub const HEALTH_PATH: &str = "/.well-known/imgforge/health";
/// The gateway's counters, to clients on the node itself: `password-checks N` (hashes
/// computed since the start).
pub const COUNTERS_PATH: &str = "/.well-known/imgforge/counters";

pub async fn handle(
    rt: Arc<Runtime>,
    challenges: Arc<crate::acme::Challenges>,
    certs: &crate::tls::CertStore,
    conn: Conn,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let host = router::request_host(&req);
    let raw_host = host.is_err().then(|| {
        req.headers()
            .get_all(HOST)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(",")
    });
    // What the client sent, for the access log; everything after this sees the normalised
    // path (crate::path), which replaces the request's URI.
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let normalised = normalise_uri(&mut req);
    // The host for routing ("" only for an HTTP/1.0 request without one); a refused host
    // is answered 400 below before anything uses it.
    let host_ok = host.as_ref().map(String::as_str).unwrap_or("");
    let client = rewrite::client_ip(
        conn.peer.ip(),
        req.headers(),
        &rt.cfg.server.trusted_proxies,
    );
    let (resp, route) = if let Err(why) = &host {
        (
            pages::html(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                &format!("The request was refused: {why}."),
            ),
            None,
        )
    } else if let Err(why) = normalised {
        (
            pages::html(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                &format!("The request was refused: {why}."),
            ),
            None,
        )
    } else if path.len() > rt.cfg.server.max_uri_bytes.get() {
        (
            pages::html(
                StatusCode::URI_TOO_LONG,
                "URI Too Long",
                &format!(
                    "The request's path and query are over {} bytes.",
                    rt.cfg.server.max_uri_bytes
                ),
            ),
            None,
        )
    } else if req.uri().path() == HEALTH_PATH && conn.peer.ip().is_loopback() {
        (
            Response::builder()
                .header("content-type", "text/plain")
                .body(pages::full("ok\n"))
                .expect("valid"),
            None,
        )
    } else if req.uri().path() == COUNTERS_PATH && conn.peer.ip().is_loopback() {
        let checks = crate::basic_auth::PASSWORD_CHECKS.load(Ordering::Relaxed);
        (
            Response::builder()
                .header("content-type", "text/plain")
                .body(pages::full(format!("password-checks {checks}\n")))
                .expect("valid"),
            None,
        )
    } else if let Some(token) = req.uri().path().strip_prefix(CHALLENGE_PATH) {
        // ACME's HTTP-01 challenge: answered on any listener, never redirected.
        match challenges.answer(token) {
            Some(answer) => (
                Response::builder()
                    .header("content-type", "application/octet-stream")
                    .body(pages::full(answer))
                    .expect("valid"),
                None,
            ),
            None => (pages::not_found(host_ok), None),
        }
    } else if let Some(https) = rt
        .cfg
        .server
        .https
        .filter(|_| !conn.https && certs.covers(host_ok))
    {
        // Only once a certificate for the name is held: before the first ACME order
        // succeeds (or on a LAN with no way to get one), plain HTTP keeps working instead of
        // sending every visitor to a handshake that cannot succeed.
        let port = if https.port() == 443 {
            String::new()
        } else {
            format!(":{}", https.port())
        };
        (
            pages::redirect(
                StatusCode::MOVED_PERMANENTLY,
                &format!(
                    "https://{host_ok}{port}{}",
                    req.uri().path_and_query().map_or("/", |p| p.as_str())
                ),
            ),
            None,
        )
    } else if let (Some(state), true) = (
        &rt.login,
        req.uri().path() == login::LOGIN_PATH || req.uri().path() == login::LOGOUT_PATH,
    ) {
        (login_endpoint(state, conn, client, req).await, None)
    } else {
        route_request(&rt, conn, client, host_ok, req).await
    };
    if rt.cfg.server.access_log {
        let upstream = route
            .map(|i| rt.cfg.routes[i].upstream.authority.as_str())
            .unwrap_or("-");
        // What the client sent is escaped: a Host or path holding `"` or a control
        // character must not forge a field or a line of the log.
        let shown_host = match &host {
            Ok(h) => h.as_str(),
            Err(_) => raw_host.as_deref().unwrap_or_default(),
        };
        crate::access_log::line(format_args!(
            "access {client} \"{method} {}{}\" {} {} upstream={upstream}",
            Escaped(shown_host.as_bytes()),
            Escaped(path.as_bytes()),
            resp.status().as_u16(),
            crate::access_log::Millis(started.elapsed()),
        ));
    }
    resp
}

/// Replaces the request's URI with its normalised origin form (path normalised, query
/// kept): the absolute form's scheme and authority are dropped too, the Host having been
/// read already.
fn normalise_uri(req: &mut Request<Incoming>) -> Result<(), crate::path::Refused> {
    let path = crate::path::normalize(req.uri().path())?;
    // Already normal and in origin form (most requests): nothing to rebuild.
    if path == req.uri().path() && req.uri().scheme().is_none() && req.uri().authority().is_none() {
        return Ok(());
    }
    let pq = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    // Cannot fail: the characters are the client's, which parsed, less decoded escapes.
    *req.uri_mut() = pq.parse().map_err(|_| crate::path::Refused::BadEscape)?;
    Ok(())
}

async fn route_request(
    rt: &Runtime,
    conn: Conn,
    client: std::net::IpAddr,
    host: &str,
    req: Request<Incoming>,
) -> (Response<Body>, Option<usize>) {
    let path = req.uri().path().to_string();
    if rt.cfg.routes.is_empty() {
        if let Some(page) = &rt.node_page {
            return (
                Response::builder()
                    .header("content-type", "text/plain; charset=utf-8")
                    .body(pages::full(page.clone()))
                    .expect("valid"),
                None,
            );
        }
    }
    let i = match router::find(&rt.cfg.routes, host, &path) {
        router::Match::Route(i) => i,
        router::Match::AddSlash(to) => {
            let q = req
                .uri()
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            return (
                pages::redirect(StatusCode::MOVED_PERMANENTLY, &format!("{to}{q}")),
                None,
            );
        }
        router::Match::None => return (pages::not_found(host), None),
    };
    let route = &rt.cfg.routes[i];
    let limit = route.max_body_bytes.unwrap_or(rt.cfg.server.max_body_bytes);
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.get()) {
        // Refused before anything is read or forwarded; a chunked body is cut off at the
        // limit on its way (forward).
        return (
            pages::html(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload Too Large",
                &format!("The request's body is over this application's {limit} bytes."),
            ),
            Some(i),
        );
    }
    if route.access == Access::Lan
        && !rt.cfg.server.lan.iter().any(|n| n.contains(client))
        && !route
            .public_paths
            .iter()
            .any(|p| path.starts_with(p.as_str()))
    {
        return (pages::forbidden(), Some(i));
    }
    if let Some(h) = &rt.htpasswd[i] {
        if let Err(resp) = basic_auth(rt, h, route, client, &req).await {
            return (resp, Some(i));
        }
    }
    if let (Some(Auth::Login), Some(state)) = (&route.auth, &rt.login) {
        let cookie = login::cookie_header(req.headers());
        if login::cookie_value(&cookie, login::COOKIE)
            .and_then(|c| state.verify(c))
            .is_none()
        {
            if req.method() == hyper::Method::GET || req.method() == hyper::Method::HEAD {
                let next: String = form_urlencoded::byte_serialize(
                    req.uri()
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/")
                        .as_bytes(),
                )
                .collect();
                return (
                    pages::redirect(
                        StatusCode::FOUND,
                        &format!("{}?next={next}", login::LOGIN_PATH),
                    ),
                    Some(i),
                );
            }
            return (
                pages::html(StatusCode::UNAUTHORIZED, "Unauthorized", "Sign in first."),
                Some(i),
            );
        }
    }
    if let Some(Auth::Forward { url }) = &route.auth {
        match forward_auth(rt, i, url, &req, conn, client, host).await {
            Ok(()) => {}
            Err(resp) => return (resp, Some(i)),
        }
    }
    (forward(rt, i, route, conn, host, req).await, Some(i))
}

/// HTTP Basic for a route: credentials checked good lately pass; past the failure limits
/// (per address, per user) 429 with Retry-After and no hash computed; else the password is
/// checked off the async threads, an unknown user against a dummy hash.
async fn basic_auth(
    rt: &Runtime,
    h: &Htpasswd,
    route: &Route,
    client: std::net::IpAddr,
    req: &Request<Incoming>,
) -> Result<(), Response<Body>> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let creds = crate::basic_auth::credentials(auth);
    if let Some(c) = &creds {
        if h.remembered(c) {
            return Ok(());
        }
        let keys = [Key::Addr(client), Key::User(c.user.clone())];
        if let Err(wait) = rt.basic_failures.begin(&keys) {
            return Err(too_many(wait));
        }
        if h.verify(c).await {
            rt.basic_failures.forgive(&keys);
            return Ok(());
        }
    }
    let realm = match &route.auth {
        Some(Auth::Basic { realm, .. }) => realm.replace('"', ""),
        _ => String::new(),
    };
    let mut r = pages::html(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "This application needs a user name and password.",
    );
    r.headers_mut().insert(
        "www-authenticate",
        HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")).expect("ascii realm"),
    );
    Err(r)
}

fn too_many(wait: Duration) -> Response<Body> {
    let secs = failures::retry_after_secs(wait);
    let mut r = pages::html(
        StatusCode::TOO_MANY_REQUESTS,
        "Too Many Requests",
        &format!(
            "Too many failed sign-ins from your address or for this user: try again in {secs} s."
        ),
    );
    r.headers_mut()
        .insert("retry-after", HeaderValue::from(secs));
    r
}

/// Asks the auth URL with the request's headers and what was asked, as single
/// X-Forwarded-Method, -Uri (the normalised path and query), -Host, -Proto and -For values;
/// a 2xx lets the request through, anything else is returned to the client. The client's
/// own X-Forwarded-*, Forwarded and X-Real-IP are dropped first: an auth service reading
/// the first X-Forwarded-Uri would otherwise judge the path the client claims, not the one
/// it asked for.
async fn forward_auth(
    rt: &Runtime,
    i: usize,
    url: &crate::config::Upstream,
    req: &Request<Incoming>,
    conn: Conn,
    client: std::net::IpAddr,
    host: &str,
) -> Result<(), Response<Body>> {
    let mut b = Request::builder().method("GET").uri(url.to_string());
    for (k, v) in req.headers() {
        if k != "content-length"
            && k != "transfer-encoding"
            && !rewrite::claims_a_client(k.as_str())
        {
            b = b.header(k, v);
        }
    }
    let sub = b
        .header("x-forwarded-method", req.method().as_str())
        .header("x-forwarded-uri", req.uri().to_string())
        .header("x-forwarded-host", host)
        .header(
            "x-forwarded-proto",
            if conn.https { "https" } else { "http" },
        )
        .header("x-forwarded-for", client.to_string())
        .header("x-real-ip", client.to_string())
        .body(no_body())
        .map_err(|_| pages::bad_gateway(&url.authority))?;
    let timeout = Duration::from_secs(rt.cfg.routes[i].read_timeout_secs);
    match tokio::time::timeout(timeout, rt.client(i).request(sub)).await {
        Ok(Ok(r)) if r.status().is_success() => Ok(()),
        Ok(Ok(r)) => {
            let status = r.status();
            let mut out = Response::builder().status(status);
            for k in ["location", "www-authenticate", "set-cookie", "content-type"] {
                for v in r.headers().get_all(k) {
                    out = out.header(k, v);
                }
            }
            Err(out
                .body(r.into_body().map_err(Into::into).boxed())
                .expect("valid response"))
        }
        Ok(Err(_)) => Err(pages::bad_gateway(&url.authority)),
        Err(_) => Err(pages::gateway_timeout(&url.authority)),
    }
}

/// GET shows the form; POST checks it; logout clears the cookie.
async fn login_endpoint(
    state: &LoginState,
    conn: Conn,
    client: std::net::IpAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let secure = if conn.https { "; Secure" } else { "" };
    let page = |status: StatusCode, next: &str, msg: Option<&str>| {
        Response::builder()
            .status(status)
            .header("content-type", "text/html; charset=utf-8")
            .header("cache-control", "no-store")
            .header("x-frame-options", "DENY")
            .body(pages::full(login::page(next, msg)))
            .expect("valid")
    };
    if req.uri().path() == login::LOGOUT_PATH {
        // The session is signed out for good, not only its cookie cleared: a copy kept
        // (by an attacker, or another tab) is refused from now on.
        let cookie = login::cookie_header(req.headers());
        if let Some(session) =
            login::cookie_value(&cookie, login::COOKIE).and_then(|c| state.verify(c))
        {
            match state.revoke(&session) {
                Ok(()) => {
                    crate::access_log::line(format_args!("logout {client} user={}", session.user))
                }
                Err(e) => {
                    eprintln!("gateway: logout of {}: {e}", session.user);
                    return pages::html(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Internal Server Error",
                        "The sign-out could not be recorded; the session is still open.",
                    );
                }
            }
        }
        let mut r = pages::redirect(StatusCode::SEE_OTHER, login::LOGIN_PATH);
        let clear = format!(
            "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{secure}",
            login::COOKIE
        );
        r.headers_mut()
            .insert("set-cookie", HeaderValue::from_str(&clear).expect("ascii"));
        return r;
    }
    let query_next = req
        .uri()
        .query()
        .and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "next")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_else(|| "/".into());
    if req.method() != hyper::Method::POST {
        return page(StatusCode::OK, login::safe_next(&query_next), None);
    }
    let body = match http_body_util::Limited::new(req.into_body(), 16 * 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return pages::html(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload Too Large",
                "The form is too large.",
            )
        }
    };
    let form: std::collections::HashMap<String, String> =
        form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let next = login::safe_next(get("next")).to_string();
    match state
        .attempt(client, get("user"), get("password"), get("code"))
        .await
    {
        login::Outcome::Ok { cookie } => {
            crate::access_log::line(format_args!("login {client} user={} ok", get("user")));
            let mut r = pages::redirect(StatusCode::SEE_OTHER, &next);
            let c = format!(
                "{}={cookie}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
                login::COOKIE,
                state.session_secs
            );
            r.headers_mut().insert(
                "set-cookie",
                HeaderValue::from_str(&c).expect("base64 and digits"),
            );
            r
        }
        login::Outcome::Refused => {
            crate::access_log::line(format_args!(
                "login {client} user={} refused",
                get("user")
                    .chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(64)
                    .collect::<String>()
            ));
            page(
                StatusCode::UNAUTHORIZED,
                &next,
                Some("Wrong user name, password or code."),
            )
        }
        login::Outcome::TooMany(wait) => {
            let secs = failures::retry_after_secs(wait);
            let mut r = page(
                StatusCode::TOO_MANY_REQUESTS,
                &next,
                Some(&format!(
                    "Too many failed attempts from your address or for this user: wait {secs} s."
                )),
            );
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
            r
        }
    }
}

fn is_websocket(req: &Request<Incoming>) -> Option<HeaderValue> {
    let up = req.headers().get("upgrade")?;
    up.to_str()
        .ok()?
        .eq_ignore_ascii_case("websocket")
        .then(|| up.clone())
}

async fn forward(
    rt: &Runtime,
    i: usize,
    route: &Route,
    conn: Conn,
    host: &str,
    mut req: Request<Incoming>,
) -> Response<Body> {
    if !rt.health.is_up(i) {
        return pages::bad_gateway(&route.upstream.authority);
    }
    let upgrade = is_websocket(&req);
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    // The upstream's URI from parsed parts: the authority parsed once per configuration,
    // the client's path and query reused as they are when the route neither strips a
    // prefix nor adds the upstream's own path (formatting the whole URI and parsing it
    // back cost 2,000 instructions a request).
    let pq = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| uri::PathAndQuery::from_static("/"));
    let pq = if route.strips() || !route.upstream.path.is_empty() {
        match router::upstream_path(route, pq.as_str()).parse() {
            Ok(p) => p,
            Err(_) => {
                return pages::html(
                    StatusCode::BAD_REQUEST,
                    "Bad Request",
                    "The request's path cannot be forwarded.",
                )
            }
        }
    } else {
        pq
    };
    let mut up = uri::Parts::default();
    up.scheme = Some(uri::Scheme::HTTP);
    up.authority = Some(rt.authorities[i].clone());
    up.path_and_query = Some(pq);
    parts.uri = hyper::Uri::from_parts(up).expect("scheme, authority and path are set");
    parts.version = hyper::Version::HTTP_11;
    rewrite::strip_hop_by_hop(&mut parts.headers, upgrade);
    if !route.forward_credentials {
        strip_credentials(&mut parts.headers, route);
    }
    let proto = if conn.https { "https" } else { "http" };
    rewrite::set_forwarded(
        &mut parts.headers,
        conn.peer.ip(),
        &rt.cfg.server.trusted_proxies,
        proto,
        host,
        route,
    );
    let limit = route
        .max_body_bytes
        .unwrap_or(rt.cfg.server.max_body_bytes)
        .get();
    let body_fault = Arc::new(std::sync::atomic::AtomicU8::new(BODY_OK));
    let idle_for = Duration::from_secs(
        route
            .body_idle_timeout_secs
            .unwrap_or(rt.cfg.server.body_idle_timeout_secs)
            .get(),
    );
    let body = ClientBody {
        inner: http_body_util::Limited::new(body, limit.try_into().unwrap_or(usize::MAX)),
        fault: body_fault.clone(),
        idle: IdleTimer::new(idle_for),
    };
    let out = Request::from_parts(parts, body.boxed());

    let timeout = Duration::from_secs(route.read_timeout_secs);
    let mut resp = match tokio::time::timeout(timeout, rt.client(i).request(out)).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) if body_fault.load(Ordering::Acquire) == BODY_MALFORMED => {
            return pages::html(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                "The request's body is malformed (a bad chunk size or framing).",
            );
        }
        Ok(Err(_)) if body_fault.load(Ordering::Acquire) == BODY_IDLE => {
            return pages::html(
                StatusCode::REQUEST_TIMEOUT,
                "Request Timeout",
                &format!(
                    "The request's body stopped arriving for {} s.",
                    idle_for.as_secs()
                ),
            );
        }
        Ok(Err(_)) if body_fault.load(Ordering::Acquire) == BODY_TOO_LARGE => {
            return pages::html(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload Too Large",
                &format!("The request's body is over this application's {limit} bytes."),
            );
        }
        Ok(Err(e)) => {
            // The cause goes to the journal for the operator; the client sees the upstream's address.
            let cause = format!("{e:?}");
            eprintln!(
                "gateway: route {i} upstream {}: {cause}",
                route.upstream.authority
            );
            if cause.contains("ConnectTimeout") || cause.contains("timed out") {
                return pages::gateway_timeout(&route.upstream.authority);
            }
            return pages::bad_gateway(&route.upstream.authority);
        }
        Err(_) => return pages::gateway_timeout(&route.upstream.authority),
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let idle = Duration::from_secs(route.idle_timeout_secs);
            tokio::spawn(async move {
                if let (Ok(c), Ok(u)) = (client_upgrade.await, upstream_upgrade.await) {
                    splice(TokioIo::new(c), TokioIo::new(u), idle).await;
                }
            });
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, pages::full(hyper::body::Bytes::new()));
        }
    }

    let (mut parts, body) = resp.into_parts();
    let idle_for = Duration::from_secs(
        route
            .upstream_body_idle_timeout_secs
            .unwrap_or(rt.cfg.server.upstream_body_idle_timeout_secs)
            .get(),
    );
    let body = UpstreamBody {
        inner: body,
        idle: IdleTimer::new(idle_for),
        route: i,
        upstream: route.upstream.authority.clone(),
    };
    rewrite::strip_hop_by_hop(&mut parts.headers, None);
    if let Some(loc) = parts.headers.get("location").and_then(|v| v.to_str().ok()) {
        let new = rewrite::location(loc, route, host);
        if let Ok(v) = HeaderValue::from_str(&new) {
            parts.headers.insert("location", v);
        }
    }
    let cookies: Vec<String> = parts
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|c| rewrite::set_cookie(c, route))
        .collect();
    if !cookies.is_empty() {
        parts.headers.remove("set-cookie");
        for c in cookies {
            if let Ok(v) = HeaderValue::from_str(&c) {
                parts.headers.append("set-cookie", v);
            }
        }
    }
    Response::from_parts(parts, body.boxed())
}

/// Removes the gateway's own credentials from a request to an upstream: its session cookie
/// (any route: the browser sends it to every path of the host) and, on a Basic route, the
/// Authorization it checked. A route with `forward-credentials = true` keeps them.
fn strip_credentials(h: &mut hyper::HeaderMap, route: &Route) {
    let cookie = login::cookie_header(h);
    if login::cookie_value(&cookie, login::COOKIE).is_some() {
        let rest = login::without_session(&cookie);
        h.remove(hyper::header::COOKIE);
        if let Ok(v) = HeaderValue::from_str(&rest) {
            if !rest.is_empty() {
                h.insert(hyper::header::COOKIE, v);
            }
        }
    }
    if matches!(route.auth, Some(Auth::Basic { .. })) {
        h.remove(hyper::header::AUTHORIZATION);
    }
}

/// An upstream's response body on its way to the client, failing when nothing arrives for
/// the idle time (`idle.every`): an upstream that sends half a body and stalls would otherwise hold the
/// client (and a connection slot) for ever. Failing the body makes hyper cut the client's
/// connection, the only honest end for a response whose head is already sent.
struct UpstreamBody {
    inner: Incoming,
    idle: IdleTimer,
    route: usize,
    upstream: String,
}

impl hyper::body::Body for UpstreamBody {
    type Data = hyper::body::Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => {
                if self.idle.expired(cx) {
                    eprintln!(
                        "gateway: route {} upstream {}: the response body stopped for {} s; \
                         the client's connection is closed",
                        self.route,
                        self.upstream,
                        self.idle.every.as_secs()
                    );
                    return Poll::Ready(Some(Err("the upstream's body stopped".into())));
                }
                Poll::Pending
            }
            Poll::Ready(Some(Ok(f))) => {
                self.idle.moved();
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
        }
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A body's idle clock, started the first time the body has nothing to give: a body that
/// is never waited for (a short one, there with its head) costs no timer at all. Made and
/// dropped with every request, the timers were 3% of the instructions of one.
struct IdleTimer {
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    every: Duration,
}

impl IdleTimer {
    fn new(every: Duration) -> Self {
        IdleTimer { sleep: None, every }
    }

    /// The body is pending: whether it has been idle for `every` (since data last came,
    /// or since it was first waited for).
    fn expired(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        let every = self.every;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
        std::future::Future::poll(sleep.as_mut(), cx).is_ready()
    }

    /// Data came: the clock starts again.
    fn moved(&mut self) {
        if let Some(sleep) = &mut self.sleep {
            sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + self.every);
        }
    }
}

const BODY_OK: u8 = 0;
const BODY_MALFORMED: u8 = 1;
const BODY_TOO_LARGE: u8 = 2;
const BODY_IDLE: u8 = 3;

/// The client's request body on its way upstream, noting why it failed if it does: a
/// failed upstream request is then the client's fault (400 or 413), not the upstream's
/// (502).
/// It also fails when nothing arrives for the idle time (`idle.every`): a client trickling a body would
/// otherwise hold its connection and the upstream's for as long as it likes.
struct ClientBody {
    inner: http_body_util::Limited<Incoming>,
    fault: Arc<std::sync::atomic::AtomicU8>,
    idle: IdleTimer,
}

impl hyper::body::Body for ClientBody {
    type Data = hyper::body::Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            std::task::Poll::Pending if self.idle.expired(cx) => {
                self.fault.store(BODY_IDLE, Ordering::Release);
                return std::task::Poll::Ready(Some(Err("the request body stopped".into())));
            }
            std::task::Poll::Ready(Some(Ok(_))) => self.idle.moved(),
            _ => {}
        }
        if let std::task::Poll::Ready(Some(Err(e))) = &r {
            let fault = if e.is::<http_body_util::LengthLimitError>() {
                BODY_TOO_LARGE
            } else {
                BODY_MALFORMED
            };
            self.fault.store(fault, Ordering::Release);
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Copies `from` to `to` until either ends, noting the time of each chunk in `last`.
async fn pump<R, W>(mut from: R, mut to: W, last: &std::sync::Mutex<Instant>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                *last.lock().expect("not poisoned") = Instant::now();
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// Copies both ways until either side closes or nothing moves for `idle`.
async fn splice<A, B>(a: A, b: B, idle: Duration)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let last = std::sync::Mutex::new(Instant::now());
    let up = pump(ar, bw, &last);
    let down = pump(br, aw, &last);
    let watchdog = async {
        loop {
            tokio::time::sleep(idle.min(Duration::from_secs(5))).await;
            if last.lock().expect("not poisoned").elapsed() >= idle {
                break;
            }
        }
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = watchdog => {}
    }
}
