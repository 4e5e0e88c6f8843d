//! The sessions the writer committed last, kept in memory: a user's next turn (nearly
//! always soon after the last, in a conversation) takes its session from here instead
//! of reading the file, which was a read transaction, its file locks and a B-tree
//! lookup per message (~6% of the server's CPU under load).
//!
//! Only the writer fills it, and only with what it committed, in commit order: a
//! write stages its session while its transaction runs, and the writer applies what
//! the batch staged once the commit succeeded, before answering anyone, or drops it
//! when the batch failed or the write was undone. So the cache never holds anything
//! the file does not, and a caller that awaited a write and then reads sees the write.
//! Reads never fill it (a read may race a commit and would put back an older
//! session). This holds because the file lock makes this process the file's only
//! writer (see the store's module docs).

use crate::store::SessionKey;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};

/// Sessions kept: more than the users a busy instance has in conversation at once,
/// so a user's next message finds theirs; ~250 KB of encoded sessions at most.
const KEPT: NonZeroUsize = NonZeroUsize::new(512).expect("512 is not zero");

/// A change a write made, applied when its transaction committed.
enum Staged {
    /// The user's session is now this (encoded, the current `SESSION_VERSION`).
    Put(SessionKey, Arc<str>),
    /// The user's sessions on every number are gone (an erasure).
    ForgetUser(String),
}

pub(super) struct SessionCache {
    committed: Mutex<LruCache<SessionKey, Arc<str>>>,
    /// The running batch's changes; touched by the writer thread only.
    staged: Mutex<Vec<Staged>>,
}

impl SessionCache {
    pub(super) fn new() -> Self {
        SessionCache {
            committed: Mutex::new(LruCache::new(KEPT)),
            staged: Mutex::new(Vec::new()),
        }
    }

    fn committed(&self) -> MutexGuard<'_, LruCache<SessionKey, Arc<str>>> {
        self.committed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn staged(&self) -> MutexGuard<'_, Vec<Staged>> {
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The user's session as last committed (encoded), when it is kept.
    pub(super) fn get(&self, key: &SessionKey) -> Option<Arc<str>> {
        self.committed().get(key).cloned()
    }

    /// A write (inside the writer's transaction) saved the user's session.
    pub(super) fn stage_put(&self, key: &SessionKey, data: &Arc<str>) {
        self.staged()
            .push(Staged::Put(key.clone(), Arc::clone(data)));
    }

    /// A write (inside the writer's transaction) deleted the user's sessions.
    pub(super) fn stage_forget_user(&self, user: &str) {
        self.staged().push(Staged::ForgetUser(user.to_string()));
    }

    /// How much is staged: taken before a write, to drop its changes should it fail.
    pub(super) fn mark(&self) -> usize {
        self.staged().len()
    }

    /// Drops what was staged since `mark`: that write failed or was undone.
    pub(super) fn unstage_to(&self, mark: usize) {
        self.staged().truncate(mark);
    }

    /// Drops everything staged: the batch starts (again) or did not commit.
    pub(super) fn discard(&self) {
        self.staged().clear();
    }

    /// The batch committed: what it staged is now what the file holds.
    pub(super) fn apply(&self) {
        let staged = std::mem::take(&mut *self.staged());
        if staged.is_empty() {
            return;
        }
        let mut committed = self.committed();
        for change in staged {
            match change {
                Staged::Put(key, data) => {
                    committed.put(key, data);
                }
                Staged::ForgetUser(user) => {
                    let gone: Vec<SessionKey> = committed
                        .iter()
                        .filter(|(k, _)| k.user == user)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in gone {
                        committed.pop(&k);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(number: &str, user: &str) -> SessionKey {
        SessionKey {
            phone_number_id: number.into(),
            user: user.into(),
        }
    }

    #[test]
    fn only_committed_changes_are_kept() {
        let cache = SessionCache::new();
        let a = key("1", "a");
        cache.stage_put(&a, &Arc::from("one"));
        assert_eq!(cache.get(&a), None, "staged is not committed");
        cache.apply();
        assert_eq!(cache.get(&a).as_deref(), Some("one"));

        // A failed write's change goes; the batch's others stay.
        cache.stage_put(&a, &Arc::from("two"));
        let mark = cache.mark();
        cache.stage_put(&key("1", "b"), &Arc::from("lost"));
        cache.unstage_to(mark);
        cache.apply();
        assert_eq!(cache.get(&a).as_deref(), Some("two"));
        assert_eq!(cache.get(&key("1", "b")), None);

        // A batch that did not commit changes nothing.
        cache.stage_put(&a, &Arc::from("three"));
        cache.discard();
        cache.apply();
        assert_eq!(cache.get(&a).as_deref(), Some("two"));
    }

    #[test]
    fn an_erasure_forgets_the_user_on_every_number() {
        let cache = SessionCache::new();
        cache.stage_put(&key("1", "a"), &Arc::from("x"));
        cache.stage_put(&key("2", "a"), &Arc::from("y"));
        cache.stage_put(&key("1", "b"), &Arc::from("z"));
        cache.apply();
        cache.stage_forget_user("a");
        cache.apply();
        assert_eq!(cache.get(&key("1", "a")), None);
        assert_eq!(cache.get(&key("2", "a")), None);
        assert_eq!(cache.get(&key("1", "b")).as_deref(), Some("z"));
    }
}
