//! The behaviour every [`Durable`] implementation must have. Each implementation's
//! tests call [`run_all`] with a function that makes a fresh, empty store (for Redis: a
//! unique key prefix per call); every property also runs on its own, so a failing one
//! can be run alone.
//!
//! Each property asserts what the per-user event loop relies on, with exact ids, lists
//! and orders. Time is driven through the `now` arguments, never read. Properties:
//! - accept: stores and dedupes in one step; duplicates within one batch; ids increase
//!   in acceptance order; a never-stored item is not a duplicate;
//! - next_item: per user, oldest first; other users' items are independent;
//! - leases: one holder at a time; expiry lets another take over with a larger token;
//!   renew and release; tokens never go backwards (even after a release or an erasure);
//!   `release_looking` frees the lease and says whether items wait;
//!   `mark_sent_releasing` records like `mark_sent` and frees the lease only when the
//!   user's outbox and inbox are empty (or keeps it, where the store never does); a stale lease
//!   cannot commit, mark or dead-letter (Fenced); `acquire_reading` takes the lease
//!   with the session `load_session` reads;
//! - commit_turn: session + outbox + timers + item removal happen together; a commit for
//!   an item already handled is Fenced (no double turn), and a fenced commit writes
//!   nothing;
//! - outbox: drained in (turn, index) order; mark_sent removes and records the wamid;
//!   mark_attempt counts attempts and ambiguous ones and sets not_before; dead letters
//!   are kept, listed per number and replayed at the end of the user's outbox;
//! - users_with_work: pending items and due messages, not users whose lease runs,
//!   only the numbers asked for (others never fill the limit),
//!   oldest work first;
//! - timers: replace by name, cancel, fire exactly once into the inbox when due;
//! - records: statuses and sent lookups; delete_user erases everything of a user on
//!   every number (statuses too) and is idempotent; purge forgets old dedupe keys (an
//!   old id is new again), old sent records and old statuses (dated in seconds);
//! - export_user: everything kept about one user on one number (session, queued items
//!   and messages, timers, dead letters, sent records with their statuses), in order,
//!   nothing of the user's other numbers or of other users; nothing after erasure;
//! - accept_turn (the direct path): dedupe record, session and outbox in one step, the
//!   messages at (the item's new id, index), ordered among the user's other turns;
//!   declined with nothing written while the user has items waiting; a duplicate or a
//!   stale lease writes nothing. A store that takes no direct turns always declines;
//! - a queued message is never overwritten: a commit onto a queued [`OutKey`] is
//!   refused; a user's item ids only grow (timers and erasure too);
//! - handovers: created once per id; read back with their messages in the order added;
//!   state changes are compare-and-set (a second accept is a conflict, racing changes
//!   from one state: exactly one wins); listed newest first by number, queue and
//!   state; exported with the user and erased with them;
//! - many concurrent accepts and commits from several tasks and two racing holders keep
//!   every user's order and handle every item exactly once.
//!
//! "All or nothing" for `accept` and the atomicity of `commit_turn` under a crash cannot
//! be provoked through the interface; each implementation tests them itself (SQLite:
//! one transaction per call).

use super::handover::{
    Changed, Handover, HandoverAuthor, HandoverChange, HandoverData, HandoverFilter,
    HandoverMessage, HandoverState,
};
use super::{
    Accepted, AfterSent, CommitError, DeadLetter, Direct, DirectOutgoing, DirectTurn, Durable,
    Item, ItemId, ItemKind, Lease, Millis, NewItem, NewOutgoing, NewTimer, OutKey, Outgoing, Peek,
    TurnCommit, UserData,
};
use crate::engine::Session;
use crate::store::{SentRecord, SessionKey, StatusRecord};
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

/// Runs every property against fresh stores made by `fresh`.
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Durable>>,
{
    accept_stores_and_dedupes(fresh().await).await;
    accept_dedupes_within_a_batch(fresh().await).await;
    ids_increase_in_acceptance_order(fresh().await).await;
    items_without_dedupe_key_are_never_duplicates(fresh().await).await;
    next_item_is_per_user_oldest_first(fresh().await).await;
    one_lease_holder_at_a_time(fresh().await).await;
    expired_lease_is_taken_over_with_a_larger_token(fresh().await).await;
    renew_and_release(fresh().await).await;
    acquire_reading_takes_the_lease_with_the_session(fresh().await).await;
    tokens_never_go_backwards(fresh().await).await;
    tokens_grow_across_an_erasure(fresh().await).await;
    release_looking_says_whether_items_wait(fresh().await).await;
    mark_sent_releasing_gives_the_lease_up_only_when_nothing_is_left(fresh().await).await;
    stale_lease_is_fenced_everywhere(fresh().await).await;
    commit_turn_writes_everything_together(fresh().await).await;
    commit_for_a_handled_item_is_fenced(fresh().await).await;
    a_commit_without_an_item_continues_a_turn(fresh().await).await;
    direct_turns_commit_in_one_step(fresh().await).await;
    commit_for_another_users_item_is_fenced(fresh().await).await;
    outbox_drains_in_order(fresh().await).await;
    a_queued_message_is_never_overwritten(fresh().await).await;
    item_ids_grow_per_user(fresh().await).await;
    mark_attempt_counts_and_delays(fresh().await).await;
    a_message_after_a_wait_is_due_at_its_time(fresh().await).await;
    an_item_moved_aside_leaves_the_inbox_under_the_lease(fresh().await).await;
    dead_letters_are_kept_listed_and_replayed(fresh().await).await;
    users_with_work_finds_pending_users(fresh().await).await;
    users_with_work_of_some_numbers(fresh().await).await;
    timers_replace_cancel_and_fire_once(fresh().await).await;
    statuses_and_sent_records(fresh().await).await;
    count_sessions_counts_recent_ones(fresh().await).await;
    delete_user_erases_everything(fresh().await).await;
    export_user_lists_what_is_kept(fresh().await).await;
    purge_forgets_old_dedupe_keys_and_sent_records(fresh().await).await;
    ping_answers(fresh().await).await;
    handovers_change_by_compare_and_set(fresh().await).await;
    handovers_list_newest_first_by_number_queue_and_state(fresh().await).await;
    handovers_are_exported_and_erased(fresh().await).await;
    concurrent_accepts_and_two_holders_keep_order(fresh().await).await;
}

// ---- helpers

const MIN: Duration = Duration::from_secs(60);

fn key(user: &str) -> SessionKey {
    SessionKey::new("1001", user)
}

fn msg(key: &SessionKey, dedupe: Option<&str>, body: &str, at: Millis) -> NewItem {
    NewItem {
        key: key.clone(),
        dedupe: dedupe.map(str::to_string),
        kind: ItemKind::Message,
        body: body.to_string(),
        at,
    }
}

fn stored(accepted: &[Accepted]) -> Vec<ItemId> {
    accepted
        .iter()
        .map(|a| match a {
            Accepted::Stored(id) => *id,
            Accepted::Duplicate => panic!("expected every item stored, got {accepted:?}"),
        })
        .collect()
}

async fn accept_one(store: &dyn Durable, item: NewItem) -> ItemId {
    stored(&store.accept(vec![item]).await.expect("accept"))[0]
}

async fn lease(store: &dyn Durable, key: &SessionKey, holder: &str, now: Millis) -> Lease {
    store
        .acquire(key, holder, now, MIN)
        .await
        .expect("acquire")
        .unwrap_or_else(|| panic!("{holder} could not take the free lease of {key:?}"))
}

fn session(user: &str, turn: u64, updated_at: i64) -> Session {
    let mut s = Session::new(user, 1);
    s.turn = turn;
    s.updated_at = updated_at;
    s
}

fn out(turn: u64, index: u32, body: &str) -> NewOutgoing {
    NewOutgoing {
        at: OutKey { turn, index },
        not_before: 0,
        body: body.to_string(),
    }
}

fn timer(name: &str, due: Millis, body: &str) -> NewTimer {
    NewTimer {
        name: name.to_string(),
        due,
        body: body.to_string(),
    }
}

fn turn(item: ItemId, session: Session, outgoing: Vec<NewOutgoing>) -> TurnCommit {
    TurnCommit {
        item: Some(item),
        session,
        outgoing,
        timers: Vec::new(),
        cancel_timers: Vec::new(),
    }
}

fn sent_record(wamid: &str, key: &SessionKey, at: Millis) -> SentRecord {
    SentRecord {
        message_id: wamid.to_string(),
        key: key.clone(),
        flow: "main".into(),
        node: "welcome".into(),
        at,
    }
}

/// What a write said about the user's outbox (when it looked) is what a read says.
async fn assert_peek(store: &dyn Durable, key: &SessionKey, peek: Peek, what: &str) {
    match peek {
        Peek::NotLooked => {}
        Peek::Next { next, inbox_empty } => {
            assert_eq!(
                next,
                store.next_outgoing(key).await.expect("next_outgoing"),
                "{what}'s peek at the outbox"
            );
            if inbox_empty {
                assert_eq!(
                    store.next_item(key).await.expect("next_item"),
                    None,
                    "{what}'s peek at the inbox"
                );
            }
        }
    }
}

/// Every body in the user's outbox, in order, by draining it (mark_sent) under `lease`.
async fn drain(store: &dyn Durable, lease: &Lease, now: Millis) -> Vec<String> {
    let mut bodies = Vec::new();
    while let Some(o) = store
        .next_outgoing(&lease.key)
        .await
        .expect("next_outgoing")
    {
        let wamid = format!("wamid.drain.{}.{}", o.at.turn, o.at.index);
        let peek = store
            .mark_sent(lease, now, o.at, sent_record(&wamid, &lease.key, now))
            .await
            .expect("mark_sent");
        assert_peek(store, &lease.key, peek, "mark_sent").await;
        bodies.push(o.body);
    }
    bodies
}

fn assert_fenced<T: std::fmt::Debug>(r: Result<T, CommitError>, what: &str) {
    match r {
        Err(CommitError::Fenced) => {}
        other => panic!("{what}: expected Fenced, got {other:?}"),
    }
}

// ---- inbox

/// An item is stored once; the same dedupe key later is a duplicate and stores nothing.
pub async fn accept_stores_and_dedupes(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let first = store
        .accept(vec![msg(&ada, Some("wamid.1"), "hi", 10)])
        .await
        .unwrap();
    let [Accepted::Stored(id)] = first[..] else {
        panic!("expected one stored item, got {first:?}");
    };
    let again = store
        .accept(vec![msg(&ada, Some("wamid.1"), "hi (redelivered)", 11)])
        .await
        .unwrap();
    assert_eq!(again, vec![Accepted::Duplicate]);
    // Only the first copy is in the inbox, unchanged.
    assert_eq!(
        store.next_item(&ada).await.unwrap(),
        Some(Item {
            id,
            key: ada.clone(),
            kind: ItemKind::Message,
            body: "hi".into(),
            at: 10,
        })
    );
    // Dedupe keys are global: another user's item with the same key is a duplicate too.
    assert_eq!(
        store
            .accept(vec![msg(&key("bob"), Some("wamid.1"), "x", 12)])
            .await
            .unwrap(),
        vec![Accepted::Duplicate]
    );
    assert_eq!(store.next_item(&key("bob")).await.unwrap(), None);
    // Every kind round-trips.
    let kinds: Vec<NewItem> = ItemKind::ALL
        .into_iter()
        .map(|kind| NewItem {
            kind,
            ..msg(&key("kinds"), None, kind.as_str(), 20)
        })
        .collect();
    store.accept(kinds).await.unwrap();
    let lease = lease(&*store, &key("kinds"), "a", 0).await;
    for kind in ItemKind::ALL {
        let item = store.next_item(&key("kinds")).await.unwrap().unwrap();
        assert_eq!((item.kind, item.body.as_str()), (kind, kind.as_str()));
        store
            .commit_turn(&lease, 1, turn(item.id, session("kinds", 1, 1), vec![]))
            .await
            .unwrap();
    }
}

/// A batch answers one result per item, in order; the second copy of a key in the same
/// batch is a duplicate.
pub async fn accept_dedupes_within_a_batch(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let bob = key("bob");
    let answers = store
        .accept(vec![
            msg(&ada, Some("wamid.a"), "a", 1),
            msg(&bob, Some("wamid.b"), "b", 2),
            msg(&ada, Some("wamid.a"), "a again", 3),
            msg(&ada, None, "c", 4),
        ])
        .await
        .unwrap();
    assert_eq!(answers.len(), 4);
    assert_eq!(answers[2], Accepted::Duplicate);
    let ids = stored(&[answers[0], answers[1], answers[3]]);
    assert!(ids[0] < ids[1] && ids[1] < ids[2], "{ids:?}");
    let lease = lease(&*store, &ada, "a", 0).await;
    let mut bodies = Vec::new();
    while let Some(item) = store.next_item(&ada).await.unwrap() {
        bodies.push(item.body);
        store
            .commit_turn(&lease, 1, turn(item.id, session("ada", 1, 1), vec![]))
            .await
            .unwrap();
    }
    assert_eq!(bodies, ["a", "c"]);
    // An empty batch is fine.
    assert_eq!(store.accept(Vec::new()).await.unwrap(), vec![]);
}

/// Ids increase in the order items were accepted, across users and batches.
pub async fn ids_increase_in_acceptance_order(store: Arc<dyn Durable>) {
    let mut ids = Vec::new();
    for n in 0..5 {
        let user = if n % 2 == 0 { "ada" } else { "bob" };
        // `at` goes backwards on purpose: the order is acceptance, not Meta's timestamp.
        ids.push(
            accept_one(
                &*store,
                msg(&key(user), Some(&format!("w{n}")), "x", 100 - n),
            )
            .await,
        );
    }
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "ids strictly increase in acceptance order");
}

/// An item without a dedupe key is never a duplicate; a key that was never stored is
/// not one either.
pub async fn items_without_dedupe_key_are_never_duplicates(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let a = store
        .accept(vec![msg(&ada, None, "x", 1), msg(&ada, None, "x", 1)])
        .await
        .unwrap();
    assert_eq!(stored(&a).len(), 2);
    let b = store
        .accept(vec![msg(&ada, Some("wamid.never-seen"), "y", 2)])
        .await
        .unwrap();
    assert_eq!(stored(&b).len(), 1);
}

/// Each user's items come oldest first, independently of other users' items.
pub async fn next_item_is_per_user_oldest_first(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let bob = key("bob");
    let ada_other_number = SessionKey::new("2002", "ada");
    assert_eq!(store.next_item(&ada).await.unwrap(), None);
    let ids = stored(
        &store
            .accept(vec![
                msg(&ada, None, "ada 1", 1),
                msg(&bob, None, "bob 1", 1),
                msg(&ada, None, "ada 2", 1),
                msg(&ada_other_number, None, "ada@2002 1", 1),
            ])
            .await
            .unwrap(),
    );
    assert_eq!(store.next_item(&ada).await.unwrap().unwrap().id, ids[0]);
    assert_eq!(store.next_item(&bob).await.unwrap().unwrap().id, ids[1]);
    assert_eq!(
        store
            .next_item(&ada_other_number)
            .await
            .unwrap()
            .unwrap()
            .id,
        ids[3]
    );
    // Reading does not consume: only a committed turn removes an item.
    assert_eq!(store.next_item(&ada).await.unwrap().unwrap().id, ids[0]);
    let l = lease(&*store, &ada, "a", 0).await;
    store
        .commit_turn(&l, 1, turn(ids[0], session("ada", 1, 1), vec![]))
        .await
        .unwrap();
    let next = store.next_item(&ada).await.unwrap().unwrap();
    assert_eq!((next.id, next.body.as_str()), (ids[2], "ada 2"));
    // Bob and ada on the other number are untouched.
    assert_eq!(store.next_item(&bob).await.unwrap().unwrap().id, ids[1]);
    assert_eq!(
        store
            .next_item(&ada_other_number)
            .await
            .unwrap()
            .unwrap()
            .id,
        ids[3]
    );
}

// ---- leases

/// While a lease runs, nobody else gets it; the holder itself renews it by acquiring.
pub async fn one_lease_holder_at_a_time(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let a = store.acquire(&ada, "a", 1000, MIN).await.unwrap().unwrap();
    assert_eq!(
        (a.key.clone(), a.holder.as_str(), a.until),
        (ada.clone(), "a", 61_000)
    );
    assert_eq!(store.acquire(&ada, "b", 1001, MIN).await.unwrap(), None);
    assert_eq!(store.acquire(&ada, "b", 60_999, MIN).await.unwrap(), None);
    // Another user's lease is independent.
    assert!(
        store
            .acquire(&key("bob"), "b", 1001, MIN)
            .await
            .unwrap()
            .is_some()
    );
    // The same holder acquiring again gets a new, larger token: the old one is stale.
    let again = store.acquire(&ada, "a", 2000, MIN).await.unwrap().unwrap();
    assert!(again.token > a.token, "{again:?} after {a:?}");
    assert_eq!(again.until, 62_000);
    let item = accept_one(&*store, msg(&ada, None, "x", 1)).await;
    assert_fenced(
        store
            .commit_turn(&a, 2001, turn(item, session("ada", 1, 1), vec![]))
            .await,
        "commit under the superseded token",
    );
    store
        .commit_turn(&again, 2001, turn(item, session("ada", 1, 1), vec![]))
        .await
        .unwrap();
}

/// A lease is held while `now < until`; at `until` another holder takes it over with a
/// larger token, and the old holder is fenced.
pub async fn expired_lease_is_taken_over_with_a_larger_token(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let item = accept_one(&*store, msg(&ada, None, "x", 1)).await;
    let a = lease(&*store, &ada, "a", 0).await;
    assert_eq!(store.acquire(&ada, "b", 59_999, MIN).await.unwrap(), None);
    let b = store
        .acquire(&ada, "b", 60_000, MIN)
        .await
        .unwrap()
        .unwrap();
    assert!(b.token > a.token, "{b:?} after {a:?}");
    assert_eq!((b.holder.as_str(), b.until), ("b", 120_000));
    // The stalled holder cannot renew or commit; the new one can.
    assert_eq!(store.renew(&a, 60_001, MIN).await.unwrap(), None);
    assert_fenced(
        store
            .commit_turn(&a, 60_001, turn(item, session("ada", 1, 1), vec![]))
            .await,
        "commit by the stalled holder",
    );
    assert_eq!(
        store.load_session(&ada).await.unwrap(),
        None,
        "nothing written"
    );
    assert_eq!(store.next_item(&ada).await.unwrap().unwrap().id, item);
    store
        .commit_turn(&b, 60_002, turn(item, session("ada", 1, 1), vec![]))
        .await
        .unwrap();
    // A lease that expired is not held even if nobody took it: the holder must acquire.
    let c = lease(&*store, &key("bob"), "a", 0).await;
    let bob_item = accept_one(&*store, msg(&key("bob"), None, "x", 1)).await;
    assert_fenced(
        store
            .commit_turn(&c, 60_000, turn(bob_item, session("bob", 1, 1), vec![]))
            .await,
        "commit after the lease's end",
    );
}

/// Renew extends a held lease (same token); release frees it for anyone at once.
pub async fn renew_and_release(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let a = lease(&*store, &ada, "a", 0).await;
    let renewed = store.renew(&a, 50_000, MIN).await.unwrap().unwrap();
    assert_eq!(
        renewed,
        Lease {
            until: 110_000,
            ..a.clone()
        }
    );
    // The renewed lease still runs past the first one's end.
    assert_eq!(store.acquire(&ada, "b", 100_000, MIN).await.unwrap(), None);
    // Either copy carries the token: both are the same lease.
    let item = accept_one(&*store, msg(&ada, None, "x", 1)).await;
    store
        .commit_turn(&renewed, 100_000, turn(item, session("ada", 1, 1), vec![]))
        .await
        .unwrap();
    store.release(&renewed).await.unwrap();
    assert_eq!(store.renew(&renewed, 100_001, MIN).await.unwrap(), None);
    let b = store
        .acquire(&ada, "b", 100_001, MIN)
        .await
        .unwrap()
        .unwrap();
    assert!(b.token > a.token);
    // Releasing a lease that is no longer held does nothing to the new holder's.
    store.release(&a).await.unwrap();
    assert_eq!(store.acquire(&ada, "c", 100_002, MIN).await.unwrap(), None);
    assert_eq!(
        store
            .renew(&b, 100_003, MIN)
            .await
            .unwrap()
            .map(|l| l.until),
        Some(160_003)
    );
}

/// `acquire_reading` takes the lease as `acquire` does and answers the session
/// `load_session` would: none for a new user, the committed one after a turn, nothing
/// (and no lease) while another holder's lease runs.
pub async fn acquire_reading_takes_the_lease_with_the_session(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let (a, none) = store
        .acquire_reading(&ada, "a", 0, MIN)
        .await
        .unwrap()
        .expect("a free lease");
    assert_eq!(none, None, "a new user has no session");
    assert_eq!(store.acquire(&ada, "b", 1, MIN).await.unwrap(), None);
    assert_eq!(
        store.acquire_reading(&ada, "b", 1, MIN).await.unwrap(),
        None,
        "a's lease runs"
    );
    let item = accept_one(&*store, msg(&ada, None, "x", 1)).await;
    store
        .commit_turn(&a, 2, turn(item, session("ada", 1, 2), vec![]))
        .await
        .unwrap();
    store.release(&a).await.unwrap();
    let (b, read) = store
        .acquire_reading(&ada, "b", 3, MIN)
        .await
        .unwrap()
        .expect("a released lease is free");
    assert!(b.token > a.token);
    assert_eq!(read, Some(session("ada", 1, 2)));
    assert_eq!(read, store.load_session(&ada).await.unwrap());
    // The new lease fences the old one, as `acquire`'s does.
    let again = accept_one(&*store, msg(&ada, None, "y", 4)).await;
    assert_fenced(
        store
            .commit_turn(&a, 4, turn(again, session("ada", 2, 4), vec![]))
            .await,
        "a commit under the lease before",
    );
}

/// Tokens grow with every acquisition of a user's lease, released or expired.
pub async fn tokens_never_go_backwards(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let mut last = 0;
    let mut now = 0;
    for n in 0..6 {
        let holder = if n % 2 == 0 { "a" } else { "b" };
        let l = lease(&*store, &ada, holder, now).await;
        assert!(l.token > last, "token {} after {last}", l.token);
        last = l.token;
        if n % 3 == 0 {
            store.release(&l).await.unwrap();
        } else {
            now = l.until; // let it expire
        }
        now += 1;
    }
}

/// An erasure forgets the user's last token, yet the next lease's is larger: a worker
/// still holding the old one cannot commit over the new holder's work.
pub async fn tokens_grow_across_an_erasure(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let a = lease(&*store, &ada, "a", 0).await;
    store.release(&a).await.unwrap();
    store.delete_user(&ada.user).await.unwrap();
    let b = lease(&*store, &ada, "a", 1).await;
    assert!(
        b.token > a.token,
        "token {} after {} and an erasure",
        b.token,
        a.token
    );
}

/// `release_looking` gives the lease up like `release` (anyone may take it at once; a
/// stale copy frees nothing) and answers whether the user has items in the inbox.
pub async fn release_looking_says_whether_items_wait(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let a = lease(&*store, &ada, "a", 0).await;
    assert!(!store.release_looking(&a).await.unwrap(), "an empty inbox");
    let b = lease(&*store, &ada, "b", 1).await;
    accept_one(&*store, msg(&ada, None, "stored meanwhile", 2)).await;
    // Another user's items are not this user's.
    accept_one(&*store, msg(&key("bob"), None, "bob's", 3)).await;
    // The stale copy frees nothing; it still says what waits.
    assert!(store.release_looking(&a).await.unwrap());
    assert_eq!(store.acquire(&ada, "c", 2, MIN).await.unwrap(), None);
    assert!(store.release_looking(&b).await.unwrap(), "an item waits");
    lease(&*store, &ada, "c", 3).await;
    let bob = lease(&*store, &key("bob"), "a", 3).await;
    store.release(&bob).await.unwrap();
    let carol = lease(&*store, &key("carol"), "a", 3).await;
    assert!(
        !store.release_looking(&carol).await.unwrap(),
        "bob's item is not carol's"
    );
}

/// `mark_sent_releasing` records the send as `mark_sent` does. It keeps the lease while
/// a message or an item is left; when nothing is, it either frees the lease (anyone may
/// take it at once) or, in a store that never does, keeps it. A stale lease is fenced
/// and frees nothing.
pub async fn mark_sent_releasing_gives_the_lease_up_only_when_nothing_is_left(
    store: Arc<dyn Durable>,
) {
    let ada = key("ada");
    let first = accept_one(&*store, msg(&ada, None, "one", 1)).await;
    let a = lease(&*store, &ada, "a", 1).await;
    let replies = vec![out(first.0, 0, "r0"), out(first.0, 1, "r1")];
    store
        .commit_turn(&a, 2, turn(first, session("ada", 1, 2), replies))
        .await
        .unwrap();
    let holding = |after: AfterSent, why: &str| match after {
        AfterSent::Holding(peek) => peek,
        AfterSent::Released => panic!("the lease was given up with {why}"),
    };
    let at = |index| OutKey {
        turn: first.0,
        index,
    };
    let after = store
        .mark_sent_releasing(&a, 3, at(0), sent_record("wamid.r0", &ada, 3))
        .await
        .unwrap();
    let peek = holding(after, "a message left");
    assert_peek(&*store, &ada, peek, "mark_sent_releasing").await;
    assert_eq!(store.acquire(&ada, "b", 3, MIN).await.unwrap(), None);
    let second = accept_one(&*store, msg(&ada, None, "two", 4)).await;
    let after = store
        .mark_sent_releasing(&a, 5, at(1), sent_record("wamid.r1", &ada, 5))
        .await
        .unwrap();
    let peek = holding(after, "an item waiting");
    assert_peek(&*store, &ada, peek, "mark_sent_releasing").await;
    assert_eq!(store.acquire(&ada, "b", 5, MIN).await.unwrap(), None);
    store
        .commit_turn(
            &a,
            6,
            turn(second, session("ada", 2, 6), vec![out(second.0, 0, "r2")]),
        )
        .await
        .unwrap();
    let last = OutKey {
        turn: second.0,
        index: 0,
    };
    let after = store
        .mark_sent_releasing(&a, 7, last, sent_record("wamid.r2", &ada, 7))
        .await
        .unwrap();
    match after {
        AfterSent::Released => {
            let b = lease(&*store, &ada, "b", 8).await;
            assert!(b.token > a.token);
        }
        AfterSent::Holding(peek) => {
            assert_peek(&*store, &ada, peek, "mark_sent_releasing").await;
            assert_eq!(store.acquire(&ada, "b", 8, MIN).await.unwrap(), None);
            store.release(&a).await.unwrap();
            lease(&*store, &ada, "b", 8).await;
        }
    }
    for wamid in ["wamid.r0", "wamid.r1", "wamid.r2"] {
        assert!(
            store.sent(wamid).await.unwrap().is_some(),
            "{wamid} recorded"
        );
    }
    assert_eq!(store.next_outgoing(&ada).await.unwrap(), None);
    // The stale lease is fenced: nothing recorded, b's lease kept.
    assert_fenced(
        store
            .mark_sent_releasing(&a, 9, last, sent_record("wamid.again", &ada, 9))
            .await,
        "mark_sent_releasing",
    );
    assert!(store.sent("wamid.again").await.unwrap().is_none());
    assert_eq!(store.acquire(&ada, "c", 9, MIN).await.unwrap(), None);
}

/// A lease that is no longer held cannot commit, mark or dead-letter; nothing changes.
pub async fn stale_lease_is_fenced_everywhere(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let first = accept_one(&*store, msg(&ada, None, "one", 1)).await;
    let a = lease(&*store, &ada, "a", 0).await;
    store
        .commit_turn(
            &a,
            1,
            turn(first, session("ada", 1, 1), vec![out(1, 0, "reply")]),
        )
        .await
        .unwrap();
    let second = accept_one(&*store, msg(&ada, None, "two", 2)).await;
    let b = lease(&*store, &ada, "b", 60_000).await;
    let at = OutKey { turn: 1, index: 0 };
    assert_fenced(
        store
            .commit_turn(&a, 60_001, turn(second, session("ada", 2, 2), vec![]))
            .await,
        "commit_turn",
    );
    assert_fenced(
        store
            .mark_sent(&a, 60_001, at, sent_record("wamid.out", &ada, 60_001))
            .await,
        "mark_sent",
    );
    assert_fenced(
        store.mark_attempt(&a, 60_001, at, true, 90_000).await,
        "mark_attempt",
    );
    assert_fenced(
        store.dead_letter(&a, 60_001, at, "gave up").await,
        "dead_letter",
    );
    // Nothing of the stale holder's writes happened.
    assert_eq!(store.load_session(&ada).await.unwrap().unwrap().turn, 1);
    assert_eq!(store.next_item(&ada).await.unwrap().unwrap().id, second);
    assert_eq!(
        store.next_outgoing(&ada).await.unwrap(),
        Some(Outgoing {
            key: ada.clone(),
            at,
            body: "reply".into(),
            attempts: 0,
            ambiguous: 0,
            not_before: 1,
        })
    );
    assert_eq!(store.sent("wamid.out").await.unwrap(), None);
    assert!(store.dead_letters(None, 10).await.unwrap().is_empty());
    // Another user's lease writes only that user's outbox and records. Bob has a
    // message at the same place as ada's: bob's lease sends bob's, never ada's, and the
    // record is filed under bob whatever key it names.
    let bob = key("bob");
    let bob_item = accept_one(&*store, msg(&bob, None, "bob's", 3)).await;
    let bob_lease = lease(&*store, &bob, "b", 60_000).await;
    store
        .commit_turn(
            &bob_lease,
            60_000,
            turn(bob_item, session("bob", 1, 1), vec![out(1, 0, "to bob")]),
        )
        .await
        .unwrap();
    store
        .mark_sent(&bob_lease, 60_001, at, sent_record("wamid.x", &ada, 60_001))
        .await
        .unwrap();
    assert_eq!(store.next_outgoing(&bob).await.unwrap(), None);
    assert_eq!(
        store.sent("wamid.x").await.unwrap(),
        Some(sent_record("wamid.x", &bob, 60_001)),
        "a record is filed under the lease's user"
    );
    // Now bob has nothing there: bob's lease cannot touch ada's message.
    assert_fenced(
        store
            .mark_attempt(&bob_lease, 60_001, at, true, 90_000)
            .await,
        "mark_attempt for another user",
    );
    assert_fenced(
        store.dead_letter(&bob_lease, 60_001, at, "x").await,
        "dead_letter for another user",
    );
    assert_fenced(
        store
            .mark_sent(&bob_lease, 60_001, at, sent_record("wamid.y", &ada, 1))
            .await,
        "mark_sent for another user",
    );
    assert_eq!(store.sent("wamid.y").await.unwrap(), None);
    assert_eq!(
        store
            .next_outgoing(&ada)
            .await
            .unwrap()
            .map(|o| (o.body, o.attempts)),
        Some(("reply".to_string(), 0)),
        "ada's message untouched"
    );
    // The current holder can.
    store
        .mark_sent(&b, 60_002, at, sent_record("wamid.out", &ada, 60_002))
        .await
        .unwrap();
    assert_eq!(store.next_outgoing(&ada).await.unwrap(), None);
}

// ---- turns

/// One commit removes the item, saves the session, queues the messages and sets and
/// cancels timers.
pub async fn commit_turn_writes_everything_together(store: Arc<dyn Durable>) {
    let ada = key("ada");
    assert_eq!(store.load_session(&ada).await.unwrap(), None);
    let ids = stored(
        &store
            .accept(vec![msg(&ada, None, "one", 1), msg(&ada, None, "two", 2)])
            .await
            .unwrap(),
    );
    let l = lease(&*store, &ada, "a", 0).await;
    let mut s = session("ada", 1, 5);
    s.vars.insert("topic".into(), serde_json::json!("sales"));
    store
        .commit_turn(
            &l,
            5,
            TurnCommit {
                item: Some(ids[0]),
                session: s.clone(),
                outgoing: vec![out(1, 0, "first"), out(1, 1, "second")],
                timers: vec![timer("wait", 9_000, "wake"), timer("expiry", 8_000, "bye")],
                cancel_timers: Vec::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(store.load_session(&ada).await.unwrap(), Some(s.clone()));
    assert_eq!(store.next_item(&ada).await.unwrap().unwrap().id, ids[1]);
    assert_eq!(
        store.next_outgoing(&ada).await.unwrap(),
        Some(Outgoing {
            key: ada.clone(),
            at: OutKey { turn: 1, index: 0 },
            body: "first".into(),
            attempts: 0,
            ambiguous: 0,
            not_before: 5,
        })
    );
    assert_eq!(
        store.timers(&ada).await.unwrap(),
        vec![timer("expiry", 8_000, "bye"), timer("wait", 9_000, "wake")]
    );
    // The second turn replaces one timer, cancels the other, and queues behind the first.
    s.turn = 2;
    store
        .commit_turn(
            &l,
            6,
            TurnCommit {
                item: Some(ids[1]),
                session: s.clone(),
                outgoing: vec![out(2, 0, "third")],
                timers: vec![timer("wait", 7_000, "wake sooner")],
                cancel_timers: vec!["expiry".into(), "never-set".into()],
            },
        )
        .await
        .unwrap();
    assert_eq!(store.load_session(&ada).await.unwrap().unwrap().turn, 2);
    assert_eq!(store.next_item(&ada).await.unwrap(), None);
    assert_eq!(
        store.timers(&ada).await.unwrap(),
        vec![timer("wait", 7_000, "wake sooner")]
    );
    assert_eq!(drain(&*store, &l, 7).await, ["first", "second", "third"]);
}

/// A turn that stopped at an effect goes on when its outcome is in: the rest commits
/// with no inbox item (the user's waiting items stay), its messages queued after the
/// turn's first ones and before the next item's; under a stale lease nothing is written.
pub async fn a_commit_without_an_item_continues_a_turn(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let ids = stored(
        &store
            .accept(vec![
                msg(&ada, None, "lookup", 1),
                msg(&ada, None, "later", 2),
            ])
            .await
            .unwrap(),
    );
    let l = lease(&*store, &ada, "a", 0).await;
    let mut s = session("ada", 1, 5);
    let first = ids[0].0;
    store
        .commit_turn(
            &l,
            5,
            TurnCommit {
                item: Some(ids[0]),
                session: s.clone(),
                outgoing: vec![out(first, 0, "looking")],
                timers: vec![timer("effect", 60_000, "watch")],
                cancel_timers: Vec::new(),
            },
        )
        .await
        .unwrap();
    s.vars.insert("order".into(), serde_json::json!("shipped"));
    let rest = TurnCommit {
        item: None,
        session: s.clone(),
        outgoing: vec![out(first, 1, "found"), out(first, 2, "bye")],
        timers: Vec::new(),
        cancel_timers: vec!["effect".into()],
    };
    // Another holder took the user over: the old lease writes nothing.
    let other = lease(&*store, &ada, "b", 30 * 60_000).await;
    assert!(matches!(
        store.commit_turn(&l, 30 * 60_000, rest.clone()).await,
        Err(CommitError::Fenced)
    ));
    assert_eq!(store.timers(&ada).await.unwrap().len(), 1);
    store
        .commit_turn(&other, 30 * 60_000 + 1, rest)
        .await
        .unwrap();
    assert_eq!(store.load_session(&ada).await.unwrap(), Some(s.clone()));
    assert_eq!(store.timers(&ada).await.unwrap(), Vec::new());
    // The waiting item is untouched, and its turn queues after the rest.
    let waiting = store.next_item(&ada).await.unwrap().unwrap();
    assert_eq!(waiting.id, ids[1]);
    store
        .commit_turn(
            &other,
            30 * 60_000 + 2,
            turn(ids[1], s, vec![out(ids[1].0, 0, "later")]),
        )
        .await
        .unwrap();
    assert_eq!(
        drain(&*store, &other, 30 * 60_000 + 3).await,
        ["looking", "found", "bye", "later"]
    );
}

fn direct(item: NewItem, session: Session, bodies: &[&str]) -> DirectTurn {
    DirectTurn {
        item,
        session,
        outgoing: bodies
            .iter()
            .map(|b| DirectOutgoing {
                not_before: 0,
                body: (*b).to_string(),
            })
            .collect(),
    }
}

/// The direct path: a turn run before its item was stored commits the dedupe record, the
/// session and its messages in one step, queued among the user's other turns; it never
/// overtakes an item waiting in the inbox.
pub async fn direct_turns_commit_in_one_step(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let l = lease(&*store, &ada, "a", 0).await;
    let first = direct(
        msg(&ada, Some("wamid.d1"), "hi", 3),
        session("ada", 1, 5),
        &["one", "two"],
    );
    if !store.takes_direct_turns() {
        assert_eq!(
            store.accept_turn(&l, 5, first).await.unwrap(),
            Direct::Declined
        );
        assert_eq!(store.load_session(&ada).await.unwrap(), None);
        accept_one(&*store, msg(&ada, Some("wamid.d1"), "hi", 3)).await;
        return;
    }
    // An earlier turn's message is still queued: the direct turn's go after it.
    let earlier = accept_one(&*store, msg(&ada, None, "earlier", 1)).await;
    store
        .commit_turn(
            &l,
            4,
            turn(
                earlier,
                session("ada", 1, 4),
                vec![out(earlier.0, 0, "zero")],
            ),
        )
        .await
        .unwrap();
    let Direct::Committed(id, peek) = store.accept_turn(&l, 5, first).await.unwrap() else {
        panic!("a user with an empty inbox takes the direct path");
    };
    // ada's earlier message is still queued: it comes first.
    assert_peek(&*store, &ada, peek, "accept_turn").await;
    assert!(id > earlier, "{id:?} after {earlier:?}");
    assert_eq!(
        store.load_session(&ada).await.unwrap(),
        Some(session("ada", 1, 5))
    );
    assert_eq!(
        store.next_item(&ada).await.unwrap(),
        None,
        "the item never waits"
    );
    assert_eq!(
        store
            .accept(vec![msg(&ada, Some("wamid.d1"), "hi", 3)])
            .await
            .unwrap(),
        [Accepted::Duplicate],
        "a redelivery of a direct turn's message is a duplicate"
    );
    // A redelivery run directly again writes nothing either.
    let again = direct(
        msg(&ada, Some("wamid.d1"), "hi", 3),
        session("ada", 9, 9),
        &["x"],
    );
    assert_eq!(
        store.accept_turn(&l, 6, again).await.unwrap(),
        Direct::Duplicate
    );
    assert_eq!(store.load_session(&ada).await.unwrap().unwrap().turn, 1);
    let queued = store.next_outgoing(&ada).await.unwrap().unwrap();
    assert_eq!(
        queued.at,
        OutKey {
            turn: earlier.0,
            index: 0
        }
    );
    // The messages are due at the commit's `now` and keyed by the new id.
    let l2 = store.renew(&l, 7, MIN).await.unwrap().unwrap();
    store
        .mark_sent(&l2, 7, queued.at, sent_record("wamid.s0", &ada, 7))
        .await
        .unwrap();
    assert_eq!(
        store.next_outgoing(&ada).await.unwrap(),
        Some(Outgoing {
            key: ada.clone(),
            at: OutKey {
                turn: id.0,
                index: 0
            },
            body: "one".into(),
            attempts: 0,
            ambiguous: 0,
            not_before: 5,
        })
    );
    assert_eq!(drain(&*store, &l2, 8).await, ["one", "two"]);
    // With an item waiting, the direct path declines and writes nothing: not even the
    // dedupe key, so the same message can then be accepted and run in order.
    let waiting = accept_one(&*store, msg(&ada, None, "waiting", 9)).await;
    assert!(waiting > id, "{waiting:?} after {id:?}");
    let behind = direct(
        msg(&ada, Some("wamid.d2"), "b", 9),
        session("ada", 7, 9),
        &["y"],
    );
    assert_eq!(
        store.accept_turn(&l2, 9, behind).await.unwrap(),
        Direct::Declined
    );
    assert_eq!(store.load_session(&ada).await.unwrap().unwrap().turn, 1);
    assert_eq!(store.next_outgoing(&ada).await.unwrap(), None);
    accept_one(&*store, msg(&ada, Some("wamid.d2"), "b", 9)).await;
    // Another user is not held up by ada's waiting items.
    let bob = key("bob");
    let lb = lease(&*store, &bob, "a", 9).await;
    let bobs = direct(
        msg(&bob, Some("wamid.d3"), "b", 9),
        session("bob", 1, 9),
        &["z"],
    );
    assert!(matches!(
        store.accept_turn(&lb, 9, bobs).await.unwrap(),
        Direct::Committed(..)
    ));
    // A stale lease writes nothing.
    store.release(&lb).await.unwrap();
    let taken = lease(&*store, &bob, "b", 10).await;
    let stale = direct(
        msg(&bob, Some("wamid.d4"), "b", 10),
        session("bob", 2, 10),
        &["w"],
    );
    assert_fenced(
        store.accept_turn(&lb, 10, stale).await,
        "a stale lease's direct turn",
    );
    assert_eq!(store.load_session(&bob).await.unwrap().unwrap().turn, 1);
    assert_eq!(drain(&*store, &taken, 11).await, ["z"]);
    accept_one(&*store, msg(&bob, Some("wamid.d4"), "b", 10)).await;
}

/// Two commits for one item: the second is Fenced and writes nothing (no double turn).
pub async fn commit_for_a_handled_item_is_fenced(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let item = accept_one(&*store, msg(&ada, None, "x", 1)).await;
    let l = lease(&*store, &ada, "a", 0).await;
    store
        .commit_turn(
            &l,
            1,
            turn(item, session("ada", 1, 1), vec![out(1, 0, "once")]),
        )
        .await
        .unwrap();
    assert_fenced(
        store
            .commit_turn(
                &l,
                2,
                TurnCommit {
                    timers: vec![timer("wait", 10, "t")],
                    ..turn(item, session("ada", 2, 2), vec![out(2, 0, "twice")])
                },
            )
            .await,
        "second commit of one item",
    );
    assert_eq!(store.load_session(&ada).await.unwrap().unwrap().turn, 1);
    assert_eq!(store.timers(&ada).await.unwrap(), vec![]);
    assert_eq!(drain(&*store, &l, 3).await, ["once"]);
    // An id that was never stored is Fenced too.
    assert_fenced(
        store
            .commit_turn(&l, 4, turn(ItemId(u64::MAX), session("ada", 3, 3), vec![]))
            .await,
        "commit of an unknown item",
    );
}

/// An item of another user cannot be consumed under this user's lease.
pub async fn commit_for_another_users_item_is_fenced(store: Arc<dyn Durable>) {
    let bob_item = accept_one(&*store, msg(&key("bob"), None, "bob's", 1)).await;
    let ada_lease = lease(&*store, &key("ada"), "a", 0).await;
    assert_fenced(
        store
            .commit_turn(&ada_lease, 1, turn(bob_item, session("ada", 1, 1), vec![]))
            .await,
        "commit of another user's item",
    );
    assert_eq!(
        store.next_item(&key("bob")).await.unwrap().unwrap().id,
        bob_item
    );
    assert_eq!(store.load_session(&key("ada")).await.unwrap(), None);
}

// ---- outbox

/// Messages leave in (turn, index) order, whatever order they were queued in; mark_sent
/// removes one and records its wamid.
/// An item the delivery side cannot read is moved aside under the lease; the user's
/// next item is next. A stale lease moves nothing.
pub async fn an_item_moved_aside_leaves_the_inbox_under_the_lease(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let bad = accept_one(&*store, msg(&ada, Some("a.1"), "from the future", 10)).await;
    let good = accept_one(&*store, msg(&ada, Some("a.2"), "hi", 11)).await;
    let stale = lease(&*store, &ada, "one", 1_000).await;
    store.release(&stale).await.unwrap();
    let l = lease(&*store, &ada, "two", 1_000).await;
    assert_fenced(
        store.move_aside(&stale, 1_000, bad, "unreadable").await,
        "move_aside under a stale lease",
    );
    assert_eq!(
        store.next_item(&ada).await.unwrap().map(|i| i.id),
        Some(bad)
    );
    let bob = key("bob");
    let bobs = accept_one(&*store, msg(&bob, Some("b.1"), "bob", 12)).await;
    assert_fenced(
        store.move_aside(&l, 1_000, bobs, "unreadable").await,
        "move_aside of another user's item",
    );
    store
        .move_aside(&l, 1_000, bad, "unreadable")
        .await
        .unwrap();
    assert_eq!(
        store.next_item(&ada).await.unwrap().map(|i| i.id),
        Some(good)
    );
    assert_fenced(
        store.move_aside(&l, 1_000, bad, "unreadable").await,
        "an item already moved aside",
    );
    assert_eq!(
        store.next_item(&bob).await.unwrap().map(|i| i.id),
        Some(bobs)
    );
}

/// A message queued behind a `wait` keeps its `not_before` (a restart in the pause
/// sends it on time, not at once); one in the past is due at the commit.
pub async fn a_message_after_a_wait_is_due_at_its_time(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let id = accept_one(&*store, msg(&ada, Some("w.1"), "wait", 1_000)).await;
    let l = lease(&*store, &ada, "one", 1_000).await;
    let mut later = out(1, 1, "after the wait");
    later.not_before = 6_000;
    let mut past = out(1, 0, "before the wait");
    past.not_before = 10;
    store
        .commit_turn(&l, 1_000, turn(id, session("ada", 1, 1), vec![past, later]))
        .await
        .unwrap();
    let first = store.next_outgoing(&ada).await.unwrap().expect("queued");
    assert_eq!(
        first.not_before, 1_000,
        "a past not_before means the commit's now"
    );
    store
        .mark_sent(&l, 1_000, first.at, sent_record("wamid.w1", &ada, 1_000))
        .await
        .unwrap();
    let second = store.next_outgoing(&ada).await.unwrap().expect("queued");
    assert_eq!(
        (second.body.as_str(), second.not_before),
        ("after the wait", 6_000)
    );
    store.release(&l).await.unwrap();
    assert!(
        store
            .users_with_work(5_999, 10, None)
            .await
            .unwrap()
            .is_empty(),
        "not due before its time"
    );
    assert_eq!(
        store.users_with_work(6_000, 10, None).await.unwrap(),
        vec![ada]
    );
}

/// A turn whose outgoing message takes an [`OutKey`] already queued for the user (or
/// one used twice in the commit) is refused with `CommitError::Store` and writes
/// nothing: a queued message is never overwritten or moved.
pub async fn a_queued_message_is_never_overwritten(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let ids = stored(
        &store
            .accept(vec![msg(&ada, None, "1", 1), msg(&ada, None, "2", 2)])
            .await
            .unwrap(),
    );
    let l = lease(&*store, &ada, "a", 0).await;
    store
        .commit_turn(
            &l,
            1,
            turn(
                ids[0],
                session("ada", 1, 1),
                vec![out(7, 0, "first"), out(7, 1, "second")],
            ),
        )
        .await
        .unwrap();
    let collide = TurnCommit {
        timers: vec![timer("wait", 50, "t")],
        ..turn(
            ids[1],
            session("ada", 2, 2),
            vec![out(8, 0, "new"), out(7, 0, "overwrite")],
        )
    };
    match store.commit_turn(&l, 2, collide).await {
        Err(CommitError::Store(_)) => {}
        other => panic!("a commit onto a queued OutKey: expected Store, got {other:?}"),
    }
    let twice = turn(
        ids[1],
        session("ada", 2, 2),
        vec![out(8, 0, "x"), out(8, 0, "y")],
    );
    match store.commit_turn(&l, 2, twice).await {
        Err(CommitError::Store(_)) => {}
        other => panic!("one OutKey twice in a commit: expected Store, got {other:?}"),
    }
    // Nothing of either was written.
    assert_eq!(store.load_session(&ada).await.unwrap().unwrap().turn, 1);
    assert_eq!(store.next_item(&ada).await.unwrap().unwrap().id, ids[1]);
    assert_eq!(store.timers(&ada).await.unwrap(), vec![]);
    let first = store.next_outgoing(&ada).await.unwrap().unwrap();
    assert_eq!(
        (first.at, first.body.as_str(), first.not_before),
        (OutKey { turn: 7, index: 0 }, "first", 1)
    );
    // A commit at free places goes on.
    store
        .commit_turn(
            &l,
            3,
            turn(ids[1], session("ada", 2, 2), vec![out(8, 0, "third")]),
        )
        .await
        .unwrap();
    assert_eq!(drain(&*store, &l, 4).await, ["first", "second", "third"]);
}

/// A user's item ids only grow, whatever stores them (accept, a timer firing) and
/// even after the user was erased: the delivery side uses the item id as the turn of
/// its [`OutKey`]s, so a smaller id could collide with a queued message.
pub async fn item_ids_grow_per_user(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let bob = key("bob");
    let first = accept_one(&*store, msg(&ada, None, "a", 100)).await;
    let l = lease(&*store, &ada, "a", 0).await;
    store
        .commit_turn(
            &l,
            1,
            TurnCommit {
                timers: vec![timer("wait", 5, "t")],
                ..turn(first, session("ada", 1, 1), vec![])
            },
        )
        .await
        .unwrap();
    // Another user's items in between, with older times.
    accept_one(&*store, msg(&bob, None, "b", 1)).await;
    assert_eq!(store.fire_due_timers(5, 10).await.unwrap(), 1);
    let fired = store.next_item(&ada).await.unwrap().unwrap();
    assert_eq!(fired.kind, ItemKind::Timer);
    assert!(fired.id > first, "{:?} after {first:?}", fired.id);
    let third = accept_one(&*store, msg(&ada, None, "c", 0)).await;
    assert!(third > fired.id, "{third:?} after {:?}", fired.id);
    assert_eq!(store.delete_user("ada").await.unwrap(), 1);
    let after = accept_one(&*store, msg(&ada, None, "d", 0)).await;
    assert!(after > third, "{after:?} after erasure, {third:?} before");
}

pub async fn outbox_drains_in_order(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let bob = key("bob");
    let ids = stored(
        &store
            .accept(vec![msg(&ada, None, "1", 1), msg(&ada, None, "2", 2)])
            .await
            .unwrap(),
    );
    let l = lease(&*store, &ada, "a", 0).await;
    store
        .commit_turn(
            &l,
            10,
            turn(
                ids[0],
                session("ada", 1, 1),
                vec![out(1, 1, "1.1"), out(1, 0, "1.0"), out(1, 10, "1.10")],
            ),
        )
        .await
        .unwrap();
    store
        .commit_turn(
            &l,
            11,
            turn(ids[1], session("ada", 2, 2), vec![out(2, 0, "2.0")]),
        )
        .await
        .unwrap();
    assert_eq!(store.next_outgoing(&bob).await.unwrap(), None);
    let first = store.next_outgoing(&ada).await.unwrap().unwrap();
    assert_eq!(
        (first.at, first.body.as_str()),
        (OutKey { turn: 1, index: 0 }, "1.0")
    );
    let record = sent_record("wamid.out.1", &ada, 12);
    store
        .mark_sent(&l, 12, first.at, record.clone())
        .await
        .unwrap();
    assert_eq!(store.sent("wamid.out.1").await.unwrap(), Some(record));
    // A message already sent cannot be marked again (the sender lost track): Fenced.
    assert_fenced(
        store
            .mark_sent(&l, 13, first.at, sent_record("wamid.out.again", &ada, 13))
            .await,
        "mark_sent twice",
    );
    assert_eq!(store.sent("wamid.out.again").await.unwrap(), None);
    assert_eq!(drain(&*store, &l, 14).await, ["1.1", "1.10", "2.0"]);
}

/// mark_attempt counts attempts, ambiguous ones apart, and sets not_before.
pub async fn mark_attempt_counts_and_delays(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let item = accept_one(&*store, msg(&ada, None, "x", 1)).await;
    let l = lease(&*store, &ada, "a", 0).await;
    store
        .commit_turn(
            &l,
            10,
            turn(
                item,
                session("ada", 1, 1),
                vec![out(1, 0, "a"), out(1, 1, "b")],
            ),
        )
        .await
        .unwrap();
    let at = OutKey { turn: 1, index: 0 };
    store.mark_attempt(&l, 11, at, false, 1_000).await.unwrap();
    store
        .mark_attempt(&l, 1_000, at, true, 5_000)
        .await
        .unwrap();
    store
        .mark_attempt(&l, 5_000, at, false, 20_000)
        .await
        .unwrap();
    assert_eq!(
        store.next_outgoing(&ada).await.unwrap(),
        Some(Outgoing {
            key: ada.clone(),
            at,
            body: "a".into(),
            attempts: 3,
            ambiguous: 1,
            not_before: 20_000,
        })
    );
    // Only that message changed.
    store
        .mark_sent(&l, 20_000, at, sent_record("wamid.a", &ada, 20_000))
        .await
        .unwrap();
    let b = store.next_outgoing(&ada).await.unwrap().unwrap();
    assert_eq!((b.attempts, b.ambiguous, b.not_before), (0, 0, 10));
    // A message that is not queued cannot be marked.
    assert_fenced(
        store
            .mark_attempt(&l, 20_001, OutKey { turn: 9, index: 0 }, false, 1)
            .await,
        "mark_attempt of a message not queued",
    );
}

/// A message given up on leaves the outbox and is kept as a dead letter, listed per
/// number, oldest first; a replay puts it at the end of its user's outbox.
pub async fn dead_letters_are_kept_listed_and_replayed(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let ada2 = SessionKey::new("2002", "ada");
    let ids = stored(
        &store
            .accept(vec![
                msg(&ada, None, "1", 1),
                msg(&ada2, None, "1", 1),
                msg(&ada, None, "2", 2),
            ])
            .await
            .unwrap(),
    );
    let l = lease(&*store, &ada, "a", 0).await;
    let l2 = lease(&*store, &ada2, "a", 0).await;
    store
        .commit_turn(
            &l,
            10,
            turn(
                ids[0],
                session("ada", 1, 1),
                vec![out(1, 0, "lost"), out(1, 1, "next")],
            ),
        )
        .await
        .unwrap();
    store
        .commit_turn(
            &l2,
            10,
            turn(
                ids[1],
                session("ada", 1, 1),
                vec![out(1, 0, "other number")],
            ),
        )
        .await
        .unwrap();
    let first = OutKey { turn: 1, index: 0 };
    store.mark_attempt(&l, 11, first, true, 12).await.unwrap();
    store.mark_attempt(&l, 12, first, false, 13).await.unwrap();
    store
        .dead_letter(&l, 20, first, "131026: receiver incapable")
        .await
        .unwrap();
    store
        .dead_letter(&l2, 21, first, "131047: window closed")
        .await
        .unwrap();
    assert_fenced(
        store.dead_letter(&l, 22, first, "again").await,
        "a message already dead cannot die again",
    );
    // It left the outbox: the next message is the next one.
    assert_eq!(
        store.next_outgoing(&ada).await.unwrap().unwrap().body,
        "next"
    );
    assert_eq!(store.next_outgoing(&ada2).await.unwrap(), None);
    let all = store.dead_letters(None, 10).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all[0].id < all[1].id);
    assert_eq!(
        all[0],
        DeadLetter {
            id: all[0].id,
            key: ada.clone(),
            at: first,
            body: "lost".into(),
            attempts: 2,
            reason: "131026: receiver incapable".into(),
            since: 20,
        }
    );
    assert_eq!((all[1].key.clone(), all[1].since), (ada2.clone(), 21));
    assert_eq!(
        store.dead_letters(Some("2002"), 10).await.unwrap(),
        vec![all[1].clone()]
    );
    assert_eq!(store.dead_letters(Some("3003"), 10).await.unwrap(), vec![]);
    assert_eq!(
        store.dead_letters(None, 1).await.unwrap(),
        vec![all[0].clone()]
    );
    // A later turn queues more; the replay goes after everything queued.
    store
        .commit_turn(
            &l,
            30,
            turn(ids[2], session("ada", 2, 2), vec![out(2, 0, "turn 2")]),
        )
        .await
        .unwrap();
    assert!(store.replay_dead_letter(all[0].id, 40).await.unwrap());
    assert!(
        !store.replay_dead_letter(all[0].id, 41).await.unwrap(),
        "replayed once"
    );
    assert!(!store.replay_dead_letter(u64::MAX, 41).await.unwrap());
    assert_eq!(
        store.dead_letters(None, 10).await.unwrap(),
        vec![all[1].clone()]
    );
    let mut order = Vec::new();
    while let Some(o) = store.next_outgoing(&ada).await.unwrap() {
        if o.body == "lost" {
            // Attempts reset, due at the replay.
            assert_eq!((o.attempts, o.ambiguous, o.not_before), (0, 0, 40));
        }
        store
            .mark_sent(
                &l,
                50,
                o.at,
                sent_record(&format!("w{}", order.len()), &ada, 50),
            )
            .await
            .unwrap();
        order.push(o.body);
    }
    assert_eq!(order, ["next", "turn 2", "lost"]);
    // Replayed into an empty outbox, it is the next message; a later turn queues after.
    assert!(store.replay_dead_letter(all[1].id, 60).await.unwrap());
    let o = store.next_outgoing(&ada2).await.unwrap().unwrap();
    assert_eq!((o.body.as_str(), o.not_before), ("other number", 60));
    let later = accept_one(&*store, msg(&ada2, None, "3", 70)).await;
    store
        .commit_turn(
            &l2,
            70,
            turn(later, session("ada", 2, 2), vec![out(later.0, 0, "later")]),
        )
        .await
        .unwrap();
    assert_eq!(drain(&*store, &l2, 80).await, ["other number", "later"]);
}

// ---- finding work

/// Users with items, or messages due, whose lease is free or expired; oldest work first
/// (a user's work dates from its oldest item's `at` or its oldest due message's
/// `not_before`).
/// `only`: other numbers' users (older ones, more than `limit` of them) neither come
/// back nor take the places of the wanted number's.
pub async fn users_with_work_of_some_numbers(store: Arc<dyn Durable>) {
    let paused: Vec<SessionKey> = (0..5)
        .map(|i| SessionKey::new("2002", &format!("old{i}")))
        .collect();
    for (i, k) in paused.iter().enumerate() {
        accept_one(&*store, msg(k, None, "waiting", 10 + i as Millis)).await;
    }
    let (ada, bob) = (key("ada"), key("bob"));
    accept_one(&*store, msg(&ada, None, "a", 100)).await;
    accept_one(&*store, msg(&bob, None, "b", 200)).await;
    let mine = ["1001".to_string()];
    assert_eq!(
        store.users_with_work(1_000, 2, Some(&mine)).await.unwrap(),
        vec![ada.clone(), bob.clone()]
    );
    assert_eq!(
        store.users_with_work(1_000, 1, Some(&mine)).await.unwrap(),
        vec![ada.clone()]
    );
    // Without `only` the older users of 2002 come first, as before.
    assert_eq!(
        store.users_with_work(1_000, 2, None).await.unwrap(),
        paused[..2].to_vec()
    );
    let both = ["2002".to_string(), "1001".to_string()];
    assert_eq!(
        store
            .users_with_work(1_000, 10, Some(&both))
            .await
            .unwrap()
            .len(),
        7
    );
    assert_eq!(
        store.users_with_work(1_000, 10, Some(&[])).await.unwrap(),
        vec![],
        "no number: nobody"
    );
}

pub async fn users_with_work_finds_pending_users(store: Arc<dyn Durable>) {
    let (ada, bob, cy, dee, eve) = (key("ada"), key("bob"), key("cy"), key("dee"), key("eve"));
    assert_eq!(store.users_with_work(0, 10, None).await.unwrap(), vec![]);
    // bob: a message queued at 50 (his item handled). ada: an item at 100.
    let bob_item = accept_one(&*store, msg(&bob, None, "b", 40)).await;
    let bob_lease = lease(&*store, &bob, "a", 0).await;
    store
        .commit_turn(
            &bob_lease,
            50,
            turn(bob_item, session("bob", 1, 1), vec![out(1, 0, "to bob")]),
        )
        .await
        .unwrap();
    store.release(&bob_lease).await.unwrap();
    accept_one(&*store, msg(&ada, None, "a", 100)).await;
    // cy: an item at 10, but another instance holds cy's lease until 60_000.
    accept_one(&*store, msg(&cy, None, "c", 10)).await;
    let _cy_lease = lease(&*store, &cy, "other", 0).await;
    // dee: a message not due before 5_000.
    let dee_item = accept_one(&*store, msg(&dee, None, "d", 1)).await;
    let dee_lease = lease(&*store, &dee, "a", 0).await;
    store
        .commit_turn(
            &dee_lease,
            2,
            turn(dee_item, session("dee", 1, 1), vec![out(1, 0, "to dee")]),
        )
        .await
        .unwrap();
    store
        .mark_attempt(&dee_lease, 3, OutKey { turn: 1, index: 0 }, false, 5_000)
        .await
        .unwrap();
    store.release(&dee_lease).await.unwrap();
    // eve: nothing at all but a session.
    let eve_item = accept_one(&*store, msg(&eve, None, "e", 1)).await;
    let eve_lease = lease(&*store, &eve, "a", 0).await;
    store
        .commit_turn(&eve_lease, 2, turn(eve_item, session("eve", 1, 1), vec![]))
        .await
        .unwrap();
    store.release(&eve_lease).await.unwrap();

    assert_eq!(
        store.users_with_work(1_000, 10, None).await.unwrap(),
        vec![bob.clone(), ada.clone()]
    );
    assert_eq!(
        store.users_with_work(1_000, 1, None).await.unwrap(),
        vec![bob.clone()]
    );
    assert_eq!(
        store.users_with_work(5_000, 10, None).await.unwrap(),
        vec![bob.clone(), ada.clone(), dee.clone()]
    );
    // When cy's lease ends, cy's older item comes first.
    assert_eq!(
        store.users_with_work(60_000, 10, None).await.unwrap(),
        vec![cy.clone(), bob.clone(), ada.clone(), dee.clone()]
    );
    // A user whose lease this instance holds is not "free" either.
    let _ada_lease = lease(&*store, &ada, "a", 60_000).await;
    assert_eq!(
        store.users_with_work(60_001, 10, None).await.unwrap(),
        vec![cy.clone(), bob.clone(), dee.clone()]
    );
    // An unhandled item is work at once, even when its `at` is later than `now` (a
    // sender's clock ahead of ours); it ranks by that `at`.
    let fay = key("fay");
    accept_one(&*store, msg(&fay, None, "f", 100_000)).await;
    assert_eq!(
        store.users_with_work(60_002, 10, None).await.unwrap(),
        vec![cy.clone(), bob.clone(), dee.clone(), fay.clone()]
    );
    assert_eq!(
        store.users_with_work(60_003, 10, None).await.unwrap(),
        vec![cy, bob, dee, fay],
        "and again"
    );
}

/// A timer set again replaces the old one; a cancelled one never fires; a due one
/// becomes exactly one inbox item, in due order, `limit` at a time.
pub async fn timers_replace_cancel_and_fire_once(store: Arc<dyn Durable>) {
    let ada = key("ada");
    let bob = key("bob");
    let ids = stored(
        &store
            .accept(vec![msg(&ada, None, "a", 1), msg(&bob, None, "b", 1)])
            .await
            .unwrap(),
    );
    let la = lease(&*store, &ada, "a", 0).await;
    let lb = lease(&*store, &bob, "a", 0).await;
    store
        .commit_turn(
            &la,
            1,
            TurnCommit {
                timers: vec![
                    timer("wait", 1_000, "ada wait"),
                    timer("expiry", 9_000, "ada expiry"),
                ],
                ..turn(ids[0], session("ada", 1, 1), vec![])
            },
        )
        .await
        .unwrap();
    store
        .commit_turn(
            &lb,
            1,
            TurnCommit {
                timers: vec![
                    timer("wait", 500, "bob wait"),
                    timer("handover_timeout", 800, "bob ho"),
                ],
                ..turn(ids[1], session("bob", 1, 1), vec![])
            },
        )
        .await
        .unwrap();
    assert_eq!(store.fire_due_timers(499, 10).await.unwrap(), 0);
    assert_eq!(store.fire_due_timers(1_000, 1).await.unwrap(), 1, "limit");
    // The soonest fired first: bob's wait, as a Timer item at its due time.
    let fired = store.next_item(&bob).await.unwrap().unwrap();
    assert_eq!(
        (fired.kind, fired.body.as_str(), fired.at),
        (ItemKind::Timer, "bob wait", 500)
    );
    assert_eq!(
        store.timers(&bob).await.unwrap(),
        vec![timer("handover_timeout", 800, "bob ho")]
    );
    assert_eq!(store.fire_due_timers(1_000, 10).await.unwrap(), 2);
    assert_eq!(
        store.fire_due_timers(1_000, 10).await.unwrap(),
        0,
        "fired once"
    );
    assert_eq!(
        store.timers(&ada).await.unwrap(),
        vec![timer("expiry", 9_000, "ada expiry")]
    );
    assert_eq!(store.timers(&bob).await.unwrap(), vec![]);
    // Bob's two timer items, in due order; ada's one.
    let mut bob_bodies = Vec::new();
    while let Some(item) = store.next_item(&bob).await.unwrap() {
        bob_bodies.push(item.body);
        store
            .commit_turn(&lb, 2, turn(item.id, session("bob", 2, 2), vec![]))
            .await
            .unwrap();
    }
    assert_eq!(bob_bodies, ["bob wait", "bob ho"]);
    let ada_timer = store.next_item(&ada).await.unwrap().unwrap();
    assert_eq!(
        (ada_timer.kind, ada_timer.body.as_str(), ada_timer.at),
        (ItemKind::Timer, "ada wait", 1_000)
    );
    // Replacing and cancelling in the turn that handles the timer.
    store
        .commit_turn(
            &la,
            2,
            TurnCommit {
                timers: vec![timer("expiry", 20_000, "ada expiry later")],
                ..turn(ada_timer.id, session("ada", 2, 2), vec![])
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store.fire_due_timers(10_000, 10).await.unwrap(),
        0,
        "replaced, not due"
    );
    let third = accept_one(&*store, msg(&ada, None, "c", 3)).await;
    store
        .commit_turn(
            &la,
            3,
            TurnCommit {
                cancel_timers: vec!["expiry".into()],
                ..turn(third, session("ada", 3, 3), vec![])
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store.fire_due_timers(100_000, 10).await.unwrap(),
        0,
        "cancelled"
    );
    assert_eq!(store.next_item(&ada).await.unwrap(), None);
}

// ---- records

/// Statuses are kept per message, oldest first, once per status; sent records are
/// found by wamid.
pub async fn statuses_and_sent_records(store: Arc<dyn Durable>) {
    let failed = StatusRecord {
        message_id: "wamid.out.1".into(),
        status: "failed".into(),
        at: 20,
        recipient: Some("4915112345678".into()),
        error_code: Some(131047),
        error_title: Some("Re-engagement message".into()),
    };
    let sent = StatusRecord {
        status: "sent".into(),
        at: 10,
        error_code: None,
        error_title: None,
        ..failed.clone()
    };
    store.record_status(&failed).await.unwrap();
    store.record_status(&sent).await.unwrap();
    store.record_status(&sent).await.unwrap();
    assert_eq!(
        store.statuses("wamid.out.1").await.unwrap(),
        vec![sent, failed]
    );
    assert_eq!(store.statuses("wamid.other").await.unwrap(), vec![]);
    assert_eq!(store.sent("wamid.none").await.unwrap(), None);
}

/// Sessions updated at or after `since` count.
pub async fn count_sessions_counts_recent_ones(store: Arc<dyn Durable>) {
    assert_eq!(store.count_sessions(0).await.unwrap(), 0);
    for (user, updated) in [("a", 100), ("b", 200), ("c", 300)] {
        let k = key(user);
        let item = accept_one(&*store, msg(&k, None, "x", 1)).await;
        let l = lease(&*store, &k, "a", 0).await;
        store
            .commit_turn(&l, 1, turn(item, session(user, 1, updated), vec![]))
            .await
            .unwrap();
    }
    assert_eq!(store.count_sessions(0).await.unwrap(), 3);
    assert_eq!(store.count_sessions(200).await.unwrap(), 2);
    assert_eq!(store.count_sessions(301).await.unwrap(), 0);
}

/// delete_user erases sessions, inbox, outbox, timers, dead letters, leases and sent
/// records of a user on every number, leaves others alone, and can run again.
pub async fn delete_user_erases_everything(store: Arc<dyn Durable>) {
    let keys = [
        SessionKey::new("1001", "ada"),
        SessionKey::new("2002", "ada"),
        SessionKey::new("1001", "bob"),
    ];
    let mut leases = Vec::new();
    for k in &keys {
        let ids = stored(
            &store
                .accept(vec![msg(k, None, "1", 1), msg(k, None, "2", 2)])
                .await
                .unwrap(),
        );
        let l = store.acquire(k, "a", 0, MIN).await.unwrap().unwrap();
        store
            .commit_turn(
                &l,
                1,
                TurnCommit {
                    timers: vec![timer("wait", 10, "t")],
                    ..turn(
                        ids[0],
                        session(&k.user, 1, 1),
                        vec![out(1, 0, "dead"), out(1, 1, "sent"), out(1, 2, "queued")],
                    )
                },
            )
            .await
            .unwrap();
        store
            .dead_letter(&l, 2, OutKey { turn: 1, index: 0 }, "x")
            .await
            .unwrap();
        let wamid = format!("wamid.{}.{}", k.phone_number_id, k.user);
        store
            .mark_sent(
                &l,
                3,
                OutKey { turn: 1, index: 1 },
                sent_record(&wamid, k, 3),
            )
            .await
            .unwrap();
        leases.push(l);
    }
    // Statuses: of a message to ada (by recipient), of one sent to ada (by her sent
    // record, without a recipient), and bob's two kinds.
    let status = |wamid: &str, recipient: Option<&str>| StatusRecord {
        message_id: wamid.to_string(),
        status: "delivered".into(),
        at: 3,
        recipient: recipient.map(str::to_string),
        error_code: None,
        error_title: None,
    };
    for s in [
        status("wamid.st.ada", Some("ada")),
        status("wamid.1001.ada", None),
        status("wamid.2002.ada", Some("ada")),
        status("wamid.st.bob", Some("bob")),
        status("wamid.1001.bob", None),
    ] {
        store.record_status(&s).await.unwrap();
    }
    assert_eq!(store.delete_user("ada").await.unwrap(), 2);
    for wamid in ["wamid.st.ada", "wamid.1001.ada", "wamid.2002.ada"] {
        assert_eq!(store.statuses(wamid).await.unwrap(), vec![], "{wamid}");
    }
    assert_eq!(
        store.statuses("wamid.st.bob").await.unwrap(),
        vec![status("wamid.st.bob", Some("bob"))]
    );
    assert_eq!(
        store.statuses("wamid.1001.bob").await.unwrap(),
        vec![status("wamid.1001.bob", None)]
    );
    for k in &keys[..2] {
        assert_eq!(store.load_session(k).await.unwrap(), None);
        assert_eq!(store.next_item(k).await.unwrap(), None);
        assert_eq!(store.next_outgoing(k).await.unwrap(), None);
        assert_eq!(store.timers(k).await.unwrap(), vec![]);
        let wamid = format!("wamid.{}.{}", k.phone_number_id, k.user);
        assert_eq!(store.sent(&wamid).await.unwrap(), None);
        // The lease went too: anyone may take it at once, and the old one is fenced.
        let taken = store.acquire(k, "b", 4, MIN).await.unwrap();
        assert!(taken.is_some(), "the lease of {k:?} was erased");
    }
    assert_fenced(
        store
            .mark_sent(
                &leases[0],
                5,
                OutKey { turn: 1, index: 2 },
                sent_record("w", &keys[0], 5),
            )
            .await,
        "mark_sent after erasure",
    );
    let dead = store.dead_letters(None, 10).await.unwrap();
    assert_eq!(
        dead.iter().map(|d| d.key.clone()).collect::<Vec<_>>(),
        vec![keys[2].clone()]
    );
    // Bob is untouched.
    let bob = &keys[2];
    assert_eq!(store.load_session(bob).await.unwrap().unwrap().turn, 1);
    assert_eq!(store.next_item(bob).await.unwrap().unwrap().body, "2");
    assert_eq!(
        store.next_outgoing(bob).await.unwrap().unwrap().body,
        "queued"
    );
    assert_eq!(
        store.timers(bob).await.unwrap(),
        vec![timer("wait", 10, "t")]
    );
    assert!(store.sent("wamid.1001.bob").await.unwrap().is_some());
    // Idempotent.
    assert_eq!(store.delete_user("ada").await.unwrap(), 0);
    assert_eq!(store.delete_user("nobody").await.unwrap(), 0);
}

/// export_user lists everything kept about one user on one number, in order; nothing
/// of another number or user; nothing once the user is erased.
pub async fn export_user_lists_what_is_kept(store: Arc<dyn Durable>) {
    let ada = SessionKey::new("1001", "ada");
    let elsewhere = SessionKey::new("2002", "ada");
    let bob = SessionKey::new("1001", "bob");
    assert_eq!(store.export_user(&ada).await.unwrap(), UserData::default());
    assert!(UserData::default().is_empty());
    for k in [&ada, &elsewhere, &bob] {
        let ids = stored(
            &store
                .accept(vec![
                    msg(k, None, "first", 1),
                    msg(k, None, "second", 2),
                    msg(k, None, "third", 3),
                ])
                .await
                .unwrap(),
        );
        let l = store.acquire(k, "a", 0, MIN).await.unwrap().unwrap();
        store
            .commit_turn(
                &l,
                1,
                TurnCommit {
                    timers: vec![timer("wait", 20, "w"), timer("expiry", 10, "e")],
                    ..turn(
                        ids[0],
                        session(&k.user, 7, 1),
                        vec![
                            out(ids[0].0, 0, "dead"),
                            out(ids[0].0, 1, "sent"),
                            out(ids[0].0, 2, "queued 1"),
                            out(ids[0].0, 3, "queued 2"),
                        ],
                    )
                },
            )
            .await
            .unwrap();
        store
            .dead_letter(
                &l,
                2,
                OutKey {
                    turn: ids[0].0,
                    index: 0,
                },
                "gave up",
            )
            .await
            .unwrap();
        let wamid = format!("wamid.{}.{}", k.phone_number_id, k.user);
        store
            .mark_sent(
                &l,
                3,
                OutKey {
                    turn: ids[0].0,
                    index: 1,
                },
                sent_record(&wamid, k, 3),
            )
            .await
            .unwrap();
        for (status, at) in [("read", 5), ("delivered", 4)] {
            store
                .record_status(&StatusRecord {
                    message_id: wamid.clone(),
                    status: status.into(),
                    at,
                    recipient: Some(k.user.clone()),
                    error_code: None,
                    error_title: None,
                })
                .await
                .unwrap();
        }
    }
    let got = store.export_user(&ada).await.unwrap();
    assert!(!got.is_empty());
    assert_eq!(got.session.as_ref().map(|s| s.turn), Some(7));
    assert_eq!(
        got.items
            .iter()
            .map(|i| (i.key.clone(), i.body.as_str()))
            .collect::<Vec<_>>(),
        vec![(ada.clone(), "second"), (ada.clone(), "third")]
    );
    assert!(got.items.iter().all(|i| i.kind == ItemKind::Message));
    assert_eq!(
        got.outgoing
            .iter()
            .map(|o| (o.key.clone(), o.body.as_str(), o.at.index))
            .collect::<Vec<_>>(),
        vec![(ada.clone(), "queued 1", 2), (ada.clone(), "queued 2", 3)]
    );
    assert_eq!(
        got.timers,
        vec![timer("expiry", 10, "e"), timer("wait", 20, "w")]
    );
    assert_eq!(
        got.dead_letters
            .iter()
            .map(|d| (d.key.clone(), d.body.as_str(), d.reason.as_str(), d.since))
            .collect::<Vec<_>>(),
        vec![(ada.clone(), "dead", "gave up", 2)]
    );
    assert_eq!(got.sent, vec![sent_record("wamid.1001.ada", &ada, 3)]);
    assert_eq!(
        got.statuses
            .iter()
            .map(|s| (s.message_id.as_str(), s.status.as_str(), s.at))
            .collect::<Vec<_>>(),
        vec![
            ("wamid.1001.ada", "delivered", 4),
            ("wamid.1001.ada", "read", 5)
        ]
    );
    // The same user on another number is another record.
    let there = store.export_user(&elsewhere).await.unwrap();
    assert_eq!(
        there.sent,
        vec![sent_record("wamid.2002.ada", &elsewhere, 3)]
    );
    assert!(there.items.iter().all(|i| i.key == elsewhere));
    store.delete_user("ada").await.unwrap();
    assert_eq!(store.export_user(&ada).await.unwrap(), UserData::default());
    assert_eq!(
        store.export_user(&elsewhere).await.unwrap(),
        UserData::default()
    );
    assert_eq!(
        store
            .export_user(&bob)
            .await
            .unwrap()
            .session
            .map(|s| s.turn),
        Some(7)
    );
}

/// purge forgets dedupe keys, sent records and statuses older than `before`: an old id
/// is new again; newer ones stay.
pub async fn purge_forgets_old_dedupe_keys_and_sent_records(store: Arc<dyn Durable>) {
    let ada = key("ada");
    store
        .accept(vec![
            msg(&ada, Some("wamid.old"), "old", 100),
            msg(&ada, Some("wamid.new"), "new", 5_000),
        ])
        .await
        .unwrap();
    let l = lease(&*store, &ada, "a", 0).await;
    let mut n = 0;
    while let Some(item) = store.next_item(&ada).await.unwrap() {
        n += 1;
        store
            .commit_turn(
                &l,
                1,
                turn(item.id, session("ada", n, 1), vec![out(n, 0, "r")]),
            )
            .await
            .unwrap();
    }
    store
        .mark_sent(
            &l,
            100,
            OutKey { turn: 1, index: 0 },
            sent_record("wamid.out.old", &ada, 100),
        )
        .await
        .unwrap();
    store
        .mark_sent(
            &l,
            5_000,
            OutKey { turn: 2, index: 0 },
            sent_record("wamid.out.new", &ada, 5_000),
        )
        .await
        .unwrap();
    // Statuses are dated in Unix seconds: second 0 is before 1_000 ms, second 1 is not.
    let status = |wamid: &str, at: i64| StatusRecord {
        message_id: wamid.to_string(),
        status: "read".into(),
        at,
        recipient: Some("ada".into()),
        error_code: None,
        error_title: None,
    };
    for s in [status("wamid.out.old", 0), status("wamid.out.new", 1)] {
        store.record_status(&s).await.unwrap();
    }
    assert_eq!(
        store.purge(1_000).await.unwrap(),
        3,
        "one dedupe key, one sent record, one status"
    );
    assert_eq!(store.statuses("wamid.out.old").await.unwrap(), vec![]);
    assert_eq!(
        store.statuses("wamid.out.new").await.unwrap(),
        vec![status("wamid.out.new", 1)]
    );
    assert_eq!(store.sent("wamid.out.old").await.unwrap(), None);
    assert!(store.sent("wamid.out.new").await.unwrap().is_some());
    let again = store
        .accept(vec![
            msg(&ada, Some("wamid.old"), "old again", 6_000),
            msg(&ada, Some("wamid.new"), "new again", 6_000),
        ])
        .await
        .unwrap();
    assert!(
        matches!(again[0], Accepted::Stored(_)),
        "a purged id is new again: {again:?}"
    );
    assert_eq!(again[1], Accepted::Duplicate);
    assert_eq!(store.purge(1_000).await.unwrap(), 0);
}

pub async fn ping_answers(store: Arc<dyn Durable>) {
    store.ping().await.unwrap();
}

// ---- concurrency

/// Several tasks accept items for the same users at once while two holders ("two
/// instances") race for leases with short ttls and a clock that runs, so leases expire
/// mid-turn and stale holders get Fenced (a third holder that stalled past its lease
/// always is): every item is handled exactly once, each user's items in acceptance
/// order, and every session counts every turn.
pub async fn concurrent_accepts_and_two_holders_keep_order(store: Arc<dyn Durable>) {
    const USERS: usize = 4;
    const PRODUCERS: usize = 4;
    const PER_PRODUCER: usize = 25;
    let users: Vec<SessionKey> = (0..USERS).map(|u| key(&format!("user{u}"))).collect();
    let clock = Arc::new(AtomicI64::new(1));
    // The producers' items and one the stalled holder below takes.
    let total = PRODUCERS * PER_PRODUCER + 1;
    let done = Arc::new(AtomicUsize::new(0));
    // Bounds the holders' loops, so a store that loses an item fails instead of hanging.
    let give_up = std::time::Instant::now() + Duration::from_secs(60);

    // A third instance takes user0's lease and first item, then stalls past its lease.
    let stalled_item =
        accept_one(&*store, msg(&users[0], Some("wamid.stalled"), "stalled", 0)).await;
    let stalled = store
        .acquire(
            &users[0],
            "instance-stalled",
            clock.fetch_add(1, Ordering::SeqCst),
            Duration::from_millis(10),
        )
        .await
        .expect("acquire")
        .expect("user0's lease is free");
    assert_eq!(
        store
            .next_item(&users[0])
            .await
            .expect("next_item")
            .map(|i| i.id),
        Some(stalled_item)
    );

    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let store = Arc::clone(&store);
        let users = users.clone();
        producers.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            for n in 0..PER_PRODUCER {
                let k = &users[(p + n) % USERS];
                let body = format!("p{p}-{n}");
                // Every item twice, as Meta redelivers: one copy is a duplicate.
                let dedupe = format!("wamid.{p}.{n}");
                let answers = store
                    .accept(vec![
                        msg(k, Some(&dedupe), &body, n as Millis),
                        msg(k, Some(&dedupe), &body, n as Millis),
                    ])
                    .await
                    .expect("accept");
                assert_eq!(answers[1], Accepted::Duplicate);
                let Accepted::Stored(id) = answers[0] else {
                    panic!("first copy not stored: {answers:?}");
                };
                accepted.push((id, body));
                tokio::task::yield_now().await;
            }
            accepted
        }));
    }

    // Each holder loops until everything accepted was handled; a commit that succeeded
    // is recorded (item id, user, body).
    let mut holders = Vec::new();
    for holder in ["instance-a", "instance-b"] {
        let store = Arc::clone(&store);
        let clock = Arc::clone(&clock);
        let users = users.clone();
        let done = Arc::clone(&done);
        holders.push(tokio::spawn(async move {
            let mut handled: Vec<(ItemId, SessionKey, String)> = Vec::new();
            let mut fenced = 0usize;
            let tick = || clock.fetch_add(1, Ordering::SeqCst);
            // A ttl of a few ticks: leases run out while the other holder works.
            let ttl = Duration::from_millis(10);
            while done.load(Ordering::SeqCst) < total {
                assert!(
                    std::time::Instant::now() < give_up,
                    "{holder}: {} of {total} items handled after 60 s",
                    done.load(Ordering::SeqCst)
                );
                let mut did = false;
                for k in &users {
                    let Some(l) = store
                        .acquire(k, holder, tick(), ttl)
                        .await
                        .expect("acquire")
                    else {
                        continue;
                    };
                    while let Some(item) = store.next_item(k).await.expect("next_item") {
                        tokio::task::yield_now().await;
                        let mut s = store
                            .load_session(k)
                            .await
                            .expect("load")
                            .unwrap_or_else(|| Session::new(&k.user, 0));
                        s.turn += 1;
                        let seen = s
                            .vars
                            .entry("seen")
                            .or_insert_with(|| serde_json::json!([]));
                        if let Some(list) = seen.as_array_mut() {
                            list.push(serde_json::json!(item.body));
                        }
                        tokio::task::yield_now().await;
                        match store
                            .commit_turn(&l, tick(), turn(item.id, s, vec![]))
                            .await
                        {
                            Ok(()) => {
                                handled.push((item.id, k.clone(), item.body));
                                done.fetch_add(1, Ordering::SeqCst);
                                did = true;
                            }
                            Err(CommitError::Fenced) => {
                                fenced += 1;
                                break;
                            }
                            Err(CommitError::Store(e)) => panic!("commit: {e}"),
                        }
                    }
                    store.release(&l).await.expect("release");
                }
                if !did {
                    // Nothing to do yet: the producers are behind.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            (handled, fenced)
        }));
    }

    let mut accepted = vec![(stalled_item, "stalled".to_string())];
    for p in producers {
        accepted.extend(p.await.expect("producer"));
    }
    let mut handled = Vec::new();
    for h in holders {
        let (mine, _fenced) = h.await.expect("holder");
        handled.extend(mine);
    }
    assert_eq!(accepted.len(), total);
    // The stalled instance wakes up: its lease was taken over and its item handled.
    let mut late = Session::new(&users[0].user, 0);
    late.turn = 1_000;
    assert_fenced(
        store
            .commit_turn(
                &stalled,
                clock.fetch_add(1, Ordering::SeqCst),
                turn(stalled_item, late, vec![]),
            )
            .await,
        "the stalled instance's commit",
    );
    store.release(&stalled).await.expect("release");
    // Exactly once.
    let ids: HashSet<ItemId> = handled.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(ids.len(), handled.len(), "an item was handled twice");
    assert_eq!(
        ids,
        accepted.iter().map(|(id, _)| *id).collect::<HashSet<_>>(),
        "every accepted item was handled"
    );
    // Per user, the committed sessions saw the items in id (= acceptance) order, and
    // each producer's items in the order it sent them.
    let body_of: BTreeMap<ItemId, (SessionKey, String)> = handled
        .iter()
        .map(|(id, k, b)| (*id, (k.clone(), b.clone())))
        .collect();
    for k in &users {
        let expected: Vec<String> = body_of
            .values()
            .filter(|(owner, _)| owner == k)
            .map(|(_, b)| b.clone())
            .collect();
        let s = store.load_session(k).await.unwrap().expect("a session");
        let seen: Vec<String> = s.vars["seen"]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        assert_eq!(seen, expected, "{k:?} saw its items in order, each once");
        assert_eq!(s.turn as usize, expected.len());
        for p in 0..PRODUCERS {
            let ns: Vec<usize> = seen
                .iter()
                .filter_map(|b| b.strip_prefix(&format!("p{p}-")))
                .filter_map(|n| n.parse().ok())
                .collect();
            let mut sorted = ns.clone();
            sorted.sort();
            assert_eq!(
                ns, sorted,
                "producer {p}'s items for {k:?} kept their order"
            );
        }
    }
    assert_eq!(
        store.users_with_work(i64::MAX / 2, 10, None).await.unwrap(),
        vec![]
    );
}

// ---- handovers

fn handover(id: &str, key: &SessionKey, queue: Option<&str>, created: Millis) -> Handover {
    Handover {
        id: id.to_string(),
        key: key.clone(),
        queue: queue.map(str::to_string),
        state: HandoverState::Queued,
        agent: None,
        created,
        updated: created,
        ended: None,
        status: None,
    }
}

fn change(from: &[HandoverState], to: HandoverState, now: Millis) -> HandoverChange {
    HandoverChange {
        from: from.to_vec(),
        to,
        agent: None,
        status: None,
        now,
    }
}

fn note(from: HandoverAuthor, at: Millis, body: &str) -> HandoverMessage {
    HandoverMessage {
        from,
        at,
        body: body.to_string(),
    }
}

pub async fn handovers_change_by_compare_and_set(store: Arc<dyn Durable>) {
    use HandoverState::*;
    let k = key("15550001");
    let h = handover("ho_1", &k, Some("support"), 1_000);
    store.create_handover(&h).await.expect("create");
    assert!(
        store.create_handover(&h).await.is_err(),
        "an id is stored once"
    );
    assert_eq!(store.handover("ho_1").await.unwrap(), Some(h.clone()));
    assert_eq!(store.handover("ho_none").await.unwrap(), None);

    // Accept: queued → accepted, with the agent; a second accept is a conflict.
    let accept = HandoverChange {
        agent: Some("ada".into()),
        ..change(&[Queued], Accepted, 2_000)
    };
    let accepted = Handover {
        state: Accepted,
        agent: Some("ada".into()),
        updated: 2_000,
        ..h.clone()
    };
    assert_eq!(
        store.change_handover("ho_1", &accept).await.unwrap(),
        Changed::Done(accepted.clone())
    );
    assert_eq!(
        store.change_handover("ho_1", &accept).await.unwrap(),
        Changed::Conflict(accepted.clone())
    );
    assert_eq!(
        store.change_handover("ho_none", &accept).await.unwrap(),
        Changed::NotFound
    );

    // Messages in the order added; none for an unknown handover.
    let first = note(
        HandoverAuthor::User,
        1_500,
        r#"{"type":"text","text":"hi"}"#,
    );
    let second = note(HandoverAuthor::Agent, 2_500, r#"{"text":"hello"}"#);
    assert!(store.add_handover_message("ho_1", &first).await.unwrap());
    assert!(store.add_handover_message("ho_1", &second).await.unwrap());
    assert!(!store.add_handover_message("ho_none", &first).await.unwrap());
    assert_eq!(
        store.handover_messages("ho_1").await.unwrap(),
        vec![first, second]
    );
    assert!(store.handover_messages("ho_none").await.unwrap().is_empty());

    // Resolve: ended, with a status, the agent kept; then no change applies.
    let resolve = HandoverChange {
        status: Some("solved".into()),
        ..change(&[Queued, Accepted], Resolved, 3_000)
    };
    let resolved = Handover {
        state: Resolved,
        updated: 3_000,
        ended: Some(3_000),
        status: Some("solved".into()),
        ..accepted
    };
    assert_eq!(
        store.change_handover("ho_1", &resolve).await.unwrap(),
        Changed::Done(resolved.clone())
    );
    assert_eq!(
        store
            .change_handover("ho_1", &change(&[Queued], TimedOut, 4_000))
            .await
            .unwrap(),
        Changed::Conflict(resolved.clone())
    );
    assert_eq!(store.handover("ho_1").await.unwrap(), Some(resolved));

    // Racing changes from one state: exactly one wins.
    store
        .create_handover(&handover("ho_2", &k, None, 5_000))
        .await
        .unwrap();
    let mut racers = Vec::new();
    for i in 0..8 {
        let store = Arc::clone(&store);
        racers.push(tokio::spawn(async move {
            let c = HandoverChange {
                agent: Some(format!("agent{i}")),
                ..change(&[Queued], Accepted, 6_000)
            };
            store.change_handover("ho_2", &c).await.unwrap()
        }));
    }
    let mut wins = 0;
    for r in racers {
        match r.await.unwrap() {
            Changed::Done(_) => wins += 1,
            Changed::Conflict(h) => assert_eq!(h.state, Accepted),
            Changed::NotFound => panic!("ho_2 exists"),
        }
    }
    assert_eq!(wins, 1, "exactly one accept wins");
}

pub async fn handovers_list_newest_first_by_number_queue_and_state(store: Arc<dyn Durable>) {
    use HandoverState::*;
    let a = key("15550001");
    let b = key("15550002");
    let other_number = SessionKey::new("2002", "15550001");
    for h in [
        handover("ho_a1", &a, Some("support"), 1_000),
        handover("ho_b1", &b, Some("sales"), 2_000),
        handover("ho_a2", &a, Some("support"), 3_000),
        handover("ho_x1", &other_number, Some("support"), 4_000),
        // Same time: the larger id first.
        handover("ho_b2", &b, None, 3_000),
    ] {
        store.create_handover(&h).await.unwrap();
    }
    store
        .change_handover("ho_a2", &change(&[Queued], Accepted, 5_000))
        .await
        .unwrap();
    let ids = |found: Vec<Handover>| found.into_iter().map(|h| h.id).collect::<Vec<_>>();
    let filter = |numbers: &[&str], queue: Option<&str>, state, limit| HandoverFilter {
        numbers: numbers.iter().map(|n| n.to_string()).collect(),
        queue: queue.map(str::to_string),
        state,
        limit,
    };
    let list = |f: HandoverFilter| {
        let store = Arc::clone(&store);
        async move { ids(store.handovers(&f).await.unwrap()) }
    };
    assert_eq!(
        list(filter(&["1001"], None, None, 100)).await,
        ["ho_b2", "ho_a2", "ho_b1", "ho_a1"]
    );
    assert_eq!(
        list(filter(&["1001", "2002"], None, None, 2)).await,
        ["ho_x1", "ho_b2"]
    );
    assert_eq!(
        list(filter(&["1001"], Some("support"), None, 100)).await,
        ["ho_a2", "ho_a1"]
    );
    assert_eq!(
        list(filter(&["1001"], None, Some(Queued), 100)).await,
        ["ho_b2", "ho_b1", "ho_a1"]
    );
    assert_eq!(
        list(filter(&["1001"], Some("support"), Some(Queued), 1)).await,
        ["ho_a1"]
    );
    assert!(list(filter(&["3003"], None, None, 100)).await.is_empty());
    assert_eq!(
        ids(store.user_handovers(&a).await.unwrap()),
        ["ho_a2", "ho_a1"]
    );
    assert_eq!(
        ids(store.user_handovers(&other_number).await.unwrap()),
        ["ho_x1"]
    );
}

pub async fn handovers_are_exported_and_erased(store: Arc<dyn Durable>) {
    let a = key("15550001");
    let b = key("15550002");
    let other_number = SessionKey::new("2002", "15550001");
    let ha = handover("ho_a", &a, Some("support"), 1_000);
    let hx = handover("ho_x", &other_number, None, 2_000);
    let hb = handover("ho_b", &b, None, 3_000);
    for h in [&ha, &hx, &hb] {
        store.create_handover(h).await.unwrap();
    }
    let m = note(
        HandoverAuthor::User,
        1_100,
        r#"{"type":"text","text":"help"}"#,
    );
    store.add_handover_message("ho_a", &m).await.unwrap();
    store
        .add_handover_message("ho_b", &note(HandoverAuthor::User, 3_100, "{}"))
        .await
        .unwrap();
    let exported = store.export_user(&a).await.unwrap();
    assert_eq!(
        exported.handovers,
        vec![HandoverData {
            handover: ha,
            messages: vec![m],
        }]
    );
    assert!(!exported.is_empty(), "a handover alone is something kept");

    store.delete_user("15550001").await.unwrap();
    for gone in ["ho_a", "ho_x"] {
        assert_eq!(store.handover(gone).await.unwrap(), None, "{gone}");
        assert!(store.handover_messages(gone).await.unwrap().is_empty());
    }
    assert!(store.export_user(&a).await.unwrap().is_empty());
    assert!(store.export_user(&other_number).await.unwrap().is_empty());
    let all = HandoverFilter {
        numbers: vec!["1001".into(), "2002".into()],
        queue: None,
        state: None,
        limit: 100,
    };
    let left: Vec<String> = store
        .handovers(&all)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(left, ["ho_b"], "the other user's handover stays");
    assert_eq!(store.handover_messages("ho_b").await.unwrap().len(), 1);
    // Idempotent.
    store.delete_user("15550001").await.unwrap();
}
