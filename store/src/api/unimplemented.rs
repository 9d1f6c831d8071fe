//! Services whose RPCs are not implemented yet answer `Unimplemented` (tonic's default stubs),
//! which etcd clients and kube-apiserver treat as "feature not available".

use crate::proto::etcdserverpb::auth_server::Auth;

pub struct AuthService;
impl Auth for AuthService {}
