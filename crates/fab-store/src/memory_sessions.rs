//! [`MemorySessionStore`]: sessions in process memory, for a single instance that may lose its
//! sessions on restart (everyone logs in again). Keyed by the token's hash like every store.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fab_core::StoreError;
use fab_core::session::{SessionIdHash, SessionPolicy, SessionRecord, SessionStore};
use fab_core::user::UserId;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Sessions in memory. Clones share the same sessions.
#[derive(Clone, Debug, Default)]
pub struct MemorySessionStore {
    sessions: Arc<RwLock<HashMap<SessionIdHash, SessionRecord>>>,
}

impl MemorySessionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    // A panic while holding the lock cannot leave a half-written record (every change is one
    // map operation), so a poisoned lock is still safe to use.
    fn read(&self) -> RwLockReadGuard<'_, HashMap<SessionIdHash, SessionRecord>> {
        self.sessions.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<SessionIdHash, SessionRecord>> {
        self.sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn create(&self, record: &SessionRecord) -> Result<(), StoreError> {
        let mut sessions = self.write();
        if sessions.contains_key(&record.id_hash) {
            return Err(StoreError::Conflict("the session already exists".into()));
        }
        sessions.insert(record.id_hash.clone(), record.clone());
        Ok(())
    }

    async fn find(&self, id_hash: &SessionIdHash) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.read().get(id_hash).cloned())
    }

    async fn touch(&self, id_hash: &SessionIdHash, at: DateTime<Utc>) -> Result<(), StoreError> {
        if let Some(record) = self.write().get_mut(id_hash) {
            record.last_seen_at = at;
        }
        Ok(())
    }

    async fn delete(&self, id_hash: &SessionIdHash) -> Result<bool, StoreError> {
        Ok(self.write().remove(id_hash).is_some())
    }

    async fn delete_for_user(&self, user_id: UserId) -> Result<u64, StoreError> {
        let mut sessions = self.write();
        let before = sessions.len();
        sessions.retain(|_, record| record.user_id != user_id);
        Ok(count(before - sessions.len()))
    }

    async fn delete_all(&self) -> Result<u64, StoreError> {
        let mut sessions = self.write();
        let before = sessions.len();
        sessions.clear();
        Ok(count(before))
    }

    async fn list_for_user(&self, user_id: UserId) -> Result<Vec<SessionRecord>, StoreError> {
        let mut found: Vec<SessionRecord> = self
            .read()
            .values()
            .filter(|record| record.user_id == user_id)
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.id_hash.cmp(&b.id_hash))
        });
        Ok(found)
    }

    async fn purge_expired(
        &self,
        now: DateTime<Utc>,
        policy: &SessionPolicy,
    ) -> Result<u64, StoreError> {
        let mut sessions = self.write();
        let before = sessions.len();
        sessions.retain(|_, record| {
            record.expires_at > now && record.last_seen_at + policy.idle_timeout > now
        });
        Ok(count(before - sessions.len()))
    }
}
