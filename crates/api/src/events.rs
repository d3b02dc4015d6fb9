//! `GET /v1/events`: the daemon's events as Server-Sent Events. Each carries its
//! number as its SSE id; a client that reconnects sends the last one it saw as
//! `Last-Event-ID` (or `?since=`) and gets what it missed, with a `missed` event
//! first if some are no longer kept (`{"missed": N}`), or if the daemon started
//! again since (`{"missed": null, "restarted": true}`, then every event kept). An
//! idle stream sends a comment every 15 s.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use shoal_daemon::Numbered;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use utoipa::IntoParams;

use crate::app::App;
use crate::error::{ApiError, ErrorBody};
use crate::routes::Params;

/// How often an idle stream says it is still there.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// `GET /v1/events`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Start after this event (as `Last-Event-ID` does; the header wins). Without
    /// either, the stream starts with the next event.
    since: Option<u64>,
}

/// The daemon's events as they happen, resumable.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses(
        (status = 200, description = "Server-Sent Events: `event:` the kind, `id:` its number, `data:` the event as JSON", content_type = "text/event-stream", body = String),
        (status = 400, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn events(
    State(app): State<App>,
    Params(q): Params<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let header = headers
        .get("last-event-id")
        .map(|h| {
            h.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Last-Event-ID is not an event number"))
        })
        .transpose()?;
    let Ok(room) = app.streams.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            format!(
                "{} event streams are open already: close one, or follow the events from one",
                crate::app::STREAMS
            ),
        ));
    };
    // Subscribed before the kept events are read, so that nothing falls between.
    let live = BroadcastStream::new(app.daemon.subscribe());
    let latest = app.daemon.latest_event();
    let asked = header.or(q.since);
    // Numbers start again at 1 when the daemon does: a number past the latest is
    // from before, and the listener missed whatever happened since.
    let restarted = asked.is_some_and(|a| a > latest);
    let after = match asked {
        Some(a) if a <= latest => a,
        Some(_) => 0,
        None => latest,
    };
    let since = app.daemon.events_since(after);
    let last_kept = since.events.last().map_or(after, |e| e.id);
    let missed = (since.missed > 0 || restarted).then(|| {
        Ok::<_, Infallible>(Sse::default().event("missed").data(if restarted {
            "{\"missed\":null,\"restarted\":true}".to_owned()
        } else {
            format!("{{\"missed\":{}}}", since.missed)
        }))
    });
    let kept = stream::iter(since.events.into_iter().map(|e| Ok(sse(&e))));
    let live = live.filter_map(move |e| async move {
        match e {
            Ok(e) if e.id > last_kept => Some(Ok(sse(&e))),
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(n)) => Some(Ok(Sse::default()
                .event("missed")
                .data(format!("{{\"missed\":{n}}}")))),
        }
    });
    let all: std::pin::Pin<Box<dyn Stream<Item = Result<Sse, Infallible>> + Send>> =
        Box::pin(stream::iter(missed).chain(kept).chain(live).map(move |e| {
            let _held = &room;
            e
        }));
    Ok(axum::response::Sse::new(all)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT))
        .into_response())
}

fn sse(e: &Numbered) -> Sse {
    let json = serde_json::to_value(e).unwrap_or_default();
    let kind = json
        .get("event")
        .and_then(|k| k.as_str())
        .unwrap_or("event")
        .to_owned();
    Sse::default()
        .id(e.id.to_string())
        .event(kind)
        .data(json.to_string())
}
