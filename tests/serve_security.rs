//! The server's security defaults end to end (the real server on loopback, the fake
//! Graph API): signatures per number, `allow_unsigned`, whose admin key opens what, and
//! `/metrics` that does not slow webhooks down.

use parlance::cli::LogFormat;
use parlance::cli::serve::{self, Options};
use parlance::server::listen::{self, Limits};
use parlance::testing::fake_graph::FakeGraph;
use parlance::whatsapp::signature;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// A bot folder answering `number` with "NAME heard TEXT"; `whatsapp` and `api` are the
/// extra lines of its `parlance.yaml`.
fn write_bot(dir: &Path, graph: &FakeGraph, name: &str, whatsapp: &str, api_key: Option<&str>) {
    std::fs::create_dir_all(dir.join("flows")).unwrap();
    let api = api_key.map_or_else(String::new, |k| format!("api: {{ key: {k} }}\n"));
    let whatsapp = if whatsapp.is_empty() {
        String::new()
    } else {
        format!("whatsapp:\n{whatsapp}  base_url: {}\n", graph.base_url())
    };
    std::fs::write(
        dir.join("parlance.yaml"),
        format!("bot: {{ name: {name} }}\n{whatsapp}session: {{ store: \"sqlite://data/bot.db\" }}\n{api}"),
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/main.yaml"),
        format!(
            "nodes:\n  echo:\n    say: \"{name} heard {{{{ message.text }}}}\"\n    next: end\n"
        ),
    )
    .unwrap();
}

fn credentials(number: &str, secret: Option<&str>) -> String {
    let mut lines = format!(
        "  access_token: token-{number}\n  phone_number_id: \"{number}\"\n  verify_token: v\n"
    );
    match secret {
        Some(s) => lines.push_str(&format!("  app_secret: {s}\n")),
        None => lines.push_str("  allow_unsigned: true\n"),
    }
    lines
}

fn options(dirs: &[&Path]) -> Options {
    Options {
        dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
        bind: "127.0.0.1".into(),
        port: 0,
        max_body_bytes: parlance::server::DEFAULT_MAX_BODY_BYTES,
        limits: Limits::default(),
        log_format: LogFormat::Text,
        delivery: Default::default(),
    }
}

async fn start(dirs: &[&Path]) -> SocketAddr {
    let (state, _) = serve::build(&options(dirs)).await.expect("the bots load");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let app = parlance::server::app(state);
        let _ = listen::serve(listener, app, Limits::default(), std::future::pending()).await;
    });
    addr
}

fn text_webhook(number: &str, from: &str, id: &str, text: &str) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "WABA", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550000000", "phone_number_id": number },
            "contacts": [{ "profile": { "name": "Ada" }, "wa_id": from }],
            "messages": [{ "from": from, "id": id, "timestamp": now, "type": "text", "text": { "body": text } }]
        }}]}]
    }))
    .unwrap()
}

async fn post(addr: SocketAddr, body: &[u8], secret: Option<&str>) -> u16 {
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}/webhook"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(secret) = secret {
        req = req.header("x-hub-signature-256", signature::sign(secret, body));
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_number_that_can_send_without_an_app_secret_does_not_start() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let open = "  access_token: t\n  phone_number_id: \"1001\"\n  verify_token: v\n";
    write_bot(dir.path(), &graph, "open", open, None);
    assert!(
        serve::build(&options(&[dir.path()])).await.is_err(),
        "a token without app_secret (nor allow_unsigned) is refused"
    );
}

#[tokio::test]
async fn unsigned_posts_reach_only_numbers_that_allow_them() {
    let graph = FakeGraph::start().await.unwrap();
    let (signed, unsigned) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_bot(
        signed.path(),
        &graph,
        "signed",
        &credentials("1001", Some("secret-a")),
        None,
    );
    write_bot(
        unsigned.path(),
        &graph,
        "unsigned",
        &credentials("2002", None),
        None,
    );
    let addr = start(&[signed.path(), unsigned.path()]).await;

    // Unsigned, or signed with another number's secret, for the number with a secret:
    // refused, and nothing is sent.
    let for_signed = text_webhook("1001", "4915100000001", "wamid.u.1", "hello");
    assert_eq!(post(addr, &for_signed, None).await, 401);
    assert_eq!(post(addr, &for_signed, Some("secret-b")).await, 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(graph.received().is_empty(), "{:?}", graph.messages());

    // The number that says allow_unsigned takes it (a test setup).
    let for_unsigned = text_webhook("2002", "4915100000002", "wamid.u.2", "hi");
    assert_eq!(post(addr, &for_unsigned, None).await, 200);
    let sent = graph.wait_for_messages(1).await;
    assert_eq!(sent[0]["text"]["body"], "unsigned heard hi");
    assert_eq!(graph.received()[0].phone_number_id, "2002");

    // Correctly signed, the first number answers too.
    assert_eq!(post(addr, &for_signed, Some("secret-a")).await, 200);
    let sent = graph.wait_for_messages(2).await;
    assert_eq!(sent[1]["text"]["body"], "signed heard hello");
}

async fn admin_status(addr: SocketAddr, key: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(format!("http://{addr}/admin/status"));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn numbers(status: &Value) -> Vec<&str> {
    status["bots"]
        .as_array()
        .map(|bots| {
            bots.iter()
                .filter_map(|b| b["phone_number_id"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn each_bots_admin_key_opens_its_own_number_only() {
    let graph = FakeGraph::start().await.unwrap();
    let dirs = [
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    ];
    write_bot(
        dirs[0].path(),
        &graph,
        "a",
        &credentials("1001", Some("sa")),
        Some("key-a"),
    );
    write_bot(
        dirs[1].path(),
        &graph,
        "b",
        &credentials("2002", Some("sb")),
        Some("key-b"),
    );
    // A local bot without a key: no key opens it.
    write_bot(dirs[2].path(), &graph, "c", "", None);
    let addr = start(&[dirs[0].path(), dirs[1].path(), dirs[2].path()]).await;

    let (code, a) = admin_status(addr, Some("key-a")).await;
    assert_eq!((code, numbers(&a)), (200, vec!["1001"]));
    let (code, b) = admin_status(addr, Some("key-b")).await;
    assert_eq!((code, numbers(&b)), (200, vec!["2002"]));
    for wrong in [None, Some(""), Some("key-"), Some("key-ab"), Some("KEY-A")] {
        let (code, body) = admin_status(addr, wrong).await;
        assert_eq!(code, 401, "{wrong:?}");
        assert_eq!(
            body,
            json!({ "error": "a valid Bearer API key is required" })
        );
    }
}

/// Sends `n` signed webhooks one after the other; the median time to their 200.
async fn median_ack(addr: SocketAddr, n: usize, tag: &str) -> Duration {
    let mut acks = Vec::new();
    for i in 0..n {
        let body = text_webhook(
            "1001",
            &format!("49151{i:08}"),
            &format!("wamid.{tag}.{i}"),
            "hi",
        );
        let started = Instant::now();
        assert_eq!(post(addr, &body, Some("s")).await, 200);
        acks.push(started.elapsed());
    }
    acks.sort();
    acks[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_do_not_slow_webhook_acks_with_many_sessions() {
    const SESSIONS: i64 = 200_000;
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(
        dir.path(),
        &graph,
        "busy",
        &credentials("1001", Some("s")),
        None,
    );
    // Many active sessions, written in one transaction next to the bot's own database.
    let db = dir.path().join("data/bot.db");
    let url = parlance::store::parse_url("sqlite://data/bot.db").unwrap();
    drop(parlance::store::open(&url, dir.path()).await.unwrap());
    let now = chrono::Utc::now().timestamp();
    {
        let mut conn = rusqlite::Connection::open(&db).unwrap();
        let tx = conn.transaction().unwrap();
        {
            let mut insert = tx
                .prepare("INSERT INTO d_sessions (phone_number_id, user, version, data, updated_at) VALUES ('1001', ?1, 0, '{}', ?2)")
                .unwrap();
            for i in 0..SESSIONS {
                insert
                    .execute(rusqlite::params![format!("user{i}"), now])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    // How long one count takes on this machine, now.
    let store = parlance::store::open(&url, dir.path()).await.unwrap();
    let mut counts: Vec<Duration> = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(
            store.count_sessions(now - 60).await.unwrap(),
            SESSIONS as usize
        );
        counts.push(started.elapsed());
    }
    counts.sort();
    // The server takes the file next: one process at a time.
    drop(store);
    let one_count = counts[1];

    let addr = start(&[dir.path()]).await;
    let quiet = median_ack(addr, 10, "quiet").await;
    // Four scrapers, each scraping every few milliseconds while the webhooks arrive.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scrapers: Vec<_> = (0..4)
        .map(|_| {
            let done = std::sync::Arc::clone(&done);
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut scrapes = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let text = client
                        .get(format!("http://{addr}/metrics"))
                        .send()
                        .await
                        .unwrap()
                        .text()
                        .await
                        .unwrap();
                    assert!(text.contains("parlance_sessions_active"));
                    scrapes += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                scrapes
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let scraped = median_ack(addr, 20, "scraped").await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut scrapes = 0;
    for s in scrapers {
        scrapes += s.await.unwrap();
    }
    assert!(scrapes >= 20, "the scrapers ran alongside: {scrapes}");
    // Had a scrape counted sessions under the lock webhooks need, each ack would wait
    // behind the counts of four scrapers: measured on the old code, acks slowed by about
    // 2.3 counts. One whole count of slack keeps a loaded machine's jitter (2 ms seen)
    // from failing the test while that slowdown still fails it.
    assert!(
        scraped < quiet + one_count,
        "webhook acks slowed from {quiet:?} to {scraped:?} by scrapes (one count takes {one_count:?})"
    );
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let active: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("parlance_sessions_active "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    assert!(active >= SESSIONS, "{text}");
    assert_eq!(graph.wait_for_messages(30).await.len(), 30);
}
