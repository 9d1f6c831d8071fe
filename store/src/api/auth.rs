//! `etcdserverpb.Auth`: users, roles, permissions, enable/disable, Authenticate; and the helpers
//! every other service uses to learn who is calling and to check what they may do.
//!
//! Authorization is decided on the member that receives the request, against its replica of the
//! auth state, before anything is proposed (etcd checks again at apply; a permission revoked
//! while a request is in flight can therefore still let that one request through here).

use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::errors::{ApiError, AuthError};
use crate::auth::{password, tokens, AuthCommand, Perm, PermKind};
use crate::proto::authpb;
use crate::proto::etcdserverpb::auth_server::Auth;
use crate::proto::etcdserverpb::*;
use crate::raft::{Command, CommandResult};
use crate::server::node::Node;

/// The metadata keys a token arrives under: clientv3/etcdctl send `token`; the JSON gateway
/// forwards the HTTP `Authorization` header as `authorization`.
const TOKEN_KEYS: [&str; 2] = ["token", "authorization"];

fn token(md: &MetadataMap) -> Option<&str> {
    TOKEN_KEYS
        .iter()
        .find_map(|k| md.get(*k).and_then(|v| v.to_str().ok()))
        .filter(|t| !t.is_empty())
}

/// The common name of the client's verified TLS certificate, used as the user name when the
/// request carries no token (etcd's `--client-cert-auth`).
///
/// `https` listeners ask for client certificates only with `--client-cert-auth`, and the
/// handshake verifies them against `--trusted-ca-file`, so a chain here is always a verified one.
pub fn cert_common_name<T>(request: &Request<T>) -> Option<String> {
    let certs = request.peer_certs()?;
    certs
        .first()
        .and_then(|c| crate::auth::cert::common_name(c.as_ref()))
}

/// The credentials a request carries (read before any await: requests need not be `Sync`).
struct Credentials {
    token: Option<String>,
    cn: Option<String>,
}

fn credentials<T>(request: &Request<T>) -> Credentials {
    Credentials {
        token: token(request.metadata()).map(str::to_string),
        cn: cert_common_name(request),
    }
}

async fn resolve(node: &Node, creds: Credentials) -> Result<Option<String>, ApiError> {
    let auth = node.sm.auth();
    match auth.caller(creds.token.as_deref(), creds.cn.as_deref()) {
        // A token issued through another member may be committed but not applied here yet:
        // catch up with the leader once before calling it invalid.
        Err(AuthError::InvalidAuthToken) => {
            node.read_index().await?;
            Ok(auth.caller(creds.token.as_deref(), creds.cn.as_deref())?)
        }
        other => Ok(other?),
    }
}

/// Who is calling: `None` when auth is disabled or no credentials came with the request.
pub fn caller<'a, T>(
    node: &'a Node,
    request: &Request<T>,
) -> impl std::future::Future<Output = Result<Option<String>, ApiError>> + Send + 'a {
    let creds = credentials(request);
    resolve(node, creds)
}

/// Fails unless the caller holds the root role (when auth is enabled).
pub fn require_admin<'a, T>(
    node: &'a Node,
    request: &Request<T>,
) -> impl std::future::Future<Output = Result<Option<String>, ApiError>> + Send + 'a {
    let creds = credentials(request);
    async move {
        let user = resolve(node, creds).await?;
        node.sm.auth().check_admin(user.as_deref())?;
        Ok(user)
    }
}

/// Fails unless `user` may access `[key, range_end)` as `want`.
pub fn check(
    node: &Node,
    user: Option<&str>,
    key: &[u8],
    range_end: &[u8],
    want: PermKind,
) -> Result<(), ApiError> {
    Ok(node.sm.auth().check_range(user, key, range_end, want)?)
}

/// Lock and Election run clientv3's recipes server-side: the caller needs what the recipe's
/// client would need, reading and writing keys under the name's prefix.
pub fn check_recipe(node: &Node, user: Option<String>, name: &[u8]) -> Result<(), ApiError> {
    let prefix = super::concurrency::name_prefix(name);
    let end = crate::client::prefix_range_end(&prefix);
    check(node, user.as_deref(), &prefix, &end, PermKind::Read)?;
    check(node, user.as_deref(), &prefix, &end, PermKind::Write)
}

/// A key the recipe's client would write (an unlock, a proclaim, a resign).
pub fn check_recipe_key(node: &Node, user: Option<String>, key: &[u8]) -> Result<(), ApiError> {
    check(node, user.as_deref(), key, &[], PermKind::Write)
}

/// Wraps a write checked at `checked` (from `AuthStore::checked_revision`, read before the
/// checks) so apply refuses it if the auth state moved on in between.
pub fn guard(checked: Option<u64>, cmd: Command) -> Command {
    match checked {
        Some(auth_revision) => Command::Authorized {
            auth_revision,
            command: Box::new(cmd),
        },
        None => cmd,
    }
}

pub struct AuthService {
    node: Arc<Node>,
}

impl AuthService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(self.node.header(self.node.mvcc().current_revision()))
    }

    async fn propose(&self, cmd: AuthCommand) -> Result<Option<ResponseHeader>, Status> {
        match self.node.propose(Command::Auth(cmd)).await? {
            CommandResult::Revision(rev) => Ok(Some(self.node.header(rev))),
            CommandResult::AuthFailed(e) => Err(e.into()),
            CommandResult::Failed(e) => Err(ApiError::from(e).into()),
            _ => Err(Status::internal(
                "etcdserver: unexpected apply result for auth",
            )),
        }
    }

    /// Argon2 is deliberately slow: hash off the async workers.
    async fn hash(&self, password: String) -> Result<String, Status> {
        tokio::task::spawn_blocking(move || password::hash(&password))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(e.to_string()))
    }

    /// The stored hash for a UserAdd/UserChangePassword: a client-computed `hashedPassword`
    /// cannot be used (etcd's are bcrypt; cairn stores argon2), so it is refused.
    async fn password_for(
        &self,
        password: String,
        hashed: &str,
        no_password: bool,
    ) -> Result<Option<String>, Status> {
        if no_password {
            return Ok(None);
        }
        if !hashed.is_empty() {
            return Err(Status::invalid_argument(
                "etcdserver: pre-hashed passwords are not supported by cairn",
            ));
        }
        self.hash(password).await.map(Some)
    }
}

fn perm_to_pb(p: &Perm) -> authpb::Permission {
    authpb::Permission {
        perm_type: p.kind as i32,
        key: p.key.clone(),
        range_end: p.range_end.clone(),
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        require_admin(&self.node, &request).await?;
        let header = self.propose(AuthCommand::Enable).await?;
        Ok(Response::new(AuthEnableResponse { header }))
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        require_admin(&self.node, &request).await?;
        let header = self.propose(AuthCommand::Disable).await?;
        Ok(Response::new(AuthDisableResponse { header }))
    }

    async fn auth_status(
        &self,
        _request: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        self.node.read_index().await?;
        let (enabled, auth_revision) = {
            let st = self.node.sm.auth().read();
            (st.enabled, st.revision)
        };
        Ok(Response::new(AuthStatusResponse {
            header: self.header(),
            enabled,
            auth_revision,
        }))
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let req = request.into_inner();
        // See users added or changed just before (the password check reads local state).
        self.node.read_index().await?;
        let stored = {
            let st = self.node.sm.auth().read();
            if !st.enabled {
                return Err(AuthError::AuthNotEnabled.into());
            }
            st.users.get(&req.name).and_then(|u| u.password.clone())
        };
        let Some(stored) = stored else {
            return Err(AuthError::AuthFailed.into());
        };
        let supplied = req.password;
        let ok = tokio::task::spawn_blocking(move || password::verify(&stored, &supplied))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        if !ok {
            return Err(AuthError::AuthFailed.into());
        }
        let token = self.node.sm.auth().new_token();
        let header = self
            .propose(AuthCommand::Authenticate {
                name: req.name,
                token: token.clone(),
                issued_ms: tokens::now_ms(),
            })
            .await?;
        Ok(Response::new(AuthenticateResponse { header, token }))
    }

    async fn user_add(
        &self,
        request: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        require_admin(&self.node, &request).await?;
        let req = request.into_inner();
        if req.name.is_empty() {
            return Err(AuthError::UserEmpty.into());
        }
        let no_password = req.options.is_some_and(|o| o.no_password);
        let password = self
            .password_for(req.password, &req.hashed_password, no_password)
            .await?;
        let header = self
            .propose(AuthCommand::UserAdd {
                name: req.name,
                password,
            })
            .await?;
        Ok(Response::new(AuthUserAddResponse { header }))
    }

    async fn user_get(
        &self,
        request: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let user = caller(&self.node, &request).await?;
        let req = request.into_inner();
        // A user may read its own entry without being root.
        if user.as_deref() != Some(req.name.as_str()) {
            self.node.sm.auth().check_admin(user.as_deref())?;
        }
        self.node.read_index().await?;
        let st = self.node.sm.auth().read();
        let u = st.users.get(&req.name).ok_or(AuthError::UserNotFound)?;
        Ok(Response::new(AuthUserGetResponse {
            header: self.header(),
            roles: u.roles.iter().cloned().collect(),
        }))
    }

    async fn user_list(
        &self,
        request: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        require_admin(&self.node, &request).await?;
        self.node.read_index().await?;
        let users = self.node.sm.auth().read().users.keys().cloned().collect();
        Ok(Response::new(AuthUserListResponse {
            header: self.header(),
            users,
        }))
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        require_admin(&self.node, &request).await?;
        let name = request.into_inner().name;
        let header = self.propose(AuthCommand::UserDelete { name }).await?;
        Ok(Response::new(AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        require_admin(&self.node, &request).await?;
        let req = request.into_inner();
        let password = self
            .password_for(req.password, &req.hashed_password, false)
            .await?;
        let header = self
            .propose(AuthCommand::UserChangePassword {
                name: req.name,
                password,
            })
            .await?;
        Ok(Response::new(AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        require_admin(&self.node, &request).await?;
        let req = request.into_inner();
        let header = self
            .propose(AuthCommand::UserGrantRole {
                user: req.user,
                role: req.role,
            })
            .await?;
        Ok(Response::new(AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        require_admin(&self.node, &request).await?;
        let req = request.into_inner();
        let header = self
            .propose(AuthCommand::UserRevokeRole {
                name: req.name,
                role: req.role,
            })
            .await?;
        Ok(Response::new(AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(
        &self,
        request: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        require_admin(&self.node, &request).await?;
        let name = request.into_inner().name;
        if name.is_empty() {
            return Err(AuthError::RoleEmpty.into());
        }
        let header = self.propose(AuthCommand::RoleAdd { name }).await?;
        Ok(Response::new(AuthRoleAddResponse { header }))
    }

    async fn role_get(
        &self,
        request: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let user = caller(&self.node, &request).await?;
        let role = request.into_inner().role;
        self.node.read_index().await?;
        let st = self.node.sm.auth().read();
        // A user may read the roles it holds without being root.
        let holds = user
            .as_deref()
            .and_then(|u| st.users.get(u))
            .is_some_and(|u| u.roles.contains(&role));
        if !holds {
            st.check_admin(user.as_deref()).map_err(ApiError::from)?;
        }
        let r = st.roles.get(&role).ok_or(AuthError::RoleNotFound)?;
        Ok(Response::new(AuthRoleGetResponse {
            header: self.header(),
            perm: r.perms.iter().map(perm_to_pb).collect(),
        }))
    }

    async fn role_list(
        &self,
        request: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        require_admin(&self.node, &request).await?;
        self.node.read_index().await?;
        let roles = self.node.sm.auth().read().roles.keys().cloned().collect();
        Ok(Response::new(AuthRoleListResponse {
            header: self.header(),
            roles,
        }))
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        require_admin(&self.node, &request).await?;
        let name = request.into_inner().role;
        let header = self.propose(AuthCommand::RoleDelete { name }).await?;
        Ok(Response::new(AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        require_admin(&self.node, &request).await?;
        let req = request.into_inner();
        let p = req.perm.ok_or(AuthError::PermissionNotGiven)?;
        let kind = PermKind::from_i32(p.perm_type).ok_or(AuthError::PermissionNotGiven)?;
        let header = self
            .propose(AuthCommand::RoleGrantPermission {
                name: req.name,
                perm: Perm {
                    kind,
                    key: p.key,
                    range_end: p.range_end,
                },
            })
            .await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse { header }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        require_admin(&self.node, &request).await?;
        let req = request.into_inner();
        let header = self
            .propose(AuthCommand::RoleRevokePermission {
                role: req.role,
                key: req.key,
                range_end: req.range_end,
            })
            .await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse { header }))
    }
}
