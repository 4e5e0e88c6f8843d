//! The `/dev` simulator's server side, through the real `parlance serve` binary: its
//! page's files, its live events (read as a browser reads them, as a stream), the
//! simulated users' messages, statuses, reset, the clock with the 24-hour window, the
//! flow graph, reload notices, recording a test that `parlance test` then passes, and
//! the 404 of a server with WhatsApp credentials.

mod support;

use parlance::testing::fake_graph::FakeGraph;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{Server, bot_folder, copy_bot, parlance};

const USER: &str = "15550001111";

/// How long anything the tests wait for may take.
const PATIENCE: Duration = Duration::from_secs(20);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn url(server: &Server, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", server.port)
}

async fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(url(server, path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A request with `Authorization: Bearer key` (none when `key` is `None`).
async fn keyed(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client().request(method, url(server, path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(server: &Server, path: &str) -> (u16, Value) {
    let r = client().get(url(server, path)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// One server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    event: String,
    data: Value,
}

/// `GET /dev/api/events`, read as it arrives.
struct Events {
    response: reqwest::Response,
    buffer: String,
    /// Every event read so far, in order.
    seen: Vec<Sse>,
}

impl Events {
    async fn open(server: &Server) -> Events {
        Events::open_with(server, None).await
    }

    /// The stream of a server whose simulated bot has `api.key`.
    async fn open_with(server: &Server, key: Option<&str>) -> Events {
        let mut request = client().get(url(server, "/dev/api/events"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Events {
            response,
            buffer: String::new(),
            seen: Vec::new(),
        }
    }

    /// The next event (after those already returned) that `wanted` accepts; panics
    /// after [`PATIENCE`] with what arrived.
    async fn until(&mut self, what: &str, wanted: impl Fn(&Sse) -> bool) -> Sse {
        let deadline = Instant::now() + PATIENCE;
        let mut checked = self.seen.len();
        loop {
            // Events read already but not yet looked at by this call.
            while checked < self.seen.len() {
                let e = self.seen[checked].clone();
                checked += 1;
                if wanted(&e) {
                    self.seen.drain(..checked);
                    return e;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.response.chunk()).await;
            let chunk = match chunk {
                Ok(Ok(Some(bytes))) => bytes,
                Ok(Ok(None)) => panic!("the event stream ended while waiting for {what}"),
                Ok(Err(e)) => panic!("the event stream failed while waiting for {what}: {e}"),
                Err(_) => panic!(
                    "no {what} within {PATIENCE:?}; events seen: {:#?}",
                    self.seen
                ),
            };
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if !event.is_empty() {
                    let data = serde_json::from_str(&data).unwrap_or(Value::Null);
                    self.seen.push(Sse { event, data });
                }
            }
        }
    }

    async fn named(&mut self, name: &str) -> Sse {
        self.until(name, |e| e.event == name).await
    }

    /// The next `message` event whose payload's text (or body) is `text`.
    async fn message_text(&mut self, text: &str) -> Sse {
        self.until(&format!("the message {text:?}"), |e| {
            e.event == "message" && payload_text(&e.data["payload"]) == Some(text)
        })
        .await
    }
}

fn payload_text(p: &Value) -> Option<&str> {
    p["text"]["body"]
        .as_str()
        .or(p["interactive"]["body"]["text"].as_str())
}

/// A copy of examples/pizza without its database, as a fresh bot folder.
fn pizza() -> tempfile::TempDir {
    copy_bot("examples/pizza")
}

/// A bot that greets, asks a name, and has a late second message behind a `wait`
/// whose node falls back to a template outside the 24-hour window.
fn clock_bot() -> tempfile::TempDir {
    bot_folder(&[
        (
            "parlance.yaml",
            "bot: { name: clocked, entry: main }\nwhatsapp: { typing_indicator: true }\nsession: { timeout: 30m, store: \"sqlite://data/bot.db\" }\n",
        ),
        (
            "flows/main.yaml",
            r#"id: main
triggers:
  - keywords: [hi]
nodes:
  ask_name:
    ask: { text: "What is your name?" }
    save: name
  greet:
    say: "Nice to meet you, {{ vars.name }}"
"#,
        ),
        (
            "flows/late.yaml",
            r#"id: late
triggers:
  - keywords: [late]
nodes:
  one:
    say: "one"
  pause:
    wait: 3s
  two:
    say: "two"
    on_window_closed:
      name: late_update
      language: en_US
      body: ["{{ contact.name | default('there') }}"]
"#,
        ),
        (
            "flows/lost.yaml",
            r#"id: lost
triggers:
  - keywords: [lost]
nodes:
  one:
    say: "one"
  pause:
    wait: 3s
  never:
    say: "never seen"
"#,
        ),
    ])
}

#[tokio::test]
async fn the_page_is_served_from_the_binary() {
    let bot = clock_bot();
    let server = Server::start(bot.path(), &[]).await;
    let r = client().get(url(&server, "/")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/dev");
    let r = client().get(url(&server, "/dev")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let index = r.text().await.unwrap();
    assert!(index.contains("<html"), "{index}");
    // Every file of the folder is served as it is, with a type by extension.
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server/dev/assets");
    let mut served = 0;
    for entry in walkdir::WalkDir::new(&assets) {
        let entry = entry.unwrap();
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(&assets).unwrap();
        let rel = rel.to_string_lossy().replace('\\', "/");
        let r = client()
            .get(url(&server, &format!("/dev/assets/{rel}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{rel}");
        let etag = r.headers()["etag"].to_str().unwrap().to_string();
        if rel.ends_with(".js") {
            assert!(
                r.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .contains("javascript"),
                "{rel}"
            );
        }
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            std::fs::read(entry.path()).unwrap(),
            "{rel}"
        );
        // Unchanged: 304 to a browser that has it.
        let again = client()
            .get(url(&server, &format!("/dev/assets/{rel}")))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{rel}");
        served += 1;
    }
    assert!(served >= 1);
    let (status, body) = get(&server, "/dev/assets/no/such.js").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = get(&server, "/dev/assets/../Cargo.toml").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn info_says_what_is_served() {
    let bot = pizza();
    let server = Server::start(bot.path(), &[]).await;
    let (status, info) = get(&server, "/dev/api/info").await;
    assert_eq!(status, 200);
    let b = &info["bots"][0];
    assert_eq!(b["phone_number_id"], "local");
    assert_eq!(b["name"], "pizza");
    assert_eq!(b["version"], 1);
    assert_eq!(b["message_delay_ms"], 500);
    assert_eq!(b["entry"], "main");
    assert!(
        b["flows"]
            .as_array()
            .unwrap()
            .contains(&json!("order_status"))
    );
    assert_eq!(b["diagnostics"], json!([]));
    assert_eq!(info["clock_offset_secs"], 0);
    assert!(info["now"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn a_conversation_arrives_live_with_its_statuses() {
    let bot = pizza();
    let server = Server::start(bot.path(), &[]).await;
    let mut events = Events::open(&server).await;
    let (status, sent) = post(
        &server,
        "/dev/api/message",
        json!({"from": USER, "name": "Maria", "text": "hi"}),
    )
    .await;
    assert_eq!(status, 202, "{sent}");
    let id = sent["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("wamid.dev."));
    let inbound = events.named("inbound").await;
    assert_eq!(inbound.data["id"], id.as_str());
    assert_eq!(inbound.data["user"], USER);
    assert_eq!(inbound.data["payload"], json!({"text": "hi"}));
    let turn = events.named("turn").await;
    assert_eq!(turn.data["message_id"], id.as_str());
    assert_eq!(turn.data["queued"], 2);
    let welcome = events
        .message_text("Hi Maria 👋 Welcome to *Pronto Pizza*!")
        .await;
    assert_eq!(welcome.data["flow"], "main");
    assert_eq!(welcome.data["node"], "welcome");
    assert_eq!(welcome.data["payload"]["to"], USER);
    let wamid = welcome.data["wamid"].as_str().unwrap().to_string();
    for wanted in ["sent", "delivered"] {
        events
            .until(&format!("{wanted} for the welcome"), |e| {
                e.event == "status"
                    && e.data["wamid"] == wamid.as_str()
                    && e.data["status"] == wanted
            })
            .await;
    }
    let list = events.until("the list", |e| e.event == "message").await;
    assert_eq!(list.data["payload"]["interactive"]["type"], "list");
    // message_delay_ms: 500 shows between the two.
    let gap = list.data["at"].as_i64().unwrap() - welcome.data["at"].as_i64().unwrap();
    assert!(gap >= 450, "the list came {gap} ms after the welcome");

    // The history redraws the same chat; the list's statuses arrive in it.
    let deadline = Instant::now() + PATIENCE;
    let history = loop {
        let (status, history) = get(&server, &format!("/dev/api/users/{USER}/history")).await;
        assert_eq!(status, 200);
        if history[2]["status"] == "delivered" {
            break history;
        }
        assert!(Instant::now() < deadline, "{history:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[0]["direction"], "in");
    assert_eq!(history[0]["id"], id.as_str());
    assert_eq!(history[1]["direction"], "out");
    assert_eq!(history[1]["wamid"], wamid.as_str());
    assert_eq!(history[2]["payload"]["interactive"]["type"], "list");

    // The user opens the chat: both messages are read.
    let (status, read) = post(&server, &format!("/dev/api/users/{USER}/read"), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(read["read"].as_array().unwrap().len(), 2);
    events
        .until("read", |e| {
            e.event == "status" && e.data["wamid"] == wamid.as_str() && e.data["status"] == "read"
        })
        .await;
    // The statuses went through the webhook's path: the store has them.
    let (status, export) = get(&server, &format!("/api/v1/users/{USER}")).await;
    assert_eq!(status, 200, "{export}");
    let sent = &export["numbers"][0]["sent"];
    let welcome_record = sent
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["message_id"] == wamid.as_str())
        .unwrap_or_else(|| panic!("{export:#}"));
    let statuses: Vec<&str> = welcome_record["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    for s in ["sent", "delivered", "read"] {
        assert!(statuses.contains(&s), "{statuses:?}");
    }
}

#[tokio::test]
async fn a_quiet_stream_stays_open() {
    let bot = clock_bot();
    // A stream with nothing to say for longer than a request head may take is still
    // open (it is a request being answered, kept alive by comments every 15 s).
    let server = Server::start(bot.path(), &["--header-timeout", "1"]).await;
    let mut events = Events::open(&server).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    post(
        &server,
        "/dev/api/message",
        json!({"from": USER, "text": "hi"}),
    )
    .await;
    events.message_text("What is your name?").await;
}

#[tokio::test]
async fn a_quiet_stream_outlives_a_short_idle_timeout() {
    let bot = clock_bot();
    // Connections without I/O for 2 s are closed; the stream's keep-alives come often
    // enough that it is still the same open stream when the bot speaks 5 s later.
    let server = Server::start(bot.path(), &["--idle-timeout", "2"]).await;
    let mut events = Events::open(&server).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    post(
        &server,
        "/dev/api/message",
        json!({"from": USER, "text": "hi"}),
    )
    .await;
    events.message_text("What is your name?").await;
}

#[tokio::test]
async fn every_message_form_reaches_the_bot_and_anything_else_is_refused() {
    let bot = pizza();
    let server = Server::start(bot.path(), &[]).await;
    let mut events = Events::open(&server).await;
    let forms = [
        json!({"from": USER, "text": "hi"}),
        json!({"from": USER, "reply": {"id": "margherita", "title": "Margherita", "kind": "list"}}),
        json!({"from": USER, "reply": {"id": "medium"}}),
        json!({"from": USER, "text": "2"}),
        json!({"from": USER, "location": {"latitude": 52.52, "longitude": 13.41, "name": "Home", "address": "Alexanderplatz 1"}}),
        json!({"from": USER, "media": {"kind": "image", "link": "https://example.com/pizza.jpg", "caption": "this one"}}),
    ];
    for body in forms {
        let (status, sent) = post(&server, "/dev/api/message", body.clone()).await;
        assert_eq!(status, 202, "{body}: {sent}");
        let id = sent["id"].as_str().unwrap().to_string();
        let inbound = events
            .until("its inbound", |e| {
                e.event == "inbound" && e.data["id"] == id.as_str()
            })
            .await;
        let mut expected = body.as_object().unwrap().clone();
        expected.remove("from");
        if let Some(media) = expected.get_mut("media") {
            // The media id the bot saw is made up by the server.
            assert!(inbound.data["payload"]["media"]["id"].is_string());
            media["id"] = inbound.data["payload"]["media"]["id"].clone();
        }
        assert_eq!(inbound.data["payload"], Value::Object(expected));
        // Each is answered in its turn, in order.
        events
            .until("its turn", |e| {
                e.event == "turn" && e.data["message_id"] == id.as_str()
            })
            .await;
    }
    // The location was understood: the order goes to its confirmation.
    events
        .until("the order confirmation question", |e| {
            e.event == "message"
                && payload_text(&e.data["payload"])
                    .is_some_and(|t| t.starts_with("Your order: 2 × Margherita (medium)"))
        })
        .await;

    let refused = [
        json!({"text": "hi"}),
        json!({"from": "+49 30 123", "text": "hi"}),
        json!({"from": USER}),
        json!({"from": USER, "text": "hi", "reply": {"id": "x"}}),
        json!({"from": USER, "text": ""}),
        json!({"from": USER, "reply": "margherita"}),
        json!({"from": USER, "location": {"latitude": 100, "longitude": 0}}),
        json!({"from": USER, "media": {"kind": "image", "link": "javascript:alert(1)"}}),
        json!({"from": USER, "sticker": {"link": "https://example.com/s.webp"}}),
    ];
    for body in refused {
        let (status, answer) = post(&server, "/dev/api/message", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_body", "{body}");
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    }
    let r = client()
        .post(url(&server, "/dev/api/message"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (status, _) = get(&server, "/dev/api/users/not-a-number/history").await;
    assert_eq!(status, 400);
    // The older /dev/message still answers with the turn's messages, and the page sees it.
    let (status, report) = post(
        &server,
        "/dev/message",
        json!({"from": "15550002222", "text": "hi"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(report["sent"].as_array().unwrap().len(), 2);
    events
        .until("the other user's inbound", |e| {
            e.event == "inbound" && e.data["user"] == "15550002222"
        })
        .await;
}

#[tokio::test]
async fn reset_starts_the_user_afresh() {
    let bot = clock_bot();
    let server = Server::start(bot.path(), &[]).await;
    let mut events = Events::open(&server).await;
    post(
        &server,
        "/dev/api/message",
        json!({"from": USER, "text": "hi"}),
    )
    .await;
    events.message_text("What is your name?").await;
    let (status, reset) = post(&server, &format!("/dev/api/users/{USER}/reset"), json!({})).await;
    assert_eq!(status, 200, "{reset}");
    assert_eq!(reset["sessions_erased"], 1);
    let e = events.named("reset").await;
    assert_eq!(e.data["user"], USER);
    let (_, history) = get(&server, &format!("/dev/api/users/{USER}/history")).await;
    assert_eq!(history, json!([]));
    // The session is gone: "Ada" is not an answer to the name question any more, and
    // starts a conversation in the entry flow.
    post(
        &server,
        "/dev/api/message",
        json!({"from": USER, "text": "Ada"}),
    )
    .await;
    let next = events.named("message").await;
    assert_eq!(
        payload_text(&next.data["payload"]),
        Some("What is your name?")
    );
}

/// Sends `message` (a flow that says "one", then pauses 3 s), and once the pause shows
/// as typing, moves the clock 25 hours on: the next message finds the window closed.
async fn close_the_window_in_the_pause(server: &Server, events: &mut Events, message: Value) {
    post(server, "/dev/api/message", message).await;
    events.message_text("one").await;
    events
        .until("typing during the pause", |e| {
            e.event == "typing" && e.data["on"] == true
        })
        .await;
    let (status, _) = post(server, "/dev/api/clock", json!({"advance_secs": 25 * 3600})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_message_refused_outside_the_window_shows_failed_and_is_not_recorded() {
    let bot = clock_bot();
    let server = Server::start(bot.path(), &[]).await;
    let mut events = Events::open(&server).await;
    // 24 hours pass during the pause: the local sink refuses the node's text (131047)
    // and it has no on_window_closed template.
    close_the_window_in_the_pause(&server, &mut events, json!({"from": USER, "text": "lost"}))
        .await;
    let refused = events.message_text("never seen").await;
    let id = refused.data["wamid"].as_str().unwrap().to_string();
    assert!(id.starts_with("unsent."), "{id}");
    assert_eq!(refused.data["node"], "never");
    let failed = events
        .until("the failed status", |e| {
            e.event == "status" && e.data["wamid"] == id.as_str()
        })
        .await;
    assert_eq!(failed.data["status"], "failed");
    let why = failed.data["error"].as_str().unwrap();
    assert!(why.starts_with("131047"), "{why}");

    // The chat's history says the same after a reload of the page.
    let (status, history) = get(&server, &format!("/dev/api/users/{USER}/history")).await;
    assert_eq!(status, 200);
    let entry = history
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["wamid"] == id.as_str())
        .unwrap_or_else(|| panic!("{history:#}"));
    assert_eq!(entry["status"], "failed", "{entry:#}");

    // A recorded test leaves it out, and says so.
    let (status, recorded) = post(
        &server,
        "/dev/api/record",
        json!({"user": USER, "name": "lost"}),
    )
    .await;
    assert_eq!(status, 200, "{recorded}");
    let yaml = recorded["yaml"].as_str().unwrap();
    assert!(yaml.contains("one"), "{yaml}");
    assert!(!yaml.contains("never seen"), "{yaml}");
    assert!(
        recorded["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("WhatsApp refused")),
        "{recorded}"
    );
}

#[tokio::test]
async fn the_clock_expires_sessions_and_closes_the_window() {
    let bot = clock_bot();
    let server = Server::start(bot.path(), &[]).await;
    let mut events = Events::open(&server).await;

    // Session expiry: 31 simulated minutes after the question, the answer is a new
    // conversation's first message.
    post(
        &server,
        "/dev/api/message",
        json!({"from": USER, "name": "Ada", "text": "hi"}),
    )
    .await;
    events.message_text("What is your name?").await;
    let (status, clock) = post(&server, "/dev/api/clock", json!({"advance_secs": 31 * 60})).await;
    assert_eq!(status, 200, "{clock}");
    assert_eq!(clock["clock_offset_secs"], 31 * 60);
    let e = events.named("clock").await;
    assert_eq!(e.data["clock_offset_secs"], 31 * 60);
    let (_, info) = get(&server, "/dev/api/info").await;
    assert_eq!(info["clock_offset_secs"], 31 * 60);
    post(
        &server,
        "/dev/api/message",
        json!({"from": USER, "name": "Ada", "text": "Ada"}),
    )
    .await;
    let next = events.named("message").await;
    assert_eq!(
        payload_text(&next.data["payload"]),
        Some("What is your name?"),
        "the session should have expired"
    );
    // Within the timeout the answer is an answer.
    post(
        &server,
        "/dev/api/message",
        json!({"from": USER, "name": "Ada", "text": "Ada"}),
    )
    .await;
    events.message_text("Nice to meet you, Ada").await;

    // The window: the second message of `late` waits 3 s (shown as typing); the clock
    // passes 24 hours meanwhile, so the local sink refuses it (131047) and the node's
    // template goes out instead.
    close_the_window_in_the_pause(
        &server,
        &mut events,
        json!({"from": USER, "name": "Ada", "text": "late"}),
    )
    .await;
    // "typing…" stops as the message arrives.
    let off = events.named("typing").await;
    assert_eq!(off.data["on"], false);
    let instead = events.named("message").await;
    assert_eq!(
        instead.data["payload"]["type"], "template",
        "{:#}",
        instead.data
    );
    assert_eq!(instead.data["payload"]["template"]["name"], "late_update");
    assert_eq!(instead.data["node"], "two");

    // Back to the real clock.
    let (status, clock) = post(&server, "/dev/api/clock", json!({"reset": true})).await;
    assert_eq!(status, 200);
    assert_eq!(clock["clock_offset_secs"], 0);
    for body in [
        json!({}),
        json!({"advance_secs": 1, "reset": true}),
        json!({"advance_secs": "1h"}),
        json!({"advance_secs": i64::MAX}),
    ] {
        let (status, _) = post(&server, "/dev/api/clock", body.clone()).await;
        assert_eq!(status, 400, "{body}");
    }
}

#[tokio::test]
async fn the_graph_names_each_node() {
    let bot = pizza();
    let server = Server::start(bot.path(), &[]).await;
    let (status, graph) = get(&server, "/dev/api/graph?flow=main").await;
    assert_eq!(status, 200);
    let chart = graph["mermaid"].as_str().unwrap();
    assert!(chart.starts_with("flowchart"), "{chart}");
    let welcome = graph["nodes"]["main.welcome"].as_str().unwrap();
    assert!(
        chart.contains(&format!("{welcome}[")) || chart.contains(&format!("{welcome}(")),
        "{welcome} not in {chart}"
    );
    assert!(graph["nodes"].get("fallback.sorry").is_none());
    let (status, all) = get(&server, "/dev/api/graph").await;
    assert_eq!(status, 200);
    assert!(all["nodes"].as_object().unwrap().len() > graph["nodes"].as_object().unwrap().len());
    let (status, body) = get(&server, "/dev/api/graph?flow=nope").await;
    assert_eq!(status, 404);
    assert!(body["error"]["message"].as_str().unwrap().contains("main"));
}

#[tokio::test]
async fn a_broken_edit_is_announced_and_its_fix_too() {
    let bot = clock_bot();
    let server = Server::start(bot.path(), &[]).await;
    let mut events = Events::open(&server).await;
    let flow = bot.path().join("flows/main.yaml");
    let good = std::fs::read_to_string(&flow).unwrap();
    std::fs::write(
        &flow,
        good.replace("save: name", "save: name\n    next: nowhere"),
    )
    .unwrap();
    let broken = events
        .until("the failed reload", |e| {
            e.event == "reload"
                && e.data["diagnostics"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|d| d["code"] == "unknown_node"))
        })
        .await;
    assert_eq!(broken.data["ok"], false);
    assert_eq!(broken.data["version"], 1);
    let d = &broken.data["diagnostics"][0];
    assert_eq!(d["file"], "flows/main.yaml", "{d}");
    assert_eq!(d["severity"], "error");
    assert!(d["line"].as_u64().unwrap() > 1);
    assert!(d["code"].as_str().unwrap().starts_with("unknown_"), "{d}");
    assert!(!d["message"].as_str().unwrap().is_empty());
    let (_, info) = get(&server, "/dev/api/info").await;
    assert_eq!(info["bots"][0]["diagnostics"], broken.data["diagnostics"]);
    // The old bot still answers meanwhile.
    post(
        &server,
        "/dev/api/message",
        json!({"from": USER, "text": "hi"}),
    )
    .await;
    events.message_text("What is your name?").await;
    std::fs::write(&flow, good.replace("Nice to meet you", "Welcome")).unwrap();
    let fixed = events
        .until("the good reload", |e| {
            e.event == "reload" && e.data["ok"] == true
        })
        .await;
    assert_eq!(fixed.data["ok"], true);
    assert_eq!(fixed.data["version"], 2);
    assert_eq!(fixed.data["diagnostics"], json!([]));
    let (_, info) = get(&server, "/dev/api/info").await;
    assert_eq!(info["bots"][0]["version"], 2);
    assert_eq!(info["bots"][0]["diagnostics"], json!([]));
}

#[tokio::test]
async fn a_recorded_conversation_passes_parlance_test() {
    let bot = pizza();
    let server = Server::start(bot.path(), &[]).await;
    let mut events = Events::open(&server).await;
    let say = |body: Value| {
        let server = &server;
        async move {
            let mut body = body;
            body["from"] = json!(USER);
            body["name"] = json!("Maria");
            let (status, sent) = post(server, "/dev/api/message", body).await;
            assert_eq!(status, 202, "{sent}");
            sent["id"].as_str().unwrap().to_string()
        }
    };
    say(json!({"text": "hi"})).await;
    events
        .until("the list", |e| {
            e.event == "message" && e.data["node"] == "choose_pizza"
        })
        .await;
    say(json!({"reply": {"id": "diavola", "title": "Diavola", "kind": "list"}})).await;
    events
        .until("the sizes", |e| {
            e.event == "message" && e.data["node"] == "choose_size"
        })
        .await;
    say(json!({"reply": {"id": "large"}})).await;
    events
        .until("the quantity question", |e| {
            e.event == "message" && e.data["node"] == "ask_qty"
        })
        .await;
    // The location is sent at once after the quantity: the replies to the quantity
    // still wait behind message_delay_ms, and the test keeps each with its turn.
    say(json!({"text": "3"})).await;
    say(json!({"location": {"latitude": 52.5219, "longitude": 13.4132, "name": "Home"}})).await;
    events
        .until("the confirmation question", |e| {
            e.event == "message"
                && payload_text(&e.data["payload"])
                    .is_some_and(|t| t.starts_with("Your order: 3 × Diavola (large)"))
        })
        .await;
    say(json!({"text": "yes"})).await;
    events
        .until("the goodbye", |e| {
            e.event == "message"
                && payload_text(&e.data["payload"]).is_some_and(|t| t.starts_with("Grazie Maria!"))
        })
        .await;

    // A look first: nothing written.
    let (status, look) = post(
        &server,
        "/dev/api/record",
        json!({"user": USER, "name": "Orders three large Diavola!"}),
    )
    .await;
    assert_eq!(status, 200, "{look}");
    assert_eq!(look["path"], Value::Null);
    assert_eq!(look["passes"], true, "{}", look["failure"]);
    let yaml = look["yaml"].as_str().unwrap();
    assert!(
        yaml.contains("name: \"Orders three large Diavola!\""),
        "{yaml}"
    );
    assert!(yaml.contains("  - user: { reply: \"diavola\" }"), "{yaml}");
    assert!(yaml.contains("  - bot: { ask: "), "{yaml}");
    assert!(
        yaml.contains("buttons: { body: \"One Diavola, coming up! Which size?\""),
        "{yaml}"
    );
    assert!(
        !bot.path()
            .join("tests/orders_three_large_diavola.yaml")
            .exists()
    );

    let (status, written) = post(
        &server,
        "/dev/api/record",
        json!({"user": USER, "name": "Orders three large Diavola!", "write": true}),
    )
    .await;
    assert_eq!(status, 200, "{written}");
    assert_eq!(written["path"], "tests/orders_three_large_diavola.yaml");
    let file = bot.path().join("tests/orders_three_large_diavola.yaml");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), yaml);

    // The real `parlance test` runs it (and the example's own tests) and passes.
    let out = parlance().arg("test").arg(bot.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ok   Orders three large Diavola! ("),
        "{stdout}"
    );

    // Once there, it stays unless overwritten.
    let (status, again) = post(
        &server,
        "/dev/api/record",
        json!({"user": USER, "name": "orders three large diavola", "write": true}),
    )
    .await;
    assert_eq!(status, 409, "{again}");
    let (status, _) = post(
        &server,
        "/dev/api/record",
        json!({"user": USER, "name": "orders three large diavola", "write": true, "overwrite": true}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("name: \"orders three large diavola\"")
    );

    // A name is never a path.
    for name in [
        "../../escaped",
        "/tmp/escaped",
        "..\\escaped",
        "tests/../../x",
    ] {
        let (status, answer) = post(
            &server,
            "/dev/api/record",
            json!({"user": USER, "name": name, "write": true}),
        )
        .await;
        assert_eq!(status, 400, "{name}: {answer}");
    }
    assert!(!bot.path().parent().unwrap().join("escaped.yaml").exists());
    assert!(!Path::new("/tmp/escaped.yaml").exists());
    // Nothing said yet: nothing to record.
    let (status, _) = post(
        &server,
        "/dev/api/record",
        json!({"user": "15559999999", "name": "empty"}),
    )
    .await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn a_server_with_credentials_has_no_simulator() {
    let bot = bot_folder(&[
        (
            "parlance.yaml",
            "bot: { name: real, entry: main }\nwhatsapp: { access_token: t, phone_number_id: \"123\", app_secret: s, verify_token: v }\nsession: { store: \"memory://\" }\n",
        ),
        ("flows/main.yaml", "id: main\nnodes:\n  hi:\n    say: hi\n"),
    ]);
    let server = Server::start(bot.path(), &[]).await;
    for path in [
        "/",
        "/dev",
        "/dev/assets/index.html",
        "/dev/api/info",
        "/dev/api/events",
        "/dev/api/graph",
        "/dev/api/users/15550001111/history",
    ] {
        let r = client().get(url(&server, path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let body = r.text().await.unwrap();
        assert!(body.contains("dev.enabled: true"), "{path}: {body}");
    }
    for path in [
        "/dev/api/message",
        "/dev/api/clock",
        "/dev/api/record",
        "/dev/api/users/15550001111/reset",
        "/dev/api/users/15550001111/read",
    ] {
        let (status, body) = post(&server, path, json!({"from": USER, "text": "hi"})).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "dev_off", "{path}");
    }
}

/// `dev.enabled: true` beside a real number: the page is served, its data routes open
/// only with the bot's key, simulated users talk to a local twin (`dev-123`) whose
/// replies never reach the Graph API, and the real number goes on answering webhooks.
#[tokio::test]
async fn dev_enabled_beside_a_real_number_is_a_local_twin_behind_the_key() {
    const KEY: &str = "k3y-of-the-bot";
    let graph = FakeGraph::start().await.unwrap();
    let bot = bot_folder(&[
        (
            "parlance.yaml",
            &format!(
                "bot: {{ name: real, entry: main }}\nwhatsapp: {{ access_token: t, phone_number_id: \"123\", app_secret: s3cret, verify_token: v, base_url: \"{}\" }}\nsession: {{ store: \"memory://\" }}\napi: {{ key: {KEY} }}\ndev: {{ enabled: true }}\n",
                graph.base_url()
            ),
        ),
        (
            "flows/main.yaml",
            "id: main\nnodes:\n  hi:\n    say: \"Hello {{ contact.name }}\"\n",
        ),
    ]);
    let server = Server::start(bot.path(), &[]).await;

    // The page and its files hold nothing of the bot: served without the key.
    for path in ["/dev", "/dev/assets/app.js"] {
        let r = client().get(url(&server, path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // Its data routes: 401 without the key or with a wrong one.
    use reqwest::Method;
    for key in [None, Some("not-the-key")] {
        let (status, body) = keyed(&server, Method::GET, "/dev/api/info", key, None).await;
        assert_eq!(status, 401, "{key:?}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
        let (status, _) = keyed(
            &server,
            Method::POST,
            "/dev/api/message",
            key,
            Some(json!({"from": USER, "text": "hi"})),
        )
        .await;
        assert_eq!(status, 401, "{key:?}");
        let (status, _) = keyed(
            &server,
            Method::POST,
            "/dev/message",
            key,
            Some(json!({"from": USER, "text": "hi"})),
        )
        .await;
        assert_eq!(status, 401, "{key:?}");
    }
    let r = client()
        .get(url(&server, "/dev/api/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // With the key: the twin.
    let (status, info) = keyed(&server, Method::GET, "/dev/api/info", Some(KEY), None).await;
    assert_eq!(status, 200, "{info}");
    let bots = info["bots"].as_array().unwrap();
    assert_eq!(bots.len(), 1, "{info}");
    assert_eq!(bots[0]["phone_number_id"], "dev-123");
    assert_eq!(bots[0]["writes_tests"], false);

    let mut events = Events::open_with(&server, Some(KEY)).await;
    let (status, _) = keyed(
        &server,
        Method::POST,
        "/dev/api/message",
        Some(KEY),
        Some(json!({"from": USER, "name": "Grace", "text": "hi"})),
    )
    .await;
    assert_eq!(status, 202);
    let message = events.message_text("Hello Grace").await;
    assert_eq!(message.data["phone_number_id"], "dev-123");
    assert!(
        message.data["wamid"]
            .as_str()
            .unwrap()
            .starts_with("wamid.local."),
        "{message:?}"
    );

    // A recorded test is downloaded, never written into the server's bot folder.
    let (status, body) = keyed(
        &server,
        Method::POST,
        "/dev/api/record",
        Some(KEY),
        Some(json!({"user": USER, "name": "greets", "write": true})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "not_local");
    assert!(!bot.path().join("tests/greets.yaml").exists());
    let (status, body) = keyed(
        &server,
        Method::POST,
        "/dev/api/record",
        Some(KEY),
        Some(json!({"user": USER, "name": "greets"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["passes"], true, "{body}");

    // The twin's turn is in the trace (the API, with the same key).
    let (status, trace) = keyed(
        &server,
        Method::GET,
        &format!("/api/v1/users/{USER}/trace"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "{trace}");
    assert_eq!(trace["numbers"][0]["phone_number_id"], "dev-123");

    // Nothing of it reached the Graph API...
    assert!(graph.received().is_empty(), "{:?}", graph.received());
    // ...while the real number answers a real, signed webhook through it.
    let webhook = support::text_webhook("123", "15557654321", "wamid.real.1", "hi");
    let status = support::post_signed(&client(), server.port, "s3cret", &webhook).await;
    assert_eq!(status, 200);
    let sent = graph.wait_for_messages(1).await;
    assert_eq!(sent[0]["to"], "15557654321");
    assert_eq!(sent[0]["text"]["body"], "Hello Ada");
    // The simulated user never talked to the real number.
    assert!(sent.iter().all(|m| m["to"] != USER), "{sent:?}");
}

/// Beside credentials the simulator needs the key: `dev.enabled` without `api.key` is
/// a load error naming it, so it is never served open.
#[test]
fn dev_enabled_beside_credentials_without_a_key_does_not_load() {
    let bot = bot_folder(&[
        (
            "parlance.yaml",
            "whatsapp: { access_token: t, phone_number_id: \"123\", app_secret: s, verify_token: v }\ndev: { enabled: true }\n",
        ),
        ("flows/main.yaml", "id: main\nnodes:\n  hi:\n    say: hi\n"),
    ]);
    let out = parlance().arg("validate").arg(bot.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}{stderr}");
    let said = format!("{stdout}{stderr}");
    assert!(said.contains("parlance.yaml:"), "{said}");
    assert!(said.contains("needs api.key"), "{said}");
}

/// A local bot's simulator is open, `api.key` or not (its API stays behind the key; the
/// page asks for it); `dev.enabled: false` turns the simulator off in local mode.
#[tokio::test]
async fn a_local_bot_is_open_and_dev_disabled_is_off() {
    use reqwest::Method;
    let keyed_bot = bot_folder(&[
        (
            "parlance.yaml",
            "session: { store: \"memory://\" }\napi: { key: local-key }\n",
        ),
        ("flows/main.yaml", "id: main\nnodes:\n  hi:\n    say: hi\n"),
    ]);
    let server = Server::start(keyed_bot.path(), &[]).await;
    for key in [None, Some("local-key")] {
        let (status, info) = keyed(&server, Method::GET, "/dev/api/info", key, None).await;
        assert_eq!(status, 200, "{key:?}: {info}");
        assert_eq!(info["bots"][0]["phone_number_id"], "local");
        assert_eq!(info["bots"][0]["writes_tests"], true);
    }
    let (status, _) = keyed(&server, Method::GET, "/dev/api/info", Some("wrong"), None).await;
    assert_eq!(status, 401);
    // The API is the bot's: its key.
    let path = format!("/api/v1/users/{USER}/trace");
    let (status, _) = keyed(&server, Method::GET, &path, None, None).await;
    assert_eq!(status, 401);
    drop(server);

    let off_bot = bot_folder(&[
        (
            "parlance.yaml",
            "session: { store: \"memory://\" }\ndev: { enabled: false }\n",
        ),
        ("flows/main.yaml", "id: main\nnodes:\n  hi:\n    say: hi\n"),
    ]);
    let server = Server::start(off_bot.path(), &[]).await;
    for path in ["/dev", "/dev/api/info"] {
        let (status, body) = get(&server, path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "dev_off", "{path}");
    }
}
