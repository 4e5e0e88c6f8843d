//! Handovers in the per-user loop (docs/serving.md, "Handovers").
//!
//! - **Start** (the `handover` node's effect, [`start`]): a record is created `queued`
//!   and `handover.started` is posted to the agent webhook, retried briefly
//!   ([`START_DEADLINE`]). Delivered, the outcome is `HandoverStarted` (the node's
//!   `say`, the session in `State::Handover`, a `handover_timeout` timer when the node
//!   has a `timeout`); refused or unreachable, the record is `unavailable` and the
//!   outcome `Unavailable` (`on_unavailable`).
//! - **During**: each user message is stored in the record and forwarded as a
//!   `message` event through the user's outbox (ordered, retried, durable).
//! - **Agent actions** (API): replies and resolves are inbox items
//!   ([`super::codec::AgentItem`]), in order with the user's messages.
//! - **End**: the timer falling due while nobody accepted (compare-and-set
//!   `queued → timed_out`), or a resolve: the engine goes on (`on_timeout`, `next`),
//!   and `handover.ended` goes to the agent webhook.

use super::agent_hook::{self, AgentHook, HookError};
use super::codec::{self, AgentAction, AgentItem, Destination, OutgoingBody};
use super::runtime::{Number, Runtime, TurnReport, mask, millis, now_ms};
use super::turn::{HandoverActs, Input, Ran, Retry};
use crate::engine::{EffectOutcome, NodeAt};
use crate::engine::{Event, EventKind, HandoverEnd, HandoverOutcome, Session, context};
use crate::flow::{Bot, NodeKind};
use crate::live::LiveBot;
use crate::store::SessionKey;
use crate::store::StoreError;
use crate::store::durable::handover::{Changed, Handover, HandoverChange, HandoverState};
use crate::store::durable::handover::{HandoverAuthor, HandoverMessage};
use crate::store::durable::{DirectOutgoing, Durable, Millis, NewTimer};
use serde_json::Map;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// The timer of a handover node's `timeout`.
pub const HANDOVER_TIMER: &str = "handover_timeout";

/// The `flow` of outgoing messages and sent records of handovers (agent events and
/// agent replies); their `node` is the event's name or `agent_reply`.
pub const HANDOVER_FLOW: &str = "handover";
/// The `node` of an agent's reply.
pub const AGENT_REPLY_NODE: &str = "agent_reply";

/// How long `handover.started` is retried before the handover is `unavailable`.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// Whether a sent record is an agent's reply (its statuses go to the agent webhook).
pub(super) fn is_agent_reply(sent: &crate::store::SentRecord) -> bool {
    sent.flow == HANDOVER_FLOW && sent.node == AGENT_REPLY_NODE
}

/// The open handover of `key`'s user (queued or accepted), newest first.
pub(super) async fn open_handover(
    store: &dyn Durable,
    key: &SessionKey,
) -> Result<Option<Handover>, StoreError> {
    Ok(store
        .user_handovers(key)
        .await?
        .into_iter()
        .find(|h| h.state.is_open()))
}

/// An agent webhook event queued in the user's outbox.
pub(super) fn agent_event(name: &str, event: Value, now_ms: Millis) -> DirectOutgoing {
    DirectOutgoing {
        not_before: now_ms,
        body: codec::encode(&OutgoingBody {
            v: codec::BODY_VERSION,
            flow: HANDOVER_FLOW.into(),
            node: name.into(),
            queued_at: now_ms,
            payload: event,
            instead: None,
            to: Destination::Agent,
            checked: false,
        }),
    }
}

/// The `handover_timeout` timer of the handover node at `at`, when it has a `timeout`.
pub(super) fn timeout_timer(bot: &Bot, at: &NodeAt, now_ms: Millis) -> Option<NewTimer> {
    let r = bot.node_by_id(&at.flow, &at.node)?;
    let NodeKind::Handover(h) = &bot.node(r).kind else {
        return None;
    };
    let timeout = h.timeout?;
    Some(NewTimer {
        name: HANDOVER_TIMER.to_string(),
        due: now_ms.saturating_add(millis(timeout)),
        body: codec::encode(&codec::TimerItem {
            v: codec::BODY_VERSION,
            name: HANDOVER_TIMER.to_string(),
        }),
    })
}

/// A handover to start for `key`'s user (the `handover` node's effect), with what it
/// needs of its number.
pub(super) struct Starting {
    pub live: Arc<LiveBot>,
    pub store: Arc<dyn Durable>,
    pub agent: AgentHook,
    pub key: SessionKey,
    pub queue: Option<String>,
}

impl Starting {
    /// Performed again after a crash, it reuses the user's open handover rather than
    /// make a second one.
    pub(super) async fn run(self) -> EffectOutcome {
        let Starting {
            live,
            store,
            agent,
            key,
            queue,
        } = self;
        start(&live, &store, &agent, key, queue).await
    }
}

async fn start(
    live: &LiveBot,
    store: &Arc<dyn Durable>,
    agent: &AgentHook,
    key: SessionKey,
    queue: Option<String>,
) -> EffectOutcome {
    let Some(settings) = live.bot().settings.handover.clone() else {
        tracing::warn!(number = %key.phone_number_id, "a handover node ran, but parlance.yaml has no handover.webhook any more: unavailable");
        return EffectOutcome::Unavailable;
    };
    let now = now_ms();
    let record = match open_handover(store.as_ref(), &key).await {
        Ok(Some(open)) => open,
        Ok(None) => {
            let record = Handover {
                id: agent_hook::random_id("ho_"),
                key: key.clone(),
                queue,
                state: HandoverState::Queued,
                agent: None,
                created: now,
                updated: now,
                ended: None,
                status: None,
            };
            if let Err(e) = store.create_handover(&record).await {
                return EffectOutcome::Failed(format!("cannot store the handover: {e}"));
            }
            record
        }
        Err(e) => return EffectOutcome::Failed(format!("cannot read handovers: {e}")),
    };
    // The agent sees the user's WhatsApp name when the session has it.
    let contact_name = match store.load_session(&key).await {
        Ok(session) => session.and_then(|s| s.contact.name),
        Err(_) => None,
    };
    let event = agent_hook::started(&record, now, contact_name.as_deref());
    match post_with_retries(agent, &settings, &event).await {
        Ok(()) => {
            tracing::info!(number = %key.phone_number_id, to = %mask(&key.user), handover = %record.id, "handover started");
            EffectOutcome::HandoverStarted
        }
        Err(e) => {
            tracing::warn!(number = %key.phone_number_id, to = %mask(&key.user), handover = %record.id, error = %e, "no agent inbox took the handover: unavailable");
            let change = HandoverChange {
                from: vec![HandoverState::Queued],
                to: HandoverState::Unavailable,
                agent: None,
                status: None,
                now: now_ms(),
            };
            match store.change_handover(&record.id, &change).await {
                Ok(Changed::Done(_) | Changed::NotFound) => EffectOutcome::Unavailable,
                // An agent accepted it meanwhile (the webhook answered late but did
                // take it): the handover goes on.
                Ok(Changed::Conflict(h)) if h.state == HandoverState::Accepted => {
                    EffectOutcome::HandoverStarted
                }
                Ok(Changed::Conflict(_)) => EffectOutcome::Unavailable,
                Err(e) => EffectOutcome::Failed(format!("cannot record the handover: {e}")),
            }
        }
    }
}

/// Posts `event`, retrying what may pass (no answer, 408, 429, 5xx) with a doubling
/// pause until [`START_DEADLINE`]; a refusal ends at once.
async fn post_with_retries(
    agent: &AgentHook,
    settings: &crate::flow::settings::HandoverSettings,
    event: &Value,
) -> Result<(), HookError> {
    let deadline = tokio::time::Instant::now() + START_DEADLINE;
    let mut pause = Duration::from_millis(250);
    loop {
        match agent.post(settings, event).await {
            Ok(()) => return Ok(()),
            Err(e) if !e.retry => return Err(e),
            Err(e) => {
                if tokio::time::Instant::now() + pause > deadline {
                    return Err(e);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(8));
            }
        }
    }
}

impl Runtime {
    /// Stores the user's message in their handover and makes the `message` event for
    /// the agent webhook. The handover is the user's latest: the session is handed
    /// over, so it is this one, even when an agent resolved it since (the resolve's
    /// item comes after this message: the user wrote it during the handover). `None`
    /// when the user has none (erased): the message is not forwarded.
    pub(super) async fn forward(
        &self,
        number: &Number,
        key: &SessionKey,
        event: &Event,
        now_ms: Millis,
    ) -> Result<Option<DirectOutgoing>, StoreError> {
        let latest = number.store.user_handovers(key).await?.into_iter().next();
        let Some(record) = latest else {
            tracing::info!(number = %key.phone_number_id, to = %mask(&key.user), "a message during a handover that has no record; not forwarded");
            return Ok(None);
        };
        let message = context::message_value(event.id.as_deref(), &event.kind, event.at);
        number
            .store
            .add_handover_message(
                &record.id,
                &HandoverMessage {
                    from: HandoverAuthor::User,
                    at: now_ms,
                    body: message.to_string(),
                },
            )
            .await?;
        let event = agent_hook::message(&record, now_ms, message);
        Ok(Some(agent_event("message", event, now_ms)))
    }

    /// The `handover_timeout` timer fell due: nobody accepted the handover in time
    /// (compare-and-set `queued → timed_out`), so the flow goes on at `on_timeout`. An
    /// accepted (or ended) handover lets the timer pass.
    pub(super) async fn handover_timed_out(
        &self,
        number: &Number,
        key: &SessionKey,
    ) -> Result<Input, Retry> {
        let store = number.store.as_ref();
        let open = match open_handover(store, key).await {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(Input::Nothing),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a handover; its timer waits");
                return Err(Retry);
            }
        };
        let change = HandoverChange {
            from: vec![HandoverState::Queued],
            to: HandoverState::TimedOut,
            agent: None,
            status: None,
            now: now_ms(),
        };
        match store.change_handover(&open.id, &change).await {
            Ok(Changed::Done(record)) => {
                tracing::info!(number = %key.phone_number_id, to = %mask(&key.user), handover = %record.id, "nobody accepted the handover in time");
                Ok(Input::Ended {
                    event: ended_event(&record, HandoverOutcome::TimedOut, Map::new()),
                    record,
                })
            }
            Ok(Changed::Conflict(_) | Changed::NotFound) => Ok(Input::Nothing),
            Err(e) => {
                tracing::warn!(error = %e, "cannot time a handover out; its timer waits");
                Err(Retry)
            }
        }
    }

    /// What an agent's item asks for. A reply is sent even when the API resolved the
    /// handover meanwhile: the API refuses replies once it resolved one, so a reply
    /// still in the inbox was taken before the resolve, whose own item comes after it.
    /// A reply to a handover that timed out or found no agent (or was erased) is
    /// dropped with a log line.
    pub(super) async fn agent_input(
        &self,
        number: &Number,
        key: &SessionKey,
        item: AgentItem,
    ) -> Result<Input, Retry> {
        if let AgentAction::Status {
            message_id,
            status,
            at,
            error_code,
            error_title,
        } = item.action
        {
            let latest = match number.store.user_handovers(key).await {
                Ok(all) => all.into_iter().next(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read handovers; a status waits");
                    return Err(Retry);
                }
            };
            let Some(record) = latest else {
                return Ok(Input::Nothing);
            };
            let status = serde_json::json!({
                "message_id": message_id,
                "status": status,
                "at": at,
                "error": error_code.map(|code| serde_json::json!({ "code": code, "title": error_title })),
            });
            let event = agent_hook::status(&record, now_ms(), status);
            return Ok(Input::AgentStatus(agent_event("status", event, now_ms())));
        }
        let record = match number.store.handover(&item.handover_id).await {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(Input::Nothing),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a handover; the agent's item waits");
                return Err(Retry);
            }
        };
        match item.action {
            AgentAction::Reply { payload, template } => {
                let sent_before_its_end = match record.state {
                    HandoverState::Queued | HandoverState::Accepted | HandoverState::Resolved => {
                        true
                    }
                    HandoverState::TimedOut | HandoverState::Unavailable => false,
                };
                if !sent_before_its_end {
                    tracing::warn!(handover = %record.id, "an agent reply to a handover that ended without the agent; not sent");
                    return Ok(Input::Nothing);
                }
                Ok(Input::AgentReply {
                    record,
                    payload,
                    template,
                    at: item.at,
                })
            }
            AgentAction::Resolve { vars, .. } => Ok(Input::Ended {
                event: ended_event(&record, HandoverOutcome::Resolved, vars),
                record,
            }),
            // Answered above.
            AgentAction::Status { .. } => Ok(Input::Nothing),
        }
    }

    /// An agent's reply as a turn: queued to the user as is (the session unchanged)
    /// and kept in the handover's messages. The window is judged again here.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn agent_reply(
        &self,
        number: &Number,
        session: Session,
        record: &Handover,
        payload: Value,
        template: bool,
        at: Millis,
        now_ms: Millis,
    ) -> Ran {
        let mut report = TurnReport::default();
        let mut outgoing = Vec::new();
        if !template && !session.window_open(now_ms.div_euclid(1000)) {
            report
                .problems
                .push(format!("error: {}", super::api_items::WINDOW_CLOSED));
        } else {
            let kept = number
                .store
                .add_handover_message(
                    &record.id,
                    &HandoverMessage {
                        from: HandoverAuthor::Agent,
                        at,
                        body: payload.to_string(),
                    },
                )
                .await;
            if let Err(e) = kept {
                tracing::warn!(handover = %record.id, error = %e, "cannot keep an agent reply in the handover; it is sent all the same");
            }
            report.sent.push(payload.clone());
            outgoing.push(DirectOutgoing {
                not_before: now_ms,
                body: codec::encode(&OutgoingBody {
                    v: codec::BODY_VERSION,
                    flow: HANDOVER_FLOW.into(),
                    node: AGENT_REPLY_NODE.into(),
                    queued_at: now_ms,
                    payload,
                    instead: None,
                    to: Destination::Graph,
                    checked: false,
                }),
            });
        }
        Ran {
            session,
            outgoing,
            report,
            effect: None,
            handover: HandoverActs::default(),
            trace: None,
        }
    }
}

/// The engine's event for a handover that ended.
fn ended_event(record: &Handover, outcome: HandoverOutcome, vars: Map<String, Value>) -> Event {
    Event {
        id: None,
        at: now_ms().div_euclid(1000),
        contact_name: None,
        kind: EventKind::HandoverEnded(HandoverEnd {
            id: record.id.clone(),
            outcome,
            status: record.status.clone(),
            agent: record.agent.clone(),
            vars,
        }),
    }
}

impl Runtime {
    /// Stores an agent's action as the user's next inbox item and starts their worker.
    /// The answer does not wait for its turn (it runs in order with the user's items).
    pub async fn accept_agent(
        self: &Arc<Self>,
        key: SessionKey,
        handover_id: &str,
        action: AgentAction,
    ) -> Result<crate::store::durable::ItemId, StoreError> {
        let Some(number) = self.number(&key.phone_number_id).cloned() else {
            return Err(StoreError(format!("no bot serves {}", key.phone_number_id)));
        };
        let now = now_ms();
        let item = crate::store::durable::NewItem {
            key: key.clone(),
            dedupe: None,
            kind: crate::store::durable::ItemKind::AgentReply,
            body: codec::encode(&AgentItem {
                v: codec::BODY_VERSION,
                handover_id: handover_id.to_string(),
                at: now,
                action,
            }),
            at: now,
        };
        let stored = number.store.accept(vec![item]).await?;
        self.kick(&key);
        match stored.first() {
            Some(crate::store::durable::Accepted::Stored(id)) => Ok(*id),
            Some(crate::store::durable::Accepted::Duplicate) | None => Err(StoreError(
                "the store did not take the item (a duplicate of nothing)".into(),
            )),
        }
    }
}
