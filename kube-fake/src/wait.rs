//! Waiting for a condition in tests, with a deadline instead of a sleep.

use std::time::Duration;

/// How long [`eventually`] waits before it fails the test.
const DEADLINE: Duration = Duration::from_secs(120);

/// Waits until `check` holds; panics naming `what` after two minutes. Works with paused
/// time too (the clock auto-advances while the runtime is idle).
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
