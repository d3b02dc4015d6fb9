//! `shoal` run as child processes by the demo and the benchmarks: daemons that run
//! until dropped, and one-shot commands whose JSON answer is wanted.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A `shoal up` process, killed when dropped; its output is drained so that it never
/// blocks on a full pipe.
pub(crate) struct Up(Child);

impl Up {
    /// Starts `shoal up DB` and waits until it says it is up.
    pub(crate) fn start(data: &Path, db: &Path) -> anyhow::Result<Up> {
        // `SHOAL_CHILD_LOG` (a `RUST_LOG` filter) shows what the daemons do.
        let log = std::env::var("SHOAL_CHILD_LOG").ok();
        let mut child = Command::new(std::env::current_exe()?)
            .args(["up", &db.to_string_lossy(), "--json"])
            .env("SHOAL_DATA_DIR", data)
            .env("RUST_LOG", log.as_deref().unwrap_or("error"))
            .stdout(Stdio::piped())
            .stderr(if log.is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let first = lines.next().context("the daemon said nothing")??;
        if !first.contains("\"up\"") {
            bail!("the daemon did not start: {first}");
        }
        std::thread::spawn(move || for _ in lines {});
        Ok(Up(child))
    }

    /// The daemon's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Stops the daemon as Ctrl-C would, and waits for it to exit.
    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.0.id().to_string();
        // The shell's own `kill`: no other tool needs to be installed.
        Command::new("sh")
            .args(["-c", &format!("kill -INT {pid}")])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.0.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("the daemon did not stop")
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `shoal ARGS --json` and returns its answer.
pub(crate) fn shoal(data: &Path, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(std::env::current_exe()?)
        .args(args)
        .arg("--json")
        .env("SHOAL_DATA_DIR", data)
        .output()?;
    if !out.status.success() {
        bail!(
            "shoal {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}
