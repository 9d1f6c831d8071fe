//! The reconcile pipeline: observe -> decide (pure) -> apply -> status.
//!
//! `reconcile` is what the kube Controller calls. It wraps the finalizer helper; `apply_cluster`
//! runs the pipeline; the I/O steps live in `observe`, `apply` and `status`, the decisions in
//! `decide`, so the tests here drive the whole thing against a mock API server.

pub mod apply;
pub mod conditions;
pub mod decide;
pub mod error;
pub mod observe;
pub mod status;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::finalizer::{finalizer, Event};
use kube::{Api, Resource, ResourceExt};
use tracing::{info, warn};

pub use error::Error;

use crate::build::ClusterRef;
use crate::crd::{validate, CairnCluster};
use crate::members::StoreView;
use crate::metrics::Metrics;
use decide::PlannedEvent;

/// Kept on every CairnCluster until its cleanup ran; later issues hang final backups here.
pub const FINALIZER: &str = "cairn.dev/cleanup";

/// How soon to look again when nothing changes: the store's health is not a Kubernetes object,
/// so no watch event tells us a leader moved or a member fell ill.
const REQUEUE_SETTLED: Duration = Duration::from_secs(60);
const REQUEUE_CONVERGING: Duration = Duration::from_secs(10);

/// Everything a reconcile needs besides the object.
pub struct Context {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub store: Arc<dyn StoreView>,
    pub metrics: Arc<Metrics>,
}

pub async fn reconcile(cluster: Arc<CairnCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let _timer = ctx.metrics.reconcile_started(&namespace);
    let api: Api<CairnCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, cluster, |event| async {
        match event {
            Event::Apply(c) => apply_cluster(&c, &ctx).await,
            Event::Cleanup(c) => cleanup(&c, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Failed reconciles are retried soon; the controller's own backoff spaces repeated failures.
pub fn error_policy(cluster: Arc<CairnCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(cluster = %cluster.name_any(), namespace = ?cluster.namespace(), %error, "reconcile failed");
    ctx.metrics.reconcile_failed(error.metric_label());
    Action::requeue(Duration::from_secs(15))
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

async fn apply_cluster(cluster: &CairnCluster, ctx: &Context) -> Result<Action, Error> {
    let cref = ClusterRef::new(cluster)?;
    let api: Api<CairnCluster> = Api::namespaced(ctx.client.clone(), &cref.namespace);

    // An invalid spec is reported, never acted on and never a crash; the next edit triggers us.
    let errors = validate::validate(&cluster.spec);
    if !errors.is_empty() {
        let (status, events) = decide::invalid(cluster, &errors, &now());
        warn!(cluster = %cref.name, namespace = %cref.namespace, errors = ?errors, "invalid spec");
        status::patch(&api, &cref.name, &status).await?;
        publish(ctx, cluster, &events).await;
        return Ok(Action::await_change());
    }

    let observed = observe::observe(&ctx.client, ctx.store.as_ref(), &cref).await?;
    let plan = decide::decide(cluster, &observed, &now());
    if plan.apply_objects {
        apply::apply_all(&ctx.client, &cref, &cluster.spec, plan.members).await?;
    }
    status::patch(&api, &cref.name, &plan.status).await?;
    publish(ctx, cluster, &plan.events).await;
    info!(cluster = %cref.name, namespace = %cref.namespace, phase = ?plan.status.phase,
          members = plan.members, "reconciled");
    let settled = conditions::is_true(&plan.status.conditions, conditions::AVAILABLE)
        && conditions::reason(&plan.status.conditions, conditions::PROGRESSING)
            != Some("RollingOut");
    Ok(Action::requeue(if settled {
        REQUEUE_SETTLED
    } else {
        REQUEUE_CONVERGING
    }))
}

/// Owned objects go with the CairnCluster through their owner references; volumes follow
/// `spec.storage.onDelete` through the StatefulSet's PVC retention policy.
async fn cleanup(cluster: &CairnCluster, ctx: &Context) -> Result<Action, Error> {
    let note = format!(
        "deleting cluster; volumes are {} (spec.storage.onDelete)",
        match cluster.spec.storage.on_delete {
            crate::crd::VolumePolicy::Retain => "retained",
            crate::crd::VolumePolicy::Delete => "deleted",
        }
    );
    publish(
        ctx,
        cluster,
        &[PlannedEvent {
            warning: false,
            reason: "Deleting",
            note,
        }],
    )
    .await;
    Ok(Action::await_change())
}

/// Events are best effort: failing to record one must not fail the reconcile.
async fn publish(ctx: &Context, cluster: &CairnCluster, events: &[PlannedEvent]) {
    let reference = cluster.object_ref(&());
    for e in events {
        let event = KubeEvent {
            type_: if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason.to_string(),
            note: Some(e.note.clone()),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            warn!(%error, reason = e.reason, "could not publish event");
        }
    }
}
