//! The session trace: `GET /api/v1/users/{user}/trace` answers "why did the bot say
//! this?" with the user's newest turns as this instance ran them
//! ([`crate::delivery::trace`]: in memory, per instance, bounded).

use super::auth::Opened;
use super::error::{ApiError, ErrorBody, path_rejection};
use super::users::check_user;
use crate::delivery::trace::{NumberTrace, UserTrace};
use crate::server::AppState;
use crate::store::SessionKey;
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;

/// The user's newest turns on the numbers the key opens, as this instance ran them:
/// the inbound event, the nodes visited with where they are written, the variables
/// before and after (`pii: true` ones masked unless the number is local), each
/// outgoing payload as posted with its wamid and delivery status, problems, and where
/// the conversation stands after. Kept in memory by each instance: the newest 50
/// turns per user, for a bounded number of users; a restart empties it.
#[utoipa::path(
    get,
    path = "/users/{user}/trace",
    tag = "trace",
    operation_id = "user_trace",
    params(("user" = String, Path, description = "The user's WhatsApp id (E.164 without +)", pattern = r"^[0-9]{1,15}$")),
    responses(
        (status = 200, description = "The user's turns, oldest first, per number", body = UserTrace),
        (status = 400, description = "Not a WhatsApp id", body = ErrorBody),
        (status = 401, description = "Missing or wrong key", body = ErrorBody),
        (status = 403, description = "The API is off (no api.key)", body = ErrorBody),
        (status = 404, description = "This instance ran no turn of the user on the numbers the key opens", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn user_trace(
    State(state): State<AppState>,
    Opened(opened): Opened,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<UserTrace>, ApiError> {
    let Path(user) = path.map_err(|e| path_rejection(&e))?;
    check_user(&user)?;
    let numbers: Vec<NumberTrace> = opened
        .iter()
        .filter_map(|number| {
            let turns = state.runtime.trace.turns(&SessionKey::new(number, &user))?;
            (!turns.is_empty()).then(|| NumberTrace {
                phone_number_id: number.clone(),
                turns,
            })
        })
        .collect();
    if numbers.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_trace",
            "this instance ran no turn of this user on the numbers this key opens (the trace is kept in memory by each instance, and a restart empties it)",
        ));
    }
    Ok(Json(UserTrace { user, numbers }))
}
