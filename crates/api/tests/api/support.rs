//! What the API's tests share: a daemon's API served on a free loopback port, and
//! ways to read its answers.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use shoal_api::ApiKey;
use shoal_daemon::{Config, Daemon};
use shoal_testkit::World;

pub(crate) const TRADES: &str =
    "PRAGMA journal_mode = WAL; CREATE TABLE trades (id TEXT PRIMARY KEY, qty INTEGER);";

/// A daemon on the replica `name` of `w`, reaching others over loopback.
pub(crate) async fn start(w: &World, name: &str) -> Daemon {
    Daemon::start(w.path(name), w.options(), Config::loopback(), false)
        .await
        .expect("the daemon starts")
}

/// A daemon's API, served on a free loopback port.
pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) key: String,
    pub(crate) http: reqwest::Client,
    pub(crate) logins: shoal_api::Logins,
}

impl Api {
    pub(crate) async fn serve(daemon: &Daemon, dir: &Path) -> Api {
        Api::serve_within(daemon, dir, shoal_api::Limits::default()).await
    }

    /// The API of `daemon`, within `limits`.
    pub(crate) async fn serve_within(
        daemon: &Daemon,
        dir: &Path,
        limits: shoal_api::Limits,
    ) -> Api {
        // The HTTP client links rustls (for the relays' sake) without a provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let key = ApiKey::load_or_make(&dir.join(format!("{}.key", daemon.device().short())))
            .expect("key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let text = key.as_str().to_owned();
        let logins = shoal_api::Logins::default();
        tokio::spawn(shoal_api::serve(
            daemon.handle(),
            key,
            logins.clone(),
            listener,
            limits,
            std::future::pending(),
        ));
        Api {
            base,
            key: text,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            logins,
        }
    }

    pub(crate) fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    pub(crate) fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
    }

    pub(crate) async fn json(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("answered");
        let status = resp.status();
        (status, resp.json().await.expect("a JSON body"))
    }
}

/// The error code of a refusal, checking it is the API's error shape.
pub(crate) fn code(body: &Value) -> &str {
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body["error"]["code"].as_str().expect("a code")
}

/// The rows of `trades` in the file at `db`.
pub(crate) fn rows(db: &Path) -> Vec<(String, i64)> {
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.busy_timeout(Duration::from_secs(5)).expect("busy");
    let mut stmt = conn
        .prepare("SELECT id, qty FROM trades ORDER BY id")
        .expect("select");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// How long a test waits for what should happen.
const PATIENCE: Duration = Duration::from_secs(30);

/// Waits until `holds`, asking again every 20 ms; fails the test after
/// [`PATIENCE`].
pub(crate) async fn eventually(what: &str, mut holds: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !holds().await {
        assert!(Instant::now() < deadline, "no {what} within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The text of an event stream up to the first point where it holds `marker`.
pub(crate) async fn stream_until(resp: reqwest::Response, marker: &str) -> String {
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    let deadline = Instant::now() + PATIENCE;
    while !text.contains(marker) {
        let chunk = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .unwrap_or_else(|_| panic!("no {marker:?} in the stream: {text}"))
            .expect("more")
            .expect("bytes");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}
