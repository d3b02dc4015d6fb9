//! What a user meets when something is wrong: one clear message that names the file
//! and says what to do, a refusal when a value is set rather than a failure later,
//! and no panic on any output.

use std::io::Read;
use std::process::Stdio;

mod common;

use common::Shoal as Env;

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let env = Env::new();
    // Completions for bash are larger than a pipe holds, so writing them meets the
    // closed end whatever the timing.
    let mut child = env
        .command(&["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shoal runs");
    let mut first = [0u8; 16];
    child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut first)
        .expect("the start");
    let out = child.wait_with_output().expect("ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.code(),
        Some(141),
        "as a process SIGPIPE ends: {err}"
    );
}

#[test]
fn a_file_that_is_no_database_is_named_once_with_what_to_do() {
    let env = Env::new();
    std::fs::create_dir(env.path("folder.db")).expect("folder");
    let err = env.fails(&["init", &env.db("folder.db")]);
    assert_eq!(err.matches("folder.db").count(), 1, "{err}");
    assert!(
        err.contains("cannot be opened") && !err.contains("Error code"),
        "{err}"
    );
    std::fs::write(
        env.path("junk.db"),
        "not a database, but long enough to be read",
    )
    .expect("junk");
    for command in ["init", "status"] {
        let err = env.fails(&[command, &env.db("junk.db")]);
        assert_eq!(err.matches("junk.db").count(), 1, "{err}");
        assert!(err.contains("is not an SQLite database"), "{err}");
    }
    let err = env.fails(&["init", &env.db("missing/x.db")]);
    assert!(err.contains("missing/x.db cannot be opened"), "{err}");
}

#[test]
fn a_setting_is_checked_when_it_is_set() {
    let env = Env::new();
    let err = env.fails(&["config", "set", "relay", "ftp://x"]);
    assert!(err.contains("relay") && err.contains("https://"), "{err}");
    let err = env.fails(&["config", "set", "peers", "notanaddr"]);
    assert!(
        err.contains("notanaddr") && err.contains("HOST:PORT"),
        "{err}"
    );
    assert!(!env.ok(&["config", "get", "relay"]).contains("ftp"));
    assert!(env.ok(&["config", "get", "peers"]).trim() == "[]");
    env.ok(&["config", "set", "peers", "127.0.0.1:7777"]);
    env.ok(&["config", "set", "relay", "https://relay.example"]);
}

#[test]
fn an_invite_no_one_could_use_is_refused() {
    let env = Env::new();
    let a = env.db("a.db");
    env.sql("a.db", "CREATE TABLE t (id TEXT PRIMARY KEY, v);");
    env.ok(&["init", &a]);
    env.ok(&["track", &a, "t"]);
    env.ok(&["group", &a, "create", "g", "--table", "t"]);
    for bad in [["--uses", "0"], ["--expires", "0s"]] {
        let mut args = vec!["invite", a.as_str(), "--no-qr", "--no-wait"];
        args.extend(bad);
        let err = env.fails(&args);
        assert!(
            err.contains("of no use") && err.contains("--uses 1"),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn with_json_an_error_is_json_with_a_stable_code() {
    let env = Env::new();
    let out = env.shoal(&["status", &env.db("nothing.db"), "--json"]);
    assert!(!out.status.success());
    let err: serde_json::Value =
        serde_json::from_slice(&out.stderr).expect("the error is one JSON object");
    assert_eq!(err["error"]["code"], "not_initialised", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("shoal init")),
        "{err}"
    );
    let out = env.shoal(&["config", "set", "relay", "ftp://x", "--json"]);
    let err: serde_json::Value = serde_json::from_slice(&out.stderr).expect("json");
    assert_eq!(err["error"]["code"], "value", "{err}");
}
