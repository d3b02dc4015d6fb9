//! Every refusal: a clear JSON error with a fitting status, and nothing changed.

use reqwest::StatusCode;
use serde_json::json;
use shoal_testkit::World;

use crate::support::{Api, TRADES, code, eventually, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_a_clear_json_error_with_a_fitting_status() {
    let w = World::on_system_clock();
    drop(w.replica("a", TRADES, &["trades"]));
    let daemon = start(&w, "a").await;
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
    // Out of range is refused, not quietly bent into range.
    for path in [
        "/v1/conflicts?limit=501",
        "/v1/conflicts?limit=0",
        "/v1/log?limit=1001",
    ] {
        let (s, body) = api.json(api.get(path)).await;
        assert_eq!(
            (s, code(&body)),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{path}: {body}"
        );
    }
    let (s, body) = api
        .json(api.post("/v1/invites", json!({"group": "g", "uses": 1000})))
        .await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{body}"
    );
    let (s, body) = api
        .json(api.post("/v1/invites", json!({"group": "g", "rol": "admin"})))
        .await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "bad_request"),
        "a misspelt field: {body}"
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
    eventually("room for a stream", async || {
        api.get("/v1/events").send().await.expect("stream").status() == StatusCode::OK
    })
    .await;
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

    // Where the switch was left outlasts a restart.
    let daemon = start(&w, "a").await;
    assert!(!daemon.auto_sync().on, "the switch was forgotten");
    daemon.shutdown().await;
}
