use super::*;
use crate::store::durable::conformance;

fn open_in(dir: &tempfile::TempDir) -> SqliteDurable {
    SqliteDurable::open(&dir.path().join("data/parlance.db")).expect("open")
}

fn item(user: &str, dedupe: Option<&str>, body: &str) -> NewItem {
    NewItem {
        key: SessionKey::new("1001", user),
        dedupe: dedupe.map(str::to_string),
        kind: ItemKind::Message,
        body: body.to_string(),
        at: 1,
    }
}

/// Another connection to the file, as a newer version or a broken disk would write.
fn raw(dir: &tempfile::TempDir) -> Connection {
    let conn = Connection::open(dir.path().join("data/parlance.db")).expect("raw open");
    conn.busy_timeout(Duration::from_secs(5)).expect("busy");
    conn
}

#[tokio::test]
async fn conforms() {
    let dirs = Arc::new(Mutex::new(Vec::new()));
    conformance::run_all(|| {
        let dirs = Arc::clone(&dirs);
        async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = open_in(&dir);
            // The folder must outlive the store.
            dirs.lock().unwrap_or_else(|e| e.into_inner()).push(dir);
            Arc::new(store) as Arc<dyn Durable>
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms_under_a_multi_threaded_runtime() {
    let dir = tempfile::tempdir().unwrap();
    conformance::concurrent_accepts_and_two_holders_keep_order(Arc::new(open_in(&dir))).await;
}

#[tokio::test]
async fn a_second_open_of_one_file_fails_clearly_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/parlance.db");
    let first = SqliteDurable::open(&path).unwrap();
    let e = SqliteDurable::open(&path).unwrap_err();
    assert_eq!(
        e.0,
        format!(
            "{} is in use by another parlance process (pid {}?); two instances cannot share one SQLite file: use Redis (session.store: redis://...)",
            path.display(),
            std::process::id()
        )
    );
    // The first one still works, and the lock goes with it.
    first.ping().await.unwrap();
    drop(first);
    let again = SqliteDurable::open(&path).unwrap();
    again.ping().await.unwrap();
}

#[tokio::test]
async fn a_reopened_store_has_everything() {
    let dir = tempfile::tempdir().unwrap();
    let ada = SessionKey::new("1001", "ada");
    let token;
    {
        let store = open_in(&dir);
        let a = store.accept(vec![
            item("ada", Some("wamid.1"), "one"),
            item("ada", None, "two"),
        ]);
        let ids = a.await.unwrap();
        let Accepted::Stored(first) = ids[0] else {
            panic!("{ids:?}")
        };
        let l = store
            .acquire(&ada, "a", 0, Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        token = l.token;
        store
            .commit_turn(
                &l,
                1,
                TurnCommit {
                    item: Some(first),
                    session: Session::new("ada", 1),
                    outgoing: vec![super::super::NewOutgoing {
                        at: OutKey { turn: 1, index: 0 },
                        not_before: 0,
                        body: "reply".into(),
                    }],
                    timers: vec![NewTimer {
                        name: "wait".into(),
                        due: 500,
                        body: "t".into(),
                    }],
                    cancel_timers: Vec::new(),
                },
            )
            .await
            .unwrap();
    }
    let store = open_in(&dir);
    assert_eq!(
        store.load_session(&ada).await.unwrap(),
        Some(Session::new("ada", 1))
    );
    assert_eq!(store.next_item(&ada).await.unwrap().unwrap().body, "two");
    assert_eq!(
        store.next_outgoing(&ada).await.unwrap().unwrap().body,
        "reply"
    );
    assert_eq!(store.timers(&ada).await.unwrap().len(), 1);
    assert_eq!(
        store
            .accept(vec![item("ada", Some("wamid.1"), "one")])
            .await
            .unwrap(),
        vec![Accepted::Duplicate],
        "dedupe keys survive a restart"
    );
    // The old process's lease is gone (the file lock proves that process is), so
    // another holder takes the user at once; tokens keep growing.
    let next = store
        .acquire(&ada, "b", 2, Duration::from_secs(60))
        .await
        .unwrap()
        .expect("a lease of a closed store is free after reopening");
    assert!(next.token > token);
}

#[tokio::test]
async fn unreadable_rows_are_moved_aside_and_the_user_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir);
    let ada = SessionKey::new("1001", "ada");
    let conn = raw(&dir);
    // An item kind from a newer version, then one whose body is not text.
    conn.execute(
        "INSERT INTO d_items (phone_number_id, user, kind, body, at) VALUES ('1001', 'ada', 'future_kind', '{}', 1)",
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO d_items (phone_number_id, user, kind, body, at) VALUES ('1001', 'ada', 'message', x'00ff', 2)",
        [],
    )
    .unwrap();
    let ids = store
        .accept(vec![item("ada", None, "readable")])
        .await
        .unwrap();
    let Accepted::Stored(good) = ids[0] else {
        panic!("{ids:?}")
    };
    assert_eq!(
        store.next_item(&ada).await.unwrap().map(|i| (i.id, i.body)),
        Some((good, "readable".to_string()))
    );
    // An outgoing message with a negative attempt count, ahead of a good one.
    conn.execute(
        "INSERT INTO d_outbox VALUES ('1001', 'ada', 1, 0, 'bad', -1, 0, 0), ('1001', 'ada', 1, 1, 'good', 0, 0, 0)",
        [],
    )
    .unwrap();
    assert_eq!(
        store.next_outgoing(&ada).await.unwrap().unwrap().body,
        "good"
    );
    let moved: Vec<(String, String, String)> = conn
        .prepare("SELECT source, user, reason FROM d_quarantine ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(moved.len(), 3, "{moved:?}");
    assert_eq!(
        moved[0],
        (
            "d_items".into(),
            "ada".into(),
            "unknown item kind \"future_kind\"".into()
        )
    );
    assert_eq!(
        (moved[1].0.as_str(), moved[2].0.as_str()),
        ("d_items", "d_outbox")
    );
    // Erasure covers the quarantine too.
    store.delete_user("ada").await.unwrap();
    let left: i64 = conn
        .query_row("SELECT COUNT(*) FROM d_quarantine", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn unreadable_timers_dead_letters_and_sent_records_are_moved_aside_and_the_rest_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir);
    let conn = raw(&dir);
    // Two due timers that cannot be read (a body that is not text, a due time that is
    // not an integer) around a good one.
    conn.execute_batch(
        "INSERT INTO d_timers (phone_number_id, user, name, due, body) VALUES
           ('1001', 'ada', 'bad', 5, x'00ff'),
           ('1001', 'bob', 'wait', 6, 'wake'),
           ('1001', 'cy', 'real', 7.5, 'x');",
    )
    .unwrap();
    assert_eq!(
        store.timers(&SessionKey::new("1001", "ada")).await.unwrap(),
        vec![]
    );
    assert_eq!(store.fire_due_timers(10, 10).await.unwrap(), 1);
    let fired = store
        .next_item(&SessionKey::new("1001", "bob"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (fired.kind, fired.body.as_str(), fired.at),
        (ItemKind::Timer, "wake", 6)
    );
    assert_eq!(
        store.fire_due_timers(10, 10).await.unwrap(),
        0,
        "moved, not retried"
    );
    // A dead letter that cannot be read does not hide the ones after it.
    conn.execute_batch(
        "INSERT INTO d_dead (phone_number_id, user, turn, idx, body, attempts, reason, since) VALUES
           ('1001', 'ada', 1, 0, x'00', 0, 'r', 1),
           ('1001', 'bob', 1, 0, 'b', 1, 'gave up', 2);",
    )
    .unwrap();
    let dead = store.dead_letters(None, 10).await.unwrap();
    assert_eq!(
        dead.iter()
            .map(|d| (d.key.user.as_str(), d.body.as_str(), d.since))
            .collect::<Vec<_>>(),
        vec![("bob", "b", 2)]
    );
    assert_eq!(store.dead_letters(None, 1).await.unwrap(), dead);
    // A sent record that cannot be read: a message we know nothing of, not an error
    // a `failed` status would wait on forever.
    conn.execute_batch(
        "INSERT INTO d_sent (message_id, phone_number_id, user, flow, node, at) VALUES
           ('wamid.bad', '1001', 'ada', 'main', x'00', 1);",
    )
    .unwrap();
    assert_eq!(store.sent("wamid.bad").await.unwrap(), None);
    let moved: Vec<(String, String)> = conn
        .prepare("SELECT source, user FROM d_quarantine ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        moved,
        [
            ("d_timers".to_string(), "ada".to_string()),
            ("d_timers".into(), "cy".into()),
            ("d_dead".into(), "ada".into()),
            ("d_sent".into(), "ada".into())
        ]
    );
}

#[tokio::test]
async fn a_failed_accept_stores_nothing_and_leaves_its_batch_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir);
    // A disk-level failure on one item, provoked by a trigger.
    raw(&dir)
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON d_items WHEN NEW.body = 'poison'
             BEGIN SELECT RAISE(ABORT, 'disk says no'); END;",
        )
        .unwrap();
    let e = store
        .accept(vec![
            item("ada", Some("wamid.1"), "fine"),
            item("ada", Some("wamid.2"), "poison"),
        ])
        .await
        .unwrap_err();
    assert_eq!(e.0, "disk says no");
    // Neither the item nor its dedupe key stayed: Meta's redelivery is stored.
    let ada = SessionKey::new("1001", "ada");
    assert_eq!(store.next_item(&ada).await.unwrap(), None);
    let again = store
        .accept(vec![item("ada", Some("wamid.1"), "fine")])
        .await
        .unwrap();
    assert!(matches!(again[0], Accepted::Stored(_)), "{again:?}");
}

#[tokio::test]
async fn writes_waiting_behind_a_commit_share_the_next_one() {
    batch_with_poison(&[7]).await;
}

/// The first writes of a batch run without a savepoint (nothing to keep yet): when they
/// fail, the transaction starts over and the rest of the batch still commits.
#[tokio::test]
async fn failed_first_writes_of_a_batch_leave_the_rest_alone() {
    batch_with_poison(&[0, 1, 30]).await;
}

/// Holds the store's writer inside a transaction (a write that waits) until the
/// returned sender says go; answers once the writer is inside it (it runs on its own
/// thread), with the held write's task.
async fn hold_writer(
    store: &Arc<SqliteDurable>,
) -> (
    std::sync::mpsc::Sender<()>,
    tokio::task::JoinHandle<Result<(), StoreError>>,
) {
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let (entered, inside) = std::sync::mpsc::channel::<()>();
    let blocker = {
        let store = Arc::clone(store);
        tokio::spawn(async move {
            store
                .write_plain(move |_| {
                    let _ = entered.send(());
                    let _ = wait.recv_timeout(Duration::from_secs(10));
                    Ok(())
                })
                .await
        })
    };
    tokio::task::yield_now().await;
    inside
        .recv_timeout(Duration::from_secs(10))
        .expect("the writer took the blocking write");
    (go, blocker)
}

/// 50 writes queued behind a held commit, those at `poisoned` failing: the others are
/// stored in one commit.
async fn batch_with_poison(poisoned: &[usize]) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_in(&dir));
    raw(&dir)
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON d_items WHEN NEW.body = 'poison'
             BEGIN SELECT RAISE(ABORT, 'disk says no'); END;",
        )
        .unwrap();
    // Hold the writer inside a transaction until the other writes are queued.
    let (go, blocker) = hold_writer(&store).await;
    let before = store.commits();
    let writers: Vec<_> = (0..50)
        .map(|n| {
            let store = Arc::clone(&store);
            let body = if poisoned.contains(&n) {
                "poison".to_string()
            } else {
                format!("m{n}")
            };
            tokio::spawn(async move {
                store
                    .accept(vec![item(&format!("u{n}"), Some(&format!("w{n}")), &body)])
                    .await
            })
        })
        .collect();
    // On this single-threaded runtime, one yield lets every writer queue its write.
    tokio::task::yield_now().await;
    go.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    let mut stored = 0;
    for (n, w) in writers.into_iter().enumerate() {
        match w.await.unwrap() {
            Ok(a) => {
                assert!(matches!(a[0], Accepted::Stored(_)), "{n}: {a:?}");
                stored += 1;
            }
            Err(e) => {
                assert!(poisoned.contains(&n), "{n}: {e:?}");
                assert_eq!(e.0, "disk says no");
            }
        }
    }
    assert_eq!(
        stored,
        50 - poisoned.len(),
        "the failed writes were rolled back alone"
    );
    assert_eq!(
        store.commits() - before,
        2,
        "the held commit, then one for the 50 writes queued behind it"
    );
}

/// Three writes queued behind a held commit, the middle one `failing` in the way given;
/// answers how often each of the other two ran, their answers and the failing one's.
async fn batch_around(
    failing: fn(&Connection) -> WriteResult<()>,
) -> ([usize; 2], [bool; 2], bool, u64) {
    use std::sync::atomic::AtomicUsize;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_in(&dir));
    let (go, blocker) = hold_writer(&store).await;
    let before = store.commits();
    let runs = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let counted = |n: usize| {
        let store = Arc::clone(&store);
        let runs = Arc::clone(&runs[n]);
        tokio::spawn(async move {
            store
                .write_plain(move |conn| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    conn.execute(
                        "INSERT INTO d_meta (name, value) VALUES (?1, 1)",
                        params![format!("ok{n}")],
                    )?;
                    Ok(())
                })
                .await
        })
    };
    let first = counted(0);
    tokio::task::yield_now().await;
    let failed = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.write_plain(failing).await })
    };
    tokio::task::yield_now().await;
    let second = counted(1);
    tokio::task::yield_now().await;
    go.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    let answers = [first.await.unwrap().is_ok(), second.await.unwrap().is_ok()];
    let failed = failed.await.unwrap().is_ok();
    let kept: i64 = raw(&dir)
        .query_row(
            "SELECT COUNT(*) FROM d_meta WHERE name IN ('ok0', 'ok1', 'half')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        kept, 2,
        "the two good writes stand, the failed one left nothing"
    );
    (
        [
            runs[0].load(Ordering::SeqCst),
            runs[1].load(Ordering::SeqCst),
        ],
        answers,
        failed,
        store.commits() - before,
    )
}

/// A write that fails before changing anything (a fenced lease, a conflict found by a
/// read) costs its batch nothing: no savepoints, nothing run twice.
#[tokio::test]
async fn a_write_that_failed_before_changing_anything_leaves_its_batch_as_it_was() {
    let (runs, answers, failed, commits) = batch_around(|_| Err(WriteError::Fenced)).await;
    assert_eq!(runs, [1, 1], "each good write ran once");
    assert_eq!(answers, [true, true]);
    assert!(!failed);
    assert_eq!(commits, 2, "the held commit, then one for the three writes");
}

/// A write that fails after changing rows is undone alone: the batch starts over with
/// a savepoint per write, and the others still commit (once).
#[tokio::test]
async fn a_write_that_failed_half_way_is_undone_alone() {
    let (runs, answers, failed, commits) = batch_around(|conn| {
        conn.execute("INSERT INTO d_meta (name, value) VALUES ('half', 1)", [])?;
        Err(WriteError::Store(StoreError("and then it failed".into())))
    })
    .await;
    assert_eq!(
        runs,
        [2, 1],
        "the batch started over at the failure, each write in its savepoint then"
    );
    assert_eq!(answers, [true, true]);
    assert!(!failed);
    assert_eq!(commits, 2, "the held commit, then one for the three writes");
}

/// The WAL is copied into the database file as it grows (by the checkpoint thread, not
/// the writer): after ~8 MB of writes the file holds them, and the `-wal` file stays
/// bounded.
#[tokio::test]
async fn the_wal_is_checkpointed_into_the_file_as_it_grows() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir);
    let body = "x".repeat(4_000);
    for n in 0..2_000 {
        store
            .accept(vec![item(&format!("u{n}"), Some(&format!("w{n}")), &body)])
            .await
            .unwrap();
    }
    let db = dir.path().join("data/parlance.db");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let size = std::fs::metadata(&db).unwrap().len();
        if size >= 8_000_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the database file holds {size} bytes: the WAL was not checkpointed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wal = std::fs::metadata(dir.path().join("data/parlance.db-wal"))
        .unwrap()
        .len();
    assert!(wal < 40 << 20, "the WAL grew to {wal} bytes");
}

/// Set in the child process of [`a_killed_process_loses_nothing_it_acknowledged`].
const CRASH_CHILD: &str = "PARLANCE_DURABLE_CRASH_CHILD";

/// The child: accepts items from four tasks and runs turns from a fifth, printing
/// `acked N` after each accept and `turn N` after each commit returned, until killed
/// (or 60 s, should the parent be gone).
fn crash_child(path: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = Arc::new(SqliteDurable::open(path).expect("child open"));
        let ada = SessionKey::new("1001", "ada");
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                for n in 0.. {
                    let id = format!("{t}-{n}");
                    store
                        .accept(vec![item("ada", Some(&format!("w{id}")), &id)])
                        .await
                        .expect("accept");
                    println!("acked {id}");
                }
            }));
        }
        let turns = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let lease = turns
                .acquire(&ada, "child", 0, Duration::from_secs(3600))
                .await
                .expect("acquire")
                .expect("free");
            let mut session = Session::new("ada", 1);
            loop {
                let Some(next) = turns.next_item(&ada).await.expect("next") else {
                    tokio::task::yield_now().await;
                    continue;
                };
                session.turn += 1;
                turns
                    .commit_turn(
                        &lease,
                        1,
                        TurnCommit {
                            item: Some(next.id),
                            session: session.clone(),
                            outgoing: Vec::new(),
                            timers: Vec::new(),
                            cancel_timers: Vec::new(),
                        },
                    )
                    .await
                    .expect("commit");
                println!("turn {}", session.turn);
            }
        }));
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(tasks);
    });
}

#[test]
fn a_killed_process_loses_nothing_it_acknowledged() {
    if let Some(path) = std::env::var_os(CRASH_CHILD) {
        crash_child(Path::new(&path));
        return;
    }
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/parlance.db");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "store::durable::sqlite::tests::a_killed_process_loses_nothing_it_acknowledged",
            "--exact",
            "--nocapture",
        ])
        .env(CRASH_CHILD, &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    // Kill it in the middle of the work: after 300 acknowledged items and 50 turns.
    let (mut acked, mut turns) = (Vec::new(), 0u64);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.len() < 300 || turns < 50 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(id) = line.strip_prefix("acked ") {
                    acked.push(id.to_string());
                } else if let Some(n) = line.strip_prefix("turn ") {
                    turns = turns.max(n.parse().unwrap());
                }
            }
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "the child stopped or stalled ({e}) after {} acks, {turns} turns",
                    acked.len()
                );
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // The lock died with the process; everything acknowledged is there.
    let store = SqliteDurable::open(&path).expect("reopen after the kill");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ada = SessionKey::new("1001", "ada");
    let session_turn = rt
        .block_on(store.load_session(&ada))
        .unwrap()
        .map_or(0, |s| s.turn);
    assert!(
        session_turn >= turns,
        "turn {session_turn} < acknowledged {turns}"
    );
    for id in &acked {
        let again = rt.block_on(store.accept(vec![item("ada", Some(&format!("w{id}")), id)]));
        assert_eq!(
            again.unwrap(),
            vec![Accepted::Duplicate],
            "item {id} was acknowledged"
        );
    }
    // Every stored item was either handled by a committed turn or is still in the inbox:
    // no turn committed without removing its item, none removed without its session.
    let conn = raw(&dir);
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    let keys = count("SELECT COUNT(*) FROM d_dedupe");
    let pending = count("SELECT COUNT(*) FROM d_items");
    assert_eq!(keys, pending + i64::try_from(session_turn).unwrap());
}

#[tokio::test]
async fn lease_tokens_keep_growing_past_a_reserved_block_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut last = 0;
    {
        let store = open_in(&dir);
        let block = usize::try_from(leases::TOKEN_BLOCK).unwrap();
        for n in 0..block + 5 {
            let key = SessionKey::new("1001", &format!("u{n}"));
            let lease = store
                .acquire(&key, "a", 1, Duration::from_secs(60))
                .await
                .unwrap()
                .expect("a free lease");
            assert!(lease.token > last, "token {} after {last}", lease.token);
            last = lease.token;
        }
    }
    // A new process (the old one's leases are gone with it) gives larger tokens still.
    let store = open_in(&dir);
    let key = SessionKey::new("1001", "u0");
    let lease = store
        .acquire(&key, "b", 2, Duration::from_secs(60))
        .await
        .unwrap()
        .expect("the old process's lease is gone");
    assert!(lease.token > last, "token {} after {last}", lease.token);
}

/// The reads every worker step makes are compiled once per connection, not again for
/// each user they are run for, and still search the user's index.
#[test]
fn hot_reads_are_compiled_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let conn = rusqlite::Connection::open(dir.path().join("x.db")).expect("open");
    conn.execute_batch(super::schema::SCHEMA).expect("schema");
    for (sql, index) in [
        (super::NEXT_ITEM, "d_items_key"),
        (super::USER_HAS_ITEMS, "d_items_key"),
        (super::NEXT_OUTGOING, "sqlite_autoindex_d_outbox_1"),
    ] {
        for user in 0..10 {
            let mut q = conn.prepare_cached(sql).expect("prepare");
            q.exists(rusqlite::params!["1555", format!("3161{user}")])
                .expect("query");
        }
        let q = conn.prepare_cached(sql).expect("prepare");
        let recompiled = q.get_status(rusqlite::StatementStatus::RePrepare);
        assert_eq!(recompiled, 0, "{sql} was compiled again {recompiled} times");
        let plan: String = conn
            .query_row(&format!("EXPLAIN QUERY PLAN {sql}"), ["a", "b"], |r| {
                r.get(3)
            })
            .expect("plan");
        assert!(plan.contains(index), "{sql}: {plan}");
    }
}

/// A turn on the direct path stores no item row, yet its id comes from the same counter
/// as stored items: ids keep growing across turns, stored items, a failed batch and a
/// reopen, and an older build (which lets `AUTOINCREMENT` choose) goes on after them.
#[tokio::test]
async fn item_ids_keep_growing_without_rows_for_direct_turns() {
    let dir = tempfile::tempdir().unwrap();
    let ada = SessionKey::new("1001", "ada");
    let mut last = 0;
    {
        let store = open_in(&dir);
        let lease = store
            .acquire(&ada, "a", 1, Duration::from_secs(60))
            .await
            .unwrap()
            .expect("a free lease");
        for n in 0..3 {
            let turn = DirectTurn {
                item: item("ada", Some(&format!("wamid.{n}")), "hi"),
                session: Session::new("ada", 1),
                outgoing: vec![super::super::DirectOutgoing {
                    not_before: 0,
                    body: format!("reply {n}"),
                }],
            };
            let Direct::Committed(id, _) = store.accept_turn(&lease, 2, turn).await.unwrap() else {
                panic!("an empty inbox takes the direct path");
            };
            assert!(id.0 > last, "{id:?} after {last}");
            last = id.0;
        }
        let rows: i64 = raw(&dir)
            .query_row("SELECT COUNT(*) FROM d_items", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0, "a direct turn's item is never stored");
        let stored = store
            .accept(vec![item("bob", Some("wamid.b"), "hello")])
            .await
            .unwrap();
        let Accepted::Stored(id) = stored[0] else {
            panic!("{stored:?}")
        };
        assert!(id.0 > last, "{id:?} after {last}");
        last = id.0;
        // A batch that fails after taking an id: that id is never given again.
        raw(&dir)
            .execute_batch(
                "CREATE TRIGGER poison BEFORE INSERT ON d_items WHEN NEW.body = 'poison'
                 BEGIN SELECT RAISE(ABORT, 'disk says no'); END;",
            )
            .unwrap();
        store
            .accept(vec![
                item("bob", Some("wamid.c"), "fine"),
                item("bob", Some("wamid.d"), "poison"),
            ])
            .await
            .unwrap_err();
        raw(&dir).execute_batch("DROP TRIGGER poison").unwrap();
        let turn = DirectTurn {
            item: item("ada", Some("wamid.last"), "hi"),
            session: Session::new("ada", 1),
            outgoing: Vec::new(),
        };
        let Direct::Committed(id, _) = store.accept_turn(&lease, 3, turn).await.unwrap() else {
            panic!("an empty inbox takes the direct path");
        };
        assert!(
            id.0 > last + 1,
            "{id:?}: the failed batch's ids are skipped"
        );
        last = id.0;
    }
    // A new process goes on after every id the old one committed.
    let store = open_in(&dir);
    let stored = store
        .accept(vec![item("bob", Some("wamid.e"), "again")])
        .await
        .unwrap();
    let Accepted::Stored(id) = stored[0] else {
        panic!("{stored:?}")
    };
    assert!(id.0 > last, "{id:?} after {last}");
    last = id.0;
    drop(store);
    // So does an older build's insert, which lets AUTOINCREMENT choose the id.
    let conn = raw(&dir);
    conn.execute(
        "INSERT INTO d_items (phone_number_id, user, kind, body, at) VALUES ('1001', 'cy', 'message', '{}', 1)",
        [],
    )
    .unwrap();
    assert!(uint(conn.last_insert_rowid()) > last);
}

/// A file whose sessions table an older build made (a rowid table with a key index and
/// a user index) is rebuilt at open, its sessions kept.
#[tokio::test]
async fn an_older_files_sessions_are_kept_in_the_new_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/parlance.db");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let data = encode(&Session::new("ada", 7)).unwrap();
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE d_sessions (
                 phone_number_id TEXT NOT NULL,
                 user TEXT NOT NULL,
                 version INTEGER NOT NULL,
                 data TEXT NOT NULL,
                 updated_at INTEGER NOT NULL,
                 PRIMARY KEY (phone_number_id, user)
             );
             CREATE INDEX d_sessions_user ON d_sessions (user);
             CREATE INDEX d_sessions_updated ON d_sessions (updated_at);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO d_sessions VALUES ('1001', 'ada', ?1, ?2, 7)",
            params![SESSION_VERSION, data],
        )
        .unwrap();
    }
    let store = SqliteDurable::open(&path).unwrap();
    let ada = SessionKey::new("1001", "ada");
    assert_eq!(
        store.load_session(&ada).await.unwrap(),
        Some(Session::new("ada", 7))
    );
    assert_eq!(store.count_sessions(0).await.unwrap(), 1);
    let conn = raw(&dir);
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'd_sessions'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(sql.contains("WITHOUT ROWID"), "{sql}");
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'd_sessions' AND sql IS NOT NULL")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(indexes, ["d_sessions_updated"]);
    // Erasure finds the user by the table's key.
    assert_eq!(store.delete_user("ada").await.unwrap(), 1);
    assert_eq!(store.load_session(&ada).await.unwrap(), None);
}
