//! The page, served at `/` from files compiled into the binary (no build step, no
//! network), and the way it logs in.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::App;
use crate::error::{ApiError, ErrorBody};
use crate::routes::Params;
use crate::session::{self, COOKIE, LINK_VALID};

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/style.css");

/// What the page may load and talk to: itself, and nothing else.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn file(body: &'static str, kind: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

pub(crate) async fn index() -> Response {
    file(INDEX, "text/html; charset=utf-8")
}

pub(crate) async fn script() -> Response {
    file(SCRIPT, "text/javascript; charset=utf-8")
}

pub(crate) async fn style() -> Response {
    file(STYLE, "text/css; charset=utf-8")
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    token: String,
}

/// `GET /login?token=…`: spends the link, sets the session cookie, and goes to the
/// page.
pub(crate) async fn login(
    State(app): State<App>,
    Params(q): Params<LoginQuery>,
) -> Result<Response, ApiError> {
    let Some(id) = app.logins.redeem(&q.token) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this login link was used already, or is older than ten minutes: run `shoal open DB` for a new one",
        ));
    };
    let cookie = format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/");
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    let h = r.headers_mut();
    h.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::bad_request(e.to_string()))?,
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(r)
}

/// The page's session.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// The token every change asked for with the session cookie carries as
    /// `X-CSRF-Token`; absent for a caller with the key.
    pub csrf: Option<String>,
    /// This device's id.
    pub device: String,
}

/// The caller's session, and the CSRF token its changes carry.
#[utoipa::path(get, path = "/v1/session", tag = "page",
    responses((status = 200, body = SessionView), (status = 401, body = ErrorBody)))]
pub(crate) async fn session(State(app): State<App>, headers: HeaderMap) -> Json<SessionView> {
    Json(SessionView {
        csrf: session::cookie(&headers).and_then(|id| app.logins.csrf(&id)),
        device: app.daemon.device().to_string(),
    })
}

/// A one-time login link for the page.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LoginLink {
    /// The path to open, once, within `valid_s` seconds: `/login?token=…`.
    pub path: String,
    /// How long it may wait to be followed.
    pub valid_s: u64,
}

/// A new one-time login link for the page (with the key only).
#[utoipa::path(post, path = "/v1/login-links", tag = "page",
    responses((status = 201, body = LoginLink), (status = 401, body = ErrorBody)))]
pub(crate) async fn login_link(State(app): State<App>) -> (StatusCode, Json<LoginLink>) {
    (
        StatusCode::CREATED,
        Json(LoginLink {
            path: format!("/login?token={}", app.logins.link()),
            valid_s: LINK_VALID.as_secs(),
        }),
    )
}
