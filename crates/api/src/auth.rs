//! Who may ask: a request must name this server as its `Host` (so a page on another
//! site that resolves its own name to 127.0.0.1 gets nothing: DNS rebinding), and
//! carry the API key as `Authorization: Bearer KEY` or `X-API-Key: KEY`, or the
//! page's session cookie, with its CSRF token on every request that changes
//! something. Only `/v1/health`, the login link and the page's own files need
//! neither. No CORS header is ever sent, so no other origin reads an answer. The
//! server speaks HTTP/1.1 only (no `:authority` to weigh against `Host`).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::error::ApiError;
use crate::session;

/// The names a request may give as its `Host` for a server at `addr`.
pub(crate) fn hosts(addr: std::net::SocketAddr) -> Vec<String> {
    let port = addr.port();
    let mut out = vec![
        addr.to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ];
    out.dedup();
    out
}

/// Lets a request through, or answers it with why not.
pub(crate) async fn guard(State(app): State<App>, request: Request, next: Next) -> Response {
    if let Err(e) = check(&app, request.method(), request.uri(), request.headers()) {
        let mut response = e.into_response();
        if response.status() == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("a header value"),
            );
        }
        return response;
    }
    next.run(request).await
}

/// What needs no key: health, and the page before it has a session.
const OPEN: [&str; 6] = [
    "/v1/health",
    "/",
    "/app.js",
    "/style.css",
    "/favicon.ico",
    "/login",
];

/// The host a request is addressed to: its `Host`, which must be given once, and
/// the authority of a request line in absolute form (`GET http://HOST/…`), which
/// must agree with it; `None` when there is no `Host`, more than one, or they
/// disagree.
fn addressed_to<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    let mut given = headers.get_all(header::HOST).iter();
    let (Some(host), None) = (given.next(), given.next()) else {
        return None;
    };
    let host = host.to_str().ok()?;
    match uri.authority() {
        Some(a) if !a.as_str().eq_ignore_ascii_case(host) => None,
        _ => Some(host),
    }
}

fn check(app: &App, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), ApiError> {
    let path = uri.path();
    let Some(host) = addressed_to(uri, headers) else {
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "bad_host",
            "the request must name its host once, in one Host header (and the same in its URL, if that is absolute)",
        ));
    };
    if !app.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "bad_host",
            format!(
                "this API answers requests to {} only, not to {host:?}",
                app.hosts.join(" or ")
            ),
        ));
    }
    if OPEN.contains(&path) {
        return Ok(());
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key);
    let given = bearer.or_else(|| headers.get("x-api-key").and_then(|h| h.to_str().ok()));
    match given {
        Some(k) if app.key.admits(k.trim()) => return Ok(()),
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the API key is not this daemon's: `shoal api-key DB` prints the current one (a rotated key lets no one in again)",
            ));
        }
        None => {}
    }
    let csrf = session::cookie(headers).and_then(|id| app.logins.csrf(&id));
    let Some(csrf) = csrf.filter(|_| path != "/v1/login-links") else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this request carries no API key: send it as `Authorization: Bearer KEY` or `X-API-Key: KEY` (`shoal api-key DB` prints it); for the page, open the link `shoal up` printed, or run `shoal open DB`",
        ));
    };
    let safe = *method == Method::GET || *method == Method::HEAD;
    let sent = headers.get("x-csrf-token").and_then(|h| h.to_str().ok());
    if !safe && sent.is_none_or(|t| blake3::hash(t.as_bytes()) != blake3::hash(csrf.as_bytes())) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "a change asked for by the page must carry its X-CSRF-Token (GET /v1/session gives it)",
        ));
    }
    Ok(())
}
