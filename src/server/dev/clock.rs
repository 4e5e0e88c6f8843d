//! `POST /dev/api/clock`: the simulated clock of local numbers. Moving it forward is
//! what the engine, the timers and the local sink's 24-hour window see: a session
//! times out, a handover's timeout fires, a free-form message is refused (131047) and
//! the node's `on_window_closed` template goes out instead.

use crate::api::error::ApiError;
use crate::delivery::dev_hub::rfc3339;
use crate::server::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

/// The furthest one request moves the clock: ten years.
pub const MAX_ADVANCE_SECS: i64 = 10 * 365 * 24 * 3600;

const FORMS: &str = r#"{"advance_secs": 3600} or {"reset": true}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockRequest {
    advance_secs: Option<i64>,
    reset: Option<bool>,
}

/// `POST /dev/api/clock` → `{"clock_offset_secs", "now"}` (and a `clock` event).
pub async fn clock(
    State(state): State<AppState>,
    _sim: super::Sim,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: ClockRequest = super::json_body(&body, FORMS)?;
    let hub = &state.runtime.dev;
    match (request.advance_secs, request.reset) {
        (Some(secs), None | Some(false)) if secs.abs() <= MAX_ADVANCE_SECS => {
            hub.advance(secs);
        }
        (Some(_), None | Some(false)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!(
                    "\"advance_secs\" moves the clock at most {MAX_ADVANCE_SECS} seconds (ten years) at once"
                ),
            ));
        }
        (None, Some(true)) => hub.reset_clock(),
        (None, None | Some(false)) | (Some(_), Some(true)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("give one of {FORMS}"),
            ));
        }
    }
    Ok(Json(json!({
        "clock_offset_secs": hub.offset_secs(),
        "now": rfc3339(hub.now_ms()),
    })))
}
