//! Data requests: `GET /api/v1/users/{user}` exports what is stored about a user on the
//! numbers the key opens; `DELETE` erases it.

use super::auth::Opened;
use super::error::{ApiError, ErrorBody, path_rejection};
use crate::delivery::codec::{self, OutgoingBody};
use crate::server::{AppState, admin};
use crate::store::SessionKey;
use crate::store::durable::{Durable, UserData};
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use utoipa::ToSchema;

/// Everything stored about one user, per number the key opens.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserExport {
    /// The user's WhatsApp id (phone number in E.164 without `+`).
    pub user: String,
    /// One entry per number with something stored about the user.
    pub numbers: Vec<NumberExport>,
}

/// What one number keeps about the user.
#[derive(Debug, Serialize, ToSchema)]
pub struct NumberExport {
    pub phone_number_id: String,
    /// The conversation as stored: where it stands, `vars`, `profile`, the contact,
    /// when the user last wrote; null when there is none.
    pub session: Option<Value>,
    /// Items waiting in the user's inbox (messages, injects, notifies, statuses,
    /// timers that fell due), oldest first.
    pub queued: Vec<QueuedItem>,
    /// Messages waiting to be sent, in order.
    pub outbox: Vec<QueuedMessage>,
    /// Pending timers, soonest first.
    pub timers: Vec<TimerExport>,
    /// Messages given up on, oldest first.
    pub dead_letters: Vec<DeadLetterExport>,
    /// Messages WhatsApp accepted (kept 8 days, for statuses), with their statuses.
    pub sent: Vec<SentExport>,
    /// Handovers to human agents, newest first, with their messages.
    pub handovers: Vec<super::handovers::HandoverDetail>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedItem {
    pub id: u64,
    /// `message`, `status`, `inject`, `notify`, `timer`, …
    pub kind: String,
    /// When it happened (Unix milliseconds).
    pub at: i64,
    /// The item as stored.
    pub body: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedMessage {
    /// The node that sent it (`flow.node`; `api.notify` for a notify).
    pub node: Option<String>,
    pub attempts: u32,
    /// Not sent before this time (Unix milliseconds).
    pub not_before: i64,
    /// The Cloud API payload.
    pub payload: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TimerExport {
    pub name: String,
    /// When it falls due (Unix milliseconds).
    pub due: i64,
    pub body: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterExport {
    pub id: u64,
    pub node: Option<String>,
    /// When it was given up on (Unix seconds).
    pub at: i64,
    pub attempts: u32,
    pub error: String,
    pub error_code: Option<i64>,
    pub payload: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SentExport {
    /// The wamid WhatsApp gave it.
    pub message_id: String,
    pub flow: String,
    pub node: String,
    /// When WhatsApp accepted it (Unix milliseconds).
    pub at: i64,
    pub statuses: Vec<StatusExport>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusExport {
    /// `sent`, `delivered`, `read`, `failed`, …
    pub status: String,
    /// When (Unix seconds, Meta's timestamp).
    pub at: i64,
    pub error_code: Option<i64>,
    pub error_title: Option<String>,
}

/// What an erasure did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Erased {
    pub user: String,
    /// Conversations erased (0 when there was nothing: erasing again is fine).
    pub sessions_erased: usize,
}

/// A user id as the API takes it: a WhatsApp id, i.e. a phone number in E.164 without
/// `+` (1 to 15 digits).
pub fn check_user(user: &str) -> Result<(), ApiError> {
    let digits = !user.is_empty() && user.len() <= 15 && user.bytes().all(|b| b.is_ascii_digit());
    if digits {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_user",
        "user must be a WhatsApp id: the phone number in E.164 without + (1 to 15 digits, e.g. 15550001111)",
    ))
}

/// Everything stored about the user on the numbers the key opens; 404 when nothing is.
#[utoipa::path(
    get,
    path = "/users/{user}",
    tag = "users",
    operation_id = "export_user",
    params(("user" = String, Path, description = "The user's WhatsApp id (E.164 without +)", pattern = r"^[0-9]{1,15}$")),
    responses(
        (status = 200, description = "What is stored about the user", body = UserExport),
        (status = 400, description = "Not a WhatsApp id", body = ErrorBody),
        (status = 401, description = "Missing or wrong key", body = ErrorBody),
        (status = 403, description = "The API is off (no api.key)", body = ErrorBody),
        (status = 404, description = "Nothing is stored about the user", body = ErrorBody),
        (status = 503, description = "The store did not answer", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn export(
    State(state): State<AppState>,
    Opened(opened): Opened,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<UserExport>, ApiError> {
    let Path(user) = path.map_err(|e| path_rejection(&e))?;
    check_user(&user)?;
    let mut numbers = Vec::new();
    for number_id in &opened {
        let Some(number) = state.runtime.number(number_id) else {
            continue;
        };
        let key = SessionKey::new(number_id, &user);
        let data = number
            .store
            .export_user(&key)
            .await
            .map_err(|e| ApiError::store(&e))?;
        if !data.is_empty() {
            numbers.push(number_export(number_id, data));
        }
    }
    if numbers.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_data",
            "nothing is stored about this user on the numbers this key opens",
        ));
    }
    Ok(Json(UserExport { user, numbers }))
}

/// Erases everything stored about the user: sessions, queued items and messages,
/// timers, dead letters, sent records and statuses. Idempotent.
#[utoipa::path(
    delete,
    path = "/users/{user}",
    tag = "users",
    operation_id = "erase_user",
    params(("user" = String, Path, description = "The user's WhatsApp id (E.164 without +)", pattern = r"^[0-9]{1,15}$")),
    responses(
        (status = 200, description = "Erased (or there was nothing)", body = Erased),
        (status = 400, description = "Not a WhatsApp id", body = ErrorBody),
        (status = 401, description = "Missing or wrong key", body = ErrorBody),
        (status = 403, description = "The API is off (no api.key)", body = ErrorBody),
        (status = 503, description = "The store did not answer", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn erase(
    State(state): State<AppState>,
    Opened(opened): Opened,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Erased>, ApiError> {
    let Path(user) = path.map_err(|e| path_rejection(&e))?;
    check_user(&user)?;
    // Each store once: `delete_user` erases the user on every number of that store
    // (numbers whose bots share a store are erased together).
    let mut stores: Vec<Arc<dyn Durable>> = Vec::new();
    for number_id in &opened {
        if let Some(number) = state.runtime.number(number_id)
            && !stores.iter().any(|s| Arc::ptr_eq(s, &number.store))
        {
            stores.push(Arc::clone(&number.store));
        }
    }
    // The trace holds the user's messages and payloads too.
    for number_id in &opened {
        state
            .runtime
            .trace
            .forget(&SessionKey::new(number_id, &user));
    }
    let mut sessions_erased = 0;
    for store in stores {
        sessions_erased += store
            .delete_user(&user)
            .await
            .map_err(|e| ApiError::store(&e))?;
    }
    tracing::info!(
        user = %crate::delivery::runtime::mask(&user),
        sessions = sessions_erased,
        "a user's data was erased through the API"
    );
    Ok(Json(Erased {
        user,
        sessions_erased,
    }))
}

/// A stored body as JSON (the delivery side writes JSON; anything else as text).
fn body_json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()))
}

fn number_export(phone_number_id: &str, data: UserData) -> NumberExport {
    let UserData {
        session,
        items,
        outgoing,
        timers,
        dead_letters,
        sent,
        statuses,
        handovers,
    } = data;
    NumberExport {
        phone_number_id: phone_number_id.to_string(),
        session: session.and_then(|s| serde_json::to_value(s).ok()),
        queued: items
            .into_iter()
            .map(|i| QueuedItem {
                id: i.id.0,
                kind: i.kind.as_str().to_string(),
                at: i.at,
                body: body_json(&i.body),
            })
            .collect(),
        outbox: outgoing
            .into_iter()
            .map(|o| {
                let body = codec::decode::<OutgoingBody>(&o.body).ok();
                QueuedMessage {
                    node: body.as_ref().map(|b| format!("{}.{}", b.flow, b.node)),
                    attempts: o.attempts,
                    not_before: o.not_before,
                    payload: body.map_or_else(|| body_json(&o.body), |b| b.payload),
                }
            })
            .collect(),
        timers: timers
            .into_iter()
            .map(|t| TimerExport {
                name: t.name,
                due: t.due,
                body: body_json(&t.body),
            })
            .collect(),
        dead_letters: dead_letters
            .iter()
            .map(|d| {
                let j = admin::dead_letter_json(d);
                DeadLetterExport {
                    id: d.id,
                    node: j["node"].as_str().map(str::to_string),
                    at: d.since.div_euclid(1000),
                    attempts: j["attempts"]
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(d.attempts),
                    error: j["error"].as_str().unwrap_or_default().to_string(),
                    error_code: j["error_code"].as_i64(),
                    payload: j["payload"].clone(),
                }
            })
            .collect(),
        sent: sent
            .into_iter()
            .map(|s| SentExport {
                statuses: statuses
                    .iter()
                    .filter(|st| st.message_id == s.message_id)
                    .map(|st| StatusExport {
                        status: st.status.clone(),
                        at: st.at,
                        error_code: st.error_code,
                        error_title: st.error_title.clone(),
                    })
                    .collect(),
                message_id: s.message_id,
                flow: s.flow,
                node: s.node,
                at: s.at,
            })
            .collect(),
        handovers: handovers
            .iter()
            .map(super::handovers::HandoverDetail::from)
            .collect(),
    }
}
