//! `parlance serve` as operators run it: flags from environment variables, JSON or
//! plain-text logs, and logs that never carry secrets or full phone numbers.

use parlance::testing::fake_graph::FakeGraph;
use parlance::whatsapp::signature;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{free_port, parlance, wait_until_up};

const TOKEN: &str = "EAAGtoken1234567890";
const SECRET: &str = "5550123987654321";
const API_KEY: &str = "admin-key-9f8e7d";
const USER: &str = "4915112345678";

/// Stops the server and returns what it logged.
fn stop(mut child: Child) -> String {
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write_bot(dir: &Path, graph: &FakeGraph) {
    std::fs::create_dir_all(dir.join("flows")).unwrap();
    std::fs::write(
        dir.join("parlance.yaml"),
        format!(
            "whatsapp:\n  access_token: ${{WA_ACCESS_TOKEN}}\n  phone_number_id: \"1001\"\n  verify_token: let-me-in\n  app_secret: ${{WA_APP_SECRET}}\n  base_url: {}\nsession: {{ store: \"memory://\" }}\napi:\n  key: ${{API_KEY}}\n",
            graph.base_url()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/main.yaml"),
        "nodes:\n  echo:\n    say: \"echo {{ message.text }}\"\n    next: end\n",
    )
    .unwrap();
}

#[test]
fn help_lists_the_environment_variable_of_every_flag() {
    let out = parlance().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for name in [
        "PARLANCE_PORT",
        "PARLANCE_BIND",
        "PARLANCE_MAX_BODY_BYTES",
        "PARLANCE_HEADER_TIMEOUT",
        "PARLANCE_BODY_TIMEOUT",
        "PARLANCE_IDLE_TIMEOUT",
        "PARLANCE_MAX_CONNECTIONS",
        "PARLANCE_LOG_FORMAT",
        "PARLANCE_SHUTDOWN_TIMEOUT",
    ] {
        assert!(
            help.contains(&format!("[env: {name}=")),
            "{name} in:\n{help}"
        );
    }
}

#[test]
fn zero_timeouts_and_limits_are_refused_on_the_command_line() {
    for flag in [
        "--header-timeout",
        "--body-timeout",
        "--idle-timeout",
        "--max-connections",
    ] {
        let out = parlance().args(["serve", flag, "0"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("0 is not in 1.."), "{flag}: {said}");
    }
}

#[tokio::test]
async fn the_port_and_json_logs_come_from_the_environment_and_secrets_stay_out() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph);
    let port = free_port();
    let child = parlance()
        .arg("serve")
        .arg(dir.path())
        .env("PARLANCE_PORT", port.to_string())
        .env("PARLANCE_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .env("WA_ACCESS_TOKEN", TOKEN)
        .env("WA_APP_SECRET", SECRET)
        .env("API_KEY", API_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let up = wait_until_up(port).await;
    if up {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let body = serde_json::to_vec(&json!({
            "object": "whatsapp_business_account",
            "entry": [{ "id": "WABA", "changes": [{ "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": { "display_phone_number": "15550000000", "phone_number_id": "1001" },
                "contacts": [{ "profile": { "name": "Ada" }, "wa_id": USER }],
                "messages": [{ "from": USER, "id": "wamid.cli.1", "timestamp": now, "type": "text", "text": { "body": "hi" } }]
            }}]}]
        }))
        .unwrap();
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/webhook");
        // Unsigned (refused and logged), then signed (answered).
        let unsigned = client.post(&url).body(body.clone()).send().await.unwrap();
        assert_eq!(unsigned.status(), 401);
        let signed = client
            .post(&url)
            .header("x-hub-signature-256", signature::sign(SECRET, &body))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(signed.status(), 200);
        let deadline = Instant::now() + Duration::from_secs(10);
        while graph.messages().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let admin = client
            .get(format!("http://127.0.0.1:{port}/admin/status"))
            .bearer_auth("wrong-key")
            .send()
            .await
            .unwrap();
        assert_eq!(admin.status(), 401);
    }
    let logs = stop(child);
    assert!(up, "the server did not listen on PARLANCE_PORT:\n{logs}");
    assert_eq!(graph.messages().len(), 1, "{logs}");
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{logs}");
    for line in &lines {
        let parsed: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(parsed["level"].is_string(), "{line}");
        assert!(parsed["fields"].is_object(), "{line}");
    }
    assert!(
        logs.contains(&format!("listening on http://127.0.0.1:{port}")),
        "{logs}"
    );
    for secret in [TOKEN, SECRET, API_KEY, USER] {
        assert!(!logs.contains(secret), "{secret} logged:\n{logs}");
    }
}

#[tokio::test]
async fn text_logs_have_no_colour_codes_when_not_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("flows")).unwrap();
    std::fs::write(
        dir.path().join("parlance.yaml"),
        "session: { store: \"memory://\" }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("flows/main.yaml"),
        "nodes:\n  hi:\n    say: \"hello\"\n",
    )
    .unwrap();
    let port = free_port();
    let child = parlance()
        .arg("serve")
        .arg(dir.path())
        .args(["--port", &port.to_string(), "--log-format", "text"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let up = wait_until_up(port).await;
    let logs = stop(child);
    assert!(up, "{logs}");
    assert!(logs.contains("listening on"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "colour codes in a pipe: {logs:?}");
}

#[tokio::test]
async fn a_number_that_allows_unsigned_webhooks_is_warned_about_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("flows")).unwrap();
    std::fs::write(
        dir.path().join("parlance.yaml"),
        "whatsapp:\n  access_token: t\n  phone_number_id: \"1001\"\n  verify_token: v\n  allow_unsigned: true\nsession: { store: \"memory://\" }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("flows/main.yaml"),
        "nodes:\n  hi:\n    say: \"hello\"\n",
    )
    .unwrap();
    let port = free_port();
    let child = parlance()
        .arg("serve")
        .arg(dir.path())
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let up = wait_until_up(port).await;
    let logs = stop(child);
    assert!(up, "{logs}");
    let warning = logs
        .lines()
        .find(|l| l.contains("allow_unsigned"))
        .unwrap_or_else(|| panic!("no warning in:\n{logs}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("number=1001"), "{warning}");
    assert!(
        warning.contains("unsigned webhooks are accepted and anyone who reaches this server can make the bot send messages; for test setups only"),
        "{warning}"
    );
}
