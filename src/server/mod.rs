//! The HTTP side: Meta's webhook, the local development endpoint and the admin routes.
//!
//! `app(state)` builds the router, so tests can serve it on a loopback port or call it
//! directly. Handlers only translate HTTP: parsing and signatures live in `whatsapp`,
//! conversations in `delivery::runtime`.

use crate::delivery::runtime::{Job, Number, Runtime, TurnReport, mask};
use crate::engine::{Event, EventKind};
use crate::store::StatusRecord;
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

/// Meta sends webhooks of up to 3 MB; anything larger is refused with 413.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What the handlers share.
pub struct Shared {
    pub runtime: Arc<Runtime>,
    /// Tokens accepted in Meta's verification handshake (one per configured number).
    pub verify_tokens: Vec<String>,
    /// Each number's app secret. A POST must be signed with one of them (401
    /// otherwise), and only the items for numbers whose secret signed it are handled.
    /// Without any, POSTs are not checked (local development).
    pub app_secrets: Vec<(String, String)>,
    /// The Bearer key of the admin routes; without one they are closed.
    pub api_key: Option<String>,
    pub max_body_bytes: usize,
}

pub type AppState = Arc<Shared>;

/// The router: `/webhook`, `/dev/message`, `/healthz`, `/admin/status`.
pub fn app(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/webhook", get(verify).post(receive))
        .route("/dev/message", post(dev_message))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/admin/status", get(admin_status))
        .route("/metrics", get(metrics))
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
    let token_ok = q
        .verify_token
        .as_deref()
        .is_some_and(|t| !t.is_empty() && state.verify_tokens.iter().any(|v| v == t));
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

/// A delivery from Meta: check the signature, parse, drop what was seen before, queue
/// each message for its user, record statuses, answer 200 at once.
async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<&'static str, ApiError> {
    let metrics = &state.runtime.metrics;
    metrics.webhooks_received.inc();
    let reject = |status: StatusCode, reason: String| {
        metrics.reject(match status {
            StatusCode::UNAUTHORIZED => "signature",
            _ => "malformed",
        });
        tracing::warn!(%status, %reason, "webhook rejected");
        ApiError(status, reason)
    };
    // The numbers whose app secret signed this body.
    let mut signed_for: Vec<&str> = Vec::new();
    if !state.app_secrets.is_empty() {
        let given = headers
            .get("x-hub-signature-256")
            .and_then(|v| v.to_str().ok());
        let mut last = None;
        for (number, secret) in &state.app_secrets {
            match signature::verify(secret, &body, given) {
                Ok(()) => signed_for.push(number),
                Err(e) => last = Some(e),
            }
        }
        if signed_for.is_empty() {
            let why = last.map_or_else(|| "bad signature".to_string(), |e| e.to_string());
            return Err(reject(StatusCode::UNAUTHORIZED, why));
        }
    }
    let webhook =
        inbound::parse(&body).map_err(|e| reject(StatusCode::BAD_REQUEST, e.to_string()))?;
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
        let needs_secret = number.is_some_and(|n| state.app_secrets.iter().any(|(id, _)| id == n));
        if needs_secret && !number.is_some_and(|n| signed_for.contains(&n)) {
            tracing::warn!(number = ?number, "an item for a number whose app secret did not sign the delivery; dropped");
            continue;
        }
        handle_item(&state, item).await;
    }
    Ok("ok\n")
}

async fn handle_item(state: &AppState, item: Item) {
    match item {
        Item::Message {
            phone_number_id,
            user,
            event,
            raw_type,
        } => {
            let number_id = phone_number_id.unwrap_or_default();
            let Some(number) = state.runtime.number(&number_id) else {
                tracing::warn!(number = %number_id, "a message for a number this server does not serve");
                return;
            };
            let user = user.to_string();
            if let Some(id) = event.id.clone() {
                let store = Arc::clone(&number.store);
                let at = event.at;
                let first =
                    tokio::task::spawn_blocking(move || store.first_delivery(&id, at)).await;
                match first {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => {
                        tracing::debug!(to = %mask(&user), "duplicate delivery dropped");
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot check for duplicates; handling the message")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "duplicate check failed; handling the message")
                    }
                }
            }
            if let EventKind::Unsupported(what) = &event.kind {
                tracing::info!(kind = %what, raw = %raw_type, "a message type the bot cannot use; the fallback flow answers");
            }
            if let Err(e) = state
                .runtime
                .submit(&number_id, &user, Job { event, done: None })
            {
                tracing::warn!(number = %e.0, "message for an unknown number");
            }
        }
        Item::Status {
            phone_number_id,
            message_id,
            status,
            recipient,
            at,
            errors,
            ..
        } => {
            let Some(number) = phone_number_id
                .as_deref()
                .and_then(|n| state.runtime.number(n))
            else {
                return;
            };
            let first_error = errors.first();
            if status == "failed" {
                tracing::warn!(message = %message_id, code = ?first_error.map(|e| e.code), "WhatsApp reports a message failed");
                report_failure(state, number, &message_id, at, first_error).await;
            }
            let record = StatusRecord {
                message_id,
                status,
                at,
                recipient,
                error_code: first_error.map(|e| e.code),
                error_title: first_error.map(|e| e.title.clone()),
            };
            let store = Arc::clone(&number.store);
            if let Ok(Err(e)) =
                tokio::task::spawn_blocking(move || store.record_status(&record)).await
            {
                tracing::error!(error = %e, "cannot record a status");
            }
        }
        Item::Error { errors, .. } => {
            for e in errors {
                tracing::warn!(code = e.code, title = %e.title, "WhatsApp reports an error");
            }
        }
        Item::Other { field } => tracing::debug!(%field, "webhook field not handled"),
    }
}

/// A `failed` status: the conversation of the message hears of it (its node's
/// `on_error`), in order with the user's own messages.
async fn report_failure(
    state: &AppState,
    number: &Number,
    message_id: &str,
    at: i64,
    error: Option<&inbound::ApiError>,
) {
    let store = Arc::clone(&number.store);
    let id = message_id.to_string();
    let sent = match tokio::task::spawn_blocking(move || store.sent(&id)).await {
        Ok(Ok(Some(sent))) => sent,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot look up a failed message");
            return;
        }
        Err(_) => return,
    };
    let event = Event {
        id: None,
        at,
        contact_name: None,
        kind: EventKind::DeliveryFailed {
            flow: sent.flow,
            node: sent.node,
            code: error.map(|e| e.code),
            reason: error.map_or_else(|| "no reason given".to_string(), |e| e.title.clone()),
        },
    };
    if let Err(e) = state.runtime.submit(
        &sent.key.phone_number_id,
        &sent.key.user,
        Job { event, done: None },
    ) {
        tracing::warn!(number = %e.0, "a failed message for a number this server does not serve");
    }
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

/// Local mode: run a turn for a simulated user and answer what the bot would send.
async fn dev_message(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<axum::Json<TurnReport>, ApiError> {
    let Some(number) = state
        .runtime
        .numbers()
        .find(|n| n.outbox.is_local())
        .cloned()
    else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "/dev/message only exists in local mode (a bot without WhatsApp credentials)".into(),
        ));
    };
    let msg: DevMessage = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"from\": \"...\", \"text\": \"...\"}}: {e}"),
        )
    })?;
    let kind = match (msg.text, msg.reply) {
        (Some(text), None) => EventKind::Text(text),
        (None, Some(id)) => EventKind::Reply {
            title: id.clone(),
            id,
        },
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
    let now = chrono::Utc::now().timestamp();
    let event = Event {
        id: Some(format!("wamid.dev.{now}.{}", rand_suffix())),
        at: now,
        contact_name: msg.name,
        kind,
    };
    let (done, report) = tokio::sync::oneshot::channel();
    state
        .runtime
        .submit(
            &number.phone_number_id,
            &msg.from,
            Job {
                event,
                done: Some(done),
            },
        )
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("no bot for {}", e.0),
            )
        })?;
    let report = report.await.map_err(|_| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the turn did not finish".into(),
        )
    })?;
    Ok(axum::Json(report))
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// What is loaded and what could not be delivered. Needs `Authorization: Bearer KEY`.
async fn admin_status(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    let Some(key) = &state.api_key else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "set api.key in parlance.yaml to open the admin routes".into(),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given != Some(key.as_str()) {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "a valid Bearer API key is required".into(),
        ));
    }
    let bots: Vec<Value> = state
        .runtime
        .numbers()
        .map(|n| {
            let bot = n.bot.load();
            json!({
                "phone_number_id": n.phone_number_id,
                "dir": n.dir.display().to_string(),
                "name": bot.settings.name,
                "flows": bot.flows.len(),
                "nodes": bot.node_count(),
                "local": n.outbox.is_local(),
                "last_reload": n.reload_report(),
            })
        })
        .collect();
    let m = &state.runtime.metrics;
    Ok(axum::Json(json!({
        "bots": bots,
        "webhooks_received": m.webhooks_received.get(),
        "messages": {
            "sent": m.messages_sent.get(),
            "failed": m.messages_failed.get(),
            "retried": m.messages_retried.get(),
        },
        "turns": m.turns.get(),
        "dead_letters": state.runtime.dead_letters(),
    })))
}

/// Prometheus metrics. Open like `/healthz`: counters carry no personal data.
async fn metrics(State(state): State<AppState>) -> Response {
    let runtime = Arc::clone(&state.runtime);
    let active = tokio::task::spawn_blocking(move || {
        let now = chrono::Utc::now().timestamp();
        runtime
            .numbers()
            .map(|n| {
                let timeout = n.bot.load().settings.session_timeout.as_secs() as i64;
                n.store.count_sessions(now - timeout).unwrap_or(0)
            })
            .sum::<usize>()
    })
    .await
    .unwrap_or(0);
    state.runtime.metrics.sessions_active.set(active as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.runtime.metrics.render(),
    )
        .into_response()
}
