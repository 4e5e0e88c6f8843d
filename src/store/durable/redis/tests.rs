//! The Redis store against a real Redis: `REDIS_URL` (CI sets it), else
//! redis://127.0.0.1:6379. Every store gets a unique key prefix; its keys are deleted
//! when the test ends, passed or not.

use super::keys::{self, UserKeys};
use super::*;
use crate::store::durable::{DirectOutgoing, NewOutgoing, conformance};
use std::sync::{Arc, Mutex};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Deletes every key under the prefixes it made, when dropped (also on a failed test).
struct Prefixes {
    url: String,
    made: Mutex<Vec<String>>,
}

impl Prefixes {
    fn new(url: &str) -> Prefixes {
        Prefixes {
            url: url.to_string(),
            made: Mutex::new(Vec::new()),
        }
    }

    fn next(&self) -> String {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let prefix = format!(
            "parlance-test:{}-{nanos}-{}:",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        if let Ok(mut made) = self.made.lock() {
            made.push(prefix.clone());
        }
        prefix
    }

    async fn store(&self) -> RedisDurable {
        let prefix = self.next();
        RedisDurable::connect(&self.url, &prefix)
            .await
            .expect("Redis at REDIS_URL (default redis://127.0.0.1:6379) must be reachable")
    }
}

impl Drop for Prefixes {
    fn drop(&mut self) {
        let Ok(client) = ::redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut con) = client.get_connection() else {
            return;
        };
        let made = self.made.lock().map(|m| m.clone()).unwrap_or_default();
        for prefix in made {
            let found: Vec<String> = ::redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query(&mut con)
                .unwrap_or_default();
            if !found.is_empty() {
                let _: Result<i64, _> = ::redis::cmd("DEL").arg(found).query(&mut con);
            }
        }
    }
}

fn item(key: &SessionKey, dedupe: Option<&str>, body: &str, at: Millis) -> NewItem {
    NewItem {
        key: key.clone(),
        dedupe: dedupe.map(str::to_string),
        kind: ItemKind::Message,
        body: body.into(),
        at,
    }
}

#[tokio::test]
async fn conformance_suite_passes_on_redis() {
    let prefixes = Prefixes::new(&redis_url());
    conformance::run_all(|| async { Arc::new(prefixes.store().await) as Arc<dyn Durable> }).await;
}

/// On Redis the send that leaves a user nothing to do gives the lease up in its own
/// script (the worker's release round trip saved); with a message or an item left, or
/// through plain `mark_sent`, the lease stays.
#[tokio::test]
async fn the_send_that_empties_the_outbox_gives_the_lease_up() {
    let prefixes = Prefixes::new(&redis_url());
    let store = prefixes.store().await;
    let ada = SessionKey::new("1001", "ada");
    let lease = queued(&store, &ada, &["r0", "r1"]).await;
    let first = store.next_outgoing(&ada).await.unwrap().unwrap();
    let sent = |wamid: &str| SentRecord {
        message_id: wamid.into(),
        key: ada.clone(),
        flow: "main".into(),
        node: "n".into(),
        at: 10,
    };
    let after = store
        .mark_sent_releasing(&lease, 10, first.at, sent("wamid.r0"))
        .await
        .unwrap();
    assert!(matches!(after, AfterSent::Holding(_)), "{after:?}");
    let second = store.next_outgoing(&ada).await.unwrap().unwrap();
    let after = store
        .mark_sent_releasing(&lease, 11, second.at, sent("wamid.r1"))
        .await
        .unwrap();
    assert_eq!(after, AfterSent::Released);
    let taken = store
        .acquire(&ada, "other", 12, Duration::from_secs(60))
        .await;
    assert!(matches!(taken, Ok(Some(_))), "{taken:?}");
}

#[tokio::test]
async fn every_key_of_one_user_shares_one_cluster_slot() {
    let prefixes = Prefixes::new(&redis_url());
    let store = prefixes.store().await;
    let alice = SessionKey::new("1001", "4915112345678");
    let now = 1_000_000;
    // Touch every kind of per-user key: inbox + dedupe, lease, session, outbox,
    // timers, a sent record and a dead letter.
    let accepted = store
        .accept(vec![item(&alice, Some("wamid.A1"), "hi", now)])
        .await
        .unwrap();
    let Accepted::Stored(id) = accepted[0] else {
        panic!("not stored: {accepted:?}");
    };
    let lease = store
        .acquire(&alice, "i1", now, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let commit = TurnCommit {
        item: Some(id),
        session: Session::new("4915112345678", 1000),
        outgoing: vec![
            NewOutgoing {
                at: OutKey { turn: 1, index: 0 },
                not_before: 0,
                body: "one".into(),
            },
            NewOutgoing {
                at: OutKey { turn: 1, index: 1 },
                not_before: 0,
                body: "two".into(),
            },
        ],
        timers: vec![NewTimer {
            name: "wait".into(),
            due: now + 5000,
            body: "t".into(),
        }],
        cancel_timers: vec![],
    };
    store.commit_turn(&lease, now, commit).await.unwrap();
    let sent = SentRecord {
        message_id: "wamid.OUT1".into(),
        key: alice.clone(),
        flow: "main".into(),
        node: "hello".into(),
        at: 1000,
    };
    store
        .mark_sent(&lease, now, OutKey { turn: 1, index: 0 }, sent.clone())
        .await
        .unwrap();
    store
        .dead_letter(&lease, now, OutKey { turn: 1, index: 1 }, "gave up")
        .await
        .unwrap();
    assert_eq!(store.sent("wamid.OUT1").await.unwrap(), Some(sent));

    let mut con = store.con();
    let all: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{}*", store.prefix))
        .query_async(&mut con)
        .await
        .unwrap();
    let user_tag = format!("{}{{1001:4915112345678}}:", store.prefix);
    let user_keys: Vec<&String> = all.iter().filter(|k| k.starts_with(&user_tag)).collect();
    for name in ["lease", "session", "timers", "sent", "dead", "d:wamid.A1"] {
        assert!(
            user_keys.iter().any(|k| k.ends_with(&format!(":{name}"))),
            "no {name} key among {user_keys:?}"
        );
    }
    let slot = keys::slot(user_keys[0]);
    for k in &user_keys {
        assert_eq!(keys::slot(k), slot, "{k} is in another slot");
    }
    // Everything else is a global index, each tagged for a slot of its own.
    for k in all.iter().filter(|k| !k.starts_with(&user_tag)) {
        let tag = keys::tag_in(&store.prefix, k).unwrap_or_default();
        assert!(
            ["ids", "work", "timers", "dead", "sent"].contains(&tag.as_str()) || tag == "#wamid.A1",
            "unexpected key {k}"
        );
    }
}

#[tokio::test]
async fn dedupe_records_expire_after_eight_days() {
    let prefixes = Prefixes::new(&redis_url());
    let store = prefixes.store().await;
    let bob = SessionKey::new("1001", "bob");
    let first = store
        .accept(vec![item(&bob, Some("wamid.B1"), "hi", 10)])
        .await
        .unwrap();
    assert!(matches!(first[0], Accepted::Stored(_)));
    let again = store
        .accept(vec![item(&bob, Some("wamid.B1"), "hi", 11)])
        .await
        .unwrap();
    assert_eq!(again, vec![Accepted::Duplicate]);
    let ttl: i64 = store
        .con()
        .pttl(UserKeys::new(&store.prefix, &bob).dedupe("wamid.B1"))
        .await
        .unwrap();
    let eight_days = 8 * 24 * 3600 * 1000;
    assert!(
        ttl > eight_days - 60_000 && ttl <= eight_days,
        "the dedupe record's TTL is {ttl} ms"
    );
}

#[tokio::test]
async fn a_stale_lease_cannot_commit_and_ids_increase_per_user() {
    let prefixes = Prefixes::new(&redis_url());
    let store = prefixes.store().await;
    let carol = SessionKey::new("1001", "carol");
    let ttl = Duration::from_secs(10);
    let ids: Vec<Accepted> = store
        .accept(vec![
            item(&carol, Some("w1"), "a", 1),
            item(&carol, Some("w1"), "dup", 2),
            item(&carol, None, "b", 3),
        ])
        .await
        .unwrap();
    let (Accepted::Stored(a), Accepted::Duplicate, Accepted::Stored(b)) = (ids[0], ids[1], ids[2])
    else {
        panic!("{ids:?}");
    };
    assert!(b > a);
    let old = store.acquire(&carol, "i1", 0, ttl).await.unwrap().unwrap();
    assert_eq!(store.acquire(&carol, "i2", 5_000, ttl).await.unwrap(), None);
    // i1 stalls past its lease; i2 takes over with a larger token.
    let new = store
        .acquire(&carol, "i2", 10_001, ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(new.token > old.token);
    let commit = |item| TurnCommit {
        item: Some(item),
        session: Session::new("carol", 10),
        outgoing: vec![],
        timers: vec![],
        cancel_timers: vec![],
    };
    let stale = store.commit_turn(&old, 10_002, commit(a)).await;
    assert!(matches!(stale, Err(CommitError::Fenced)), "{stale:?}");
    assert_eq!(
        store.next_item(&carol).await.unwrap().map(|i| i.id),
        Some(a)
    );
    store.commit_turn(&new, 10_002, commit(a)).await.unwrap();
    // The same item again: already handled.
    let twice = store.commit_turn(&new, 10_003, commit(a)).await;
    assert!(matches!(twice, Err(CommitError::Fenced)), "{twice:?}");
    assert_eq!(
        store.next_item(&carol).await.unwrap().map(|i| i.id),
        Some(b)
    );
}

#[tokio::test]
async fn work_and_timers_are_found_through_the_indexes() {
    let prefixes = Prefixes::new(&redis_url());
    let store = prefixes.store().await;
    let dave = SessionKey::new("1001", "dave");
    let erin = SessionKey::new("1002", "erin");
    store
        .accept(vec![item(&dave, None, "a", 1), item(&erin, None, "b", 2)])
        .await
        .unwrap();
    let mut users = store.users_with_work(100, 10, None).await.unwrap();
    users.sort();
    assert_eq!(users, vec![dave.clone(), erin.clone()]);
    // Dave's turn: the item goes, a timer comes; nothing else for him.
    let lease = store
        .acquire(&dave, "i1", 100, Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    let id = store.next_item(&dave).await.unwrap().unwrap().id;
    let commit = TurnCommit {
        item: Some(id),
        session: Session::new("dave", 1),
        outgoing: vec![],
        timers: vec![NewTimer {
            name: "wait".into(),
            due: 5_000,
            body: "wake".into(),
        }],
        cancel_timers: vec![],
    };
    store.commit_turn(&lease, 100, commit).await.unwrap();
    store.release(&lease).await.unwrap();
    assert_eq!(
        store.users_with_work(200, 10, None).await.unwrap(),
        vec![erin]
    );
    assert_eq!(store.fire_due_timers(4_999, 10).await.unwrap(), 0);
    assert_eq!(store.fire_due_timers(5_000, 10).await.unwrap(), 1);
    assert_eq!(store.fire_due_timers(5_001, 10).await.unwrap(), 0);
    let fired = store.next_item(&dave).await.unwrap().unwrap();
    assert_eq!(
        (fired.kind, fired.body.as_str(), fired.at),
        (ItemKind::Timer, "wake", 5_000)
    );
    assert!(
        store
            .users_with_work(5_001, 10, None)
            .await
            .unwrap()
            .contains(&dave)
    );
    assert!(store.timers(&dave).await.unwrap().is_empty());
}

/// A redis-server of our own on a free loopback port, stopped when dropped.
struct OwnRedis {
    child: std::process::Child,
}

impl OwnRedis {
    fn start(port: u16, dir: &std::path::Path) -> Option<OwnRedis> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        Some(OwnRedis { child })
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

async fn until_ok<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if std::time::Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test]
async fn a_redis_restart_gives_errors_then_works_again_by_itself() {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!(
            "redis-server is not installed: this test starts its own (apt-get install redis-server)"
        );
    }
    let port = free_port();
    let dir = tempfile::TempDir::new().unwrap();
    let server = OwnRedis::start(port, dir.path()).unwrap();
    let url = format!("redis://127.0.0.1:{port}/0");
    let store = until_ok("connect", || RedisDurable::connect(&url, "p:")).await;
    let frank = SessionKey::new("1001", "frank");
    store
        .accept(vec![item(&frank, Some("w1"), "before", 1)])
        .await
        .unwrap();

    // Redis goes away: calls fail (the webhook would answer 503), nothing panics.
    drop(server);
    let down = store
        .accept(vec![item(&frank, Some("w2"), "during", 2)])
        .await;
    assert!(down.is_err(), "{down:?}");
    assert!(store.ping().await.is_err());

    // Back on the same port with its append-only file: the same store works again,
    // without being rebuilt, and nothing acknowledged before was lost.
    let _server = OwnRedis::start(port, dir.path()).unwrap();
    until_ok("ping after restart", || store.ping()).await;
    let after = until_ok("accept after restart", || {
        store.accept(vec![item(&frank, Some("w2"), "after", 3)])
    })
    .await;
    assert!(matches!(after[0], Accepted::Stored(_)), "{after:?}");
    let dup = store
        .accept(vec![item(&frank, Some("w1"), "before", 1)])
        .await
        .unwrap();
    assert_eq!(dup, vec![Accepted::Duplicate]);
    let first = store.next_item(&frank).await.unwrap().unwrap();
    assert_eq!(first.body, "before");
}

#[tokio::test]
async fn an_item_of_an_unknown_kind_is_moved_aside_and_the_next_one_runs() {
    let prefixes = Prefixes::new(&redis_url());
    let store = prefixes.store().await;
    let gus = SessionKey::new("1001", "gus");
    let answers = store
        .accept(vec![item(&gus, None, "new", 1), item(&gus, None, "old", 2)])
        .await
        .unwrap();
    let (Accepted::Stored(first), Accepted::Stored(second)) = (answers[0], answers[1]) else {
        panic!("{answers:?}");
    };
    // As a newer version would have written it.
    let keys = UserKeys::new(&store.prefix, &gus);
    let _: i64 = store
        .con()
        .hset(keys.items(), format!("{}:k", first.0), "from_the_future")
        .await
        .unwrap();
    let next = store.next_item(&gus).await.unwrap().unwrap();
    assert_eq!((next.id, next.body.as_str()), (second, "old"));
    let aside: Option<String> = store
        .con()
        .hget(keys.aside(), format!("{}:b", first.0))
        .await
        .unwrap();
    assert_eq!(aside.as_deref(), Some("new"), "kept aside, not erased");
}

/// Writes the global claim of `wamid` for `key` in `state` ("c" claimed; "s" stored,
/// as older builds marked it), dated 5 as the tests' items are.
async fn plant_claim(store: &RedisDurable, key: &SessionKey, wamid: &str, state: &str) {
    let tag = UserKeys::new(&store.prefix, key).tag;
    let _: () = store
        .con()
        .set(
            keys::dedupe_claim(&store.prefix, wamid),
            format!("{} {state} 5", keys::fingerprint(&tag)),
        )
        .await
        .unwrap();
}

/// Asserts that a copy of `wamid` is a duplicate for each of `users`.
async fn copies_are_duplicates(store: &RedisDurable, wamid: &str, users: &[&str]) {
    for user in users {
        let again = store
            .accept(vec![item(
                &SessionKey::new("1001", user),
                Some(wamid),
                "hello",
                5,
            )])
            .await
            .unwrap();
        assert_eq!(again, vec![Accepted::Duplicate], "{user}");
    }
}

#[tokio::test]
async fn a_claim_left_by_a_crash_before_the_store_does_not_drop_the_redelivery() {
    let prefixes = Prefixes::new(&redis_url());
    let store = prefixes.store().await;
    let hal = SessionKey::new("1001", "hal");
    // An instance claimed wamid.H1 for hal, then died before hal's script ran.
    plant_claim(&store, &hal, "wamid.H1", "c").await;
    let redelivered = store
        .accept(vec![item(&hal, Some("wamid.H1"), "hello", 5)])
        .await
        .unwrap();
    assert!(
        matches!(redelivered[0], Accepted::Stored(_)),
        "{redelivered:?}"
    );
    // Now stored: the next copy is a duplicate, for hal (his record) and for anyone
    // else (the claim names hal).
    copies_are_duplicates(&store, "wamid.H1", &["hal", "ivy"]).await;
    assert_eq!(store.next_item(&hal).await.unwrap().unwrap().body, "hello");
}

#[tokio::test]
async fn a_stale_hint_costs_one_check_then_goes() {
    let prefixes = Prefixes::new(&redis_url());
    let store = prefixes.store().await;
    let jo = SessionKey::new("1001", "jo");
    let tag = UserKeys::new(&store.prefix, &jo).tag;
    // A hint without work behind it (its accept died before the user's script ran).
    store.hint(Index::Work, &tag, 5).await.unwrap();
    let score: Option<f64> = store.con().zscore(&store.global.work, &tag).await.unwrap();
    assert_eq!(score, Some(5.0));
    assert_eq!(store.users_with_work(10, 10, None).await.unwrap(), vec![]);
    let score: Option<f64> = store.con().zscore(&store.global.work, &tag).await.unwrap();
    assert_eq!(score, None, "the stale hint was removed");
    // A hint added after the check read its version survives the removal.
    store.hint(Index::Work, &tag, 5).await.unwrap();
    let version = store.hint_version(Index::Work, &tag).await.unwrap();
    store.hint(Index::Work, &tag, 5).await.unwrap();
    assert!(
        !store
            .settle(Index::Work, &tag, &version, None)
            .await
            .unwrap()
    );
    let score: Option<f64> = store.con().zscore(&store.global.work, &tag).await.unwrap();
    assert_eq!(score, Some(5.0), "a racing hint is not lost");
}

#[tokio::test]
async fn a_turn_sets_its_timers_then_cancels_the_named_ones() {
    let prefixes = Prefixes::new(&redis_url());
    let store = prefixes.store().await;
    let kim = SessionKey::new("1001", "kim");
    let answers = store.accept(vec![item(&kim, None, "a", 1)]).await.unwrap();
    let Accepted::Stored(id) = answers[0] else {
        panic!("{answers:?}");
    };
    let lease = store
        .acquire(&kim, "i1", 0, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let timer = |name: &str| NewTimer {
        name: name.into(),
        due: 100,
        body: name.into(),
    };
    let commit = TurnCommit {
        item: Some(id),
        session: Session::new("kim", 1),
        outgoing: vec![],
        timers: vec![timer("wait"), timer("expiry")],
        cancel_timers: vec!["wait".into()],
    };
    store.commit_turn(&lease, 1, commit).await.unwrap();
    assert_eq!(store.timers(&kim).await.unwrap(), vec![timer("expiry")]);
}

#[tokio::test]
async fn a_sooner_retry_is_found_at_its_time() {
    let prefixes = Prefixes::new(&redis_url());
    let store = prefixes.store().await;
    let lou = SessionKey::new("1001", "lou");
    let answers = store.accept(vec![item(&lou, None, "a", 1)]).await.unwrap();
    let Accepted::Stored(id) = answers[0] else {
        panic!("{answers:?}");
    };
    let ttl = Duration::from_millis(10);
    let lease = store.acquire(&lou, "i1", 0, ttl).await.unwrap().unwrap();
    let commit = TurnCommit {
        item: Some(id),
        session: Session::new("lou", 1),
        outgoing: vec![NewOutgoing {
            at: OutKey { turn: 1, index: 0 },
            not_before: 0,
            body: "hi".into(),
        }],
        timers: vec![],
        cancel_timers: vec![],
    };
    store.commit_turn(&lease, 1, commit).await.unwrap();
    let at = OutKey { turn: 1, index: 0 };
    store
        .mark_attempt(&lease, 2, at, false, 5_000)
        .await
        .unwrap();
    store.release(&lease).await.unwrap();
    // Looked at before it is due: the index moves Lou to 5_000.
    assert_eq!(store.users_with_work(100, 10, None).await.unwrap(), vec![]);
    // Another holder retries sooner than that.
    let lease = store.acquire(&lou, "i2", 200, ttl).await.unwrap().unwrap();
    store
        .mark_attempt(&lease, 201, at, false, 1_000)
        .await
        .unwrap();
    store.release(&lease).await.unwrap();
    assert_eq!(
        store.users_with_work(1_000, 10, None).await.unwrap(),
        vec![lou]
    );
}

/// One user's turn with two queued messages, under a fresh lease: the lease.
async fn queued(store: &RedisDurable, key: &SessionKey, bodies: &[&str]) -> Lease {
    let answers = store.accept(vec![item(key, None, "x", 1)]).await.unwrap();
    let Accepted::Stored(id) = answers[0] else {
        panic!("{answers:?}");
    };
    let lease = store
        .acquire(key, "i1", 0, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let outgoing = bodies
        .iter()
        .enumerate()
        .map(|(n, body)| NewOutgoing {
            at: OutKey {
                turn: 1,
                index: n as u32,
            },
            not_before: 0,
            body: body.to_string(),
        })
        .collect();
    let commit = TurnCommit {
        item: Some(id),
        session: Session::new(&key.user, 100),
        outgoing,
        timers: vec![],
        cancel_timers: vec![],
    };
    store.commit_turn(&lease, 1, commit).await.unwrap();
    lease
}

#[tokio::test]
async fn damaged_outbox_entries_sessions_and_dead_letters_never_block() {
    let prefixes = Prefixes::new(&redis_url());
    let store = prefixes.store().await;
    let lou = SessionKey::new("1001", "lou");
    let keys = UserKeys::new(&store.prefix, &lou);
    queued(&store, &lou, &["bad", "good"]).await;
    // An attempt count that is no number, and an entry whose name is no place at all
    // (ahead of everything).
    let mut con = store.con();
    let _: i64 = con.hset(keys.outgoing(), "1:0:n", "many").await.unwrap();
    let _: i64 = con.zadd(keys.outbox(), "garbage", 0).await.unwrap();
    let next = store.next_outgoing(&lou).await.unwrap().unwrap();
    assert_eq!(
        (next.at, next.body.as_str()),
        (OutKey { turn: 1, index: 1 }, "good")
    );
    let aside: Option<String> = con.hget(keys.aside(), "o:1:0:b").await.unwrap();
    assert_eq!(aside.as_deref(), Some("bad"), "kept aside, not erased");
    // A session whose format version is no number, or whose time is none: no session
    // (as an older format), and the count goes on.
    let _: i64 = con.hset(keys.session(), "v", "x").await.unwrap();
    assert_eq!(store.load_session(&lou).await.unwrap(), None);
    // Read with a lease, the same: the lease is taken, the session is none.
    let nia = SessionKey::new("1001", "nia");
    let nia_keys = UserKeys::new(&store.prefix, &nia);
    let _: () = con
        .hset_multiple(nia_keys.session(), &[("v", "x"), ("data", "{}")])
        .await
        .unwrap();
    let (_, read) = store
        .acquire_reading(&nia, "i1", 1, Duration::from_secs(60))
        .await
        .unwrap()
        .expect("a free lease");
    assert_eq!(read, None);
    let _: i64 = con.hset(keys.session(), "at", "soon").await.unwrap();
    assert_eq!(store.count_sessions(0).await.unwrap(), 0);
    // A damaged dead letter does not hide the next one; a listed id without an owner
    // (left over) goes.
    let lease = store
        .acquire(&lou, "i1", 1, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    store
        .dead_letter(&lease, 2, OutKey { turn: 1, index: 1 }, "x")
        .await
        .unwrap();
    let mo = SessionKey::new("1001", "mo");
    let mo_lease = queued(&store, &mo, &["mo's"]).await;
    store
        .dead_letter(&mo_lease, 3, OutKey { turn: 1, index: 0 }, "y")
        .await
        .unwrap();
    let before = store.dead_letters(None, 10).await.unwrap();
    assert_eq!(before.len(), 2);
    let _: i64 = con
        .hset(keys.dead(), format!("{}:n", before[0].id), "lots")
        .await
        .unwrap();
    let _: i64 = con.zadd(&store.global.dead_ids, 999, 0).await.unwrap();
    let after = store.dead_letters(None, 10).await.unwrap();
    assert_eq!(after, vec![before[1].clone()]);
    let orphan: Option<f64> = con.zscore(&store.global.dead_ids, 999).await.unwrap();
    assert_eq!(orphan, None, "the left-over entry went");
}

#[tokio::test]
async fn a_claim_an_older_build_marked_stored_is_a_duplicate_for_everyone() {
    let prefixes = Prefixes::new(&redis_url());
    let store = prefixes.store().await;
    // Written by a build that marked claims stored (and whose user record has since
    // been purged): the mark alone still refuses the copy.
    plant_claim(&store, &SessionKey::new("1001", "kim"), "wamid.K1", "s").await;
    copies_are_duplicates(&store, "wamid.K1", &["kim", "lou"]).await;
}

#[tokio::test]
async fn erasure_keeps_dedupe_records_and_leaves_no_owner_or_hint_behind() {
    let prefixes = Prefixes::new(&redis_url());
    let store = prefixes.store().await;
    let ned = SessionKey::new("1001", "ned");
    let tag = UserKeys::new(&store.prefix, &ned).tag;
    let mut con = store.con();
    let stored = store
        .accept(vec![item(&ned, Some("wamid.N1"), "hi", 5)])
        .await
        .unwrap();
    assert!(matches!(stored[0], Accepted::Stored(_)), "{stored:?}");
    // A send recorded under a lease that was lost writes no owner.
    let lease = queued(&store, &SessionKey::new("2002", "ned"), &["one"]).await;
    let stale = Lease {
        token: lease.token + 1000,
        ..lease.clone()
    };
    let fenced = store
        .mark_sent(
            &stale,
            2,
            OutKey { turn: 1, index: 0 },
            SentRecord {
                message_id: "wamid.fenced".into(),
                key: lease.key.clone(),
                flow: "main".into(),
                node: "n".into(),
                at: 2,
            },
        )
        .await;
    assert!(matches!(fenced, Err(CommitError::Fenced)), "{fenced:?}");
    let owner: Option<String> = con
        .hget(&store.global.sent_owner, "wamid.fenced")
        .await
        .unwrap();
    assert_eq!(owner, None);
    // Left-over owners (as a crash between owner and record leaves them), and a
    // status to ned of a message this store has no record of; statuses expire.
    let _: i64 = con
        .hset(&store.global.sent_owner, "wamid.orphan", &tag)
        .await
        .unwrap();
    let _: i64 = con.hset(&store.global.dead_owner, 777, &tag).await.unwrap();
    let _: i64 = con.zadd(&store.global.dead_ids, 777, 777).await.unwrap();
    let status = StatusRecord {
        message_id: "wamid.to.ned".into(),
        status: "read".into(),
        at: 3,
        recipient: Some("ned".into()),
        error_code: None,
        error_title: None,
    };
    store.record_status(&status).await.unwrap();
    let ttl: i64 = con
        .pttl(keys::statuses(&store.prefix, "wamid.to.ned"))
        .await
        .unwrap();
    assert!(
        ttl > 0 && ttl <= STATUS_TTL.as_millis() as i64,
        "statuses expire: {ttl}"
    );

    assert_eq!(store.delete_user("ned").await.unwrap(), 1);
    let hint: Option<f64> = con.zscore(&store.global.work, &tag).await.unwrap();
    assert_eq!(hint, None, "nothing raced the erasure: its hint went");
    let redelivered = store
        .accept(vec![item(&ned, Some("wamid.N1"), "hi", 5)])
        .await
        .unwrap();
    assert_eq!(redelivered, vec![Accepted::Duplicate], "still a duplicate");
    let owner: Option<String> = con
        .hget(&store.global.sent_owner, "wamid.orphan")
        .await
        .unwrap();
    let dead_owner: Option<String> = con.hget(&store.global.dead_owner, 777).await.unwrap();
    let dead_id: Option<f64> = con.zscore(&store.global.dead_ids, 777).await.unwrap();
    assert_eq!((owner, dead_owner, dead_id), (None, None, None));
    assert_eq!(store.statuses("wamid.to.ned").await.unwrap(), vec![]);
}

/// Forgets every script on `store`'s Redis (as a restart does), then loads `keep`.
async fn scripts_lost(store: &RedisDurable, keep: &[&Script]) {
    let mut con = store.con();
    let _: () = ::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut con)
        .await
        .unwrap();
    for script in keep {
        script.prepare_invoke().load_async(&mut con).await.unwrap();
    }
}

#[tokio::test]
async fn pipelined_writes_run_once_when_redis_lost_its_scripts() {
    // Its own Redis: `SCRIPT FLUSH` would reach the other tests' stores.
    let port = free_port();
    let dir = tempfile::TempDir::new().unwrap();
    let _server = OwnRedis::start(port, dir.path()).expect("redis-server must be installed");
    let url = format!("redis://127.0.0.1:{port}/0");
    let store = until_ok("connect", || RedisDurable::connect(&url, "p:")).await;
    until_ok("ping", || store.ping()).await;
    let grace = SessionKey::new("1001", "grace");
    let lease = store
        .acquire(&grace, "i1", 100, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let out = |body: &str| DirectOutgoing {
        not_before: 0,
        body: body.into(),
    };

    // The direct path with no script loaded: the claim, hint and id go first, then
    // the turn's script and the hint after it.
    scripts_lost(&store, &[]).await;
    let turn = DirectTurn {
        item: item(&grace, Some("wamid.G1"), "", 100),
        session: Session::new("grace", 100),
        outgoing: vec![out("one"), out("two")],
    };
    let done = store.accept_turn(&lease, 100, turn.clone()).await.unwrap();
    assert!(matches!(done, Direct::Committed(..)), "{done:?}");
    // With the turn's script still there but not the hint's: the hint after the
    // write runs again, the write does not.
    scripts_lost(&store, &[&store.scripts.accept_turn]).await;
    let again = DirectTurn {
        item: item(&grace, Some("wamid.G2"), "", 101),
        ..turn.clone()
    };
    let done = store.accept_turn(&lease, 101, again).await.unwrap();
    assert!(matches!(done, Direct::Committed(..)), "{done:?}");
    assert_eq!(
        store.accept_turn(&lease, 102, turn).await.unwrap(),
        Direct::Duplicate
    );

    // An accept with no script loaded: its claim and hint, then its script and the
    // hint after it. Stored once; a copy is a duplicate.
    scripts_lost(&store, &[]).await;
    let stored = store
        .accept(vec![item(&grace, Some("wamid.G3"), "x", 103)])
        .await
        .unwrap();
    let Accepted::Stored(id) = stored[0] else {
        panic!("{stored:?}");
    };
    scripts_lost(&store, &[]).await;
    assert_eq!(
        store
            .accept(vec![item(&grace, Some("wamid.G3"), "x", 103)])
            .await
            .unwrap(),
        vec![Accepted::Duplicate]
    );

    // A worker's commit whose hint before the write fails while the commit's script
    // is there: the commit runs once (run twice, it would find its item gone).
    scripts_lost(&store, &[&store.scripts.commit_turn]).await;
    let commit = TurnCommit {
        item: Some(id),
        session: Session::new("grace", 103),
        outgoing: vec![NewOutgoing {
            at: OutKey {
                turn: id.0,
                index: 0,
            },
            not_before: 0,
            body: "three".into(),
        }],
        timers: vec![],
        cancel_timers: vec![],
    };
    store.commit_turn(&lease, 103, commit).await.unwrap();
    assert_eq!(store.next_item(&grace).await.unwrap(), None);
    // Found through the work index once the lease (until 60,100) is free.
    assert_eq!(
        store.users_with_work(61_000, 10, None).await.unwrap(),
        vec![grace.clone()]
    );

    // The sender: each message recorded once, in order, with its owner.
    let mut bodies = Vec::new();
    for n in 0..5 {
        scripts_lost(&store, &[]).await;
        let Some(next) = store.next_outgoing(&grace).await.unwrap() else {
            break;
        };
        bodies.push(next.body.clone());
        let sent = SentRecord {
            message_id: format!("wamid.OUT{n}"),
            key: grace.clone(),
            flow: "main".into(),
            node: "n".into(),
            at: 200,
        };
        scripts_lost(&store, &[]).await;
        store
            .mark_sent(&lease, 200, next.at, sent.clone())
            .await
            .unwrap();
        assert_eq!(store.sent(&sent.message_id).await.unwrap(), Some(sent));
    }
    assert_eq!(bodies, ["one", "two", "one", "two", "three"]);
}

/// The shared pace grants the sends that may go at once, never more than asked, then
/// says how long to wait; each number has its own.
#[tokio::test]
async fn the_pace_grants_what_may_go_at_once_and_no_more() {
    let prefixes = Prefixes::new(&redis_url());
    let store = prefixes.store().await;
    let n = |n: u32| NonZeroU32::new(n).expect("not zero");
    // 4 a second: 4 may go at once, then one every 250 ms.
    assert_eq!(
        store.take_send_slots("1001", 4, n(2)).await.unwrap(),
        Some(Pace::Go(n(2)))
    );
    assert_eq!(
        store.take_send_slots("1001", 4, n(10)).await.unwrap(),
        Some(Pace::Go(n(2))),
        "the rest of the burst, not what was asked"
    );
    let Some(Pace::Wait(ms)) = store.take_send_slots("1001", 4, n(1)).await.unwrap() else {
        panic!("the burst is spent");
    };
    assert!((1..=250).contains(&ms), "{ms} ms");
    assert_eq!(
        store.take_send_slots("1002", 4, n(4)).await.unwrap(),
        Some(Pace::Go(n(4)))
    );
}

#[test]
fn a_redis_older_than_6_2_is_named_and_newer_ones_pass() {
    let info = |v: &str| format!("# Server\r\nredis_version:{v}\r\nredis_mode:standalone\r\n");
    assert_eq!(too_old(&info("6.0.16")), Some("6.0.16"));
    assert_eq!(too_old(&info("5.0.7")), Some("5.0.7"));
    assert_eq!(too_old(&info("6.2.0")), None);
    assert_eq!(too_old(&info("7.0.15")), None);
    assert_eq!(too_old(&info("10.0.1")), None);
    // A server that does not say (or says something else) is let through.
    assert_eq!(too_old("# Server\r\n"), None);
    assert_eq!(too_old(&info("unstable")), None);
}
