//! Authentication and authorization, as etcd's `auth` package.
//!
//! - [`state`]: users, roles, permissions, the enabled flag and the auth revision; mutations as
//!   pure functions with etcd's rules and errors.
//! - [`perms`]: permission decisions over key intervals (single keys, prefixes, ranges).
//! - [`tokens`]: simple tokens with a TTL refreshed on use (in memory on every member).
//! - [`password`]: argon2id hashing, done before proposing so the log never holds a password.
//! - [`cert`]: the user name a client certificate carries (its CN), for `--client-cert-auth`.
//!
//! The state is replicated: every mutation is a Raft command ([`crate::raft::Command::Auth`])
//! applied here, and the whole state is one record under `Mauth` in the state machine's keyspace,
//! so it survives restarts and travels in Raft snapshots and backups like the rest.

pub mod cert;
pub mod password;
pub mod perms;
pub mod state;
pub mod tokens;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Instant;

pub use perms::{Perm, PermKind};
pub use state::{AuthCommand, AuthState, Effect};

use crate::api::errors::AuthError;
use crate::raft::codec;
use crate::storage::{Backend, StorageError};

/// Where the auth state lives in the state machine's keyspace (kept by `snapshot restore`).
pub const STATE_KEY: &[u8] = b"Mauth";

/// The replicated auth state (persisted, cached in memory) and this member's token table.
pub struct AuthStore {
    backend: Arc<dyn Backend>,
    state: RwLock<AuthState>,
    pub tokens: tokens::TokenStore,
    token_seq: AtomicU64,
}

impl AuthStore {
    pub fn open(backend: Arc<dyn Backend>) -> Result<Self, StorageError> {
        let store = Self {
            backend,
            state: RwLock::new(AuthState::default()),
            tokens: tokens::TokenStore::default(),
            token_seq: AtomicU64::new(0),
        };
        store.reload()?;
        Ok(store)
    }

    /// Re-reads the persisted state (at start-up, after a Raft snapshot replaced the state machine).
    pub fn reload(&self) -> Result<(), StorageError> {
        let state = match self.backend.get(STATE_KEY)? {
            None => AuthState::default(),
            Some(raw) => codec::decode("auth state", &raw).map_err(|e| StorageError::Corrupt {
                what: "auth state",
                detail: e.to_string(),
            })?,
        };
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = state;
        Ok(())
    }

    /// A consistent view of the state (held briefly: apply waits for readers).
    pub fn read(&self) -> RwLockReadGuard<'_, AuthState> {
        // The state is replaced whole after a successful apply; a panic cannot leave it half-done.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_enabled(&self) -> bool {
        self.read().enabled
    }

    /// Applies a committed command. The outer error is storage failure (the entry must not count
    /// as applied); the inner one is etcd's answer to the request.
    pub fn apply(&self, cmd: &AuthCommand) -> Result<Result<(), AuthError>, StorageError> {
        let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
        let mut next = guard.clone();
        let effect = match next.apply(cmd) {
            Ok(effect) => effect,
            Err(e) => return Ok(Err(e)),
        };
        if next != *guard {
            let raw = codec::encode("auth state", &next).map_err(|e| StorageError::Corrupt {
                what: "auth state",
                detail: e.to_string(),
            })?;
            self.backend.insert(STATE_KEY, &raw)?;
            *guard = next;
        }
        drop(guard);
        match effect {
            Effect::None => {}
            Effect::InvalidateUser(name) => self.tokens.invalidate_user(&name),
            Effect::ClearTokens => self.tokens.clear(),
            Effect::Token {
                name,
                token,
                issued_ms,
            } => self.tokens.insert(&token, &name, issued_ms, Instant::now()),
        }
        Ok(Ok(()))
    }

    /// A fresh token for the member issuing one.
    pub fn new_token(&self) -> String {
        tokens::generate(self.token_seq.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Who is calling, from a token or (with `--client-cert-auth`) a verified certificate's
    /// common name: `Ok(None)` when auth is off or no credentials came with the request.
    /// A token that is unknown or expired is etcd's `invalid auth token`.
    pub fn caller(
        &self,
        token: Option<&str>,
        cert_cn: Option<&str>,
    ) -> Result<Option<String>, AuthError> {
        if !self.is_enabled() {
            return Ok(None);
        }
        if let Some(token) = token {
            return self
                .tokens
                .lookup(token, Instant::now())
                .map(Some)
                .ok_or(AuthError::InvalidAuthToken);
        }
        Ok(cert_cn.filter(|cn| !cn.is_empty()).map(str::to_string))
    }

    /// The auth revision to stamp on a write checked now, or `None` when auth is off (then the
    /// write is not wrapped). Read before checking, so a change racing the check is caught.
    pub fn checked_revision(&self) -> Option<u64> {
        let st = self.read();
        st.enabled.then_some(st.revision)
    }

    /// Whether a write authorized at `checked` must be refused now: auth is on and users, roles
    /// or permissions changed since (etcd compares the same revisions at apply).
    pub fn is_stale(&self, checked: u64) -> bool {
        let st = self.read();
        st.enabled && st.revision != checked
    }

    pub fn check_range(
        &self,
        user: Option<&str>,
        key: &[u8],
        range_end: &[u8],
        want: PermKind,
    ) -> Result<(), AuthError> {
        self.read().check_range(user, key, range_end, want)
    }

    pub fn check_admin(&self, user: Option<&str>) -> Result<(), AuthError> {
        self.read().check_admin(user)
    }

    /// Every access of a Txn (compares, both branches, nested Txns) must be permitted.
    pub fn check_txn(
        &self,
        user: Option<&str>,
        txn: &crate::proto::etcdserverpb::TxnRequest,
    ) -> Result<(), AuthError> {
        let state = self.read();
        perms::txn_accesses(txn)
            .into_iter()
            .try_for_each(|(key, end, want)| state.check_range(user, key, end, want))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path) -> AuthStore {
        let backend: Arc<dyn Backend> = Arc::new(crate::storage::open(dir).unwrap());
        AuthStore::open(backend).unwrap()
    }

    fn enable(s: &AuthStore) {
        for cmd in [
            AuthCommand::UserAdd {
                name: "root".into(),
                password: None,
            },
            AuthCommand::UserGrantRole {
                user: "root".into(),
                role: "root".into(),
            },
            AuthCommand::Enable,
        ] {
            s.apply(&cmd).unwrap().unwrap();
        }
    }

    #[test]
    fn writes_checked_before_an_auth_change_are_stale() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        assert_eq!(
            s.checked_revision(),
            None,
            "auth off: writes are not stamped"
        );
        enable(&s);
        let checked = s.checked_revision().unwrap();
        assert!(!s.is_stale(checked));
        s.apply(&AuthCommand::RoleAdd { name: "r".into() })
            .unwrap()
            .unwrap();
        assert!(s.is_stale(checked));
        // A refused command changes nothing, so it does not make anything stale.
        let now = s.checked_revision().unwrap();
        assert!(s
            .apply(&AuthCommand::RoleAdd { name: "r".into() })
            .unwrap()
            .is_err());
        assert!(!s.is_stale(now));
    }

    #[test]
    fn state_persists_and_tokens_follow_apply() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = store(dir.path());
            enable(&s);
            s.apply(&AuthCommand::Authenticate {
                name: "root".into(),
                token: "t.1".into(),
                issued_ms: tokens::now_ms(),
            })
            .unwrap()
            .unwrap();
            assert_eq!(s.caller(Some("t.1"), None), Ok(Some("root".into())));
            assert_eq!(
                s.caller(Some("t.2"), None),
                Err(AuthError::InvalidAuthToken)
            );
            assert_eq!(s.caller(None, Some("cn-user")), Ok(Some("cn-user".into())));
            s.apply(&AuthCommand::Disable).unwrap().unwrap();
            assert_eq!(s.caller(Some("t.1"), None), Ok(None), "auth off: nobody");
            s.apply(&AuthCommand::Enable).unwrap().unwrap();
            assert_eq!(
                s.caller(Some("t.1"), None),
                Err(AuthError::InvalidAuthToken),
                "disabling forgot the tokens"
            );
        }
        let reopened = store(dir.path());
        assert!(reopened.is_enabled());
        assert!(reopened.read().is_root("root"));
    }
}
