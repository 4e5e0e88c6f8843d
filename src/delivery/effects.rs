//! Effects in the per-user loop: a node that waits on the outside world (`http`) ends
//! its turn with an [`Effect`]; the turn commits with the session waiting there
//! (`State::Effect`, with the outbox place its follow-up messages take) and a watchdog
//! timer; the worker performs the effect off to the side while it sends what the turn
//! queued; the outcome runs the rest of the turn, committed under the same lease.
//!
//! - The user's later items wait, in order, until the outcome is in: a slow backend
//!   holds up only its own user (other users' workers never wait on it).
//! - Nothing is lost: if the process dies (or shuts down) during the call, the session
//!   still waits at the node and the watchdog timer falls due; whichever instance takes
//!   the user next renders the request again from the session ([`engine::pending_effect`]:
//!   not stored, headers may carry secrets) and performs it again. So a call may be made
//!   twice across a crash (at least once), never lost; a reply is still sent once.
//! - The follow-up messages take the outbox places after the turn's first ones
//!   (`OutboxPlace`), so they go out in order even after a restart.

use super::codec::{self, TimerItem};
use super::runtime::{Number, Runtime, Step, WorkerState, mask, millis, now_ms};
use super::turn::{KeptSession, bodies_of, placed};
use crate::engine::{self, Effect, EffectOutcome, Event, EventKind, OutboxPlace, Session, State};
use crate::flow::settings::HttpSettings;
use crate::http::Caller;
use crate::store::SessionKey;
use crate::store::durable::{CommitError, Lease, Millis, NewTimer, TurnCommit};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::oneshot;

/// The name of the watchdog timer of a pending effect.
pub const EFFECT_TIMER: &str = "effect";

/// How long after its call could have ended the watchdog of an effect falls due. Only
/// how soon a lost effect is performed again depends on it: a watchdog that fires while
/// its effect is still performed is a no-op item once the outcome is in.
const WATCHDOG_GRACE: Millis = 5_000;

/// A future that performs one effect.
pub type Performing = Pin<Box<dyn Future<Output = EffectOutcome> + Send>>;

/// Who performs effects for `serve`. One per number; it may read the bot serving now.
pub trait Effects: Send + Sync {
    fn perform(&self, number: &Number, key: &SessionKey, effect: Effect) -> Performing;
}

/// The performer of `serve`: `http` nodes' calls through [`crate::http::Caller`], one
/// per bot's `http:` settings (kept while they stay the same, so calls share a
/// connection pool; a reload that changes them gets a new one), and handovers
/// ([`super::handover::start`]).
#[derive(Default)]
pub struct Performer {
    caller: std::sync::Mutex<Option<(HttpSettings, Caller)>>,
}

impl Performer {
    fn caller(&self, settings: &HttpSettings) -> Result<Caller, String> {
        let mut cached = self.caller.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, caller)) = cached.as_ref()
            && s == settings
        {
            return Ok(caller.clone());
        }
        let caller = Caller::new(settings)?;
        *cached = Some((settings.clone(), caller.clone()));
        Ok(caller)
    }
}

impl Effects for Performer {
    fn perform(&self, number: &Number, key: &SessionKey, effect: Effect) -> Performing {
        match effect {
            Effect::Http(request) => {
                let settings = number.live.bot().settings.http.clone();
                match self.caller(&settings) {
                    Ok(caller) => Box::pin(async move { caller.call(&request).await }),
                    Err(why) => Box::pin(async move { EffectOutcome::Failed(why) }),
                }
            }
            Effect::Handover { queue } => {
                let starting = super::handover::Starting {
                    live: Arc::clone(&number.live),
                    store: Arc::clone(&number.store),
                    agent: number.agent.clone(),
                    key: key.clone(),
                    queue,
                };
                Box::pin(starting.run())
            }
        }
    }
}

/// An effect being performed for the worker's user.
pub(super) struct InFlight {
    outcome: oneshot::Receiver<EffectOutcome>,
    /// `None` when the outcome was known at once.
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // A worker that stops (shutdown, a lost lease) leaves the effect to the
        // watchdog: nobody would commit its outcome.
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// How long the watchdog waits for an effect: the call with all its retries.
fn watchdog(effect: &Effect) -> Millis {
    match effect {
        Effect::Http(request) => {
            let retries = i64::from(request.retries);
            // Each try's timeout, and before each retry at most a `Retry-After`.
            millis(request.timeout).saturating_mul(retries + 1)
                + millis(crate::http::MAX_RETRY_AFTER).saturating_mul(retries)
                + WATCHDOG_GRACE
        }
        Effect::Handover { .. } => {
            millis(super::handover::START_DEADLINE + super::agent_hook::DELIVERY_TIMEOUT)
                + WATCHDOG_GRACE
        }
    }
}

/// The watchdog timer for `effect`, set in the commit that leaves the session waiting.
pub(super) fn watchdog_timer(effect: &Effect, now: Millis) -> NewTimer {
    NewTimer {
        name: EFFECT_TIMER.to_string(),
        due: now + watchdog(effect),
        body: codec::encode(&TimerItem {
            v: codec::BODY_VERSION,
            name: EFFECT_TIMER.to_string(),
        }),
    }
}

/// Records in the session where the messages after its effect go: right after the
/// turn's own `queued` ones.
pub(super) fn set_resume(session: &mut Session, turn: u64, queued: u32) {
    if let State::Effect { resume, .. } = &mut session.state {
        *resume = Some(OutboxPlace {
            turn,
            index: queued,
        });
    }
}

impl Runtime {
    /// Starts performing `effect` for the worker's user; its outcome wakes the worker.
    pub(super) fn start_effect(
        &self,
        number: &Number,
        key: &SessionKey,
        state: &mut WorkerState,
        effect: Effect,
    ) {
        let (tx, rx) = oneshot::channel();
        let performing = number.effects.perform(number, key, effect);
        let signal = state.signal.clone();
        let to = mask(&key.user);
        let calls = self.metrics.http_calls.clone();
        let task = tokio::spawn(async move {
            let outcome = performing.await;
            let label = match &outcome {
                EffectOutcome::Http(_) => Some("ok"),
                EffectOutcome::HttpFailed(f) => {
                    tracing::info!(%to, kind = f.kind.as_str(), status = ?f.status, "http call failed");
                    Some(f.kind.as_str())
                }
                EffectOutcome::HandoverStarted
                | EffectOutcome::Unavailable
                | EffectOutcome::Failed(_)
                | EffectOutcome::Unsupported => None,
            };
            if let Some(label) = label {
                calls
                    .get_or_create(&vec![("outcome".to_string(), label.to_string())])
                    .inc();
            }
            let _ = tx.send(outcome);
            if let Some(signal) = signal {
                signal.wake.notify_one();
            }
        });
        state.effect = Some(InFlight {
            outcome: rx,
            task: Some(task),
        });
    }

    /// The outcome of the worker's effect, once it is in.
    pub(super) fn effect_done(state: &mut WorkerState) -> Option<EffectOutcome> {
        let flight = state.effect.as_mut()?;
        match flight.outcome.try_recv() {
            Ok(outcome) => {
                state.effect = None;
                Some(outcome)
            }
            Err(oneshot::error::TryRecvError::Empty) => None,
            // The task ended without an outcome (it panicked): the session still
            // waits, so the worker's next turn performs it again (`recover_effect`).
            Err(oneshot::error::TryRecvError::Closed) => {
                state.effect = None;
                None
            }
        }
    }

    /// A session waiting for an effect nobody performs (its process died, or the
    /// worker stopped): performs it again. `false` when the session does not wait for
    /// one.
    pub(super) fn recover_effect(
        &self,
        number: &Number,
        key: &SessionKey,
        session: &Session,
        state: &mut WorkerState,
    ) -> bool {
        let bot = number.live.bot();
        let now = now_ms().div_euclid(1000);
        let effect = match engine::pending_effect(&bot, session, now, &number.host) {
            None => return false,
            Some(Ok(effect)) => effect,
            // The node is gone or no longer renders: its outcome is the failure, which
            // the engine turns into `on_error` or the fallback.
            Some(Err(why)) => {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(EffectOutcome::Failed(why));
                state.effect = Some(InFlight {
                    outcome: rx,
                    task: None,
                });
                return true;
            }
        };
        tracing::info!(number = %key.phone_number_id, to = %mask(&key.user), "performing an effect again: the one asked for was not finished");
        self.metrics.effects_recovered.inc();
        self.start_effect(number, key, state, effect);
        true
    }

    /// The rest of the turn after an effect's `outcome`: runs the engine from the node
    /// that asked for it and commits under `lease`, with no inbox item. Its messages
    /// take the outbox places the session recorded.
    pub(super) async fn resume(
        &self,
        number: &Number,
        lease: &Lease,
        state: &mut WorkerState,
        outcome: EffectOutcome,
    ) -> Step {
        let key = &lease.key;
        let started = std::time::Instant::now();
        let now_ms = now_ms();
        let session = match self.session_of(number, lease, state).await {
            Ok(Some(s)) => s,
            Ok(None) => return Step::Again,
            Err(e) => {
                tracing::warn!(number = %key.phone_number_id, error = %e, "cannot load a session; the effect's outcome waits for the watchdog");
                return Step::Stop;
            }
        };
        let place = match &session.state {
            State::Effect {
                resume: Some(place),
                ..
            } => *place,
            // Not written by this build (every serving turn that stops at an effect
            // records its place): the follow-up has nowhere to queue in order, so the
            // conversation gives up on the node rather than perform it over and over.
            State::Effect { resume: None, .. } => {
                tracing::warn!(number = %key.phone_number_id, to = %mask(&key.user), "a session waited for an effect without an outbox place; the conversation stops waiting");
                let mut session = session;
                session.state = State::Idle;
                return self
                    .give_up_effect(number, lease, state, session, now_ms)
                    .await;
            }
            // Erased or moved on meanwhile: the outcome has nobody to go to.
            State::Idle | State::Waiting { .. } | State::Handover { .. } => {
                state.session = Some(KeptSession {
                    token: lease.token,
                    session: Some(session),
                });
                return Step::Again;
            }
        };
        let event = Event {
            id: None,
            at: now_ms.div_euclid(1000),
            contact_name: None,
            kind: EventKind::EffectResult(outcome),
        };
        let mut ran = self.run(number, key, session, &event, now_ms);
        let queued = u32::try_from(ran.outgoing.len()).unwrap_or(u32::MAX);
        let mut timers = Vec::new();
        let mut cancel_timers = Vec::new();
        match &ran.effect {
            Some(effect) => {
                set_resume(
                    &mut ran.session,
                    place.turn,
                    place.index.saturating_add(queued),
                );
                timers.push(watchdog_timer(effect, self.engine_ms(number, now_ms)));
            }
            None => cancel_timers.push(EFFECT_TIMER.to_string()),
        }
        // A handover started: nobody accepting it within the node's `timeout` ends it.
        if let Some(at) = &ran.handover.started
            && let Some(timer) = super::handover::timeout_timer(
                &number.live.bot(),
                at,
                self.engine_ms(number, now_ms),
            )
        {
            timers.push(timer);
        }
        let kept = KeptSession {
            token: lease.token,
            session: Some(ran.session.clone()),
        };
        let bodies = ran.trace.as_ref().map(|_| bodies_of(&ran.outgoing));
        let commit = TurnCommit {
            item: None,
            session: ran.session,
            outgoing: placed(place.turn, place.index, ran.outgoing),
            timers,
            cancel_timers,
        };
        match number.store.commit_turn(lease, now_ms, commit).await {
            Ok(()) => {
                state.session = Some(kept);
                if let (Some(draft), Some(bodies)) = (ran.trace, bodies) {
                    self.trace
                        .record(key, draft, place.turn, place.index, bodies);
                }
            }
            Err(CommitError::Fenced) => {
                tracing::info!(number = %key.phone_number_id, to = %mask(&key.user), "the user's lease passed to another instance; it performs the effect again");
                return Step::Stop;
            }
            Err(CommitError::Store(e)) => {
                tracing::warn!(number = %key.phone_number_id, error = %e, "cannot commit an effect's outcome; the watchdog performs it again");
                return Step::Stop;
            }
        }
        self.metrics
            .turn_seconds
            .observe(started.elapsed().as_secs_f64());
        self.dev_turn(number, key, None, Some(place.turn), &ran.report);
        if let Some(effect) = ran.effect {
            self.start_effect(number, key, state, effect);
        }
        Step::Again
    }
}

impl Runtime {
    /// Commits `session` (no longer waiting) and cancels the watchdog.
    async fn give_up_effect(
        &self,
        number: &Number,
        lease: &Lease,
        state: &mut WorkerState,
        session: Session,
        now_ms: Millis,
    ) -> Step {
        let kept = KeptSession {
            token: lease.token,
            session: Some(session.clone()),
        };
        let commit = TurnCommit {
            item: None,
            session,
            outgoing: Vec::new(),
            timers: Vec::new(),
            cancel_timers: vec![EFFECT_TIMER.to_string()],
        };
        match number.store.commit_turn(lease, now_ms, commit).await {
            Ok(()) => {
                state.session = Some(kept);
                Step::Again
            }
            Err(e) => {
                tracing::warn!(number = %lease.key.phone_number_id, error = %e, "cannot commit a session; it waits");
                Step::Stop
            }
        }
    }
}

/// Whether a Timer item is an effect's watchdog (handled by looking at the session:
/// nothing to run for the item itself).
pub(super) fn is_watchdog(item: &TimerItem) -> bool {
    item.name == EFFECT_TIMER
}

/// The number's effect performer, shared.
pub type SharedEffects = Arc<dyn Effects>;
