//! What the command's tests share: a temporary directory with its own data
//! directory, the `shoal` binary run in it, and writes by Python's `sqlite3` in a
//! process of its own, as an app would make them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tempfile::TempDir;

/// A directory of databases and the data directory their keys are in.
pub(crate) struct Shoal {
    dir: TempDir,
}

impl Shoal {
    pub(crate) fn new() -> Shoal {
        Shoal {
            dir: TempDir::new().expect("temp dir"),
        }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The database `name`'s path, as a command line names it.
    pub(crate) fn db(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }

    /// Runs `shoal`, whatever comes of it.
    pub(crate) fn shoal(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("shoal runs")
    }

    /// The `shoal` command with these arguments, in this directory's data directory.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
        command.args(args).env("SHOAL_DATA_DIR", self.path("data"));
        command
    }

    /// Runs shoal on a clock a second ahead, expecting success: what it seals is
    /// stamped later than anything sealed before on the system's clock, as a device
    /// that writes a moment later would stamp it.
    pub(crate) fn ok_later(&self, args: &[&str]) -> String {
        let out = self
            .command(args)
            .env("SHOAL_TEST_CLOCK_AHEAD_MS", "1000")
            .output()
            .expect("shoal runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "shoal {args:?} failed: {err}");
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Runs shoal, expecting success; returns stdout and stderr.
    pub(crate) fn ok_with_stderr(&self, args: &[&str]) -> (String, String) {
        let out = self.shoal(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "shoal {args:?} failed: {err}");
        (String::from_utf8(out.stdout).expect("utf-8"), err)
    }

    /// Runs shoal, expecting success, and returns its stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        self.ok_with_stderr(args).0
    }

    /// Runs shoal, expecting failure, and returns its stderr.
    pub(crate) fn fails(&self, args: &[&str]) -> String {
        let out = self.shoal(args);
        assert!(!out.status.success(), "shoal {args:?} should have failed");
        String::from_utf8(out.stderr).expect("utf-8")
    }

    /// Runs shoal with `--json`, expecting success.
    pub(crate) fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).expect("json")
    }

    /// Runs `sql` on database `name` from this process.
    pub(crate) fn sql(&self, name: &str, sql: &str) {
        rusqlite::Connection::open(self.path(name))
            .expect("open")
            .execute_batch(sql)
            .expect(sql);
    }

    /// Runs `script` on database `name` with Python's sqlite3 module, in a process of
    /// its own.
    pub(crate) fn python(&self, name: &str, script: &str) {
        python(&self.db(name), script);
    }
}

/// Runs `script` on the database at `db` with Python's sqlite3 module, in a process
/// of its own, as an app would.
pub(crate) fn python(db: &str, script: &str) {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.executescript(sys.argv[2])\nc.commit()",
            db,
            script,
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python {script:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The single value `sql` selects from the database at `path`.
pub(crate) fn count(path: impl AsRef<Path>, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.busy_timeout(Duration::from_secs(5)).expect("timeout");
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}
