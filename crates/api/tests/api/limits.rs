//! What a client may hold: connections are capped, silent ones closed, a head
//! trickled in cut off, and a request names its host once.

use std::time::Duration;

use reqwest::StatusCode;
use shoal_api::Limits;
use shoal_testkit::World;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Api, TRADES, start};

/// Everything the server sends on `conn` until it closes it (30 s at most).
async fn until_closed(conn: &mut TcpStream) -> String {
    let mut text = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut text))
        .await
        .expect("the server closed the connection")
        .expect("read");
    String::from_utf8_lossy(&text).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_clients_cannot_hold_the_daemons_connections() {
    let w = World::on_system_clock();
    drop(w.replica("a", TRADES, &["trades"]));
    let daemon = start(&w, "a").await;
    let limits = Limits {
        connections: 3,
        head: Duration::from_millis(300),
        idle: Duration::from_millis(500),
    };
    let api = Api::serve_within(&daemon, w.dir(), limits).await;
    let addr = api.base.trim_start_matches("http://").to_owned();

    // Three clients take every connection and say nothing; a fourth is answered
    // once they are closed.
    let mut silent = Vec::new();
    for _ in 0..limits.connections {
        silent.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    let (s, status) =
        tokio::time::timeout(Duration::from_secs(30), api.json(api.get("/v1/status")))
            .await
            .expect("answered once the silent clients were let go");
    assert_eq!(s, StatusCode::OK, "{status}");
    for conn in &mut silent {
        assert_eq!(
            until_closed(conn).await,
            "",
            "a silent client was sent something"
        );
    }

    // A client that sends its head a header at a time, never finishing, is cut off
    // although it never falls silent.
    let mut slow = TcpStream::connect(&addr).await.expect("connect");
    slow.write_all(format!("GET /v1/health HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
        .await
        .expect("write");
    let (mut from, mut to) = slow.into_split();
    let trickle = tokio::spawn(async move {
        while to.write_all(b"X-Slow: 1\r\n").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), from.read_to_end(&mut answer))
        .await
        .expect("the trickling client was cut off")
        .ok();
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "a head that never ends was answered"
    );
    trickle.abort();

    // An event stream is answering, not silent: it outlives the idle limit.
    let stream = api.get("/v1/events").send().await.expect("events");
    assert_eq!(stream.status(), StatusCode::OK);
    tokio::time::sleep(limits.idle * 3).await;
    let mut stream = stream;
    let open = tokio::time::timeout(Duration::from_millis(50), stream.chunk()).await;
    assert!(
        !matches!(open, Ok(Ok(None)) | Ok(Err(_))),
        "the event stream was closed as idle"
    );
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_names_its_host_once_and_in_agreement() {
    let w = World::on_system_clock();
    drop(w.replica("a", TRADES, &["trades"]));
    let daemon = start(&w, "a").await;
    let api = Api::serve(&daemon, w.dir()).await;
    let addr = api.base.trim_start_matches("http://").to_owned();
    let ask = async |request: String| {
        let mut conn = TcpStream::connect(&addr).await.expect("connect");
        conn.write_all(request.as_bytes()).await.expect("write");
        let text = until_closed(&mut conn).await;
        text.lines().next().unwrap_or_default().to_owned()
    };
    let key = &api.key;
    let fine = ask(format!(
        "GET /v1/status HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert_eq!(fine, "HTTP/1.1 200 OK");
    let twice = ask(format!(
        "GET /v1/status HTTP/1.1\r\nHost: {addr}\r\nHost: evil.example\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert_eq!(
        twice, "HTTP/1.1 421 Misdirected Request",
        "two Host headers"
    );
    let absolute = ask(format!(
        "GET http://evil.example/v1/status HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert_eq!(
        absolute, "HTTP/1.1 421 Misdirected Request",
        "a URL naming another host"
    );
    let agreeing = ask(format!(
        "GET http://{addr}/v1/status HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert_eq!(
        agreeing, "HTTP/1.1 200 OK",
        "an absolute URL naming this server"
    );
    daemon.shutdown().await;
}
