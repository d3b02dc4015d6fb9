//! The handlers of `/v1`: each asks the daemon's handle and answers with a view.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shoal_core::{DeviceId, Role};
use shoal_store::{ConflictStatus, InboxFilter, InboxQuery, Resolution, Side};
use utoipa::{IntoParams, ToSchema};

use crate::app::App;
use crate::error::{ApiError, ErrorBody};
use crate::views::{
    CommitView, ConflictPage, ConflictView, GroupView, Health, Keep, MemberView, PeerView,
    ResolveRequest, StatusView, value_of,
};

/// A JSON body, refused with the API's error shape when it is not one.
pub(crate) struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(rejected(e)),
        }
    }
}

/// A query string, refused with the API's error shape when it does not parse.
pub(crate) struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Params(v)),
            Err(e) => Err(ApiError::bad_request(format!(
                "the query string is refused: {}",
                e.body_text()
            ))),
        }
    }
}

/// A path's parameters, refused with the API's error shape when they do not parse.
pub(crate) struct Segments<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Segments<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Segments(v)),
            Err(e) => Err(ApiError::bad_request(format!(
                "the path is refused: {}",
                e.body_text()
            ))),
        }
    }
}

fn rejected(e: JsonRejection) -> ApiError {
    let code = match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "bad_request",
        _ => "bad_request",
    };
    ApiError::new(
        e.status(),
        code,
        format!("the request's body is refused: {}", e.body_text()),
    )
}

/// Whether the daemon answers; needs no key.
#[utoipa::path(get, path = "/v1/health", tag = "status", security(()),
    responses((status = 200, body = Health)))]
pub(crate) async fn health() -> Json<Health> {
    Json(Health {
        ok: true,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

/// This device, its groups, and where sync stands.
#[utoipa::path(get, path = "/v1/status", tag = "status",
    responses((status = 200, body = StatusView), (status = 401, body = ErrorBody)))]
pub(crate) async fn status(State(app): State<App>) -> Result<Json<StatusView>, ApiError> {
    let status = app.daemon.status().await?;
    let tables = app.daemon.tables().await?;
    Ok(Json(StatusView::of(
        status,
        tables,
        app.daemon.latest_event(),
    )))
}

/// Every member, connected or not.
#[utoipa::path(get, path = "/v1/peers", tag = "status",
    responses((status = 200, body = Vec<PeerView>), (status = 401, body = ErrorBody)))]
pub(crate) async fn peers(State(app): State<App>) -> Result<Json<Vec<PeerView>>, ApiError> {
    let status = app.daemon.status().await?;
    Ok(Json(status.peers.into_iter().map(PeerView::of).collect()))
}

/// The groups this device is in.
#[utoipa::path(get, path = "/v1/groups", tag = "groups",
    responses((status = 200, body = Vec<GroupView>), (status = 401, body = ErrorBody)))]
pub(crate) async fn groups(State(app): State<App>) -> Result<Json<Vec<GroupView>>, ApiError> {
    let status = app.daemon.status().await?;
    Ok(Json(status.groups.into_iter().map(GroupView::of).collect()))
}

/// The group named `which`, or whose id `which` is a unique prefix of (at least
/// four hex digits).
async fn group(app: &App, which: &str) -> Result<GroupView, ApiError> {
    let status = app.daemon.status().await?;
    let mut groups: Vec<GroupView> = status.groups.into_iter().map(GroupView::of).collect();
    if let Some(i) = groups.iter().position(|g| g.name == which) {
        return Ok(groups.swap_remove(i));
    }
    let prefix = which.to_ascii_lowercase();
    let hex = prefix.len() >= 4 && prefix.bytes().all(|b| b.is_ascii_hexdigit());
    groups.retain(|g| hex && g.id.starts_with(&prefix));
    match groups.len() {
        1 => Ok(groups.remove(0)),
        0 => Err(ApiError::not_found(format!(
            "this device is in no group {which:?}"
        ))),
        n => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_request",
            format!("{n} groups' ids start with {which:?}: give more of the id, or the name"),
        )),
    }
}

/// One group's members.
#[utoipa::path(get, path = "/v1/groups/{group}/members", tag = "groups",
    params(("group" = String, Path, description = "The group's name or id")),
    responses((status = 200, body = Vec<MemberView>), (status = 404, body = ErrorBody)))]
pub(crate) async fn members(
    State(app): State<App>,
    Segments(which): Segments<String>,
) -> Result<Json<Vec<MemberView>>, ApiError> {
    Ok(Json(group(&app, &which).await?.members))
}

/// Revokes a device from a group: its later commits are refused by every member.
#[utoipa::path(delete, path = "/v1/groups/{group}/members/{device}", tag = "groups",
    params(("group" = String, Path, description = "The group's name or id"),
           ("device" = String, Path, description = "The device's id")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn revoke(
    State(app): State<App>,
    Segments((which, device)): Segments<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let g = group(&app, &which).await?;
    let device: DeviceId = device
        .parse()
        .map_err(|e: shoal_core::BadId| ApiError::bad_request(e.to_string()))?;
    let id =
        g.id.parse()
            .map_err(|e: shoal_core::BadId| ApiError::bad_request(e.to_string()))?;
    app.daemon.revoke(id, device).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/sync`.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct SyncRequest {
    /// A group's name or id; every group when absent.
    group: Option<String>,
    /// One member's device id; every member this device can reach when absent.
    peer: Option<String>,
}

/// What a round of sync with one member did.
#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct SyncResult {
    /// The member's device id.
    peer: String,
    /// Commits sent.
    pushed: u64,
    /// Commits received.
    pulled: u64,
    /// Bytes both ways.
    bytes: u64,
    /// Why the round failed, if it did.
    error: Option<String>,
}

/// A round of sync now with every member this device can reach.
#[utoipa::path(post, path = "/v1/sync", tag = "sync", request_body = SyncRequest,
    responses((status = 200, body = Vec<SyncResult>), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub(crate) async fn sync(
    State(app): State<App>,
    Body(req): Body<SyncRequest>,
) -> Result<Json<Vec<SyncResult>>, ApiError> {
    let group = match req.group {
        Some(g) => Some(
            group(&app, &g)
                .await?
                .id
                .parse()
                .map_err(|e: shoal_core::BadId| ApiError::bad_request(e.to_string()))?,
        ),
        None => None,
    };
    let results = match req.peer {
        Some(p) => {
            let device: DeviceId = p
                .parse()
                .map_err(|e: shoal_core::BadId| ApiError::bad_request(e.to_string()))?;
            app.daemon.sync_with(group, device).await?
        }
        None => app.daemon.sync_now(group, &[]).await?,
    };
    Ok(Json(
        results
            .into_iter()
            .map(|r| SyncResult {
                peer: r.peer.to_string(),
                pushed: r.groups.iter().map(|g| g.pushed).sum(),
                pulled: r.groups.iter().map(|g| g.pulled).sum(),
                bytes: r.groups.iter().map(|g| g.bytes_in + g.bytes_out).sum(),
                error: r.error,
            })
            .collect(),
    ))
}

/// Whether the daemon syncs by itself (`GET`/`PUT /v1/sync/auto`).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AutoView {
    /// Rounds run by themselves. Off, this device dials no one and starts no round;
    /// members may still sync with it, and `POST /v1/sync` still runs one.
    on: bool,
    /// How often, in seconds, it syncs with each member when nothing changed (at
    /// least 1; a change asked for, at most 7 days). Kept as it is when absent.
    #[schema(minimum = 1)]
    interval_s: Option<u64>,
}

/// Whether the daemon syncs by itself, and how often.
#[utoipa::path(get, path = "/v1/sync/auto", tag = "sync",
    responses((status = 200, body = AutoView), (status = 401, body = ErrorBody)))]
pub(crate) async fn auto(State(app): State<App>) -> Json<AutoView> {
    let a = app.daemon.auto_sync();
    Json(AutoView {
        on: a.on,
        interval_s: Some(a.interval.as_secs()),
    })
}

/// Turns automatic sync on or off, or changes its interval; the setting outlasts a
/// restart of the daemon.
#[utoipa::path(put, path = "/v1/sync/auto", tag = "sync", request_body = AutoView,
    responses((status = 200, body = AutoView), (status = 400, body = ErrorBody)))]
pub(crate) async fn set_auto(
    State(app): State<App>,
    Body(req): Body<AutoView>,
) -> Result<Json<AutoView>, ApiError> {
    let interval = match req.interval_s {
        Some(s) => Duration::from_secs(within("interval_s", s, 1, 7 * 86_400)?),
        None => app.daemon.auto_sync().interval,
    };
    let a = app.daemon.set_auto_sync(shoal_daemon::AutoSync {
        on: req.on,
        interval,
    })?;
    Ok(Json(AutoView {
        on: a.on,
        interval_s: Some(a.interval.as_secs()),
    }))
}

/// `GET /v1/log`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogQuery {
    /// Skip this many of the newest (for the next page).
    #[param(maximum = 4_611_686_018_427_387_903_u64)]
    offset: Option<u64>,
    /// At most this many (at most 1000; 100 when absent).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// A page of the commits this device holds, newest first.
#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct CommitPage {
    /// The commits on this page.
    items: Vec<CommitView>,
    /// Where the next page starts (`?offset=`), if there may be one.
    next_offset: Option<u64>,
}

/// The commits this device holds, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/log", tag = "sync", params(LogQuery),
    responses((status = 200, body = CommitPage)))]
pub(crate) async fn log(
    State(app): State<App>,
    Params(q): Params<LogQuery>,
) -> Result<Json<CommitPage>, ApiError> {
    let limit = within("limit", q.limit.unwrap_or(100), 1, 1000)?;
    let offset = within("offset", q.offset.unwrap_or(0), 0, i64::MAX as u64 / 2)?;
    let log = app.daemon.log(offset as usize, limit as usize).await?;
    let next_offset = (log.len() as u64 == limit).then(|| offset + limit);
    Ok(Json(CommitPage {
        items: log.into_iter().map(CommitView::of).collect(),
        next_offset,
    }))
}

/// `GET /v1/conflicts`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ConflictQuery {
    /// Only this table's.
    table: Option<String>,
    /// `open` (the default: pending or auto), `all`, or one status: `pending`,
    /// `auto`, `resolved`, `closed`.
    status: Option<String>,
    /// Skip this many (for the next page).
    offset: Option<u64>,
    /// At most this many (at most 500; 100 when absent).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u64>,
}

/// The conflict inbox, newest first.
#[utoipa::path(get, path = "/v1/conflicts", tag = "conflicts", params(ConflictQuery),
    responses((status = 200, body = ConflictPage), (status = 400, body = ErrorBody)))]
pub(crate) async fn conflicts(
    State(app): State<App>,
    Params(q): Params<ConflictQuery>,
) -> Result<Json<ConflictPage>, ApiError> {
    let filter = match q.status.as_deref().unwrap_or("open") {
        "open" => InboxFilter::Open,
        "all" => InboxFilter::All,
        "pending" => InboxFilter::Only(ConflictStatus::Pending),
        "auto" => InboxFilter::Only(ConflictStatus::Auto),
        "resolved" => InboxFilter::Only(ConflictStatus::Resolved),
        "closed" => InboxFilter::Only(ConflictStatus::Closed),
        other => {
            return Err(ApiError::bad_request(format!(
                "status {other:?} is none of open, all, pending, auto, resolved, closed"
            )));
        }
    };
    let offset = q.offset.unwrap_or(0);
    let limit = within("limit", q.limit.unwrap_or(100), 1, 500)?;
    let page = app
        .daemon
        .inbox(InboxQuery {
            table: q.table,
            filter,
            offset,
            limit,
        })
        .await?;
    let items: Vec<ConflictView> = page.items.into_iter().map(ConflictView::of).collect();
    let next = offset.saturating_add(items.len() as u64);
    Ok(Json(ConflictPage {
        items,
        total: page.total,
        by_table: page.open_by_table.into_iter().collect(),
        next_offset: (next < page.total).then_some(next),
    }))
}

/// `value`, if it is from `least` to `most`; a clear refusal naming `what` if not.
fn within(what: &str, value: u64, least: u64, most: u64) -> Result<u64, ApiError> {
    if (least..=most).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::bad_request(format!(
            "{what} must be from {least} to {most}, not {value}"
        )))
    }
}

/// One conflict: both versions, both clocks, both devices, the columns that differ.
#[utoipa::path(get, path = "/v1/conflicts/{id}", tag = "conflicts",
    params(("id" = String, Path, description = "The conflict's id, or a unique prefix")),
    responses((status = 200, body = ConflictView), (status = 404, body = ErrorBody)))]
pub(crate) async fn conflict(
    State(app): State<App>,
    Segments(id): Segments<String>,
) -> Result<Json<ConflictView>, ApiError> {
    Ok(Json(ConflictView::of(app.daemon.conflict(&id).await?)))
}

/// Resolves a conflict: keep one side, or write values. The resolution is a write
/// that syncs, and closes the conflict on every device.
#[utoipa::path(post, path = "/v1/conflicts/{id}/resolve", tag = "conflicts",
    params(("id" = String, Path, description = "The conflict's id, or a unique prefix")),
    request_body = ResolveRequest,
    responses((status = 200, body = ConflictView), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn resolve(
    State(app): State<App>,
    Segments(id): Segments<String>,
    Body(req): Body<ResolveRequest>,
) -> Result<Json<ConflictView>, ApiError> {
    let resolution = match req {
        ResolveRequest::Keep { keep: Keep::Local } => Resolution::Keep(Side::Local),
        ResolveRequest::Keep { keep: Keep::Remote } => Resolution::Keep(Side::Remote),
        ResolveRequest::Set { set } if !set.is_empty() => Resolution::Set(
            set.iter()
                .map(|(col, v)| {
                    value_of(v).map(|v| (col.clone(), v)).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "{col}: {v} is no value a column holds (a number, text, null, or {{\"blob\": HEX}})"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        ResolveRequest::Set { .. } => {
            return Err(ApiError::bad_request(
                "say which values to write: {\"set\": {\"column\": value}}",
            ));
        }
    };
    Ok(Json(ConflictView::of(
        app.daemon.resolve(&id, resolution).await?,
    )))
}

/// `POST /v1/invites`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InviteRequest {
    /// The group's name or id.
    group: String,
    /// `reader`, `member` (the default) or `admin`.
    role: Option<String>,
    /// How long it may be used, in seconds (a day when absent; at most 30 days).
    #[schema(minimum = 1, maximum = 2_592_000)]
    valid_s: Option<u64>,
    /// How many devices may join with it (1 when absent; at most 100).
    #[schema(minimum = 1, maximum = 100)]
    uses: Option<u32>,
}

/// An invite, as a ticket and its QR code.
#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct InviteView {
    /// The ticket: `shoal join DB TICKET` on the new device.
    ticket: String,
    /// The ticket as a QR code, an SVG image.
    qr_svg: String,
    /// The group's id.
    group: String,
    /// The group's name.
    name: String,
    /// The role it gives.
    role: String,
    /// When it expires (ms since the epoch).
    expires_ms: u64,
    /// How many devices may join with it.
    uses: u32,
}

/// Makes an invite to a group; this daemon lets the new device in.
#[utoipa::path(post, path = "/v1/invites", tag = "groups", request_body = InviteRequest,
    responses((status = 201, body = InviteView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub(crate) async fn invite(
    State(app): State<App>,
    Body(req): Body<InviteRequest>,
) -> Result<(StatusCode, Json<InviteView>), ApiError> {
    let role = match req.role.as_deref().unwrap_or("member") {
        "reader" => Role::Reader,
        "member" => Role::Member,
        "admin" => Role::Admin,
        r => {
            return Err(ApiError::bad_request(format!(
                "role {r:?} is none of reader, member, admin"
            )));
        }
    };
    let valid = Duration::from_secs(within(
        "valid_s",
        req.valid_s.unwrap_or(86_400),
        1,
        30 * 86_400,
    )?);
    let uses = within("uses", req.uses.unwrap_or(1).into(), 1, 100)? as u32;
    let issued = app.daemon.invite(&req.group, role, valid, uses).await?;
    let qr_svg = qrcode::QrCode::new(issued.ticket.as_bytes())
        .map(|code| {
            code.render::<qrcode::render::svg::Color>()
                .min_dimensions(256, 256)
                .build()
        })
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        Json(InviteView {
            ticket: issued.ticket,
            qr_svg,
            group: issued.group.to_string(),
            name: issued.name,
            role: issued.role.as_str().to_owned(),
            expires_ms: issued.expires_ms,
            uses: issued.uses,
        }),
    ))
}
