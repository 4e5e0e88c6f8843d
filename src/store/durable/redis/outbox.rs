//! The outbox: the next message, sent/attempt/dead-letter records under a lease, and
//! the dead letters' list and replay.

use super::records::sent_json;
use super::*;

impl RedisDurable {
    /// Forgets a dead letter's index entries.
    pub(super) async fn drop_dead_index(&self, id: &str) -> Result<(), StoreError> {
        let mut con = self.con();
        // The index first: an id listed always has its owner (see `dead_letter`).
        let _: i64 = con.zrem(&self.global.dead_ids, id).await.map_err(err)?;
        let _: i64 = con.hdel(&self.global.dead_owner, id).await.map_err(err)?;
        Ok(())
    }
}

pub(super) async fn next_outgoing(
    store: &RedisDurable,
    key: &SessionKey,
) -> Result<Option<Outgoing>, StoreError> {
    let keys = store.user(key);
    loop {
        let fields: Option<Vec<Vec<u8>>> = store
            .scripts
            .next_outgoing
            .key(keys.outbox())
            .key(keys.outgoing())
            .invoke_async(&mut store.con())
            .await
            .map_err(err)?;
        let Some(fields) = fields else {
            return Ok(None);
        };
        let [m, ..] = fields.as_slice() else {
            return Err(corrupt("outbox reply"));
        };
        if let Some(o) = outgoing_of(key, &fields) {
            return Ok(Some(o));
        }
        // Damaged (or written by a newer version): out of the way, so the user's
        // later messages still go. Each pass moves one entry, so this ends.
        let member = String::from_utf8_lossy(m).into_owned();
        tracing::warn!(
            number = %key.phone_number_id,
            entry = %member,
            "an outbox entry this build cannot read was moved aside"
        );
        let _: i64 = store
            .scripts
            .move_out_aside
            .key(keys.outbox())
            .key(keys.outgoing())
            .key(keys.aside())
            .arg(m.as_slice())
            .invoke_async(&mut store.con())
            .await
            .map_err(err)?;
    }
}

/// An outbox entry as [`scripts::NEXT_OUTGOING`] answers it (member, body, attempts,
/// ambiguous, not_before); `None` when this build cannot read it.
fn outgoing_of(key: &SessionKey, fields: &[Vec<u8>]) -> Option<Outgoing> {
    let [m, body, attempts, ambiguous, not_before] = fields else {
        return None;
    };
    Some(Outgoing {
        key: key.clone(),
        at: out_key(&text(m)?).ok()?,
        body: text(body)?,
        attempts: text(attempts)?.parse().ok()?,
        ambiguous: text(ambiguous)?.parse().ok()?,
        not_before: text(not_before)?.parse().ok()?,
    })
}

/// The user's inbox and next message as a script answered them after its write (see
/// `scripts::NEXT`): how many items wait, then nothing (the outbox is empty) or the
/// entry's fields as [`scripts::NEXT_OUTGOING`] gives them. An entry this build cannot
/// read is left to [`next_outgoing`], which moves it aside.
pub(super) fn peek_of(key: &SessionKey, answer: &[redis::Value]) -> Peek {
    let Some((redis::Value::Int(waiting), next)) = answer.split_first() else {
        return Peek::NotLooked;
    };
    let inbox_empty = *waiting == 0;
    if next.is_empty() {
        return Peek::Next {
            next: None,
            inbox_empty,
        };
    }
    let fields: Option<Vec<Vec<u8>>> = next
        .iter()
        .map(|v| match v {
            redis::Value::BulkString(b) => Some(b.clone()),
            _ => None,
        })
        .collect();
    match fields.and_then(|f| outgoing_of(key, &f)) {
        Some(o) => Peek::Next {
            next: Some(o),
            inbox_empty,
        },
        None => Peek::NotLooked,
    }
}

/// A script's answer that is a code, or `{code, next message...}` (see [`peek_of`]).
pub(super) fn code_and_peek(key: &SessionKey, reply: &redis::Value) -> Option<(i64, Peek)> {
    match reply {
        redis::Value::Int(code) => Some((*code, Peek::NotLooked)),
        redis::Value::Array(items) => match items.split_first() {
            Some((redis::Value::Int(code), next)) => Some((*code, peek_of(key, next))),
            _ => None,
        },
        _ => None,
    }
}

/// Whether `mark_sent` gives the lease up when the user is left with nothing to do.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum WhenIdle {
    Hold,
    Release,
}

pub(super) async fn mark_sent(
    store: &RedisDurable,
    lease: &Lease,
    now: Millis,
    at: OutKey,
    sent: SentRecord,
    idle: WhenIdle,
) -> Result<AfterSent, CommitError> {
    let keys = store.user(&lease.key);
    let mut call = store.scripts.mark_sent.prepare_invoke();
    call.key(keys.lease())
        .key(keys.outbox())
        .key(keys.outgoing())
        .key(keys.sent())
        .key(keys.inbox())
        .arg(&lease.holder)
        .arg(lease.token)
        .arg(now)
        .arg(member(at))
        .arg(&sent.message_id)
        // Filed under the lease's user, whatever `sent.key` says (see the trait).
        .arg(sent_json(&SentRecord {
            key: lease.key.clone(),
            ..sent.clone()
        }))
        .arg(if idle == WhenIdle::Release { "1" } else { "0" });
    // The owner first, in the same round trip: `sent()` finds the record through it
    // (a hint, like the indexes: the record in the user's slot is the truth).
    let mut batch = Batch::new();
    batch
        .again(redis::Cmd::hset(
            &store.global.sent_owner,
            &sent.message_id,
            &keys.tag,
        ))
        .once(script_cmd(&call));
    let reply = store
        .pipelined(&batch, &[&store.scripts.mark_sent])
        .await
        .map_err(|e| CommitError::Store(err(e)))?
        .pop()
        .unwrap_or(redis::Value::Nil);
    let written = match code_and_peek(&lease.key, &reply) {
        Some((1, peek)) => Ok(AfterSent::Holding(peek)),
        Some((2, _)) if idle == WhenIdle::Release => Ok(AfterSent::Released),
        Some((0, _)) => Err(CommitError::Fenced),
        _ => Err(CommitError::Store(corrupt("mark_sent reply"))),
    };
    if let Err(CommitError::Fenced) = written {
        // Nothing was written: the owner would point at nothing (unless an
        // earlier call with this wamid did write it).
        let mut con = store.con();
        let recorded: bool = con
            .hexists(keys.sent(), &sent.message_id)
            .await
            .map_err(err)?;
        if !recorded {
            let _: i64 = con
                .hdel(&store.global.sent_owner, &sent.message_id)
                .await
                .map_err(err)?;
        }
    }
    written
}

pub(super) async fn mark_attempt(
    store: &RedisDurable,
    lease: &Lease,
    now: Millis,
    at: OutKey,
    ambiguous: bool,
    not_before: Millis,
) -> Result<(), CommitError> {
    let keys = store.user(&lease.key);
    let mut call = store.scripts.mark_attempt.prepare_invoke();
    call.key(keys.lease())
        .key(keys.outbox())
        .key(keys.outgoing())
        .arg(&lease.holder)
        .arg(lease.token)
        .arg(now)
        .arg(member(at))
        .arg(if ambiguous { "1" } else { "0" })
        .arg(not_before);
    store.fenced_write(&mut call).await?;
    // The hint may now be later than the message (a retry sooner than the time the
    // index was settled to); it only ever moves earlier here.
    store.hint(Index::Work, &keys.tag, not_before).await?;
    Ok(())
}

pub(super) async fn dead_letter(
    store: &RedisDurable,
    lease: &Lease,
    now: Millis,
    at: OutKey,
    reason: &str,
) -> Result<(), CommitError> {
    let keys = store.user(&lease.key);
    let mut con = store.con();
    let id: u64 = con.incr(&store.global.dead_next, 1).await.map_err(err)?;
    let _: i64 = con
        .hset(&store.global.dead_owner, id, &keys.tag)
        .await
        .map_err(err)?;
    let _: i64 = con
        .zadd(&store.global.dead_ids, id, id)
        .await
        .map_err(err)?;
    let mut call = store.scripts.dead_letter.prepare_invoke();
    call.key(keys.lease())
        .key(keys.outbox())
        .key(keys.outgoing())
        .key(keys.dead())
        .arg(&lease.holder)
        .arg(lease.token)
        .arg(now)
        .arg(member(at))
        .arg(id)
        .arg(reason);
    let written = store.fenced_write(&mut call).await;
    if let Err(CommitError::Fenced) = written {
        // Nothing was written: the index entry would point at nothing.
        let _: i64 = con.zrem(&store.global.dead_ids, id).await.map_err(err)?;
        let _: i64 = con.hdel(&store.global.dead_owner, id).await.map_err(err)?;
    }
    written
}

pub(super) async fn dead_letters(
    store: &RedisDurable,
    phone_number_id: Option<&str>,
    limit: usize,
) -> Result<Vec<DeadLetter>, StoreError> {
    let mut con = store.con();
    let mut found = Vec::new();
    let mut start = 0;
    'pages: while found.len() < limit {
        let ids: Vec<u64> = con
            .zrange(
                &store.global.dead_ids,
                start,
                start + INDEX_BATCH as isize - 1,
            )
            .await
            .map_err(err)?;
        if ids.is_empty() {
            break;
        }
        start += ids.len() as isize;
        for id in ids {
            if found.len() >= limit {
                break 'pages;
            }
            let tag: Option<String> = con.hget(&store.global.dead_owner, id).await.map_err(err)?;
            let Some(key) = tag.as_deref().and_then(keys::key_of) else {
                // Listed without a (readable) owner: `dead_letter` writes the
                // owner before the index and every removal takes the index first,
                // so this entry is left over. It goes (it shifts the page by one:
                // at worst an entry is read twice, never skipped).
                store.drop_dead_index(&id.to_string()).await?;
                start -= 1;
                continue;
            };
            if phone_number_id.is_some_and(|n| n != key.phone_number_id) {
                continue;
            }
            let keys = store.user(&key);
            let fields: Option<Vec<Vec<u8>>> = store
                .scripts
                .read_dead
                .key(keys.dead())
                .arg(id)
                .invoke_async(&mut con)
                .await
                .map_err(err)?;
            // Not there (yet): a dead letter being written, or a stale entry.
            let Some(fields) = fields else { continue };
            let [m, body, attempts, reason, since] = fields.as_slice() else {
                return Err(corrupt("dead letter"));
            };
            let read = || -> Option<DeadLetter> {
                Some(DeadLetter {
                    id,
                    key: key.clone(),
                    at: out_key(&text(m)?).ok()?,
                    body: text(body)?,
                    attempts: text(attempts)?.parse().ok()?,
                    reason: text(reason)?,
                    since: text(since)?.parse().ok()?,
                })
            };
            match read() {
                Some(dead) => found.push(dead),
                // One damaged dead letter must not hide the others: skipped (it
                // stays in the user's keys for whoever looks, and goes with them).
                None => tracing::warn!(
                    id,
                    number = %key.phone_number_id,
                    "skipped a dead letter this build cannot read"
                ),
            }
        }
    }
    Ok(found)
}

pub(super) async fn replay_dead_letter(
    store: &RedisDurable,
    id: u64,
    now: Millis,
) -> Result<bool, StoreError> {
    let mut con = store.con();
    let tag: Option<String> = con.hget(&store.global.dead_owner, id).await.map_err(err)?;
    let Some(key) = tag.as_deref().and_then(keys::key_of) else {
        return Ok(false);
    };
    let keys = store.user(&key);
    store.hint(Index::Work, &keys.tag, now).await?;
    let replayed: i64 = store
        .scripts
        .replay
        .key(keys.dead())
        .key(keys.outbox())
        .key(keys.outbox_seq())
        .key(keys.outgoing())
        .arg(id)
        .arg(now)
        .invoke_async(&mut con)
        .await
        .map_err(err)?;
    let _: i64 = con.zrem(&store.global.dead_ids, id).await.map_err(err)?;
    let _: i64 = con.hdel(&store.global.dead_owner, id).await.map_err(err)?;
    if replayed == 1 {
        store.hint(Index::Work, &keys.tag, now).await?;
    }
    Ok(replayed == 1)
}
