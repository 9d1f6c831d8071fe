//! Observe: read the StatefulSet and ask the store who its members are.

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;

use super::decide::{Observed, ObservedStatefulSet};
use super::Error;
use crate::build::{names, ClusterRef};
use crate::members::StoreView;

fn summarize(sts: &StatefulSet) -> ObservedStatefulSet {
    let spec_replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = sts.status.clone().unwrap_or_default();
    ObservedStatefulSet {
        spec_replicas,
        replicas: status.replicas,
        ready_replicas: status.ready_replicas.unwrap_or(0),
        updated_replicas: status.updated_replicas.unwrap_or(0),
        generation_observed: status.observed_generation >= sts.metadata.generation,
    }
}

pub async fn observe(
    client: &kube::Client,
    store: &dyn StoreView,
    cluster: &ClusterRef,
) -> Result<Observed, Error> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), &cluster.namespace);
    let name = names::statefulset(&cluster.name);
    let statefulset = api
        .get_opt(&name)
        .await
        .map_err(Error::kube("get", "StatefulSet", &name))?
        .map(|s| summarize(&s));
    // Only ask the store once a member pod exists; before that the answer is known.
    let store = match &statefulset {
        Some(s) if s.replicas > 0 => Some(
            store
                .observe(&names::client_url(&cluster.name, &cluster.namespace))
                .await
                .map_err(|e| e.to_string()),
        ),
        _ => None,
    };
    Ok(Observed { statefulset, store })
}
