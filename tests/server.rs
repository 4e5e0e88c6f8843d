//! The WhatsApp endpoint end to end: the real server on a loopback port, real HTTP
//! requests signed like Meta signs them, a real SQLite file, and the fake Graph API
//! answering like Meta (errors included).

use parlance::cli::LogFormat;
use parlance::cli::serve::{self, Options};
use parlance::server::listen::{self, Limits};
use parlance::testing::fake_graph::{FakeGraph, Reply};
use parlance::whatsapp::signature;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const SECRET: &str = "test-app-secret";
const NUMBER: &str = "1001";

/// A bot that echoes, answers `two` with two messages, and `late` with a text that has
/// an `on_window_closed` template.
fn write_bot(dir: &Path, graph: &FakeGraph, delay_ms: u64) {
    std::fs::create_dir_all(dir.join("flows")).unwrap();
    std::fs::write(
        dir.join("parlance.yaml"),
        format!(
            "bot: {{ entry: echo }}
whatsapp:
  access_token: test-token
  phone_number_id: \"{NUMBER}\"
  verify_token: let-me-in
  app_secret: {SECRET}
  message_delay_ms: {delay_ms}
  base_url: {}
session: {{ store: \"sqlite://data/test.db\" }}
api: {{ key: admin-key }}
",
            graph.base_url()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/echo.yaml"),
        "nodes:\n  echo:\n    say: \"echo {{ message.text | default(message.type) }}\"\n    next: end\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/two.yaml"),
        "triggers:\n  - keywords: [two]\nnodes:\n  both:\n    say: [\"first\", \"second\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/late.yaml"),
        "triggers:\n  - keywords: [late]\nnodes:\n  nudge:\n    say: \"free-form text\"\n    on_window_closed: { name: we_miss_you, language: en_US, body: [\"{{ contact.wa_id }}\"] }\n",
    )
    .unwrap();
}

async fn start(dir: &Path) -> SocketAddr {
    start_many(&[dir]).await
}

async fn start_many(dirs: &[&Path]) -> SocketAddr {
    start_with(dirs, Limits::default()).await
}

async fn start_with(dirs: &[&Path], limits: Limits) -> SocketAddr {
    let options = Options {
        dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
        bind: "127.0.0.1".into(),
        port: 0,
        max_body_bytes: parlance::server::DEFAULT_MAX_BODY_BYTES,
        limits,
        log_format: LogFormat::Text,
        delivery: Default::default(),
    };
    let (state, _) = serve::build(&options).await.expect("the bot loads");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let app = parlance::server::app(state);
        let _ = listen::serve(listener, app, limits, std::future::pending()).await;
    });
    addr
}

fn text_webhook(from: &str, id: &str, text: &str) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "WABA", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550000000", "phone_number_id": NUMBER },
            "contacts": [{ "profile": { "name": "Ada" }, "wa_id": from }],
            "messages": [{ "from": from, "id": id, "timestamp": chrono_now(), "type": "text", "text": { "body": text } }]
        }}]}]
    })
}

fn chrono_now() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string()
}

async fn post(addr: SocketAddr, body: &[u8], signature: Option<String>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}/webhook"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(s) = signature {
        req = req.header("x-hub-signature-256", s);
    }
    req.send().await.unwrap()
}

async fn send_signed(addr: SocketAddr, webhook: &Value) -> reqwest::Response {
    let body = serde_json::to_vec(webhook).unwrap();
    post(addr, &body, Some(signature::sign(SECRET, &body))).await
}

fn bodies(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            m["text"]["body"]
                .as_str()
                .map_or_else(|| m["type"].to_string(), str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn the_handshake_echoes_the_challenge_only_for_the_right_token() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0);
    let addr = start(dir.path()).await;
    let get = |q: &str| reqwest::get(format!("http://{addr}/webhook?{q}"));
    let ok = get("hub.mode=subscribe&hub.verify_token=let-me-in&hub.challenge=1158201444")
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    for q in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        "hub.mode=unsubscribe&hub.verify_token=let-me-in&hub.challenge=1",
        "hub.mode=subscribe&hub.challenge=1",
        "",
    ] {
        assert_eq!(get(q).await.unwrap().status(), 403, "{q}");
    }
}

#[tokio::test]
async fn only_correctly_signed_deliveries_are_processed() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0);
    let addr = start(dir.path()).await;
    let body = serde_json::to_vec(&text_webhook("4915100000001", "wamid.sig.1", "hello")).unwrap();

    assert_eq!(post(addr, &body, None).await.status(), 401, "unsigned");
    let wrong = signature::sign("another-secret", &body);
    assert_eq!(
        post(addr, &body, Some(wrong)).await.status(),
        401,
        "wrongly signed"
    );
    assert_eq!(
        post(addr, &body, Some("sha256=zz".into())).await.status(),
        401,
        "malformed"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        graph.messages().is_empty(),
        "a rejected delivery is not processed"
    );

    let signed = post(addr, &body, Some(signature::sign(SECRET, &body))).await;
    assert_eq!(signed.status(), 200);
    let sent = graph.wait_for_messages(1).await;
    assert_eq!(bodies(&sent), ["echo hello"]);
    assert_eq!(sent[0]["to"], "4915100000001");
    assert_eq!(
        graph.received()[0].authorization.as_deref(),
        Some("Bearer test-token")
    );
    assert_eq!(graph.received()[0].phone_number_id, NUMBER);
}

#[tokio::test]
async fn bad_bodies_get_a_clear_status() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0);
    let addr = start(dir.path()).await;
    let bad = b"{\"object\": \"whatsapp_business_account\", \"entry\": [";
    let r = post(addr, bad, Some(signature::sign(SECRET, bad))).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("error"));
    let huge = vec![b' '; 5 * 1024 * 1024];
    let r = post(addr, &huge, Some(signature::sign(SECRET, &huge))).await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn two_replies_arrive_in_order_with_the_message_delay_between_them() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 300);
    let addr = start(dir.path()).await;
    assert_eq!(
        send_signed(addr, &text_webhook("4915100000002", "wamid.two.1", "two"))
            .await
            .status(),
        200
    );
    graph.wait_for_messages(2).await;
    let received: Vec<_> = graph
        .received()
        .into_iter()
        .filter(|r| r.body.get("to").is_some())
        .collect();
    assert_eq!(
        bodies(&received.iter().map(|r| r.body.clone()).collect::<Vec<_>>()),
        ["first", "second"]
    );
    let gap = received[1].at.duration_since(received[0].at);
    assert!(
        gap >= Duration::from_millis(300),
        "message_delay_ms between replies: {gap:?}"
    );
}

#[tokio::test]
async fn a_webhook_delivered_three_times_is_answered_once() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0);
    let addr = start(dir.path()).await;
    let webhook = text_webhook("4915100000003", "wamid.dup.1", "once");
    for _ in 0..3 {
        assert_eq!(send_signed(addr, &webhook).await.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(bodies(&graph.messages()), ["echo once"]);
}

#[tokio::test]
async fn a_429_is_retried_and_the_message_is_delivered_once() {
    let graph = FakeGraph::start().await.unwrap();
    graph.script([Reply::rate_limited()]);
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0);
    let addr = start(dir.path()).await;
    send_signed(
        addr,
        &text_webhook("4915100000004", "wamid.429.1", "retry me"),
    )
    .await;
    let sent = graph.wait_for_messages(2).await;
    assert_eq!(
        bodies(&sent),
        ["echo retry me", "echo retry me"],
        "one refused try, one accepted"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        graph.messages().len(),
        2,
        "nothing is sent again after it was accepted"
    );
}

#[tokio::test]
async fn a_closed_window_sends_the_template_instead() {
    let graph = FakeGraph::start().await.unwrap();
    graph.script([Reply::window_closed()]);
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0);
    let addr = start(dir.path()).await;
    send_signed(addr, &text_webhook("4915100000005", "wamid.late.1", "late")).await;
    let sent = graph.wait_for_messages(2).await;
    assert_eq!(sent[0]["text"]["body"], "free-form text");
    assert_eq!(sent[1]["type"], "template");
    assert_eq!(sent[1]["template"]["name"], "we_miss_you");
    assert_eq!(
        sent[1]["template"]["components"][0]["parameters"][0]["text"],
        "4915100000005"
    );
}

#[tokio::test]
async fn a_burst_from_twenty_users_is_answered_in_each_users_order() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0);
    let addr = start(dir.path()).await;
    // 100 messages: 5 per user, sent interleaved and concurrently per round.
    for round in 0..5 {
        let mut posts = Vec::new();
        for user in 0..20 {
            let webhook = text_webhook(
                &format!("49151{user:08}"),
                &format!("wamid.burst.{user}.{round}"),
                &format!("m{round}"),
            );
            posts.push(tokio::spawn(async move {
                send_signed(addr, &webhook).await.status()
            }));
        }
        for p in posts {
            assert_eq!(p.await.unwrap(), 200);
        }
    }
    let sent = graph.wait_for_messages(100).await;
    assert_eq!(sent.len(), 100);
    for user in 0..20 {
        let to = format!("49151{user:08}");
        let theirs: Vec<String> = bodies(
            &sent
                .iter()
                .filter(|m| m["to"] == to.as_str())
                .cloned()
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            theirs,
            ["echo m0", "echo m1", "echo m2", "echo m3", "echo m4"],
            "user {user}"
        );
    }
}

#[tokio::test]
async fn every_sample_payload_is_accepted() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0);
    let addr = start(dir.path()).await;
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/whatsapp/samples/inbound");
    let mut count = 0;
    for entry in std::fs::read_dir(&samples)
        .expect("fixtures/whatsapp/samples/inbound exists")
        .flatten()
    {
        let body = std::fs::read(entry.path()).unwrap();
        let r = post(addr, &body, Some(signature::sign(SECRET, &body))).await;
        assert_eq!(r.status(), 200, "{}", entry.path().display());
        count += 1;
    }
    assert!(count >= 100, "{count} samples");
}

#[tokio::test]
async fn admin_status_needs_the_key_and_shows_the_bot() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0);
    let addr = start(dir.path()).await;
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/admin/status");
    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    let status: Value = client
        .get(&url)
        .bearer_auth("admin-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["bots"][0]["phone_number_id"], NUMBER);
    assert_eq!(status["bots"][0]["local"], false);
    assert!(status["dead_letters"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn metrics_count_webhooks_messages_and_turns() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0);
    let addr = start(dir.path()).await;
    send_signed(
        addr,
        &text_webhook("4915100000007", "wamid.m.1", "count me"),
    )
    .await;
    graph.wait_for_messages(1).await;
    let body = b"{}";
    assert_eq!(
        post(addr, body, Some("sha256=00".into())).await.status(),
        401
    );
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "parlance_webhooks_received_total 2",
        "parlance_webhooks_rejected_total{reason=\"signature\"} 1",
        "parlance_messages_sent_total 1",
        "parlance_turns_total 1",
        "parlance_turn_seconds_count 1",
        "parlance_sessions_active 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
}

#[tokio::test]
async fn a_failed_delivery_status_takes_the_nodes_on_error_branch() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0);
    std::fs::write(
        dir.path().join("flows/promo.yaml"),
        "triggers:\n  - keywords: [promo]\nnodes:\n  offer:\n    say: \"A special offer\"\n    on_error: sorry\n    next: end\n  sorry:\n    say: \"Sorry, code {{ message.error.code }}\"\n",
    )
    .unwrap();
    let addr = start(dir.path()).await;
    send_signed(addr, &text_webhook("4915100000008", "wamid.p.1", "promo")).await;
    let sent = graph.wait_for_messages(1).await;
    assert_eq!(bodies(&sent), ["A special offer"]);

    // WhatsApp reports the message failed (the fake numbers its messages from 1).
    let status = json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "WABA", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550000000", "phone_number_id": NUMBER },
            "statuses": [{
                "id": "wamid.FAKE00000001", "status": "failed", "timestamp": chrono_now(),
                "recipient_id": "4915100000008",
                "errors": [{ "code": 131026, "title": "Message undeliverable" }]
            }]
        }}]}]
    });
    assert_eq!(send_signed(addr, &status).await.status(), 200);
    let sent = graph.wait_for_messages(2).await;
    assert_eq!(bodies(&sent), ["A special offer", "Sorry, code 131026"]);
}

/// A `status: { failed: ... }` step in a conversation test plays the event `serve` makes
/// of a `failed` status: the same bot, the same failure after the 24-hour window closed,
/// and the test expects, verbatim, the payload `serve` sent for it.
#[tokio::test]
async fn a_failed_status_step_in_parlance_test_sends_what_serve_sends() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0);
    std::fs::write(
        dir.path().join("flows/notice.yaml"),
        "triggers:\n  - keywords: [notice]\nnodes:\n  notice:\n    template: { name: order_update, language: en_US }\n    on_error: sorry\n    next: end\n  sorry:\n    say: \"Sorry, code {{ message.error.code }}\"\n    on_window_closed: { name: we_miss_you, language: en_US, body: [\"{{ message.type }} {{ message.error.code }} {{ message.error.reason }} {{ session.flow }}.{{ session.node }}\"] }\n",
    )
    .unwrap();
    let addr = start(dir.path()).await;
    // The user's message reaches the bot 25 hours after it was sent, so the window is
    // closed: the template goes out, free text would not.
    let mut webhook = text_webhook("4915100000010", "wamid.n.1", "notice");
    let sent_at = chrono_now().parse::<i64>().unwrap() - 25 * 3600;
    webhook["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] =
        json!(sent_at.to_string());
    send_signed(addr, &webhook).await;
    let sent = graph.wait_for_messages(1).await;
    assert_eq!(sent[0]["template"]["name"], "order_update", "{sent:?}");
    let status = json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "WABA", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550000000", "phone_number_id": NUMBER },
            "statuses": [{
                "id": "wamid.FAKE00000001", "status": "failed", "timestamp": chrono_now(),
                "recipient_id": "4915100000010",
                "errors": [{ "code": 131026, "title": "Message undeliverable" }]
            }]
        }}]}]
    });
    assert_eq!(send_signed(addr, &status).await.status(), 200);
    let sent = graph.wait_for_messages(2).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    let from_serve = &sent[1];
    assert_eq!(
        from_serve["template"]["components"][0]["parameters"][0]["text"],
        "delivery_failed 131026 Message undeliverable notice.sorry",
        "{from_serve}"
    );

    std::fs::create_dir_all(dir.path().join("tests")).unwrap();
    std::fs::write(
        dir.path().join("tests/failed.yaml"),
        format!(
            "name: the failed notice, as serve answers it
contact: {{ wa_id: \"4915100000010\" }}
steps:
  - user: notice
  - bot: {{ template: {{ name: order_update }} }}
  - advance: 25h
  - status: {{ failed: {{ code: 131026, reason: Message undeliverable }} }}
  - bot: {{ template: {{ payload: {from_serve} }} }}
"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_parlance"))
        .args(["test", &dir.path().to_string_lossy()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.ends_with("1 passed, 0 failed\n"), "{text}");
}

fn text_webhook_to(number: &str, from: &str, id: &str, text: &str) -> Value {
    let mut w = text_webhook(from, id, text);
    w["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = json!(number);
    w
}

#[tokio::test]
async fn two_numbers_are_routed_to_their_own_bots_and_secrets() {
    let graph = FakeGraph::start().await.unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_bot(a.path(), &graph, 0);
    write_bot(b.path(), &graph, 0);
    let config = std::fs::read_to_string(b.path().join("parlance.yaml")).unwrap();
    let config = config
        .replace(&format!("\"{NUMBER}\""), "\"2002\"")
        .replace(SECRET, "secret-of-b");
    std::fs::write(b.path().join("parlance.yaml"), config).unwrap();
    std::fs::write(
        b.path().join("flows/echo.yaml"),
        "nodes:\n  echo:\n    say: \"bot B heard {{ message.text }}\"\n    next: end\n",
    )
    .unwrap();
    let addr = start_many(&[a.path(), b.path()]).await;

    let for_b = serde_json::to_vec(&text_webhook_to(
        "2002",
        "4915100000009",
        "wamid.b.1",
        "hello",
    ))
    .unwrap();
    // Signed with A's secret: a valid signature, but not for B, so nothing in it is
    // handled and the sender hears so.
    assert_eq!(
        post(addr, &for_b, Some(signature::sign(SECRET, &for_b)))
            .await
            .status(),
        401
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        graph.messages().is_empty(),
        "B's message signed by A's app is dropped"
    );

    assert_eq!(
        post(addr, &for_b, Some(signature::sign("secret-of-b", &for_b)))
            .await
            .status(),
        200
    );
    send_signed(addr, &text_webhook("4915100000010", "wamid.a.1", "hi")).await;
    let sent = graph.wait_for_messages(2).await;
    let by_number: Vec<(String, String)> = graph
        .received()
        .into_iter()
        .filter(|r| r.body.get("to").is_some())
        .map(|r| {
            (
                r.phone_number_id,
                r.body["text"]["body"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(sent.len(), 2);
    assert!(
        by_number.contains(&("2002".to_string(), "bot B heard hello".to_string())),
        "{by_number:?}"
    );
    assert!(
        by_number.contains(&(NUMBER.to_string(), "echo hi".to_string())),
        "{by_number:?}"
    );
}

#[tokio::test]
async fn handled_messages_are_marked_read_with_a_typing_indicator() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0);
    let config = std::fs::read_to_string(dir.path().join("parlance.yaml")).unwrap();
    let config = config.replace(
        "  message_delay_ms:",
        "  mark_as_read: true\n  typing_indicator: true\n  message_delay_ms:",
    );
    std::fs::write(dir.path().join("parlance.yaml"), config).unwrap();
    let addr = start(dir.path()).await;
    send_signed(addr, &text_webhook("4915100000011", "wamid.read.1", "hi")).await;
    graph.wait_for_messages(1).await;
    let received = graph.received();
    assert_eq!(
        received[0].body,
        json!({ "messaging_product": "whatsapp", "status": "read", "message_id": "wamid.read.1", "typing_indicator": { "type": "text" } })
    );
    assert_eq!(
        received[1].body["text"]["body"], "echo hi",
        "the reply comes after the read receipt"
    );
}

#[tokio::test]
async fn a_dead_letter_is_listed_and_a_replay_sends_it_in_order() {
    let graph = FakeGraph::start().await.unwrap();
    // The first send is refused for good (131026: not a WhatsApp user).
    graph.script([Reply::Error {
        status: 400,
        code: 131026,
        message: "(#131026) Message undeliverable".into(),
        details: "Unable to deliver the message.".into(),
    }]);
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0);
    let addr = start(dir.path()).await;
    send_signed(addr, &text_webhook("4915100000042", "wamid.d.1", "lost")).await;
    let client = reqwest::Client::new();
    let status = |key: &'static str| {
        let client = client.clone();
        async move {
            client
                .get(format!("http://{addr}/admin/status"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let letter = loop {
        let body: Value = status("admin-key").await.json().await.unwrap();
        if let Some(letter) = body["dead_letters"].get(0) {
            break letter.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no dead letter: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(letter["error_code"], 131026, "{letter}");
    assert_eq!(letter["node"], "echo.echo", "{letter}");
    assert_eq!(letter["payload"]["text"]["body"], "echo lost", "{letter}");
    assert_eq!(letter["attempts"], 1, "{letter}");
    let id = letter["id"].as_u64().unwrap();
    // A later message goes out meanwhile; the replay comes after it.
    send_signed(addr, &text_webhook("4915100000042", "wamid.d.2", "later")).await;
    graph.wait_for_messages(2).await;
    let replay = |key: &'static str, id: u64| {
        let client = client.clone();
        async move {
            client
                .post(format!("http://{addr}/admin/dead-letters/{id}/replay"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(replay("wrong-key", id).await, 401);
    assert_eq!(replay("admin-key", id + 1000).await, 404);
    assert_eq!(replay("admin-key", id).await, 200);
    let sent = graph.wait_for_messages(3).await;
    assert_eq!(bodies(&sent), ["echo lost", "echo later", "echo lost"]);
    assert_eq!(graph.accepted().len(), 2);
    let body: Value = status("admin-key").await.json().await.unwrap();
    assert_eq!(
        body["dead_letters"],
        json!([]),
        "replayed: gone from the list"
    );
    assert_eq!(replay("admin-key", id).await, 404, "a replay happens once");
}

#[tokio::test]
async fn an_inbox_item_this_build_cannot_read_is_moved_aside_and_the_user_goes_on() {
    use parlance::store::durable::{ItemKind, NewItem};
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0);
    // An item a newer version stored before this one took over the file.
    let url = parlance::store::parse_url("sqlite://data/test.db").unwrap();
    let store = parlance::store::open(&url, dir.path()).await.unwrap();
    let user = "4915100000077";
    store
        .accept(vec![NewItem {
            key: parlance::store::SessionKey::new(NUMBER, user),
            dedupe: Some("wamid.future".into()),
            kind: ItemKind::Message,
            body: r#"{"v":99,"something":"new"}"#.into(),
            at: 1,
        }])
        .await
        .unwrap();
    drop(store);
    let addr = start(dir.path()).await;
    send_signed(addr, &text_webhook(user, "wamid.now.1", "still here")).await;
    assert_eq!(
        bodies(&graph.wait_for_messages(1).await),
        ["echo still here"]
    );
    // It is kept, with why, where people can look.
    let db = rusqlite::Connection::open(dir.path().join("data/test.db")).unwrap();
    let reason: String = db
        .query_row(
            "SELECT reason FROM d_quarantine WHERE source = 'd_items' AND user = ?1",
            [user],
            |r| r.get(0),
        )
        .unwrap();
    assert!(reason.contains("format 99"), "{reason}");
}

/// Transformers run in `serve` as in `chat` and `test`: a dropped message gets no
/// answer (and holds up nothing), a changed one reaches the flow changed, every payload
/// goes out through `output`, and a failing `output` sends the payload unchanged.
#[tokio::test]
async fn transformers_shape_what_serve_receives_and_sends() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 0);
    let config = std::fs::read_to_string(dir.path().join("parlance.yaml")).unwrap();
    std::fs::write(
        dir.path().join("parlance.yaml"),
        format!(
            "{config}transformers:\n  input: transformers/input.rhai\n  output: transformers/output.rhai\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("transformers")).unwrap();
    std::fs::write(
        dir.path().join("transformers/input.rhai"),
        "fn input(message) {\n  if message.text == \"spam\" { return (); }\n  message.text = message.text.to_lower();\n  message\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("transformers/output.rhai"),
        "fn output(payload) {\n  if payload.text.body.contains(\"break\") { payload.type = \"bogus\"; }\n  else { payload.text.body += \" (signed)\"; }\n  payload\n}\n",
    )
    .unwrap();
    let addr = start(dir.path()).await;
    let user = "4915100000077";
    for (id, text) in [
        ("wamid.t.1", "spam"),
        ("wamid.t.2", "HeLLo"),
        ("wamid.t.3", "BREAK"),
    ] {
        assert_eq!(
            send_signed(addr, &text_webhook(user, id, text))
                .await
                .status(),
            200
        );
    }
    // One user's messages are handled in order: had "spam" been answered, its answer
    // would come first.
    let messages = graph.wait_for_messages(2).await;
    assert_eq!(bodies(&messages), ["echo hello (signed)", "echo break"]);
    assert!(messages.iter().all(|m| m["to"] == json!(user)));
}
