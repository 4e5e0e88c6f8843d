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
//! Architecture Invariant: these routes act on local numbers only (nothing reaches
//! Meta): a bot without WhatsApp credentials, or the local twin of a bot with
//! `dev.enabled: true` (`cli::serve` builds it). The page and its files are served
//! whenever a number is simulated; the data routes take [`Sim`], which opens a twin only
//! to requests carrying its bot's `api.key`. Nothing simulated: 404.

use super::{AppState, admin};
use crate::api::error::ApiError;
use crate::delivery::runtime::Number;
use crate::flow::settings::Simulated;
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
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

/// What a server without simulated numbers answers on `/dev`: where the simulator is
/// and how it would be enabled.
pub const OFF_MESSAGE: &str = "the /dev simulator is not served here: it runs for bots in local mode (no WhatsApp credentials), and beside a real number only with `dev.enabled: true` (and api.key) in the bot's parlance.yaml; a bot with `dev.enabled: false` has it off";

/// The numbers the simulator drives: local numbers whose bot has it on (a local bot
/// without `dev.enabled: false`, or a `dev.enabled` bot's twin), sorted by id.
pub fn simulated(state: &AppState) -> Vec<Arc<Number>> {
    let mut numbers: Vec<Arc<Number>> = state
        .runtime
        .numbers()
        .filter(|n| n.transport.is_local())
        .filter(|n| n.live.bot().settings.simulated() != Simulated::No)
        .cloned()
        .collect();
    numbers.sort_by(|a, b| a.phone_number_id.cmp(&b.phone_number_id));
    numbers
}

/// The simulated numbers a request may act on (at least one): local bots (open, as
/// `/dev/message` always was: nothing they do reaches Meta, and `serve` binds loopback
/// by default), and twins beside real numbers whose bot's key the request carries as
/// `Authorization: Bearer`. A twin without the key is never open (the loader requires
/// one). 404 when nothing is simulated, 401 when the request opens nothing.
pub struct Sim(Vec<Arc<Number>>);

impl FromRequestParts<AppState> for Sim {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let numbers = simulated(state);
        if numbers.is_empty() {
            return Err(off());
        }
        let keys = &state.admin_keys;
        let locked = |n: &Number| n.live.bot().settings.simulated() == Simulated::Twin;
        let given = parts.headers.get(header::AUTHORIZATION).map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
        });
        let opened = admin::opened_numbers(keys, given.flatten());
        if given.is_some() && opened.is_empty() {
            return Err(unauthorized("the Bearer key is not any bot's api.key"));
        }
        let allowed: Vec<Arc<Number>> = numbers
            .into_iter()
            .filter(|n| !locked(n) || opened.contains(&n.phone_number_id.as_str()))
            .collect();
        if allowed.is_empty() {
            return Err(unauthorized(
                "the simulator is behind api.key here: send the bot's api.key as Authorization: Bearer <key> (the page asks for it)",
            ));
        }
        Ok(Sim(allowed))
    }
}

impl Sim {
    /// Every number the request may use, by id.
    pub fn numbers(&self) -> &[Arc<Number>] {
        &self.0
    }

    /// The first number the request may use (there is one: the extractor refuses
    /// requests that may use none).
    pub fn first(&self) -> Arc<Number> {
        Arc::clone(&self.0[0])
    }

    /// The number a request acts on: `wanted`, or the first one it may act on; 404
    /// when `wanted` is not one of them.
    pub fn number(&self, wanted: Option<&str>) -> Result<Arc<Number>, ApiError> {
        match wanted {
            None => Ok(self.first()),
            Some(id) => self
                .0
                .iter()
                .find(|n| n.phone_number_id == id)
                .cloned()
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        format!("no simulated number \"{id}\" that this request may use"),
                    )
                }),
        }
    }

    /// Whether the request may see what happens on `phone_number_id`.
    pub fn covers(&self, phone_number_id: &str) -> bool {
        self.0.iter().any(|n| n.phone_number_id == phone_number_id)
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
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
