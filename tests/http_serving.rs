//! `http` nodes under `parlance serve`: the real binary calls a real backend on
//! loopback, replies reach the fake Graph API in order, a slow backend holds up only
//! its own user, and a kill -9 during a call loses nothing (the call is made again).

#![cfg(unix)]

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use parlance::testing::fake_graph::FakeGraph;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;
use support::{Server, deliver_text, free_port, redis_store};

const SECRET: &str = "http-app-secret";
const NUMBER: &str = "2002";

/// A backend: `GET /orders/{id}` answers `{"id", "status": "shipped"}`, after the delay
/// set for ids with the id's prefix (`slow`, `hang`…); `bad…` ids get a 500.
#[derive(Clone, Default)]
struct Backend {
    /// Requests so far, per order id.
    calls: Arc<Mutex<HashMap<String, usize>>>,
    /// Delays by id prefix.
    delays: Arc<Mutex<Vec<(String, Duration)>>>,
}

impl Backend {
    async fn start(self) -> String {
        let app = Router::new()
            .route("/orders/{id}", get(order))
            .with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }

    fn delay(&self, prefix: &str, d: Duration) {
        let mut delays = self.delays.lock().unwrap();
        delays.retain(|(p, _)| p != prefix);
        delays.push((prefix.to_string(), d));
    }

    fn calls(&self, id: &str) -> usize {
        self.calls.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

async fn order(
    State(b): State<Backend>,
    UrlPath(id): UrlPath<String>,
) -> (StatusCode, Json<Value>) {
    *b.calls.lock().unwrap().entry(id.clone()).or_default() += 1;
    let delay = b
        .delays
        .lock()
        .unwrap()
        .iter()
        .find(|(p, _)| id.starts_with(p.as_str()))
        .map(|(_, d)| *d);
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    if id.starts_with("bad") {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "database down"})),
        );
    }
    (StatusCode::OK, Json(json!({"id": id, "status": "shipped"})))
}

/// A bot that says it looks the order up, calls the backend, and tells the status
/// (or the failure's kind); "ping…" answers at once without a call.
fn write_bot(dir: &Path, graph: &FakeGraph, backend: &str, timeout: &str) {
    let store = format!("sqlite://{}", dir.join("state.db").display());
    write_bot_on(dir, graph, backend, timeout, &store);
}

/// [`write_bot`] with its sessions in `store`.
fn write_bot_on(dir: &Path, graph: &FakeGraph, backend: &str, timeout: &str, store: &str) {
    std::fs::create_dir_all(dir.join("flows")).unwrap();
    std::fs::write(
        dir.join("parlance.yaml"),
        format!(
            "bot: {{ entry: orders }}\nwhatsapp:\n  access_token: test-token\n  phone_number_id: \"{NUMBER}\"\n  verify_token: let-me-in\n  app_secret: {SECRET}\n  base_url: {}\n  message_delay_ms: 0\nsession: {{ store: \"{store}\" }}\n",
            graph.base_url(),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/orders.yaml"),
        format!(
            "nodes:
  look:
    say: \"Looking up {{{{ message.text }}}}\"
  lookup:
    http:
      url: \"{backend}/orders/{{{{ message.text }}}}\"
      timeout: {timeout}
      retries: 0
    save: order
    on_error: oops
  tell:
    say: \"{{{{ message.text }}}}: {{{{ vars.order.body.status }}}}\"
    next: end
  oops:
    say: \"{{{{ message.text }}}} failed: {{{{ message.error.kind }}}} {{{{ message.error.status }}}}\"
    next: end
"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/ping.yaml"),
        "triggers:\n  - regex: \"^ping\"\nnodes:\n  pong:\n    say: \"pong {{ message.text }}\"\n    next: end\n",
    )
    .unwrap();
}

/// The texts Graph accepted for `user`, in order.
fn texts_to(graph: &FakeGraph, user: &str) -> Vec<String> {
    graph
        .accepted()
        .iter()
        .filter(|m| m["to"] == user)
        .map(|m| m["text"]["body"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until `user` received `n` messages, up to `within`; returns what they got.
async fn wait_texts(graph: &FakeGraph, user: &str, n: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let got = texts_to(graph, user);
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What `user` received once `last` arrived (up to `within`), with the one repeat a
/// kill -9 can cause collapsed: `in_flight`, the message being sent when the process
/// died, which Graph may have accepted before the process could record it (the case
/// docs/serving.md names). Any other repeat fails.
async fn received_through_a_kill(
    graph: &FakeGraph,
    user: &str,
    last: &str,
    in_flight: &str,
    within: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut got = texts_to(graph, user);
    while !got.iter().any(|t| t == last) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        got = texts_to(graph, user);
    }
    let repeats: Vec<&String> = got
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| &w[1])
        .collect();
    assert!(
        repeats.len() <= 1 && repeats.iter().all(|t| *t == in_flight),
        "repeated beyond the one message in flight at the kill: {got:?}"
    );
    got.dedup();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_answer_continues_the_turn_and_later_messages_wait_in_order() {
    let graph = FakeGraph::start().await.unwrap();
    let backend = Backend::default();
    backend.delay("o", Duration::from_millis(400));
    let url = backend.clone().start().await;
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, &url, "5s");
    let mut server = Server::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let user = "4917000000001";
    // The second message arrives while the first one's call is out: it waits for it.
    deliver_text(
        &client,
        server.port,
        (NUMBER, SECRET),
        user,
        "wamid.o1",
        "o1",
    )
    .await;
    deliver_text(
        &client,
        server.port,
        (NUMBER, SECRET),
        user,
        "wamid.o2",
        "o2",
    )
    .await;
    deliver_text(
        &client,
        server.port,
        (NUMBER, SECRET),
        user,
        "wamid.bad",
        "bad1",
    )
    .await;
    let got = wait_texts(&graph, user, 6, Duration::from_secs(15)).await;
    assert_eq!(
        got,
        [
            "Looking up o1",
            "o1: shipped",
            "Looking up o2",
            "o2: shipped",
            "Looking up bad1",
            "bad1 failed: status 500",
        ],
        "{}",
        server.logs()
    );
    assert_eq!((backend.calls("o1"), backend.calls("o2")), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_holds_up_only_its_own_user() {
    let graph = FakeGraph::start().await.unwrap();
    let backend = Backend::default();
    backend.delay("slow", Duration::from_secs(6));
    let url = backend.clone().start().await;
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, &url, "10s");
    let mut server = Server::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let slow_user = "4917000000100";
    deliver_text(
        &client,
        server.port,
        (NUMBER, SECRET),
        slow_user,
        "wamid.slow",
        "slow1",
    )
    .await;
    let called = Instant::now() + Duration::from_secs(5);
    while backend.calls("slow1") == 0 {
        assert!(Instant::now() < called, "the backend was never called");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // While that call waits, twenty other users each get their answer at once.
    let started = Instant::now();
    let users: Vec<String> = (0..20).map(|i| format!("49170000002{i:02}")).collect();
    for (i, u) in users.iter().enumerate() {
        deliver_text(
            &client,
            server.port,
            (NUMBER, SECRET),
            u,
            &format!("wamid.ping{i}"),
            &format!("ping{i}"),
        )
        .await;
    }
    for (i, u) in users.iter().enumerate() {
        let got = wait_texts(&graph, u, 1, Duration::from_secs(3)).await;
        assert_eq!(got, [format!("pong ping{i}")], "{}", server.logs());
    }
    let others_took = started.elapsed();
    assert!(
        others_took < Duration::from_secs(3),
        "other users waited {others_took:?} behind a slow backend"
    );
    assert_eq!(
        texts_to(&graph, slow_user),
        ["Looking up slow1"],
        "the slow user's answer came before its backend did"
    );
    let got = wait_texts(&graph, slow_user, 2, Duration::from_secs(10)).await;
    assert_eq!(got, ["Looking up slow1", "slow1: shipped"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_during_a_call_makes_it_again_and_replies_once() {
    let graph = FakeGraph::start().await.unwrap();
    let backend = Backend::default();
    backend.delay("crash", Duration::from_secs(30));
    let url = backend.clone().start().await;
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, &url, "3s");
    let port = free_port();
    let args = ["--lease-ttl", "8s", "--graph-timeout", "2s"];
    let mut server = Server::start_on(dir.path(), port, &args).await;
    let client = reqwest::Client::new();
    let user = "4917000000300";
    deliver_text(
        &client,
        port,
        (NUMBER, SECRET),
        user,
        "wamid.crash",
        "crash1",
    )
    .await;
    let got = wait_texts(&graph, user, 1, Duration::from_secs(5)).await;
    assert_eq!(got, ["Looking up crash1"]);
    let called = Instant::now() + Duration::from_secs(5);
    while backend.calls("crash1") == 0 {
        assert!(Instant::now() < called, "the backend was never called");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill9();
    // The backend is healthy again; the restarted server must make the call again.
    backend.delay("crash", Duration::ZERO);
    let mut server = Server::start_on(dir.path(), port, &args).await;
    let got = received_through_a_kill(
        &graph,
        user,
        "crash1: shipped",
        "Looking up crash1",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        got,
        ["Looking up crash1", "crash1: shipped"],
        "{}",
        server.logs()
    );
    assert_eq!(backend.calls("crash1"), 2);
    // Nothing more follows (no second answer from a repeated turn).
    let before = texts_to(&graph, user).len();
    let later = wait_texts(&graph, user, before + 1, Duration::from_secs(2)).await;
    assert_eq!(later.len(), before, "{later:?}");
    let metrics = support::metrics(&client, port).await;
    assert!(
        metrics.contains("parlance_effects_recovered_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_another_instance_makes_the_call_of_one_that_died() {
    let graph = FakeGraph::start().await.unwrap();
    let backend = Backend::default();
    backend.delay("crash", Duration::from_secs(30));
    let url = backend.clone().start().await;
    let dir = tempfile::tempdir().unwrap();
    write_bot_on(
        dir.path(),
        &graph,
        &url,
        "3s",
        &redis_store("http-takeover"),
    );
    let args = ["--lease-ttl", "8s", "--graph-timeout", "2s"];
    let mut first = Server::start(dir.path(), &args).await;
    let mut second = Server::start(dir.path(), &args).await;
    let client = reqwest::Client::new();
    let user = "4917000000400";
    deliver_text(
        &client,
        first.port,
        (NUMBER, SECRET),
        user,
        "wamid.crash2",
        "crash2",
    )
    .await;
    let called = Instant::now() + Duration::from_secs(5);
    while backend.calls("crash2") == 0 {
        assert!(Instant::now() < called, "the backend was never called");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill9();
    backend.delay("crash", Duration::ZERO);
    // The second instance takes the user over once the lease lapses and the watchdog
    // falls due, and makes the call again.
    let got = received_through_a_kill(
        &graph,
        user,
        "crash2: shipped",
        "Looking up crash2",
        Duration::from_secs(40),
    )
    .await;
    assert_eq!(
        got,
        ["Looking up crash2", "crash2: shipped"],
        "{}",
        second.logs()
    );
    assert_eq!(backend.calls("crash2"), 2);
    // Its next message is answered in order after that.
    deliver_text(
        &client,
        second.port,
        (NUMBER, SECRET),
        user,
        "wamid.o9",
        "o9",
    )
    .await;
    let got = received_through_a_kill(
        &graph,
        user,
        "o9: shipped",
        "Looking up crash2",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        got,
        [
            "Looking up crash2",
            "crash2: shipped",
            "Looking up o9",
            "o9: shipped"
        ]
    );
}
