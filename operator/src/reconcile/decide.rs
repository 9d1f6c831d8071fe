//! The pure heart of the reconciler: (cluster, what was observed, now) -> plan.
//!
//! No I/O: every branch (bootstrap, paused, scale after bootstrap, unhealthy members, an
//! unreachable store, an invalid spec) is a plain function call in the tests below.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{self, Want, AVAILABLE, DEGRADED, PROGRESSING};
use crate::build::selector_string;
use crate::crd::validate::SpecError;
use crate::crd::{CairnCluster, CairnClusterStatus, MemberStatus, Phase};
use crate::members::ObservedStore;

/// The StatefulSet as observed (only what decisions need).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedStatefulSet {
    pub spec_replicas: i32,
    pub replicas: i32,
    pub ready_replicas: i32,
    pub updated_replicas: i32,
    /// The controller has seen the latest StatefulSet spec.
    pub generation_observed: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// `None`: the StatefulSet does not exist yet.
    pub statefulset: Option<ObservedStatefulSet>,
    /// `None`: not asked (no pods yet); `Some(Err)`: asked and it did not answer.
    pub store: Option<Result<ObservedStore, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

impl PlannedEvent {
    fn normal(reason: &'static str, note: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason,
            note: note.into(),
        }
    }
    fn warning(reason: &'static str, note: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason,
            note: note.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Apply the Services, StatefulSet and PDB (false while paused).
    pub apply_objects: bool,
    /// Member count the StatefulSet and `--initial-cluster` are built for.
    pub members: i32,
    pub status: CairnClusterStatus,
    pub events: Vec<PlannedEvent>,
}

fn hex(id: u64) -> String {
    format!("{id:x}")
}

/// How many members to run. Before bootstrap the spec decides; afterwards the StatefulSet keeps
/// its size, because adding or removing a member needs MemberAdd/MemberRemove first (the scaling
/// issue), and a pod started with `--initial-cluster-state new` would never join the running cluster.
fn target_members(cluster: &CairnCluster, observed: &Observed) -> (i32, bool) {
    let bootstrapped = cluster
        .status
        .as_ref()
        .is_some_and(|s| s.cluster_id.is_some());
    match &observed.statefulset {
        Some(sts) if bootstrapped && sts.spec_replicas != cluster.spec.replicas => {
            (sts.spec_replicas, true)
        }
        _ => (cluster.spec.replicas, false),
    }
}

fn member_statuses(store: &ObservedStore) -> Vec<MemberStatus> {
    let mut members: Vec<MemberStatus> = store
        .members
        .iter()
        .map(|m| MemberStatus {
            name: m.name.clone(),
            id: hex(m.id),
            is_learner: m.is_learner,
            is_leader: m.id == store.leader && store.leader != 0,
            healthy: m.health.as_ref().is_some_and(|h| h.healthy()),
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    members
}

/// Decides what to apply and what status to report for a valid spec.
pub fn decide(cluster: &CairnCluster, observed: &Observed, now: &Time) -> Plan {
    let previous = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let paused = cluster.spec.paused;
    let (members, scale_blocked) = target_members(cluster, observed);

    let mut status = CairnClusterStatus {
        observed_generation: generation,
        selector: Some(selector_string(&name)),
        // Keep what we knew when the store does not answer this time.
        cluster_id: previous.cluster_id.clone(),
        ..Default::default()
    };
    if let Some(sts) = &observed.statefulset {
        status.replicas = sts.replicas;
        status.ready_replicas = sts.ready_replicas;
    }

    let store = match &observed.store {
        Some(Ok(store)) => Some(store),
        _ => None,
    };
    if let Some(store) = store {
        status.members = member_statuses(store);
        status.leader = status
            .members
            .iter()
            .find(|m| m.is_leader)
            .map(|m| m.name.clone());
        if store.cluster_id != 0 {
            status.cluster_id = Some(hex(store.cluster_id));
        }
    }

    // Available: every member healthy, a leader, and the expected number of voters.
    let voters = status.members.iter().filter(|m| !m.is_learner).count() as i32;
    let unhealthy: Vec<&str> = status
        .members
        .iter()
        .filter(|m| !m.healthy)
        .map(|m| m.name.as_str())
        .collect();
    let available = match (&observed.statefulset, &observed.store) {
        (None, _) => Want::new(
            AVAILABLE,
            false,
            "Creating",
            "the StatefulSet does not exist yet",
        ),
        (Some(_), None) => Want::new(
            AVAILABLE,
            false,
            "Bootstrapping",
            "no member pod exists yet",
        ),
        (Some(_), Some(Err(e))) => Want::new(AVAILABLE, false, "StoreUnreachable", e.clone()),
        (Some(_), Some(Ok(_))) if status.leader.is_none() => Want::new(
            AVAILABLE,
            false,
            "NoLeader",
            "the cluster has no leader (quorum lost or election in progress)",
        ),
        (Some(_), Some(Ok(_))) if !unhealthy.is_empty() => Want::new(
            AVAILABLE,
            false,
            "MembersUnhealthy",
            format!("unhealthy members: {}", unhealthy.join(", ")),
        ),
        (Some(_), Some(Ok(_))) if voters != members => Want::new(
            AVAILABLE,
            false,
            "MemberCountMismatch",
            format!("{voters} voting members, {members} expected"),
        ),
        _ => Want::new(
            AVAILABLE,
            true,
            "AllMembersHealthy",
            format!(
                "{voters} healthy members, leader {}",
                status.leader.clone().unwrap_or_default()
            ),
        ),
    };
    let is_available = available.status;

    let rolling = observed.statefulset.as_ref().is_some_and(|s| {
        !s.generation_observed
            || s.updated_replicas < s.spec_replicas
            || s.ready_replicas < s.spec_replicas
    });
    let progressing = if paused {
        Want::new(
            PROGRESSING,
            false,
            "Paused",
            "spec.paused is set: objects are left as they are",
        )
    } else if scale_blocked {
        Want::new(
            PROGRESSING,
            false,
            "ScaleNotSupported",
            format!(
                "spec.replicas is {} but the bootstrapped cluster has {members} members; membership changes arrive with a later operator version",
                cluster.spec.replicas
            ),
        )
    } else if observed.statefulset.is_none() {
        Want::new(
            PROGRESSING,
            true,
            "Creating",
            format!("creating {members} members"),
        )
    } else if rolling {
        Want::new(
            PROGRESSING,
            true,
            "RollingOut",
            "member pods are being created or updated",
        )
    } else {
        Want::new(
            PROGRESSING,
            false,
            "Settled",
            "the StatefulSet matches the spec",
        )
    };

    let bootstrapped = status.cluster_id.is_some();
    let degraded = if bootstrapped && !is_available && available.reason != "Creating" {
        Want::new(DEGRADED, true, available.reason, available.message.clone())
    } else {
        Want::new(DEGRADED, false, "AsExpected", "")
    };
    let is_degraded = degraded.status;

    status.phase = if paused {
        Phase::Paused
    } else if is_available {
        Phase::Running
    } else if is_degraded {
        Phase::Degraded
    } else {
        Phase::Pending
    };

    let wants = [available, progressing, degraded];
    status.conditions = conditions::merge(&previous.conditions, &wants, generation, now);
    let events = events(cluster, &previous, &status, observed, members);
    Plan {
        apply_objects: !paused,
        members,
        status,
        events,
    }
}

/// One event per significant step, found by comparing the previous status with the new one so a
/// steady cluster produces none.
fn events(
    cluster: &CairnCluster,
    previous: &CairnClusterStatus,
    status: &CairnClusterStatus,
    observed: &Observed,
    members: i32,
) -> Vec<PlannedEvent> {
    let mut out = Vec::new();
    let paused = cluster.spec.paused;
    if observed.statefulset.is_none() && !paused {
        out.push(PlannedEvent::normal(
            "Creating",
            format!("creating Services, StatefulSet and PodDisruptionBudget for {members} members"),
        ));
    } else if previous.observed_generation.is_some()
        && previous.observed_generation != status.observed_generation
        && !paused
    {
        out.push(PlannedEvent::normal(
            "Updating",
            format!(
                "applying generation {}",
                status.observed_generation.unwrap_or_default()
            ),
        ));
    }
    if paused && previous.phase != Phase::Paused {
        out.push(PlannedEvent::normal(
            "Paused",
            "reconciliation paused by spec.paused",
        ));
    }
    if !paused && previous.phase == Phase::Paused {
        out.push(PlannedEvent::normal("Resumed", "reconciliation resumed"));
    }
    let was = conditions::is_true(&previous.conditions, AVAILABLE);
    let now = conditions::is_true(&status.conditions, AVAILABLE);
    if now && !was {
        out.push(PlannedEvent::normal(
            "Available",
            format!("all {} members healthy", status.members.len()),
        ));
    }
    if was && !now {
        let reason = conditions::reason(&status.conditions, AVAILABLE).unwrap_or("Unknown");
        out.push(PlannedEvent::warning(
            "Unavailable",
            format!("cluster became unavailable: {reason}"),
        ));
    }
    if let (Some(old), Some(new)) = (&previous.leader, &status.leader) {
        if old != new {
            out.push(PlannedEvent::normal(
                "LeaderChanged",
                format!("leader moved from {old} to {new}"),
            ));
        }
    }
    let blocked = conditions::reason(&status.conditions, PROGRESSING) == Some("ScaleNotSupported");
    let was_blocked =
        conditions::reason(&previous.conditions, PROGRESSING) == Some("ScaleNotSupported");
    if blocked && !was_blocked {
        out.push(PlannedEvent::warning(
            "ScaleNotSupported",
            format!("keeping {members} members; changing the size of a running cluster is not supported yet"),
        ));
    }
    out
}

/// Status and events for a spec the operator refuses to act on.
pub fn invalid(
    cluster: &CairnCluster,
    errors: &[SpecError],
    now: &Time,
) -> (CairnClusterStatus, Vec<PlannedEvent>) {
    let previous = cluster.status.clone().unwrap_or_default();
    let message = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let wants = [
        Want::new(
            AVAILABLE,
            conditions::is_true(&previous.conditions, AVAILABLE),
            "InvalidSpec",
            message.clone(),
        ),
        Want::new(PROGRESSING, false, "InvalidSpec", message.clone()),
        Want::new(DEGRADED, true, "InvalidSpec", message.clone()),
    ];
    let status = CairnClusterStatus {
        observed_generation: cluster.metadata.generation,
        phase: Phase::Invalid,
        selector: Some(selector_string(&name)),
        conditions: conditions::merge(
            &previous.conditions,
            &wants,
            cluster.metadata.generation,
            now,
        ),
        // What is running keeps running; keep reporting what we last knew of it.
        ..previous.clone()
    };
    let events = if previous.phase != Phase::Invalid
        || previous.observed_generation != cluster.metadata.generation
    {
        vec![PlannedEvent::warning("InvalidSpec", message)]
    } else {
        Vec::new()
    };
    (status, events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::testutil::cluster;
    use crate::members::{MemberHealth, ObservedMember};
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    fn now() -> Time {
        Time(Timestamp::from_second(1_700_000_000).unwrap())
    }

    fn sts(n: i32, ready: i32) -> ObservedStatefulSet {
        ObservedStatefulSet {
            spec_replicas: n,
            replicas: n,
            ready_replicas: ready,
            updated_replicas: n,
            generation_observed: true,
        }
    }

    fn store(n: u64, leader: u64, healthy: bool) -> ObservedStore {
        ObservedStore {
            cluster_id: 0xabc,
            leader,
            members: (0..n)
                .map(|i| ObservedMember {
                    id: 100 + i,
                    name: format!("demo-{i}"),
                    is_learner: false,
                    client_urls: vec![],
                    health: healthy.then(|| MemberHealth {
                        leader,
                        errors: vec![],
                    }),
                })
                .collect(),
        }
    }

    fn cond<'a>(s: &'a CairnClusterStatus, t: &str) -> (&'a str, &'a str) {
        let c = s.conditions.iter().find(|c| c.type_ == t).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn first_reconcile_creates_everything() {
        let c = cluster("demo", json!({}));
        let plan = decide(&c, &Observed::default(), &now());
        assert!(plan.apply_objects);
        assert_eq!(plan.members, 3);
        assert_eq!(plan.status.phase, Phase::Pending);
        assert_eq!(cond(&plan.status, AVAILABLE), ("False", "Creating"));
        assert_eq!(cond(&plan.status, PROGRESSING), ("True", "Creating"));
        assert_eq!(cond(&plan.status, DEGRADED), ("False", "AsExpected"));
        assert_eq!(plan.events[0].reason, "Creating");
        assert_eq!(
            plan.status.selector.as_deref(),
            Some("app.kubernetes.io/instance=demo,app.kubernetes.io/name=cairn")
        );
    }

    #[test]
    fn available_needs_every_member_healthy_and_a_leader() {
        let c = cluster("demo", json!({}));
        let obs = Observed {
            statefulset: Some(sts(3, 3)),
            store: Some(Ok(store(3, 101, true))),
        };
        let plan = decide(&c, &obs, &now());
        assert_eq!(plan.status.phase, Phase::Running);
        assert_eq!(cond(&plan.status, AVAILABLE), ("True", "AllMembersHealthy"));
        assert_eq!(plan.status.leader.as_deref(), Some("demo-1"));
        assert_eq!(plan.status.cluster_id.as_deref(), Some("abc"));
        assert_eq!(
            plan.status.members.iter().filter(|m| m.is_leader).count(),
            1
        );
        assert_eq!(plan.status.members[1].id, "65");
        assert!(plan.events.iter().any(|e| e.reason == "Available"));

        let no_leader = Observed {
            statefulset: Some(sts(3, 3)),
            store: Some(Ok(store(3, 0, true))),
        };
        let plan = decide(&c, &no_leader, &now());
        assert_eq!(cond(&plan.status, AVAILABLE), ("False", "NoLeader"));
        assert_eq!(
            plan.status.phase,
            Phase::Degraded,
            "bootstrapped (cluster id known) and unavailable"
        );

        let sick = Observed {
            statefulset: Some(sts(3, 2)),
            store: Some(Ok(store(3, 101, false))),
        };
        let plan = decide(&c, &sick, &now());
        assert_eq!(cond(&plan.status, AVAILABLE), ("False", "MembersUnhealthy"));
        assert_eq!(cond(&plan.status, DEGRADED), ("True", "MembersUnhealthy"));
    }

    #[test]
    fn unreachable_store_keeps_the_known_cluster_id_and_degrades() {
        let mut c = cluster("demo", json!({}));
        c.status = Some(CairnClusterStatus {
            cluster_id: Some("abc".into()),
            ..Default::default()
        });
        let obs = Observed {
            statefulset: Some(sts(3, 0)),
            store: Some(Err("connection refused".into())),
        };
        let plan = decide(&c, &obs, &now());
        assert_eq!(plan.status.cluster_id.as_deref(), Some("abc"));
        assert_eq!(cond(&plan.status, AVAILABLE), ("False", "StoreUnreachable"));
        assert_eq!(cond(&plan.status, DEGRADED), ("True", "StoreUnreachable"));
    }

    #[test]
    fn paused_reports_status_but_applies_nothing() {
        let c = cluster("demo", json!({"paused": true}));
        let obs = Observed {
            statefulset: Some(sts(3, 3)),
            store: Some(Ok(store(3, 100, true))),
        };
        let plan = decide(&c, &obs, &now());
        assert!(!plan.apply_objects);
        assert_eq!(plan.status.phase, Phase::Paused);
        assert_eq!(cond(&plan.status, PROGRESSING), ("False", "Paused"));
        assert!(plan.events.iter().any(|e| e.reason == "Paused"));
    }

    #[test]
    fn scale_before_bootstrap_follows_the_spec() {
        let c = cluster("demo", json!({"replicas": 5}));
        let obs = Observed {
            statefulset: Some(sts(3, 0)),
            store: None,
        };
        assert_eq!(decide(&c, &obs, &now()).members, 5);
    }

    #[test]
    fn scale_after_bootstrap_is_held_and_explained() {
        let mut c = cluster("demo", json!({"replicas": 5}));
        c.status = Some(CairnClusterStatus {
            cluster_id: Some("abc".into()),
            ..Default::default()
        });
        let obs = Observed {
            statefulset: Some(sts(3, 3)),
            store: Some(Ok(store(3, 100, true))),
        };
        let plan = decide(&c, &obs, &now());
        assert_eq!(
            plan.members, 3,
            "a running cluster is not resized without membership changes"
        );
        assert_eq!(
            cond(&plan.status, PROGRESSING),
            ("False", "ScaleNotSupported")
        );
        assert!(plan
            .events
            .iter()
            .any(|e| e.reason == "ScaleNotSupported" && e.warning));
    }

    #[test]
    fn steady_state_emits_no_events() {
        let c0 = cluster("demo", json!({}));
        let obs = Observed {
            statefulset: Some(sts(3, 3)),
            store: Some(Ok(store(3, 100, true))),
        };
        let first = decide(&c0, &obs, &now());
        let mut c1 = c0.clone();
        c1.status = Some(first.status);
        let second = decide(&c1, &obs, &now());
        assert!(second.events.is_empty(), "{:?}", second.events);
    }

    #[test]
    fn leader_change_is_an_event() {
        let mut c = cluster("demo", json!({}));
        let obs = Observed {
            statefulset: Some(sts(3, 3)),
            store: Some(Ok(store(3, 100, true))),
        };
        c.status = Some(decide(&c, &obs, &now()).status);
        let moved = Observed {
            statefulset: Some(sts(3, 3)),
            store: Some(Ok(store(3, 102, true))),
        };
        let plan = decide(&c, &moved, &now());
        assert!(plan
            .events
            .iter()
            .any(|e| e.reason == "LeaderChanged" && e.note.contains("demo-0 to demo-2")));
    }

    #[test]
    fn invalid_spec_is_reported_once_per_generation() {
        let mut c = cluster("demo", json!({"replicas": 4}));
        let errs = crate::crd::validate::validate(&c.spec);
        let (status, events) = invalid(&c, &errs, &now());
        assert_eq!(status.phase, Phase::Invalid);
        assert_eq!(cond(&status, DEGRADED), ("True", "InvalidSpec"));
        assert!(events[0].warning && events[0].note.contains("replicas is 4"));
        c.status = Some(status);
        let (_, again) = invalid(&c, &errs, &now());
        assert!(again.is_empty());
    }
}
