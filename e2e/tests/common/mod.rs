//! Shared by the e2e tests: the cairn binary they drive and deadline-bounded waits.
#![allow(dead_code)]

use std::future::Future;
use std::process::Command;
use std::time::{Duration, Instant};

/// `cargo test -p cairn-e2e` alone does not build another package's binary: build it once
/// (a no-op when `cargo test --workspace` already did).
pub fn ensure_cairn_built() {
    if cairn_e2e::procs::cairn_bin().is_ok() {
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "cairn-store", "--bin", "cairn"])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building the cairn binary failed");
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
