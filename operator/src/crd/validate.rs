//! Operator-side checks of a CairnCluster spec.
//!
//! The CRD schema carries the same rules as CEL, but objects can predate the rule, arrive through
//! an API server that skips CEL, or be edited with validation disabled; the operator must still
//! refuse to act on them and say why instead of crashing or building a broken cluster.

use super::{CairnClusterSpec, MAX_REPLICAS, MIN_REPLICAS};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("spec.replicas is {0}: it must be odd and between {MIN_REPLICAS} and {MAX_REPLICAS}")]
    Replicas(i32),
    #[error("spec.version is empty and spec.image is unset: no image to run")]
    NoImage,
    #[error("spec.store.electionTimeout ({election}ms) must be at least 5 times spec.store.heartbeatInterval ({heartbeat}ms)")]
    Timing { heartbeat: i64, election: i64 },
    #[error("spec.tls.enabled is not supported by this operator version yet")]
    TlsUnsupported,
}

/// Every problem with the spec, so a user fixes them in one edit rather than one per reconcile.
pub fn validate(spec: &CairnClusterSpec) -> Vec<SpecError> {
    let mut errors = Vec::new();
    if !replicas_valid(spec.replicas) {
        errors.push(SpecError::Replicas(spec.replicas));
    }
    if spec.version.trim().is_empty() && spec.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        errors.push(SpecError::NoImage);
    }
    if let (Some(heartbeat), Some(election)) =
        (spec.store.heartbeat_interval, spec.store.election_timeout)
    {
        if election < heartbeat.saturating_mul(5) {
            errors.push(SpecError::Timing {
                heartbeat,
                election,
            });
        }
    }
    if spec.tls.as_ref().is_some_and(|t| t.enabled) {
        errors.push(SpecError::TlsUnsupported);
    }
    errors
}

/// The member-count rule, identical to the CEL rule on `spec.replicas`.
pub fn replicas_valid(replicas: i32) -> bool {
    (MIN_REPLICAS..=MAX_REPLICAS).contains(&replicas) && replicas % 2 == 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::cluster::TlsSpec;

    fn spec(replicas: i32) -> CairnClusterSpec {
        serde_json::from_value(serde_json::json!({ "replicas": replicas })).unwrap()
    }

    #[test]
    fn odd_sizes_one_to_nine_pass() {
        for n in [1, 3, 5, 7, 9] {
            assert!(validate(&spec(n)).is_empty(), "{n} should be valid");
        }
    }

    #[test]
    fn even_zero_negative_and_large_sizes_fail() {
        for n in [-1, 0, 2, 4, 8, 10, 11] {
            assert_eq!(
                validate(&spec(n)),
                vec![SpecError::Replicas(n)],
                "{n} should be refused"
            );
        }
    }

    #[test]
    fn all_problems_are_reported_together() {
        let mut s = spec(4);
        s.version = String::new();
        s.store.heartbeat_interval = Some(100);
        s.store.election_timeout = Some(400);
        s.tls = Some(TlsSpec {
            enabled: true,
            ..Default::default()
        });
        let errs = validate(&s);
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs.contains(&SpecError::Timing {
            heartbeat: 100,
            election: 400
        }));
    }

    #[test]
    fn image_alone_is_enough() {
        let mut s = spec(3);
        s.version = String::new();
        s.image = Some("registry/cairn:abc".into());
        assert!(validate(&s).is_empty());
    }
}
