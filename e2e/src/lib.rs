//! cairn's torture harness (issue 8): real `cairn` processes, a nemesis injecting faults while
//! clients run a mixed workload, a recorded history, and the checkers that judge it.
//!
//! - `procs`: the cluster's processes (start, kill -9, SIGSTOP/SIGCONT, restart), built for long
//!   runs (the test-only harness in `store/tests/support` is for short assertions).
//! - `workload`, `watchers`, `nemesis`, `run`: what happens during a run.
//! - `history`: what is recorded (JSON lines).
//! - `linearizability` (Wing-Gong-Lowe search), `model` (one key's specification, revision
//!   rules), `watch_check` (watch guarantees): the checkers, pure functions.
pub mod history;
pub mod linearizability;
pub mod model;
pub mod nemesis;
pub mod netns;
pub mod procs;
pub mod proxy;
pub mod run;
pub mod slice;
pub mod watch_check;
pub mod watchers;
pub mod workload;
