//! A fake Graph API for tests and load runs: a real HTTP server on loopback that answers
//! `POST /{version}/{phone_number_id}/messages` like Meta does (the success body with a
//! `wamid`, Meta's error bodies with codes), optionally with scripted failures and
//! delays, and remembers every request with the time it arrived.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Accept the message (the default).
    Accept,
    /// Answer with Meta's error body: HTTP status, error code, message, details.
    Error {
        status: u16,
        code: i64,
        message: String,
        details: String,
    },
    /// Wait this long, then accept (to test slow answers and timeouts).
    Delay(Duration),
}

impl Reply {
    /// An expired access token: HTTP 401, code 190.
    pub fn token_expired() -> Self {
        Reply::Error {
            status: 401,
            code: 190,
            message: "Error validating access token: Session has expired".into(),
            details: "The access token has expired.".into(),
        }
    }

    /// A Graph API outage: HTTP 503 without a known code.
    pub fn outage() -> Self {
        Reply::Error {
            status: 503,
            code: 2,
            message: "(#2) Service temporarily unavailable".into(),
            details: "Service temporarily unavailable".into(),
        }
    }

    /// Meta's throughput limit: HTTP 429, code 130429.
    pub fn rate_limited() -> Self {
        Reply::Error {
            status: 429,
            code: 130429,
            message: "(#130429) Rate limit hit".into(),
            details: "Cloud API message throughput has been reached.".into(),
        }
    }

    /// The 24-hour window has closed: HTTP 400, code 131047.
    pub fn window_closed() -> Self {
        Reply::Error {
            status: 400,
            code: 131047,
            message: "(#131047) Re-engagement message".into(),
            details: "Message failed to send because more than 24 hours have passed since the customer last replied to this number.".into(),
        }
    }
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub phone_number_id: String,
    pub authorization: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    /// The answer once the script is used up (`None`: accept).
    otherwise: Option<Reply>,
    received: Vec<Received>,
    /// The bodies of the messages accepted, in order.
    accepted_bodies: Vec<Value>,
    accepted: u64,
}

/// A running fake; it stops when dropped with its runtime.
#[derive(Clone)]
pub struct FakeGraph {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl FakeGraph {
    /// Starts on a free loopback port (inside a Tokio runtime).
    pub async fn start() -> std::io::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/{version}/{phone}/messages", post(messages))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeGraph { addr, inner })
    }

    /// What to put in `whatsapp.base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next requests with these replies, in order (then accepts).
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().script.extend(replies);
    }

    /// Answers every request after the script with `reply` (an outage, an expired
    /// token, a slow Graph) until called again; `Reply::Accept` heals it.
    pub fn otherwise(&self, reply: Reply) {
        self.lock().otherwise = Some(reply);
    }

    /// The messages Graph accepted (each a body that reached WhatsApp), in order: what
    /// users received. A message accepted twice is here twice.
    pub fn accepted(&self) -> Vec<Value> {
        self.lock().accepted_bodies.clone()
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// The bodies of the messages sent (not mark-as-read calls), in order.
    pub fn messages(&self) -> Vec<Value> {
        self.received()
            .into_iter()
            .map(|r| r.body)
            .filter(|b| b.get("to").is_some())
            .collect()
    }

    /// The messages sent, once there are at least `n` of them or 10 s have passed
    /// (then the caller's assertion on what arrived says what is missing).
    pub async fn wait_for_messages(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.messages();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn messages(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path((_version, phone)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return error(400, 100, "(#100) Invalid parameter", "the body is not JSON"),
    };
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let reply = {
        let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.received.push(Received {
            at: Instant::now(),
            phone_number_id: phone,
            authorization: authorization.clone(),
            body: body.clone(),
        });
        let otherwise = inner.otherwise.clone().unwrap_or(Reply::Accept);
        inner.script.pop_front().unwrap_or(otherwise)
    };
    if authorization
        .as_deref()
        .is_none_or(|a| !a.starts_with("Bearer "))
    {
        return error(401, 190, "Error validating access token", "no Bearer token");
    }
    if body.get("status").and_then(Value::as_str) == Some("read") {
        return axum::Json(json!({ "success": true })).into_response();
    }
    match reply {
        Reply::Error {
            status,
            code,
            message,
            details,
        } => error(status, code, &message, &details),
        Reply::Delay(d) => {
            tokio::time::sleep(d).await;
            accept(&inner, &body)
        }
        Reply::Accept => accept(&inner, &body),
    }
}

fn accept(inner: &Mutex<Inner>, body: &Value) -> Response {
    let n = {
        let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.accepted += 1;
        inner.accepted_bodies.push(body.clone());
        inner.accepted
    };
    let to = body["to"].as_str().unwrap_or_default();
    axum::Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{ "input": to, "wa_id": to.trim_start_matches('+') }],
        "messages": [{ "id": format!("wamid.FAKE{n:08}") }],
    }))
    .into_response()
}

fn error(status: u16, code: i64, message: &str, details: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = json!({
        "error": {
            "message": message,
            "type": "OAuthException",
            "code": code,
            "error_data": { "messaging_product": "whatsapp", "details": details },
            "fbtrace_id": "AFakeTraceId",
        }
    });
    (status, axum::Json(body)).into_response()
}
