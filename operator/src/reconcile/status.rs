//! Status: one server-side apply of the whole status subresource.

use kube::api::{Patch, PatchParams};
use kube::Api;

use super::Error;
use crate::build::FIELD_MANAGER;
use crate::crd::{CairnCluster, CairnClusterStatus};

pub async fn patch(
    api: &Api<CairnCluster>,
    name: &str,
    status: &CairnClusterStatus,
) -> Result<(), Error> {
    let body = serde_json::json!({
        "apiVersion": "cairn.dev/v1alpha1",
        "kind": "CairnCluster",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::kube("patch status of", "CairnCluster", name))?;
    Ok(())
}
