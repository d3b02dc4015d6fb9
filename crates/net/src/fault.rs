//! Fault points: places where a test can make the process die as a crash would.
//!
//! Built with the `fault-points` feature (the command's own tests turn it on), a
//! process whose `SHOAL_FAULT` names a point aborts there: no destructor runs and
//! nothing is flushed, as after `kill -9`. Without the feature a point is nothing.

/// Dies here when `SHOAL_FAULT` names `name` and fault points are built in.
pub fn point(name: &str) {
    #[cfg(feature = "fault-points")]
    if std::env::var_os("SHOAL_FAULT").is_some_and(|v| v == name) {
        eprintln!("fault point {name}: aborting");
        std::process::abort();
    }
    let _ = name;
}
