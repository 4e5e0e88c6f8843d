//! The HTTP side: Meta's webhook, the local development endpoint and the admin routes.
//!
//! `app(state)` builds the router, so tests can serve it on a loopback port or call it
//! directly; [`listen::serve`] runs it with timeouts and a connection limit. Handlers
//! only translate HTTP: parsing and signatures live in `whatsapp`; what an item becomes
//! (dedupe, its user's queue, status records) in `delivery::inbox`; conversations in
//! `delivery::runtime`; whose admin key opens what in [`admin`]; readiness in [`ready`].
//!
//! Architecture Invariant: an item of a webhook for a number that can send is handled
//! only when the body is signed with that number's app secret (or the bot said
//! `allow_unsigned`); the loader refuses a sending number with neither.

use crate::delivery::dev_hub::{DevInput, DevReply};
use crate::delivery::runtime::{Number, Runtime, TurnReport};
use crate::whatsapp::inbound::{self, Item};
use crate::whatsapp::signature;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod admin;
pub mod dev;
pub mod listen;
pub mod ready;

pub use admin::AdminKey;

/// Meta sends webhooks of up to 3 MB; anything larger is refused with 413.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What the handlers share.
pub struct Shared {
    pub runtime: Arc<Runtime>,
    /// Tokens accepted in Meta's verification handshake (one per configured number).
    pub verify_tokens: Vec<String>,
    /// How webhook POSTs for each number that can send are checked. An item for one of
    /// these numbers is handled only when its check passes; local numbers are absent.
    pub webhook_auth: HashMap<String, WebhookAuth>,
    /// Each bot's `api.key` and the number it opens in the admin routes.
    pub admin_keys: Vec<AdminKey>,
    pub max_body_bytes: usize,
    /// How often a quiet event stream (`/dev/api/events`) gets a keep-alive comment:
    /// within `serve --idle-timeout`, which closes connections without I/O.
    pub stream_keep_alive: std::time::Duration,
    /// When `/metrics` last counted the sessions (see [`SESSION_COUNT_EVERY`]).
    pub sessions_counted_at: tokio::sync::Mutex<Option<Instant>>,
}

/// How a number that can send checks webhook POSTs.
pub enum WebhookAuth {
    /// Signed with this app secret (`X-Hub-Signature-256`), or refused.
    Secret(String),
    /// `allow_unsigned: true` without an app secret: anything is accepted (test setups).
    Unsigned,
}

pub type AppState = Arc<Shared>;

/// The router: `/webhook`, `/dev/message`, `/healthz` (liveness), `/readyz`
/// (readiness, see [`ready`]), `/admin/status`, `/metrics`, the API under `/api`
/// (`crate::api`, with its own body limit and error shape) and the `/dev` simulator
/// ([`dev`]: `/`, `/dev`, `/dev/assets/...`, `/dev/api/...`).
pub fn app(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/webhook", get(verify).post(receive))
        .route("/dev/message", post(dev_message))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready::readyz))
        .route("/admin/status", get(admin_status))
        .route("/admin/dead-letters/{id}/replay", post(replay_dead_letter))
        .route("/metrics", get(metrics))
        .merge(crate::api::router())
        .merge(dev::routes())
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// An error answer: a status and a short reason, as JSON.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

/// The answer to new work once shutdown began: 503, so Meta redelivers the webhook to
/// this server after its restart (or to another instance).
fn shutting_down() -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting down; retry later".into(),
    )
}

#[derive(Deserialize)]
struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// Meta's verification: echo the challenge for the right token, 403 for anything else.
async fn verify(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let q = Handshake {
        mode: q.get("hub.mode").cloned(),
        verify_token: q.get("hub.verify_token").cloned(),
        challenge: q.get("hub.challenge").cloned(),
    };
    let token_ok = q.verify_token.as_deref().is_some_and(|t| {
        !t.is_empty() && admin::any_equal(state.verify_tokens.iter().map(String::as_str), t)
    });
    match (q.mode.as_deref(), token_ok, q.challenge) {
        (Some("subscribe"), true, Some(challenge)) => {
            tracing::info!("webhook verified by Meta");
            ([(header::CONTENT_TYPE, "text/plain")], challenge).into_response()
        }
        _ => {
            tracing::warn!("webhook verification refused: wrong mode or verify token");
            (StatusCode::FORBIDDEN, "forbidden\n").into_response()
        }
    }
}

/// A delivery from Meta: check the signature, parse, hand each item the numbers' app
/// secrets allow to the delivery side (`Runtime::accept_webhook`), which stores them;
/// answer 200 once they are stored, 503 when they cannot be (or once
/// shutdown began.
async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<&'static str, ApiError> {
    let metrics = &state.runtime.metrics;
    metrics.webhooks_received.inc();
    // Held until every item is queued, so the shutdown drain waits for them.
    let Some(admitted) = state.runtime.admit() else {
        metrics.reject("shutting_down");
        return Err(shutting_down());
    };
    let reject = |status: StatusCode, reason: String| {
        metrics.reject(match status {
            StatusCode::UNAUTHORIZED => "signature",
            _ => "malformed",
        });
        tracing::warn!(%status, %reason, "webhook rejected");
        ApiError(status, reason)
    };
    let signed_for = signed_numbers(&state, &headers, &body);
    // Refuse before parsing when nothing here takes an unsigned or wrongly signed body.
    let open_to_unsigned = state.webhook_auth.is_empty()
        || state
            .webhook_auth
            .values()
            .any(|a| matches!(a, WebhookAuth::Unsigned));
    if signed_for.is_err() && !open_to_unsigned {
        let why = signed_for.err().unwrap_or_default();
        return Err(reject(StatusCode::UNAUTHORIZED, why));
    }
    let signed_for = signed_for.unwrap_or_default();
    let webhook =
        inbound::parse(&body).map_err(|e| reject(StatusCode::BAD_REQUEST, e.to_string()))?;
    let (mut handled, mut refused) = (Vec::new(), 0);
    for item in webhook.items {
        let number = match &item {
            Item::Message {
                phone_number_id, ..
            }
            | Item::Status {
                phone_number_id, ..
            }
            | Item::Error {
                phone_number_id, ..
            } => phone_number_id.as_deref(),
            Item::Other { .. } => None,
        };
        let allowed = match number.and_then(|n| state.webhook_auth.get(n)) {
            Some(WebhookAuth::Secret(_)) => number.is_some_and(|n| signed_for.contains(&n)),
            Some(WebhookAuth::Unsigned) => true,
            // Not a number that can send: unknown ones are dropped by `Runtime::accept_webhook`.
            None => true,
        };
        if !allowed {
            tracing::warn!(number = ?number, "an item for a number whose app secret did not sign the delivery; dropped");
            refused += 1;
            continue;
        }
        handled.push(item);
    }
    if refused > 0 && handled.is_empty() {
        return Err(reject(
            StatusCode::UNAUTHORIZED,
            "not signed with the app secret of the number it is for".into(),
        ));
    }
    // Store the items in a task of their own and wait for it: when Meta's connection
    // drops mid-way, axum drops this handler, and the store's step must still finish
    // whole (it is atomic either way; this keeps the drain's count right).
    let runtime = Arc::clone(&state.runtime);
    // (Boxed, as a worker is: the store's step is a large future to move by value.)
    let stored = tokio::spawn(Box::pin(async move {
        let stored = runtime.accept_webhook(handled).await;
        drop(admitted);
        stored
    }));
    match stored.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            metrics.reject("store");
            tracing::error!(error = %e, "a webhook could not be stored; answering 503 so Meta redelivers it");
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the delivery could not be stored; Meta will retry".into(),
            ));
        }
        Err(e) => {
            tracing::error!(error = %e, "storing a webhook's items failed");
            return Err(ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the delivery could not be stored; Meta will retry".into(),
            ));
        }
    }
    Ok("ok\n")
}

/// The numbers whose app secret signed `body`, or why none did.
fn signed_numbers<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<&'a str>, String> {
    let given = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    let mut signed_for = Vec::new();
    let mut last = None;
    for (number, auth) in &state.webhook_auth {
        match auth {
            WebhookAuth::Secret(secret) => match signature::verify(secret, body, given) {
                Ok(()) => signed_for.push(number.as_str()),
                Err(e) => last = Some(e),
            },
            WebhookAuth::Unsigned => {}
        }
    }
    if signed_for.is_empty() {
        return Err(last.map_or_else(|| "bad signature".to_string(), |e| e.to_string()));
    }
    Ok(signed_for)
}

#[derive(Deserialize)]
struct DevMessage {
    /// The simulated user's WhatsApp id.
    from: String,
    /// A text message...
    text: Option<String>,
    /// ...or a tap on the button or list row with this id.
    reply: Option<String>,
    /// The user's profile name.
    name: Option<String>,
}

/// A simulated number (the first the request may use, as `/dev/api` decides): run a
/// turn for a simulated user and answer what the bot would send.
async fn dev_message(
    State(state): State<AppState>,
    sim: dev::Sim,
    body: Bytes,
) -> Result<axum::Json<TurnReport>, ApiError> {
    let number = sim.first();
    let Some(_admitted) = state.runtime.admit() else {
        return Err(shutting_down());
    };
    let msg: DevMessage = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"from\": \"...\", \"text\": \"...\"}}: {e}"),
        )
    })?;
    let input = match (msg.text, msg.reply) {
        (Some(text), None) => DevInput::Text(text),
        (None, Some(id)) => DevInput::Reply(DevReply {
            id,
            title: None,
            kind: None,
        }),
        _ => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "give \"text\" or \"reply\"".into(),
            ));
        }
    };
    if msg.from.trim().is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "\"from\" is empty".into(),
        ));
    }
    let id = dev::messages::new_message_id();
    // Registered before the item is stored: its turn may run at once.
    let (done, report) = tokio::sync::oneshot::channel();
    state
        .runtime
        .waiters
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), done);
    // The simulator's history and clock include it (the page shows it too).
    let submission = dev::messages::Submission {
        user: msg.from,
        name: msg.name,
        input,
        phone_number_id: None,
    };
    if let Err(e) = dev::messages::submit(&state, &number, &id, submission).await {
        state.runtime.forget_waiter(&id);
        return Err(ApiError(
            e.status,
            format!("the message could not be stored: {}", e.message),
        ));
    }
    let report = match tokio::time::timeout(DEV_TURN_TIMEOUT, report).await {
        Ok(Ok(report)) => report,
        Ok(Err(_)) | Err(_) => {
            state.runtime.forget_waiter(&id);
            return Err(ApiError(
                StatusCode::GATEWAY_TIMEOUT,
                "the turn did not finish in time; it runs when the store answers".into(),
            ));
        }
    };
    Ok(axum::Json(report))
}

/// How long `/dev/message` waits for its turn.
const DEV_TURN_TIMEOUT: Duration = Duration::from_secs(30);

/// The numbers the request's `Authorization: Bearer KEY` opens (each bot's key opens its
/// own number only), or the error to answer.
fn opened<'a>(state: &'a AppState, headers: &HeaderMap) -> Result<Vec<&'a str>, ApiError> {
    if state.admin_keys.is_empty() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "set api.key in parlance.yaml to open the admin routes".into(),
        ));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let opened = admin::opened_numbers(&state.admin_keys, given);
    if opened.is_empty() {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "a valid Bearer API key is required".into(),
        ));
    }
    Ok(opened)
}

/// Dead letters `/admin/status` lists per number at most.
const DEAD_LETTERS_LISTED: usize = 1000;

/// What is loaded, whether it can send, and what could not be delivered, for the
/// numbers the key opens.
async fn admin_status(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    let opened = opened(&state, &headers)?;
    let mut numbers: Vec<&Arc<Number>> = state
        .runtime
        .numbers()
        .filter(|n| opened.contains(&n.phone_number_id.as_str()))
        .collect();
    numbers.sort_by(|a, b| a.phone_number_id.cmp(&b.phone_number_id));
    let mut bots = Vec::new();
    let mut dead_letters = Vec::new();
    for n in numbers {
        let bot = n.live.bot();
        bots.push(json!({
            "phone_number_id": n.phone_number_id,
            "dir": n.live.dir.display().to_string(),
            "name": bot.settings.name,
            "flows": bot.flows.len(),
            "nodes": bot.node_count(),
            "local": n.transport.is_local(),
            "sending_paused": n.paused(),
            "last_reload": n.live.report(),
        }));
        let letters = n
            .store
            .dead_letters(Some(&n.phone_number_id), DEAD_LETTERS_LISTED)
            .await
            .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        dead_letters.extend(letters.iter().map(admin::dead_letter_json));
    }
    let m = &state.runtime.metrics;
    Ok(axum::Json(json!({
        "bots": bots,
        "webhooks_received": m.webhooks_received.get(),
        "messages": {
            "sent": m.messages_sent.get(),
            "failed": m.messages_failed.get(),
            "retried": m.messages_retried.get(),
            "ambiguous": m.messages_ambiguous.get(),
        },
        "turns": m.turns.get(),
        "dead_letters": dead_letters,
    })))
}

/// `POST /admin/dead-letters/{id}/replay`: puts a dead letter back at the end of its
/// user's outbox (attempts reset). 404 when the key's numbers have no such dead letter.
async fn replay_dead_letter(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<u64>,
) -> Result<axum::Json<Value>, ApiError> {
    let opened = opened(&state, &headers)?;
    for n in state.runtime.numbers() {
        if !opened.contains(&n.phone_number_id.as_str()) {
            continue;
        }
        let letters = n
            .store
            .dead_letters(Some(&n.phone_number_id), usize::MAX)
            .await
            .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        let Some(letter) = letters.into_iter().find(|d| d.id == id) else {
            continue;
        };
        let now = chrono::Utc::now().timestamp_millis();
        let replayed = n
            .store
            .replay_dead_letter(id, now)
            .await
            .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        if replayed {
            tracing::info!(number = %n.phone_number_id, dead_letter = id, "a dead letter was replayed");
            state.runtime.kick(&letter.key);
            return Ok(axum::Json(json!({ "replayed": id })));
        }
    }
    Err(ApiError(
        StatusCode::NOT_FOUND,
        format!("no dead letter {id} for the numbers this key opens"),
    ))
}

/// Sessions are counted for `/metrics` at most this often; scrapes in between answer
/// the last count from memory.
pub const SESSION_COUNT_EVERY: Duration = Duration::from_secs(10);

/// Prometheus metrics. Open like `/healthz`: counters carry no personal data.
async fn metrics(State(state): State<AppState>) -> Response {
    refresh_session_gauge(&state).await;
    for n in state.runtime.numbers() {
        let labels = vec![("phone_number_id".to_string(), n.phone_number_id.clone())];
        let paused = i64::from(n.paused().is_some());
        state
            .runtime
            .metrics
            .sending_paused
            .get_or_create(&labels)
            .set(paused);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.runtime.metrics.render(),
    )
        .into_response()
}

/// Recounts active sessions when the last count is older than [`SESSION_COUNT_EVERY`].
/// Concurrent scrapes wait for one count instead of starting their own, and the count
/// runs on the store's own reading connection: webhooks and turns never wait for it.
async fn refresh_session_gauge(state: &AppState) {
    let mut counted_at = state.sessions_counted_at.lock().await;
    if counted_at.is_some_and(|at| at.elapsed() < SESSION_COUNT_EVERY) {
        return;
    }
    let now = chrono::Utc::now().timestamp();
    let mut active = 0usize;
    let mut failed = None;
    for store in state.runtime.stores() {
        // Every number on a store shares its sessions table: count with the shortest
        // timeout of those numbers' bots.
        let timeout = state
            .runtime
            .numbers()
            .filter(|n| Arc::ptr_eq(&n.store, store))
            .map(|n| n.live.bot().settings.session_timeout.as_secs())
            .min()
            .unwrap_or(0);
        match store
            .count_sessions(now - i64::try_from(timeout).unwrap_or(i64::MAX))
            .await
        {
            Ok(n) => active += n,
            Err(e) => failed = Some(e),
        }
    }
    match failed {
        None => {
            state
                .runtime
                .metrics
                .sessions_active
                .set(i64::try_from(active).unwrap_or(i64::MAX));
        }
        Some(e) => tracing::warn!(error = %e, "cannot count sessions for /metrics"),
    }
    *counted_at = Some(Instant::now());
}
