//! Shoal's local HTTP API, served by `shoal up` on 127.0.0.1: a running daemon's
//! status, members, log and conflict inbox, and its events as they happen, for people
//! (the page) and for apps in any language. Version 1 is under `/v1`, JSON, and
//! described by the OpenAPI document at `/v1/openapi.json`, generated from the
//! handlers below.
//!
//! It asks only the daemon's [`Handle`]: no database and no network of its own.

mod app;
mod auth;
mod error;
mod events;
mod key;
mod listen;
mod page;
mod routes;
mod session;
pub mod views;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use shoal_daemon::Handle;
use utoipa::OpenApi;

use crate::app::App;

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use key::{ApiKey, KeyError};
pub use listen::Limits;
pub use page::{LoginLink, SessionView};
pub use session::{LINK_VALID, Logins};

/// The largest request body taken, in bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Shoal", description = "A running Shoal daemon: its device, members, log, conflicts and events."),
    paths(
        routes::health, routes::status, routes::peers, routes::groups, routes::members,
        routes::revoke, routes::sync, routes::auto, routes::set_auto, routes::log, routes::conflicts, routes::conflict,
        routes::resolve, routes::invite, events::events, page::session, page::login_link,
    ),
    modifiers(&Security),
    security(("key" = []), ("api_key" = [])),
)]
pub struct Doc;

/// The key as a security scheme, and the refusals every operation may answer with:
/// a wrong `Host` (421) and, but for what is open, no key (401) or no CSRF token
/// (403); for those with parameters, one that does not parse (400); and for those
/// that take a body, one that is not JSON (400, 415), too large (413) or not of the
/// right shape (422).
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "key",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "api_key",
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
            );
        let refusal = |why: &str| {
            ResponseBuilder::new()
                .description(why)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let open = path == "/v1/health";
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let r = &mut op.responses.responses;
                let mut add = |code: &str, why: &str| {
                    r.entry(code.to_owned())
                        .or_insert_with(|| refusal(why).into());
                };
                add(
                    "421",
                    "The request names another host than this server (DNS rebinding)",
                );
                if !open {
                    add("401", "No API key, or not this daemon's");
                    add(
                        "403",
                        "A change asked with the page's session, without its CSRF token",
                    );
                }
                if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                    add(
                        "400",
                        "A parameter in the path or the query string does not parse",
                    );
                }
                if op.request_body.is_some() {
                    add("400", "The body is not JSON");
                    add("413", "The body is larger than 64 KiB");
                    add("415", "The body is not marked application/json");
                    add("422", "The body is JSON of another shape");
                }
            }
        }
    }
}

/// The API and the page for `daemon`, answering requests addressed to `addr` that
/// carry `key` or a session one of `logins`' links opened.
pub fn router(daemon: Handle, key: ApiKey, logins: Logins, addr: SocketAddr) -> Router {
    let app = App {
        daemon,
        key,
        hosts: auth::hosts(addr),
        logins,
        streams: std::sync::Arc::new(tokio::sync::Semaphore::new(app::STREAMS)),
    };
    Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/style.css", get(page::style))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/login", get(page::login))
        .route("/v1/session", get(page::session))
        .route("/v1/login-links", post(page::login_link))
        .route("/v1/health", get(routes::health))
        .route("/v1/status", get(routes::status))
        .route("/v1/peers", get(routes::peers))
        .route("/v1/groups", get(routes::groups))
        .route("/v1/groups/{group}/members", get(routes::members))
        .route(
            "/v1/groups/{group}/members/{device}",
            delete(routes::revoke),
        )
        .route("/v1/sync", post(routes::sync))
        .route("/v1/sync/auto", get(routes::auto).put(routes::set_auto))
        .route("/v1/log", get(routes::log))
        .route("/v1/conflicts", get(routes::conflicts))
        .route("/v1/conflicts/{id}", get(routes::conflict))
        .route("/v1/conflicts/{id}/resolve", post(routes::resolve))
        .route("/v1/invites", post(routes::invite))
        .route("/v1/events", get(events::events))
        .route("/v1/openapi.json", get(openapi))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint: see /v1/openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "bad_request",
                "this endpoint does not take that method: see /v1/openapi.json",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::guard,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

async fn openapi() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(Doc::openapi())
}

/// Serves the API and the page on `listener`, within `limits`, until `stop`
/// resolves.
pub async fn serve(
    daemon: Handle,
    key: ApiKey,
    logins: Logins,
    listener: tokio::net::TcpListener,
    limits: Limits,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    listen::serve(listener, router(daemon, key, logins, addr), limits, stop).await
}
