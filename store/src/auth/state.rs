//! The auth state (enabled flag, revision, users, roles) and its mutations as pure functions,
//! with etcd's rules and errors (`auth/store.go`). The store around it persists and caches it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::perms::{self, Perm, PermKind};
use crate::api::errors::AuthError;

pub const ROOT_USER: &str = "root";
pub const ROOT_ROLE: &str = "root";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// argon2 PHC string; `None` for users made with `--no-password` (certificate CN only).
    pub password: Option<String>,
    pub roles: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Sorted by key, as etcd keeps (and lists) them.
    pub perms: Vec<Perm>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    pub enabled: bool,
    /// Bumped by every change to users, roles or permissions (etcd's auth revision).
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
}

impl Default for AuthState {
    fn default() -> Self {
        // etcd's auth store starts at revision 1.
        Self {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }
}

/// An auth mutation as it travels through Raft. Passwords are already hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthCommand {
    Enable,
    Disable,
    UserAdd {
        name: String,
        password: Option<String>,
    },
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        password: Option<String>,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        name: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGrantPermission {
        name: String,
        perm: Perm,
    },
    RoleRevokePermission {
        role: String,
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
    /// A token the proposing member issued after checking the password; every member learns it.
    Authenticate {
        name: String,
        token: String,
        issued_ms: u64,
    },
}

/// What a mutation did besides changing the state, for the in-memory token store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Forget this user's tokens (deleted, or a new password).
    InvalidateUser(String),
    /// Forget all tokens (auth disabled).
    ClearTokens,
    /// Remember a token for a user.
    Token {
        name: String,
        token: String,
        issued_ms: u64,
    },
}

impl AuthState {
    fn user_mut(&mut self, name: &str) -> Result<&mut User, AuthError> {
        self.users.get_mut(name).ok_or(AuthError::UserNotFound)
    }

    fn role_mut(&mut self, name: &str) -> Result<&mut Role, AuthError> {
        self.roles.get_mut(name).ok_or(AuthError::RoleNotFound)
    }

    /// Applies one command; on error nothing changed.
    pub fn apply(&mut self, cmd: &AuthCommand) -> Result<Effect, AuthError> {
        use AuthCommand::*;
        let effect = match cmd {
            Enable => {
                if self.enabled {
                    return Ok(Effect::None);
                }
                let root = self
                    .users
                    .get(ROOT_USER)
                    .ok_or(AuthError::RootUserNotExist)?;
                if !root.roles.contains(ROOT_ROLE) {
                    return Err(AuthError::RootRoleNotExist);
                }
                // etcd enables without a new revision.
                self.enabled = true;
                return Ok(Effect::None);
            }
            Disable => {
                self.enabled = false;
                Effect::ClearTokens
            }
            UserAdd { name, password } => {
                if name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if self.users.contains_key(name) {
                    return Err(AuthError::UserAlreadyExist);
                }
                self.users.insert(
                    name.clone(),
                    User {
                        password: password.clone(),
                        roles: BTreeSet::new(),
                    },
                );
                Effect::None
            }
            UserDelete { name } => {
                if self.enabled && name == ROOT_USER {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.users.remove(name).ok_or(AuthError::UserNotFound)?;
                Effect::InvalidateUser(name.clone())
            }
            UserChangePassword { name, password } => {
                self.user_mut(name)?.password = password.clone();
                Effect::InvalidateUser(name.clone())
            }
            UserGrantRole { user, role } => {
                if role != ROOT_ROLE && !self.roles.contains_key(role) {
                    // The root role needs no definition; any other must exist.
                    self.user_mut(user)?;
                    return Err(AuthError::RoleNotFound);
                }
                // Granting a role the user already has is accepted and changes nothing.
                if !self.user_mut(user)?.roles.insert(role.clone()) {
                    return Ok(Effect::None);
                }
                Effect::None
            }
            UserRevokeRole { name, role } => {
                if self.enabled && name == ROOT_USER && role == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                if !self.user_mut(name)?.roles.remove(role) {
                    return Err(AuthError::RoleNotGranted);
                }
                Effect::None
            }
            RoleAdd { name } => {
                if name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(name) {
                    return Err(AuthError::RoleAlreadyExist);
                }
                self.roles.insert(name.clone(), Role::default());
                Effect::None
            }
            RoleDelete { name } => {
                if self.enabled && name == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.roles.remove(name).ok_or(AuthError::RoleNotFound)?;
                for user in self.users.values_mut() {
                    user.roles.remove(name);
                }
                Effect::None
            }
            RoleGrantPermission { name, perm } => {
                let role = self.role_mut(name)?;
                match role
                    .perms
                    .iter_mut()
                    .find(|p| p.key == perm.key && p.range_end == perm.range_end)
                {
                    // The same key range granted again replaces the type, as etcd does.
                    Some(existing) => existing.kind = perm.kind,
                    None => {
                        role.perms.push(perm.clone());
                        role.perms.sort_by(|a, b| a.key.cmp(&b.key));
                    }
                }
                Effect::None
            }
            RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                let role = self.role_mut(role)?;
                let before = role.perms.len();
                role.perms
                    .retain(|p| !(p.key == *key && p.range_end == *range_end));
                if role.perms.len() == before {
                    return Err(AuthError::PermissionNotGranted);
                }
                Effect::None
            }
            Authenticate {
                name,
                token,
                issued_ms,
            } => {
                if !self.enabled {
                    return Err(AuthError::AuthNotEnabled);
                }
                if !self.users.contains_key(name) {
                    return Err(AuthError::AuthFailed);
                }
                return Ok(Effect::Token {
                    name: name.clone(),
                    token: token.clone(),
                    issued_ms: *issued_ms,
                });
            }
        };
        self.revision += 1;
        Ok(effect)
    }

    /// Whether `user` holds the root role.
    pub fn is_root(&self, user: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.contains(ROOT_ROLE))
    }

    /// Every key permission `user` has through its roles.
    pub fn user_perms(&self, user: &User) -> Vec<Perm> {
        user.roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.perms.iter().cloned())
            .collect()
    }

    /// etcd's `isOpPermitted`: may `user` (None: no credentials) access the range as `want`?
    pub fn check_range(
        &self,
        user: Option<&str>,
        key: &[u8],
        range_end: &[u8],
        want: PermKind,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let name = user.filter(|u| !u.is_empty()).ok_or(AuthError::UserEmpty)?;
        let u = self.users.get(name).ok_or(AuthError::PermissionDenied)?;
        if u.roles.contains(ROOT_ROLE) {
            return Ok(());
        }
        if perms::permits(&self.user_perms(u), key, range_end, want) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// etcd's `IsAdminPermitted`: the caller must hold the root role.
    pub fn check_admin(&self, user: Option<&str>) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let name = user.filter(|u| !u.is_empty()).ok_or(AuthError::UserEmpty)?;
        let u = self.users.get(name).ok_or(AuthError::UserNotFound)?;
        if u.roles.contains(ROOT_ROLE) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AuthCommand::*;

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn enable_needs_root_with_root_role_and_keeps_the_revision() {
        let mut st = AuthState::default();
        assert_eq!(st.apply(&Enable), Err(AuthError::RootUserNotExist));
        st.apply(&UserAdd {
            name: s("root"),
            password: None,
        })
        .unwrap();
        assert_eq!(st.apply(&Enable), Err(AuthError::RootRoleNotExist));
        st.apply(&UserGrantRole {
            user: s("root"),
            role: s("root"),
        })
        .unwrap();
        let rev = st.revision;
        st.apply(&Enable).unwrap();
        assert!(st.enabled);
        assert_eq!(st.revision, rev);
        assert_eq!(
            st.apply(&UserDelete { name: s("root") }),
            Err(AuthError::InvalidAuthMgmt)
        );
        assert_eq!(
            st.apply(&RoleDelete { name: s("root") }),
            Err(AuthError::InvalidAuthMgmt)
        );
        assert_eq!(st.check_admin(None), Err(AuthError::UserEmpty));
        assert_eq!(st.check_admin(Some("root")), Ok(()));
    }

    #[test]
    fn roles_permissions_and_checks() {
        let mut st = AuthState::default();
        st.apply(&RoleAdd { name: s("r") }).unwrap();
        assert_eq!(
            st.apply(&RoleAdd { name: s("r") }),
            Err(AuthError::RoleAlreadyExist)
        );
        let perm = |kind, key: &str| Perm {
            kind,
            key: key.as_bytes().to_vec(),
            range_end: Vec::new(),
        };
        st.apply(&RoleGrantPermission {
            name: s("r"),
            perm: perm(PermKind::ReadWrite, "x"),
        })
        .unwrap();
        st.apply(&RoleGrantPermission {
            name: s("r"),
            perm: perm(PermKind::Read, "x"),
        })
        .unwrap();
        assert_eq!(st.roles["r"].perms, vec![perm(PermKind::Read, "x")]);
        st.apply(&UserAdd {
            name: s("u"),
            password: None,
        })
        .unwrap();
        assert_eq!(
            st.apply(&UserGrantRole {
                user: s("u"),
                role: s("nope")
            }),
            Err(AuthError::RoleNotFound)
        );
        st.apply(&UserGrantRole {
            user: s("u"),
            role: s("r"),
        })
        .unwrap();
        // Disabled: everything is allowed.
        assert_eq!(st.check_range(None, b"y", b"", PermKind::Write), Ok(()));
        st.enabled = true;
        assert_eq!(st.check_range(Some("u"), b"x", b"", PermKind::Read), Ok(()));
        assert_eq!(
            st.check_range(Some("u"), b"x", b"", PermKind::Write),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            st.check_range(None, b"x", b"", PermKind::Read),
            Err(AuthError::UserEmpty)
        );
        assert_eq!(st.check_admin(Some("u")), Err(AuthError::PermissionDenied));
        assert_eq!(
            st.apply(&RoleRevokePermission {
                role: s("r"),
                key: b"y".to_vec(),
                range_end: Vec::new()
            }),
            Err(AuthError::PermissionNotGranted)
        );
        st.apply(&RoleDelete { name: s("r") }).unwrap();
        assert!(st.users["u"].roles.is_empty());
        assert_eq!(
            st.apply(&UserRevokeRole {
                name: s("u"),
                role: s("r")
            }),
            Err(AuthError::RoleNotGranted)
        );
    }
}
