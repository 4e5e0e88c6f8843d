//! The agent routes of handovers (docs/api.md, "Handovers"): list, read, accept,
//! reply, resolve. A handover is found on the stores of the numbers the key opens; one
//! of another number is a 404, as if it did not exist.
//!
//! Accept and resolve are compare-and-set on the record (the second accept is a 409).
//! A reply and a resolve's continuation of the flow are items of the user's durable
//! loop (`delivery::handover`), handled in order with the user's messages: the answer
//! is 202 once the item is stored.

use super::auth::Opened;
use super::error::{ApiError, ErrorBody, Json, path_rejection, present};
use super::handovers::{HandoverDetail, HandoverView};
use crate::delivery::api_items::WINDOW_CLOSED;
use crate::delivery::codec::AgentAction;
use crate::delivery::runtime::Number;
use crate::engine::Message;
use crate::engine::message::MediaRef;
use crate::flow::MediaKind;
use crate::render;
use crate::server::AppState;
use crate::store::durable::Durable;
use crate::store::durable::handover::{
    Changed, Handover, HandoverChange, HandoverData, HandoverFilter, HandoverState,
};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// Most handovers one listing returns unless `limit` says fewer.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 500;

/// Which handovers to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this queue's (the handover node's `queue`).
    pub queue: Option<String>,
    /// Only those in this state: `queued`, `accepted`, `resolved`, `timed_out`,
    /// `unavailable`.
    pub state: Option<String>,
    /// At most this many (default 100, at most 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HandoverList {
    /// Newest first.
    pub handovers: Vec<HandoverView>,
}

/// `{"agent": "name"}`: who takes the handover.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptRequest {
    /// The agent's name or id, shown to other agents and in `handover.agent`.
    #[schema(min_length = 1, max_length = 200)]
    pub agent: String,
}

/// `{"status", "vars"}`: the agent gives the conversation back to the bot.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// How it went, for the flow to branch on: `handover.status` in templates.
    #[schema(min_length = 1, max_length = 200)]
    pub status: String,
    /// Merged into the conversation's `vars`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Object, required = false)]
    pub vars: Option<Map<String, Value>>,
}

/// A media message by link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaLink {
    /// An https URL WhatsApp can fetch.
    pub link: String,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub caption: Option<String>,
    /// Documents only: the file name the user sees.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub filename: Option<String>,
}

/// An agent's reply. Exactly one of `text`, `image`, `video`, `audio`, `document`,
/// `sticker` and `template`. Outside the user's 24-hour window only a template.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentMessageRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub text: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = MediaLink, required = false)]
    pub image: Option<MediaLink>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = MediaLink, required = false)]
    pub video: Option<MediaLink>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = MediaLink, required = false)]
    pub audio: Option<MediaLink>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = MediaLink, required = false)]
    pub document: Option<MediaLink>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = MediaLink, required = false)]
    pub sticker: Option<MediaLink>,
    /// An approved template, as the Cloud API takes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = super::messages::TemplateRequest, required = false)]
    pub template: Option<super::messages::TemplateRequest>,
}

/// An agent's reply or resolve, stored in the user's loop.
#[derive(Debug, Serialize, ToSchema)]
pub struct Queued {
    pub handover_id: String,
    /// The inbox item it became; it runs in order with the user's messages.
    pub item: u64,
}

/// A resolved handover; the flow goes on in order with the user's messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct Resolved {
    pub handover: HandoverView,
    /// The inbox item that continues the flow.
    pub item: u64,
}

/// The stores of the numbers `opened`, each once, with those numbers.
fn stores(state: &AppState, opened: &[String]) -> Vec<(Arc<dyn Durable>, Vec<String>)> {
    let mut out: Vec<(Arc<dyn Durable>, Vec<String>)> = Vec::new();
    for id in opened {
        let Some(number) = state.runtime.number(id) else {
            continue;
        };
        match out.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &number.store)) {
            Some((_, numbers)) => numbers.push(id.clone()),
            None => out.push((Arc::clone(&number.store), vec![id.clone()])),
        }
    }
    out
}

/// The handover `id` on a number the key opens, with its number; 404 otherwise.
async fn find(
    state: &AppState,
    opened: &[String],
    id: &str,
) -> Result<(Handover, Arc<Number>), ApiError> {
    for (store, numbers) in stores(state, opened) {
        let found = store.handover(id).await.map_err(|e| ApiError::store(&e))?;
        if let Some(h) = found
            && numbers.contains(&h.key.phone_number_id)
            && let Some(number) = state.runtime.number(&h.key.phone_number_id)
        {
            return Ok((h, Arc::clone(number)));
        }
    }
    Err(not_found())
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_handover",
        "no handover with this id on the numbers this key opens",
    )
}

fn ended(h: &Handover) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "handover_ended",
        format!(
            "the handover is {}: the bot has the conversation again",
            h.state.as_str()
        ),
    )
}

/// Handovers on the numbers the key opens, newest first.
#[utoipa::path(
    get,
    path = "/handovers",
    tag = "handovers",
    operation_id = "list_handovers",
    params(ListQuery),
    responses(
        (status = 200, description = "Handovers, newest first", body = HandoverList),
        (status = 401, description = "Missing or wrong key", body = ErrorBody),
        (status = 403, description = "The API is off (no api.key)", body = ErrorBody),
        (status = 422, description = "An unknown state, or a limit out of range", body = ErrorBody),
        (status = 503, description = "The store did not answer", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Opened(opened): Opened,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<axum::Json<HandoverList>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let wanted = match q.state.as_deref() {
        None => None,
        Some(name) => Some(HandoverState::parse(name).ok_or_else(|| {
            ApiError::invalid(format!(
                "state: \"{name}\" is not one of queued, accepted, resolved, timed_out, unavailable"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit: {limit} is out of range (1 to {MAX_LIMIT})"
        )));
    }
    let mut all = Vec::new();
    for (store, numbers) in stores(&state, &opened) {
        let filter = HandoverFilter {
            numbers,
            queue: q.queue.clone(),
            state: wanted,
            limit,
        };
        all.extend(
            store
                .handovers(&filter)
                .await
                .map_err(|e| ApiError::store(&e))?,
        );
    }
    all.sort_by(crate::store::durable::handover::newest_first);
    all.truncate(limit);
    Ok(axum::Json(HandoverList {
        handovers: all.iter().map(HandoverView::from).collect(),
    }))
}

/// One handover with its messages so far.
#[utoipa::path(
    get,
    path = "/handovers/{id}",
    tag = "handovers",
    operation_id = "get_handover",
    params(("id" = String, Path, description = "The handover's id")),
    responses(
        (status = 200, description = "The handover and its messages, oldest first", body = HandoverDetail),
        (status = 401, description = "Missing or wrong key", body = ErrorBody),
        (status = 403, description = "The API is off (no api.key)", body = ErrorBody),
        (status = 404, description = "No such handover on the key's numbers", body = ErrorBody),
        (status = 503, description = "The store did not answer", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn get_one(
    State(state): State<AppState>,
    Opened(opened): Opened,
    path: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<HandoverDetail>, ApiError> {
    let Path(id) = path.map_err(|e| path_rejection(&e))?;
    let (handover, number) = find(&state, &opened, &id).await?;
    let messages = number
        .store
        .handover_messages(&id)
        .await
        .map_err(|e| ApiError::store(&e))?;
    Ok(axum::Json(HandoverDetail::from(&HandoverData {
        handover,
        messages,
    })))
}

/// An agent takes a queued handover.
#[utoipa::path(
    post,
    path = "/handovers/{id}/accept",
    tag = "handovers",
    operation_id = "accept_handover",
    params(("id" = String, Path, description = "The handover's id")),
    request_body = AcceptRequest,
    responses(
        (status = 200, description = "Accepted", body = HandoverView),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong key", body = ErrorBody),
        (status = 403, description = "The API is off (no api.key)", body = ErrorBody),
        (status = 404, description = "No such handover on the key's numbers", body = ErrorBody),
        (status = 409, description = "`not_queued`: accepted by someone already, or ended", body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 415, description = "The body is not sent as JSON", body = ErrorBody),
        (status = 422, description = "The body does not fit (the field is named)", body = ErrorBody),
        (status = 503, description = "The store did not answer", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn accept(
    State(state): State<AppState>,
    Opened(opened): Opened,
    path: Result<Path<String>, PathRejection>,
    Json(req): Json<AcceptRequest>,
) -> Result<axum::Json<HandoverView>, ApiError> {
    let Path(id) = path.map_err(|e| path_rejection(&e))?;
    let agent = req.agent.trim();
    if agent.is_empty() || agent.chars().count() > 200 {
        return Err(ApiError::invalid(
            "agent: give a name of 1 to 200 characters",
        ));
    }
    let (_, number) = find(&state, &opened, &id).await?;
    let change = HandoverChange {
        from: vec![HandoverState::Queued],
        to: HandoverState::Accepted,
        agent: Some(agent.to_string()),
        status: None,
        now: chrono::Utc::now().timestamp_millis(),
    };
    match number
        .store
        .change_handover(&id, &change)
        .await
        .map_err(|e| ApiError::store(&e))?
    {
        Changed::Done(h) => Ok(axum::Json(HandoverView::from(&h))),
        Changed::Conflict(h) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_queued",
            match (&h.state, &h.agent) {
                (HandoverState::Accepted, Some(who)) => {
                    format!("the handover was accepted already (by {who})")
                }
                (state, _) => format!("the handover is {}, not queued", state.as_str()),
            },
        )),
        Changed::NotFound => Err(not_found()),
    }
}

/// An agent's reply to the user, sent through the user's ordered outbox.
#[utoipa::path(
    post,
    path = "/handovers/{id}/messages",
    tag = "handovers",
    operation_id = "send_handover_message",
    params(("id" = String, Path, description = "The handover's id")),
    request_body = AgentMessageRequest,
    responses(
        (status = 202, description = "Queued; sent in order with the user's conversation", body = Queued),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong key", body = ErrorBody),
        (status = 403, description = "The API is off (no api.key)", body = ErrorBody),
        (status = 404, description = "No such handover on the key's numbers", body = ErrorBody),
        (status = 409, description = "`handover_ended`: the bot has the conversation again", body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 415, description = "The body is not sent as JSON", body = ErrorBody),
        (status = 422, description = "The body does not fit (the field is named), a message WhatsApp would refuse, or `window_closed`: outside the 24-hour window only a template may be sent", body = ErrorBody),
        (status = 503, description = "Shutting down, or the store did not answer", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn send_message(
    State(state): State<AppState>,
    Opened(opened): Opened,
    path: Result<Path<String>, PathRejection>,
    Json(req): Json<AgentMessageRequest>,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(|e| path_rejection(&e))?;
    let message = agent_message(req)?;
    let (handover, number) = find(&state, &opened, &id).await?;
    if !handover.state.is_open() {
        return Err(ended(&handover));
    }
    let payload = render::payload(&handover.key.user, &message, None);
    render::check(&payload).map_err(|errors| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_message",
            format!("not a message WhatsApp takes: {}", errors.join("; ")),
        )
    })?;
    let template = message.allowed_outside_window();
    if !template {
        let session = number
            .store
            .load_session(&handover.key)
            .await
            .map_err(|e| ApiError::store(&e))?;
        let now = chrono::Utc::now().timestamp();
        if !session.as_ref().is_some_and(|s| s.window_open(now)) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "window_closed",
                format!("{WINDOW_CLOSED}; send a template instead"),
            ));
        }
    }
    let Some(_admitted) = state.runtime.admit() else {
        return Err(shutting_down());
    };
    let item = state
        .runtime
        .accept_agent(
            handover.key.clone(),
            &id,
            AgentAction::Reply { payload, template },
        )
        .await
        .map_err(|e| ApiError::store(&e))?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Queued {
            handover_id: id,
            item: item.0,
        }),
    )
        .into_response())
}

/// The agent gives the conversation back: the flow goes on at the handover node's
/// `next`, with `handover.status` and the `vars` merged.
#[utoipa::path(
    post,
    path = "/handovers/{id}/resolve",
    tag = "handovers",
    operation_id = "resolve_handover",
    params(("id" = String, Path, description = "The handover's id")),
    request_body = ResolveRequest,
    responses(
        (status = 202, description = "Resolved; the flow goes on in order with the user's messages", body = Resolved),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong key", body = ErrorBody),
        (status = 403, description = "The API is off (no api.key)", body = ErrorBody),
        (status = 404, description = "No such handover on the key's numbers", body = ErrorBody),
        (status = 409, description = "`handover_ended`: resolved, timed out or unavailable already", body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 415, description = "The body is not sent as JSON", body = ErrorBody),
        (status = 422, description = "The body does not fit (the field is named)", body = ErrorBody),
        (status = 503, description = "Shutting down, or the store did not answer", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn resolve(
    State(state): State<AppState>,
    Opened(opened): Opened,
    path: Result<Path<String>, PathRejection>,
    Json(req): Json<ResolveRequest>,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(|e| path_rejection(&e))?;
    let status = req.status.trim().to_string();
    if status.is_empty() || status.chars().count() > 200 {
        return Err(ApiError::invalid("status: give 1 to 200 characters"));
    }
    let (found, number) = find(&state, &opened, &id).await?;
    let Some(_admitted) = state.runtime.admit() else {
        return Err(shutting_down());
    };
    let now = chrono::Utc::now().timestamp_millis();
    let change = HandoverChange {
        from: vec![HandoverState::Queued, HandoverState::Accepted],
        to: HandoverState::Resolved,
        agent: None,
        status: Some(status.clone()),
        now,
    };
    let resolved = match number
        .store
        .change_handover(&id, &change)
        .await
        .map_err(|e| ApiError::store(&e))?
    {
        Changed::Done(h) => h,
        Changed::Conflict(h) => return Err(ended(&h)),
        Changed::NotFound => return Err(not_found()),
    };
    // The record says resolved; the flow goes on when the item's turn runs. Should
    // storing the item fail, the record goes back to what it was, so the agent's retry
    // (after the 503) resolves it again instead of getting a 409 while the
    // conversation stays with nobody.
    let stored = state
        .runtime
        .accept_agent(
            resolved.key.clone(),
            &id,
            AgentAction::Resolve {
                status,
                agent: resolved.agent.clone(),
                vars: req.vars.unwrap_or_default(),
            },
        )
        .await;
    let item = match stored {
        Ok(item) => item,
        Err(e) => {
            let back = HandoverChange {
                from: vec![HandoverState::Resolved],
                to: found.state,
                agent: None,
                status: None,
                now,
            };
            let reverted = number.store.change_handover(&id, &back).await;
            tracing::error!(handover = %id, error = %e, reverted = matches!(reverted, Ok(Changed::Done(_))), "a resolved handover's continuation could not be stored; the resolve was undone, the agent may try again");
            return Err(ApiError::store(&e));
        }
    };
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Resolved {
            handover: HandoverView::from(&resolved),
            item: item.0,
        }),
    )
        .into_response())
}

fn shutting_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "shutting down; retry later",
    )
}

/// The reply as the engine's message: exactly one kind.
fn agent_message(req: AgentMessageRequest) -> Result<Message, ApiError> {
    let AgentMessageRequest {
        text,
        image,
        video,
        audio,
        document,
        sticker,
        template,
    } = req;
    let mut given: Vec<Message> = Vec::new();
    if let Some(body) = text {
        given.push(Message::Text {
            body,
            preview_url: false,
        });
    }
    for (kind, media) in [
        (MediaKind::Image, image),
        (MediaKind::Video, video),
        (MediaKind::Audio, audio),
        (MediaKind::Document, document),
        (MediaKind::Sticker, sticker),
    ] {
        if let Some(m) = media {
            given.push(Message::Media {
                kind,
                source: MediaRef::Link(m.link),
                caption: m.caption,
                filename: m.filename,
            });
        }
    }
    if let Some(t) = template {
        given.push(Message::Template {
            name: t.name,
            language: t.language.code,
            components: t.components,
        });
    }
    match given.len() {
        1 => Ok(given.remove(0)),
        _ => Err(ApiError::invalid(
            "give exactly one of text, image, video, audio, document, sticker and template",
        )),
    }
}
