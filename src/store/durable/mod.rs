//! The durable store: what the per-user event loop (issue 8) stands on.
//!
//! One async interface, [`Durable`], with one conformance suite ([`conformance`]) that
//! every implementation runs: SQLite (the embedded default), Redis (several instances)
//! and memory (tests). It holds, for each (phone number, user):
//!
//! - the **inbox**: every inbound item (user message, status, and later inject, agent
//!   reply, timer, effect result), stored before the webhook is acknowledged. The
//!   dedupe record is written in the same atomic step, so an item that was never
//!   stored is never dropped as a duplicate when Meta redelivers it;
//! - the **session**;
//! - the **outbox**: each outgoing message keyed by (user, turn, index), committed
//!   atomically with the session by the turn that produced it, drained in order by the
//!   sender, which records the wamid Graph gave it;
//! - **dead letters**, durable and replayable, and **timers** (`wait`, session expiry,
//!   handover timeouts) that fire as inbox items.
//!
//! Ordering across instances comes from a per-user **lease with fencing**: whoever
//! holds a user's lease runs that user's turns and sends. Each acquisition gets a token
//! larger than every earlier one for that user, and every write made under a lease
//! carries it: an instance that stalled past its lease cannot commit over the one that
//! took over ([`CommitError::Fenced`]).
//!
//! Architecture Invariant: the store keeps data, it does not decide. Item and message
//! bodies are opaque text encoded by the delivery side (with their own format version);
//! the store never parses them. Time is always passed in (`now`), never read here, so
//! the conformance suite can drive the clock.
//!
//! Implementations: [`sqlite::SqliteDurable`] (one writer thread with group commit; its
//! module docs say why), [`redis::RedisDurable`] (several instances) and
//! [`memory::MemoryDurable`] (a Mutex around maps, the reference for tests). The
//! per-user event loop (`crate::delivery`) serves on it.
//!
//! Times: every [`Millis`] is Unix milliseconds; the two exceptions are
//! [`StatusRecord::at`] and a session's `updated_at` (Meta's and the engine's Unix
//! seconds).

pub mod conformance;
pub mod handover;
pub mod memory;
pub mod redis;
pub mod sqlite;

use super::{SentRecord, SessionKey, StatusRecord, StoreError};
use crate::engine::Session;
use handover::{Changed, Handover, HandoverChange, HandoverData, HandoverFilter, HandoverMessage};
use std::num::NonZeroU32;
use std::time::Duration;

/// Unix time in milliseconds.
pub type Millis = i64;

/// A stored inbox item's id. Ids increase in the order items were accepted, across the
/// whole store, so a user's items are handled in id order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemId(pub u64);

/// What an inbox item is. Stored as its [`ItemKind::as_str`] name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemKind {
    /// A message from the user (webhook, `/dev/message`).
    Message,
    /// A delivery status for a message the bot sent.
    Status,
    /// A message injected through the API, handled as if the user sent it.
    Inject,
    /// A message (or a flow to start) the API sends straight to the user.
    Notify,
    /// An agent's reply during a handover.
    AgentReply,
    /// A timer that fell due ([`NewTimer`]).
    Timer,
    /// The result of an effect (an `http` call, a handover event).
    EffectResult,
}

impl ItemKind {
    pub const ALL: [ItemKind; 7] = [
        ItemKind::Message,
        ItemKind::Status,
        ItemKind::Inject,
        ItemKind::Notify,
        ItemKind::AgentReply,
        ItemKind::Timer,
        ItemKind::EffectResult,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Message => "message",
            ItemKind::Status => "status",
            ItemKind::Inject => "inject",
            ItemKind::Notify => "notify",
            ItemKind::AgentReply => "agent_reply",
            ItemKind::Timer => "timer",
            ItemKind::EffectResult => "effect_result",
        }
    }

    /// The kind named `name`; `None` for a name this build does not know (an item
    /// written by a newer version: moved aside, never a panic).
    pub fn parse(name: &str) -> Option<ItemKind> {
        ItemKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// An item to store in a user's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    pub key: SessionKey,
    /// Meta's wamid, or another producer's idempotency key. An item whose dedupe key
    /// was stored before (within the dedupe TTL, 8 days) is a duplicate and is not
    /// stored again. Keys are global (not per user or number): wamids are unique.
    /// `None`: never a duplicate.
    pub dedupe: Option<String>,
    pub kind: ItemKind,
    /// The item, encoded by the delivery side; opaque to the store.
    pub body: String,
    /// When it happened. Also the dedupe key's age for [`Durable::purge`].
    pub at: Millis,
}

/// What [`Durable::accept`] did with one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Stored(ItemId),
    /// Its dedupe key was stored before: nothing was written.
    Duplicate,
}

/// A stored inbox item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: ItemId,
    pub key: SessionKey,
    pub kind: ItemKind,
    pub body: String,
    pub at: Millis,
}

/// The right to run one user's turns and sends, held by one instance at a time.
///
/// A lease is *held at `now`* when the store's lease for `key` has this holder and
/// this token and `now < until`. An expired lease is not held even if nobody took it
/// over: its holder must `acquire` again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: SessionKey,
    /// Who holds it (an instance id).
    pub holder: String,
    /// Larger than the token of every earlier lease on this user (fencing), even after a
    /// release or an expiry. (After [`Durable::delete_user`] too: SQLite and memory
    /// take tokens from one store-wide counter; Redis's start at its clock in
    /// microseconds, so there it holds unless Redis's clock went back.)
    pub token: u64,
    /// When it expires unless renewed.
    pub until: Millis,
}

/// Where one outgoing message sits in its user's order: the turn that produced it
/// (the session's `turn`) and its index in that turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutKey {
    pub turn: u64,
    pub index: u32,
}

/// An outgoing message a turn produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutgoing {
    pub at: OutKey,
    /// Not to be sent before this time: a `wait` before it in the turn. A time before
    /// the commit's `now` means now.
    pub not_before: Millis,
    /// The Cloud API payload and what the sender needs with it (the sending node, the
    /// `on_window_closed` template), encoded by the delivery side; opaque to the store.
    pub body: String,
}

/// A message waiting in a user's outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub key: SessionKey,
    pub at: OutKey,
    pub body: String,
    /// Send attempts made so far (0 when queued).
    pub attempts: u32,
    /// Attempts whose outcome is unknown (a timeout after the request went out):
    /// Graph may have accepted them, so the sender retries such a message at most once.
    pub ambiguous: u32,
    /// Not to be sent before this time (backoff, `message_delay_ms`). A turn queues its
    /// messages with `not_before` = the commit's `now`.
    pub not_before: Millis,
}

/// A message given up on: kept until replayed or erased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The dead letter's id, for replay.
    pub id: u64,
    pub key: SessionKey,
    pub at: OutKey,
    pub body: String,
    pub attempts: u32,
    /// Why it was given up on (the last error).
    pub reason: String,
    /// When it was given up on.
    pub since: Millis,
}

/// A timer: when it falls due it becomes an inbox item of kind [`ItemKind::Timer`]
/// with this body. A user has at most one timer per name: setting it again replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTimer {
    /// e.g. `wait`, `expiry`, `handover_timeout`.
    pub name: String,
    pub due: Millis,
    pub body: String,
}

/// What one turn changes, committed atomically under the user's lease.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnCommit {
    /// The inbox item the turn handled: removed from the inbox. `None` for a turn no
    /// item started: the outcome of an effect the worker performed (an `http` call),
    /// which goes on from the session alone.
    pub item: Option<ItemId>,
    /// The user's session after the turn.
    pub session: Session,
    /// Messages to send, appended to the user's outbox in [`OutKey`] order.
    pub outgoing: Vec<NewOutgoing>,
    /// Timers to set (replacing any of the same name).
    pub timers: Vec<NewTimer>,
    /// Names of timers to cancel.
    pub cancel_timers: Vec<String>,
}

/// A turn run as soon as its message arrived, before the message was stored: the
/// direct path, taken when the user has no work waiting, which saves storing the item
/// and reading it back. Committed by [`Durable::accept_turn`].
#[derive(Debug, Clone, PartialEq)]
pub struct DirectTurn {
    /// The item the turn handled. Its dedupe key is recorded (a redelivery is a
    /// duplicate); the item itself never waits in the inbox.
    pub item: NewItem,
    /// The user's session after the turn.
    pub session: Session,
    /// The turn's messages, in order: message `i` is queued at (the id the item gets,
    /// `i`), due at its `not_before` or the commit's `now` when that is earlier.
    pub outgoing: Vec<DirectOutgoing>,
}

/// One message of a [`DirectTurn`]; its place in the outbox comes from the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectOutgoing {
    pub not_before: Millis,
    pub body: String,
}

/// What the shared send pace answered ([`Durable::take_send_slots`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// This many sends may go now.
    Go(NonZeroU32),
    /// None may go yet: ask again after this many ms.
    Wait(Millis),
}

/// What a write learned about the user's outbox in the same step, so the sender need
/// not read it again: the store says what the user's first unsent message is after the
/// write (SQLite and memory in the write's transaction, Redis in its script), or does
/// not look (where looking costs more than the separate read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Peek {
    /// Not looked at: read [`Durable::next_outgoing`].
    #[default]
    NotLooked,
    Next {
        /// The user's first unsent message after the write
        /// ([`Durable::next_outgoing`]'s answer at that moment), or `None` when the
        /// outbox is empty.
        next: Option<Outgoing>,
        /// The user's inbox was empty after the write ([`Durable::next_item`] would
        /// have answered `None`). `false`: it held items, or the store did not look
        /// (SQLite: its worker knows without looking, see `Durable::single_process`).
        /// On a store shared by several instances this saves the worker a read of the
        /// inbox at its next step.
        inbox_empty: bool,
    },
}

/// What [`Durable::mark_sent_releasing`] did besides recording the send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterSent {
    /// The lease is still held; what the write saw of the user's outbox and inbox.
    Holding(Peek),
    /// The user's outbox and inbox were empty after the write, and the lease was given
    /// up in the same step (as [`Durable::release`]): an item stored after it finds the
    /// lease free.
    Released,
}

/// What [`Durable::accept_turn`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Direct {
    /// Committed: the item got this id, the turn of its outgoing messages; and the
    /// user's outbox as the commit left it.
    Committed(ItemId, Peek),
    /// Its dedupe key was stored before: nothing was written.
    Duplicate,
    /// The user has items waiting in the inbox, which go first, or the store takes no
    /// direct turns: nothing was written. Store the item with [`Durable::accept`] and
    /// let the worker run it in order.
    Declined,
}

/// What the store keeps about one user on one number ([`Durable::export_user`]), for
/// the user's data request (`GET /api/v1/users/{user}`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserData {
    pub session: Option<Session>,
    /// Unhandled inbox items, oldest first.
    pub items: Vec<Item>,
    /// Queued outgoing messages, in send order.
    pub outgoing: Vec<Outgoing>,
    /// Pending timers, soonest first (then by name).
    pub timers: Vec<NewTimer>,
    /// Dead letters, oldest first.
    pub dead_letters: Vec<DeadLetter>,
    /// Records of messages sent to the user, oldest first (then by wamid).
    pub sent: Vec<SentRecord>,
    /// The statuses of those messages, in the order of `sent`, each message's oldest
    /// first (then by status).
    pub statuses: Vec<StatusRecord>,
    /// Handovers, newest first, each with its messages.
    pub handovers: Vec<HandoverData>,
}

impl UserData {
    /// Whether nothing is stored about the user.
    pub fn is_empty(&self) -> bool {
        self.session.is_none()
            && self.items.is_empty()
            && self.outgoing.is_empty()
            && self.timers.is_empty()
            && self.dead_letters.is_empty()
            && self.sent.is_empty()
            && self.statuses.is_empty()
            && self.handovers.is_empty()
    }
}

/// Why a write under a lease did not happen.
#[derive(Debug)]
pub enum CommitError {
    /// The lease expired and was taken by someone else (or the item was already
    /// handled): nothing was written. The caller drops its work for this user.
    Fenced,
    Store(StoreError),
}

impl From<StoreError> for CommitError {
    fn from(e: StoreError) -> Self {
        CommitError::Store(e)
    }
}

impl std::fmt::Display for CommitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitError::Fenced => f.write_str("the user's lease was lost; nothing was written"),
            CommitError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CommitError {}

/// Whether a status dated `at` (Unix seconds) is older than `before` (Unix ms): the
/// one place the two units meet. `at * 1000 < before`, without overflow.
pub(crate) fn status_older(at: i64, before: Millis) -> bool {
    i128::from(at) * 1000 < i128::from(before)
}

/// The oldest status second [`Durable::purge`] keeps for `before` (Unix ms): a status
/// at second `s` goes when `s` is smaller ([`status_older`]).
pub(crate) fn first_status_second(before: Millis) -> i64 {
    // ceil(before / 1000), also for negative times.
    before.div_euclid(1000) + i64::from(before.rem_euclid(1000) != 0)
}

/// The error for a commit whose outgoing message takes a place already queued.
pub(crate) fn taken(at: OutKey) -> StoreError {
    StoreError(format!(
        "outgoing message ({}, {}) is already queued for this user (or twice in the turn); nothing was written",
        at.turn, at.index
    ))
}

/// The durable store. Every method is one atomic step: it happens entirely or not at
/// all, even when the process dies in the middle.
#[async_trait::async_trait]
pub trait Durable: Send + Sync {
    // ---- inbox

    /// Stores items in their users' inboxes, deciding duplicates in the same step.
    /// All or nothing for each user: on `Err` the webhook must not be acknowledged (5xx,
    /// so Meta redelivers). SQLite and memory store nothing of a failed batch; Redis
    /// stores per user, so some users' items may be stored already, and the redelivery
    /// finds them `Duplicate`: nothing is lost and nothing handled twice either way.
    /// Duplicates within `items` count too: the second is a `Duplicate`. Answers one
    /// [`Accepted`] per item, in order.
    async fn accept(&self, items: Vec<NewItem>) -> Result<Vec<Accepted>, StoreError>;

    /// The oldest unhandled item of the user, if any.
    async fn next_item(&self, key: &SessionKey) -> Result<Option<Item>, StoreError>;

    // ---- leases

    /// Takes the user's lease until `now + ttl` when it is free or expired (or already
    /// held by `holder`, which then gets a new token: its older copy becomes stale);
    /// `None` while another holder's lease runs (`now < until`).
    async fn acquire(
        &self,
        key: &SessionKey,
        holder: &str,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError>;

    /// [`Durable::acquire`], and the user's session read under the new lease (as
    /// [`Durable::load_session`]), for a turn about to run. Stores where each call is a
    /// round trip (Redis) do both in one.
    async fn acquire_reading(
        &self,
        key: &SessionKey,
        holder: &str,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<(Lease, Option<Session>)>, StoreError> {
        let Some(lease) = self.acquire(key, holder, now, ttl).await? else {
            return Ok(None);
        };
        let session = self.load_session(key).await?;
        Ok(Some((lease, session)))
    }

    /// Extends a lease held at `now` (same holder and token, not expired) to
    /// `now + ttl`, keeping its token; `None` when it was lost or expired.
    async fn renew(
        &self,
        lease: &Lease,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError>;

    /// Gives the lease up (when the store's lease still has this holder and token; a
    /// stale copy releases nothing); the next `acquire` by anyone succeeds.
    async fn release(&self, lease: &Lease) -> Result<(), StoreError>;

    /// Gives the lease up, then answers whether the user has items in the inbox: one
    /// another instance stored while this one held the lease (that instance found the
    /// lease taken and left the item to it). Redis answers in the release's round trip.
    async fn release_looking(&self, lease: &Lease) -> Result<bool, StoreError> {
        self.release(lease).await?;
        Ok(self.next_item(&lease.key).await?.is_some())
    }

    // ---- turns

    /// The user's session; `None` for a new user or an unreadable/older-format session
    /// (see `super::decode`).
    async fn load_session(&self, key: &SessionKey) -> Result<Option<Session>, StoreError>;

    /// Commits one turn atomically under `lease`: removes the item (if any), saves the session,
    /// appends the outgoing messages (each due at its `not_before`, or `now` when that is
    /// earlier), sets timers (then cancels the
    /// named ones). [`CommitError::Fenced`], with nothing written, when the lease is not
    /// held at `now`, or the item is gone (handled already) or not this user's.
    /// [`CommitError::Store`], with nothing written, when an outgoing message's
    /// [`OutKey`] is already queued for the user or repeats within the commit: a queued
    /// message is never overwritten. (The delivery side uses the item's id as the
    /// turn, and a user's item ids only grow, so this is a caller's bug.)
    async fn commit_turn(
        &self,
        lease: &Lease,
        now: Millis,
        commit: TurnCommit,
    ) -> Result<(), CommitError>;

    /// Stores `turn.item` as handled and commits its turn, in one atomic step under
    /// `lease`: records the dedupe key, saves the session and queues the outgoing
    /// messages at (the item's new id, index), as [`Durable::accept`] followed by
    /// [`Durable::commit_turn`] would, but in one write. [`Direct::Declined`], with
    /// nothing written, when the user has items in the inbox (they go first) or the
    /// store does not take direct turns ([`Durable::takes_direct_turns`]).
    /// [`CommitError::Fenced`], with nothing written, when the lease is not held at
    /// `now`.
    async fn accept_turn(
        &self,
        _lease: &Lease,
        _now: Millis,
        _turn: DirectTurn,
    ) -> Result<Direct, CommitError> {
        Ok(Direct::Declined)
    }

    /// Whether [`Durable::accept_turn`] may commit (else it always declines, and the
    /// caller need not run the turn first).
    fn takes_direct_turns(&self) -> bool {
        false
    }

    /// Moves an item the delivery side cannot read (a body written by a newer version,
    /// damage) out of the user's inbox, keeping it aside with `why` for people to look
    /// at (SQLite's `d_quarantine`, Redis's `aside` hash), under `lease`: the user's
    /// later items go on. [`CommitError::Fenced`], with nothing written, when the lease
    /// is not held at `now` or the item is gone or not this user's.
    async fn move_aside(
        &self,
        lease: &Lease,
        now: Millis,
        item: ItemId,
        why: &str,
    ) -> Result<(), CommitError>;

    // ---- outbox

    /// The user's first unsent message (smallest [`OutKey`]), whatever its `not_before`.
    async fn next_outgoing(&self, key: &SessionKey) -> Result<Option<Outgoing>, StoreError>;

    /// Graph accepted the message: it leaves the outbox and `sent` is recorded (for
    /// statuses and `failed` matching), in one step. The record is filed under the
    /// lease's user: `sent.key` is replaced by `lease.key`, so a write under one user's
    /// lease can never make a record of another's. This and the next two methods are
    /// [`CommitError::Fenced`], with nothing written, when the lease is not held at `now`
    /// or the user has no queued message at `at`.
    async fn mark_sent(
        &self,
        lease: &Lease,
        now: Millis,
        at: OutKey,
        sent: SentRecord,
    ) -> Result<Peek, CommitError>;

    /// [`Durable::mark_sent`], and when that leaves the user nothing to do (outbox and
    /// inbox empty) the lease given up in the same step ([`AfterSent::Released`]): the
    /// last write of a worker about to stop. Stores shared by instances, where every
    /// call is a round trip (Redis), do both in one; by default the lease is kept (the
    /// caller releases it as usual).
    async fn mark_sent_releasing(
        &self,
        lease: &Lease,
        now: Millis,
        at: OutKey,
        sent: SentRecord,
    ) -> Result<AfterSent, CommitError> {
        self.mark_sent(lease, now, at, sent)
            .await
            .map(AfterSent::Holding)
    }

    /// An attempt failed and will be retried: counts it (and whether its outcome is
    /// unknown) and sets when to try again.
    async fn mark_attempt(
        &self,
        lease: &Lease,
        now: Millis,
        at: OutKey,
        ambiguous: bool,
        not_before: Millis,
    ) -> Result<(), CommitError>;

    /// Gives the message up: it leaves the outbox and becomes a dead letter (its
    /// attempts kept, `since` = `now`). Dead letter ids increase.
    async fn dead_letter(
        &self,
        lease: &Lease,
        now: Millis,
        at: OutKey,
        reason: &str,
    ) -> Result<(), CommitError>;

    /// Dead letters, oldest (smallest id) first, at most `limit`; only one number's when
    /// given.
    async fn dead_letters(
        &self,
        phone_number_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError>;

    /// Puts a dead letter back at the end of its user's outbox (after everything queued,
    /// attempts reset, due now). `false` when there is no such dead letter.
    async fn replay_dead_letter(&self, id: u64, now: Millis) -> Result<bool, StoreError>;

    // ---- finding work (after a restart, or another instance's death)

    /// Users with unhandled items, or outgoing messages due at `now`
    /// (`not_before <= now`), whose lease is free or expired at `now`; at most `limit`,
    /// oldest work first: by the smallest of their items' `at` and their due messages'
    /// `not_before`, then by key. With `only`, users of those phone numbers only (the
    /// ones an instance serves and may send for now): the others' users never fill the
    /// `limit` (a number whose sending is paused may have thousands waiting).
    async fn users_with_work(
        &self,
        now: Millis,
        limit: usize,
        only: Option<&[String]>,
    ) -> Result<Vec<SessionKey>, StoreError>;

    /// Moves timers due at `now` into their users' inboxes as [`ItemKind::Timer`]
    /// items (their body unchanged, `at` = the due time), at most `limit`, in one step
    /// each: a timer fires exactly once. Returns how many fired.
    async fn fire_due_timers(&self, now: Millis, limit: usize) -> Result<usize, StoreError>;

    /// The user's pending timers, soonest first (then by name) (for the trace and tests).
    async fn timers(&self, key: &SessionKey) -> Result<Vec<NewTimer>, StoreError>;

    // ---- records

    /// Keeps a status; a second one with the same message id and status is ignored.
    /// `status.at` is Unix **seconds** (Meta's timestamp), unlike the store's other
    /// times; [`Durable::purge`] and [`Durable::delete_user`] forget statuses too.
    async fn record_status(&self, status: &StatusRecord) -> Result<(), StoreError>;

    /// The message with this wamid, if this store sent it.
    async fn sent(&self, message_id: &str) -> Result<Option<SentRecord>, StoreError>;

    /// Every status recorded for one sent message, oldest first (then by status).
    async fn statuses(&self, message_id: &str) -> Result<Vec<StatusRecord>, StoreError>;

    // ---- handovers ([`handover`])

    /// Stores a new handover record (no messages yet). An id already stored is an
    /// error, with nothing written.
    async fn create_handover(&self, handover: &Handover) -> Result<(), StoreError>;

    /// The handover with this id, if any.
    async fn handover(&self, id: &str) -> Result<Option<Handover>, StoreError>;

    /// A handover's messages in the order they were added (none for an unknown id).
    async fn handover_messages(&self, id: &str) -> Result<Vec<HandoverMessage>, StoreError>;

    /// Handovers that match `filter`, newest first ([`handover::newest_first`]), at
    /// most `filter.limit`.
    async fn handovers(&self, filter: &HandoverFilter) -> Result<Vec<Handover>, StoreError>;

    /// The handovers of `key`'s user on `key`'s number, newest first.
    async fn user_handovers(&self, key: &SessionKey) -> Result<Vec<Handover>, StoreError>;

    /// Changes a handover's state if it is one of `change.from`, in one atomic step
    /// (compare-and-set): of two racing changes from the same state one is
    /// [`Changed::Conflict`].
    async fn change_handover(
        &self,
        id: &str,
        change: &HandoverChange,
    ) -> Result<Changed, StoreError>;

    /// Appends a message to a handover; `false` (nothing written) when there is no
    /// such handover.
    async fn add_handover_message(
        &self,
        id: &str,
        message: &HandoverMessage,
    ) -> Result<bool, StoreError>;

    /// Sessions active at or after `since` (Unix seconds). May be slow: callers cache it.
    async fn count_sessions(&self, since: i64) -> Result<usize, StoreError>;

    /// Erases everything about a user on every number: sessions, inbox, outbox, timers,
    /// dead letters, leases, sent records, handovers with their messages, and the statuses of messages sent to them
    /// (those whose `recipient` is the user, and those of a message in their sent
    /// records). Not dedupe keys: forgetting them would let a redelivery run again
    /// (`purge` forgets them once Meta no longer redelivers). Idempotent. Returns how many sessions
    /// went.
    async fn delete_user(&self, user: &str) -> Result<usize, StoreError>;

    /// Everything kept about `key`'s user on `key`'s number ([`UserData`]): what
    /// [`Durable::delete_user`] erases there, but for leases, dedupe keys and items
    /// moved aside. A session that cannot be read counts as none (as in
    /// [`Durable::load_session`]).
    async fn export_user(&self, key: &SessionKey) -> Result<UserData, StoreError>;

    /// Forgets what is only kept for Meta's redeliveries and late statuses, when it is
    /// older than `before` (Unix **milliseconds**; Meta redelivers for 7 days, so callers
    /// pass now − 8 days): dedupe keys (by their item's `at`, ms), sent records (by
    /// their `at`, ms) and statuses (by their `at`, Unix seconds: one at second `s` is
    /// older when `s * 1000 < before`). Returns how many went, all counted.
    async fn purge(&self, before: Millis) -> Result<usize, StoreError>;

    /// Takes up to `wanted` send slots of a phone number's pace
    /// (`max_messages_per_second`) shared by every instance on this store: as many as
    /// the pace lets go now, one after another (never more than `wanted` single takes
    /// would), or how long to wait when none may. `None` (the default): this store
    /// serves one process, which paces in process.
    async fn take_send_slots(
        &self,
        _phone_number_id: &str,
        _per_second: u32,
        _wanted: NonZeroU32,
    ) -> Result<Option<Pace>, StoreError> {
        Ok(None)
    }

    /// A cheap round trip, for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Whether only this process can use the store (SQLite's file lock, memory): then
    /// no other instance can store an item for a user while this one holds the lease.
    fn single_process(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::{first_status_second, status_older};

    #[test]
    fn status_seconds_meet_milliseconds_in_one_place() {
        for before in [-2_001, -2_000, -1_999, -1, 0, 1, 999, 1_000, 1_001, 5_500] {
            let first = first_status_second(before);
            assert!(!status_older(first, before), "{before}: {first} kept");
            assert!(
                status_older(first - 1, before),
                "{before}: {} goes",
                first - 1
            );
        }
        assert!(!status_older(i64::MAX, i64::MAX));
        assert!(status_older(i64::MIN, i64::MIN + 1));
    }
}
