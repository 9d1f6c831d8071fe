//! cairn-operator: runs cairn clusters on Kubernetes.
//!
//! Layout follows the reconcile pipeline: `crd` (types), `build` (pure object builders),
//! `members` (what the store itself says), `reconcile` (observe -> decide -> apply -> status),
//! and the process plumbing (`leader`, `metrics`, `server`, `telemetry`).

pub mod build;
pub mod crd;
pub mod leader;
pub mod members;
pub mod metrics;
pub mod reconcile;
pub mod run;
pub mod server;
