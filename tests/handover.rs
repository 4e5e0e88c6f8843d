//! Handover to human agents end to end: the real `parlance serve` binary, the fake
//! Graph API on loopback as WhatsApp, and a real agent inbox (a small axum server on
//! loopback) that records every delivery and checks its signature. REDIS_URL (when it
//! answers) runs the main path on Redis too.

#![cfg(unix)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, KeyInit, Mac};
use parlance::testing::fake_graph::FakeGraph;
use reqwest::Client;
use serde_json::{Value, json};
use sha2::Sha256;
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;
use support::{Server, free_port, post_signed, text_webhook};

const SECRET: &str = "handover-app-secret";
const HOOK_SECRET: &str = "agent-hook-secret";
const NUMBER: &str = "1001";
const KEY: &str = "agent-key";

/// One delivery to the agent inbox.
#[derive(Debug, Clone)]
struct Delivery {
    body: Value,
    /// The signature header checked against the raw body with [`HOOK_SECRET`].
    signed: bool,
    /// What the inbox answered.
    answered: u16,
}

/// The agent inbox: records deliveries, answers `status` (200 unless told otherwise).
#[derive(Clone)]
struct AgentInbox {
    url: String,
    got: Arc<Mutex<Vec<Delivery>>>,
    status: Arc<AtomicU16>,
}

async fn receive(State(inbox): State<AgentInbox>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = headers
        .get("x-parlance-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let signed = check_signature(&header, &body);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let answered = inbox.status.load(Ordering::SeqCst);
    inbox.got.lock().unwrap().push(Delivery {
        body,
        signed,
        answered,
    });
    StatusCode::from_u16(answered).unwrap_or(StatusCode::OK)
}

/// `t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, recomputed here independently.
fn check_signature(header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value.to_string()),
            Some(("v1", value)) => v1 = Some(value.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let now = chrono::Utc::now().timestamp();
    let fresh = t.parse::<i64>().is_ok_and(|t| (now - t).abs() < 300);
    let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    fresh && hex::encode(mac.finalize().into_bytes()) == v1
}

impl AgentInbox {
    async fn start() -> AgentInbox {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inbox = AgentInbox {
            url: format!("http://{addr}/hook"),
            got: Arc::new(Mutex::new(Vec::new())),
            status: Arc::new(AtomicU16::new(200)),
        };
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(inbox.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        inbox
    }

    /// The deliveries the inbox took (answered 2xx), in order.
    fn deliveries(&self) -> Vec<Delivery> {
        self.attempts()
            .into_iter()
            .filter(|d| (200..300).contains(&d.answered))
            .collect()
    }

    /// Every delivery attempt, taken or not.
    fn attempts(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// The events (the `event` field) delivered for `user` (answered 2xx), in order.
    fn events(&self, user: &str) -> Vec<String> {
        self.deliveries()
            .iter()
            .filter(|d| d.body["user"] == user)
            .map(|d| d.body["event"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Waits until `user` got `n` events (10 s at most; the caller's assertion says what
    /// is missing).
    async fn wait_events(&self, user: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.events(user);
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A bot that hands over to `hook`: `start` says hello, `agent` hands over (queue
/// `support`, `timeout`), `back` resumes with the status and a resolved variable.
fn write_bot(dir: &Path, graph: &FakeGraph, hook: &str, store: &str, timeout: &str) {
    std::fs::create_dir_all(dir.join("flows")).unwrap();
    std::fs::write(
        dir.join("parlance.yaml"),
        format!(
            "bot: {{ entry: main }}
whatsapp:
  access_token: test-token
  phone_number_id: \"{NUMBER}\"
  verify_token: let-me-in
  app_secret: {SECRET}
  base_url: {}
session: {{ store: \"{store}\" }}
api: {{ key: {KEY} }}
handover:
  webhook: {hook}
  secret: {HOOK_SECRET}
",
            graph.base_url()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/main.yaml"),
        format!(
            "nodes:
  start:
    say: \"connecting you\"
  agent:
    handover:
      say: \"an agent will be with you\"
      queue: support
      timeout: {timeout}
      on_timeout: late
      on_unavailable: sorry
  back:
    say: \"welcome back: {{{{ handover.status }}}} {{{{ vars.ticket | default('-') }}}}\"
    next: end
  late:
    say: \"nobody came\"
    next: end
  sorry:
    say: \"no agents\"
    next: end
"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/direct.yaml"),
        "triggers:\n  - keywords: [agent]\nnodes:\n  direct:\n    handover: { queue: direct }\n    next: end\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/menu.yaml"),
        "triggers:\n  - keywords: [menu]\nnodes:\n  menu:\n    say: \"the menu\"\n    next: end\n",
    )
    .unwrap();
}

async fn api(port: u16, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = Client::new()
        .request(method, format!("http://127.0.0.1:{port}/api/v1{path}"))
        .bearer_auth(KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(port: u16, path: &str) -> (u16, Value) {
    api(port, reqwest::Method::GET, path, None).await
}

async fn post_json(port: u16, path: &str, body: Value) -> (u16, Value) {
    api(port, reqwest::Method::POST, path, Some(body)).await
}

async fn write(port: u16, user: &str, id: &str, text: &str) {
    let body = text_webhook(NUMBER, user, id, text);
    assert_eq!(post_signed(&Client::new(), port, SECRET, &body).await, 200);
}

/// The texts WhatsApp got for `user`, in order, once there are `n` (10 s at most).
async fn texts_for(graph: &FakeGraph, user: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got: Vec<String> = graph
            .accepted()
            .iter()
            .filter(|m| m["to"] == user)
            .map(|m| {
                m["text"]["body"]
                    .as_str()
                    .map_or_else(|| format!("<{}>", m["type"]), str::to_string)
            })
            .collect();
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The user's open handover's id, once the API lists it (10 s at most).
async fn handover_of(port: u16, user: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, list) = get(port, "/handovers").await;
        assert_eq!(status, 200, "{list}");
        let found = list["handovers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["user"] == user)
            .and_then(|h| h["id"].as_str())
            .map(str::to_string);
        if let Some(id) = found {
            return id;
        }
        assert!(Instant::now() < deadline, "no handover for {user}: {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The handover's state, once it is `want` (10 s at most).
async fn wait_state(port: u16, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, h) = get(port, &format!("/handovers/{id}")).await;
        if h["state"] == want || Instant::now() > deadline {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn main_path(store: &str) {
    let graph = FakeGraph::start().await.unwrap();
    let inbox = AgentInbox::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, &inbox.url, store, "10m");
    let server = Server::start(dir.path(), &[]).await;
    let port = server.port;
    let user = "15550001111";

    write(port, user, "wamid.h1", "help").await;
    assert_eq!(
        texts_for(&graph, user, 2).await,
        ["connecting you", "an agent will be with you"]
    );
    assert_eq!(inbox.wait_events(user, 1).await, ["handover.started"]);
    let id = handover_of(port, user).await;

    // While handed over the bot is silent; every message reaches the agent, a trigger
    // word too.
    write(port, user, "wamid.h2", "my order is late").await;
    write(port, user, "wamid.h3", "menu").await;
    assert_eq!(
        inbox.wait_events(user, 3).await,
        ["handover.started", "message", "message"]
    );
    let deliveries = inbox.deliveries();
    assert!(deliveries.iter().all(|d| d.signed), "{deliveries:?}");
    let started = &deliveries[0].body;
    assert_eq!(started["handover_id"], id.as_str());
    assert_eq!(started["phone_number_id"], NUMBER);
    assert_eq!(started["queue"], "support");
    assert_eq!(started["contact"]["name"], "Ada");
    let messages: Vec<&Value> = deliveries.iter().skip(1).map(|d| &d.body).collect();
    assert_eq!(messages[0]["message"]["text"], "my order is late");
    assert_eq!(messages[0]["message"]["id"], "wamid.h2");
    assert_eq!(messages[1]["message"]["text"], "menu");

    // Listing filters by queue and state.
    let (_, queued) = get(port, "/handovers?queue=support&state=queued").await;
    assert_eq!(queued["handovers"][0]["id"], id.as_str());
    let (_, none) = get(port, "/handovers?queue=sales").await;
    assert_eq!(none["handovers"], json!([]));
    let (status, bad) = get(port, "/handovers?state=lost").await;
    assert_eq!(
        (status, &bad["error"]["code"]),
        (422, &json!("invalid_body"))
    );

    // Accept once; the second is a conflict.
    let (status, accepted) = post_json(
        port,
        &format!("/handovers/{id}/accept"),
        json!({ "agent": "ada" }),
    )
    .await;
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(
        (&accepted["state"], &accepted["agent"]),
        (&json!("accepted"), &json!("ada"))
    );
    let (status, again) = post_json(
        port,
        &format!("/handovers/{id}/accept"),
        json!({ "agent": "bob" }),
    )
    .await;
    assert_eq!(
        (status, &again["error"]["code"]),
        (409, &json!("not_queued"))
    );

    // The agent's replies reach WhatsApp in order, after what the bot said.
    for text in ["hello from ada", "checking your order"] {
        let (status, queued) = post_json(
            port,
            &format!("/handovers/{id}/messages"),
            json!({ "text": text }),
        )
        .await;
        assert_eq!(status, 202, "{queued}");
    }
    let (status, image) = post_json(
        port,
        &format!("/handovers/{id}/messages"),
        json!({ "image": { "link": "https://example.com/receipt.png" } }),
    )
    .await;
    assert_eq!(status, 202, "{image}");
    assert_eq!(
        texts_for(&graph, user, 5).await,
        [
            "connecting you",
            "an agent will be with you",
            "hello from ada",
            "checking your order",
            "<\"image\">"
        ]
    );
    let (status, both) = post_json(
        port,
        &format!("/handovers/{id}/messages"),
        json!({ "text": "a", "image": { "link": "https://example.com/a.png" } }),
    )
    .await;
    assert_eq!(
        (status, &both["error"]["code"]),
        (422, &json!("invalid_body"))
    );

    // The record has every message, in order.
    let (_, one) = get(port, &format!("/handovers/{id}")).await;
    let from: Vec<&str> = one["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["from"].as_str().unwrap())
        .collect();
    assert_eq!(from, ["user", "user", "agent", "agent", "agent"], "{one}");
    assert_eq!(one["messages"][0]["message"]["text"], "my order is late");
    assert_eq!(
        one["messages"][2]["message"]["text"]["body"],
        "hello from ada"
    );

    // WhatsApp's statuses of an agent's reply reach the agent as `status` events.
    let (_, export) = get(port, &format!("/users/{user}")).await;
    let reply_id = export["numbers"][0]["sent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["node"] == "agent_reply")
        .and_then(|s| s["message_id"].as_str())
        .expect("the agent's reply was recorded as sent")
        .to_string();
    let status = |status: &str, errors: Value| {
        json!({
            "object": "whatsapp_business_account",
            "entry": [{ "id": "WABA", "changes": [{ "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": { "display_phone_number": "15550000000", "phone_number_id": NUMBER },
                "statuses": [{
                    "id": reply_id, "status": status,
                    "timestamp": chrono::Utc::now().timestamp().to_string(),
                    "recipient_id": user, "errors": errors
                }]
            }}]}]
        })
    };
    let read = serde_json::to_vec(&status("read", json!([]))).unwrap();
    assert_eq!(post_signed(&Client::new(), port, SECRET, &read).await, 200);
    let failed = status(
        "failed",
        json!([{ "code": 131026, "title": "Message undeliverable" }]),
    );
    let failed = serde_json::to_vec(&failed).unwrap();
    assert_eq!(
        post_signed(&Client::new(), port, SECRET, &failed).await,
        200
    );
    assert_eq!(
        inbox.wait_events(user, 5).await,
        ["handover.started", "message", "message", "status", "status"]
    );
    let got = inbox.deliveries();
    assert_eq!(
        (
            &got[3].body["status"]["message_id"],
            &got[3].body["status"]["status"]
        ),
        (&json!(reply_id), &json!("read"))
    );
    assert_eq!(got[4].body["status"]["status"], "failed");
    assert_eq!(got[4].body["status"]["error"]["code"], 131026);

    // Resolve: the bot resumes at `next` with the status and the variables.
    let (status, resolved) = post_json(
        port,
        &format!("/handovers/{id}/resolve"),
        json!({ "status": "solved", "vars": { "ticket": "T-1" } }),
    )
    .await;
    assert_eq!(status, 202, "{resolved}");
    assert_eq!(resolved["handover"]["state"], "resolved");
    assert_eq!(
        texts_for(&graph, user, 6).await[5],
        "welcome back: solved T-1"
    );
    assert_eq!(
        inbox.wait_events(user, 6).await,
        [
            "handover.started",
            "message",
            "message",
            "status",
            "status",
            "handover.ended"
        ]
    );
    let ended = &inbox.deliveries()[5].body;
    assert_eq!(
        (&ended["state"], &ended["status"], &ended["agent"]),
        (&json!("resolved"), &json!("solved"), &json!("ada"))
    );
    let (status, twice) = post_json(
        port,
        &format!("/handovers/{id}/resolve"),
        json!({ "status": "again" }),
    )
    .await;
    assert_eq!(
        (status, &twice["error"]["code"]),
        (409, &json!("handover_ended"))
    );
    let (status, late) = post_json(
        port,
        &format!("/handovers/{id}/messages"),
        json!({ "text": "too late" }),
    )
    .await;
    assert_eq!(
        (status, &late["error"]["code"]),
        (409, &json!("handover_ended"))
    );

    // Back with the bot: a trigger word works again.
    write(port, user, "wamid.h4", "menu").await;
    assert_eq!(texts_for(&graph, user, 7).await[6], "the menu");

    // Unknown ids are 404 everywhere.
    for (method, path) in [
        (reqwest::Method::GET, "/handovers/ho_nope".to_string()),
        (
            reqwest::Method::POST,
            "/handovers/ho_nope/accept".to_string(),
        ),
        (
            reqwest::Method::POST,
            "/handovers/ho_nope/resolve".to_string(),
        ),
        (
            reqwest::Method::POST,
            "/handovers/ho_nope/messages".to_string(),
        ),
    ] {
        let body = match method {
            reqwest::Method::GET => None,
            _ => Some(json!({ "agent": "a", "status": "s", "text": "t" })),
        };
        let (status, err) = api(port, method, &path, body).await;
        // A body with fields the route does not take is refused before the lookup.
        assert!(status == 404 || status == 422, "{path}: {status} {err}");
    }
    let (status, err) = get(port, "/handovers/ho_nope").await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (404, &json!("unknown_handover"))
    );
    let (status, err) = post_json(port, "/handovers/ho_nope/accept", json!({ "agent": "a" })).await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (404, &json!("unknown_handover"))
    );

    // Erasure removes the handover and its messages.
    let (status, export) = get(port, &format!("/users/{user}")).await;
    assert_eq!(status, 200);
    assert_eq!(export["numbers"][0]["handovers"][0]["id"], id.as_str());
    assert_eq!(
        export["numbers"][0]["handovers"][0]["messages"]
            .as_array()
            .map(Vec::len),
        Some(5)
    );
    let (status, _) = api(
        port,
        reqwest::Method::DELETE,
        &format!("/users/{user}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = get(port, &format!("/handovers/{id}")).await;
    assert_eq!(status, 404);
    let (_, list) = get(port, "/handovers").await;
    assert_eq!(list["handovers"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_accept_reply_resolve_on_sqlite() {
    main_path("sqlite://data/test.db").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_accept_reply_resolve_on_redis() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("hotest{}:", std::process::id());
    main_path(&format!("{url}?prefix={prefix}")).await;
    // Leave nothing behind in the shared Redis.
    if let Ok(mut con) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query(&mut con)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query(&mut con);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_accepting_in_time_goes_on_at_on_timeout() {
    let graph = FakeGraph::start().await.unwrap();
    let inbox = AgentInbox::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_bot(
        dir.path(),
        &graph,
        &inbox.url,
        "sqlite://data/test.db",
        "2s",
    );
    let server = Server::start(dir.path(), &[]).await;
    let port = server.port;
    let user = "15550002222";
    write(port, user, "wamid.t1", "help").await;
    assert_eq!(
        texts_for(&graph, user, 2).await,
        ["connecting you", "an agent will be with you"]
    );
    let id = handover_of(port, user).await;
    assert_eq!(
        texts_for(&graph, user, 3).await,
        ["connecting you", "an agent will be with you", "nobody came"]
    );
    assert_eq!(
        inbox.wait_events(user, 2).await,
        ["handover.started", "handover.ended"]
    );
    assert_eq!(inbox.deliveries()[1].body["state"], "timed_out");
    let h = wait_state(port, &id, "timed_out").await;
    assert_eq!(h["state"], "timed_out", "{h}");
    let (status, err) = post_json(
        port,
        &format!("/handovers/{id}/accept"),
        json!({ "agent": "late" }),
    )
    .await;
    assert_eq!((status, &err["error"]["code"]), (409, &json!("not_queued")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_inbox_that_refuses_or_is_down_means_on_unavailable() {
    let graph = FakeGraph::start().await.unwrap();
    let inbox = AgentInbox::start().await;
    inbox.status.store(400, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    write_bot(
        dir.path(),
        &graph,
        &inbox.url,
        "sqlite://data/test.db",
        "10m",
    );
    let server = Server::start(dir.path(), &[]).await;
    let user = "15550003333";
    write(server.port, user, "wamid.u1", "help").await;
    // Refused at once: no retries.
    assert_eq!(
        texts_for(&graph, user, 2).await,
        ["connecting you", "no agents"]
    );
    let attempts = inbox.attempts();
    assert_eq!(attempts.len(), 1, "refused once, not retried");
    assert_eq!(attempts[0].body["event"], "handover.started");
    let id = handover_of(server.port, user).await;
    assert_eq!(
        wait_state(server.port, &id, "unavailable").await["state"],
        "unavailable"
    );
    drop(server);

    // Nothing listening: retried for about 30 s, then unavailable.
    let down = format!("http://127.0.0.1:{}/hook", free_port());
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, &down, "sqlite://data/test.db", "10m");
    let server = Server::start(dir.path(), &[]).await;
    let user = "15550004444";
    let began = Instant::now();
    write(server.port, user, "wamid.d1", "help").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while Instant::now() < deadline {
        got = texts_for(&graph, user, 0).await;
        if got.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got, ["connecting you", "no agents"]);
    assert!(
        began.elapsed() >= Duration::from_secs(20),
        "gave up after {:?}, before retrying",
        began.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_mid_handover_keeps_the_record_its_messages_and_its_timer() {
    let graph = FakeGraph::start().await.unwrap();
    let inbox = AgentInbox::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_bot(
        dir.path(),
        &graph,
        &inbox.url,
        "sqlite://data/test.db",
        "6s",
    );
    let port = free_port();
    let mut server = Server::start_on(dir.path(), port, &[]).await;
    let (kept, timed) = ("15550005555", "15550006666");
    write(port, kept, "wamid.k1", "help").await;
    write(port, timed, "wamid.k2", "help").await;
    assert_eq!(texts_for(&graph, kept, 2).await.len(), 2);
    assert_eq!(texts_for(&graph, timed, 2).await.len(), 2);
    let id = handover_of(port, kept).await;
    let timed_id = handover_of(port, timed).await;
    let (status, _) = post_json(
        port,
        &format!("/handovers/{id}/accept"),
        json!({ "agent": "ada" }),
    )
    .await;
    assert_eq!(status, 200);
    write(port, kept, "wamid.k3", "before the crash").await;
    assert_eq!(
        inbox.wait_events(kept, 2).await,
        ["handover.started", "message"]
    );
    // The inbox goes down: the next message's event waits in the outbox, retried.
    inbox.status.store(503, Ordering::SeqCst);
    write(port, kept, "wamid.k5", "while the inbox is down").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !inbox
        .attempts()
        .iter()
        .any(|d| d.body["message"]["text"] == "while the inbox is down")
    {
        assert!(Instant::now() < deadline, "the event was never tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    server.kill9();
    inbox.status.store(200, Ordering::SeqCst);
    let _restarted = Server::start_on(dir.path(), port, &[]).await;
    // The queued event survived the kill and goes out once the inbox is back.
    assert_eq!(
        inbox.wait_events(kept, 3).await,
        ["handover.started", "message", "message"]
    );

    // The record and its messages are there; the handover goes on.
    let (_, h) = get(port, &format!("/handovers/{id}")).await;
    assert_eq!(
        (&h["state"], &h["agent"]),
        (&json!("accepted"), &json!("ada"))
    );
    assert_eq!(h["messages"][0]["message"]["text"], "before the crash");
    assert_eq!(
        h["messages"][1]["message"]["text"],
        "while the inbox is down"
    );
    write(port, kept, "wamid.k4", "after the crash").await;
    assert_eq!(
        inbox.wait_events(kept, 4).await,
        ["handover.started", "message", "message", "message"]
    );
    assert_eq!(
        texts_for(&graph, kept, 2).await,
        ["connecting you", "an agent will be with you"],
        "the bot stays silent"
    );
    // The other user's timer fires after the restart.
    assert_eq!(
        texts_for(&graph, timed, 3).await,
        ["connecting you", "an agent will be with you", "nobody came"]
    );
    assert_eq!(
        wait_state(port, &timed_id, "timed_out").await["state"],
        "timed_out"
    );
    // The accepted one is not timed out by its timer.
    let (_, h) = get(port, &format!("/handovers/{id}")).await;
    assert_eq!(h["state"], "accepted");
    let (status, _) = post_json(
        port,
        &format!("/handovers/{id}/resolve"),
        json!({ "status": "done" }),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(texts_for(&graph, kept, 3).await[2], "welcome back: done -");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_window_an_agent_may_only_send_a_template() {
    let graph = FakeGraph::start().await.unwrap();
    let inbox = AgentInbox::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_bot(
        dir.path(),
        &graph,
        &inbox.url,
        "sqlite://data/test.db",
        "10m",
    );
    let server = Server::start(dir.path(), &[]).await;
    let port = server.port;
    // An injected message starts a handover (a node without `say`) without opening the
    // 24-hour window: only the user opens it.
    let user = "15550007777";
    let (status, turn) = post_json(port, "/inject", json!({ "user": user, "text": "agent" })).await;
    assert_eq!(status, 200, "{turn}");
    let id = handover_of(port, user).await;
    let (status, err) = post_json(
        port,
        &format!("/handovers/{id}/messages"),
        json!({ "text": "hello?" }),
    )
    .await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (422, &json!("window_closed"))
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only a template"),
        "{err}"
    );
    let (status, ok) = post_json(
        port,
        &format!("/handovers/{id}/messages"),
        json!({ "template": { "name": "agent_followup", "language": { "code": "en_US" } } }),
    )
    .await;
    assert_eq!(status, 202, "{ok}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !graph.accepted().iter().any(|m| m["type"] == "template") {
        assert!(Instant::now() < deadline, "{:?}", graph.accepted());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_sent_just_before_the_resolve_still_reaches_the_user_first() {
    let graph = FakeGraph::start().await.unwrap();
    let inbox = AgentInbox::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_bot(
        dir.path(),
        &graph,
        &inbox.url,
        "sqlite://data/test.db",
        "10m",
    );
    let server = Server::start(dir.path(), &[]).await;
    let port = server.port;
    let user = "15550002222";
    write(port, user, "wamid.r1", "help").await;
    assert_eq!(texts_for(&graph, user, 2).await.len(), 2);
    let id = handover_of(port, user).await;
    let (status, _) = post_json(
        port,
        &format!("/handovers/{id}/accept"),
        json!({ "agent": "ada" }),
    )
    .await;
    assert_eq!(status, 200);
    // The last words and the resolve at the same moment: the resolve is recorded at
    // once, while the reply may still wait in the user's inbox before it. A reply the
    // API took (202) must still reach the user, before the bot resumes.
    let (reply_path, resolve_path) = (
        format!("/handovers/{id}/messages"),
        format!("/handovers/{id}/resolve"),
    );
    let reply = post_json(port, &reply_path, json!({ "text": "bye from ada" }));
    let resolve = post_json(port, &resolve_path, json!({ "status": "solved" }));
    let ((replied, _), (resolved, _)) = tokio::join!(reply, resolve);
    assert_eq!(resolved, 202);
    let expected: Vec<&str> = match replied {
        202 => vec![
            "connecting you",
            "an agent will be with you",
            "bye from ada",
            "welcome back: solved -",
        ],
        // The resolve came first: the reply was refused, not lost.
        409 => vec![
            "connecting you",
            "an agent will be with you",
            "welcome back: solved -",
        ],
        other => panic!("the reply got {other}"),
    };
    assert_eq!(texts_for(&graph, user, expected.len()).await, expected);
}
