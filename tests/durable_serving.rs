//! Nothing lost, nothing twice: the real binary, real kills, the fake Graph API on
//! loopback answering like Meta (outages, an expired token, slow answers included), a
//! real SQLite file and, for several instances, the real Redis at `REDIS_URL`.
//!
//! "Meta" here is a client that redelivers every webhook until it gets a 200, against
//! whichever instance answers, as Meta and a balancer would.

#![cfg(unix)]

use parlance::testing::fake_graph::{FakeGraph, Reply};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{Server, free_port, parlance, post_signed, redis_store, text_webhook};

const SECRET: &str = "durable-app-secret";
const NUMBER: &str = "1001";

/// A bot whose every turn sends three replies naming the message, `delay_ms` apart;
/// `wait` sends "before", waits 5 s, sends "after".
fn write_bot(dir: &Path, graph: &FakeGraph, delay_ms: u64, store: &str, token: &str) {
    write_bot_entry(dir, graph, delay_ms, store, token, "three");
}

/// A bot whose entry flow counts the user's messages: "n3 count 4" answers the fourth
/// message, "n3" (a lost update would repeat a count; a message handled twice would
/// skip one).
fn write_counting_bot(dir: &Path, graph: &FakeGraph, store: &str) {
    write_bot_entry(dir, graph, 0, store, "test-token", "count");
}

fn write_bot_entry(
    dir: &Path,
    graph: &FakeGraph,
    delay_ms: u64,
    store: &str,
    token: &str,
    entry: &str,
) {
    std::fs::create_dir_all(dir.join("flows")).unwrap();
    std::fs::write(
        dir.join("parlance.yaml"),
        format!(
            "bot: {{ entry: {entry} }}\nwhatsapp:\n  access_token: {token}\n  phone_number_id: \"{NUMBER}\"\n  verify_token: let-me-in\n  app_secret: {SECRET}\n  message_delay_ms: {delay_ms}\n  base_url: {}\nsession: {{ store: \"{store}\" }}\napi: {{ key: admin-key }}\n",
            graph.base_url()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/three.yaml"),
        "nodes:\n  three:\n    say: [\"{{ message.text }} 1\", \"{{ message.text }} 2\", \"{{ message.text }} 3\"]\n    next: end\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/wait.yaml"),
        "triggers:\n  - keywords: [wait]\nnodes:\n  before:\n    say: before\n  pause:\n    wait: 5s\n  after:\n    say: after\n    next: end\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/count.yaml"),
        "nodes:\n  count:\n    set: { count: \"(vars.count | default(0)) + 1\" }\n    next: say\n  say:\n    ask: { text: \"{{ message.text }} count {{ vars.count }}\", expect: any }\n    save: last\n    next: count\n",
    )
    .unwrap();
}

/// Meta's redelivery: posts until one of the servers on `ports` answers 200 (trying
/// them in turn, from `first`), for at most 60 s.
async fn deliver(client: &reqwest::Client, ports: &[u16], first: usize, body: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = first;
    loop {
        let port = ports.get(i % ports.len()).copied().unwrap_or_default();
        if post_signed(client, port, SECRET, body).await == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no server acknowledged a webhook in 60 s"
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The texts Graph accepted, per recipient, in order.
fn accepted_per_user(graph: &FakeGraph) -> BTreeMap<String, Vec<String>> {
    let mut per_user: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in graph.accepted() {
        let to = m["to"].as_str().unwrap_or_default().to_string();
        let text = m["text"]["body"].as_str().unwrap_or_default().to_string();
        per_user.entry(to).or_default().push(text);
    }
    per_user
}

/// Waits until Graph accepted at least `n` messages, up to `within`.
async fn wait_accepted(graph: &FakeGraph, n: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let got = graph.accepted().len();
        if got >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn user(i: usize) -> String {
    format!("49170{i:08}")
}

/// What each user must have received for messages `m0..m{count}`: three replies each,
/// in order.
fn expected_three(count: usize) -> Vec<String> {
    (0..count)
        .flat_map(|m| (1..=3).map(move |r| format!("m{m} {r}")))
        .collect()
}

/// Removes a message that arrived twice in a row (the one case a kill -9 cannot rule
/// out: Graph accepted it and the process died before recording that), returning how
/// many were removed.
fn collapse_repeats(texts: &mut Vec<String>) -> usize {
    let before = texts.len();
    texts.dedup();
    before - texts.len()
}

/// Sends `messages` text messages (`{text}0`, `{text}1`, …) from each of `users` users
/// (each user's in order, `pause` apart; users side by side), spread over `ports`: a
/// user's consecutive messages go to different ports.
async fn load(ports: Vec<u16>, users: usize, messages: usize, text: &'static str, pause: Duration) {
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for u in 0..users {
        let client = client.clone();
        let ports = ports.clone();
        tasks.push(tokio::spawn(async move {
            for m in 0..messages {
                let body = text_webhook(
                    NUMBER,
                    &user(u),
                    &format!("wamid.{text}.{u}.{m}"),
                    &format!("{text}{m}"),
                );
                deliver(&client, &ports, u + m, &body).await;
                tokio::time::sleep(pause).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_then_restart_delivers_every_reply_in_order() {
    const USERS: usize = 12;
    const MESSAGES: usize = 5;
    const KILLS: usize = 2;
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(
        dir.path(),
        &graph,
        40,
        "sqlite://data/test.db",
        "test-token",
    );
    let port = free_port();
    let start = |port: u16| {
        let dir = dir.path().to_path_buf();
        async move { Server::start_on(&dir, port, &[]).await }
    };
    let mut server = start(port).await;
    let sending = tokio::spawn(load(
        vec![port],
        USERS,
        MESSAGES,
        "m",
        Duration::from_millis(30),
    ));
    let total = USERS * MESSAGES * 3;
    for k in 1..=KILLS {
        // Kill while replies are flowing: after a share of them arrived.
        wait_accepted(&graph, total * k / (KILLS + 2), Duration::from_secs(60)).await;
        server.kill9();
        tokio::time::sleep(Duration::from_millis(300)).await;
        server = start(port).await;
    }
    sending.await.unwrap();
    wait_accepted(&graph, total, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut repeats = 0;
    for (u, mut texts) in accepted_per_user(&graph) {
        repeats += collapse_repeats(&mut texts);
        assert_eq!(
            texts,
            expected_three(MESSAGES),
            "user {u}: lost or out of order"
        );
    }
    assert_eq!(accepted_per_user(&graph).len(), USERS);
    // At most the messages in flight at each kill (one per user being sent to) can go
    // twice; in practice it is zero or one per kill.
    assert!(
        repeats <= KILLS * USERS,
        "{repeats} replies went out twice over {KILLS} kills"
    );
    eprintln!("kill -9 ×{KILLS}: {total} replies, {repeats} sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_then_restart_delivers_every_reply_exactly_once() {
    const USERS: usize = 10;
    const MESSAGES: usize = 4;
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(
        dir.path(),
        &graph,
        100,
        "sqlite://data/test.db",
        "test-token",
    );
    let port = free_port();
    let mut server = Server::start_on(dir.path(), port, &[]).await;
    let sending = tokio::spawn(load(
        vec![port],
        USERS,
        MESSAGES,
        "m",
        Duration::from_millis(30),
    ));
    let total = USERS * MESSAGES * 3;
    wait_accepted(&graph, total / 3, Duration::from_secs(60)).await;
    server.terminate();
    let status = server.exit_within(Duration::from_secs(15)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM exits 0 within the shutdown timeout: {status:?}\n{}",
        server.logs()
    );
    let _restarted = Server::start_on(dir.path(), port, &[]).await;
    sending.await.unwrap();
    wait_accepted(&graph, total, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_user = accepted_per_user(&graph);
    assert_eq!(per_user.len(), USERS);
    for (u, texts) in per_user {
        assert_eq!(texts, expected_three(MESSAGES), "user {u}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_graph_outage_loses_nothing() {
    let graph = FakeGraph::start().await.unwrap();
    graph.otherwise(Reply::outage());
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0, "sqlite://data/test.db", "test-token");
    let port = free_port();
    let mut server = Server::start_on(dir.path(), port, &[]).await;
    let client = reqwest::Client::new();
    for u in 0..5 {
        let body = text_webhook(NUMBER, &user(u), &format!("wamid.out.{u}"), "m0");
        assert_eq!(post_signed(&client, port, SECRET, &body).await, 200);
    }
    // Every user's first reply was tried and refused at least once.
    let deadline = Instant::now() + Duration::from_secs(20);
    while graph.received().len() < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(graph.received().len() >= 5);
    assert!(graph.accepted().is_empty());
    server.kill9();
    graph.otherwise(Reply::Accept);
    let _restarted = Server::start_on(dir.path(), port, &[]).await;
    assert_eq!(wait_accepted(&graph, 15, Duration::from_secs(30)).await, 15);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_user = accepted_per_user(&graph);
    assert_eq!(per_user.len(), 5);
    for (u, texts) in per_user {
        assert_eq!(texts, expected_three(1), "user {u}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_survives_a_restart_in_the_middle_of_the_pause() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0, "sqlite://data/test.db", "test-token");
    let port = free_port();
    let mut server = Server::start_on(dir.path(), port, &[]).await;
    let client = reqwest::Client::new();
    let body = text_webhook(NUMBER, &user(1), "wamid.wait.1", "wait");
    assert_eq!(post_signed(&client, port, SECRET, &body).await, 200);
    assert_eq!(wait_accepted(&graph, 1, Duration::from_secs(10)).await, 1);
    let before = Instant::now();
    server.kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _restarted = Server::start_on(dir.path(), port, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !graph
        .accepted()
        .iter()
        .any(|m| m["text"]["body"] == "after")
    {
        assert!(Instant::now() < deadline, "\"after\" never went out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waited = before.elapsed();
    assert!(
        waited >= Duration::from_millis(4500),
        "\"after\" went out {waited:?} after \"before\", not after the 5 s wait"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The kill may land after Graph accepted "before" and before the server recorded
    // it: then "before" goes out again (the one ambiguous case), never "after".
    let texts = accepted_per_user(&graph)[&user(1)].clone();
    assert!(
        texts == ["before", "after"] || texts == ["before", "before", "after"],
        "{texts:?}"
    );
}

/// A user who answers while the bot's replies are still going out (here, during the
/// pause between them): the worker already running for the user takes the message,
/// runs its turn under the lease and with the session it holds, and the new replies
/// queue behind the ones still going out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_comes_while_the_replies_go_out_is_run_by_the_users_worker() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(
        dir.path(),
        &graph,
        500,
        "sqlite://data/test.db",
        "test-token",
    );
    let server = Server::start_on(dir.path(), free_port(), &[]).await;
    let client = reqwest::Client::new();
    let first = text_webhook(NUMBER, &user(1), "wamid.hand.1", "a");
    assert_eq!(post_signed(&client, server.port, SECRET, &first).await, 200);
    // "a 1" went out: the worker now pauses 500 ms before "a 2".
    assert_eq!(wait_accepted(&graph, 1, Duration::from_secs(10)).await, 1);
    let second = text_webhook(NUMBER, &user(1), "wamid.hand.2", "b");
    assert_eq!(
        post_signed(&client, server.port, SECRET, &second).await,
        200
    );
    assert_eq!(wait_accepted(&graph, 6, Duration::from_secs(10)).await, 6);
    assert_eq!(
        accepted_per_user(&graph)[&user(1)],
        ["a 1", "a 2", "a 3", "b 1", "b 2", "b 3"]
    );
    let metrics = support::metrics(&client, server.port).await;
    assert!(metrics.contains("parlance_turns_total 2"), "{metrics}");
    assert!(
        metrics.contains("parlance_turns_handed_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_pauses_sending_and_a_new_token_resumes_it() {
    let graph = FakeGraph::start().await.unwrap();
    graph.otherwise(Reply::token_expired());
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0, "sqlite://data/test.db", "old-token");
    let server = Server::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    for u in 0..3 {
        let body = text_webhook(NUMBER, &user(u), &format!("wamid.tok.{u}"), "m0");
        assert_eq!(post_signed(&client, server.port, SECRET, &body).await, 200);
    }
    // /readyz says why, and so does the metric.
    let readyz = format!("http://127.0.0.1:{}/readyz", server.port);
    let deadline = Instant::now() + Duration::from_secs(10);
    let body: Value = loop {
        let r = client.get(&readyz).send().await.unwrap();
        if r.status() == 503 {
            break r.json().await.unwrap();
        }
        assert!(Instant::now() < deadline, "/readyz stayed ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let problems = body["problems"].to_string();
    assert!(
        problems.contains("paused") && problems.contains("190"),
        "{body}"
    );
    let metrics = support::metrics(&client, server.port).await;
    assert!(
        metrics.contains("parlance_sending_paused{phone_number_id=\"1001\"} 1"),
        "{metrics}"
    );
    // Nothing went out, nothing was given up on.
    assert!(graph.accepted().is_empty());
    let status: Value = client
        .get(format!("http://127.0.0.1:{}/admin/status", server.port))
        .bearer_auth("admin-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["dead_letters"], serde_json::json!([]), "{status}");
    // A new token, picked up by hot reload, resumes sending: every reply, once.
    graph.otherwise(Reply::Accept);
    write_bot(dir.path(), &graph, 0, "sqlite://data/test.db", "new-token");
    assert_eq!(wait_accepted(&graph, 9, Duration::from_secs(20)).await, 9);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (u, texts) in accepted_per_user(&graph) {
        assert_eq!(texts, expected_three(1), "user {u}");
    }
    let r = client.get(&readyz).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_that_answers_after_the_timeout_gets_each_reply_at_most_twice() {
    let graph = FakeGraph::start().await.unwrap();
    graph.otherwise(Reply::Delay(Duration::from_secs(2)));
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0, "sqlite://data/test.db", "test-token");
    std::fs::write(
        dir.path().join("flows/one.yaml"),
        "triggers:\n  - keywords: [one]\nnodes:\n  one:\n    say: just one\n    next: end\n",
    )
    .unwrap();
    let server = Server::start(dir.path(), &["--graph-timeout", "1s"]).await;
    let client = reqwest::Client::new();
    for u in 0..2 {
        let body = text_webhook(NUMBER, &user(u), &format!("wamid.slow.{u}"), "one");
        assert_eq!(post_signed(&client, server.port, SECRET, &body).await, 200);
    }
    // Each reply: sent, timed out, sent once more, timed out: a dead letter.
    let admin = format!("http://127.0.0.1:{}/admin/status", server.port);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status: Value = loop {
        let status: Value = client
            .get(&admin)
            .bearer_auth("admin-key")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["dead_letters"]
            .as_array()
            .is_some_and(|d| d.len() == 2)
        {
            break status;
        }
        assert!(Instant::now() < deadline, "no dead letters: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["messages"]["ambiguous"], 4, "{status}");
    let error = status["dead_letters"][0]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("timed out twice"), "{error}");
    // Graph's late answers land after the client gave up: each reply went out twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (u, texts) in accepted_per_user(&graph) {
        assert_eq!(texts, ["just one", "just one"], "user {u}");
    }
    let metrics = support::metrics(&client, server.port).await;
    assert!(
        metrics.contains("parlance_messages_ambiguous_total 4"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_refuse_to_share_one_sqlite_file() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0, "sqlite://data/test.db", "test-token");
    let _first = Server::start(dir.path(), &[]).await;
    let out = parlance()
        .arg("serve")
        .arg(dir.path())
        .args(["--port", &free_port().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("another") && log.contains("test.db"), "{log}");
}

// ---- several instances on Redis

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_redis_keep_each_users_order_and_count_through_a_kill() {
    const USERS: usize = 8;
    const MESSAGES: usize = 12;
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_counting_bot(dir.path(), &graph, &redis_store("three"));
    // Slow sends: at the kill, the killed instance holds users' leases mid-send, and
    // the others must wait for those leases to expire before taking the users over.
    graph.otherwise(Reply::Delay(Duration::from_millis(150)));
    let args = ["--lease-ttl", "8s", "--graph-timeout", "2s"];
    let mut servers = [
        Server::start(dir.path(), &args).await,
        Server::start(dir.path(), &args).await,
        Server::start(dir.path(), &args).await,
    ];
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    // Each user's consecutive messages are handled by different instances.
    let sending = tokio::spawn(load(ports, USERS, MESSAGES, "n", Duration::from_millis(40)));
    wait_accepted(&graph, USERS * MESSAGES / 3, Duration::from_secs(60)).await;
    servers[1].kill9();
    sending.await.unwrap();
    let total = USERS * MESSAGES;
    assert!(wait_accepted(&graph, total, Duration::from_secs(60)).await >= total);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut repeats = 0;
    for (u, mut texts) in accepted_per_user(&graph) {
        repeats += collapse_repeats(&mut texts);
        let expected: Vec<String> = (0..MESSAGES)
            .map(|m| format!("n{m} count {}", m + 1))
            .collect();
        assert_eq!(
            texts, expected,
            "user {u}: every message counted once, in order"
        );
    }
    // Only a send in flight at the kill can go twice: at most one per user.
    assert!(repeats <= USERS, "{repeats} replies went out twice");
    eprintln!("three instances, one killed: {total} replies, {repeats} sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_messages_arriving_at_two_instances_at_once_stay_in_order() {
    const MESSAGES: usize = 20;
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_counting_bot(dir.path(), &graph, &redis_store("two"));
    let a = Server::start(dir.path(), &[]).await;
    let b = Server::start(dir.path(), &[]).await;
    // Pairs of messages posted at the same moment to both instances.
    let client = reqwest::Client::new();
    for m in (0..MESSAGES).step_by(2) {
        let first = text_webhook(NUMBER, &user(7), &format!("wamid.c.{m}"), &format!("n{m}"));
        let second = text_webhook(
            NUMBER,
            &user(7),
            &format!("wamid.c.{}", m + 1),
            &format!("n{}", m + 1),
        );
        let (x, y) = tokio::join!(
            post_signed(&client, a.port, SECRET, &first),
            post_signed(&client, b.port, SECRET, &second)
        );
        assert_eq!((x, y), (200, 200));
    }
    assert_eq!(
        wait_accepted(&graph, MESSAGES, Duration::from_secs(30)).await,
        MESSAGES
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let texts = &accepted_per_user(&graph)[&user(7)];
    // Whichever of a pair was stored first is answered first; the count proves each
    // was handled once, one after the other.
    let counts: Vec<String> = texts
        .iter()
        .map(|t| t.split(" count ").nth(1).unwrap_or_default().to_string())
        .collect();
    let expected: Vec<String> = (1..=MESSAGES).map(|n| n.to_string()).collect();
    assert_eq!(counts, expected, "{texts:?}");
    let mut seen: Vec<&str> = texts
        .iter()
        .map(|t| t.split(' ').next().unwrap_or_default())
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen.len(),
        MESSAGES,
        "every message answered once: {texts:?}"
    );
}

/// A Redis server of the test's own, so the test may stop and restart it.
struct OwnRedis {
    child: Child,
    dir: tempfile::TempDir,
}

impl OwnRedis {
    fn start(port: u16, dir: tempfile::TempDir) -> OwnRedis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnRedis { child, dir }
    }

    fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_means_503_and_the_server_recovers_when_it_is_back() {
    let graph = FakeGraph::start().await.unwrap();
    let redis_port = free_port();
    let redis = OwnRedis::start(redis_port, tempfile::tempdir().unwrap());
    let dir = tempfile::tempdir().unwrap();
    write_bot(
        dir.path(),
        &graph,
        0,
        &format!("redis://127.0.0.1:{redis_port}/0"),
        "test-token",
    );
    let server = Server::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let body = text_webhook(NUMBER, &user(1), "wamid.rd.0", "m0");
    assert_eq!(post_signed(&client, server.port, SECRET, &body).await, 200);
    assert_eq!(wait_accepted(&graph, 3, Duration::from_secs(10)).await, 3);

    let data = redis.stop();
    let body = text_webhook(NUMBER, &user(1), "wamid.rd.1", "m1");
    assert_eq!(
        post_signed(&client, server.port, SECRET, &body).await,
        503,
        "nothing is acknowledged that is not stored"
    );
    let readyz = client
        .get(format!("http://127.0.0.1:{}/readyz", server.port))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);

    let _redis = OwnRedis::start(redis_port, data);
    let deadline = Instant::now() + Duration::from_secs(20);
    while post_signed(&client, server.port, SECRET, &body).await != 200 {
        assert!(Instant::now() < deadline, "the server did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(wait_accepted(&graph, 6, Duration::from_secs(10)).await, 6);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(accepted_per_user(&graph)[&user(1)], expected_three(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_redis_share_one_pace_per_number() {
    const USERS: usize = 30;
    const RATE: usize = 5;
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_counting_bot(dir.path(), &graph, &redis_store("pace"));
    let config = std::fs::read_to_string(dir.path().join("parlance.yaml")).unwrap();
    let config = config.replace(
        "message_delay_ms: 0",
        &format!("message_delay_ms: 0\n  max_messages_per_second: {RATE}"),
    );
    std::fs::write(dir.path().join("parlance.yaml"), config).unwrap();
    let servers = [
        Server::start(dir.path(), &[]).await,
        Server::start(dir.path(), &[]).await,
        Server::start(dir.path(), &[]).await,
    ];
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    let client = reqwest::Client::new();
    let posts = (0..USERS).map(|u| {
        let body = text_webhook(NUMBER, &user(u), &format!("wamid.p.{u}"), "n0");
        let port = ports[u % ports.len()];
        let client = client.clone();
        async move { post_signed(&client, port, SECRET, &body).await }
    });
    for status in futures_join_all(posts).await {
        assert_eq!(status, 200);
    }
    assert_eq!(
        wait_accepted(&graph, USERS, Duration::from_secs(30)).await,
        USERS
    );
    let times: Vec<Instant> = graph
        .received()
        .iter()
        .filter(|r| r.body.get("to").is_some())
        .map(|r| r.at)
        .collect();
    let span = times[times.len() - 1].duration_since(times[0]);
    // 30 sends at 5 a second, a burst of 5 allowed: at least 5 s for all of them
    // (each instance pacing alone would allow 15 a second: about 1 s).
    let least = Duration::from_secs(((USERS - RATE) / RATE) as u64) - Duration::from_millis(300);
    assert!(
        span >= least,
        "{USERS} sends took {span:?}: the instances did not share the pace"
    );
    // No one-second window holds more than the rate and its burst.
    for (i, start) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .take_while(|t| t.duration_since(*start) < Duration::from_secs(1))
            .count();
        assert!(in_window <= 2 * RATE, "{in_window} sends within one second");
    }
}

/// Runs the futures side by side and returns their outputs in order.
async fn futures_join_all<F: std::future::Future<Output = u16> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<u16> {
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
