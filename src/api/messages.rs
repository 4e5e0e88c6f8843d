//! `POST /api/v1/inject` (a message as if the user sent it) and `POST /api/v1/notify`
//! (a message, template or flow straight to the user). Both become items of the user's
//! durable loop (`delivery::api_items`): handled in order with the user's own messages,
//! sent through the same outbox and sender. The answer waits a bounded time for the
//! item's turn and says what the bot queued.

use super::auth::Opened;
use super::error::{ApiError, ErrorBody, Json, present};
use super::users::check_user;
use crate::delivery::api_items::{ApiOutcome, ApiRequest, WINDOW_CLOSED};
use crate::delivery::codec::Notify;
use crate::delivery::runtime::Number;
use crate::engine::{EventKind, Message, Session};
use crate::render;
use crate::server::AppState;
use crate::store::SessionKey;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;

/// How long an inject or notify waits for its turn before answering 202.
pub const TURN_WAIT: Duration = Duration::from_secs(10);

/// A message into the user's conversation, as if the user sent it. Exactly one of
/// `text`, `reply` and `data`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InjectRequest {
    /// The user's WhatsApp id (E.164 without +).
    #[schema(pattern = r"^[0-9]{1,15}$", example = "15550001111")]
    pub user: String,
    /// The number the conversation is with; required when the key opens several.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub phone_number_id: Option<String>,
    /// A text message.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub text: Option<String>,
    /// A tap on the button or list row with this id.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub reply: Option<String>,
    /// Any JSON, for the flow to read as `message.data` (`message.type` is `data`).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Value, required = false)]
    pub data: Option<Value>,
}

/// A message straight to the user. Exactly one of `text`, `template` and `flow`.
/// Outside the user's 24-hour window only a template may be sent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyRequest {
    /// The user's WhatsApp id (E.164 without +).
    #[schema(pattern = r"^[0-9]{1,15}$", example = "15550001111")]
    pub user: String,
    /// The number to send from; required when the key opens several.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub phone_number_id: Option<String>,
    /// A text message (only inside the 24-hour window).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub text: Option<String>,
    /// An approved template, as the Cloud API takes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = TemplateRequest, required = false)]
    pub template: Option<TemplateRequest>,
    /// A flow the bot starts for the user: its id, or `{"flow", "node"}`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = FlowRequest, required = false)]
    pub flow: Option<FlowRequest>,
}

/// A Cloud API template object.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateRequest {
    pub name: String,
    pub language: TemplateLanguage,
    /// The template's components (header, body, buttons parameters), as the Cloud API
    /// takes them.
    #[serde(default)]
    pub components: Vec<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateLanguage {
    /// e.g. `en_US`.
    pub code: String,
    /// Only `deterministic` exists.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub policy: Option<String>,
}

/// A flow to start: its id, or a flow and the node to start at.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum FlowRequest {
    Id(String),
    At(FlowAt),
}

/// A flow and the node to start at (its first node without one).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowAt {
    pub flow: String,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub node: Option<String>,
}

/// What came of an inject or notify.
#[derive(Debug, Serialize, ToSchema)]
pub struct TurnResult {
    /// The inbox item the request became.
    pub item: u64,
    /// Whether its turn ran before the answer (false with 202: it runs in order later).
    pub done: bool,
    /// The Cloud API payloads the turn queued for sending, in order.
    pub sent: Vec<Value>,
    /// Errors and warnings of the turn (e.g. a flow that could not send outside the
    /// window).
    pub problems: Vec<String>,
}

/// Puts a message into the user's conversation as if the user sent it.
#[utoipa::path(
    post,
    path = "/inject",
    tag = "messages",
    operation_id = "inject",
    request_body = InjectRequest,
    responses(
        (status = 200, description = "The turn ran; what the bot queued", body = TurnResult),
        (status = 202, description = "Stored; the turn did not finish within 10 s and runs in order", body = TurnResult),
        (status = 400, description = "Not JSON, not a WhatsApp id, or phone_number_id missing with several numbers", body = ErrorBody),
        (status = 401, description = "Missing or wrong key", body = ErrorBody),
        (status = 403, description = "The API is off, or the key does not open that number", body = ErrorBody),
        (status = 404, description = "No bot serves that number", body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 415, description = "The body is not sent as JSON", body = ErrorBody),
        (status = 422, description = "The body does not fit (the field is named)", body = ErrorBody),
        (status = 503, description = "Shutting down, or the store did not answer", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn inject(
    State(state): State<AppState>,
    Opened(opened): Opened,
    Json(req): Json<InjectRequest>,
) -> Result<Response, ApiError> {
    check_user(&req.user)?;
    let kind = match (req.text, req.reply, req.data) {
        (Some(text), None, None) => EventKind::Text(text),
        (None, Some(id), None) => EventKind::Reply {
            title: id.clone(),
            id,
        },
        (None, None, Some(data)) => EventKind::Data(data),
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of text, reply and data",
            ));
        }
    };
    let number = number_for(&state, &opened, req.phone_number_id.as_deref())?;
    let key = SessionKey::new(&number.phone_number_id, &req.user);
    run(&state, key, ApiRequest::Inject(kind)).await
}

/// Sends a text, a template or a flow straight to the user.
#[utoipa::path(
    post,
    path = "/notify",
    tag = "messages",
    operation_id = "notify",
    request_body = NotifyRequest,
    responses(
        (status = 200, description = "The turn ran; what was queued for sending", body = TurnResult),
        (status = 202, description = "Stored; the turn did not finish within 10 s and runs in order", body = TurnResult),
        (status = 400, description = "Not JSON, not a WhatsApp id, or phone_number_id missing with several numbers", body = ErrorBody),
        (status = 401, description = "Missing or wrong key", body = ErrorBody),
        (status = 403, description = "The API is off, or the key does not open that number", body = ErrorBody),
        (status = 404, description = "No bot serves that number, or the bot has no such flow or node", body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 415, description = "The body is not sent as JSON", body = ErrorBody),
        (status = 422, description = "The body does not fit (the field is named), a message WhatsApp would refuse, or `window_closed`: outside the 24-hour window only a template may be sent", body = ErrorBody),
        (status = 503, description = "Shutting down, or the store did not answer", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn notify(
    State(state): State<AppState>,
    Opened(opened): Opened,
    Json(req): Json<NotifyRequest>,
) -> Result<Response, ApiError> {
    check_user(&req.user)?;
    let notify = match (req.text, req.template, req.flow) {
        (Some(text), None, None) => Notify::Text(text),
        (None, Some(t), None) => Notify::Template {
            name: t.name,
            language: t.language.code,
            components: t.components,
        },
        (None, None, Some(FlowRequest::Id(flow))) => Notify::Flow { flow, node: None },
        (None, None, Some(FlowRequest::At(FlowAt { flow, node }))) => Notify::Flow { flow, node },
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of text, template and flow",
            ));
        }
    };
    let number = number_for(&state, &opened, req.phone_number_id.as_deref())?;
    let key = SessionKey::new(&number.phone_number_id, &req.user);
    match &notify {
        Notify::Text(body) => {
            check_message(
                &key,
                &Message::Text {
                    body: body.clone(),
                    preview_url: false,
                },
            )?;
            let session = number
                .store
                .load_session(&key)
                .await
                .map_err(|e| ApiError::store(&e))?;
            let now = chrono::Utc::now().timestamp();
            if !session
                .as_ref()
                .is_some_and(|s: &Session| s.window_open(now))
            {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "window_closed",
                    format!("{WINDOW_CLOSED}; send a template instead"),
                ));
            }
        }
        Notify::Template {
            name,
            language,
            components,
        } => check_message(
            &key,
            &Message::Template {
                name: name.clone(),
                language: language.clone(),
                components: components.clone(),
            },
        )?,
        Notify::Flow { flow, node } => {
            let bot = number.live.bot();
            let known = match node {
                None => bot.flow_by_id(flow).is_some(),
                Some(node) => bot.node_by_id(flow, node).is_some(),
            };
            if !known {
                let what = node.as_ref().map_or_else(
                    || format!("flow \"{flow}\""),
                    |n| format!("node {flow}.{n}"),
                );
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_flow",
                    format!("flow: the bot has no {what}"),
                ));
            }
        }
    }
    run(&state, key, ApiRequest::Notify(notify)).await
}

/// A message the Cloud API would refuse is refused here, with why.
fn check_message(key: &SessionKey, message: &Message) -> Result<(), ApiError> {
    render::check(&render::payload(&key.user, message, None)).map_err(|errors| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_message",
            format!("not a message WhatsApp takes: {}", errors.join("; ")),
        )
    })
}

/// The number a request acts on: the one it names (404 when no bot serves it, 403 when
/// the key does not open it), or the key's only number.
fn number_for(
    state: &AppState,
    opened: &[String],
    given: Option<&str>,
) -> Result<Arc<Number>, ApiError> {
    let id = match given {
        Some(id) => {
            if state.runtime.number(id).is_none() {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_number",
                    "phone_number_id: no bot here serves that number",
                ));
            }
            if !opened.iter().any(|o| o == id) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden_number",
                    "phone_number_id: this key does not open that number",
                ));
            }
            id
        }
        None => match opened {
            [only] => only.as_str(),
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "phone_number_id_required",
                    format!(
                        "phone_number_id is required: this key opens {} numbers ({})",
                        opened.len(),
                        opened.join(", ")
                    ),
                ));
            }
        },
    };
    state.runtime.number(id).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_number",
            "phone_number_id: no bot here serves that number",
        )
    })
}

/// Stores the request in the user's loop and answers what its turn did (200), or 202
/// when it did not finish within [`TURN_WAIT`].
async fn run(state: &AppState, key: SessionKey, request: ApiRequest) -> Result<Response, ApiError> {
    let Some(_admitted) = state.runtime.admit() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "shutting down; retry later",
        ));
    };
    let outcome = state
        .runtime
        .accept_api(key, request, TURN_WAIT)
        .await
        .map_err(|e| ApiError::store(&e))?;
    Ok(match outcome {
        ApiOutcome::Done { item, report } => (
            StatusCode::OK,
            axum::Json(TurnResult {
                item: item.0,
                done: true,
                sent: report.sent,
                problems: report.problems,
            }),
        )
            .into_response(),
        ApiOutcome::Pending { item } => (
            StatusCode::ACCEPTED,
            axum::Json(TurnResult {
                item: item.0,
                done: false,
                sent: Vec::new(),
                problems: Vec::new(),
            }),
        )
            .into_response(),
    })
}
