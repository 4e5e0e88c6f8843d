//! Leases of the SQLite store, kept in memory. The file lock proves this process is
//! the file's only user, so a lease never has to outlive the process, and taking,
//! renewing or giving one up costs no commit (two of a message's five writes before).
//! Fencing still holds within the process: every leased write checks the lease in the
//! writer's transaction. Tokens come from `d_meta.last_token`, reserved in blocks, so
//! they keep growing across releases, erasure and restarts.

use crate::store::SessionKey;
use crate::store::durable::{Lease, Millis};
use std::collections::HashMap;
use std::sync::Mutex;

/// Tokens reserved in `d_meta` at a time.
pub(super) const TOKEN_BLOCK: u64 = 10_000;

#[derive(Debug, Default)]
pub(super) struct Leases {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    held: HashMap<SessionKey, Held>,
    /// The next token to give.
    next: u64,
    /// The last token reserved in `d_meta`: `next` may not pass it.
    reserved: u64,
}

#[derive(Debug, Clone)]
struct Held {
    holder: String,
    token: u64,
    until: Millis,
}

/// The token counter must reserve more in `d_meta` first.
pub(super) struct NeedTokens;

impl Leases {
    /// Starts after every token a previous process may have given: `last` is
    /// `d_meta.last_token`, which that process reserved before giving any.
    pub(super) fn new(last: u64) -> Leases {
        Leases {
            inner: Mutex::new(Inner {
                held: HashMap::new(),
                next: last + 1,
                reserved: last,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token counter after reservation: tokens up to `last` may be given.
    pub(super) fn reserved(&self, last: u64) {
        let mut inner = self.lock();
        inner.reserved = inner.reserved.max(last);
    }

    /// Takes the lease (see `Durable::acquire`); `Err(NeedTokens)` when a block of
    /// tokens must be reserved first.
    pub(super) fn acquire(
        &self,
        key: &SessionKey,
        holder: &str,
        now: Millis,
        until: Millis,
    ) -> Result<Option<Lease>, NeedTokens> {
        let mut inner = self.lock();
        if let Some(h) = inner.held.get(key)
            && h.holder != holder
            && now < h.until
        {
            return Ok(None);
        }
        if inner.next > inner.reserved {
            return Err(NeedTokens);
        }
        let token = inner.next;
        inner.next += 1;
        inner.held.insert(
            key.clone(),
            Held {
                holder: holder.to_string(),
                token,
                until,
            },
        );
        Ok(Some(Lease {
            key: key.clone(),
            holder: holder.to_string(),
            token,
            until,
        }))
    }

    /// Whether `lease` is held at `now` (see `Lease`).
    pub(super) fn holds(&self, lease: &Lease, now: Millis) -> bool {
        self.lock()
            .held
            .get(&lease.key)
            .is_some_and(|h| h.holder == lease.holder && h.token == lease.token && now < h.until)
    }

    pub(super) fn renew(&self, lease: &Lease, now: Millis, until: Millis) -> Option<Lease> {
        let mut inner = self.lock();
        let h = inner.held.get_mut(&lease.key)?;
        if h.holder != lease.holder || h.token != lease.token || now >= h.until {
            return None;
        }
        h.until = until;
        Some(Lease {
            until,
            ..lease.clone()
        })
    }

    pub(super) fn release(&self, lease: &Lease) {
        let mut inner = self.lock();
        if inner
            .held
            .get(&lease.key)
            .is_some_and(|h| h.holder == lease.holder && h.token == lease.token)
        {
            inner.held.remove(&lease.key);
        }
    }

    /// Whether someone holds the user's lease at `now`.
    pub(super) fn busy(&self, key: &SessionKey, now: Millis) -> bool {
        self.lock().held.get(key).is_some_and(|h| now < h.until)
    }

    /// How many leases are held (live or not): a bound on how many users `busy` can
    /// filter out of a list.
    pub(super) fn count(&self) -> usize {
        self.lock().held.len()
    }

    /// Forgets every lease of `user`, on every number (erasure).
    pub(super) fn forget_user(&self, user: &str) {
        self.lock().held.retain(|k, _| k.user != user);
    }
}
