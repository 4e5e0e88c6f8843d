//! `/dev`: the WhatsApp-like simulator of local numbers (docs/simulator.md). The page's
//! files are embedded in the binary ([`assets`]); its data comes from `/dev/api/...`:
//!
//! - [`info`]: what is served (`/dev/api/info`) and the flow graph (`/dev/api/graph`).
//! - [`events`]: the live stream (`/dev/api/events`, server-sent events).
//! - [`messages`]: a simulated user's message (`POST /dev/api/message`).
//! - [`users`]: a user's history, read receipts and reset.
//! - [`clock`]: the simulated clock.
//! - [`record`]: a conversation on screen → a `tests/*.yaml` conversation test.
//! - [`phone`]: what the simulated phone does by itself: statuses for the bot's
//!   messages (through the webhook's own status path) and reload notices.
//!
//! What happens to local numbers' users is told by the per-user loop to the
//! [`DevHub`](crate::delivery::dev_hub::DevHub); the handlers here only translate HTTP.
//!
//! Architecture Invariant: these routes act on local numbers only (no WhatsApp
//! credentials: nothing reaches Meta); with credentials they answer 404.

use super::AppState;
use crate::api::error::ApiError;
use crate::delivery::runtime::Number;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use std::sync::Arc;

pub mod assets;
pub mod clock;
pub mod events;
pub mod info;
pub mod messages;
pub mod phone;
pub mod record;
pub mod users;

pub use phone::spawn;

/// The simulator's routes (merged into `server::app`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(assets::root))
        .route("/dev", get(assets::index))
        .route("/dev/", get(assets::index))
        .route("/dev/assets/{*path}", get(assets::file))
        .route("/dev/api/info", get(info::info))
        .route("/dev/api/graph", get(info::graph))
        .route("/dev/api/events", get(events::events))
        .route("/dev/api/message", post(messages::message))
        .route("/dev/api/users/{user}/history", get(users::history))
        .route("/dev/api/users/{user}/read", post(users::read))
        .route("/dev/api/users/{user}/reset", post(users::reset))
        .route("/dev/api/clock", post(clock::clock))
        .route("/dev/api/record", post(record::record))
}

/// What a server with WhatsApp credentials answers on `/dev`: where the simulator is
/// and how it would be enabled.
pub const OFF_MESSAGE: &str = "the /dev simulator is served in local mode only (a bot without WhatsApp credentials); this server's bots have credentials. Run the bot without whatsapp.access_token to use it. (Serving it next to real numbers needs `dev.enabled: true` in parlance.yaml, with requests carrying Authorization: Bearer <api.key>; this build does not have that setting yet.)";

/// The numbers the simulator drives: the local ones, sorted by id.
pub fn simulated(state: &AppState) -> Vec<Arc<Number>> {
    let mut numbers: Vec<Arc<Number>> = state
        .runtime
        .numbers()
        .filter(|n| n.transport.is_local())
        .cloned()
        .collect();
    numbers.sort_by(|a, b| a.phone_number_id.cmp(&b.phone_number_id));
    numbers
}

/// The number a request acts on: `wanted`, or the first simulated one; 404 when the
/// simulator is off or `wanted` is not simulated.
pub fn number(state: &AppState, wanted: Option<&str>) -> Result<Arc<Number>, ApiError> {
    let numbers = simulated(state);
    if numbers.is_empty() {
        return Err(off());
    }
    match wanted {
        None => Ok(Arc::clone(&numbers[0])),
        Some(id) => numbers
            .into_iter()
            .find(|n| n.phone_number_id == id)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no simulated number \"{id}\" (only local numbers are)"),
                )
            }),
    }
}

/// 404: the simulator is off on this server.
pub fn off() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "dev_off", OFF_MESSAGE)
}

/// The simulated user of a route's path: a WhatsApp id, as the API takes it.
pub fn user(user: &str) -> Result<(), ApiError> {
    crate::api::users::check_user(user)
}

/// A request body's JSON, or 400 saying what was wrong with it.
pub fn json_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    expected: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("{e}; expected {expected}"),
        )
    })
}
