//! Helpers shared by the integration tests (most run the real `parlance` binary). Each test file that
//! needs them says `mod support;`; not every file uses every helper.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `parlance` binary, without the caller's `PARLANCE_*`, `WA_*` and `RUST_LOG`
/// variables, so a developer's environment (WhatsApp credentials included, which would
/// turn local mode off) cannot change what a test sees. Tests that want a variable set it
/// on the returned command.
pub fn parlance() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_parlance"));
    for (name, _) in std::env::vars() {
        if name.starts_with("PARLANCE_") || name.starts_with("WA_") || name == "RUST_LOG" {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Writes a bot folder in a new temporary directory: `files` are (relative path,
/// content).
pub fn bot_folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, content) in files {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

/// A copy of the bot folder `rel` (relative to the repository) without its `data/`
/// (the database), as a fresh bot folder a test may change.
pub fn copy_bot(rel: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    for entry in walkdir::WalkDir::new(&src) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(&src).unwrap();
        if rel.starts_with("data") {
            continue;
        }
        let to = dir.path().join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
    dir
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether a server answers `/healthz` on `port` within 20 s.
pub async fn wait_until_up(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A signed-webhook body with one text message from `from` to `number`.
pub fn text_webhook(number: &str, from: &str, id: &str, text: &str) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    serde_json::to_vec(&serde_json::json!({
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

/// Posts `body` signed with `secret` to the server on `port`; the HTTP status, or 0 when
/// no answer came (the server is down).
pub async fn post_signed(client: &reqwest::Client, port: u16, secret: &str, body: &[u8]) -> u16 {
    client
        .post(format!("http://127.0.0.1:{port}/webhook"))
        .header("content-type", "application/json")
        .header(
            "x-hub-signature-256",
            parlance::whatsapp::signature::sign(secret, body),
        )
        .body(body.to_vec())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// A running `parlance serve`.
pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Server {
    pub async fn start(dir: &Path, args: &[&str]) -> Server {
        Server::start_on(dir, free_port(), args).await
    }

    /// Starts on `port` (a restart keeps its address, as behind a balancer).
    pub async fn start_on(dir: &Path, port: u16, args: &[&str]) -> Server {
        Server::start_env(dir, port, args, &[]).await
    }

    /// Starts with environment variables `env` set (a bot folder's `${NAME}`s).
    pub async fn start_env(dir: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> Server {
        let child = parlance()
            .envs(env.iter().copied())
            .arg("serve")
            .arg(dir)
            .args(["--port", &port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut server = Server { child, port };
        if !wait_until_up(port).await {
            panic!("the server did not start:\n{}", server.logs());
        }
        server
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub async fn exit_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub fn logs(&mut self) -> String {
        self.kill9();
        let mut text = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut text);
        }
        text
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The test Redis (`REDIS_URL`, else the one on loopback).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A store URL on the test Redis with a key prefix of its own (tests run side by side).
pub fn redis_store(name: &str) -> String {
    format!(
        "{}/0?prefix=test-{name}-{}:",
        redis_url().trim_end_matches('/'),
        chrono::Utc::now().timestamp_micros()
    )
}

/// Posts a signed text webhook from `user` to the server on `port` until it is
/// acknowledged (at most 30 s), as Meta redelivers.
pub async fn deliver_text(
    client: &reqwest::Client,
    port: u16,
    (number, secret): (&str, &str),
    user: &str,
    id: &str,
    text: &str,
) {
    let body = text_webhook(number, user, id, text);
    let deadline = Instant::now() + Duration::from_secs(30);
    while post_signed(client, port, secret, &body).await != 200 {
        assert!(
            Instant::now() < deadline,
            "the webhook was never acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The server's `/metrics` text.
pub async fn metrics(client: &reqwest::Client, port: u16) -> String {
    client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
