//! What the store itself says about its members, through the store crate's client.
//!
//! The reconciler depends on the `StoreView` trait only, so scenario tests feed it a fake and a
//! real `cairn` process can stand behind `GrpcStoreView` in an integration test.

use std::time::Duration;

use cairn_store::client::{Client, ConnectOptions};
use cairn_store::proto::etcdserverpb::{MemberListRequest, StatusRequest};
use futures::future::BoxFuture;
use futures::FutureExt;

/// One member as the member list and its own status request describe it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedMember {
    pub id: u64,
    /// Empty for a member that was added but has not started yet.
    pub name: String,
    pub is_learner: bool,
    pub client_urls: Vec<String>,
    /// The member's own answer to a status request; `None` if it did not answer.
    pub health: Option<MemberHealth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberHealth {
    /// The leader this member follows (0: it knows none).
    pub leader: u64,
    /// Alarms and errors the member reports (e.g. NOSPACE).
    pub errors: Vec<String>,
}

impl MemberHealth {
    pub fn healthy(&self) -> bool {
        self.leader != 0 && self.errors.is_empty()
    }
}

/// The store's view of the cluster at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedStore {
    pub cluster_id: u64,
    /// The leader id reported by the member that answered the member list (0: none).
    pub leader: u64,
    pub members: Vec<ObservedMember>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("connecting to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: cairn_store::client::ClientError,
    },
    #[error("{call} on {endpoint}: {status}")]
    Rpc {
        call: &'static str,
        endpoint: String,
        status: String,
    },
}

/// Reads membership and health from a running cluster.
pub trait StoreView: Send + Sync {
    /// `endpoint` is the client Service URL; per-member status goes to each member's client URL.
    fn observe<'a>(&'a self, endpoint: &'a str)
        -> BoxFuture<'a, Result<ObservedStore, StoreError>>;
}

/// The real view, over gRPC with the store crate's client.
#[derive(Debug, Clone)]
pub struct GrpcStoreView {
    pub options: ConnectOptions,
}

impl Default for GrpcStoreView {
    fn default() -> Self {
        // Short deadlines: a reconcile must not hang on an unreachable member.
        Self {
            options: ConnectOptions {
                dial_timeout: Duration::from_secs(2),
                request_timeout: Some(Duration::from_secs(3)),
                tls: None,
                credentials: None,
            },
        }
    }
}

impl GrpcStoreView {
    async fn member_health(&self, urls: &[String]) -> Option<MemberHealth> {
        let client = Client::connect(urls, &self.options).await.ok()?;
        let status = client
            .maintenance()
            .status(StatusRequest {})
            .await
            .ok()?
            .into_inner();
        Some(MemberHealth {
            leader: status.leader,
            errors: status.errors,
        })
    }

    async fn observe_inner(&self, endpoint: &str) -> Result<ObservedStore, StoreError> {
        let endpoints = [endpoint.to_string()];
        let client = Client::connect(&endpoints, &self.options)
            .await
            .map_err(|source| StoreError::Connect {
                endpoint: endpoint.into(),
                source,
            })?;
        let rpc = |call: &'static str| {
            move |status: tonic::Status| StoreError::Rpc {
                call,
                endpoint: endpoint.to_string(),
                status: status.to_string(),
            }
        };
        let list = client
            .cluster()
            .member_list(MemberListRequest { linearizable: true })
            .await
            .map_err(rpc("MemberList"))?
            .into_inner();
        let status = client
            .maintenance()
            .status(StatusRequest {})
            .await
            .map_err(rpc("Status"))?;
        let status = status.into_inner();
        let cluster_id = list
            .header
            .as_ref()
            .map(|h| h.cluster_id)
            .unwrap_or_default();

        let healths = futures::future::join_all(
            list.members
                .iter()
                .map(|m| self.member_health(&m.client_ur_ls)),
        )
        .await;
        let members = list
            .members
            .into_iter()
            .zip(healths)
            .map(|(m, health)| ObservedMember {
                id: m.id,
                name: m.name,
                is_learner: m.is_learner,
                client_urls: m.client_ur_ls,
                health,
            })
            .collect();
        Ok(ObservedStore {
            cluster_id,
            leader: status.leader,
            members,
        })
    }
}

impl StoreView for GrpcStoreView {
    fn observe<'a>(
        &'a self,
        endpoint: &'a str,
    ) -> BoxFuture<'a, Result<ObservedStore, StoreError>> {
        self.observe_inner(endpoint).boxed()
    }
}
