//! A store in memory: for tests and `memory://`. Everything is lost on restart.

use super::{SentRecord, SessionKey, StatusRecord, Store, StoreError};
use crate::engine::Session;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<SessionKey, Session>,
    seen: HashMap<String, i64>,
    statuses: Vec<StatusRecord>,
    sent: HashMap<String, SentRecord>,
}

impl MemoryStore {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave these maps half-written.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    fn load_session(&self, key: &SessionKey) -> Result<Option<Session>, StoreError> {
        Ok(self.lock().sessions.get(key).cloned())
    }

    fn save_session(&self, key: &SessionKey, session: &Session) -> Result<(), StoreError> {
        self.lock().sessions.insert(key.clone(), session.clone());
        Ok(())
    }

    fn first_delivery(&self, message_id: &str, at: i64) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if inner.seen.contains_key(message_id) {
            return Ok(false);
        }
        inner.seen.insert(message_id.to_string(), at);
        Ok(true)
    }

    fn record_status(&self, status: &StatusRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let same =
            |s: &StatusRecord| s.message_id == status.message_id && s.status == status.status;
        if !inner.statuses.iter().any(same) {
            inner.statuses.push(status.clone());
        }
        Ok(())
    }

    fn record_sent(&self, sent: &SentRecord) -> Result<(), StoreError> {
        self.lock()
            .sent
            .insert(sent.message_id.clone(), sent.clone());
        Ok(())
    }

    fn sent(&self, message_id: &str) -> Result<Option<SentRecord>, StoreError> {
        Ok(self.lock().sent.get(message_id).cloned())
    }

    fn statuses(&self, message_id: &str) -> Result<Vec<StatusRecord>, StoreError> {
        let mut found: Vec<StatusRecord> = self
            .lock()
            .statuses
            .iter()
            .filter(|s| s.message_id == message_id)
            .cloned()
            .collect();
        found.sort_by_key(|s| s.at);
        Ok(found)
    }

    fn ping(&self) -> Result<(), StoreError> {
        // Nothing can fail but the lock, which `lock` recovers from.
        drop(self.lock());
        Ok(())
    }

    fn count_sessions(&self, since: i64) -> Result<usize, StoreError> {
        Ok(self
            .lock()
            .sessions
            .values()
            .filter(|s| s.updated_at >= since)
            .count())
    }

    fn delete_user(&self, user: &str) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let before = inner.sessions.len();
        inner.sessions.retain(|k, _| k.user != user);
        Ok(before - inner.sessions.len())
    }

    fn purge(&self, sessions_before: i64, seen_before: i64) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let before = inner.sessions.len() + inner.seen.len();
        inner
            .sessions
            .retain(|_, s| s.updated_at >= sessions_before);
        inner.seen.retain(|_, at| *at >= seen_before);
        inner.sent.retain(|_, s| s.at >= seen_before);
        Ok(before - inner.sessions.len() - inner.seen.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests as behaviour;

    #[test]
    fn behaves_like_a_store() {
        behaviour::sessions_round_trip(&MemoryStore::default());
        behaviour::first_delivery_is_exactly_once(&MemoryStore::default());
        behaviour::statuses_are_kept_per_message(&MemoryStore::default());
        behaviour::sent_messages_are_found_by_id(&MemoryStore::default());
        behaviour::purge_removes_only_old_data(&MemoryStore::default());
    }
}
