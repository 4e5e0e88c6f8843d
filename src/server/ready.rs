//! `/readyz`: whether this server should be sent traffic now. `/healthz` only says the
//! process answers (liveness: restart it when it does not); `/readyz` says whether it
//! can do its work: not shutting down, every bot's store answering, and every number able
//! to send (not paused by an auth error). A balancer or
//! Kubernetes takes an unready server out of rotation without restarting it.

use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::time::Duration;

/// How long a store may take to answer the probe before it counts as not answering.
pub const STORE_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// 200 when ready, 503 with the problems otherwise; the body says the same in JSON.
/// Open like `/healthz`: it names phone number ids and problems, no personal data.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut problems = Vec::new();
    if let Some(why) = state.runtime.closed() {
        problems.push(why);
    }
    let mut numbers: Vec<_> = state.runtime.numbers().cloned().collect();
    numbers.sort_by(|a, b| a.phone_number_id.cmp(&b.phone_number_id));
    let mut bots = Vec::new();
    for number in numbers {
        let ping = tokio::time::timeout(STORE_PING_TIMEOUT, number.store.ping()).await;
        let store = match ping {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "store: no answer within {} s",
                STORE_PING_TIMEOUT.as_secs()
            )),
        };
        if let Some(e) = &store {
            problems.push(format!("{}: {e}", number.phone_number_id));
        }
        // Sending paused by an auth error: this server cannot do its work for the
        // number until its credentials change.
        let sending = number.paused().map(|why| format!("paused: {why}"));
        if let Some(why) = &sending {
            problems.push(format!("{}: sending {why}", number.phone_number_id));
        }
        // A bot is loaded once it is served: startup refuses a bot with errors, and a
        // failed reload keeps the last good version serving (`/admin/status` shows why).
        let version = number.live.report().version;
        bots.push(json!({
            "phone_number_id": number.phone_number_id,
            "version": version,
            "store": store.as_deref().unwrap_or("ok"),
            "sending": sending.as_deref().unwrap_or("ok"),
        }));
    }
    let ready = problems.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({ "ready": ready, "problems": problems, "bots": bots })),
    )
        .into_response()
}
