//! Apply: server-side apply of the objects the builders produce, as one field manager.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Error;
use crate::build::{pdb, services, statefulset, ClusterRef, FIELD_MANAGER};
use crate::crd::CairnClusterSpec;

async fn ssa<K>(client: &kube::Client, ns: &str, kind: &'static str, obj: &K) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    // force: the operator owns these fields; a stray kubectl edit must not block reconciling.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(obj))
        .await
        .map_err(Error::kube("apply", kind, &name))?;
    Ok(())
}

pub async fn apply_all(
    client: &kube::Client,
    cluster: &ClusterRef,
    spec: &CairnClusterSpec,
    members: i32,
) -> Result<(), Error> {
    let ns = cluster.namespace.as_str();
    ssa::<Service>(client, ns, "Service", &services::peer(cluster)).await?;
    ssa::<Service>(client, ns, "Service", &services::client(cluster)).await?;
    ssa::<StatefulSet>(
        client,
        ns,
        "StatefulSet",
        &statefulset::statefulset(cluster, spec, members),
    )
    .await?;
    ssa::<PodDisruptionBudget>(
        client,
        ns,
        "PodDisruptionBudget",
        &pdb::pdb(cluster, members),
    )
    .await?;
    Ok(())
}
