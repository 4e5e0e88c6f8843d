//! Hot reload as a designer sees it: `parlance serve` running, a flow file edited, the
//! next message answered by the new flow; a broken edit leaves the old bot answering.

use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::free_port;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn flow(text: &str) -> String {
    format!("nodes:\n  hello:\n    say: \"{text}\"\n    next: end\n")
}

async fn say(port: u16, text: &str) -> Option<String> {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/dev/message"))
        .json(&json!({ "from": "15550001111", "text": text }))
        .send()
        .await
        .ok()?;
    let body: Value = r.json().await.ok()?;
    body["sent"][0]["text"]["body"].as_str().map(str::to_string)
}

async fn admin_status(port: u16) -> Value {
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/admin/status"))
        .bearer_auth("admin-key")
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

async fn wait_until_up(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not start");
}

/// Polls until the bot answers `want`; returns how long that took.
async fn until_answer(port: u16, want: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if say(port, "hi").await.as_deref() == Some(want) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

#[tokio::test]
async fn edits_are_picked_up_and_broken_edits_keep_the_old_bot() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::write(
        dir.path().join("parlance.yaml"),
        "session: { store: \"sqlite://data/bot.db\" }\napi: { key: admin-key }\n",
    )
    .unwrap();
    std::fs::write(flows.join("main.yaml"), flow("version one")).unwrap();
    let port = free_port();
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_parlance"))
            .args([
                "serve",
                &dir.path().to_string_lossy(),
                "--port",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until_up(port).await;
    assert_eq!(say(port, "hi").await.as_deref(), Some("version one"));

    // A valid edit is serving in well under a second.
    let edited = Instant::now();
    std::fs::write(flows.join("main.yaml"), flow("version two")).unwrap();
    let took = until_answer(port, "version two", Duration::from_secs(5)).await;
    let took = took
        .map(|_| edited.elapsed())
        .expect("the edit was picked up");
    assert!(took < Duration::from_secs(1), "picked up after {took:?}");

    // A broken edit: the old bot keeps answering.
    std::fs::write(
        flows.join("main.yaml"),
        "nodes:\n  hello:\n    say: \"{{ broken\"\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(say(port, "hi").await.as_deref(), Some("version two"));
    let status = admin_status(port).await;
    let last = &status["bots"][0]["last_reload"];
    assert_eq!(last["ok"], false, "{status}");
    assert_eq!(last["version"], 2, "version two still serving: {status}");
    let first = last["diagnostics"][0].as_str().unwrap_or_default();
    assert!(first.contains("error[template_syntax]"), "{status}");

    // Fixing it brings the new version.
    std::fs::write(flows.join("main.yaml"), flow("version three")).unwrap();
    assert!(
        until_answer(port, "version three", Duration::from_secs(5))
            .await
            .is_some()
    );
    // One edit is one reload: reading the files to reload them must not trigger more.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = admin_status(port).await;
    assert_eq!(status["bots"][0]["last_reload"]["version"], 3, "{status}");
    assert!(Path::new(&dir.path().join("data/bot.db")).exists());
}
