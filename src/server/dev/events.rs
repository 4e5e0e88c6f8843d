//! `GET /dev/api/events`: everything that happens to the simulated users, live, as
//! server-sent events (`event:` the [`DevEvent`] name, `data:` its JSON), with a
//! keep-alive comment every 15 s (more often under a shorter `serve --idle-timeout`) so
//! the server, proxies and browsers keep the stream open.

use crate::api::error::ApiError;
use crate::delivery::dev_hub::DevEvent;
use crate::server::AppState;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use std::convert::Infallible;
use std::time::Duration;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::{Stream, StreamExt};

/// How often an idle stream gets a comment line, at most.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How often an idle stream gets a comment line on a server whose connections close
/// after `idle_timeout` without I/O: twice within it, so a quiet stream is never cut.
pub fn keep_alive(idle_timeout: Duration) -> Duration {
    KEEP_ALIVE.min(idle_timeout / 2)
}

/// `GET /dev/api/events`.
pub async fn events(
    State(state): State<AppState>,
    sim: super::Sim,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let stream = BroadcastStream::new(state.runtime.dev.subscribe()).filter_map(move |item| {
        match item {
            // Only the numbers the request may use (a twin's users stay behind its key).
            Ok(event) => match event.phone_number_id() {
                Some(id) if !sim.covers(id) => None,
                Some(_) | None => Some(Ok(sse(&event))),
            },
            // A stream that fell this far behind missed events: the page refetches
            // the history when it sees this comment or reconnects.
            Err(BroadcastStreamRecvError::Lagged(n)) => {
                Some(Ok(Event::default().comment(format!("missed {n} events"))))
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(state.stream_keep_alive)))
}

fn sse(event: &DevEvent) -> Event {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    Event::default().event(event.name()).data(data)
}
