//! The delivery side of a webhook: what each item becomes once the server checked its
//! signature. The HTTP handler only translates HTTP; dedupe, queueing and status
//! records happen here, where the durable inbox is to come.

use super::runtime::{Job, Number, Runtime, mask};
use crate::engine::{Event, EventKind, NO_FAILURE_REASON};
use crate::store::StatusRecord;
use crate::whatsapp::inbound::{self, Item};
use std::sync::Arc;

impl Runtime {
    /// Takes one item of a webhook whose signature was checked: a message is queued
    /// for its user (once: a redelivered id is dropped), a status is recorded and a
    /// `failed` one reported to the conversation of its message. Call in arrival
    /// order: a user's messages are answered in the order they are queued here.
    pub async fn accept(self: &Arc<Self>, item: Item) {
        match item {
            Item::Message {
                phone_number_id,
                user,
                event,
                raw_type,
            } => {
                let number_id = phone_number_id.unwrap_or_default();
                let Some(number) = self.number(&number_id) else {
                    tracing::warn!(number = %number_id, "a message for a number this server does not serve");
                    return;
                };
                let user = user.to_string();
                if let Some(id) = event.id.clone() {
                    let store = Arc::clone(&number.store);
                    let at = event.at;
                    let first =
                        tokio::task::spawn_blocking(move || store.first_delivery(&id, at)).await;
                    match first {
                        Ok(Ok(true)) => {}
                        Ok(Ok(false)) => {
                            tracing::debug!(to = %mask(&user), "duplicate delivery dropped");
                            return;
                        }
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "cannot check for duplicates; handling the message")
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "duplicate check failed; handling the message")
                        }
                    }
                }
                if let EventKind::Unsupported(what) = &event.kind {
                    tracing::info!(kind = %what, raw = %raw_type, "a message type the bot cannot use; the fallback flow answers");
                }
                if let Err(e) = self.submit(&number_id, &user, Job { event, done: None }) {
                    tracing::warn!(number = %e.0, "message for an unknown number");
                }
            }
            Item::Status {
                phone_number_id,
                message_id,
                status,
                recipient,
                at,
                errors,
                ..
            } => {
                let Some(number) = phone_number_id.as_deref().and_then(|n| self.number(n)) else {
                    return;
                };
                let first_error = errors.first();
                if status == "failed" {
                    tracing::warn!(message = %message_id, code = ?first_error.map(|e| e.code), "WhatsApp reports a message failed");
                    self.report_failure(number, &message_id, at, first_error)
                        .await;
                }
                let record = StatusRecord {
                    message_id,
                    status,
                    at,
                    recipient,
                    error_code: first_error.map(|e| e.code),
                    error_title: first_error.map(|e| e.title.clone()),
                };
                let store = Arc::clone(&number.store);
                if let Ok(Err(e)) =
                    tokio::task::spawn_blocking(move || store.record_status(&record)).await
                {
                    tracing::error!(error = %e, "cannot record a status");
                }
            }
            Item::Error { errors, .. } => {
                for e in errors {
                    tracing::warn!(code = e.code, title = %e.title, "WhatsApp reports an error");
                }
            }
            Item::Other { field } => tracing::debug!(%field, "webhook field not handled"),
        }
    }

    /// A `failed` status: the conversation of the message hears of it (its node's
    /// `on_error`), in order with the user's own messages.
    async fn report_failure(
        self: &Arc<Self>,
        number: &Number,
        message_id: &str,
        at: i64,
        error: Option<&inbound::ApiError>,
    ) {
        let store = Arc::clone(&number.store);
        let id = message_id.to_string();
        let sent = match tokio::task::spawn_blocking(move || store.sent(&id)).await {
            Ok(Ok(Some(sent))) => sent,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot look up a failed message");
                return;
            }
            Err(_) => return,
        };
        let event = Event {
            id: None,
            at,
            contact_name: None,
            kind: EventKind::DeliveryFailed {
                flow: sent.flow,
                node: sent.node,
                code: error.map(|e| e.code),
                reason: error.map_or_else(|| NO_FAILURE_REASON.to_string(), |e| e.title.clone()),
            },
        };
        if let Err(e) = self.submit(
            &sent.key.phone_number_id,
            &sent.key.user,
            Job { event, done: None },
        ) {
            tracing::warn!(number = %e.0, "a failed message for a number this server does not serve");
        }
    }
}
