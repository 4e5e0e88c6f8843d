//! Clean restarts of the real binary: SIGTERM stops new work (503, `/readyz` says why),
//! lets every acknowledged webhook's turn send all its replies, and exits 0 within the
//! shutdown timeout; when the timeout passes first, it says what was left, in counts.

#![cfg(unix)]

use parlance::testing::fake_graph::FakeGraph;
use parlance::whatsapp::signature;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{free_port, parlance, wait_until_up};

const SECRET: &str = "shutdown-app-secret";
const NUMBER: &str = "1001";

/// A bot whose every turn sends three replies naming the message, `delay_ms` apart.
fn write_bot(dir: &Path, graph: &FakeGraph, delay_ms: u64) {
    std::fs::create_dir_all(dir.join("flows")).unwrap();
    std::fs::write(
        dir.join("parlance.yaml"),
        format!(
            "whatsapp:\n  access_token: test-token\n  phone_number_id: \"{NUMBER}\"\n  verify_token: let-me-in\n  app_secret: {SECRET}\n  message_delay_ms: {delay_ms}\n  base_url: {}\nsession: {{ store: \"sqlite://data/test.db\" }}\n",
            graph.base_url()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/main.yaml"),
        "nodes:\n  three:\n    say: [\"{{ message.text }} 1\", \"{{ message.text }} 2\", \"{{ message.text }} 3\"]\n    next: end\n",
    )
    .unwrap();
}

fn start(dir: &Path, port: u16, shutdown_timeout: u64) -> Child {
    parlance()
        .arg("serve")
        .arg(dir)
        .args(["--port", &port.to_string()])
        .env("PARLANCE_SHUTDOWN_TIMEOUT", shutdown_timeout.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM failed");
}

/// Waits (without blocking the test's runtime) for the process to exit, up to `within`.
async fn exit_within(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The server's log; kills it first if it still runs.
fn logs(mut child: Child) -> String {
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn webhook(from: &str, id: &str, text: &str) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "WABA", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550000000", "phone_number_id": NUMBER },
            "contacts": [{ "profile": { "name": "Ada" }, "wa_id": from }],
            "messages": [{ "from": from, "id": id, "timestamp": now, "type": "text", "text": { "body": text } }]
        }}]}]
    }))
    .unwrap()
}

async fn post_signed(client: &reqwest::Client, port: u16, body: Vec<u8>) -> u16 {
    client
        .post(format!("http://127.0.0.1:{port}/webhook"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature::sign(SECRET, &body))
        .body(body)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// The text bodies the fake Graph API received, per recipient, in arrival order.
fn received_per_user(graph: &FakeGraph) -> BTreeMap<String, Vec<String>> {
    let mut per_user: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in graph.messages() {
        let to = m["to"].as_str().unwrap_or_default().to_string();
        let text = m["text"]["body"].as_str().unwrap_or_default().to_string();
        per_user.entry(to).or_default().push(text);
    }
    per_user
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_every_acknowledged_turn_refuses_new_webhooks_and_exits_0() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 300);
    let port = free_port();
    let timeout = 10;
    let mut child = start(dir.path(), port, timeout);
    if !wait_until_up(port).await {
        panic!("the server did not start:\n{}", logs(child));
    }
    let client = reqwest::Client::new();

    // Four users, two messages each: each user's replies take over a second to go out.
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for round in 1..=2 {
        for user in 1..=4 {
            let from = format!("49151000000{user}");
            let text = format!("m{round}");
            let status = post_signed(
                &client,
                port,
                webhook(&from, &format!("wamid.{user}.{round}"), &text),
            )
            .await;
            assert_eq!(status, 200, "{}", logs(child));
            let replies = expected.entry(from).or_default();
            replies.extend((1..=3).map(|i| format!("{text} {i}")));
        }
    }
    let wanted: usize = expected.values().map(Vec::len).sum();

    // SIGTERM once replies are going out, well before the last one is.
    let deadline = Instant::now() + Duration::from_secs(10);
    while graph.messages().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent_before = graph.messages().len();
    assert!(
        sent_before > 0 && sent_before < wanted,
        "SIGTERM must come mid-delivery: {sent_before} of {wanted} sent"
    );
    terminate(&child);
    let signalled = Instant::now();

    // Webhooks keep coming during the drain: until the server sees the signal one may
    // still be acknowledged (and then must be answered in full), after it they get 503.
    let from_late = "491510000009".to_string();
    let mut refused = false;
    for n in 0..100 {
        let text = format!("late{n}");
        let status = post_signed(
            &client,
            port,
            webhook(&from_late, &format!("wamid.late.{n}"), &text),
        )
        .await;
        match status {
            200 => expected
                .entry(from_late.clone())
                .or_default()
                .extend((1..=3).map(|i| format!("{text} {i}"))),
            503 => {
                refused = true;
                break;
            }
            other => panic!("a webhook during the drain got {other}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "no webhook got 503 during the drain");
    let ready = client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["problems"], json!(["shutting down (SIGTERM)"]));
    // The refusal is counted, for the operator who wonders why Meta redelivered.
    let metrics = support::metrics(&client, port).await;
    assert!(
        metrics.contains("parlance_webhooks_rejected_total{reason=\"shutting_down\"} 1"),
        "{metrics}"
    );

    let status = exit_within(&mut child, Duration::from_secs(timeout + 3)).await;
    let exited_after = signalled.elapsed();
    let log = logs(child);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit {status:?}:\n{log}"
    );
    assert!(
        exited_after < Duration::from_secs(timeout),
        "exited {exited_after:?} after SIGTERM:\n{log}"
    );
    assert_eq!(
        received_per_user(&graph),
        expected,
        "every reply of every acknowledged webhook, once, in order:\n{log}"
    );
    assert!(log.contains("every turn and send finished"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_timeout_that_passes_logs_what_was_left_and_still_exits_0() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Three replies five seconds apart: a turn outlasts a one-second timeout.
    write_bot(dir.path(), &graph, 5000);
    let port = free_port();
    let mut child = start(dir.path(), port, 1);
    if !wait_until_up(port).await {
        panic!("the server did not start:\n{}", logs(child));
    }
    let client = reqwest::Client::new();
    let user = "4915112345678";
    for n in 1..=3 {
        let status = post_signed(&client, port, webhook(user, &format!("wamid.{n}"), "hi")).await;
        assert_eq!(status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while graph.messages().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(graph.messages().len(), 1, "the first reply went out");
    terminate(&child);
    let signalled = Instant::now();
    let status = exit_within(&mut child, Duration::from_secs(6)).await;
    let exited_after = signalled.elapsed();
    let log = logs(child);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{log}");
    assert!(
        exited_after < Duration::from_secs(3),
        "exited {exited_after:?} after SIGTERM:\n{log}"
    );
    let left = log
        .lines()
        .find(|l| l.contains("the shutdown timeout passed with work still under way"))
        .unwrap_or_else(|| panic!("no line about what was left:\n{log}"));
    // One user, whose replies are still going out.
    assert!(left.contains("users=1"), "{left}");
    assert!(left.contains("webhooks=0"), "{left}");
    // Nothing is lost: the next start goes on with the rest, in order.
    let port = free_port();
    let child = start(dir.path(), port, 1);
    if !wait_until_up(port).await {
        panic!("the server did not restart:\n{}", logs(child));
    }
    // (The replies are 5 s apart: the first turn's, and the next turn's first, do.)
    let deadline = Instant::now() + Duration::from_secs(30);
    while graph.messages().len() < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(logs(child));
    let got: Vec<String> = received_per_user(&graph)[user].clone();
    assert_eq!(
        got,
        ["hi 1", "hi 2", "hi 3", "hi 1"],
        "the replies go on once each, in order, across the restart"
    );
    assert!(!log.contains(user), "a phone number logged:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_stops_at_once_and_says_what_was_left() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph, 5000);
    let port = free_port();
    let mut child = start(dir.path(), port, 60);
    if !wait_until_up(port).await {
        panic!("the server did not start:\n{}", logs(child));
    }
    let client = reqwest::Client::new();
    let status = post_signed(&client, port, webhook("4915112345678", "wamid.1", "hi")).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while graph.messages().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    terminate(&child);
    // The first signal is taken once /readyz says so; the drain would take 10 s more.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ready = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        if ready == 503 || Instant::now() > deadline {
            assert_eq!(ready, 503, "/readyz after SIGTERM");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    terminate(&child);
    let signalled = Instant::now();
    let status = exit_within(&mut child, Duration::from_secs(6)).await;
    let exited_after = signalled.elapsed();
    let log = logs(child);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{log}");
    assert!(
        exited_after < Duration::from_secs(3),
        "exited {exited_after:?} after the second SIGTERM:\n{log}"
    );
    let left = log
        .lines()
        .find(|l| l.contains("a second signal came with work still under way"))
        .unwrap_or_else(|| panic!("no line about what was left:\n{log}"));
    assert!(left.contains("users=1"), "{left}");
    assert!(left.contains("webhooks=0"), "{left}");
}
