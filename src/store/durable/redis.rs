//! The durable store on Redis, for several instances sharing one Redis (or a cluster).
//!
//! ## Layout: one slot per user
//! Every key of one (phone number, user) carries the hash tag `{number:user}`
//! ([`keys`]), so on a Redis Cluster they all live in one slot, and every step the
//! contract calls atomic is one Lua script ([`scripts`]) over that user's keys only:
//! accept (dedupe `SET NX` with an 8-day TTL + inbox append), commit_turn (item removal +
//! session + outbox append + timers), mark_sent (outbox removal + sent record),
//! dead_letter, replay. Fencing is checked inside the same script: the lease's holder
//! and token are compared before the first write.
//!
//! ## Global keys are hints
//! Finding work across users needs a few global keys, each in its own slot: the "users
//! with work" and "users with timers" sorted sets, the dead letter and sent-message
//! owner maps, and the item id counter. A script cannot update them together with the
//! user's keys on a cluster, so they are **hints**: the user's own keys are the truth.
//! - A hint is added before the user's script runs (so a crash after the script
//!   leaves the user findable) and again after it (so it cannot be lost to a concurrent
//!   removal). Adding is idempotent: repeating it is always safe.
//! - A hint is removed only by whoever checked the user's keys and found nothing there,
//!   and only if no hint was added since it read the hint's version (`HINT_SETTLE`).
//!   An addition always follows the data write, so either the check saw the new work
//!   or the version changed: a user with work is never dropped from the index.
//! - A stale hint (a user without work) costs one check, then goes.
//! - A work hint's score is never later than the user's rank in `users_with_work` (the
//!   smallest of their items' `at` and their due messages' `not_before`), so reading
//!   the index in score order can stop early. Items are work at once whatever their
//!   `at` (a sender's clock may run ahead of ours), so storing items hints at or below
//!   0 ([`ITEM_HINT`]), and a user with items is settled no later than the `now` of the
//!   check. A user with only later messages is settled at the soonest one, and found
//!   once it is due.
//! - A removal in `delete_user` is versioned like any other: work racing the erasure
//!   keeps its hint.
//!
//! ## Dedupe
//! Dedupe keys are global (a wamid is unique), but the record that makes an accept
//! atomic must sit in the user's slot. So a key has two records, both with an 8-day TTL:
//! a global *claim* (`{#key}:dedupe`, in its own slot, naming the user only by a hash
//! of their tag, with a state: claimed or stored) and the user's own record, written by
//! the accept script with `SET NX` in the same step as the inbox append. The claim
//! answers "duplicate" for another user's key, or for this user's key once stored; a
//! claim still in the "claimed" state (its accept died before or during the user's
//! script, or runs right now) lets the item through to the script, whose own record
//! decides atomically. So an item that was never stored is never a duplicate, and two
//! copies racing store one.
//!
//! A batch with several users' items runs one script per user: each user's part is
//! atomic, the batch as a whole is not. When a later part fails, the earlier ones
//! stay stored while `accept` answers `Err`; the webhook is not acknowledged, and the
//! redelivery finds those items duplicates: nothing lost, nothing twice.
//!
//! ## Item ids
//! Ids come from one counter (`INCRBY` on `{ids}:next`, reserved before the user's
//! script). On a cluster that key lives in its own slot, so two concurrent accepts for
//! one user could reserve ids in one order and store them in the other. The accept
//! script refuses ids that are not above the user's last stored id (nothing written),
//! and the caller reserves new ones: ids increase per user in the order items were
//! stored, and across the store in the order of the calls that reserved them.
//!
//! ## Reconnects
//! One multiplexed connection with `redis::aio::ConnectionManager`: when Redis goes
//! away, calls fail quickly with `StoreError` (short connect and response timeouts)
//! and the manager reconnects by itself once Redis is back. Scripts are sent as
//! EVALSHA and loaded again when a restarted Redis no longer knows them.

mod keys;
mod scripts;
#[cfg(test)]
mod tests;

use super::{
    Accepted, CommitError, DeadLetter, Durable, Item, ItemId, ItemKind, Lease, Millis, NewItem,
    NewTimer, OutKey, Outgoing, TurnCommit,
};
use crate::engine::Session;
use crate::engine::session::SESSION_VERSION;
use crate::store::{SentRecord, SessionKey, StatusRecord, StoreError, decode, encode};
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncCommands, RedisError, Script};
use keys::{GlobalKeys, UserKeys};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The key prefix when none is given.
pub const DEFAULT_PREFIX: &str = "parlance:";

/// How long a dedupe record is kept: Meta redelivers for 7 days.
pub const DEDUPE_TTL: Duration = Duration::from_secs(8 * 24 * 3600);

/// How many times accept and fire_due_timers reserve new ids after a race.
const ID_RACE_RETRIES: usize = 8;

/// How many index entries users_with_work and fire_due_timers read at a time.
const INDEX_BATCH: usize = 256;

/// How long a message's statuses are kept after the last one arrived (`purge` forgets
/// them sooner when asked): like dedupe records, past Meta's 7 days of redelivery.
pub const STATUS_TTL: Duration = Duration::from_secs(8 * 24 * 3600);

/// The work index's score for a user whose items were just stored: items are work at
/// once, whatever their `at` (see the module docs).
const ITEM_HINT: Millis = 0;

struct Scripts {
    accept: Script,
    next_item: Script,
    move_aside: Script,
    acquire: Script,
    renew: Script,
    release: Script,
    commit_turn: Script,
    next_outgoing: Script,
    move_out_aside: Script,
    mark_sent: Script,
    mark_attempt: Script,
    dead_letter: Script,
    read_dead: Script,
    replay: Script,
    work: Script,
    fire: Script,
    timers: Script,
    hint_add: Script,
    hint_settle: Script,
    purge_dedupe: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            accept: Script::new(scripts::ACCEPT),
            next_item: Script::new(scripts::NEXT_ITEM),
            move_aside: Script::new(scripts::MOVE_ASIDE),
            acquire: Script::new(scripts::ACQUIRE),
            renew: Script::new(&scripts::renew()),
            release: Script::new(scripts::RELEASE),
            commit_turn: Script::new(&scripts::commit_turn()),
            next_outgoing: Script::new(scripts::NEXT_OUTGOING),
            move_out_aside: Script::new(scripts::MOVE_OUT_ASIDE),
            mark_sent: Script::new(&scripts::mark_sent()),
            mark_attempt: Script::new(&scripts::mark_attempt()),
            dead_letter: Script::new(&scripts::dead_letter()),
            read_dead: Script::new(scripts::READ_DEAD),
            replay: Script::new(scripts::REPLAY),
            work: Script::new(scripts::WORK),
            fire: Script::new(scripts::FIRE),
            timers: Script::new(scripts::TIMERS),
            hint_add: Script::new(scripts::HINT_ADD),
            hint_settle: Script::new(scripts::HINT_SETTLE),
            purge_dedupe: Script::new(scripts::PURGE_DEDUPE),
        }
    }
}

/// The durable store on one Redis (see the module docs).
pub struct RedisDurable {
    con: ConnectionManager,
    prefix: String,
    global: GlobalKeys,
    scripts: Scripts,
    /// Makes hint versions unique across instances: this process's nonce + a counter.
    nonce: String,
    versions: AtomicU64,
}

fn err(e: RedisError) -> StoreError {
    StoreError(format!("redis: {e}"))
}

fn corrupt(what: &str) -> StoreError {
    StoreError(format!("redis: unreadable {what}"))
}

/// Which global index a hint goes to.
#[derive(Clone, Copy)]
enum Index {
    Work,
    Timers,
}

impl RedisDurable {
    /// Connects to `url` (`redis://host:port/db`, or `rediss://` where the build has
    /// TLS) and keeps every key under `prefix` (e.g. [`DEFAULT_PREFIX`]). The prefix
    /// may not contain `{` or `}`: each user's keys carry their own hash tag.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisDurable, StoreError> {
        if prefix.contains(['{', '}']) {
            return Err(StoreError(format!(
                "the Redis key prefix \"{prefix}\" contains {{ or }}; hint: each user's keys carry their own cluster hash tag, so the prefix must not have one"
            )));
        }
        let client = ::redis::Client::open(url)
            .map_err(|e| StoreError(format!("redis: \"{url}\" is not a Redis URL: {e}")))?;
        // Fail fast while Redis is away (the webhook answers 503 and Meta retries);
        // the manager reconnects on the next call.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let con = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(err)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Ok(RedisDurable {
            con,
            prefix: prefix.to_string(),
            global: GlobalKeys::new(prefix),
            scripts: Scripts::new(),
            nonce: format!("{}.{nanos}", std::process::id()),
            versions: AtomicU64::new(0),
        })
    }

    fn user(&self, key: &SessionKey) -> UserKeys {
        UserKeys::new(&self.prefix, key)
    }

    fn con(&self) -> ConnectionManager {
        self.con.clone()
    }

    fn version(&self) -> String {
        let n = self.versions.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n}", self.nonce)
    }

    fn index_keys(&self, index: Index) -> (&str, &str) {
        match index {
            Index::Work => (&self.global.work, &self.global.work_ver),
            Index::Timers => (&self.global.timers, &self.global.timers_ver),
        }
    }

    /// Adds (or refreshes) a hint that the user has work due at `score`.
    async fn hint(&self, index: Index, tag: &str, score: Millis) -> Result<(), StoreError> {
        let (zset, ver) = self.index_keys(index);
        self.scripts
            .hint_add
            .key(zset)
            .key(ver)
            .arg(tag)
            .arg(score)
            .arg(self.version())
            .invoke_async::<i64>(&mut self.con())
            .await
            .map_err(err)?;
        Ok(())
    }

    /// The version of a user's hint, read before checking the user's keys.
    async fn hint_version(&self, index: Index, tag: &str) -> Result<String, StoreError> {
        let (_, ver) = self.index_keys(index);
        let v: Option<String> = self.con().hget(ver, tag).await.map_err(err)?;
        Ok(v.unwrap_or_default())
    }

    /// Removes the hint (`None`) or moves it to `score`, unless a hint was added since
    /// `version` was read; whether it did.
    async fn settle(
        &self,
        index: Index,
        tag: &str,
        version: &str,
        score: Option<Millis>,
    ) -> Result<bool, StoreError> {
        let (zset, ver) = self.index_keys(index);
        let done = self
            .scripts
            .hint_settle
            .key(zset)
            .key(ver)
            .arg(tag)
            .arg(version)
            .arg(score.map(|s| s.to_string()).unwrap_or_default())
            .invoke_async::<i64>(&mut self.con())
            .await
            .map_err(err)?;
        Ok(done == 1)
    }

    /// Reserves `n` consecutive item ids; returns the first.
    async fn reserve_ids(&self, n: usize) -> Result<u64, StoreError> {
        let last: u64 = self
            .con()
            .incr(&self.global.ids, n as u64)
            .await
            .map_err(err)?;
        Ok(last + 1 - n as u64)
    }

    /// Claims a dedupe key for the user across the store. `false`: it is a duplicate
    /// (another user's, or this user's and stored); `true`: go on to the user's script,
    /// whose own dedupe record decides (a claim left by a crash between claim and
    /// store, or a concurrent accept of the same item, is settled there, atomically).
    async fn claim(&self, keys: &UserKeys, dedupe: &str, at: Millis) -> Result<bool, StoreError> {
        let claim = keys::dedupe_claim(&self.prefix, dedupe);
        let mine = keys::fingerprint(&keys.tag);
        let mut con = self.con();
        let set: Option<String> = ::redis::cmd("SET")
            .arg(&claim)
            .arg(format!("{mine} c {at}"))
            .arg("NX")
            .arg("PX")
            .arg(DEDUPE_TTL.as_millis() as u64)
            .query_async(&mut con)
            .await
            .map_err(err)?;
        if set.is_some() {
            return Ok(true);
        }
        let held: Option<String> = con.get(&claim).await.map_err(err)?;
        let Some(held) = held else {
            // Purged or expired in between: claim again next time; the user's record
            // still decides now.
            return Ok(true);
        };
        let mut parts = held.split(' ');
        Ok(parts.next() == Some(mine.as_str()) && parts.next() == Some("c"))
    }

    /// Marks a claim as stored: later copies are duplicates without asking the user.
    async fn claimed_and_stored(
        &self,
        keys: &UserKeys,
        dedupe: &str,
        at: Millis,
    ) -> Result<(), StoreError> {
        let claim = keys::dedupe_claim(&self.prefix, dedupe);
        let mine = keys::fingerprint(&keys.tag);
        let _: Option<String> = ::redis::cmd("SET")
            .arg(&claim)
            .arg(format!("{mine} s {at}"))
            .arg("XX")
            .arg("KEEPTTL")
            .query_async(&mut self.con())
            .await
            .map_err(err)?;
        Ok(())
    }

    /// Stores one user's part of an accept; `None` when the ids raced. One answer per
    /// item: its id, or 0 for a duplicate.
    async fn accept_user(
        &self,
        keys: &UserKeys,
        items: &[(ItemId, &NewItem)],
    ) -> Result<Option<Vec<u64>>, StoreError> {
        let mut answers = vec![0; items.len()];
        let mut part = Vec::new();
        for (n, (id, item)) in items.iter().enumerate() {
            let fresh = match &item.dedupe {
                Some(d) => self.claim(keys, d, item.at).await?,
                None => true,
            };
            if fresh {
                part.push((n, *id, *item));
            }
        }
        let (Some(first), Some(last)) = (part.first(), part.last()) else {
            return Ok(Some(answers));
        };
        let oldest = part
            .iter()
            .map(|(_, _, i)| i.at)
            .min()
            .unwrap_or(first.2.at)
            .min(ITEM_HINT);
        self.hint(Index::Work, &keys.tag, oldest).await?;
        let mut call = self.scripts.accept.prepare_invoke();
        call.key(keys.last_id()).key(keys.inbox()).key(keys.items());
        for (_, _, item) in &part {
            if let Some(d) = &item.dedupe {
                call.key(keys.dedupe(d));
            }
        }
        call.arg(first.1.0)
            .arg(part.len())
            .arg(DEDUPE_TTL.as_millis() as u64)
            .arg(last.1.0);
        for (_, id, item) in &part {
            call.arg(id.0)
                .arg(if item.dedupe.is_some() { "1" } else { "0" })
                .arg(item.kind.as_str())
                .arg(&item.body)
                .arg(item.at);
        }
        let reply: ::redis::Value = call.invoke_async(&mut self.con()).await.map_err(err)?;
        if let ::redis::Value::Int(-1) = reply {
            return Ok(None);
        }
        let ids: Vec<String> = ::redis::from_redis_value(reply)
            .map_err(|e| StoreError(format!("redis: unreadable accept reply: {e}")))?;
        // Again after the write: a removal that raced the write sees a new version.
        self.hint(Index::Work, &keys.tag, oldest).await?;
        for ((n, _, item), id) in part.iter().zip(ids) {
            let id = parse_u64(&id, "accept reply")?;
            answers[*n] = id;
            if let (Some(d), true) = (&item.dedupe, id != 0) {
                self.claimed_and_stored(keys, d, item.at).await?;
            }
        }
        Ok(Some(answers))
    }

    async fn read_item(&self, keys: &UserKeys) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        self.scripts
            .next_item
            .key(keys.inbox())
            .key(keys.items())
            .invoke_async(&mut self.con())
            .await
            .map_err(err)
    }

    /// Runs a write under a lease; 1 = done, 0 = fenced.
    async fn fenced_write(
        &self,
        call: &mut ::redis::ScriptInvocation<'_>,
    ) -> Result<(), CommitError> {
        let done: i64 = call.invoke_async(&mut self.con()).await.map_err(err)?;
        if done == 1 {
            Ok(())
        } else {
            Err(CommitError::Fenced)
        }
    }

    /// Every key matching `pattern` (SCAN: walks the whole keyspace; used only by the
    /// rare whole-store operations: counting sessions, erasing a user, purging).
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let mut con = self.con();
        let mut cursor: u64 = 0;
        let mut found = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut con)
                .await
                .map_err(err)?;
            found.extend(batch);
            if next == 0 {
                return Ok(found);
            }
            cursor = next;
        }
    }

    /// Every field and value of a hash (HSCAN: for the big global maps, walked only by
    /// the rare erasure).
    async fn hscan_all(&self, key: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut con = self.con();
        let mut cursor: u64 = 0;
        let mut found = Vec::new();
        loop {
            let (next, batch): (u64, Vec<(String, String)>) = ::redis::cmd("HSCAN")
                .arg(key)
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut con)
                .await
                .map_err(err)?;
            found.extend(batch);
            if next == 0 {
                return Ok(found);
            }
            cursor = next;
        }
    }

    /// Forgets a dead letter's index entries.
    async fn drop_dead_index(&self, id: &str) -> Result<(), StoreError> {
        let mut con = self.con();
        // The index first: an id listed always has its owner (see `dead_letter`).
        let _: i64 = con.zrem(&self.global.dead_ids, id).await.map_err(err)?;
        let _: i64 = con.hdel(&self.global.dead_owner, id).await.map_err(err)?;
        Ok(())
    }

    /// The tags in an index due at `now`, with their scores, from `offset`.
    async fn due_in(
        &self,
        index: Index,
        now: Millis,
        offset: usize,
    ) -> Result<Vec<(String, f64)>, StoreError> {
        let (zset, _) = self.index_keys(index);
        self.con()
            .zrangebyscore_limit_withscores(
                zset,
                "-inf",
                now,
                offset as isize,
                INDEX_BATCH as isize,
            )
            .await
            .map_err(err)
    }

    /// Drops an index entry this build cannot read (not a tag it writes).
    async fn drop_hint(&self, index: Index, tag: &str) -> Result<(), StoreError> {
        let (zset, ver) = self.index_keys(index);
        let mut con = self.con();
        let _: i64 = con.zrem(zset, tag).await.map_err(err)?;
        let _: i64 = con.hdel(ver, tag).await.map_err(err)?;
        Ok(())
    }

    /// Fires up to `limit` of one user's due timers: how many fired, and whether the
    /// user's hint left the due range.
    async fn fire_user(
        &self,
        tag: &str,
        now: Millis,
        limit: usize,
    ) -> Result<(usize, bool), StoreError> {
        let Some(key) = keys::key_of(tag) else {
            self.drop_hint(Index::Timers, tag).await?;
            return Ok((0, true));
        };
        let keys = self.user(&key);
        let version = self.hint_version(Index::Timers, tag).await?;
        let due: usize = self
            .con()
            .zcount(keys.timers(), "-inf", now)
            .await
            .map_err(err)?;
        let want = due.min(limit);
        let mut next_due: Millis = -1;
        let mut fired = 0;
        if want > 0 {
            self.hint(Index::Work, tag, ITEM_HINT).await?;
            let mut done = false;
            for _ in 0..ID_RACE_RETRIES {
                let first = self.reserve_ids(want).await?;
                let reply: Vec<String> = self
                    .scripts
                    .fire
                    .key(keys.timers())
                    .key(keys.timer_bodies())
                    .key(keys.last_id())
                    .key(keys.inbox())
                    .key(keys.items())
                    .arg(now)
                    .arg(want)
                    .arg(first)
                    .invoke_async(&mut self.con())
                    .await
                    .map_err(err)?;
                let n: i64 = reply
                    .first()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| corrupt("timer reply"))?;
                if n < 0 {
                    continue;
                }
                fired = n as usize;
                next_due = reply
                    .get(1)
                    .and_then(|s| s.parse::<f64>().ok())
                    .map(|f| f as Millis)
                    .unwrap_or(-1);
                done = true;
                break;
            }
            if !done {
                return Err(StoreError("redis: item ids kept racing; try again".into()));
            }
            self.hint(Index::Work, tag, ITEM_HINT).await?;
        } else {
            let first: Vec<(String, f64)> = self
                .con()
                .zrange_withscores(keys.timers(), 0, 0)
                .await
                .map_err(err)?;
            if let Some((_, due)) = first.first() {
                next_due = *due as Millis;
            }
        }
        let score = (next_due >= 0).then_some(next_due);
        let settled = self.settle(Index::Timers, tag, &version, score).await?;
        Ok((fired, settled && score.is_none_or(|due| due > now)))
    }
}

/// A stored value as text; `None` when it is not UTF-8 (damaged: the caller moves it
/// aside rather than failing on it forever).
fn text(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_string)
}

fn parse_u64(s: &str, what: &str) -> Result<u64, StoreError> {
    s.parse().map_err(|_| corrupt(what))
}

fn member(at: OutKey) -> String {
    format!("{}:{}", at.turn, at.index)
}

fn out_key(member: &str) -> Result<OutKey, StoreError> {
    let (turn, index) = member
        .split_once(':')
        .ok_or_else(|| corrupt("outbox entry"))?;
    Ok(OutKey {
        turn: parse_u64(turn, "outbox entry")?,
        index: index.parse().map_err(|_| corrupt("outbox entry"))?,
    })
}

fn sent_json(sent: &SentRecord) -> String {
    serde_json::json!({
        "message_id": sent.message_id,
        "phone_number_id": sent.key.phone_number_id,
        "user": sent.key.user,
        "flow": sent.flow,
        "node": sent.node,
        "at": sent.at,
    })
    .to_string()
}

fn sent_from_json(text: &str) -> Option<SentRecord> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let s = |name: &str| v.get(name)?.as_str().map(str::to_string);
    let record = SentRecord {
        message_id: s("message_id")?,
        key: SessionKey {
            phone_number_id: s("phone_number_id")?,
            user: s("user")?,
        },
        flow: s("flow")?,
        node: s("node")?,
        at: v.get("at")?.as_i64()?,
    };
    Some(record)
}

fn status_json(s: &StatusRecord) -> String {
    serde_json::json!({
        "message_id": s.message_id,
        "status": s.status,
        "at": s.at,
        "recipient": s.recipient,
        "error_code": s.error_code,
        "error_title": s.error_title,
    })
    .to_string()
}

fn status_from_json(text: &str) -> Option<StatusRecord> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let opt = |name: &str| v.get(name).and_then(|x| x.as_str()).map(str::to_string);
    Some(StatusRecord {
        message_id: opt("message_id")?,
        status: opt("status")?,
        at: v.get("at")?.as_i64()?,
        recipient: opt("recipient"),
        error_code: v.get("error_code").and_then(|x| x.as_i64()),
        error_title: opt("error_title"),
    })
}

#[async_trait::async_trait]
impl Durable for RedisDurable {
    async fn accept(&self, items: Vec<NewItem>) -> Result<Vec<Accepted>, StoreError> {
        let mut answers = vec![Accepted::Duplicate; items.len()];
        // Each user's items, in order: one script per user (one slot each), users in
        // the order they first appear (the first copy of a dedupe key wins).
        let mut pending: Vec<(SessionKey, Vec<usize>)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match pending.iter_mut().find(|(k, _)| *k == item.key) {
                Some((_, group)) => group.push(i),
                None => pending.push((item.key.clone(), vec![i])),
            }
        }
        for _ in 0..ID_RACE_RETRIES {
            if pending.is_empty() {
                return Ok(answers);
            }
            // Ids in the order of the batch, reserved for every item still pending.
            let mut order: Vec<usize> = pending.iter().flat_map(|(_, g)| g.clone()).collect();
            order.sort_unstable();
            let first = self.reserve_ids(order.len()).await?;
            let id_of = |i: usize| {
                let pos = order.iter().position(|&j| j == i).unwrap_or(0);
                ItemId(first + pos as u64)
            };
            let mut raced = Vec::new();
            for (key, group) in pending {
                let keys = self.user(&key);
                let part: Vec<(ItemId, &NewItem)> =
                    group.iter().map(|&i| (id_of(i), &items[i])).collect();
                match self.accept_user(&keys, &part).await? {
                    None => raced.push((key, group)),
                    Some(ids) => {
                        for (&i, id) in group.iter().zip(ids) {
                            answers[i] = if id == 0 {
                                Accepted::Duplicate
                            } else {
                                Accepted::Stored(ItemId(id))
                            };
                        }
                    }
                }
            }
            pending = raced;
        }
        if pending.is_empty() {
            Ok(answers)
        } else {
            Err(StoreError("redis: item ids kept racing; try again".into()))
        }
    }

    async fn next_item(&self, key: &SessionKey) -> Result<Option<Item>, StoreError> {
        let keys = self.user(key);
        loop {
            let Some(fields) = self.read_item(&keys).await? else {
                return Ok(None);
            };
            let [id, kind, body, at] = fields.as_slice() else {
                return Err(corrupt("inbox reply"));
            };
            let id = String::from_utf8_lossy(id).into_owned();
            let kind = String::from_utf8_lossy(kind).into_owned();
            let parsed = (
                id.parse::<u64>().ok(),
                ItemKind::parse(&kind),
                text(body),
                text(at).and_then(|at| at.parse::<Millis>().ok()),
            );
            if let (Some(id), Some(kind), Some(body), Some(at)) = parsed {
                return Ok(Some(Item {
                    id: ItemId(id),
                    key: key.clone(),
                    kind,
                    body,
                    at,
                }));
            }
            // Written by a newer version, or damaged: out of the way, so the user's
            // later items still run.
            tracing::warn!(
                item = %id,
                kind = %kind,
                "an inbox item this build cannot read was moved aside"
            );
            let _: i64 = self
                .scripts
                .move_aside
                .key(keys.inbox())
                .key(keys.items())
                .key(keys.aside())
                .arg(id)
                .invoke_async(&mut self.con())
                .await
                .map_err(err)?;
        }
    }

    async fn acquire(
        &self,
        key: &SessionKey,
        holder: &str,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let keys = self.user(key);
        let until = now.saturating_add(ttl.as_millis() as Millis);
        for _ in 0..ID_RACE_RETRIES {
            // Tokens come from one counter, so they keep growing after an erasure
            // removed the user's own record of the last one.
            let token: u64 = self.con().incr(&self.global.fence, 1).await.map_err(err)?;
            let reply: Option<String> = self
                .scripts
                .acquire
                .key(keys.lease())
                .key(keys.fence())
                .arg(holder)
                .arg(now)
                .arg(until)
                .arg(token)
                .invoke_async(&mut self.con())
                .await
                .map_err(err)?;
            match reply.as_deref() {
                None => return Ok(None),
                Some("-1") => continue,
                Some(token) => {
                    return Ok(Some(Lease {
                        key: key.clone(),
                        holder: holder.to_string(),
                        token: parse_u64(token, "lease token")?,
                        until,
                    }));
                }
            }
        }
        Err(StoreError(
            "redis: lease tokens kept racing; try again".into(),
        ))
    }

    async fn renew(
        &self,
        lease: &Lease,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let keys = self.user(&lease.key);
        let until = now.saturating_add(ttl.as_millis() as Millis);
        let renewed: i64 = self
            .scripts
            .renew
            .key(keys.lease())
            .arg(&lease.holder)
            .arg(lease.token)
            .arg(now)
            .arg(until)
            .invoke_async(&mut self.con())
            .await
            .map_err(err)?;
        Ok((renewed == 1).then(|| Lease {
            until,
            ..lease.clone()
        }))
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let keys = self.user(&lease.key);
        let _: i64 = self
            .scripts
            .release
            .key(keys.lease())
            .arg(&lease.holder)
            .arg(lease.token)
            .invoke_async(&mut self.con())
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn load_session(&self, key: &SessionKey) -> Result<Option<Session>, StoreError> {
        let keys = self.user(key);
        // Read as bytes: a damaged field (a `v` that is no number, data that is not
        // UTF-8) is "no session" with a warning, as an older format is, never an error
        // that would stop the user forever.
        let (version, data): (Option<Vec<u8>>, Option<Vec<u8>>) = self
            .con()
            .hmget(keys.session(), &["v", "data"])
            .await
            .map_err(err)?;
        let (Some(version), Some(data)) = (version, data) else {
            return Ok(None);
        };
        let readable = text(&version)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .zip(text(&data));
        match readable {
            Some((version, data)) => Ok(decode(version, &data)),
            None => {
                tracing::warn!(
                    number = %key.phone_number_id,
                    "a stored session this build cannot read is treated as none"
                );
                Ok(None)
            }
        }
    }

    async fn commit_turn(
        &self,
        lease: &Lease,
        now: Millis,
        commit: TurnCommit,
    ) -> Result<(), CommitError> {
        let keys = self.user(&lease.key);
        let data = encode(&commit.session)?;
        let soonest_timer = commit.timers.iter().map(|t| t.due).min();
        // Hints first (see the module docs); a fenced commit leaves them stale, which
        // costs one check later.
        if let Some(due) = soonest_timer {
            self.hint(Index::Timers, &keys.tag, due).await?;
        }
        if !commit.outgoing.is_empty() {
            self.hint(Index::Work, &keys.tag, now).await?;
        }
        let mut outgoing = commit.outgoing;
        outgoing.sort_by_key(|o| o.at);
        if let Some(twice) = outgoing.windows(2).find(|w| w[0].at == w[1].at) {
            return Err(CommitError::Store(super::taken(twice[0].at)));
        }
        let mut call = self.scripts.commit_turn.prepare_invoke();
        call.key(keys.lease())
            .key(keys.inbox())
            .key(keys.items())
            .key(keys.session())
            .key(keys.outbox())
            .key(keys.outbox_seq())
            .key(keys.outgoing())
            .key(keys.timers())
            .key(keys.timer_bodies());
        call.arg(&lease.holder)
            .arg(lease.token)
            .arg(now)
            .arg(commit.item.0)
            .arg(SESSION_VERSION)
            .arg(data)
            .arg(commit.session.updated_at)
            .arg(outgoing.len());
        for out in &outgoing {
            call.arg(member(out.at))
                .arg(&out.body)
                .arg(out.not_before.max(now));
        }
        call.arg(commit.timers.len());
        for timer in &commit.timers {
            call.arg(&timer.name).arg(timer.due).arg(&timer.body);
        }
        call.arg(commit.cancel_timers.len());
        for name in &commit.cancel_timers {
            call.arg(name);
        }
        let done: i64 = call.invoke_async(&mut self.con()).await.map_err(err)?;
        match done {
            1 => {}
            0 => return Err(CommitError::Fenced),
            taken => {
                let n = usize::try_from(-2 - taken).unwrap_or(usize::MAX);
                let at = outgoing
                    .get(n)
                    .map(|o| o.at)
                    .ok_or_else(|| corrupt("commit reply"))?;
                return Err(CommitError::Store(super::taken(at)));
            }
        }
        if let Some(due) = soonest_timer {
            self.hint(Index::Timers, &keys.tag, due).await?;
        }
        if !outgoing.is_empty() {
            self.hint(Index::Work, &keys.tag, now).await?;
        }
        Ok(())
    }

    async fn next_outgoing(&self, key: &SessionKey) -> Result<Option<Outgoing>, StoreError> {
        let keys = self.user(key);
        loop {
            let fields: Option<Vec<Vec<u8>>> = self
                .scripts
                .next_outgoing
                .key(keys.outbox())
                .key(keys.outgoing())
                .invoke_async(&mut self.con())
                .await
                .map_err(err)?;
            let Some(fields) = fields else {
                return Ok(None);
            };
            let [m, body, attempts, ambiguous, not_before] = fields.as_slice() else {
                return Err(corrupt("outbox reply"));
            };
            let read = || -> Option<Outgoing> {
                Some(Outgoing {
                    key: key.clone(),
                    at: out_key(&text(m)?).ok()?,
                    body: text(body)?,
                    attempts: text(attempts)?.parse().ok()?,
                    ambiguous: text(ambiguous)?.parse().ok()?,
                    not_before: text(not_before)?.parse().ok()?,
                })
            };
            if let Some(o) = read() {
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
            let _: i64 = self
                .scripts
                .move_out_aside
                .key(keys.outbox())
                .key(keys.outgoing())
                .key(keys.aside())
                .arg(m.as_slice())
                .invoke_async(&mut self.con())
                .await
                .map_err(err)?;
        }
    }

    async fn mark_sent(
        &self,
        lease: &Lease,
        now: Millis,
        at: OutKey,
        sent: SentRecord,
    ) -> Result<(), CommitError> {
        let keys = self.user(&lease.key);
        // The owner first: `sent()` finds the record through it (a hint, like the
        // indexes: the record in the user's slot is the truth).
        let _: i64 = self
            .con()
            .hset(&self.global.sent_owner, &sent.message_id, &keys.tag)
            .await
            .map_err(err)?;
        let mut call = self.scripts.mark_sent.prepare_invoke();
        call.key(keys.lease())
            .key(keys.outbox())
            .key(keys.outgoing())
            .key(keys.sent())
            .arg(&lease.holder)
            .arg(lease.token)
            .arg(now)
            .arg(member(at))
            .arg(&sent.message_id)
            // Filed under the lease's user, whatever `sent.key` says (see the trait).
            .arg(sent_json(&SentRecord {
                key: lease.key.clone(),
                ..sent.clone()
            }));
        let written = self.fenced_write(&mut call).await;
        if let Err(CommitError::Fenced) = written {
            // Nothing was written: the owner would point at nothing (unless an
            // earlier call with this wamid did write it).
            let mut con = self.con();
            let recorded: bool = con
                .hexists(keys.sent(), &sent.message_id)
                .await
                .map_err(err)?;
            if !recorded {
                let _: i64 = con
                    .hdel(&self.global.sent_owner, &sent.message_id)
                    .await
                    .map_err(err)?;
            }
        }
        written
    }

    async fn mark_attempt(
        &self,
        lease: &Lease,
        now: Millis,
        at: OutKey,
        ambiguous: bool,
        not_before: Millis,
    ) -> Result<(), CommitError> {
        let keys = self.user(&lease.key);
        let mut call = self.scripts.mark_attempt.prepare_invoke();
        call.key(keys.lease())
            .key(keys.outbox())
            .key(keys.outgoing())
            .arg(&lease.holder)
            .arg(lease.token)
            .arg(now)
            .arg(member(at))
            .arg(if ambiguous { "1" } else { "0" })
            .arg(not_before);
        self.fenced_write(&mut call).await?;
        // The hint may now be later than the message (a retry sooner than the time the
        // index was settled to); it only ever moves earlier here.
        self.hint(Index::Work, &keys.tag, not_before).await?;
        Ok(())
    }

    async fn dead_letter(
        &self,
        lease: &Lease,
        now: Millis,
        at: OutKey,
        reason: &str,
    ) -> Result<(), CommitError> {
        let keys = self.user(&lease.key);
        let mut con = self.con();
        let id: u64 = con.incr(&self.global.dead_next, 1).await.map_err(err)?;
        let _: i64 = con
            .hset(&self.global.dead_owner, id, &keys.tag)
            .await
            .map_err(err)?;
        let _: i64 = con.zadd(&self.global.dead_ids, id, id).await.map_err(err)?;
        let mut call = self.scripts.dead_letter.prepare_invoke();
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
        let written = self.fenced_write(&mut call).await;
        if let Err(CommitError::Fenced) = written {
            // Nothing was written: the index entry would point at nothing.
            let _: i64 = con.zrem(&self.global.dead_ids, id).await.map_err(err)?;
            let _: i64 = con.hdel(&self.global.dead_owner, id).await.map_err(err)?;
        }
        written
    }

    async fn dead_letters(
        &self,
        phone_number_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let mut con = self.con();
        let mut found = Vec::new();
        let mut start = 0;
        'pages: while found.len() < limit {
            let ids: Vec<u64> = con
                .zrange(
                    &self.global.dead_ids,
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
                let tag: Option<String> =
                    con.hget(&self.global.dead_owner, id).await.map_err(err)?;
                let Some(key) = tag.as_deref().and_then(keys::key_of) else {
                    // Listed without a (readable) owner: `dead_letter` writes the
                    // owner before the index and every removal takes the index first,
                    // so this entry is left over. It goes (it shifts the page by one:
                    // at worst an entry is read twice, never skipped).
                    self.drop_dead_index(&id.to_string()).await?;
                    start -= 1;
                    continue;
                };
                if phone_number_id.is_some_and(|n| n != key.phone_number_id) {
                    continue;
                }
                let keys = self.user(&key);
                let fields: Option<Vec<Vec<u8>>> = self
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

    async fn replay_dead_letter(&self, id: u64, now: Millis) -> Result<bool, StoreError> {
        let mut con = self.con();
        let tag: Option<String> = con.hget(&self.global.dead_owner, id).await.map_err(err)?;
        let Some(key) = tag.as_deref().and_then(keys::key_of) else {
            return Ok(false);
        };
        let keys = self.user(&key);
        self.hint(Index::Work, &keys.tag, now).await?;
        let replayed: i64 = self
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
        let _: i64 = con.zrem(&self.global.dead_ids, id).await.map_err(err)?;
        let _: i64 = con.hdel(&self.global.dead_owner, id).await.map_err(err)?;
        if replayed == 1 {
            self.hint(Index::Work, &keys.tag, now).await?;
        }
        Ok(replayed == 1)
    }

    async fn users_with_work(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<SessionKey>, StoreError> {
        // Candidates come from the index in score order; a score is never later than
        // the user's true oldest work (hints keep the smallest), so once `limit` users
        // are found and the index has passed the last of them, nothing later can rank
        // before them.
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut found: Vec<(Millis, SessionKey)> = Vec::new();
        let mut offset = 0;
        loop {
            let batch = self.due_in(Index::Work, now, offset).await?;
            let Some(&(_, last_score)) = batch.last() else {
                break;
            };
            let read = batch.len();
            let mut moved = 0;
            for (tag, score) in batch {
                let Some(key) = keys::key_of(&tag) else {
                    self.drop_hint(Index::Work, &tag).await?;
                    moved += 1;
                    continue;
                };
                let keys = self.user(&key);
                let version = self.hint_version(Index::Work, &tag).await?;
                let truth: Vec<String> = self
                    .scripts
                    .work
                    .key(keys.inbox())
                    .key(keys.items())
                    .key(keys.outgoing())
                    .key(keys.lease())
                    .arg(now)
                    .invoke_async(&mut self.con())
                    .await
                    .map_err(err)?;
                let [has_items, oldest, any, due, free] = truth.as_slice() else {
                    return Err(corrupt("work reply"));
                };
                // Items are work whatever their `at`; an item without a readable one
                // counts from now.
                let items = (has_items == "1").then(|| oldest.parse::<Millis>().unwrap_or(now));
                let any = any.parse::<Millis>().ok();
                let due = due.parse::<Millis>().ok();
                // The user's rank among those with work now, as the trait orders them.
                let rank = match (items, due) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                // Where the hint belongs: never after the rank (see the module docs),
                // no later than now while there are items, else at the soonest
                // message, due or not.
                let place = match items {
                    Some(at) => Some(at.min(now).min(any.unwrap_or(Millis::MAX))),
                    None => any,
                };
                let Some(place) = place else {
                    // Nothing left: the hint goes (unless one was added meanwhile).
                    if self.settle(Index::Work, &tag, &version, None).await? {
                        moved += 1;
                    }
                    continue;
                };
                let mut settled = false;
                if place != score as Millis {
                    settled = self
                        .settle(Index::Work, &tag, &version, Some(place))
                        .await?;
                }
                // A settled entry changed place (out of the range, or further on):
                // not stepping over it may visit it twice (hence the check below),
                // but never skips another.
                moved += usize::from(settled);
                if let Some(rank) = rank
                    && free == "1"
                    && !found.iter().any(|(_, k)| *k == key)
                {
                    found.push((rank, key));
                }
            }
            found.sort();
            if let Some((kth, _)) = found.get(limit.saturating_sub(1))
                && found.len() >= limit
                && last_score as Millis > *kth
            {
                break;
            }
            offset += read - moved;
        }
        found.truncate(limit);
        Ok(found.into_iter().map(|(_, key)| key).collect())
    }

    async fn fire_due_timers(&self, now: Millis, limit: usize) -> Result<usize, StoreError> {
        let mut fired = 0;
        let mut offset = 0;
        while fired < limit {
            let batch = self.due_in(Index::Timers, now, offset).await?;
            if batch.is_empty() {
                break;
            }
            let read = batch.len();
            let mut left = 0;
            for (tag, _) in batch {
                if fired >= limit {
                    break;
                }
                let (n, gone) = self.fire_user(&tag, now, limit - fired).await?;
                fired += n;
                left += usize::from(gone);
            }
            // Entries that left the due range shift the rest down; the others (a new
            // hint raced the settle: the next call sees them) are stepped over.
            offset += read - left;
        }
        Ok(fired)
    }

    async fn timers(&self, key: &SessionKey) -> Result<Vec<NewTimer>, StoreError> {
        let keys = self.user(key);
        let flat: Vec<String> = self
            .scripts
            .timers
            .key(keys.timers())
            .key(keys.timer_bodies())
            .invoke_async(&mut self.con())
            .await
            .map_err(err)?;
        flat.chunks(3)
            .map(|t| match t {
                [name, due, body] => Ok(NewTimer {
                    name: name.clone(),
                    due: due
                        .parse::<f64>()
                        .map(|d| d as Millis)
                        .map_err(|_| corrupt("timer"))?,
                    body: body.clone(),
                }),
                _ => Err(corrupt("timers reply")),
            })
            .collect()
    }

    async fn record_status(&self, status: &StatusRecord) -> Result<(), StoreError> {
        let key = keys::statuses(&self.prefix, &status.message_id);
        // The first record of a (message, status) pair stays, as on SQLite. The key
        // expires STATUS_TTL after the last status, so one `purge` never reaches
        // (or an erasure that missed it) does not stay forever.
        let _: (bool, bool) = ::redis::pipe()
            .atomic()
            .hset_nx(&key, &status.status, status_json(status))
            .pexpire(&key, STATUS_TTL.as_millis() as i64)
            .query_async(&mut self.con())
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn sent(&self, message_id: &str) -> Result<Option<SentRecord>, StoreError> {
        let mut con = self.con();
        let tag: Option<String> = con
            .hget(&self.global.sent_owner, message_id)
            .await
            .map_err(err)?;
        let Some(key) = tag.as_deref().and_then(keys::key_of) else {
            return Ok(None);
        };
        let text: Option<String> = con
            .hget(self.user(&key).sent(), message_id)
            .await
            .map_err(err)?;
        Ok(text.as_deref().and_then(sent_from_json))
    }

    async fn statuses(&self, message_id: &str) -> Result<Vec<StatusRecord>, StoreError> {
        let key = keys::statuses(&self.prefix, message_id);
        let texts: Vec<String> = self.con().hvals(key).await.map_err(err)?;
        let mut all: Vec<StatusRecord> = texts.iter().filter_map(|t| status_from_json(t)).collect();
        all.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.status.cmp(&b.status)));
        Ok(all)
    }

    async fn count_sessions(&self, since: i64) -> Result<usize, StoreError> {
        let mut con = self.con();
        let mut count = 0;
        let found = self.scan(&keys::sessions_pattern(&self.prefix)).await?;
        // One round trip per thousand sessions, not per session.
        for batch in found.chunks(1000) {
            let mut pipe = ::redis::pipe();
            for key in batch {
                pipe.hget(key, "at");
            }
            // As bytes: one damaged `at` must not fail the count forever.
            let ats: Vec<Option<Vec<u8>>> = pipe.query_async(&mut con).await.map_err(err)?;
            count += ats
                .iter()
                .filter_map(|at| text(at.as_deref()?)?.parse::<i64>().ok())
                .filter(|at| *at >= since)
                .count();
        }
        Ok(count)
    }

    async fn delete_user(&self, user: &str) -> Result<usize, StoreError> {
        let mut con = self.con();
        let found = self.scan(&keys::user_pattern(&self.prefix, user)).await?;
        let mut by_tag: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for key in found {
            // The user's dedupe records stay (see the trait): forgetting one would let
            // a redelivery run again. They expire with DEDUPE_TTL.
            if keys::is_user_dedupe(&self.prefix, &key) {
                continue;
            }
            if let Some(tag) = keys::tag_in(&self.prefix, &key) {
                by_tag.entry(tag).or_default().push(key);
            }
        }
        let mut sessions = 0;
        for (tag, mut scanned) in by_tag {
            let Some(key) = keys::key_of(&tag) else {
                continue;
            };
            if key.user != user {
                continue;
            }
            let keys = self.user(&key);
            // Read before the keys go: work stored while the user is erased adds a
            // hint after its write, and that hint must survive the removal below.
            let work_version = self.hint_version(Index::Work, &tag).await?;
            let timers_version = self.hint_version(Index::Timers, &tag).await?;
            let had: bool = con.exists(keys.session()).await.map_err(err)?;
            if had {
                sessions += 1;
            }
            let wamids: Vec<String> = con.hkeys(keys.sent()).await.map_err(err)?;
            for wamid in &wamids {
                let _: i64 = con
                    .del(keys::statuses(&self.prefix, wamid))
                    .await
                    .map_err(err)?;
                let _: i64 = con
                    .hdel(&self.global.sent_owner, wamid)
                    .await
                    .map_err(err)?;
            }
            let dead: Vec<String> = con.hkeys(keys.dead()).await.map_err(err)?;
            for field in dead {
                if let Some(id) = field.strip_suffix(":m") {
                    self.drop_dead_index(id).await?;
                }
            }
            scanned.extend(keys.all_fixed());
            let _: i64 = con.del(scanned).await.map_err(err)?;
            self.settle(Index::Work, &tag, &work_version, None).await?;
            self.settle(Index::Timers, &tag, &timers_version, None)
                .await?;
        }
        // Owner entries naming the user without a record behind them (written before
        // a write that was fenced or cut short) are found in the maps themselves.
        let theirs = |tag: &str| keys::key_of(tag).is_some_and(|k| k.user == user);
        for (wamid, tag) in self.hscan_all(&self.global.sent_owner).await? {
            if theirs(&tag) {
                let _: i64 = con
                    .hdel(&self.global.sent_owner, &wamid)
                    .await
                    .map_err(err)?;
            }
        }
        for (id, tag) in self.hscan_all(&self.global.dead_owner).await? {
            if theirs(&tag) {
                self.drop_dead_index(&id).await?;
            }
        }
        // Statuses of messages to the user with no sent record here (purged, or sent
        // by another tool): found by their recipient.
        let status_keys = self.scan(&keys::statuses_pattern(&self.prefix)).await?;
        for batch in status_keys.chunks(1000) {
            let mut pipe = ::redis::pipe();
            for key in batch {
                pipe.hvals(key);
            }
            let all: Vec<Vec<Vec<u8>>> = pipe.query_async(&mut con).await.map_err(err)?;
            for (key, records) in batch.iter().zip(all) {
                let to_user = records.iter().any(|r| {
                    text(r)
                        .as_deref()
                        .and_then(status_from_json)
                        .is_some_and(|s| s.recipient.as_deref() == Some(user))
                });
                if to_user {
                    let _: i64 = con.del(key).await.map_err(err)?;
                }
            }
        }
        Ok(sessions)
    }

    async fn purge(&self, before: Millis) -> Result<usize, StoreError> {
        let mut con = self.con();
        let mut gone = 0;
        // The users' own dedupe records go silently: each stands for the same key as
        // a global claim, which is what is counted.
        for key in self.scan(&keys::dedupe_pattern(&self.prefix)).await? {
            let _: i64 = self
                .scripts
                .purge_dedupe
                .key(&key)
                .arg(before)
                .invoke_async(&mut con)
                .await
                .map_err(err)?;
        }
        for key in self.scan(&keys::claims_pattern(&self.prefix)).await? {
            let n: i64 = self
                .scripts
                .purge_dedupe
                .key(&key)
                .arg(before)
                .invoke_async(&mut con)
                .await
                .map_err(err)?;
            gone += n as usize;
        }
        // Statuses are dated in Unix seconds; an unreadable one goes too.
        let first = super::first_status_second(before);
        for key in self.scan(&keys::statuses_pattern(&self.prefix)).await? {
            let all: Vec<(String, Vec<u8>)> = con.hgetall(&key).await.map_err(err)?;
            for (status, record) in all {
                let old = text(&record)
                    .as_deref()
                    .and_then(status_from_json)
                    .is_none_or(|s| s.at < first);
                if old {
                    let n: i64 = con.hdel(&key, &status).await.map_err(err)?;
                    gone += n as usize;
                }
            }
        }
        for key in self.scan(&keys::sent_pattern(&self.prefix)).await? {
            let all: Vec<(String, String)> = con.hgetall(&key).await.map_err(err)?;
            for (wamid, text) in all {
                let old = sent_from_json(&text).is_none_or(|record| record.at < before);
                if old {
                    let n: i64 = con.hdel(&key, &wamid).await.map_err(err)?;
                    let _: i64 = con
                        .hdel(&self.global.sent_owner, &wamid)
                        .await
                        .map_err(err)?;
                    gone += n as usize;
                }
            }
        }
        Ok(gone)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = ::redis::cmd("PING")
            .query_async(&mut self.con())
            .await
            .map_err(err)?;
        Ok(())
    }
}
