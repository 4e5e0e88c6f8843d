//! The delivery side of a webhook: what each item becomes once the server checked its
//! signature. The HTTP handler only translates HTTP; here items are stored in the
//! durable inbox (deduplicated in the same step) and statuses recorded, before the
//! webhook is acknowledged. `Err` means nothing may be acknowledged: the server answers
//! 503 and Meta redelivers.

use super::codec::{self, FailedItem, MessageItem};
use super::runtime::{Number, Offer, Reading, Runtime, WorkerState, now_ms};
use super::turn::{KeptSession, Ran};
use crate::engine::{Event, EventKind, Session, State};
use crate::store::durable::{
    Accepted, CommitError, Direct, DirectTurn, Durable, ItemKind, NewItem,
};
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
        let mut batches: Vec<(Arc<dyn Durable>, Vec<Incoming>)> = Vec::new();
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
                    let key = SessionKey::new(&number_id, &user.to_string());
                    push(&mut batches, &number.store, Incoming::Message(key, event));
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
                        push(&mut batches, &number.store, Incoming::Item(new));
                    }
                    // The status of an agent's reply goes to the agent webhook, in order
                    // with the user's items (a `status` event). Looked up only for bots
                    // that hand over.
                    if let Some(user) = recipient.as_deref()
                        && number.live.bot().settings.handover.is_some()
                        && let Some(sent) = number.store.sent(&message_id).await?
                        && super::handover::is_agent_reply(&sent)
                    {
                        let action = codec::AgentAction::Status {
                            message_id: message_id.clone(),
                            status: status.clone(),
                            at,
                            error_code: first_error.map(|e| e.code),
                            error_title: first_error.map(|e| e.title.clone()),
                        };
                        let key = SessionKey::new(&number.phone_number_id, user);
                        let new = NewItem {
                            key,
                            dedupe: Some(format!("agent-status:{message_id}:{status}")),
                            kind: ItemKind::AgentReply,
                            body: codec::encode(&codec::AgentItem {
                                v: codec::BODY_VERSION,
                                handover_id: String::new(),
                                at: at.saturating_mul(1000),
                                action,
                            }),
                            at: at.saturating_mul(1000),
                        };
                        push(&mut batches, &number.store, Incoming::Item(new));
                    }
                    if let Some(user) = recipient.as_deref() {
                        let key = SessionKey::new(&number.phone_number_id, user);
                        let error = first_error.map(|e| format!("{}: {}", e.code, e.title));
                        self.trace
                            .status(&key, &message_id, &status, error.as_deref());
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
        self.store_and_kick(vec![(store, vec![Incoming::Message(key, event)])])
            .await
    }

    async fn store_and_kick(
        self: &Arc<Self>,
        batches: Vec<(Arc<dyn Durable>, Vec<Incoming>)>,
    ) -> Result<(), StoreError> {
        let mut kicks: HashMap<SessionKey, ()> = HashMap::new();
        for (store, mut items) in batches {
            // One message alone (nearly every webhook) may take the direct path.
            if let [Incoming::Message(key, _)] = &items[..]
                && store.takes_direct_turns()
                && let Some(number) = self.number(&key.phone_number_id).cloned()
                && let Some(Incoming::Message(key, event)) = items.pop()
            {
                match self.offer(&key, event).await {
                    Offer::Claimed(signal, event) => {
                        let mut state = WorkerState::default();
                        let done = self.direct(&number, &key, event, &mut state).await;
                        // Whatever happened, the worker goes on from here: it sends what
                        // the turn queued, runs an item the store declined, or lets the
                        // lease go.
                        self.start_worker(number, key, signal, state);
                        done?;
                        continue;
                    }
                    Offer::Handled(done) => {
                        done?;
                        continue;
                    }
                    Offer::Store(event) => items.push(Incoming::Message(key, event)),
                }
            }
            let items: Vec<NewItem> = items.into_iter().map(Incoming::into_item).collect();
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

    /// The direct path, run by the user's worker (a caller that just became it, or the
    /// running worker a webhook handed the message to): runs the message's turn at once
    /// and commits it with the dedupe record in one write, instead of storing the
    /// message, reading it back and committing the turn. The store declines when the
    /// user has items waiting (they go first): the message is then stored as usual, for
    /// the worker to run in order. `Ok` means the message is durable (or a duplicate):
    /// `Ok(true)` when its turn committed, `Ok(false)` when it was stored for the worker
    /// instead or was a duplicate.
    pub(super) async fn direct(
        &self,
        number: &Number,
        key: &SessionKey,
        event: Event,
        state: &mut WorkerState,
    ) -> Result<bool, StoreError> {
        let started = std::time::Instant::now();
        let store = &number.store;
        let Some(lease) = self.hold(number, key, state, Reading::Session).await? else {
            // Another instance runs the user's turns: the item waits for it.
            return store_one(store, message_item(key.clone(), event))
                .await
                .map(|()| false);
        };
        let now_ms = now_ms();
        // The worker's own, when it runs this (a handed message), else read.
        let session = match self.session_of(number, &lease, state).await? {
            Some(s) => s,
            None => Session::new(&key.user, self.engine_ms(number, now_ms).div_euclid(1000)),
        };
        // A session waiting for an effect lets its items wait in order, and a turn
        // that stops at one commits with its watchdog: both are the worker's.
        // A handed-over conversation forwards its messages to the agent, which the
        // worker's turn does (the handover's record is read and written).
        if matches!(session.state, State::Effect { .. } | State::Handover { .. }) {
            return store_one(store, message_item(key.clone(), event))
                .await
                .map(|()| false);
        }
        let Ran {
            session,
            outgoing,
            report,
            effect,
            handover,
            trace: draft,
        } = self.run(number, key, session, &event, now_ms);
        if effect.is_some() || handover.to_agent || handover.started.is_some() {
            return store_one(store, message_item(key.clone(), event))
                .await
                .map(|()| false);
        }
        let kept = KeptSession {
            token: lease.token,
            session: Some(session.clone()),
        };
        let bodies = draft.as_ref().map(|_| super::turn::bodies_of(&outgoing));
        let turn = DirectTurn {
            item: NewItem {
                key: key.clone(),
                dedupe: event.id.clone(),
                kind: ItemKind::Message,
                // Never stored: the turn ran already.
                body: String::new(),
                at: event.at.saturating_mul(1000),
            },
            session,
            outgoing,
        };
        match store.accept_turn(&lease, now_ms, turn).await {
            Ok(Direct::Committed(item, next)) => {
                if let (Some(draft), Some(bodies)) = (draft, bodies) {
                    self.trace.record(key, draft, item.0, 0, bodies);
                }
                self.metrics.turns.inc();
                self.dev_turn(number, key, event.id.as_deref(), Some(item.0), &report);
                state.session = Some(kept);
                state.next_out = next;
                // The store found the inbox empty; later items raise the worker's
                // signal (see `WorkerState::inbox_empty`).
                state.inbox_empty = store.single_process();
                self.metrics
                    .turn_seconds
                    .observe(started.elapsed().as_secs_f64());
                if let Some(id) = &event.id {
                    self.answer_waiter(id, report);
                    state.mark_read = Some(id.clone());
                }
                Ok(true)
            }
            Ok(Direct::Duplicate) => {
                tracing::debug!(number = %key.phone_number_id, "duplicate delivery dropped");
                Ok(false)
            }
            // The turn is dropped unwritten; the worker runs the stored item in order.
            Ok(Direct::Declined) => store_one(store, message_item(key.clone(), event))
                .await
                .map(|()| false),
            // The lease was lost meanwhile: whoever holds it now runs the stored item.
            Err(CommitError::Fenced) => {
                state.lease = None;
                store_one(store, message_item(key.clone(), event))
                    .await
                    .map(|()| false)
            }
            Err(CommitError::Store(e)) => Err(e),
        }
    }
}

/// An item on its way to the inbox; a message keeps its event for the direct path.
enum Incoming {
    Message(SessionKey, Event),
    Item(NewItem),
}

impl Incoming {
    fn into_item(self) -> NewItem {
        match self {
            Incoming::Message(key, event) => message_item(key, event),
            Incoming::Item(item) => item,
        }
    }
}

/// Stores one item (the worker about to run finds it).
async fn store_one(store: &Arc<dyn Durable>, item: NewItem) -> Result<(), StoreError> {
    store.accept(vec![item]).await.map(drop)
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
    batches: &mut Vec<(Arc<dyn Durable>, Vec<Incoming>)>,
    store: &Arc<dyn Durable>,
    item: Incoming,
) {
    match batches.iter_mut().find(|(s, _)| Arc::ptr_eq(s, store)) {
        Some((_, items)) => items.push(item),
        None => batches.push((Arc::clone(store), vec![item])),
    }
}
