//! A simulated user: their history (`GET .../history`), read receipts (`POST .../read`)
//! and a fresh start (`POST .../reset`).

use crate::api::error::ApiError;
use crate::delivery::dev_hub::Entry;
use crate::server::AppState;
use crate::store::SessionKey;
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
pub struct Which {
    /// The simulated number (default: the first one).
    phone_number_id: Option<String>,
}

/// The user of the path, checked, on the number asked for.
fn key(
    sim: &super::Sim,
    path: Result<Path<String>, PathRejection>,
    which: &Which,
) -> Result<(SessionKey, std::sync::Arc<crate::delivery::runtime::Number>), ApiError> {
    let number = sim.number(which.phone_number_id.as_deref())?;
    let Path(user) = path.map_err(|e| crate::api::error::path_rejection(&e))?;
    super::user(&user)?;
    Ok((SessionKey::new(&number.phone_number_id, &user), number))
}

/// `GET /dev/api/users/{user}/history`: what the user sent and was sent since the last
/// reset, oldest first (the page redraws the chat from it).
pub async fn history(
    State(state): State<AppState>,
    sim: super::Sim,
    Query(which): Query<Which>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let (key, _) = key(&sim, path, &which)?;
    let entries = state.runtime.dev.history(&key);
    Ok(Json(entries.iter().map(Entry::to_json).collect()))
}

/// `POST /dev/api/users/{user}/read`: the user opened the chat: every message of the
/// bot not read yet gets a `read` status.
pub async fn read(
    State(state): State<AppState>,
    sim: super::Sim,
    Query(which): Query<Which>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let (key, _) = key(&sim, path, &which)?;
    let unread: Vec<String> = state
        .runtime
        .dev
        .history(&key)
        .into_iter()
        .filter_map(|e| match e {
            Entry::Out(o) if matches!(o.status.as_str(), "sent" | "delivered") => Some(o.wamid),
            Entry::Out(_) | Entry::In(_) => None,
        })
        .collect();
    for wamid in &unread {
        super::phone::status(&state.runtime, &key, wamid, "read").await;
    }
    Ok(Json(json!({ "read": unread })))
}

/// `POST /dev/api/users/{user}/reset`: erases the user's conversation from the store
/// (as the API's erasure does: session, queued messages, timers, records) and the
/// page's history and the user's trace, so the next message starts afresh.
pub async fn reset(
    State(state): State<AppState>,
    sim: super::Sim,
    Query(which): Query<Which>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let (key, number) = key(&sim, path, &which)?;
    let erased = number
        .store
        .delete_user(&key.user)
        .await
        .map_err(|e| ApiError::store(&e))?;
    state.runtime.dev.reset(&key);
    // The inspector starts afresh too.
    state.runtime.trace.forget(&key);
    Ok(Json(json!({ "user": key.user, "sessions_erased": erased })))
}
