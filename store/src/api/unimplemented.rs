//! Services whose RPCs are not implemented yet answer `Unimplemented` (tonic's default stubs),
//! which etcd clients and kube-apiserver treat as "feature not available".

use crate::proto::etcdserverpb::{auth_server::Auth, lease_server::Lease, watch_server::Watch};

pub struct WatchService;
impl Watch for WatchService {}

pub struct LeaseService;
impl Lease for LeaseService {}

pub struct AuthService;
impl Auth for AuthService {}
