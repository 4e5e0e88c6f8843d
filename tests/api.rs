//! The `/api/v1` HTTP API end to end: the real server on a loopback port, real HTTP
//! requests, a real SQLite file (Redis where `REDIS_URL` answers), and the fake Graph
//! API receiving what the bot sends.

use parlance::cli::LogFormat;
use parlance::cli::serve::{self, Options};
use parlance::server::listen::{self, Limits};
use parlance::testing::fake_graph::FakeGraph;
use parlance::whatsapp::signature;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;

const SECRET: &str = "test-app-secret";
const NUMBER: &str = "1001";
const KEY: &str = "api-key-1001";

/// A bot that echoes (with `message.data.order` when an inject carries data) and has
/// a `promo` flow for notify to start. `store` is `session.store`; `key` its api.key.
fn write_bot(dir: &Path, graph: Option<&FakeGraph>, key: Option<&str>, store: &str) {
    std::fs::create_dir_all(dir.join("flows")).unwrap();
    let whatsapp = match graph {
        Some(graph) => format!(
            "whatsapp:
  access_token: test-token
  phone_number_id: \"{NUMBER}\"
  verify_token: let-me-in
  app_secret: {SECRET}
  message_delay_ms: 0
  base_url: {}
",
            graph.base_url()
        ),
        None => String::new(),
    };
    let api = key.map_or_else(String::new, |k| format!("api: {{ key: {k} }}\n"));
    std::fs::write(
        dir.join("parlance.yaml"),
        format!("bot: {{ entry: echo }}\n{whatsapp}session: {{ store: \"{store}\" }}\n{api}"),
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/echo.yaml"),
        "nodes:\n  echo:\n    say: \"echo {{ message.text | default(message.type) }}{{ ' ' ~ message.data.order if message.data is defined else '' }}\"\n    next: end\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/promo.yaml"),
        "nodes:\n  offer:\n    say: \"a flow says hi\"\n    next: end\n  later:\n    say: \"a later node\"\n    next: end\n",
    )
    .unwrap();
}

async fn start(dirs: &[&Path]) -> SocketAddr {
    let limits = Limits::default();
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

fn sqlite() -> &'static str {
    "sqlite://data/test.db"
}

async fn call(
    addr: SocketAddr,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Response {
    let mut req = Client::new().request(method, format!("http://{addr}{path}"));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> Response {
    call(addr, reqwest::Method::POST, path, Some(KEY), Some(body)).await
}

/// The error answer's status and code, checking its shape.
async fn error_of(r: Response) -> (StatusCode, String, String) {
    let status = r.status();
    let body: Value = r.json().await.expect("a JSON error body");
    let code = body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_string();
    let message = body["error"]["message"]
        .as_str()
        .expect("error.message")
        .to_string();
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    (status, code, message)
}

async fn user_writes(addr: SocketAddr, from: &str, id: &str, text: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let webhook = json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "WABA", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550000000", "phone_number_id": NUMBER },
            "contacts": [{ "profile": { "name": "Ada" }, "wa_id": from }],
            "messages": [{ "from": from, "id": id, "timestamp": now, "type": "text", "text": { "body": text } }]
        }}]}]
    });
    let body = serde_json::to_vec(&webhook).unwrap();
    let r = Client::new()
        .post(format!("http://{addr}/webhook"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature::sign(SECRET, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

fn texts(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            m["text"]["body"]
                .as_str()
                .map_or_else(|| format!("<{}>", m["type"]), str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn without_a_key_the_api_is_off_and_says_how_to_turn_it_on() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), Some(&graph), None, sqlite());
    let addr = start(&[dir.path()]).await;
    for (method, path) in [
        (reqwest::Method::GET, "/api/v1/users/15550001111"),
        (reqwest::Method::POST, "/api/v1/inject"),
    ] {
        let r = call(addr, method, path, Some("anything"), Some(json!({}))).await;
        let (status, code, message) = error_of(r).await;
        assert_eq!((status.as_u16(), code.as_str()), (403, "api_off"), "{path}");
        assert!(message.contains("set api.key"), "{message}");
    }
    // The document is open to anyone.
    let doc = call(addr, reqwest::Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(doc.status(), 200);
    let doc: Value = doc.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_401_with_a_bearer_challenge() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), Some(&graph), Some(KEY), sqlite());
    let addr = start(&[dir.path()]).await;
    for key in [None, Some("wrong"), Some("")] {
        let r = call(
            addr,
            reqwest::Method::GET,
            "/api/v1/users/15550001111",
            key,
            None,
        )
        .await;
        assert_eq!(
            r.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.starts_with("Bearer")),
            Some(true),
            "{key:?}"
        );
        let (status, code, _) = error_of(r).await;
        assert_eq!((status.as_u16(), code.as_str()), (401, "unauthorized"));
    }
    // The right key: nothing stored yet.
    let r = call(
        addr,
        reqwest::Method::GET,
        "/api/v1/users/15550001111",
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(error_of(r).await.1, "no_data");
}

#[tokio::test]
async fn in_local_mode_the_api_is_open_and_inject_answers_the_turn() {
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), None, None, sqlite());
    let addr = start(&[dir.path()]).await;
    // The user writes first (only the user opens the 24-hour window).
    let r = call(
        addr,
        reqwest::Method::POST,
        "/dev/message",
        None,
        Some(json!({ "from": "15550001111", "text": "hi" })),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = call(
        addr,
        reqwest::Method::POST,
        "/api/v1/inject",
        None,
        Some(json!({ "user": "15550001111", "data": { "order": "A-17" } })),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["done"], true);
    assert_eq!(texts(body["sent"].as_array().unwrap()), ["echo data A-17"]);
}

#[tokio::test]
async fn bad_requests_get_one_error_shape_naming_the_field() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), Some(&graph), Some(KEY), sqlite());
    let addr = start(&[dir.path()]).await;
    let url = format!("http://{addr}/api/v1/inject");
    let raw = |body: Vec<u8>, content_type: &'static str| {
        Client::new()
            .post(&url)
            .bearer_auth(KEY)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases: Vec<(Response, u16, &str, &str)> = vec![
        (
            raw(b"{\"user\": ".to_vec(), "application/json")
                .await
                .unwrap(),
            400,
            "malformed_json",
            "not JSON",
        ),
        (
            post(addr, "/api/v1/inject", json!({ "text": "hi" })).await,
            422,
            "invalid_body",
            "`user`",
        ),
        (
            post(
                addr,
                "/api/v1/inject",
                json!({ "user": "1555", "text": "hi", "colour": 1 }),
            )
            .await,
            422,
            "invalid_body",
            "`colour`",
        ),
        (
            post(
                addr,
                "/api/v1/inject",
                json!({ "user": 1555, "text": "hi" }),
            )
            .await,
            422,
            "invalid_body",
            "user: invalid type",
        ),
        (
            post(
                addr,
                "/api/v1/inject",
                json!({ "user": "1555", "text": null }),
            )
            .await,
            422,
            "invalid_body",
            "text: invalid type: null",
        ),
        (
            post(
                addr,
                "/api/v1/inject",
                json!({ "user": "1555", "text": "a", "reply": "b" }),
            )
            .await,
            422,
            "invalid_body",
            "exactly one of text, reply and data",
        ),
        (
            post(
                addr,
                "/api/v1/inject",
                json!({ "user": "+1 555", "text": "hi" }),
            )
            .await,
            400,
            "invalid_user",
            "E.164",
        ),
        (
            raw(vec![b' '; 100 * 1024], "application/json")
                .await
                .unwrap(),
            413,
            "body_too_large",
            "65536",
        ),
        (
            raw(b"{}".to_vec(), "text/plain").await.unwrap(),
            415,
            "unsupported_media_type",
            "application/json",
        ),
        (
            post(
                addr,
                "/api/v1/inject",
                json!({ "user": "1555", "text": "hi", "phone_number_id": "999" }),
            )
            .await,
            404,
            "unknown_number",
            "phone_number_id",
        ),
        (
            call(
                addr,
                reqwest::Method::GET,
                "/api/v1/nothing-here",
                Some(KEY),
                None,
            )
            .await,
            404,
            "no_route",
            "/api/v1/nothing-here",
        ),
        (
            call(
                addr,
                reqwest::Method::GET,
                "/api/v1/inject",
                Some(KEY),
                None,
            )
            .await,
            405,
            "method_not_allowed",
            "GET",
        ),
        (
            call(
                addr,
                reqwest::Method::GET,
                "/api/v1/users/abc",
                Some(KEY),
                None,
            )
            .await,
            400,
            "invalid_user",
            "digits",
        ),
    ];
    for (r, status, code, says) in cases {
        let (got_status, got_code, message) = error_of(r).await;
        assert_eq!(
            (got_status.as_u16(), got_code.as_str()),
            (status, code),
            "{message}"
        );
        assert!(
            message.contains(says),
            "{code}: {message} should say {says}"
        );
    }
}

#[tokio::test]
async fn an_injected_message_runs_in_order_with_the_users_and_leaves_the_window_shut() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), Some(&graph), Some(KEY), sqlite());
    let addr = start(&[dir.path()]).await;
    // A user who never wrote: an inject runs the flow but opens no window, so the
    // bot's free-form reply is not sent (the engine reports it), and a notify text
    // after it is refused.
    let r = post(
        addr,
        "/api/v1/inject",
        json!({ "user": "15550002222", "text": "hello" }),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["sent"], json!([]), "{body}");
    assert!(
        body["problems"][0]
            .as_str()
            .unwrap()
            .contains("24-hour window"),
        "{body}"
    );
    let (status, code, _) = error_of(
        post(
            addr,
            "/api/v1/notify",
            json!({ "user": "15550002222", "text": "hi" }),
        )
        .await,
    )
    .await;
    assert_eq!((status.as_u16(), code.as_str()), (422, "window_closed"));

    // A user who wrote: their message, then an inject, are answered in that order.
    user_writes(addr, "15550001111", "wamid.in.1", "first").await;
    let r = post(
        addr,
        "/api/v1/inject",
        json!({ "user": "15550001111", "text": "second" }),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["done"], true);
    assert_eq!(texts(body["sent"].as_array().unwrap()), ["echo second"]);
    let r = post(
        addr,
        "/api/v1/inject",
        json!({ "user": "15550001111", "reply": "yes" }),
    )
    .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(texts(body["sent"].as_array().unwrap()), ["echo yes"]);
    let sent = graph.wait_for_messages(3).await;
    assert_eq!(texts(&sent), ["echo first", "echo second", "echo yes"]);
    assert!(sent.iter().all(|m| m["to"] == "15550001111"));
    // No read receipt for what the user did not send: only the webhook's message.
    let reads: Vec<Value> = graph
        .received()
        .into_iter()
        .map(|r| r.body)
        .filter(|b| b.get("status").is_some())
        .collect();
    assert!(
        reads.iter().all(|r| r["message_id"] == "wamid.in.1"),
        "{reads:?}"
    );
}

#[tokio::test]
async fn notify_sends_text_in_the_window_templates_outside_and_starts_flows() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), Some(&graph), Some(KEY), sqlite());
    let addr = start(&[dir.path()]).await;
    user_writes(addr, "15550001111", "wamid.in.1", "hi").await;
    let r = post(
        addr,
        "/api/v1/notify",
        json!({ "user": "15550001111", "text": "your order shipped" }),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        texts(body["sent"].as_array().unwrap()),
        ["your order shipped"]
    );
    let r = post(
        addr,
        "/api/v1/notify",
        json!({ "user": "15550001111", "flow": { "flow": "promo", "node": "later" } }),
    )
    .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(texts(body["sent"].as_array().unwrap()), ["a later node"]);
    let r = post(
        addr,
        "/api/v1/notify",
        json!({ "user": "15550001111", "flow": "promo" }),
    )
    .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(texts(body["sent"].as_array().unwrap()), ["a flow says hi"]);
    let (status, code, message) = error_of(
        post(
            addr,
            "/api/v1/notify",
            json!({ "user": "15550001111", "flow": "nope" }),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status.as_u16(), code.as_str()),
        (404, "unknown_flow"),
        "{message}"
    );

    // Outside the window (a user who never wrote): text is refused, a template goes.
    let (status, code, message) = error_of(
        post(
            addr,
            "/api/v1/notify",
            json!({ "user": "15550003333", "text": "hello?" }),
        )
        .await,
    )
    .await;
    assert_eq!((status.as_u16(), code.as_str()), (422, "window_closed"));
    assert!(message.contains("template"), "{message}");
    let template = json!({
        "name": "order_update",
        "language": { "code": "en_US" },
        "components": [{ "type": "body", "parameters": [{ "type": "text", "text": "A-17" }] }]
    });
    let r = post(
        addr,
        "/api/v1/notify",
        json!({ "user": "15550003333", "template": template }),
    )
    .await;
    assert_eq!(r.status(), 200);
    let sent = graph.wait_for_messages(5).await;
    assert_eq!(
        texts(&sent),
        [
            "echo hi",
            "your order shipped",
            "a later node",
            "a flow says hi",
            "<\"template\">"
        ]
    );
    let last = &sent[4];
    assert_eq!(last["to"], "15550003333");
    assert_eq!(last["template"]["name"], "order_update");
    assert_eq!(last["template"]["language"]["code"], "en_US");
    assert_eq!(
        last["template"]["components"][0]["parameters"][0]["text"],
        "A-17"
    );
}

/// Rows naming `user` in every durable table of the SQLite file.
fn rows_about(db: &Path, user: &str) -> Vec<(String, i64)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut found = Vec::new();
    for (table, column) in [
        ("d_sessions", "user"),
        ("d_items", "user"),
        ("d_outbox", "user"),
        ("d_dead", "user"),
        ("d_timers", "user"),
        ("d_sent", "user"),
        ("d_statuses", "recipient"),
        ("d_quarantine", "user"),
    ] {
        let n: i64 = conn
            .query_row(
                &format!("SELECT COUNT(*) FROM {table} WHERE {column} = ?1"),
                [user],
                |r| r.get(0),
            )
            .unwrap();
        if n > 0 {
            found.push((table.to_string(), n));
        }
    }
    found
}

#[tokio::test]
async fn export_shows_the_session_and_erasure_leaves_nothing_in_sqlite() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), Some(&graph), Some(KEY), sqlite());
    let addr = start(&[dir.path()]).await;
    let user = "15550001111";
    user_writes(addr, user, "wamid.in.1", "hi").await;
    graph.wait_for_messages(1).await;
    let r = call(
        addr,
        reqwest::Method::GET,
        &format!("/api/v1/users/{user}"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let export: Value = r.json().await.unwrap();
    assert_eq!(export["user"], user);
    let number = &export["numbers"][0];
    assert_eq!(number["phone_number_id"], NUMBER);
    assert_eq!(number["session"]["contact"]["wa_id"], user);
    assert_eq!(number["session"]["contact"]["name"], "Ada");
    assert_eq!(number["sent"][0]["flow"], "echo");
    let db = dir.path().join("data/test.db");
    assert!(!rows_about(&db, user).is_empty());

    for _ in 0..2 {
        let r = call(
            addr,
            reqwest::Method::DELETE,
            &format!("/api/v1/users/{user}"),
            Some(KEY),
            None,
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(rows_about(&db, user), vec![]);
    let r = call(
        addr,
        reqwest::Method::GET,
        &format!("/api/v1/users/{user}"),
        Some(KEY),
        None,
    )
    .await;
    let (status, code, _) = error_of(r).await;
    assert_eq!((status.as_u16(), code.as_str()), (404, "no_data"));
}

#[tokio::test]
async fn erasure_on_redis_leaves_no_key_of_the_user() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let Ok(client) = redis::Client::open(url.as_str()) else {
        panic!("REDIS_URL is not a Redis URL: {url}");
    };
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers at REDIS_URL (the tests need one; see README)");
    let prefix = format!("apitest{}:", std::process::id());
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(
        dir.path(),
        Some(&graph),
        Some(KEY),
        &format!("{url}?prefix={prefix}"),
    );
    let addr = start(&[dir.path()]).await;
    let user = "15550004444";
    user_writes(addr, user, "wamid.redis.1", "hi").await;
    graph.wait_for_messages(1).await;
    let r = call(
        addr,
        reqwest::Method::GET,
        &format!("/api/v1/users/{user}"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = call(
        addr,
        reqwest::Method::DELETE,
        &format!("/api/v1/users/{user}"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*{user}*"))
        .query_async(&mut con)
        .await
        .unwrap();
    // Dedupe records stay (a redelivery must stay a duplicate) and expire by themselves.
    let left: Vec<&String> = keys.iter().filter(|k| !k.contains(":d:")).collect();
    assert!(left.is_empty(), "{left:?}");
    let r = call(
        addr,
        reqwest::Method::GET,
        &format!("/api/v1/users/{user}"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn several_numbers_need_phone_number_id_and_a_key_opens_only_its_own() {
    let graph = FakeGraph::start().await.unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_bot(a.path(), Some(&graph), Some(KEY), sqlite());
    write_bot(b.path(), Some(&graph), Some("other-key"), sqlite());
    let yaml = std::fs::read_to_string(b.path().join("parlance.yaml"))
        .unwrap()
        .replace("\"1001\"", "\"2002\"");
    std::fs::write(b.path().join("parlance.yaml"), yaml).unwrap();
    let addr = start(&[a.path(), b.path()]).await;
    let (status, code, _) = error_of(
        post(
            addr,
            "/api/v1/notify",
            json!({ "user": "1555", "text": "x", "phone_number_id": "2002" }),
        )
        .await,
    )
    .await;
    assert_eq!((status.as_u16(), code.as_str()), (403, "forbidden_number"));
    // Both bots with the same key: that key opens both, so the number must be named.
    let yaml = std::fs::read_to_string(b.path().join("parlance.yaml"))
        .unwrap()
        .replace("other-key", KEY);
    let c = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(c.path().join("flows")).unwrap();
    for f in ["flows/echo.yaml", "flows/promo.yaml"] {
        std::fs::copy(b.path().join(f), c.path().join(f)).unwrap();
    }
    std::fs::write(c.path().join("parlance.yaml"), yaml).unwrap();
    let a2 = tempfile::tempdir().unwrap();
    write_bot(a2.path(), Some(&graph), Some(KEY), sqlite());
    let addr = start(&[a2.path(), c.path()]).await;
    let (status, code, message) = error_of(
        post(
            addr,
            "/api/v1/inject",
            json!({ "user": "1555", "text": "x" }),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status.as_u16(), code.as_str()),
        (400, "phone_number_id_required")
    );
    assert!(message.contains("1001, 2002"), "{message}");
}

/// `docs/openapi.json` is what the code generates. To refresh it after changing the
/// API: `UPDATE_OPENAPI=1 cargo test --test api openapi` (or
/// `parlance openapi > docs/openapi.json`).
#[test]
fn the_checked_in_openapi_document_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    let generated = parlance::api::openapi_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo test --test api openapi` (or `parlance openapi > docs/openapi.json`) and commit it"
    );
}
