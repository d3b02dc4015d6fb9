//! The API against real daemons over real HTTP: every refusal, and a conflict found,
//! shown and resolved through it that closes on the other device.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use shoal_api::ApiKey;
use shoal_daemon::{Config, Daemon};
use shoal_testkit::World;

const TRADES: &str =
    "PRAGMA journal_mode = WAL; CREATE TABLE trades (id TEXT PRIMARY KEY, qty INTEGER);";

fn config() -> Config {
    Config {
        relay: "none".into(),
        mdns: false,
        heartbeat: Duration::from_secs(1),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(2),
        api: "off".into(),
        ..Config::default()
    }
}

fn write(path: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.busy_timeout(Duration::from_secs(5)).expect("busy");
    conn.execute_batch(sql).expect(sql);
}

/// A daemon's API, served on a free loopback port.
struct Api {
    base: String,
    key: String,
    http: reqwest::Client,
    logins: shoal_api::Logins,
}

impl Api {
    async fn serve(daemon: &Daemon, dir: &Path) -> Api {
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

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
    }

    async fn json(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("answered");
        let status = resp.status();
        (status, resp.json().await.expect("a JSON body"))
    }
}

/// The error code of a refusal, checking it is the API's error shape.
fn code(body: &Value) -> &str {
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body["error"]["code"].as_str().expect("a code")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_a_clear_json_error_with_a_fitting_status() {
    let w = World::on_system_clock();
    drop(w.replica("a", TRADES, &["trades"]));
    let daemon = Daemon::start(w.path("a"), w.options(), config(), false)
        .await
        .expect("starts");
    let api = Api::serve(&daemon, w.dir()).await;
    let url = |p: &str| format!("{}{p}", api.base);
    let plain = api.http.clone();

    let (s, health) = api.json(plain.get(url("/v1/health"))).await;
    assert_eq!((s, health["ok"].as_bool()), (StatusCode::OK, Some(true)));

    let (s, body) = api.json(plain.get(url("/v1/status"))).await;
    assert_eq!((s, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, body) = api
        .json(plain.get(url("/v1/status")).bearer_auth("0".repeat(64)))
        .await;
    assert_eq!((s, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, status) = api
        .json(plain.get(url("/v1/status")).header("x-api-key", &api.key))
        .await;
    assert_eq!(s, StatusCode::OK, "{status}");
    assert_eq!(status["device"], daemon.device().to_string());
    assert_eq!(status["sync"], "offline");
    assert_eq!(status["tables"][0]["name"], "trades", "{status}");

    // A page elsewhere whose name resolves here (DNS rebinding) gets nothing.
    let (s, body) = api
        .json(api.get("/v1/status").header("host", "evil.example:8384"))
        .await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::MISDIRECTED_REQUEST, "bad_host")
    );

    let (s, body) = api.json(api.get("/v1/conflicts/0123abcd")).await;
    assert_eq!((s, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, body) = api
        .json(
            api.get("/v1/conflicts/x/resolve")
                .header("content-type", "application/json"),
        )
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    let bad_json = api
        .http
        .post(url("/v1/conflicts/0123abcd/resolve"))
        .bearer_auth(&api.key)
        .header("content-type", "application/json")
        .body("{\"keep\": ");
    let (s, body) = api.json(bad_json).await;
    assert_eq!((s, code(&body)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, body) = api
        .json(api.post("/v1/conflicts/0123abcd/resolve", json!({"keep": "both"})))
        .await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "bad_request")
    );
    let huge = json!({"set": {"qty": "x".repeat(shoal_api::MAX_BODY)}});
    let (s, body) = api
        .json(api.post("/v1/conflicts/0123abcd/resolve", huge))
        .await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );
    let big = json!({"set": {"qty": 18446744073709551615u64}});
    let (s, body) = api
        .json(api.post("/v1/conflicts/0123abcd/resolve", big))
        .await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{body}"
    );
    let (s, body) = api.json(api.get("/v1/conflicts/%25")).await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::NOT_FOUND, "not_found"),
        "only hex"
    );
    let (s, body) = api.json(api.get("/v1/conflicts?limit=-1")).await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{body}"
    );
    let (s, body) = api.json(api.get("/v1/groups//members")).await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::NOT_FOUND, "not_found"),
        "{body}"
    );
    let (s, _) = api
        .json(
            plain
                .get(url("/v1/status"))
                .header("authorization", format!("bearer {}", api.key)),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "the scheme's case does not matter");
    // Event streams are counted: past the limit, a clear refusal; one closed makes room.
    let mut open = Vec::new();
    loop {
        let r = api.get("/v1/events").send().await.expect("stream");
        if r.status() != StatusCode::OK {
            assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(code(&r.json().await.expect("json")), "busy");
            break;
        }
        open.push(r);
        assert!(open.len() <= 64, "no limit on event streams");
    }
    assert_eq!(open.len(), 64);
    drop(open.pop());
    let (what, deadline) = (
        "room for a stream".to_owned(),
        Instant::now() + Duration::from_secs(10),
    );
    while api.get("/v1/events").send().await.expect("stream").status() != StatusCode::OK {
        assert!(Instant::now() < deadline, "no {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(open);
    let (s, body) = api.json(api.get("/v1/no-such-thing")).await;
    assert_eq!((s, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, body) = api.json(api.get("/v1/conflicts?status=maybe")).await;
    assert_eq!((s, code(&body)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, body) = api
        .json(api.post("/v1/invites", json!({"group": "nowhere"})))
        .await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::NOT_FOUND, "not_found"),
        "{body}"
    );

    // The page's way in: a login link, once, for a cookie; changes need its token.
    let (s, body) = api.json(plain.get(url("/login?token=nope"))).await;
    assert_eq!((s, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let token = api.logins.link();
    let login = plain
        .get(url(&format!("/login?token={token}")))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().expect("name=value").to_owned();
    let again = plain
        .get(url(&format!("/login?token={token}")))
        .send()
        .await
        .expect("again");
    assert_eq!(
        again.status(),
        StatusCode::UNAUTHORIZED,
        "a link opens once"
    );
    let with_cookie = |r: reqwest::RequestBuilder| r.header("cookie", &cookie);
    let (s, session) = api.json(with_cookie(plain.get(url("/v1/session")))).await;
    assert_eq!(s, StatusCode::OK, "{session}");
    let csrf = session["csrf"].as_str().expect("csrf").to_owned();
    let (s, _) = api.json(with_cookie(plain.get(url("/v1/status")))).await;
    assert_eq!(s, StatusCode::OK);
    let off = json!({"on": false});
    let (s, body) = api
        .json(with_cookie(plain.put(url("/v1/sync/auto")).json(&off)))
        .await;
    assert_eq!((s, code(&body)), (StatusCode::FORBIDDEN, "csrf"));
    let (s, body) = api
        .json(with_cookie(plain.put(url("/v1/sync/auto")).json(&off)).header("x-csrf-token", "0"))
        .await;
    assert_eq!((s, code(&body)), (StatusCode::FORBIDDEN, "csrf"));
    let (s, auto) = api
        .json(with_cookie(plain.put(url("/v1/sync/auto")).json(&off)).header("x-csrf-token", &csrf))
        .await;
    assert_eq!((s, &auto["on"]), (StatusCode::OK, &json!(false)), "{auto}");
    assert!(!daemon.auto_sync().on);
    let (s, body) = api
        .json(
            api.http
                .put(url("/v1/sync/auto"))
                .bearer_auth(&api.key)
                .json(&json!({"on": true, "interval_s": 0})),
        )
        .await;
    assert_eq!((s, code(&body)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, body) = api
        .json(with_cookie(plain.post(url("/v1/login-links"))))
        .await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized"),
        "the key only"
    );
    let (s, link) = api
        .json(api.http.post(url("/v1/login-links")).bearer_auth(&api.key))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(
        link["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/login?token="))
    );
    let page = plain.get(url("/")).send().await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .is_ok_and(|p| p.contains("default-src 'none'"))
    );
    assert!(
        page.text()
            .await
            .expect("html")
            .contains("<title>Shoal</title>")
    );

    let (s, doc) = api.json(api.get("/v1/openapi.json")).await;
    assert_eq!(s, StatusCode::OK);
    for path in ["/v1/status", "/v1/conflicts/{id}/resolve", "/v1/events"] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_resolved_through_the_api_closes_on_the_other_device() {
    let w = World::on_system_clock();
    let (a, b) = (w.path("a"), w.path("b"));
    let mut store_a = w.replica("a", TRADES, &["trades"]);
    store_a
        .create_group("desk", &[("trades".into(), Vec::new())])
        .expect("group");
    drop(store_a);
    drop(w.replica("b", TRADES, &["trades"]));
    let daemon_a = Daemon::start(&a, w.options(), config(), false)
        .await
        .expect("A starts");
    let api = Api::serve(&daemon_a, w.dir()).await;

    // An invite made through the API lets B in.
    let (s, invite) = api
        .json(api.post("/v1/invites", json!({"group": "desk", "uses": 1})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{invite}");
    assert!(
        invite["qr_svg"]
            .as_str()
            .is_some_and(|q| q.contains("<svg"))
    );
    let ticket: shoal_net::InviteTicket = invite["ticket"]
        .as_str()
        .expect("ticket")
        .parse()
        .expect("a ticket");
    let daemon_b = Daemon::start(&b, w.options(), config(), false)
        .await
        .expect("B starts");
    daemon_b.join(&ticket).await.expect("join");
    write(&a, "INSERT INTO trades VALUES ('t1', 1)");
    let until = |what: &str| (what.to_owned(), Instant::now() + Duration::from_secs(30));
    let (what, deadline) = until("t1 on B");
    while rows(&b) != [("t1".to_owned(), 1)] {
        assert!(Instant::now() < deadline, "no {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, members) = api.json(api.get("/v1/groups/desk/members")).await;
    assert_eq!(members.as_array().map(Vec::len), Some(2), "{members}");
    let b_id = daemon_b.device().to_string();
    let (what, deadline) = until("B connected in /v1/peers");
    loop {
        let (_, peers) = api.json(api.get("/v1/peers")).await;
        if peers[0]["device"] == b_id.as_str() && peers[0]["connected"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "no {what}: {peers}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, groups) = api.json(api.get("/v1/groups")).await;
    assert_eq!(groups[0]["name"], "desk", "{groups}");
    let (s, synced) = api.json(api.post("/v1/sync", json!({}))).await;
    assert_eq!(s, StatusCode::OK, "{synced}");
    assert_eq!(synced[0]["peer"], b_id.as_str());
    assert!(synced[0]["error"].is_null(), "{synced}");
    let (s, synced) = api
        .json(api.post("/v1/sync", json!({"peer": b_id, "group": "desk"})))
        .await;
    assert_eq!(
        (s, synced.as_array().map(Vec::len)),
        (StatusCode::OK, Some(1)),
        "{synced}"
    );
    let (s, body) = api
        .json(api.post("/v1/sync", json!({"peer": "ab".repeat(32)})))
        .await;
    assert_eq!((s, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (_, first) = api.json(api.get("/v1/log?limit=2")).await;
    assert_eq!(first["items"].as_array().map(Vec::len), Some(2), "{first}");
    assert_eq!(first["next_offset"], 2);
    let (_, next) = api.json(api.get("/v1/log?limit=2&offset=2")).await;
    assert!(next["items"][0]["hash"].is_string(), "{next}");
    assert_ne!(next["items"][0]["hash"], first["items"][0]["hash"]);
    assert_ne!(next["items"][0]["hash"], first["items"][1]["hash"]);
    // No other origin may read an answer: nothing says it may.
    let preflight = api
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/status", api.base))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("preflight");
    assert!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    // Apart, both edit t1; together again, A finds the conflict.
    daemon_b.shutdown().await;
    write(&a, "UPDATE trades SET qty = 10 WHERE id = 't1'");
    write(&b, "UPDATE trades SET qty = 20 WHERE id = 't1'");
    let since = api.json(api.get("/v1/status")).await.1["latest_event"]
        .as_u64()
        .expect("latest event");
    let daemon_b = Daemon::start(&b, w.options(), config(), false)
        .await
        .expect("B starts again");
    let (what, deadline) = until("conflict on A");
    let page = loop {
        let (s, page) = api.json(api.get("/v1/conflicts?table=trades")).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        if page["total"] == 1 {
            break page;
        }
        assert!(Instant::now() < deadline, "no {what}: {page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(page["by_table"]["trades"], 1);
    let id = page["items"][0]["id"].as_str().expect("id").to_owned();
    let (s, shown) = api
        .json(api.get(&format!("/v1/conflicts/{}", &id[..8])))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(shown["differing"], json!(["qty"]), "{shown}");
    let sides = [
        &shown["local"]["values"]["qty"],
        &shown["remote"]["values"]["qty"],
    ];
    let mut values: Vec<i64> = sides.iter().filter_map(|v| v.as_i64()).collect();
    values.sort();
    assert_eq!(values, [10, 20], "{shown}");
    assert!(shown["local"]["device"].is_string() && shown["remote"]["at_ms"].is_u64());
    let theirs = shown["remote"]["values"]["qty"].as_i64().expect("theirs");

    // Keep theirs: it lands on both devices, and the record closes on B too.
    let (s, resolved) = api
        .json(api.post(
            &format!("/v1/conflicts/{id}/resolve"),
            json!({"keep": "remote"}),
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{resolved}");
    assert_eq!(resolved["status"], "resolved");
    let (s, again) = api
        .json(api.post(
            &format!("/v1/conflicts/{id}/resolve"),
            json!({"keep": "local"}),
        ))
        .await;
    assert_eq!((s, code(&again)), (StatusCode::CONFLICT, "conflict"));
    let (what, deadline) = until("the resolution on B");
    while !daemon_b
        .conflicts(false)
        .await
        .expect("B's inbox")
        .is_empty()
        || rows(&b) != [("t1".to_owned(), theirs)]
    {
        assert!(Instant::now() < deadline, "no {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rows(&a), [("t1".to_owned(), theirs)]);

    // The event stream, resumed from before the conflict, tells it all in order.
    let resp = api
        .get("/v1/events")
        .header("last-event-id", since.to_string())
        .send()
        .await
        .expect("events");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    let (what, deadline) = until("conflict_closed in the stream");
    while !text.contains("event: conflict_closed") {
        let chunk = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .unwrap_or_else(|_| panic!("no {what}: {text}"))
            .expect("more")
            .expect("bytes");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let ids: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: ").and_then(|i| i.parse().ok()))
        .collect();
    assert_eq!(ids.first(), Some(&(since + 1)), "{text}");
    assert!(
        ids.windows(2).all(|p| p[1] == p[0] + 1),
        "ids not dense: {ids:?}"
    );
    assert!(text.contains("event: conflict_found"), "{text}");

    // A number past the latest is from before the daemon last started: the stream
    // says so and gives every event kept.
    let resp = api
        .get("/v1/events?since=999999")
        .send()
        .await
        .expect("events");
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    let (what, deadline) = until("a restarted stream");
    while !text.contains("id: 1\n") {
        let chunk = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .unwrap_or_else(|_| panic!("no {what}: {text}"))
            .expect("more")
            .expect("bytes");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        text.starts_with("event: missed\ndata: {\"missed\":null,\"restarted\":true}"),
        "{text}"
    );

    // This device does not revoke itself.
    let me = daemon_a.device().to_string();
    let own = api
        .http
        .delete(format!("{}/v1/groups/desk/members/{me}", api.base))
        .bearer_auth(&api.key)
        .send()
        .await
        .expect("revoke");
    assert_eq!(own.status(), StatusCode::BAD_REQUEST);

    // Revoked through the API, B is a member no more.
    let gone = api
        .http
        .delete(format!("{}/v1/groups/desk/members/{b_id}", api.base))
        .bearer_auth(&api.key)
        .send()
        .await
        .expect("revoke");
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    let (_, members) = api.json(api.get("/v1/groups/desk/members")).await;
    assert_eq!(members.as_array().map(Vec::len), Some(1), "{members}");
    daemon_b.shutdown().await;
    daemon_a.shutdown().await;
}

fn rows(db: &Path) -> Vec<(String, i64)> {
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
