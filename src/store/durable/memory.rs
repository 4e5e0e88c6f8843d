//! [`MemoryDurable`]: the durable store's interface kept in memory, for tests. A Mutex
//! around plain maps: every method takes the lock once, so each is atomic, and the
//! implementation stays simple enough to be the reference the others are compared to.
//! Nothing survives the process.

use super::handover::{
    Changed, Handover, HandoverChange, HandoverData, HandoverFilter, HandoverMessage, newest_first,
};
use super::{
    Accepted, CommitError, DeadLetter, Direct, DirectTurn, Durable, Item, ItemId, Lease, Millis,
    NewItem, NewTimer, OutKey, Outgoing, Peek, TurnCommit, UserData,
};
use crate::engine::Session;
use crate::store::{SentRecord, SessionKey, StatusRecord, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct MemoryDurable {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The last item id given out.
    last_item: u64,
    /// The last lease token given out: one sequence for every user, so a user's tokens
    /// keep growing even after their lease was erased.
    last_token: u64,
    last_dead: u64,
    /// Every unhandled item by id (= acceptance order).
    items: BTreeMap<ItemId, Item>,
    /// Dedupe key → the `at` of the item that stored it.
    dedupe: HashMap<String, Millis>,
    leases: HashMap<SessionKey, Lease>,
    sessions: HashMap<SessionKey, Session>,
    outbox: BTreeMap<(SessionKey, OutKey), Outgoing>,
    dead: BTreeMap<u64, DeadLetter>,
    timers: HashMap<(SessionKey, String), NewTimer>,
    statuses: Vec<StatusRecord>,
    sent: HashMap<String, SentRecord>,
    /// Items moved aside, with why.
    aside: Vec<(Item, String)>,
    /// Handovers by id, with their messages in the order added.
    handovers: HashMap<String, (Handover, Vec<HandoverMessage>)>,
}

impl MemoryDurable {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Each method finishes its changes before it can panic (no panics inside), so a
        // poisoned lock still guards consistent maps.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn until(now: Millis, ttl: Duration) -> Millis {
    now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

impl Inner {
    /// Whether `lease` is the user's lease at `now` (same holder and token, not expired).
    fn holds(&self, lease: &Lease, now: Millis) -> bool {
        self.leases
            .get(&lease.key)
            .is_some_and(|l| l.holder == lease.holder && l.token == lease.token && now < l.until)
    }

    /// Records the item's dedupe key: `false` when it was recorded before (a
    /// duplicate), `true` when it is new or the item has none.
    fn first_seen(&mut self, item: &NewItem) -> bool {
        let Some(dedupe) = &item.dedupe else {
            return true;
        };
        if self.dedupe.contains_key(dedupe) {
            return false;
        }
        self.dedupe.insert(dedupe.clone(), item.at);
        true
    }

    /// Puts a message in the user's outbox at `at`, with no attempts yet.
    fn queue(&mut self, key: &SessionKey, at: OutKey, body: String, not_before: Millis) {
        self.outbox.insert(
            (key.clone(), at),
            Outgoing {
                key: key.clone(),
                at,
                body,
                attempts: 0,
                ambiguous: 0,
                not_before,
            },
        );
    }

    fn push_item(&mut self, item: NewItem) -> ItemId {
        self.last_item += 1;
        let id = ItemId(self.last_item);
        self.items.insert(
            id,
            Item {
                id,
                key: item.key,
                kind: item.kind,
                body: item.body,
                at: item.at,
            },
        );
        id
    }

    /// The user's first unsent message (the map sorts a user's by place).
    fn first_outgoing(&self, key: &SessionKey) -> Option<Outgoing> {
        self.outbox.values().find(|o| &o.key == key).cloned()
    }

    /// What a write under the user's lease tells of their outbox and inbox.
    fn peek(&self, key: &SessionKey) -> Peek {
        Peek::Next {
            next: self.first_outgoing(key),
            inbox_empty: !self.items.values().any(|i| &i.key == key),
        }
    }

    /// The queued message a write under `lease` is about, if the lease is held.
    fn held_outgoing(
        &mut self,
        lease: &Lease,
        now: Millis,
        at: OutKey,
    ) -> Result<&mut Outgoing, CommitError> {
        if !self.holds(lease, now) {
            return Err(CommitError::Fenced);
        }
        self.outbox
            .get_mut(&(lease.key.clone(), at))
            .ok_or(CommitError::Fenced)
    }
}

#[async_trait::async_trait]
impl Durable for MemoryDurable {
    fn single_process(&self) -> bool {
        true
    }

    async fn accept(&self, items: Vec<NewItem>) -> Result<Vec<Accepted>, StoreError> {
        let mut inner = self.lock();
        let mut answers = Vec::with_capacity(items.len());
        for item in items {
            if !inner.first_seen(&item) {
                answers.push(Accepted::Duplicate);
                continue;
            }
            answers.push(Accepted::Stored(inner.push_item(item)));
        }
        Ok(answers)
    }

    async fn next_item(&self, key: &SessionKey) -> Result<Option<Item>, StoreError> {
        Ok(self.lock().items.values().find(|i| &i.key == key).cloned())
    }

    async fn acquire(
        &self,
        key: &SessionKey,
        holder: &str,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let mut inner = self.lock();
        if let Some(l) = inner.leases.get(key)
            && l.holder != holder
            && now < l.until
        {
            return Ok(None);
        }
        inner.last_token += 1;
        let lease = Lease {
            key: key.clone(),
            holder: holder.to_string(),
            token: inner.last_token,
            until: until(now, ttl),
        };
        inner.leases.insert(key.clone(), lease.clone());
        Ok(Some(lease))
    }

    async fn renew(
        &self,
        lease: &Lease,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let mut inner = self.lock();
        if !inner.holds(lease, now) {
            return Ok(None);
        }
        let renewed = Lease {
            until: until(now, ttl),
            ..lease.clone()
        };
        inner.leases.insert(lease.key.clone(), renewed.clone());
        Ok(Some(renewed))
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner
            .leases
            .get(&lease.key)
            .is_some_and(|l| l.holder == lease.holder && l.token == lease.token)
        {
            inner.leases.remove(&lease.key);
        }
        Ok(())
    }

    async fn load_session(&self, key: &SessionKey) -> Result<Option<Session>, StoreError> {
        Ok(self.lock().sessions.get(key).cloned())
    }

    async fn commit_turn(
        &self,
        lease: &Lease,
        now: Millis,
        commit: TurnCommit,
    ) -> Result<(), CommitError> {
        let mut inner = self.lock();
        let key = &lease.key;
        // Fenced too when the item is gone (handled already) or not this user's.
        let item_gone = commit
            .item
            .is_some_and(|id| inner.items.get(&id).is_none_or(|i| &i.key != key));
        if !inner.holds(lease, now) || item_gone {
            return Err(CommitError::Fenced);
        }
        let TurnCommit {
            item,
            session,
            outgoing,
            timers,
            cancel_timers,
        } = commit;
        let mut places = std::collections::HashSet::new();
        for o in &outgoing {
            if !places.insert(o.at) || inner.outbox.contains_key(&(key.clone(), o.at)) {
                return Err(CommitError::Store(super::taken(o.at)));
            }
        }
        if let Some(item) = item {
            inner.items.remove(&item);
        }
        inner.sessions.insert(key.clone(), session);
        for o in outgoing {
            inner.queue(key, o.at, o.body, o.not_before.max(now));
        }
        for t in timers {
            inner.timers.insert((key.clone(), t.name.clone()), t);
        }
        for name in cancel_timers {
            inner.timers.remove(&(key.clone(), name));
        }
        Ok(())
    }

    async fn accept_turn(
        &self,
        lease: &Lease,
        now: Millis,
        turn: DirectTurn,
    ) -> Result<Direct, CommitError> {
        let mut inner = self.lock();
        let key = &lease.key;
        if !inner.holds(lease, now) {
            return Err(CommitError::Fenced);
        }
        if inner.items.values().any(|i| &i.key == key) {
            return Ok(Direct::Declined);
        }
        let DirectTurn {
            item,
            session,
            outgoing,
        } = turn;
        if !inner.first_seen(&item) {
            return Ok(Direct::Duplicate);
        }
        inner.last_item += 1;
        let id = ItemId(inner.last_item);
        inner.sessions.insert(key.clone(), session);
        for (index, o) in (0u32..).zip(outgoing) {
            let at = OutKey { turn: id.0, index };
            inner.queue(key, at, o.body, o.not_before.max(now));
        }
        Ok(Direct::Committed(id, inner.peek(key)))
    }

    fn takes_direct_turns(&self) -> bool {
        true
    }

    async fn move_aside(
        &self,
        lease: &Lease,
        now: Millis,
        item: ItemId,
        why: &str,
    ) -> Result<(), CommitError> {
        let mut inner = self.lock();
        if !inner.holds(lease, now) || inner.items.get(&item).is_none_or(|i| i.key != lease.key) {
            return Err(CommitError::Fenced);
        }
        if let Some(found) = inner.items.remove(&item) {
            inner.aside.push((found, why.to_string()));
        }
        Ok(())
    }

    async fn next_outgoing(&self, key: &SessionKey) -> Result<Option<Outgoing>, StoreError> {
        Ok(self.lock().first_outgoing(key))
    }

    async fn mark_sent(
        &self,
        lease: &Lease,
        now: Millis,
        at: OutKey,
        sent: SentRecord,
    ) -> Result<Peek, CommitError> {
        let mut inner = self.lock();
        inner.held_outgoing(lease, now, at)?;
        inner.outbox.remove(&(lease.key.clone(), at));
        let sent = SentRecord {
            key: lease.key.clone(),
            ..sent
        };
        inner.sent.insert(sent.message_id.clone(), sent);
        Ok(inner.peek(&lease.key))
    }

    async fn mark_attempt(
        &self,
        lease: &Lease,
        now: Millis,
        at: OutKey,
        ambiguous: bool,
        not_before: Millis,
    ) -> Result<(), CommitError> {
        let mut inner = self.lock();
        let o = inner.held_outgoing(lease, now, at)?;
        o.attempts = o.attempts.saturating_add(1);
        if ambiguous {
            o.ambiguous = o.ambiguous.saturating_add(1);
        }
        o.not_before = not_before;
        Ok(())
    }

    async fn dead_letter(
        &self,
        lease: &Lease,
        now: Millis,
        at: OutKey,
        reason: &str,
    ) -> Result<(), CommitError> {
        let mut inner = self.lock();
        inner.held_outgoing(lease, now, at)?;
        let Some(o) = inner.outbox.remove(&(lease.key.clone(), at)) else {
            return Err(CommitError::Fenced);
        };
        inner.last_dead += 1;
        let id = inner.last_dead;
        inner.dead.insert(
            id,
            DeadLetter {
                id,
                key: o.key,
                at: o.at,
                body: o.body,
                attempts: o.attempts,
                reason: reason.to_string(),
                since: now,
            },
        );
        Ok(())
    }

    async fn dead_letters(
        &self,
        phone_number_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(self
            .lock()
            .dead
            .values()
            .filter(|d| phone_number_id.is_none_or(|p| d.key.phone_number_id == p))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn replay_dead_letter(&self, id: u64, now: Millis) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some(d) = inner.dead.remove(&id) else {
            return Ok(false);
        };
        let last = inner
            .outbox
            .keys()
            .filter(|(k, _)| k == &d.key)
            .map(|(_, at)| *at)
            .next_back();
        let at = after(d.at, last);
        inner.queue(&d.key, at, d.body, now);
        Ok(true)
    }

    async fn users_with_work(
        &self,
        now: Millis,
        limit: usize,
        only: Option<&[String]>,
    ) -> Result<Vec<SessionKey>, StoreError> {
        let inner = self.lock();
        let mut since: HashMap<&SessionKey, Millis> = HashMap::new();
        let pending = inner.items.values().map(|i| (&i.key, i.at));
        let due = inner
            .outbox
            .values()
            .filter(|o| o.not_before <= now)
            .map(|o| (&o.key, o.not_before));
        for (key, at) in pending.chain(due) {
            let oldest = since.entry(key).or_insert(at);
            *oldest = (*oldest).min(at);
        }
        let mut users: Vec<(Millis, &SessionKey)> = since
            .into_iter()
            .filter(|(k, _)| inner.leases.get(*k).is_none_or(|l| l.until <= now))
            .filter(|(k, _)| only.is_none_or(|numbers| numbers.contains(&k.phone_number_id)))
            .map(|(k, at)| (at, k))
            .collect();
        users.sort();
        Ok(users
            .into_iter()
            .take(limit)
            .map(|(_, k)| k.clone())
            .collect())
    }

    async fn fire_due_timers(&self, now: Millis, limit: usize) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let mut due: Vec<(Millis, SessionKey, String)> = inner
            .timers
            .iter()
            .filter(|(_, t)| t.due <= now)
            .map(|((k, name), t)| (t.due, k.clone(), name.clone()))
            .collect();
        due.sort();
        due.truncate(limit);
        let fired = due.len();
        for (_, key, name) in due {
            if let Some(t) = inner.timers.remove(&(key.clone(), name)) {
                inner.push_item(NewItem {
                    key,
                    dedupe: None,
                    kind: super::ItemKind::Timer,
                    body: t.body,
                    at: t.due,
                });
            }
        }
        Ok(fired)
    }

    async fn timers(&self, key: &SessionKey) -> Result<Vec<NewTimer>, StoreError> {
        let mut found: Vec<NewTimer> = self
            .lock()
            .timers
            .iter()
            .filter(|((k, _), _)| k == key)
            .map(|(_, t)| t.clone())
            .collect();
        found.sort_by(|a, b| (a.due, &a.name).cmp(&(b.due, &b.name)));
        Ok(found)
    }

    async fn record_status(&self, status: &StatusRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let same =
            |s: &StatusRecord| s.message_id == status.message_id && s.status == status.status;
        if !inner.statuses.iter().any(same) {
            inner.statuses.push(status.clone());
        }
        Ok(())
    }

    async fn sent(&self, message_id: &str) -> Result<Option<SentRecord>, StoreError> {
        Ok(self.lock().sent.get(message_id).cloned())
    }

    async fn statuses(&self, message_id: &str) -> Result<Vec<StatusRecord>, StoreError> {
        let mut found: Vec<StatusRecord> = self
            .lock()
            .statuses
            .iter()
            .filter(|s| s.message_id == message_id)
            .cloned()
            .collect();
        found.sort_by(|a, b| (a.at, &a.status).cmp(&(b.at, &b.status)));
        Ok(found)
    }

    async fn count_sessions(&self, since: i64) -> Result<usize, StoreError> {
        Ok(self
            .lock()
            .sessions
            .values()
            .filter(|s| s.updated_at >= since)
            .count())
    }

    async fn delete_user(&self, user: &str) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let before = inner.sessions.len();
        inner.sessions.retain(|k, _| k.user != user);
        let gone = before - inner.sessions.len();
        inner.items.retain(|_, i| i.key.user != user);
        inner.leases.retain(|k, _| k.user != user);
        inner.outbox.retain(|(k, _), _| k.user != user);
        inner.dead.retain(|_, d| d.key.user != user);
        inner.timers.retain(|(k, _), _| k.user != user);
        let theirs: std::collections::HashSet<String> = inner
            .sent
            .values()
            .filter(|s| s.key.user == user)
            .map(|s| s.message_id.clone())
            .collect();
        inner
            .statuses
            .retain(|s| s.recipient.as_deref() != Some(user) && !theirs.contains(&s.message_id));
        inner.sent.retain(|_, s| s.key.user != user);
        inner.handovers.retain(|_, (h, _)| h.key.user != user);
        Ok(gone)
    }

    async fn export_user(&self, key: &SessionKey) -> Result<UserData, StoreError> {
        let inner = self.lock();
        let mut timers: Vec<NewTimer> = inner
            .timers
            .iter()
            .filter(|((k, _), _)| k == key)
            .map(|(_, t)| t.clone())
            .collect();
        timers.sort_by(|a, b| (a.due, &a.name).cmp(&(b.due, &b.name)));
        let mut sent: Vec<SentRecord> = inner
            .sent
            .values()
            .filter(|s| &s.key == key)
            .cloned()
            .collect();
        sent.sort_by(|a, b| (a.at, &a.message_id).cmp(&(b.at, &b.message_id)));
        let mut statuses = Vec::new();
        for s in &sent {
            let mut theirs: Vec<StatusRecord> = inner
                .statuses
                .iter()
                .filter(|st| st.message_id == s.message_id)
                .cloned()
                .collect();
            theirs.sort_by(|a, b| (a.at, &a.status).cmp(&(b.at, &b.status)));
            statuses.extend(theirs);
        }
        Ok(UserData {
            session: inner.sessions.get(key).cloned(),
            items: inner
                .items
                .values()
                .filter(|i| &i.key == key)
                .cloned()
                .collect(),
            outgoing: inner
                .outbox
                .iter()
                .filter(|((k, _), _)| k == key)
                .map(|(_, o)| o.clone())
                .collect(),
            timers,
            dead_letters: inner
                .dead
                .values()
                .filter(|d| &d.key == key)
                .cloned()
                .collect(),
            sent,
            statuses,
            handovers: {
                let mut theirs: Vec<&(Handover, Vec<HandoverMessage>)> = inner
                    .handovers
                    .values()
                    .filter(|(h, _)| &h.key == key)
                    .collect();
                theirs.sort_by(|a, b| newest_first(&a.0, &b.0));
                theirs
                    .into_iter()
                    .map(|(h, m)| HandoverData {
                        handover: h.clone(),
                        messages: m.clone(),
                    })
                    .collect()
            },
        })
    }

    async fn create_handover(&self, handover: &Handover) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.handovers.contains_key(&handover.id) {
            return Err(StoreError(format!(
                "handover {} is already stored; nothing was written",
                handover.id
            )));
        }
        inner
            .handovers
            .insert(handover.id.clone(), (handover.clone(), Vec::new()));
        Ok(())
    }

    async fn handover(&self, id: &str) -> Result<Option<Handover>, StoreError> {
        Ok(self.lock().handovers.get(id).map(|(h, _)| h.clone()))
    }

    async fn handover_messages(&self, id: &str) -> Result<Vec<HandoverMessage>, StoreError> {
        Ok(self
            .lock()
            .handovers
            .get(id)
            .map(|(_, m)| m.clone())
            .unwrap_or_default())
    }

    async fn handovers(&self, filter: &HandoverFilter) -> Result<Vec<Handover>, StoreError> {
        let inner = self.lock();
        let mut found: Vec<Handover> = inner
            .handovers
            .values()
            .map(|(h, _)| h)
            .filter(|h| filter.matches(h))
            .cloned()
            .collect();
        found.sort_by(newest_first);
        found.truncate(filter.limit);
        Ok(found)
    }

    async fn user_handovers(&self, key: &SessionKey) -> Result<Vec<Handover>, StoreError> {
        let inner = self.lock();
        let mut found: Vec<Handover> = inner
            .handovers
            .values()
            .map(|(h, _)| h)
            .filter(|h| &h.key == key)
            .cloned()
            .collect();
        found.sort_by(newest_first);
        Ok(found)
    }

    async fn change_handover(
        &self,
        id: &str,
        change: &HandoverChange,
    ) -> Result<Changed, StoreError> {
        let mut inner = self.lock();
        let Some((record, _)) = inner.handovers.get_mut(id) else {
            return Ok(Changed::NotFound);
        };
        match change.apply(record) {
            Some(next) => {
                *record = next.clone();
                Ok(Changed::Done(next))
            }
            None => Ok(Changed::Conflict(record.clone())),
        }
    }

    async fn add_handover_message(
        &self,
        id: &str,
        message: &HandoverMessage,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.handovers.get_mut(id) {
            Some((_, messages)) => {
                messages.push(message.clone());
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn purge(&self, before: Millis) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let count = inner.dedupe.len() + inner.sent.len() + inner.statuses.len();
        inner.dedupe.retain(|_, at| *at >= before);
        inner.sent.retain(|_, s| s.at >= before);
        inner
            .statuses
            .retain(|s| !super::status_older(s.at, before));
        Ok(count - inner.dedupe.len() - inner.sent.len() - inner.statuses.len())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Where a replayed message goes: after `last`, the user's last queued message (its
/// own place when the outbox is empty or everything queued comes before it).
pub(crate) fn after(own: OutKey, last: Option<OutKey>) -> OutKey {
    match last {
        Some(last) if last >= own => OutKey {
            turn: last.turn,
            index: last.index.saturating_add(1),
        },
        Some(_) | None => own,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn conforms() {
        super::super::conformance::run_all(|| async {
            Arc::new(MemoryDurable::default()) as Arc<dyn Durable>
        })
        .await;
    }
}
