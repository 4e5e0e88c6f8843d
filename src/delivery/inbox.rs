//! The delivery side of a webhook: what each item becomes once the server checked its
//! signature. The HTTP handler only translates HTTP; here items are stored in the
//! durable inbox (deduplicated in the same step) and statuses recorded, before the
//! webhook is acknowledged. `Err` means nothing may be acknowledged: the server answers
//! 503 and Meta redelivers.

use super::codec::{self, FailedItem, MessageItem};
use super::runtime::Runtime;
use crate::engine::{Event, EventKind};
use crate::store::durable::{Accepted, Durable, ItemKind, NewItem};
use crate::store::{SessionKey, StatusRecord, StoreError};
use crate::whatsapp::inbound::Item;
use std::collections::HashMap;
use std::sync::Arc;

impl Runtime {
    /// Stores every item of one webhook (whose signature was checked), in order, and
    /// starts the workers of the users who got new items. Messages for a number this
    /// server does not serve are dropped with a log line.
    pub async fn accept_webhook(self: &Arc<Self>, items: Vec<Item>) -> Result<(), StoreError> {
        // Items are grouped by store (numbers may keep different stores); a user's
        // items keep their order within their store's batch.
        let mut batches: Vec<(Arc<dyn Durable>, Vec<NewItem>)> = Vec::new();
        let mut statuses: Vec<(Arc<dyn Durable>, StatusRecord)> = Vec::new();
        for item in items {
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
                        continue;
                    };
                    if let EventKind::Unsupported(what) = &event.kind {
                        tracing::info!(kind = %what, raw = %raw_type, "a message type the bot cannot use; the fallback flow answers");
                    }
                    let new = message_item(SessionKey::new(&number_id, &user.to_string()), event);
                    push(&mut batches, &number.store, new);
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
                    let Some(number) = phone_number_id.as_deref().and_then(|n| self.number(n))
                    else {
                        continue;
                    };
                    let first_error = errors.first();
                    // A `failed` status is an item of the user's loop: the node that
                    // sent the message takes its `on_error`, in order with the user's
                    // own messages.
                    if let ("failed", Some(user)) = (status.as_str(), recipient.as_deref()) {
                        tracing::warn!(message = %message_id, code = ?first_error.map(|e| e.code), "WhatsApp reports a message failed");
                        let body = FailedItem {
                            v: codec::BODY_VERSION,
                            message_id: message_id.clone(),
                            at,
                            code: first_error.map(|e| e.code),
                            title: first_error.map(|e| e.title.clone()),
                        };
                        let new = NewItem {
                            key: SessionKey::new(&number.phone_number_id, user),
                            dedupe: Some(format!("failed:{message_id}")),
                            kind: ItemKind::Status,
                            body: codec::encode(&body),
                            at: at.saturating_mul(1000),
                        };
                        push(&mut batches, &number.store, new);
                    }
                    let record = StatusRecord {
                        message_id,
                        status,
                        at,
                        recipient,
                        error_code: first_error.map(|e| e.code),
                        error_title: first_error.map(|e| e.title.clone()),
                    };
                    statuses.push((Arc::clone(&number.store), record));
                }
                Item::Error { errors, .. } => {
                    for e in errors {
                        tracing::warn!(code = e.code, title = %e.title, "WhatsApp reports an error");
                    }
                }
                Item::Other { field } => tracing::debug!(%field, "webhook field not handled"),
            }
        }
        for (store, record) in statuses {
            store.record_status(&record).await?;
        }
        self.store_and_kick(batches).await
    }

    /// Stores one message for a user and starts their worker (`/dev/message`).
    pub async fn accept_message(
        self: &Arc<Self>,
        key: SessionKey,
        event: Event,
    ) -> Result<(), StoreError> {
        let Some(number) = self.number(&key.phone_number_id) else {
            return Err(StoreError(format!("no bot serves {}", key.phone_number_id)));
        };
        let store = Arc::clone(&number.store);
        self.store_and_kick(vec![(store, vec![message_item(key, event)])])
            .await
    }

    async fn store_and_kick(
        self: &Arc<Self>,
        batches: Vec<(Arc<dyn Durable>, Vec<NewItem>)>,
    ) -> Result<(), StoreError> {
        let mut kicks: HashMap<SessionKey, ()> = HashMap::new();
        for (store, items) in batches {
            let keys: Vec<SessionKey> = items.iter().map(|i| i.key.clone()).collect();
            let accepted = store.accept(items).await?;
            for (key, a) in keys.into_iter().zip(accepted) {
                match a {
                    Accepted::Stored(_) => {
                        kicks.insert(key, ());
                    }
                    Accepted::Duplicate => {
                        tracing::debug!(number = %key.phone_number_id, "duplicate delivery dropped");
                    }
                }
            }
        }
        for key in kicks.keys() {
            self.kick(key);
        }
        Ok(())
    }
}

fn message_item(key: SessionKey, event: Event) -> NewItem {
    let at = event.at.saturating_mul(1000);
    NewItem {
        key,
        dedupe: event.id.clone(),
        kind: ItemKind::Message,
        body: codec::encode(&MessageItem {
            v: codec::BODY_VERSION,
            event,
        }),
        at,
    }
}

fn push(
    batches: &mut Vec<(Arc<dyn Durable>, Vec<NewItem>)>,
    store: &Arc<dyn Durable>,
    item: NewItem,
) {
    match batches.iter_mut().find(|(s, _)| Arc::ptr_eq(s, store)) {
        Some((_, items)) => items.push(item),
        None => batches.push((Arc::clone(store), vec![item])),
    }
}
