//! Who may use the API: `Authorization: Bearer <api.key>`. Each bot's key opens that
//! bot's number; the key is compared with every bot's key in constant time
//! (`server::admin`). Without any key configured the API is off (403 saying to set
//! `api.key`), except for a bot in local mode (no WhatsApp credentials) without a key
//! of its own: its number is open to requests without a key, as `/dev/message` is.

use super::error::ApiError;
use crate::server::{AppState, admin};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};

/// The numbers the request may act on (at least one).
#[derive(Debug)]
pub struct Opened(pub Vec<String>);

impl FromRequestParts<AppState> for Opened {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let keys = &state.admin_keys;
        // Local numbers without a key of their own: open.
        let mut open: Vec<String> = state
            .runtime
            .numbers()
            .filter(|n| n.transport.is_local())
            .filter(|n| !keys.iter().any(|k| k.phone_number_id == n.phone_number_id))
            .map(|n| n.phone_number_id.clone())
            .collect();
        open.sort();
        if keys.is_empty() && open.is_empty() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "api_off",
                "the API is off: no bot sets api.key; set api.key in a bot's parlance.yaml (then send it as Authorization: Bearer <key>)",
            ));
        }
        let Some(given) = parts.headers.get(header::AUTHORIZATION) else {
            if !open.is_empty() {
                return Ok(Opened(open));
            }
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send the bot's api.key as Authorization: Bearer <key>",
            ));
        };
        let given = given
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let mut opened: Vec<String> = admin::opened_numbers(keys, given)
            .into_iter()
            .map(str::to_string)
            .collect();
        if opened.is_empty() {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the Bearer key is not any bot's api.key",
            ));
        }
        opened.sort();
        opened.dedup();
        Ok(Opened(opened))
    }
}
