//! The durable store on Redis, for several instances sharing one Redis (or a cluster).
//!
//! ## Layout: one slot per user
//! Every key of one (phone number, user) carries the hash tag `{number:user}`
//! ([`keys`]), so on a Redis Cluster they all live in one slot, and every step the
//! contract calls atomic is one Lua script ([`scripts`]) over that user's keys only:
//! accept (dedupe `SET NX` with an 8-day TTL + inbox append), commit_turn (item removal +
//! session + outbox append + timers), accept_turn (the direct path: dedupe + session +
//! outbox append, declined while the inbox holds items), mark_sent (outbox removal + sent record),
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
//!   removal). Adding is idempotent: repeating it is always safe. It is two plain
//!   commands, a new version (`HSET`) then the entry (`ZADD LT`, Redis 6.2), not a
//!   script: a script call costs Redis several times as much.
//! - A hint is removed only by whoever checked the user's keys and found nothing there,
//!   and only if no hint was added since it read the hint's version (`HINT_SETTLE`).
//!   An addition always follows the data write, so either the check saw the new work
//!   or the version changed: a user with work is never dropped from the index.
//! - A stale hint (a user without work) costs one check, then goes.
//! - A work hint's score is never later than the user's rank in `users_with_work` (the
//!   smallest of their items' `at` and their due messages' `not_before`), so reading
//!   the index in score order can stop early. Items are work at once whatever their
//!   `at` (a sender's clock may run ahead of ours), so storing items hints at or below
//!   0 (`ITEM_HINT`), and a user with items is settled no later than the `now` of the
//!   check. A user with only later messages is settled at the soonest one, and found
//!   once it is due.
//! - A removal in `delete_user` is versioned like any other: work racing the erasure
//!   keeps its hint.
//!
//! ## Dedupe
//! Dedupe keys are global (a wamid is unique), but the record that makes an accept
//! atomic must sit in the user's slot. So a key has two records, both with an 8-day TTL:
//! a global *claim* (`{#key}:dedupe`, in its own slot, naming the user only by a hash
//! of their tag) and the user's own record, written by the accept script with `SET NX`
//! in the same step as the inbox append. The claim answers "duplicate" for another
//! user's key; for this user's key it lets the item through to the script, whose own
//! record decides atomically (stored already; or its accept died before or during the
//! script, or runs right now). So an item that was never stored is never a duplicate,
//! and two copies racing store one. The user's record is written after the claim with
//! the same TTL, so it outlives it, and erasing the user keeps it (see `delete_user`).
//! (Claims once had a second state, "stored", set in one more round trip per item so
//! that a copy was refused without the script; copies are rare and the script refuses
//! them as well. Claims an older build marked so still read as duplicates.)
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
//!
//! ## Round trips
//! Each round trip costs CPU on both sides (the server was CPU-bound in benchmarks),
//! so the hot writes send what they need in one pipeline ([`Batch`]): the direct
//! path's dedupe claim, hint and id reservation in one, its script and the hint after
//! it in the next; an accept's claims (all its items') and hint in one, its script and
//! the hint after it in the next; a worker's
//! commit with its hints before and after; a sent record with its owner. Scripts that
//! write the outbox answer with what the worker reads next (the first unsent message
//! and whether the inbox holds items, `Peek`), so a worker sending a turn's replies
//! reads neither between them; the send that leaves the user nothing to do gives the
//! lease up in its script (`mark_sent_releasing`), which saves the worker's release
//! round trip for nearly every message. A lease taken for a turn about to run brings the
//! user's session with it (`acquire_reading`: the lease script reads it). Redis runs a
//! pipeline's commands in order, but not as
//! one step: a pipeline holds exactly the commands that were separate calls before, in
//! the same order.
//!
//! ## Code
//! This file holds the connection, the hints and the [`Durable`] impl, which hands
//! each method to its area: `inbox` (accept, next item, finding work, timers),
//! `leases`, `turns` (session, commit), `outbox` (sending records, dead letters) and
//! `records` (statuses, sent records, erasure, purge), `pace` (the send pace shared by
//! instances); `keys` names the keys and
//! `scripts` holds the Lua.

mod handovers;
mod inbox;
mod keys;
mod leases;
mod outbox;
mod pace;
mod records;
mod scripts;
mod turns;

#[cfg(test)]
mod tests;

use super::handover::{Changed, Handover, HandoverChange, HandoverFilter, HandoverMessage};
use super::{
    Accepted, AfterSent, CommitError, DeadLetter, Direct, DirectTurn, Durable, Item, ItemId,
    ItemKind, Lease, Millis, NewItem, NewTimer, OutKey, Outgoing, Pace, Peek, TurnCommit, UserData,
};
use crate::engine::Session;
use crate::engine::session::SESSION_VERSION;
use crate::store::{SentRecord, SessionKey, StatusRecord, StoreError, decode, encode};
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncCommands, RedisError, Script, ServerErrorKind};
use keys::{GlobalKeys, UserKeys};
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
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
    accept_turn: Script,
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
    hint_settle: Script,
    purge_dedupe: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            accept: Script::new(scripts::ACCEPT),
            accept_turn: Script::new(&scripts::accept_turn()),
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

/// A script's call as a command (`EVALSHA`) of a pipeline.
fn script_cmd(call: &::redis::ScriptInvocation<'_>) -> ::redis::Cmd {
    let mut pipe = ::redis::pipe();
    pipe.invoke_script(call);
    pipe.cmd_iter().next().cloned().unwrap_or_default()
}

fn err(e: RedisError) -> StoreError {
    StoreError(format!("redis: {e}"))
}

fn corrupt(what: &str) -> StoreError {
    StoreError(format!("redis: unreadable {what}"))
}

/// Commands for one round trip ([`RedisDurable::pipelined`]), each marked whether it
/// may run twice.
struct Batch {
    pipe: ::redis::Pipeline,
    repeatable: Vec<bool>,
}

impl Batch {
    fn new() -> Self {
        let mut pipe = ::redis::pipe();
        // Every answer comes back, errors included (see `pipelined`).
        pipe.ignore_errors();
        Batch {
            pipe,
            repeatable: Vec::new(),
        }
    }

    /// A command that must not run twice (a write under a lease, a dedupe claim).
    fn once(&mut self, cmd: ::redis::Cmd) -> &mut Self {
        self.pipe.add_command(cmd);
        self.repeatable.push(false);
        self
    }

    /// A command safe to repeat (a hint, an owner record, an id reservation).
    fn again(&mut self, cmd: ::redis::Cmd) -> &mut Self {
        self.pipe.add_command(cmd);
        self.repeatable.push(true);
        self
    }

    /// A hint's commands ([`RedisDurable::hint_cmds`]), safe to repeat.
    fn hint(&mut self, cmds: [::redis::Cmd; 2]) -> &mut Self {
        for cmd in cmds {
            self.again(cmd);
        }
        self
    }

    /// How many commands it holds.
    fn len(&self) -> usize {
        self.repeatable.len()
    }
}

/// The oldest Redis with every command Parlance sends (`ZADD … LT` came in 6.2).
const MIN_VERSION: (u32, u32) = (6, 2);

/// The version `INFO server` names, when it is older than [`MIN_VERSION`].
fn too_old(info: &str) -> Option<&str> {
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))?
        .trim();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let (Some(Some(major)), Some(Some(minor))) = (parts.next(), parts.next()) else {
        return None;
    };
    ((major, minor) < MIN_VERSION).then_some(version)
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
        // A Redis that does not say its version (INFO renamed away) is given the benefit
        // of the doubt: a command it lacks fails with its own error later.
        let info: Option<String> = ::redis::cmd("INFO")
            .arg("server")
            .query_async(&mut con.clone())
            .await
            .ok();
        if let Some(old) = info.as_deref().and_then(too_old) {
            return Err(StoreError(format!(
                "redis: this server is Redis {old}; Parlance needs Redis {}.{} or later (ZADD LT)",
                MIN_VERSION.0, MIN_VERSION.1
            )));
        }
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
        let mut batch = Batch::new();
        batch.hint(self.hint_cmds(index, tag, score));
        self.pipelined(&batch, &[]).await.map_err(err)?;
        Ok(())
    }

    /// The two commands that add a hint ([`RedisDurable::hint`]), to go in a pipeline
    /// ([`Batch::hint`]), in this order: the new version, then the entry, keeping its
    /// earlier score when there is one (`ZADD LT`, Redis 6.2). Plain commands, not a
    /// script: a script call costs Redis several times as much, and a hint is added
    /// about three times a message. They need not run as one step: a removal
    /// (`HINT_SETTLE`) that runs between them sees the new version and keeps the
    /// entry; one that runs before both is followed by the entry added again.
    fn hint_cmds(&self, index: Index, tag: &str, score: Millis) -> [::redis::Cmd; 2] {
        let (zset, ver) = self.index_keys(index);
        let mut version = ::redis::cmd("HSET");
        version.arg(ver).arg(tag).arg(self.version());
        let mut entry = ::redis::cmd("ZADD");
        entry.arg(zset).arg("LT").arg(score).arg(tag);
        [version, entry]
    }

    /// Runs `batch` (whose scripts are among `scripts`) in one round trip instead of
    /// one per command, Redis running its commands in order; one answer per command.
    ///
    /// A pipeline does not load its scripts as a single call does. When Redis lost them
    /// (it restarted, or `SCRIPT FLUSH`), they are loaded, and from the first command
    /// that failed for it on, each that failed runs again, and so does each that is
    /// safe to repeat ([`Batch::again`]: a hint added after a write stays after it).
    async fn pipelined(
        &self,
        batch: &Batch,
        scripts: &[&Script],
    ) -> Result<Vec<::redis::Value>, RedisError> {
        let lost = |v: &::redis::Value| matches!(v, ::redis::Value::ServerError(e) if e.kind() == Some(ServerErrorKind::NoScript));
        let mut con = self.con();
        let mut answers: Vec<::redis::Value> = batch.pipe.query_async(&mut con).await?;
        if let Some(from) = answers.iter().position(lost) {
            let mut load = ::redis::pipe();
            for script in scripts {
                load.load_script(script).ignore();
            }
            load.query_async::<()>(&mut con).await?;
            let rerun: Vec<usize> = (from..answers.len())
                .filter(|&i| lost(&answers[i]) || batch.repeatable.get(i) == Some(&true))
                .collect();
            let mut rest = ::redis::pipe();
            rest.ignore_errors();
            let cmds: Vec<&::redis::Cmd> = batch.pipe.cmd_iter().collect();
            for &i in &rerun {
                if let Some(cmd) = cmds.get(i) {
                    rest.add_command((*cmd).clone());
                }
            }
            let again: Vec<::redis::Value> = rest.query_async(&mut con).await?;
            for (i, answer) in rerun.into_iter().zip(again) {
                answers[i] = answer;
            }
        }
        // Any other error of a command is the call's.
        answers
            .into_iter()
            .map(::redis::Value::extract_error)
            .collect()
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

#[async_trait::async_trait]
impl Durable for RedisDurable {
    async fn accept(&self, items: Vec<NewItem>) -> Result<Vec<Accepted>, StoreError> {
        inbox::accept(self, items).await
    }

    async fn next_item(&self, key: &SessionKey) -> Result<Option<Item>, StoreError> {
        inbox::next_item(self, key).await
    }

    async fn export_user(&self, key: &SessionKey) -> Result<UserData, StoreError> {
        records::export_user(self, key).await
    }

    async fn acquire(
        &self,
        key: &SessionKey,
        holder: &str,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        leases::acquire(self, key, holder, now, ttl).await
    }

    async fn acquire_reading(
        &self,
        key: &SessionKey,
        holder: &str,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<(Lease, Option<Session>)>, StoreError> {
        leases::acquire_reading(self, key, holder, now, ttl).await
    }

    async fn renew(
        &self,
        lease: &Lease,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        leases::renew(self, lease, now, ttl).await
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        leases::release(self, lease, false).await.map(drop)
    }

    async fn release_looking(&self, lease: &Lease) -> Result<bool, StoreError> {
        leases::release(self, lease, true).await
    }

    async fn load_session(&self, key: &SessionKey) -> Result<Option<Session>, StoreError> {
        turns::load_session(self, key).await
    }

    async fn accept_turn(
        &self,
        lease: &Lease,
        now: Millis,
        turn: DirectTurn,
    ) -> Result<Direct, CommitError> {
        inbox::accept_turn(self, lease, now, turn).await
    }

    fn takes_direct_turns(&self) -> bool {
        true
    }

    async fn commit_turn(
        &self,
        lease: &Lease,
        now: Millis,
        commit: TurnCommit,
    ) -> Result<(), CommitError> {
        turns::commit_turn(self, lease, now, commit).await
    }

    async fn move_aside(
        &self,
        lease: &Lease,
        now: Millis,
        item: ItemId,
        why: &str,
    ) -> Result<(), CommitError> {
        turns::move_aside(self, lease, now, item, why).await
    }

    async fn next_outgoing(&self, key: &SessionKey) -> Result<Option<Outgoing>, StoreError> {
        outbox::next_outgoing(self, key).await
    }

    async fn mark_sent(
        &self,
        lease: &Lease,
        now: Millis,
        at: OutKey,
        sent: SentRecord,
    ) -> Result<Peek, CommitError> {
        match outbox::mark_sent(self, lease, now, at, sent, outbox::WhenIdle::Hold).await? {
            AfterSent::Holding(peek) => Ok(peek),
            // Not asked to release: the script never answers so.
            AfterSent::Released => Err(CommitError::Store(corrupt("mark_sent reply"))),
        }
    }

    async fn mark_sent_releasing(
        &self,
        lease: &Lease,
        now: Millis,
        at: OutKey,
        sent: SentRecord,
    ) -> Result<AfterSent, CommitError> {
        outbox::mark_sent(self, lease, now, at, sent, outbox::WhenIdle::Release).await
    }

    async fn mark_attempt(
        &self,
        lease: &Lease,
        now: Millis,
        at: OutKey,
        ambiguous: bool,
        not_before: Millis,
    ) -> Result<(), CommitError> {
        outbox::mark_attempt(self, lease, now, at, ambiguous, not_before).await
    }

    async fn dead_letter(
        &self,
        lease: &Lease,
        now: Millis,
        at: OutKey,
        reason: &str,
    ) -> Result<(), CommitError> {
        outbox::dead_letter(self, lease, now, at, reason).await
    }

    async fn dead_letters(
        &self,
        phone_number_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        outbox::dead_letters(self, phone_number_id, limit).await
    }

    async fn replay_dead_letter(&self, id: u64, now: Millis) -> Result<bool, StoreError> {
        outbox::replay_dead_letter(self, id, now).await
    }

    async fn users_with_work(
        &self,
        now: Millis,
        limit: usize,
        only: Option<&[String]>,
    ) -> Result<Vec<SessionKey>, StoreError> {
        inbox::users_with_work(self, now, limit, only).await
    }

    async fn fire_due_timers(&self, now: Millis, limit: usize) -> Result<usize, StoreError> {
        inbox::fire_due_timers(self, now, limit).await
    }

    async fn timers(&self, key: &SessionKey) -> Result<Vec<NewTimer>, StoreError> {
        inbox::timers(self, key).await
    }

    async fn record_status(&self, status: &StatusRecord) -> Result<(), StoreError> {
        records::record_status(self, status).await
    }

    async fn sent(&self, message_id: &str) -> Result<Option<SentRecord>, StoreError> {
        records::sent(self, message_id).await
    }

    async fn statuses(&self, message_id: &str) -> Result<Vec<StatusRecord>, StoreError> {
        records::statuses(self, message_id).await
    }

    async fn create_handover(&self, handover: &Handover) -> Result<(), StoreError> {
        handovers::create(self, handover).await
    }

    async fn handover(&self, id: &str) -> Result<Option<Handover>, StoreError> {
        handovers::get(self, id).await
    }

    async fn handover_messages(&self, id: &str) -> Result<Vec<HandoverMessage>, StoreError> {
        handovers::messages(self, id).await
    }

    async fn handovers(&self, filter: &HandoverFilter) -> Result<Vec<Handover>, StoreError> {
        handovers::list(self, filter).await
    }

    async fn user_handovers(&self, key: &SessionKey) -> Result<Vec<Handover>, StoreError> {
        handovers::of_user(self, key).await
    }

    async fn change_handover(
        &self,
        id: &str,
        change: &HandoverChange,
    ) -> Result<Changed, StoreError> {
        handovers::change(self, id, change).await
    }

    async fn add_handover_message(
        &self,
        id: &str,
        message: &HandoverMessage,
    ) -> Result<bool, StoreError> {
        handovers::add_message(self, id, message).await
    }

    async fn count_sessions(&self, since: i64) -> Result<usize, StoreError> {
        records::count_sessions(self, since).await
    }

    async fn delete_user(&self, user: &str) -> Result<usize, StoreError> {
        records::delete_user(self, user).await
    }

    async fn purge(&self, before: Millis) -> Result<usize, StoreError> {
        records::purge(self, before).await
    }

    async fn take_send_slots(
        &self,
        phone_number_id: &str,
        per_second: u32,
        wanted: NonZeroU32,
    ) -> Result<Option<Pace>, StoreError> {
        pace::take_slots(
            self.con(),
            &self.prefix,
            phone_number_id,
            per_second,
            wanted,
        )
        .await
        .map(Some)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        records::ping(self).await
    }
}
