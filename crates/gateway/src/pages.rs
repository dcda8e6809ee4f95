//! The pages the gateway writes itself. An error page names what failed in words a person
//! can pass on (the route and its upstream's address), never an internal error text.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Response, StatusCode};

/// Boxed errors: a proxied body fails with hyper's error or with the gateway's own (an
/// upstream that stalls, `proxy::UpstreamBody`).
pub type Body = http_body_util::combinators::BoxBody<Bytes, crate::proxy::BoxError>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// Text made safe inside HTML content and double-quoted attributes.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn html(status: StatusCode, title: &str, message: &str) -> Response<Body> {
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{code} {title}</title></head>\n<body><h1>{code} {title}</h1>\n<p>{msg}</p></body></html>\n",
        code = status.as_u16(),
        title = escape(title),
        msg = escape(message),
    );
    Response::builder()
        .status(status)
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .body(full(body))
        .expect("valid response")
}

pub fn bad_gateway(upstream: &str) -> Response<Body> {
    html(
        StatusCode::BAD_GATEWAY,
        "Bad Gateway",
        &format!("The application at {upstream} is not answering."),
    )
}

pub fn gateway_timeout(upstream: &str) -> Response<Body> {
    html(
        StatusCode::GATEWAY_TIMEOUT,
        "Gateway Timeout",
        &format!("The application at {upstream} did not answer in time."),
    )
}

pub fn not_found(host: &str) -> Response<Body> {
    html(
        StatusCode::NOT_FOUND,
        "Not Found",
        &format!("No application is published at {host} under this path."),
    )
}

pub fn forbidden() -> Response<Body> {
    html(
        StatusCode::FORBIDDEN,
        "Forbidden",
        "This address is reachable from the local network only.",
    )
}

/// A redirect to `to`; a target that cannot be a header value (CR, LF, other control
/// characters: never one the gateway builds from its own checks) goes to `/` instead of
/// failing the request.
pub fn redirect(status: StatusCode, to: &str) -> Response<Body> {
    let to = hyper::header::HeaderValue::from_str(to)
        .unwrap_or_else(|_| hyper::header::HeaderValue::from_static("/"));
    Response::builder()
        .status(status)
        .header("location", to)
        .body(full(Bytes::new()))
        .expect("valid redirect")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_pages_escape_what_they_name() {
        let r = bad_gateway("<b>10.0.0.2:5000</b>");
        assert_eq!(r.status(), 502);
        let body = futures_body(r);
        assert!(
            body.contains("&lt;b&gt;10.0.0.2:5000") && !body.contains("<b>"),
            "{body}"
        );
    }

    fn futures_body(r: Response<Body>) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let b = rt.block_on(r.into_body().collect()).unwrap().to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }
}
