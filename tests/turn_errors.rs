//! Turn errors in `serve`, end to end: the real server, signed webhooks, the fake Graph
//! API. A turn that fails or runs away is never silent: the user gets the fallback flow,
//! and the log says why and where (the node's file:line) without the user's whole phone
//! number.

use parlance::cli::LogFormat;
use parlance::cli::serve::{self, Options};
use parlance::server::listen::{self, Limits};
use parlance::testing::fake_graph::FakeGraph;
use parlance::whatsapp::signature;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::{Arc, Mutex};

const SECRET: &str = "test-app-secret";
const NUMBER: &str = "1001";
const USER: &str = "4915112345678";

/// Everything the server logs while a test runs.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A bot whose `loop` flow would say 1 to 50 in one turn, whose `price` flow reads a
/// variable only one branch saves, and whose fallback flow says sorry.
fn write_bot(dir: &Path, graph: &FakeGraph) {
    std::fs::create_dir_all(dir.join("flows")).unwrap();
    std::fs::write(
        dir.join("parlance.yaml"),
        format!(
            "bot: {{ entry: loop, fallback: sorry }}
whatsapp:
  access_token: test-token
  phone_number_id: \"{NUMBER}\"
  verify_token: let-me-in
  app_secret: {SECRET}
  base_url: {}
session: {{ store: \"memory://\" }}
",
            graph.base_url()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/loop.yaml"),
        "triggers:
  - keywords: [loop]
nodes:
  count:
    set: { n: \"vars.n | default(0) + 1\" }
  tell:
    say: \"{{ vars.n }}\"
    next:
      - if: vars.n < 50
        then: count
      - else: end
",
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/price.yaml"),
        "triggers:
  - keywords: [price]
nodes:
  how:
    buttons:
      body: \"By the piece?\"
      buttons:
        - { id: pieces, title: \"Pieces\" }
        - { id: box, title: \"A box\" }
    save: how
    next:
      - if: vars.how == \"pieces\"
        then: ask_qty
      - else: tell
  ask_qty:
    ask: { text: \"How many?\", expect: integer }
    save: quantity
  tell:
    say: \"{{ vars.quantity }} pieces.\"
",
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/sorry.yaml"),
        "nodes:\n  sorry:\n    say: \"Sorry.\"\n",
    )
    .unwrap();
}

async fn start(dir: &Path) -> std::net::SocketAddr {
    let options = Options {
        dirs: vec![dir.to_path_buf()],
        bind: "127.0.0.1".into(),
        port: 0,
        max_body_bytes: parlance::server::DEFAULT_MAX_BODY_BYTES,
        limits: Limits::default(),
        log_format: LogFormat::Text,
        delivery: Default::default(),
    };
    let (state, _) = serve::build(&options).await.expect("the bot loads");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let app = parlance::server::app(state);
        let _ = listen::serve(listener, app, Limits::default(), std::future::pending()).await;
    });
    addr
}

fn now() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string()
}

async fn send(addr: std::net::SocketAddr, id: &str, message: Value) {
    let mut message = message;
    message["from"] = json!(USER);
    message["id"] = json!(id);
    message["timestamp"] = json!(now());
    let webhook = json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "WABA", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550000000", "phone_number_id": NUMBER },
            "contacts": [{ "profile": { "name": "Ada" }, "wa_id": USER }],
            "messages": [message]
        }}]}]
    });
    let body = serde_json::to_vec(&webhook).unwrap();
    let status = reqwest::Client::new()
        .post(format!("http://{addr}/webhook"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature::sign(SECRET, &body))
        .body(body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}

fn bodies(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["text"]["body"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Captures the logs of everything this test's runtime runs. A current-thread runtime
/// runs the server's tasks on this thread, where the subscriber is the default.
fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    (logs.clone(), tracing::subscriber::set_default(subscriber))
}

#[tokio::test(flavor = "current_thread")]
async fn a_runaway_turn_sends_ten_messages_then_the_fallback_and_logs_its_path() {
    let (logs, _guard) = capture();
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph);
    let addr = start(dir.path()).await;
    send(
        addr,
        "wamid.loop.1",
        json!({ "type": "text", "text": { "body": "loop" } }),
    )
    .await;
    let sent = graph.wait_for_messages(11).await;
    assert_eq!(
        bodies(&sent),
        ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "Sorry."]
    );
    // The fallback's message went out after the error was logged.
    let log = logs.text();
    assert!(
        log.contains("turn error number=1001 to=…5678 problem=flows/loop.yaml:6:3: loop.tell: stopped before sending more than 10 messages in one turn (limits.messages_per_turn); path: loop.count → loop.tell → loop.count → loop.tell → loop.count → … 12 more … → loop.tell → loop.count → loop.tell → loop.count → loop.tell; the fallback flow takes over"),
        "{log}"
    );
    assert!(!log.contains(USER), "{log}");
}

#[tokio::test(flavor = "current_thread")]
async fn an_undefined_variable_is_logged_by_name_and_the_fallback_answers() {
    let (logs, _guard) = capture();
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph);
    let addr = start(dir.path()).await;
    send(
        addr,
        "wamid.price.1",
        json!({ "type": "text", "text": { "body": "price" } }),
    )
    .await;
    graph.wait_for_messages(1).await;
    send(
        addr,
        "wamid.price.2",
        json!({ "type": "interactive", "interactive": {
            "type": "button_reply", "button_reply": { "id": "box", "title": "A box" }
        } }),
    )
    .await;
    let sent = graph.wait_for_messages(2).await;
    assert_eq!(bodies(&sent[1..]), ["Sorry."]);
    let log = logs.text();
    assert!(
        log.contains("turn error number=1001 to=…5678 problem=flows/price.yaml:18:3: price.tell: `vars.quantity` is undefined; the fallback flow takes over"),
        "{log}"
    );
    assert!(!log.contains(USER), "{log}");
}
