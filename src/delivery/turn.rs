//! One turn of the per-user loop: the user's oldest inbox item → the engine → one
//! atomic commit of the new session and the outgoing messages (rendered to exact Cloud
//! API payloads now, so the sender and a replay send what the turn decided).

use super::api_items::{self, NotifyInput};
use super::codec::{
    self, AgentItem, FailedItem, InjectItem, MessageItem, NotifyItem, OutgoingBody, TimerItem,
};
use super::handover;
use super::runtime::{Number, Runtime, Step, TurnReport, WorkerState, mask, millis, now_ms};
use super::trace::{self, Draft, Vars};
use super::{agent_hook, effects};
use crate::engine::{
    self, Action, Effect, EffectOutcome, Event, EventKind, NO_FAILURE_REASON, Session,
};
use crate::render;
use crate::store::SessionKey;
use crate::store::durable::handover::Handover;
use crate::store::durable::{
    CommitError, DirectOutgoing, Item, ItemKind, Lease, NewOutgoing, OutKey, TurnCommit,
};
use crate::transform::{self, Sent, Step as TurnStep};

/// What an inbox item asks of the engine.
pub(super) enum Input {
    /// Run a turn with this event.
    Event(Event),
    /// From the API (inject, a notify's flow): run a turn with this event and hand its
    /// report to `request`'s waiter.
    Api { event: Event, request: String },
    /// From the API (a notify's text or template): queue this message as is.
    Send {
        message: crate::engine::Message,
        request: String,
    },
    /// The user's handover ended (timed out, resolved): run a turn with this event
    /// and tell the agent webhook (`handover.ended`).
    Ended { event: Event, record: Handover },
    /// An agent's reply: queue it to the user (inside the window, or a template).
    AgentReply {
        record: Handover,
        payload: serde_json::Value,
        template: bool,
        at: i64,
    },
    /// The status of an agent's reply: this `status` event to the agent webhook.
    AgentStatus(DirectOutgoing),
    /// Nothing to run (a failure report for a message this store did not send).
    Nothing,
    /// A body this build cannot read: moved aside, with why.
    Unreadable(String),
}

impl Runtime {
    /// Runs the turn for `item` and commits it under `lease`. `kept` is the session the
    /// worker's last turn committed under this lease, if any: nobody else can have
    /// changed it since (a change needs the lease), so it is not read again.
    pub(super) async fn turn(
        &self,
        number: &Number,
        lease: &Lease,
        item: Item,
        state: &mut WorkerState,
    ) -> Step {
        let key = &lease.key;
        let started = std::time::Instant::now();
        let now_ms = now_ms();
        // What the engine and timers see (the `/dev` clock for a local number).
        let clock_ms = self.engine_ms(number, now_ms);
        let session = match self.session_of(number, lease, state).await {
            Ok(Some(s)) => s,
            Ok(None) => Session::new(&key.user, clock_ms.div_euclid(1000)),
            Err(e) => {
                tracing::warn!(number = %key.phone_number_id, error = %e, "cannot load a session; the item waits");
                return Step::Stop;
            }
        };
        // The session waits for an effect nobody performs (its process died): that
        // comes first; this item waits for its outcome.
        if state.effect.is_none() && self.recover_effect(number, key, &session, state) {
            state.session = Some(KeptSession {
                token: lease.token,
                session: Some(session),
            });
            return Step::Again;
        }
        let input = match self.input(number, key, &item).await {
            Ok(Input::Unreadable(why)) => {
                tracing::error!(number = %key.phone_number_id, to = %mask(&key.user), item = item.id.0, kind = item.kind.as_str(), %why, "an inbox item this build cannot read was moved aside");
                return match number.store.move_aside(lease, now_ms, item.id, &why).await {
                    Ok(()) => Step::Again,
                    Err(e) => {
                        tracing::warn!(number = %key.phone_number_id, error = %e, "cannot move an unreadable item aside; it waits");
                        Step::Stop
                    }
                };
            }
            Ok(input) => input,
            Err(Retry) => return Step::Stop,
        };
        // The user's message (or an injected one), forwarded to the agent when the
        // conversation is handed over.
        let mut forwarded: Option<Event> = None;
        let mut ending = false;
        let (ran, marked, request) = match input {
            Input::Event(event) => {
                forwarded = Some(event.clone());
                (
                    self.run(number, key, session, &event, now_ms),
                    Some(event),
                    None,
                )
            }
            Input::Api { event, request } => {
                forwarded = Some(event.clone());
                (
                    self.run(number, key, session, &event, now_ms),
                    None,
                    Some(request),
                )
            }
            Input::Send { message, request } => {
                let (summary, detail) = api_items::describe(&message);
                let inbound = trace::inbound_of("notify", &summary, &detail);
                let ran = api_items::send(key, session, &message, now_ms);
                (
                    self.traced(number, inbound, ran, now_ms),
                    None,
                    Some(request),
                )
            }
            Input::Ended { event, record } => {
                let mut ran = self.run(number, key, session, &event, now_ms);
                let ended = agent_hook::ended(&record, now_ms);
                ran.outgoing
                    .push(handover::agent_event("handover.ended", ended, now_ms));
                ending = true;
                (ran, None, None)
            }
            Input::AgentReply {
                record,
                payload,
                template,
                at,
            } => {
                let inbound = trace::inbound_of("agent", "an agent replied", &payload);
                let ran = self
                    .agent_reply(number, session, &record, payload, template, at, now_ms)
                    .await;
                (self.traced(number, inbound, ran, now_ms), None, None)
            }
            Input::AgentStatus(event) => (
                Ran {
                    session,
                    outgoing: vec![event],
                    report: TurnReport::default(),
                    effect: None,
                    handover: HandoverActs::default(),
                    trace: None,
                },
                None,
                None,
            ),
            Input::Nothing | Input::Unreadable(_) => (
                Ran {
                    session,
                    outgoing: Vec::new(),
                    report: TurnReport::default(),
                    effect: None,
                    handover: HandoverActs::default(),
                    trace: None,
                },
                None,
                None,
            ),
        };
        let Ran {
            mut session,
            mut outgoing,
            report,
            effect,
            handover: acts,
            trace: draft,
        } = ran;
        let mut timers = Vec::new();
        let mut cancel_timers = Vec::new();
        if ending {
            cancel_timers.push(handover::HANDOVER_TIMER.to_string());
        }
        if acts.to_agent
            && let Some(event) = forwarded.as_ref()
        {
            match self.forward(number, key, event, now_ms).await {
                Ok(Some(out)) => outgoing.push(out),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(number = %key.phone_number_id, error = %e, "cannot forward a message to the agent; the item waits");
                    return Step::Stop;
                }
            }
        }
        if let Some(at) = &acts.started
            && let Some(timer) = handover::timeout_timer(&number.live.bot(), at, clock_ms)
        {
            timers.push(timer);
        }
        if let Some(effect) = &effect {
            let queued = u32::try_from(outgoing.len()).unwrap_or(u32::MAX);
            effects::set_resume(&mut session, item.id.0, queued);
            timers.push(effects::watchdog_timer(effect, clock_ms));
        }
        let next = KeptSession {
            token: lease.token,
            session: Some(session.clone()),
        };
        // Kept for the trace once committed (a failed commit runs the item again).
        let bodies = draft.as_ref().map(|_| bodies_of(&outgoing));
        let commit = TurnCommit {
            item: Some(item.id),
            session,
            outgoing: placed(item.id.0, 0, outgoing),
            timers,
            cancel_timers,
        };
        match number.store.commit_turn(lease, now_ms, commit).await {
            Ok(()) => {
                state.session = Some(next);
                if let (Some(draft), Some(bodies)) = (draft, bodies) {
                    self.trace.record(key, draft, item.id.0, 0, bodies);
                }
            }
            Err(CommitError::Fenced) => {
                tracing::info!(number = %key.phone_number_id, to = %mask(&key.user), "the user's lease passed to another instance; it goes on from here");
                return Step::Stop;
            }
            Err(CommitError::Store(e)) => {
                tracing::warn!(number = %key.phone_number_id, error = %e, "cannot commit a turn; the item waits");
                return Step::Stop;
            }
        }
        if marked.is_some() || request.is_some() {
            self.metrics.turns.inc();
        }
        self.metrics
            .turn_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Some(effect) = effect {
            self.start_effect(number, key, state, effect);
        }
        let message_id = marked.as_ref().and_then(|event| event.id.as_deref());
        self.dev_turn(number, key, message_id, Some(item.id.0), &report);
        match (marked.and_then(|event| event.id), request) {
            (Some(id), _) => {
                self.answer_waiter(&id, report);
                self.mark_read(number, &id).await;
            }
            // Not a message WhatsApp delivered: nothing to mark read.
            (None, Some(request)) => self.answer_waiter(&request, report),
            (None, None) => {}
        }
        Step::Again
    }

    /// The user's session under `lease`: the one the worker's last commit under this
    /// lease left, or read with the lease (nobody else can have changed it since: a
    /// change needs the lease), else read from the store.
    pub(super) async fn session_of(
        &self,
        number: &Number,
        lease: &Lease,
        state: &mut WorkerState,
    ) -> Result<Option<Session>, crate::store::StoreError> {
        match state.session.take() {
            Some(k) if k.token == lease.token => Ok(k.session),
            Some(_) | None => number.store.load_session(&lease.key).await,
        }
    }

    /// Runs the engine for one event: the session after it, the turn's messages (to
    /// queue in order) and the report of what it did. Nothing is written (the caller
    /// counts the turn once it committed).
    pub(super) fn run(
        &self,
        number: &Number,
        key: &SessionKey,
        session: Session,
        event: &Event,
        now_ms: i64,
    ) -> Ran {
        let bot = number.live.bot();
        let mask = !number.transport.is_local();
        // What the trace needs from before the turn, when the trace is on.
        let before = self.trace.is_on().then(|| {
            let pii = if mask {
                trace::pii_values(&session.vars, &bot)
            } else {
                Vec::new()
            };
            (Vars::of(&session.vars, &bot, mask), pii)
        });
        // The engine's own performer stays idle: an effect ends the turn here (the
        // turn commits, then the worker performs it; see `effects`).
        let run = || {
            transform::run(
                &bot,
                session,
                event,
                self.engine_ms(number, now_ms).div_euclid(1000),
                &number.host,
                &mut Stop,
                &key.user,
            )
        };
        // A script may use its whole wall-time limit of CPU: the worker thread hands
        // its other tasks to another thread first, so no other user waits behind it.
        // (Not for bots without scripts: a turn is microseconds, and the hand-over
        // costs more than it saves.)
        let turn = if bot.runs_scripts() && multi_threaded() {
            tokio::task::block_in_place(run)
        } else {
            run()
        };
        let Outs {
            outgoing,
            report,
            effect,
            handover,
            ended,
        } = self.outgoing(key, now_ms, turn.steps, self.reports_payloads(number));
        let draft = before.map(|(before, pii_before)| {
            let masked = mask && trace::pii_changed(&pii_before, &turn.session.vars, &bot);
            Draft::new(
                &bot,
                trace::inbound(event, masked),
                &turn.visited,
                before,
                &turn.session,
                mask,
                &report.problems,
                ended,
                now_ms,
            )
        });
        Ran {
            session: turn.session,
            outgoing,
            report,
            effect,
            handover,
            trace: draft,
        }
    }

    /// Hands the report of the turn for message `id` to whoever waits for it
    /// (`/dev/message`).
    pub(super) fn answer_waiter(&self, id: &str, report: TurnReport) {
        let waiter = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(report);
        }
    }

    /// What the item asks for. An item this build cannot read is `Unreadable` (moved
    /// aside rather than blocking the user); `Err` when it must wait.
    async fn input(&self, number: &Number, key: &SessionKey, item: &Item) -> Result<Input, Retry> {
        let unreadable = |why: String| Ok(Input::Unreadable(why));
        match item.kind {
            ItemKind::Message => match codec::decode::<MessageItem>(&item.body) {
                Ok(m) => Ok(Input::Event(m.event)),
                Err(e) => unreadable(e.0),
            },
            ItemKind::Status => {
                let failed = match codec::decode::<FailedItem>(&item.body) {
                    Ok(f) => f,
                    Err(e) => return unreadable(e.0),
                };
                match number.store.sent(&failed.message_id).await {
                    // An agent's reply that failed is the agent's to hear of (a
                    // `status` event), not a node's `on_error`.
                    Ok(Some(sent)) if &sent.key == key && !handover::is_agent_reply(&sent) => {
                        Ok(Input::Event(Event {
                            id: None,
                            at: failed.at,
                            contact_name: None,
                            kind: EventKind::DeliveryFailed {
                                flow: sent.flow,
                                node: sent.node,
                                code: failed.code,
                                reason: failed
                                    .title
                                    .unwrap_or_else(|| NO_FAILURE_REASON.to_string()),
                            },
                        }))
                    }
                    Ok(_) => Ok(Input::Nothing),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot look up a failed message; the item waits");
                        Err(Retry)
                    }
                }
            }
            ItemKind::Timer => match codec::decode::<TimerItem>(&item.body) {
                // A watchdog that fell due: the effect it watched is done, or is
                // performed again before any item (see `turn`).
                Ok(t) if effects::is_watchdog(&t) => Ok(Input::Nothing),
                Ok(t) if t.name == handover::HANDOVER_TIMER => {
                    self.handover_timed_out(number, key).await
                }
                Ok(t) => unreadable(format!("a timer this build does not set: {}", t.name)),
                Err(e) => unreadable(e.0),
            },
            ItemKind::Inject => match codec::decode::<InjectItem>(&item.body) {
                Ok(i) => Ok(Input::Api {
                    event: i.event,
                    request: i.request,
                }),
                Err(e) => unreadable(e.0),
            },
            ItemKind::Notify => match codec::decode::<NotifyItem>(&item.body) {
                Ok(n) => {
                    let request = n.request.clone();
                    Ok(match api_items::notify_input(n) {
                        NotifyInput::Event(event) => Input::Api { event, request },
                        NotifyInput::Send(message) => Input::Send { message, request },
                    })
                }
                Err(e) => unreadable(e.0),
            },
            ItemKind::AgentReply => match codec::decode::<AgentItem>(&item.body) {
                Ok(a) => self.agent_input(number, key, a).await,
                Err(e) => unreadable(e.0),
            },
            // Not written by this build (http results never wait in the inbox).
            ItemKind::EffectResult => unreadable(format!(
                "{} items are not handled by this build",
                item.kind.as_str()
            )),
        }
    }

    /// Whether a turn's report must carry its payloads: someone may wait for it
    /// (`/dev/message`, an API item; their waiter is registered before their item is
    /// stored, so it is seen here), or the number is local (the simulator). Otherwise
    /// nobody reads them, and copying every payload was a cost of every message.
    fn reports_payloads(&self, number: &Number) -> bool {
        number.transport.is_local()
            || !self
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }

    /// The turn's messages, in order (a `wait` making the ones after it due later), and
    /// the report of what it did (with the payloads when `report_payloads`).
    fn outgoing(
        &self,
        key: &SessionKey,
        now_ms: i64,
        steps: Vec<TurnStep>,
        report_payloads: bool,
    ) -> Outs {
        let mut ended = false;
        let mut report = TurnReport::default();
        let mut outgoing = Vec::new();
        let mut effect = None;
        let mut handover = HandoverActs::default();
        let mut due = now_ms;
        for step in steps {
            let action = match step {
                TurnStep::Send(sent) => {
                    let Sent { out, payload, .. } = *sent;
                    // The template sent instead outside the 24-hour window is Meta's
                    // approved text: the output transformer does not see it.
                    let instead = out
                        .instead_outside_window
                        .as_ref()
                        .map(|t| render::payload(&key.user, t, None));
                    if report_payloads {
                        report.sent.push(payload.clone());
                    }
                    // Checked here, once; a payload that fails is queued unchecked, and
                    // the sender dead-letters it with WhatsApp's schema's reasons.
                    let checked = render::check(&payload).is_ok();
                    let body = OutgoingBody {
                        v: codec::BODY_VERSION,
                        flow: out.at.flow.clone(),
                        node: out.at.node.clone(),
                        queued_at: now_ms,
                        payload,
                        instead,
                        to: codec::Destination::Graph,
                        checked,
                    };
                    outgoing.push(DirectOutgoing {
                        not_before: due,
                        body: codec::encode(&body),
                    });
                    continue;
                }
                TurnStep::Other(action) => action,
                TurnStep::TransformerFailed(p) => Action::Warning(p),
            };
            match action {
                // `transform::run` hands every message over as `Step::Send`.
                Action::Send(_) => {}
                Action::Pause(d) => due += millis(d),
                // The problem names the node and its file:line; the user only by the
                // last digits. What the user sees next (the fallback flow) follows.
                Action::Error(p) => {
                    self.metrics.turn_errors.inc();
                    tracing::warn!(number = %key.phone_number_id, to = %mask(&key.user), problem = %p, "turn error");
                    report.problems.push(format!("error: {p}"));
                }
                Action::Warning(p) => {
                    tracing::warn!(number = %key.phone_number_id, to = %mask(&key.user), problem = %p, "turn warning");
                    report.problems.push(format!("warning: {p}"));
                }
                // The last action when there is one: the turn stopped to wait for it.
                Action::Effect { effect: e, .. } => effect = Some(e),
                Action::HandoverStarted { at, .. } => handover.started = Some(at),
                Action::ToAgent => handover.to_agent = true,
                Action::Ended => ended = true,
            }
        }
        Outs {
            outgoing,
            report,
            effect,
            handover,
            ended,
        }
    }

    /// `ran` (a turn that queued a message as is: an API notify's, an agent's reply)
    /// with its trace: the session unchanged, no node visited.
    fn traced(
        &self,
        number: &Number,
        inbound: trace::InboundDraft,
        mut ran: Ran,
        now_ms: i64,
    ) -> Ran {
        if !self.trace.is_on() {
            return ran;
        }
        let bot = number.live.bot();
        let mask = !number.transport.is_local();
        let before = Vars::of(&ran.session.vars, &bot, mask);
        ran.trace = Some(Draft::new(
            &bot,
            inbound,
            &[],
            before,
            &ran.session,
            mask,
            &ran.report.problems,
            false,
            now_ms,
        ));
        ran
    }

    /// Marks the user's message read (and shows typing), when the bot says so: before
    /// the turn's replies go out, so the user sees "typing…" first. Best effort: a
    /// failure changes nothing in the conversation.
    pub(super) async fn mark_read(&self, number: &Number, message_id: &str) {
        let bot = number.live.bot();
        let wa = &bot.settings.whatsapp;
        if number.transport.is_local() || !(wa.mark_as_read || wa.typing_indicator) {
            return;
        }
        let mut body = serde_json::json!({ "messaging_product": "whatsapp", "status": "read", "message_id": message_id });
        if wa.typing_indicator {
            body["typing_indicator"] = serde_json::json!({ "type": "text" });
        }
        if let Err(e) = number.transport.post(&number.token(), &body).await {
            tracing::debug!(error = %e, "mark as read failed");
        }
    }
}

/// The item cannot be handled now (the store failed); it stays first in line.
pub(super) struct Retry;

/// Whether this runs on Tokio's multi-threaded runtime, where a task may block in
/// place (`serve`'s; tests may use the current-thread one).
fn multi_threaded() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// A turn's messages in the user's outbox: turn `turn`, from index `first` on.
pub(super) fn placed(turn: u64, first: u32, outgoing: Vec<DirectOutgoing>) -> Vec<NewOutgoing> {
    (first..)
        .zip(outgoing)
        .map(|(index, o)| NewOutgoing {
            at: OutKey { turn, index },
            not_before: o.not_before,
            body: o.body,
        })
        .collect()
}

/// What [`Runtime::outgoing`] made of a turn's steps.
struct Outs {
    outgoing: Vec<DirectOutgoing>,
    report: TurnReport,
    effect: Option<Effect>,
    handover: HandoverActs,
    /// The conversation ended in this turn.
    ended: bool,
}

/// The bodies of a turn's messages, for the trace.
pub(super) fn bodies_of(outgoing: &[DirectOutgoing]) -> Vec<String> {
    outgoing.iter().map(|o| o.body.clone()).collect()
}

/// What [`Runtime::run`] made of one event; nothing written yet.
pub(super) struct Ran {
    /// The session after the turn.
    pub(super) session: Session,
    /// The turn's messages, to queue in order.
    pub(super) outgoing: Vec<DirectOutgoing>,
    pub(super) report: TurnReport,
    /// The effect the turn stopped to wait for (the session waits in `State::Effect`).
    pub(super) effect: Option<Effect>,
    /// What the turn did about a handover.
    pub(super) handover: HandoverActs,
    /// The turn's trace, recorded once it is committed (`None`: nothing to show, as
    /// for an agent's status).
    pub(super) trace: Option<Draft>,
}

/// What a turn did about a handover (`Action::HandoverStarted`, `Action::ToAgent`).
#[derive(Debug, Default)]
pub(super) struct HandoverActs {
    /// A handover started at this node (its `timeout` timer is set with the commit).
    pub(super) started: Option<engine::NodeAt>,
    /// The message went to the agent (forwarded with the commit).
    pub(super) to_agent: bool,
}

/// The performer a serving turn gives the engine: it defers, so the turn ends at its
/// first effect and the worker performs it (`effects`).
struct Stop;

impl engine::Perform for Stop {
    fn perform(&mut self, _effect: &Effect) -> EffectOutcome {
        // Never called: `defers` says so.
        EffectOutcome::Failed("internal: a deferred effect was performed inline".into())
    }

    fn defers(&self) -> bool {
        true
    }
}

/// The user's session as the worker knows it under the lease with `token`: what its
/// last turn committed, or what it read when it took the lease (`None`: the user has
/// none yet).
pub(super) struct KeptSession {
    pub(super) token: u64,
    pub(super) session: Option<Session>,
}
