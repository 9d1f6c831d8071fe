//! Status conditions: set one, keeping `lastTransitionTime` unless its status actually changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// A condition to set, before timestamps and generation are filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Want {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

fn status_str(b: bool) -> String {
    if b { "True" } else { "False" }.to_string()
}

/// Builds the new condition list from the previous one.
pub fn merge(
    previous: &[Condition],
    wants: &[Want],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    wants
        .iter()
        .map(|w| {
            let status = status_str(w.status);
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == w.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: w.type_.to_string(),
                status,
                reason: w.reason.to_string(),
                message: w.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Whether condition `type_` is True in `conditions`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

pub fn reason<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = merge(
            &[],
            &[Want::new(AVAILABLE, false, "Bootstrapping", "")],
            Some(1),
            &t(10),
        );
        assert_eq!(first[0].last_transition_time, t(10));
        let same = merge(
            &first,
            &[Want::new(AVAILABLE, false, "NoLeader", "x")],
            Some(2),
            &t(20),
        );
        assert_eq!(
            same[0].last_transition_time,
            t(10),
            "same status keeps the time"
        );
        assert_eq!(same[0].reason, "NoLeader");
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(
            &same,
            &[Want::new(AVAILABLE, true, "AllMembersHealthy", "")],
            Some(2),
            &t(30),
        );
        assert_eq!(flipped[0].last_transition_time, t(30));
        assert!(is_true(&flipped, AVAILABLE));
    }
}
