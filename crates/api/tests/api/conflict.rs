//! Two devices: an invite, a join, sync, and a conflict found, shown and resolved
//! through the API that closes on the other device.

use reqwest::StatusCode;
use serde_json::json;
use shoal_testkit::{World, write};

use crate::support::{Api, TRADES, code, eventually, rows, start, stream_until};

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
    let daemon_a = start(&w, "a").await;
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
    let daemon_b = start(&w, "b").await;
    daemon_b.join(&ticket).await.expect("join");
    write(&a, "INSERT INTO trades VALUES ('t1', 1)");
    eventually("t1 on B", async || rows(&b) == [("t1".to_owned(), 1)]).await;
    let (_, members) = api.json(api.get("/v1/groups/desk/members")).await;
    assert_eq!(members.as_array().map(Vec::len), Some(2), "{members}");
    let b_id = daemon_b.device().to_string();
    eventually("B connected in /v1/peers", async || {
        let (_, peers) = api.json(api.get("/v1/peers")).await;
        peers[0]["device"] == b_id.as_str() && peers[0]["connected"] == true
    })
    .await;
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
    let daemon_b = start(&w, "b").await;
    eventually("the conflict on A", async || {
        let (s, page) = api.json(api.get("/v1/conflicts?table=trades")).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        page["total"] == 1
    })
    .await;
    let (_, page) = api.json(api.get("/v1/conflicts?table=trades")).await;
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
    eventually("the resolution on B", async || {
        let inbox = daemon_b.conflicts(false).await.expect("B's inbox");
        inbox.is_empty() && rows(&b) == [("t1".to_owned(), theirs)]
    })
    .await;
    assert_eq!(rows(&a), [("t1".to_owned(), theirs)]);

    // The event stream, resumed from before the conflict, tells it all in order.
    let resp = api
        .get("/v1/events")
        .header("last-event-id", since.to_string())
        .send()
        .await
        .expect("events");
    let text = stream_until(resp, "event: conflict_closed").await;
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
    let text = stream_until(resp, "id: 1\n").await;
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
    assert_eq!(own.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (s, body) = api.json(api.post("/v1/sync", json!({"peer": me}))).await;
    assert_eq!((s, code(&body)), (StatusCode::BAD_REQUEST, "bad_request"));
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("is this device")),
        "{body}"
    );

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
