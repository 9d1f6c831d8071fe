//! Leader election on a coordination.k8s.io Lease, so two operator replicas can run and only one
//! reconciles. kube-runtime 5 ships no helper, so this is the client-go algorithm in small:
//! take the Lease when it is free or expired, renew it well inside its duration, and rely on the
//! API server's optimistic concurrency (resourceVersion on replace) to settle races.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("{action} lease {namespace}/{name}: {source}")]
    Kube {
        action: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("lost the leader lease {0} (another replica holds it or it could not be renewed)")]
    Lost(String),
}

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    pub duration: Duration,
    /// How often to try to acquire or renew; well below `duration`.
    pub retry: Duration,
}

/// What to do with the Lease as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nobody holds it (or the holder let it expire): take it.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds a live lease: wait.
    Wait { holder: String },
}

/// The pure decision, from the Lease spec and the clock.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Step {
    let Some(spec) = spec else {
        return Step::Acquire;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder.is_empty() {
        return Step::Acquire;
    }
    if holder == identity {
        return Step::Renew;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    match &spec.renew_time {
        Some(MicroTime(renewed)) if *renewed + duration > now => Step::Wait { holder },
        _ => Step::Acquire,
    }
}

fn lease_spec(previous: Option<&LeaseSpec>, cfg: &LeaseConfig, now: Timestamp) -> LeaseSpec {
    let ours = previous.and_then(|s| s.holder_identity.as_deref()) == Some(cfg.identity.as_str());
    let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.duration.as_secs().try_into().unwrap_or(15)),
        acquire_time: if ours {
            previous.and_then(|s| s.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
        ..Default::default()
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
}

impl LeaderElector {
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
        }
    }

    fn err(&self, action: &'static str) -> impl FnOnce(kube::Error) -> LeaderError + '_ {
        move |source| LeaderError::Kube {
            action,
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            source,
        }
    }

    /// One round: returns whether we hold the lease afterwards. A lost race is `Ok(false)`.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaderError> {
        let now = Timestamp::now();
        let current = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .map_err(self.err("get"))?;
        let step = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.cfg.identity,
            now,
        );
        let (Step::Acquire | Step::Renew) = step else {
            return Ok(false);
        };
        let spec = lease_spec(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.cfg,
            now,
        );
        let result = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            Some(mut lease) => {
                // replace() carries the resourceVersion we read: a concurrent writer makes it 409.
                lease.spec = Some(spec);
                self.api
                    .replace(&self.cfg.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(self.err("write")(e)),
        }
    }

    /// Blocks until this replica holds the lease.
    pub async fn acquire(&self) -> Result<(), LeaderError> {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.cfg.name, identity = %self.cfg.identity, "became leader");
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election round failed"),
            }
            tokio::time::sleep(self.cfg.retry).await;
        }
    }

    /// Renews until a renewal fails for longer than the lease lasts; then returns `Lost`, and the
    /// caller stops reconciling (the process exits and restarts as a follower).
    pub async fn keep(&self) -> LeaderError {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.cfg.retry).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => return LeaderError::Lost(self.cfg.name.clone()),
                Err(e) => warn!(error = %e, "lease renewal failed"),
            }
            // Stop before the lease can expire in others' eyes: two leaders must never overlap.
            if last_ok.elapsed() + self.cfg.retry >= self.cfg.duration {
                return LeaderError::Lost(self.cfg.name.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn held_by(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            ..Default::default()
        }
    }

    #[test]
    fn free_or_missing_lease_is_acquired() {
        assert_eq!(decide(None, "me", at(100)), Step::Acquire);
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "me", at(100)),
            Step::Acquire
        );
    }

    #[test]
    fn own_lease_is_renewed() {
        assert_eq!(decide(Some(&held_by("me", 90)), "me", at(100)), Step::Renew);
    }

    #[test]
    fn live_foreign_lease_waits_and_expired_one_is_taken() {
        assert_eq!(
            decide(Some(&held_by("other", 90)), "me", at(100)),
            Step::Wait {
                holder: "other".into()
            }
        );
        assert_eq!(
            decide(Some(&held_by("other", 80)), "me", at(100)),
            Step::Acquire
        );
    }

    #[test]
    fn taking_over_counts_a_transition_renewing_does_not() {
        let cfg = LeaseConfig {
            namespace: "ops".into(),
            name: "cairn-operator".into(),
            identity: "me".into(),
            duration: Duration::from_secs(15),
            retry: Duration::from_secs(2),
        };
        let mut prev = held_by("other", 0);
        prev.lease_transitions = Some(4);
        let taken = lease_spec(Some(&prev), &cfg, at(100));
        assert_eq!(taken.lease_transitions, Some(5));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(100))));
        let renewed = lease_spec(Some(&taken), &cfg, at(110));
        assert_eq!(renewed.lease_transitions, Some(5));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(100))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(110))));
    }
}
