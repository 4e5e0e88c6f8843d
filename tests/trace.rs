//! The session trace end to end (`GET /api/v1/users/{user}/trace`): the real
//! `parlance serve` binary on a loopback port, real signed webhooks, a real SQLite
//! store, and the fake Graph API accepting (or refusing) what the bot sends.

mod support;

use parlance::testing::fake_graph::{FakeGraph, Reply};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Server, deliver_text, post_signed};

const NUMBER: &str = "1001";
const SECRET: &str = "test-app-secret";
const KEY: &str = "trace-key-1001";
const USER: &str = "15550001111";

/// Asks for a phone number (personal data: `pii: true`) and a name, then thanks.
/// `plain` and `windowed` send one text each, `windowed` with a template to send
/// instead outside the 24-hour window.
const MAIN: &str = "nodes:
  ask_phone:
    ask: { text: \"Your phone number?\", expect: text }
    save: phone
    pii: true
  ask_name:
    ask: { text: \"Your name?\", expect: text }
    save: name
  thanks:
    say: \"Thanks {{ vars.name }}\"
    next: end
";

const OTHERS: &[(&str, &str)] = &[
    (
        "flows/plain.yaml",
        "triggers:\n  - keywords: [plain]\nnodes:\n  plain:\n    say: \"A plain text\"\n    next: end\n",
    ),
    (
        "flows/windowed.yaml",
        "triggers:\n  - keywords: [windowed]\nnodes:\n  windowed:\n    say: \"A text in the window\"\n    on_window_closed: { name: we_miss_you, language: en_US }\n    next: end\n",
    ),
];

/// A bot folder: with the fake Graph's credentials and an api.key, or local (neither).
fn bot(graph: Option<&FakeGraph>) -> tempfile::TempDir {
    bot_on(graph, "sqlite://data/test.db")
}

/// [`bot`] with its sessions in `store`.
fn bot_on(graph: Option<&FakeGraph>, store: &str) -> tempfile::TempDir {
    let config = match graph {
        Some(graph) => format!(
            "bot: {{ entry: main }}
whatsapp:
  access_token: test-token
  phone_number_id: \"{NUMBER}\"
  verify_token: let-me-in
  app_secret: {SECRET}
  message_delay_ms: 0
  base_url: {}
session: {{ store: \"{store}\" }}
api: {{ key: {KEY} }}
",
            graph.base_url()
        ),
        None => format!("bot: {{ entry: main }}\nsession: {{ store: \"{store}\" }}\n"),
    };
    let mut files = vec![
        ("parlance.yaml", config.as_str()),
        ("flows/main.yaml", MAIN),
    ];
    files.extend_from_slice(OTHERS);
    support::bot_folder(&files)
}

async fn get_trace(port: u16, user: &str, key: Option<&str>) -> (StatusCode, Value) {
    let mut req = Client::new().get(format!("http://127.0.0.1:{port}/api/v1/users/{user}/trace"));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The user's turns on `number`, once `ready` holds for them (or 10 s passed: then the
/// caller's assertions say what is missing).
async fn turns_when(
    port: u16,
    key: Option<&str>,
    number: &str,
    ready: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get_trace(port, USER, key).await;
        let turns = match status {
            StatusCode::OK => body["numbers"]
                .as_array()
                .and_then(|ns| ns.iter().find(|n| n["phone_number_id"] == number))
                .and_then(|n| n["turns"].as_array().cloned())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        if ready(&turns) || Instant::now() > deadline {
            return turns;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn status_webhook(wamid: &str, status: &str) -> Vec<u8> {
    let now = chrono::Utc::now().timestamp().to_string();
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "WABA", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550000000", "phone_number_id": NUMBER },
            "statuses": [{ "id": wamid, "status": status, "timestamp": now, "recipient_id": USER }]
        }}]}]
    }))
    .unwrap()
}

fn visited(turn: &Value) -> Vec<String> {
    turn["visited"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            format!(
                "{}.{} {} {}",
                v["flow"].as_str().unwrap(),
                v["node"].as_str().unwrap(),
                v["kind"].as_str().unwrap(),
                v["source"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn the_trace_shows_nodes_vars_payloads_and_their_delivery() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = bot(Some(&graph));
    let server = Server::start(dir.path(), &[]).await;
    let port = server.port;
    let client = Client::new();
    let wa = (NUMBER, SECRET);

    deliver_text(&client, port, wa, USER, "wamid.in.1", "hi").await;
    let turns = turns_when(port, Some(KEY), NUMBER, |t| {
        t.first()
            .is_some_and(|t| t["outgoing"][0]["status"] == "sent")
    })
    .await;
    assert_eq!(turns.len(), 1, "{turns:#?}");
    let first = &turns[0];
    assert_eq!(first["turn"], 1);
    assert_eq!(first["inbound"]["kind"], "text");
    assert_eq!(first["inbound"]["id"], "wamid.in.1");
    assert_eq!(first["inbound"]["summary"], "hi");
    assert_eq!(first["inbound"]["detail"]["kind"], json!({ "text": "hi" }));
    assert_eq!(visited(first), ["main.ask_phone ask flows/main.yaml:2:3"]);
    assert_eq!(first["vars_before"], json!({}));
    assert_eq!(first["vars_after"], json!({}));
    assert_eq!(first["problems"], json!([]));
    assert_eq!(
        first["state_after"],
        json!({ "kind": "waiting", "flow": "main", "node": "ask_phone" })
    );
    // The payload as Graph received it, byte for byte the same JSON.
    let accepted = graph.wait_for_messages(1).await;
    let out = &first["outgoing"][0];
    assert_eq!(out["payload"], accepted[0]);
    assert_eq!(out["payload"]["text"]["body"], "Your phone number?");
    assert_eq!(out["index"], 0);
    assert_eq!(out["wamid"], "wamid.FAKE00000001");
    assert_eq!(out["error"], Value::Null);
    assert_eq!(out["window_template"], false);
    assert!(first["at"].as_str().unwrap().ends_with('Z'), "{first}");

    // Status webhooks move it on: delivered, read; a late `delivered` does not go back.
    for status in ["delivered", "read", "delivered"] {
        let body = status_webhook("wamid.FAKE00000001", status);
        assert_eq!(post_signed(&client, port, SECRET, &body).await, 200);
    }
    let turns = turns_when(port, Some(KEY), NUMBER, |_| true).await;
    assert_eq!(turns[0]["outgoing"][0]["status"], "read");

    // The answer is personal data: `•••` on a number with credentials.
    deliver_text(&client, port, wa, USER, "wamid.in.2", "+1 555 0100").await;
    deliver_text(&client, port, wa, USER, "wamid.in.3", "Ada").await;
    let turns = turns_when(port, Some(KEY), NUMBER, |t| {
        t.len() == 3 && t[2]["outgoing"][0]["status"] == "sent"
    })
    .await;
    assert_eq!(turns.len(), 3, "{turns:#?}");
    assert_eq!(
        visited(&turns[1]),
        [
            "main.ask_phone ask flows/main.yaml:2:3",
            "main.ask_name ask flows/main.yaml:6:3"
        ]
    );
    assert_eq!(turns[1]["vars_after"], json!({ "phone": "•••" }));
    // Nor the message it was saved from.
    assert_eq!(turns[1]["inbound"]["summary"], "•••");
    assert_eq!(turns[1]["inbound"]["detail"]["kind"], "•••");
    assert_eq!(turns[1]["inbound"]["detail"]["id"], "wamid.in.2");
    assert!(
        !serde_json::to_string(&turns).unwrap().contains("555 0100"),
        "the phone number is nowhere: {turns:#?}"
    );
    assert_eq!(turns[2]["inbound"]["summary"], "Ada");
    let last = &turns[2];
    assert_eq!(
        visited(last),
        [
            "main.ask_name ask flows/main.yaml:6:3",
            "main.thanks say flows/main.yaml:9:3"
        ]
    );
    assert_eq!(last["vars_before"], json!({ "phone": "•••" }));
    assert_eq!(last["vars_after"], json!({ "phone": "•••", "name": "Ada" }));
    assert_eq!(last["state_after"]["kind"], "ended");
    assert_eq!(last["outgoing"][0]["payload"]["text"]["body"], "Thanks Ada");
    assert_eq!(last["outgoing"][0]["wamid"], "wamid.FAKE00000003");
    let seqs: Vec<u64> = turns.iter().map(|t| t["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // Who may read it, and what for nobody.
    let (status, body) = get_trace(port, USER, Some("not-the-key")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = get_trace(port, USER, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = get_trace(port, "15550009999", Some(KEY)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "no_trace");
    let (status, body) = get_trace(port, "not-a-number", Some(KEY)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // An erasure erases the trace too.
    let r = client
        .delete(format!("http://127.0.0.1:{port}/api/v1/users/{USER}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (status, _) = get_trace(port, USER, Some(KEY)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_trace_shows_the_window_template_sent_instead_and_a_refused_message() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = bot(Some(&graph));
    let server = Server::start(dir.path(), &[]).await;
    let port = server.port;
    let client = Client::new();
    let wa = (NUMBER, SECRET);

    // 131047 once: the node's template goes instead.
    graph.script([Reply::window_closed()]);
    deliver_text(&client, port, wa, USER, "wamid.w.1", "windowed").await;
    let turns = turns_when(port, Some(KEY), NUMBER, |t| {
        t.first()
            .is_some_and(|t| t["outgoing"][0]["status"] == "sent")
    })
    .await;
    let out = &turns[0]["outgoing"][0];
    assert_eq!(out["window_template"], true, "{out}");
    assert_eq!(out["payload"]["type"], "template");
    assert_eq!(out["payload"], graph.wait_for_messages(2).await[1]);
    assert_eq!(
        visited(&turns[0]),
        ["windowed.windowed say flows/windowed.yaml:4:3"]
    );

    // 131047 for a node without a template: failed, with Meta's code.
    graph.script([Reply::window_closed()]);
    deliver_text(&client, port, wa, USER, "wamid.w.2", "plain").await;
    let turns = turns_when(port, Some(KEY), NUMBER, |t| {
        t.get(1)
            .is_some_and(|t| t["outgoing"][0]["status"] == "failed")
    })
    .await;
    let out = &turns[1]["outgoing"][0];
    assert_eq!(out["status"], "failed", "{turns:#?}");
    assert_eq!(out["wamid"], Value::Null);
    assert!(
        out["error"].as_str().unwrap().starts_with("131047: "),
        "{out}"
    );
    assert_eq!(out["payload"]["text"]["body"], "A plain text");
}

/// A local bot (no WhatsApp credentials: simulated users) shows personal data as it
/// is, and its trace is open without a key, as the rest of the API.
#[tokio::test]
async fn a_local_bot_shows_pii_and_the_local_wamids() {
    let dir = bot(None);
    let server = Server::start(dir.path(), &[]).await;
    let port = server.port;
    let client = Client::new();
    for text in ["hi", "+1 555 0100"] {
        let r = client
            .post(format!("http://127.0.0.1:{port}/dev/message"))
            .json(&json!({ "from": USER, "text": text }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    }
    let turns = turns_when(port, None, "local", |t| {
        t.len() == 2 && t[1]["outgoing"][0]["status"] == "sent"
    })
    .await;
    assert_eq!(turns.len(), 2, "{turns:#?}");
    assert_eq!(turns[1]["vars_after"], json!({ "phone": "+1 555 0100" }));
    assert_eq!(turns[1]["inbound"]["summary"], "+1 555 0100");
    let wamid = turns[1]["outgoing"][0]["wamid"].as_str().unwrap();
    assert!(wamid.starts_with("wamid.local."), "{wamid}");
}

/// A backend for `http` nodes: `GET /eta` answers `{"eta": "5 min"}`.
async fn backend() -> String {
    let app = axum::Router::new().route(
        "/eta",
        axum::routing::get(|| async { axum::Json(json!({ "eta": "5 min" })) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A turn that stops at an `http` call, and the rest of it once the answer is in: two
/// entries, the second from the `effect_result`, its message after the first's in the
/// outbox order.
#[tokio::test]
async fn an_http_call_splits_the_turn_in_two_entries() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = bot(Some(&graph));
    std::fs::write(
        dir.path().join("flows/order.yaml"),
        format!(
            "triggers:\n  - keywords: [order]\nnodes:\n  look:\n    say: \"Looking it up\"\n  lookup:\n    http: {{ url: \"{}/eta\", retries: 0 }}\n    save: eta\n  tell:\n    say: \"ETA {{{{ vars.eta.body.eta }}}}\"\n    next: end\n",
            backend().await
        ),
    )
    .unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let port = server.port;
    deliver_text(
        &Client::new(),
        port,
        (NUMBER, SECRET),
        USER,
        "wamid.o.1",
        "order",
    )
    .await;
    let turns = turns_when(port, Some(KEY), NUMBER, |t| {
        t.len() == 2 && t.iter().all(|t| t["outgoing"][0]["status"] == "sent")
    })
    .await;
    assert_eq!(turns.len(), 2, "{turns:#?}");
    let (asked, answered) = (&turns[0], &turns[1]);
    assert_eq!(
        visited(asked),
        [
            "order.look say flows/order.yaml:4:3",
            "order.lookup http flows/order.yaml:6:3"
        ]
    );
    assert_eq!(
        asked["state_after"],
        json!({ "kind": "effect", "flow": "order", "node": "lookup" })
    );
    assert_eq!(asked["outgoing"][0]["index"], 0);
    assert_eq!(answered["inbound"]["kind"], "effect_result");
    assert_eq!(answered["inbound"]["summary"], "the http call answered 200");
    assert_eq!(answered["turn"], asked["turn"]);
    assert_eq!(
        visited(answered),
        [
            "order.lookup http flows/order.yaml:6:3",
            "order.tell say flows/order.yaml:9:3"
        ]
    );
    assert_eq!(answered["vars_before"], json!({}));
    assert_eq!(
        answered["vars_after"]["eta"]["body"],
        json!({ "eta": "5 min" })
    );
    assert_eq!(answered["state_after"]["kind"], "ended");
    let out = &answered["outgoing"][0];
    assert_eq!(out["index"], 1);
    assert_eq!(out["payload"]["text"]["body"], "ETA 5 min");
    assert_eq!(out["wamid"], "wamid.FAKE00000002");
}

/// On Redis (the store of several instances) the same: the direct path's turn and the
/// worker's, their sends and statuses.
#[tokio::test]
async fn the_trace_follows_turns_and_sends_on_redis() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = bot_on(Some(&graph), &support::redis_store("trace"));
    let server = Server::start(dir.path(), &[]).await;
    let port = server.port;
    let client = Client::new();
    deliver_text(&client, port, (NUMBER, SECRET), USER, "wamid.r.1", "hi").await;
    deliver_text(
        &client,
        port,
        (NUMBER, SECRET),
        USER,
        "wamid.r.2",
        "+1 555 0100",
    )
    .await;
    let turns = turns_when(port, Some(KEY), NUMBER, |t| {
        t.len() == 2 && t.iter().all(|t| t["outgoing"][0]["status"] == "sent")
    })
    .await;
    assert_eq!(turns.len(), 2, "{turns:#?}");
    let wamid = turns[1]["outgoing"][0]["wamid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(wamid, "wamid.FAKE00000002");
    let body = status_webhook(&wamid, "delivered");
    assert_eq!(post_signed(&client, port, SECRET, &body).await, 200);
    let turns = turns_when(port, Some(KEY), NUMBER, |_| true).await;
    assert_eq!(turns[1]["outgoing"][0]["status"], "delivered");
    assert_eq!(turns[1]["vars_after"], json!({ "phone": "•••" }));
}

/// `--trace-memory 0` keeps no trace: the turn ran (its reply is in the answer), and
/// the trace says there is none.
#[tokio::test]
async fn trace_memory_0_keeps_no_trace() {
    let dir = bot(None);
    let server = Server::start(dir.path(), &["--trace-memory", "0"]).await;
    let r = Client::new()
        .post(format!("http://127.0.0.1:{}/dev/message", server.port))
        .json(&json!({ "from": USER, "text": "hi" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["sent"][0]["text"]["body"], "Your phone number?");
    let (status, body) = get_trace(server.port, USER, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}
