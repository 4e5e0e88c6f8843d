//! `http::Caller` against real axum servers on loopback: the saved shape, every failure
//! kind, redirects, the host policy, retries, what arrives at the server, and logs that
//! hold no secrets. Then `parlance chat` making a real call, and with `--no-http`.

mod support;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get};
use parlance::engine::{EffectOutcome, HttpErrorKind, HttpFailure, HttpRequest, RequestBody};
use parlance::flow::HttpMethod;
use parlance::flow::settings::HttpSettings;
use parlance::http::Caller;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Requests a route has seen, and bytes a streaming route has produced.
#[derive(Clone, Default)]
struct Seen {
    requests: Arc<AtomicUsize>,
    produced: Arc<AtomicUsize>,
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

fn json_response(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Echoes what arrived: method, raw query, headers and body.
async fn echo(method: Method, RawQuery(q): RawQuery, headers: HeaderMap, body: String) -> Response {
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                Value::String(v.to_str().unwrap_or_default().to_string()),
            )
        })
        .collect();
    let out = json!({ "method": method.as_str(), "query": q, "headers": headers, "body": body });
    json_response(StatusCode::OK, &out.to_string())
}

fn app(seen: Seen) -> Router {
    Router::new()
        .route(
            "/json",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::HeaderName::from_static("x-test"), "yes"),
                    ],
                    r#"{"id": 7, "state": "shipped"}"#,
                )
            }),
        )
        .route("/text", get(|| async { "plain words" }))
        .route(
            "/fail",
            get(|| async {
                json_response(StatusCode::INTERNAL_SERVER_ERROR, r#"{"error": "db down"}"#)
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            "/bad-json",
            get(|| async { json_response(StatusCode::OK, "{not json") }),
        )
        .route(
            "/big-declared",
            get(|| async { vec![b'x'; 5 * 1024 * 1024] }),
        )
        .route("/redirect", get(|| async { Redirect::to("/json") }))
        .route("/to-echo", get(|| async { Redirect::to("/echo") }))
        .route(
            "/hop/{n}",
            get(|Path(n): Path<u32>| async move {
                if n == 0 {
                    "arrived".into_response()
                } else {
                    Redirect::to(&format!("/hop/{}", n - 1)).into_response()
                }
            }),
        )
        .route(
            "/to-metadata",
            get(|| async { Redirect::to("http://169.254.169.254/latest/meta-data/") }),
        )
        .route(
            "/counted",
            get(|State(seen): State<Seen>| async move {
                seen.requests.fetch_add(1, Ordering::SeqCst);
                "counted"
            }),
        )
        .route(
            "/flaky",
            any(|State(seen): State<Seen>| async move {
                // The first request fails; the next ones answer.
                if seen.requests.fetch_add(1, Ordering::SeqCst) == 0 {
                    StatusCode::SERVICE_UNAVAILABLE.into_response()
                } else {
                    json_response(StatusCode::OK, r#"{"ok": true}"#)
                }
            }),
        )
        .route(
            "/busy",
            get(|State(seen): State<Seen>| async move {
                if seen.requests.fetch_add(1, Ordering::SeqCst) == 0 {
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        [(header::RETRY_AFTER, "1")],
                        "",
                    )
                        .into_response()
                } else {
                    "free".into_response()
                }
            }),
        )
        .route("/echo", any(echo))
        .with_state(seen)
}

/// A server that answers every connection with 64 MiB in 64 KiB writes and no
/// Content-Length (only the streamed limit can stop it); `produced` counts the bytes
/// it managed to write.
async fn endless_server(produced: Arc<AtomicUsize>) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let produced = Arc::clone(&produced);
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let head =
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'y'; 64 * 1024];
                for _ in 0..1024 {
                    if socket.write_all(&chunk).await.is_err() {
                        return;
                    }
                    produced.fetch_add(chunk.len(), Ordering::SeqCst);
                }
            });
        }
    });
    addr
}

fn get_request(url: String) -> HttpRequest {
    HttpRequest {
        method: HttpMethod::Get,
        url,
        headers: Vec::new(),
        query: Vec::new(),
        body: RequestBody::None,
        timeout: Duration::from_secs(5),
        retries: 0,
    }
}

fn caller() -> Caller {
    Caller::new(&HttpSettings::default()).unwrap()
}

fn saved(outcome: EffectOutcome) -> Value {
    match outcome {
        EffectOutcome::Http(v) => v,
        other => panic!("expected a 2xx answer, got {other:?}"),
    }
}

fn failed(outcome: EffectOutcome) -> HttpFailure {
    match outcome {
        EffectOutcome::HttpFailed(f) => f,
        other => panic!("expected a failure, got {other:?}"),
    }
}

async fn server() -> (SocketAddr, Seen) {
    let seen = Seen::default();
    (serve(app(seen.clone())).await, seen)
}

#[tokio::test]
async fn a_json_answer_is_saved_with_status_headers_and_parsed_body() {
    let (addr, _) = server().await;
    let v = saved(
        caller()
            .call(&get_request(format!("http://{addr}/json")))
            .await,
    );
    assert_eq!(v["status"], 200);
    assert_eq!(v["headers"]["content-type"], "application/json");
    assert_eq!(v["headers"]["x-test"], "yes");
    assert_eq!(v["body"], json!({"id": 7, "state": "shipped"}));
}

#[tokio::test]
async fn a_text_answer_is_saved_as_text() {
    let (addr, _) = server().await;
    let v = saved(
        caller()
            .call(&get_request(format!("http://{addr}/text")))
            .await,
    );
    assert_eq!(v["body"], "plain words");
}

#[tokio::test]
async fn a_500_is_a_status_failure_with_the_answer() {
    let (addr, _) = server().await;
    let f = failed(
        caller()
            .call(&get_request(format!("http://{addr}/fail")))
            .await,
    );
    assert_eq!(f.kind, HttpErrorKind::Status);
    assert_eq!(f.status, Some(500));
    let response = f.response.expect("the answer is kept");
    assert_eq!(response["status"], 500);
    assert_eq!(response["body"], json!({"error": "db down"}));
}

#[tokio::test]
async fn a_slow_server_is_a_timeout_at_the_nodes_timeout() {
    let (addr, _) = server().await;
    let mut r = get_request(format!("http://{addr}/slow"));
    r.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let f = failed(caller().call(&r).await);
    assert_eq!(f.kind, HttpErrorKind::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_closed_port_is_a_connect_failure() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let f = failed(
        caller()
            .call(&get_request(format!("http://127.0.0.1:{port}/x")))
            .await,
    );
    assert_eq!(f.kind, HttpErrorKind::Connect, "{f:?}");
    assert_eq!(f.status, None);
}

#[tokio::test]
async fn json_that_does_not_parse_is_invalid_json_with_its_status() {
    let (addr, _) = server().await;
    let f = failed(
        caller()
            .call(&get_request(format!("http://{addr}/bad-json")))
            .await,
    );
    assert_eq!(f.kind, HttpErrorKind::InvalidJson);
    assert_eq!(f.status, Some(200));
}

#[tokio::test]
async fn a_body_over_the_limit_is_too_large_and_not_read_whole() {
    let (addr, seen) = server().await;
    let f = failed(
        caller()
            .call(&get_request(format!("http://{addr}/big-declared")))
            .await,
    );
    assert_eq!(f.kind, HttpErrorKind::TooLarge);
    assert_eq!(f.status, Some(200));

    let endless = endless_server(Arc::clone(&seen.produced)).await;
    let f = failed(
        caller()
            .call(&get_request(format!("http://{endless}/")))
            .await,
    );
    assert_eq!(f.kind, HttpErrorKind::TooLarge);
    assert!(f.response.is_none());
    // Reading stopped near the 1 MiB limit: the server could not write all 64 MiB
    // (what it wrote beyond the limit sits in socket buffers).
    let produced = seen.produced.load(Ordering::SeqCst);
    assert!(produced < 32 * 1024 * 1024, "{produced} bytes produced");
}

#[tokio::test]
async fn redirects_are_followed_up_to_five() {
    let (addr, _) = server().await;
    let v = saved(
        caller()
            .call(&get_request(format!("http://{addr}/redirect")))
            .await,
    );
    assert_eq!(v["body"]["id"], 7);
    let v = saved(
        caller()
            .call(&get_request(format!("http://{addr}/hop/5")))
            .await,
    );
    assert_eq!(v["body"], "arrived");
    let f = failed(
        caller()
            .call(&get_request(format!("http://{addr}/hop/6")))
            .await,
    );
    assert_eq!(f.kind, HttpErrorKind::Redirect, "{f:?}");
    assert!(f.message.contains("more than 5 redirects"), "{}", f.message);
}

#[tokio::test]
async fn a_redirect_to_the_metadata_address_is_not_followed() {
    let (addr, _) = server().await;
    let mut r = get_request(format!("http://{addr}/to-metadata"));
    // Were it followed, 169.254.169.254 (no route here) would run into this timeout.
    r.timeout = Duration::from_secs(10);
    let started = Instant::now();
    let f = failed(caller().call(&r).await);
    assert_eq!(f.kind, HttpErrorKind::Redirect, "{f:?}");
    assert!(f.message.contains("cloud metadata"), "{}", f.message);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn allow_hosts_refuses_other_hosts_before_connecting() {
    let (addr, seen) = server().await;
    let only_api = Caller::new(&HttpSettings {
        allow_hosts: Some(vec!["api.example.com".into()]),
        ..HttpSettings::default()
    })
    .unwrap();
    let f = failed(
        only_api
            .call(&get_request(format!("http://{addr}/counted")))
            .await,
    );
    assert_eq!(f.kind, HttpErrorKind::Forbidden);
    assert!(f.message.contains("allow_hosts"), "{}", f.message);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 0);

    // Listed (any port), the same call goes through.
    let loopback = Caller::new(&HttpSettings {
        allow_hosts: Some(vec!["127.0.0.1".into()]),
        ..HttpSettings::default()
    })
    .unwrap();
    saved(
        loopback
            .call(&get_request(format!("http://{addr}/counted")))
            .await,
    );
    assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_metadata_address_is_refused_by_default() {
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "file:///etc/passwd",
    ] {
        let f = failed(caller().call(&get_request(url.into())).await);
        assert_eq!(f.kind, HttpErrorKind::Forbidden, "{url}: {f:?}");
    }
}

#[tokio::test]
async fn a_get_is_retried_after_a_503_and_a_post_is_not() {
    let (addr, seen) = server().await;
    let mut r = get_request(format!("http://{addr}/flaky"));
    r.retries = 2;
    let v = saved(caller().call(&r).await);
    assert_eq!(v["body"]["ok"], true);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 2);

    let (addr, seen) = server().await;
    let mut r = get_request(format!("http://{addr}/flaky"));
    r.method = HttpMethod::Post;
    // The compiler refuses retries on POST; the caller does not retry one either.
    r.retries = 2;
    let f = failed(caller().call(&r).await);
    assert_eq!(f.status, Some(503));
    assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_429_waits_for_its_retry_after() {
    let (addr, seen) = server().await;
    let mut r = get_request(format!("http://{addr}/busy"));
    r.retries = 1;
    let started = Instant::now();
    let v = saved(caller().call(&r).await);
    assert_eq!(v["body"], "free");
    assert_eq!(seen.requests.load(Ordering::SeqCst), 2);
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn query_headers_and_bodies_arrive_as_sent() {
    let (addr, _) = server().await;
    let c = caller();
    let mut r = get_request(format!("http://{addr}/echo?fixed=1"));
    r.query = vec![("q".into(), "a b&c=d".into()), ("n".into(), "é".into())];
    r.headers = vec![("X-Token".into(), "t0k".into())];
    let v = saved(c.call(&r).await)["body"].clone();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["query"], "fixed=1&q=a+b%26c%3Dd&n=%C3%A9");
    assert_eq!(v["headers"]["x-token"], "t0k");
    let agent = v["headers"]["user-agent"].as_str().unwrap_or_default();
    assert!(agent.starts_with("parlance/"), "{agent}");

    let mut r = get_request(format!("http://{addr}/echo"));
    r.method = HttpMethod::Post;
    r.body = RequestBody::Json(json!({"name": "Ana", "n": 2}));
    r.headers = vec![("User-Agent".into(), "shop-bot/2".into())];
    let v = saved(c.call(&r).await)["body"].clone();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["headers"]["content-type"], "application/json");
    assert_eq!(v["headers"]["user-agent"], "shop-bot/2");
    assert_eq!(
        serde_json::from_str::<Value>(v["body"].as_str().unwrap()).unwrap(),
        json!({"name": "Ana", "n": 2})
    );

    r.method = HttpMethod::Put;
    r.body = RequestBody::Form(vec![("a".into(), "1 2".into()), ("b".into(), "&".into())]);
    let v = saved(c.call(&r).await)["body"].clone();
    assert_eq!(v["method"], "PUT");
    assert_eq!(
        v["headers"]["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(v["body"], "a=1+2&b=%26");

    r.method = HttpMethod::Patch;
    r.body = RequestBody::Text("<order id=\"1\"/>".into());
    r.headers = vec![("Content-Type".into(), "application/xml".into())];
    let v = saved(c.call(&r).await)["body"].clone();
    assert_eq!(v["method"], "PATCH");
    assert_eq!(v["headers"]["content-type"], "application/xml");
    assert_eq!(v["body"], "<order id=\"1\"/>");
}

#[tokio::test]
async fn authorization_is_dropped_on_a_redirect_to_another_host() {
    let (b, _) = server().await;
    let to_b = format!("http://{b}/echo");
    let a = serve(Router::new().route(
        "/to-b",
        get(move || {
            let to_b = to_b.clone();
            async move { Redirect::to(&to_b) }
        }),
    ))
    .await;
    let mut r = get_request(format!("http://{a}/to-b"));
    r.headers = vec![("Authorization".into(), "Bearer secret".into())];
    let v = saved(caller().call(&r).await)["body"].clone();
    assert!(v["headers"].get("authorization").is_none(), "{v}");

    // On the same host it is kept.
    let (same, _) = server().await;
    let mut r = get_request(format!("http://{same}/to-echo"));
    r.headers = vec![("Authorization".into(), "Bearer secret".into())];
    let v = saved(caller().call(&r).await)["body"].clone();
    assert_eq!(v["headers"]["authorization"], "Bearer secret");
    assert_eq!(v["method"], "GET");
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_name_the_call_but_no_header_value_or_query() {
    let (addr, _) = server().await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut r = get_request(format!("http://{addr}/echo?token=SECRET-IN-URL"));
    r.query = vec![("key".into(), "SECRET-QUERY-456".into())];
    r.headers = vec![("Authorization".into(), "Bearer SECRET-TOKEN-123".into())];
    saved(caller().call(&r).await);
    let mut r = get_request(format!("http://{addr}/fail?token=SECRET-IN-URL"));
    r.headers = vec![("X-Api-Key".into(), "SECRET-TOKEN-123".into())];
    r.retries = 1;
    failed(caller().call(&r).await);

    let text = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(text.contains(&format!("http://{addr}/echo")), "{text}");
    assert!(text.contains("status=200"), "{text}");
    assert!(text.contains("attempts=2"), "{text}");
    assert!(!text.contains("SECRET"), "{text}");
}

// ---- parlance chat ----

const CHAT_FLOW: &str = r#"nodes:
  lookup:
    http:
      url: "{{ env.ORDERS_URL }}/json"
      headers: { Authorization: "Bearer {{ env.ORDERS_KEY }}" }
      timeout: 2s
    save: order
    on_error: failed
  tell:
    end: "Order {{ vars.order.body.id }} is {{ vars.order.body.state }}."
  failed:
    end: "No lookup ({{ message.error.kind }})."
"#;

fn chat(dir: &std::path::Path, base: &str, extra: &[&str]) -> (String, String) {
    use std::io::Write;
    let mut child = support::parlance()
        .arg("chat")
        .args(extra)
        .arg(dir)
        .env("ORDERS_URL", base)
        .env("ORDERS_KEY", "SECRET-KEY-789")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"where is my order\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn chat_makes_the_call_and_shows_it_and_no_http_refuses_it() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (addr, _) = runtime.block_on(server());
    let bot = support::bot_folder(&[
        ("parlance.yaml", "expose_env: [ORDERS_URL, ORDERS_KEY]\n"),
        ("flows/main.yaml", CHAT_FLOW),
    ]);
    let base = format!("http://{addr}");

    let (out, err) = chat(bot.path(), &base, &[]);
    assert!(
        out.contains(&format!("(http GET {base}/json → 200, ")),
        "{out}"
    );
    assert!(out.contains("bot: Order 7 is shipped."), "{out}\n{err}");
    assert!(
        !out.contains("SECRET") && !err.contains("SECRET"),
        "{out}{err}"
    );

    let (out, _) = chat(bot.path(), &base, &["--no-http"]);
    assert!(
        out.contains(&format!("(http GET {base}/json: not called, --no-http)")),
        "{out}"
    );
    assert!(out.contains("bot: No lookup (not_called)."), "{out}");
}

#[tokio::test]
async fn http_settings_come_from_parlance_yaml_and_bound_the_body() {
    let bot = support::bot_folder(&[
        (
            "parlance.yaml",
            "http:\n  allow_hosts: [127.0.0.1, api.example.com]\n  max_body_bytes: 10\n",
        ),
        ("flows/main.yaml", "nodes:\n  hi:\n    say: Hi\n"),
    ]);
    let loaded = parlance::compile::load_bot(bot.path());
    let settings = loaded.bot.expect("the bot loads").settings.http;
    assert_eq!(
        settings,
        HttpSettings {
            allow_hosts: Some(vec!["127.0.0.1".into(), "api.example.com".into()]),
            max_body_bytes: 10,
        }
    );
    let (addr, _) = server().await;
    let small = Caller::new(&settings).unwrap();
    let f = failed(
        small
            .call(&get_request(format!("http://{addr}/json")))
            .await,
    );
    assert_eq!(f.kind, HttpErrorKind::TooLarge);
    assert!(f.message.contains("10 bytes"), "{}", f.message);
}
