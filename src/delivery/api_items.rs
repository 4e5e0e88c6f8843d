//! What the API (`/api/v1/inject`, `/api/v1/notify`) puts in a user's loop: inbox items
//! like any other, so they are durable and handled in order with the user's own
//! messages, by the same worker, through the same outbox and sender. The HTTP side
//! (`crate::api`) checks the request; here it is stored, its turn awaited, and a
//! notify's message queued.

use super::codec::{self, InjectItem, Notify, NotifyItem, OutgoingBody};
use super::runtime::{Runtime, TurnReport, now_ms};
use super::turn::Ran;
use crate::engine::{Event, EventKind, Message, Session};
use crate::render;
use crate::store::durable::{Accepted, DirectOutgoing, ItemId, ItemKind, NewItem};
use crate::store::{SessionKey, StoreError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The flow and node a notify's message is filed under (dead letters, `failed`
/// statuses): no flow sent it.
pub const NOTIFY_FLOW: &str = "api";
pub const NOTIFY_NODE: &str = "notify";

/// What the API asks of a user's loop.
#[derive(Debug, Clone)]
pub enum ApiRequest {
    /// A message as if the user sent it (`EventKind::Injected`).
    Inject(EventKind),
    /// A message (or a flow) straight to the user.
    Notify(Notify),
}

/// How an API item's turn went.
#[derive(Debug)]
pub enum ApiOutcome {
    /// The turn ran within the wait: what it queued.
    Done { item: ItemId, report: TurnReport },
    /// Stored, but its turn did not finish within the wait; it runs in order.
    Pending { item: ItemId },
}

impl Runtime {
    /// Stores `request` as the user's next inbox item, starts their worker and waits up
    /// to `wait` for the item's turn. `Err` when the store did not take it (nothing was
    /// stored).
    pub async fn accept_api(
        self: &Arc<Self>,
        key: SessionKey,
        request: ApiRequest,
        wait: Duration,
    ) -> Result<ApiOutcome, StoreError> {
        let Some(number) = self.number(&key.phone_number_id).cloned() else {
            return Err(StoreError(format!("no bot serves {}", key.phone_number_id)));
        };
        let now = now_ms();
        let id = request_id(now);
        let (kind, body) = match request {
            ApiRequest::Inject(kind) => (
                ItemKind::Inject,
                codec::encode(&InjectItem {
                    v: codec::BODY_VERSION,
                    request: id.clone(),
                    event: Event {
                        id: None,
                        at: now.div_euclid(1000),
                        contact_name: None,
                        kind: EventKind::Injected(Box::new(kind)),
                    },
                }),
            ),
            ApiRequest::Notify(notify) => (
                ItemKind::Notify,
                codec::encode(&NotifyItem {
                    v: codec::BODY_VERSION,
                    request: id.clone(),
                    at: now.div_euclid(1000),
                    notify,
                }),
            ),
        };
        let item = NewItem {
            key: key.clone(),
            // Every request is its own item: the API has no redeliveries to drop.
            dedupe: None,
            kind,
            body,
            at: now,
        };
        // Registered before the item is stored: its turn may run at once.
        let (done, report) = tokio::sync::oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), done);
        let stored = match number.store.accept(vec![item]).await {
            Ok(accepted) => accepted.into_iter().next(),
            Err(e) => {
                self.forget_waiter(&id);
                return Err(e);
            }
        };
        let Some(Accepted::Stored(item)) = stored else {
            self.forget_waiter(&id);
            return Err(StoreError(
                "the store did not take the item (a duplicate of nothing)".into(),
            ));
        };
        self.kick(&key);
        match tokio::time::timeout(wait, report).await {
            Ok(Ok(report)) => Ok(ApiOutcome::Done { item, report }),
            Ok(Err(_)) | Err(_) => {
                self.forget_waiter(&id);
                Ok(ApiOutcome::Pending { item })
            }
        }
    }
}

/// A request id no other request of this process has: the waiter's key.
fn request_id(now: i64) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("api.{now}.{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// What a notify item asks of the turn: a flow to run (as an event), or one message to
/// queue as is.
pub(super) enum NotifyInput {
    Event(Event),
    Send(Message),
}

pub(super) fn notify_input(item: NotifyItem) -> NotifyInput {
    match item.notify {
        Notify::Flow { flow, node } => NotifyInput::Event(Event {
            id: None,
            at: item.at,
            contact_name: None,
            kind: EventKind::StartFlow { flow, node },
        }),
        Notify::Text(body) => NotifyInput::Send(Message::Text {
            body,
            preview_url: false,
        }),
        Notify::Template {
            name,
            language,
            components,
        } => NotifyInput::Send(Message::Template {
            name,
            language,
            components,
        }),
    }
}

/// Why a notify's text cannot go out: the 24-hour window is closed (or never opened).
pub const WINDOW_CLOSED: &str = "the user's 24-hour window is closed (the user has not written in the last 24 hours, or never): only a template may be sent";

/// A notify's message as a turn: queued in the user's outbox as is, the session
/// unchanged. The window is judged again here (it may have closed since the request
/// was checked): then nothing is queued and the report says why.
pub(super) fn send(key: &SessionKey, session: Session, message: &Message, now_ms: i64) -> Ran {
    let mut report = TurnReport::default();
    let mut outgoing = Vec::new();
    let payload = render::payload(&key.user, message, None);
    if !message.allowed_outside_window() && !session.window_open(now_ms.div_euclid(1000)) {
        report.problems.push(format!("error: {WINDOW_CLOSED}"));
    } else if let Err(errors) = render::check(&payload) {
        report
            .problems
            .push(format!("error: not a valid message: {}", errors.join("; ")));
    } else {
        report.sent.push(payload.clone());
        outgoing.push(DirectOutgoing {
            not_before: now_ms,
            body: codec::encode(&OutgoingBody {
                v: codec::BODY_VERSION,
                flow: NOTIFY_FLOW.into(),
                node: NOTIFY_NODE.into(),
                queued_at: now_ms,
                payload,
                instead: None,
                to: codec::Destination::Graph,
                checked: true,
            }),
        });
    }
    Ran {
        session,
        outgoing,
        report,
        effect: None,
        handover: super::turn::HandoverActs::default(),
        trace: None,
    }
}

/// A notify's message for the session trace: one line, and what kind it is.
pub(super) fn describe(message: &Message) -> (String, serde_json::Value) {
    match message {
        Message::Text { body, .. } => (
            format!("notify: {body}"),
            serde_json::json!({ "type": "text", "text": body }),
        ),
        Message::Template { name, language, .. } => (
            format!("notify: template {name}"),
            serde_json::json!({ "type": "template", "name": name, "language": language }),
        ),
        other => (
            "notify".to_string(),
            serde_json::json!({ "type": other.kind_name() }),
        ),
    }
}
