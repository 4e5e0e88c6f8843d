//! The durable store's hot path, per turn: accept an inbound item, read it, commit the
//! turn (session + one outgoing message), read the outgoing message and mark it sent.
//! Each iteration runs one such turn for every one of N users at once (N concurrent
//! tasks on a 2-thread runtime), on SQLite (a temp file) and in memory. Run with
//! `cargo bench --bench durable`; the figures are in docs/performance.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parlance::engine::Session;
use parlance::store::durable::memory::MemoryDurable;
use parlance::store::durable::sqlite::SqliteDurable;
use parlance::store::durable::{
    Accepted, Durable, ItemKind, Lease, NewItem, NewOutgoing, OutKey, TurnCommit,
};
use parlance::store::{SentRecord, SessionKey};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DAY: Duration = Duration::from_secs(86_400);

/// Numbers every item's dedupe key, across all runs on one store.
static SEQ: AtomicU64 = AtomicU64::new(0);

/// One user's state between iterations.
struct User {
    lease: Lease,
    session: Session,
}

async fn one_turn(store: &dyn Durable, user: &mut User, seq: u64) {
    let key = user.lease.key.clone();
    let answers = store
        .accept(vec![NewItem {
            key: key.clone(),
            dedupe: Some(format!("wamid.{seq}")),
            kind: ItemKind::Message,
            body: r#"{"text":"hello"}"#.into(),
            at: 1,
        }])
        .await
        .expect("accept");
    assert!(matches!(answers[0], Accepted::Stored(_)));
    let item = store.next_item(&key).await.expect("next").expect("an item");
    user.session.turn += 1;
    let at = OutKey {
        turn: user.session.turn,
        index: 0,
    };
    store
        .commit_turn(
            &user.lease,
            2,
            TurnCommit {
                item: Some(item.id),
                session: user.session.clone(),
                outgoing: vec![NewOutgoing {
                    at,
                    not_before: 0,
                    body: r#"{"type":"text","text":{"body":"hi there"}}"#.into(),
                }],
                timers: Vec::new(),
                cancel_timers: Vec::new(),
            },
        )
        .await
        .expect("commit");
    let out = store
        .next_outgoing(&key)
        .await
        .expect("next out")
        .expect("a message");
    store
        .mark_sent(
            &user.lease,
            3,
            out.at,
            SentRecord {
                message_id: format!("wamid.out.{seq}"),
                key,
                flow: "main".into(),
                node: "welcome".into(),
                at: 3,
            },
        )
        .await
        .expect("mark_sent");
}

fn bench_store(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: Arc<dyn Durable>,
    users: usize,
) {
    let state: Vec<Arc<tokio::sync::Mutex<User>>> = rt.block_on(async {
        let mut all = Vec::new();
        for n in 0..users {
            let key = SessionKey::new("1001", &format!("{name}-{users}-{n}"));
            let lease = store
                .acquire(&key, "bench", 0, DAY)
                .await
                .expect("acquire")
                .expect("a free lease");
            let session = Session::new(&key.user, 1);
            all.push(Arc::new(tokio::sync::Mutex::new(User { lease, session })));
        }
        all
    });
    let mut group = c.benchmark_group("durable");
    group.throughput(Throughput::Elements(users as u64));
    group.bench_function(format!("{name}/{users} users"), |b| {
        b.iter(|| {
            rt.block_on(async {
                let tasks: Vec<_> = state
                    .iter()
                    .map(|user| {
                        let store = Arc::clone(&store);
                        let user = Arc::clone(user);
                        tokio::spawn(async move {
                            let mut user = user.lock().await;
                            one_turn(&*store, &mut user, SEQ.fetch_add(1, Ordering::Relaxed)).await;
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("a turn");
                }
            })
        })
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite: Arc<dyn Durable> =
        Arc::new(SqliteDurable::open(&dir.path().join("bench.db")).expect("open"));
    let memory: Arc<dyn Durable> = Arc::new(MemoryDurable::default());
    for users in [1, 32, 128] {
        bench_store(c, &rt, "sqlite", Arc::clone(&sqlite), users);
        bench_store(c, &rt, "memory", Arc::clone(&memory), users);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
