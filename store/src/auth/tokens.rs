//! etcd's simple tokens: random strings mapped to a user name in memory, forgotten after
//! `--auth-token-ttl` seconds without use (every use restarts the clock, as etcd's
//! `simpleTokenKeeper` does). Tokens are issued through Raft (the `Authenticate` command), so
//! every member learns them; they are not persisted: after a restart clients authenticate again
//! (clientv3 and etcdctl do so on `invalid auth token`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::password_hash::rand_core::{OsRng, RngCore};

/// etcd's `--auth-token-ttl` default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

struct Entry {
    user: String,
    expires: Instant,
}

pub struct TokenStore {
    ttl: Mutex<Duration>,
    tokens: Mutex<HashMap<String, Entry>>,
}

impl Default for TokenStore {
    fn default() -> Self {
        Self {
            ttl: Mutex::new(DEFAULT_TTL),
            tokens: Mutex::new(HashMap::new()),
        }
    }
}

/// Milliseconds since the Unix epoch (when a token was issued, carried in its Raft command).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A new token: 16 random letters, a dot and a sequence number, shaped as etcd's simple tokens.
pub fn generate(seq: u64) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut raw = [0u8; 16];
    OsRng.fill_bytes(&mut raw);
    let letters: String = raw
        .iter()
        .map(|b| LETTERS[*b as usize % LETTERS.len()] as char)
        .collect();
    format!("{letters}.{seq}")
}

impl TokenStore {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // Entries are inserted or removed in single steps; a panic cannot leave one half-made.
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn ttl(&self) -> Duration {
        *self.ttl.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_ttl(&self, ttl: Duration) {
        *self.ttl.lock().unwrap_or_else(|p| p.into_inner()) = ttl;
    }

    /// Records a token issued at `issued_ms` (wall clock of the issuing member). A token whose
    /// TTL already ran out (an old Authenticate entry re-applied after a restart) is not added.
    pub fn insert(&self, token: &str, user: &str, issued_ms: u64, now: Instant) {
        let ttl = self.ttl();
        let age = Duration::from_millis(now_ms().saturating_sub(issued_ms));
        let Some(left) = ttl.checked_sub(age).filter(|d| !d.is_zero()) else {
            return;
        };
        let mut map = self.map();
        map.retain(|_, e| e.expires > now);
        map.insert(
            token.to_string(),
            Entry {
                user: user.to_string(),
                expires: now + left,
            },
        );
    }

    /// The user a live token belongs to; using a token restarts its TTL.
    pub fn lookup(&self, token: &str, now: Instant) -> Option<String> {
        let ttl = self.ttl();
        let mut map = self.map();
        let entry = map.get_mut(token)?;
        if entry.expires <= now {
            map.remove(token);
            return None;
        }
        entry.expires = now + ttl;
        Some(entry.user.clone())
    }

    /// Forgets every token of `user` (deleted, or its password changed).
    pub fn invalidate_user(&self, user: &str) {
        self.map().retain(|_, e| e.user != user);
    }

    /// Forgets every token (auth disabled).
    pub fn clear(&self) {
        self.map().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_without_use_and_use_refreshes_them() {
        let store = TokenStore::default();
        store.set_ttl(Duration::from_secs(10));
        let t0 = Instant::now();
        store.insert("tok.1", "alice", now_ms(), t0);
        assert_eq!(
            store
                .lookup("tok.1", t0 + Duration::from_secs(9))
                .as_deref(),
            Some("alice")
        );
        // Used at 9s: alive until 19s.
        assert!(store
            .lookup("tok.1", t0 + Duration::from_secs(18))
            .is_some());
        assert!(store
            .lookup("tok.1", t0 + Duration::from_secs(29))
            .is_none());
        assert!(
            store.lookup("tok.1", t0).is_none(),
            "an expired token is forgotten"
        );
    }

    #[test]
    fn stale_issues_are_ignored_and_users_invalidated() {
        let store = TokenStore::default();
        store.set_ttl(Duration::from_secs(1));
        let now = Instant::now();
        store.insert("old.1", "bob", now_ms() - 5_000, now);
        assert!(store.lookup("old.1", now).is_none());
        store.insert("new.2", "bob", now_ms(), now);
        store.invalidate_user("bob");
        assert!(store.lookup("new.2", now).is_none());
        let t = generate(7);
        assert_eq!(t.len(), 18);
        assert!(t.ends_with(".7"));
    }
}
