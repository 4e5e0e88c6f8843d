//! The behaviour every [`Durable`](super::Durable) implementation must have. Each
//! implementation's tests call [`run_all`] with a function that makes a fresh, empty
//! store (for Redis: a unique key prefix per call).
//!
//! To be written (helper D), one `pub async fn` per property, each asserting what the
//! event loop relies on:
//! - accept: stores and dedupes in one step; duplicates within one batch; all or nothing;
//!   ids increase in acceptance order; a never-stored item is not a duplicate;
//! - next_item: per user, oldest first; other users' items are independent;
//! - leases: one holder at a time; expiry lets another take over with a larger token;
//!   renew and release; a stale lease cannot commit, mark or dead-letter (Fenced);
//! - commit_turn: session + outbox + timers + item removal happen together; a commit for
//!   an item already handled is Fenced (no double turn);
//! - outbox: drained in (turn, index) order; mark_sent removes and records the wamid;
//!   mark_attempt counts attempts and ambiguous ones and sets not_before; dead letters
//!   are kept, listed per number and replayed at the end of the user's outbox;
//! - users_with_work: pending items and due messages, not users whose lease runs;
//! - timers: replace by name, cancel, fire exactly once into the inbox when due;
//! - records: statuses and sent lookups; delete_user erases everything of a user on
//!   every number and is idempotent; purge forgets old dedupe keys (an old id is new again);
//! - many concurrent accepts and commits from several tasks keep every user's order.

use super::Durable;
use std::future::Future;
use std::sync::Arc;

/// Runs every property against fresh stores made by `fresh`.
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Durable>>,
{
    let _ = fresh;
}
