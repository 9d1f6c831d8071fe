//! Consensus: openraft wiring for cairn.
//!
//! - [`log_store`]: the replicated log and vote, fsynced before openraft is told they are durable.
//! - [`state_machine`]: applies committed commands to MVCC, builds and installs snapshots.
//! - [`network`]: the peer client (gRPC on the peer URL); `server::peer` is its server side.
//! - [`codec`]: how commands and Raft messages are encoded.

pub mod codec;
pub mod log_store;
pub mod network;
pub mod state_machine;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::mvcc::MvccError;
use crate::proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, TxnRequest, TxnResponse,
};

pub type NodeId = u64;

/// A member as Raft knows it: enough to reach it and to show it in MemberList.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub peer_urls: Vec<String>,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.peer_urls.join(","))
    }
}

openraft::declare_raft_types!(
    /// cairn's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = Member,
        // Raft snapshots are files, written, sent and installed as streams
        // (`state_machine/snapshot_file.rs`).
        SnapshotData = tokio::fs::File,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type Entry = openraft::Entry<TypeConfig>;

/// A replicated command: everything that changes the state machine goes through the log as one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    Put(#[serde(with = "codec::pb")] PutRequest),
    DeleteRange(#[serde(with = "codec::pb")] DeleteRangeRequest),
    Txn(#[serde(with = "codec::pb")] TxnRequest),
    Compact {
        revision: i64,
    },
    /// Grants a lease with the id the proposing member chose.
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    /// Revokes a lease, deleting its keys in one revision (by a client, or by the leader at expiry).
    LeaseRevoke {
        id: i64,
    },
    /// A member announces its name and client URLs after it starts (as etcd's publish).
    PublishMember {
        id: NodeId,
        name: String,
        client_urls: Vec<String>,
    },
    /// A client write authorized at `auth_revision`: applied only while the auth state is still
    /// at that revision (etcd's `revision of auth store is old`; clients re-authenticate).
    Authorized {
        auth_revision: u64,
        command: Box<Command>,
    },
    /// Changes users, roles, permissions or the enabled flag, or issues a token (`auth`).
    Auth(crate::auth::AuthCommand),
    /// Raises or clears an alarm (etcd's AlarmRequest: action, member id, alarm type).
    Alarm {
        action: i32,
        member_id: NodeId,
        alarm: i32,
    },
    /// Writes the leader batched into one entry (`server::batch`), applied one after another,
    /// each with its own revision and result.
    Batch(Vec<Command>),
}

/// What applying a [`Command`] returned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CommandResult {
    Put(#[serde(with = "codec::pb")] PutResponse),
    DeleteRange(#[serde(with = "codec::pb")] DeleteRangeResponse),
    Txn(#[serde(with = "codec::pb")] TxnResponse),
    /// The store's revision after a command with no payload of its own (Compact, LeaseRevoke,
    /// PublishMember).
    Revision(i64),
    LeaseGranted {
        id: i64,
        ttl: i64,
        revision: i64,
    },
    /// The alarms an Alarm command activated or deactivated, as (member id, alarm type).
    Alarms(Vec<(NodeId, i32)>),
    Failed(MvccError),
    /// One result per command of a [`Command::Batch`], in order.
    Batch(Vec<CommandResult>),
    /// An auth command etcd refuses (user exists, role not granted, ...).
    AuthFailed(crate::api::errors::AuthError),
}

/// Name and client URLs a member published.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAttributes {
    pub name: String,
    pub client_urls: Vec<String>,
}
