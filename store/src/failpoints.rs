//! Crash points (`--features failpoints` only): named places on the durability path where the
//! fault-injection suite kills the process, armed at start-up from the `FAILPOINTS` environment
//! variable with tikv's fail-rs syntax, `name=actions;name=actions`, e.g.
//! `FAILPOINTS='raft::log::after_fsync=50*off->return'` (pass the point 50 times, then crash).
//!
//! Any action that makes the point fire (`return`, with fail-rs's `N%` / `N*` modifiers)
//! aborts the process on the spot: no destructor, no flush, no reply, like a power cut as far as
//! the process is concerned. (fail-rs's own `panic` action would only end the task it runs in.)
//!
//! Points: `raft::log::before_fsync` (entries handed to the WAL, not yet synced),
//! `raft::log::after_fsync` (the WAL's flush thread, after the fdatasync that made appended
//! entries durable and before openraft hears of it), `raft::apply::before`, `raft::apply::after`
//! (each entry, before it touches MVCC and after its applied-state record is written),
//! `raft::snapshot::install` (after the old state machine was cleared, before the snapshot's
//! data is written), `mvcc::compact::during` (after each key a compaction removed).

/// Arms the points named in `FAILPOINTS`; returns how many were armed.
pub fn setup_from_env() -> usize {
    let Ok(spec) = std::env::var("FAILPOINTS") else {
        return 0;
    };
    let mut armed = 0;
    for item in spec.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((name, actions)) = item.split_once('=') else {
            tracing::warn!(item, "FAILPOINTS: expected name=actions");
            continue;
        };
        match fail::cfg(name.trim(), actions.trim()) {
            Ok(()) => {
                tracing::warn!(name, actions, "failpoint armed");
                armed += 1;
            }
            Err(e) => tracing::warn!(name, actions, error = %e, "FAILPOINTS: bad actions"),
        }
    }
    armed
}

/// Evaluates a point: crashes the process when it fires.
pub fn eval(name: &'static str) {
    let _ = fail::eval(name, |_| crash(name));
}

fn crash(name: &str) -> ! {
    eprintln!("failpoint {name}: crashing (abort)");
    std::process::abort()
}
