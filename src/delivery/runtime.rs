//! The per-user event loop: the only path that runs turns and sends.
//!
//! Every inbound item is in the durable inbox before the webhook is acknowledged
//! (`inbox`). A user with work gets one worker, on whichever instance takes the user's
//! lease (`Durable::acquire`): the worker handles the user's items strictly in order,
//! one turn at a time (`turn`), and drains the user's outbox in order (`sender`). Every
//! write it makes carries the lease's fencing token, so an instance that stalled past
//! its lease cannot commit over the one that took over. Different users never wait on
//! each other.
//!
//! Work is found three ways: a webhook this instance stored kicks the worker at once;
//! the scanner (`scan`) finds users whose work nobody is doing (after a restart, another
//! instance's death, a retry or a `wait` falling due); and a worker that goes idle
//! checks once more after giving its lease up, so an item another instance stored
//! meanwhile is never left waiting for the scanner.

use super::transport::Transport;
use crate::engine::{Event, OfflineHost};
use crate::live::LiveBot;
use crate::store::durable::{AfterSent, Durable, Lease, Millis, Peek};
use crate::store::{SessionKey, StoreError};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

/// How the loop behaves (`serve` flags).
#[derive(Debug, Clone, Copy)]
pub struct LoopSettings {
    /// How long a user's lease lasts unless renewed: how soon another instance takes
    /// over the users of one that died.
    pub lease_ttl: Duration,
    /// A failed send is retried with backoff until this long after its turn queued it;
    /// then it becomes a dead letter.
    pub retry_deadline: Duration,
    /// How often the store is scanned for work nobody is doing.
    pub scan_every: Duration,
    /// How long one Graph API request may take before it counts as failed (and, since
    /// it went out, ambiguous).
    pub graph_timeout: Duration,
    /// How much of the session trace this instance keeps in memory.
    pub trace: super::trace::TraceLimits,
}

impl LoopSettings {
    /// A lease is renewed before a turn or send when less than this is left of it:
    /// more than one Graph request can take, so a lease never lapses while a send is
    /// out (another instance would send the same message).
    pub fn renew_when_left(&self) -> Duration {
        self.graph_timeout + Duration::from_secs(5)
    }

    /// Why these settings cannot work, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.lease_ttl <= self.renew_when_left() {
            return Err(format!(
                "--lease-ttl ({}) must be longer than --graph-timeout ({}) plus 5s: a lease must outlast a Graph API request",
                humantime::format_duration(self.lease_ttl),
                humantime::format_duration(self.graph_timeout)
            ));
        }
        Ok(())
    }
}

impl Default for LoopSettings {
    fn default() -> Self {
        LoopSettings {
            lease_ttl: Duration::from_secs(20),
            retry_deadline: Duration::from_secs(6 * 3600),
            scan_every: Duration::from_secs(1),
            graph_timeout: super::transport::REQUEST_TIMEOUT,
            trace: super::trace::TraceLimits::default(),
        }
    }
}

/// One phone number and the bot that answers it.
pub struct Number {
    pub phone_number_id: String,
    /// The bot folder and the bot serving now (swapped by hot reload; a turn keeps the
    /// bot it started with).
    pub live: Arc<LiveBot>,
    /// Where this number's sessions, inbox and outbox live (shared by the numbers
    /// whose bots name the same `session.store`).
    pub store: Arc<dyn Durable>,
    pub transport: Transport,
    /// Meta's throughput limit per number (80 messages per second by default), when
    /// this process paces alone.
    pub(super) limiter: DefaultDirectRateLimiter,
    /// Sends waiting for a slot of the pace the store shares between instances.
    pub(super) pace: Arc<super::pace::PaceGate>,
    /// The environment variables templates may read (`expose_env`).
    pub(super) host: OfflineHost,
    /// Why sending is paused (an auth error), until the credentials change.
    paused: Mutex<Option<Paused>>,
    /// Who performs `http` calls and handovers for this number's turns.
    pub(super) effects: super::effects::SharedEffects,
    /// Posts handover events to the bot's agent webhook.
    pub(super) agent: super::agent_hook::AgentHook,
}

/// Sending stopped for a number because Graph refused its token.
#[derive(Debug, Clone)]
struct Paused {
    /// A digest of the token Graph refused: another token (a reload) resumes sending.
    token: [u8; 32],
    /// Graph's error, for `/readyz` and the log.
    reason: String,
}

impl Number {
    pub fn new(
        phone_number_id: &str,
        live: Arc<LiveBot>,
        store: Arc<dyn Durable>,
        transport: Transport,
    ) -> Self {
        let bot = live.bot();
        let rate = NonZeroU32::new(bot.settings.whatsapp.max_messages_per_second)
            .unwrap_or(NonZeroU32::MIN);
        let env = exposed_env(&bot.settings.expose_env);
        Number {
            phone_number_id: phone_number_id.to_string(),
            live,
            store,
            transport,
            limiter: RateLimiter::direct(Quota::per_second(rate)),
            pace: Arc::default(),
            host: OfflineHost { env },
            paused: Mutex::new(None),
            effects: Arc::new(super::effects::Performer::default()),
            agent: super::agent_hook::AgentHook::default(),
        }
    }

    /// The access token of the bot serving now.
    pub(super) fn token(&self) -> String {
        self.live
            .bot()
            .settings
            .whatsapp
            .access_token
            .clone()
            .unwrap_or_default()
    }

    /// Why sending is paused, if it is: `None` once the bot's token is not the one
    /// Graph refused (a reload brought new credentials).
    pub fn paused(&self) -> Option<String> {
        let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        let p = paused.as_ref()?;
        if p.token != digest(&self.token()) {
            tracing::info!(number = %self.phone_number_id, "the access token changed: sending resumes");
            *paused = None;
            return None;
        }
        Some(p.reason.clone())
    }

    /// Graph refused `token`: nothing goes out for this number until it changes.
    pub(super) fn pause(&self, token: &str, reason: String) {
        let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        if paused.is_none() {
            tracing::error!(number = %self.phone_number_id, %reason, "the Graph API refused the access token: sending is paused for this number, every message stays queued; fix whatsapp.access_token (a reload resumes sending)");
        }
        *paused = Some(Paused {
            token: digest(token),
            reason,
        });
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// What a turn did, for `/dev/message` and tests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TurnReport {
    /// The payloads the turn queued for sending, in order. Filled only when someone
    /// may read them (see `Runtime::reports_payloads`).
    pub sent: Vec<Value>,
    /// Errors and warnings the designer should see.
    pub problems: Vec<String>,
}

/// A user's worker on this instance. A kick while it runs sets `again`, so the worker
/// looks at the store once more before it stops.
struct Worker {
    again: bool,
    signal: Arc<Signal>,
}

/// How a running worker is reached.
#[derive(Default)]
pub(super) struct Signal {
    /// Wakes the worker when it sleeps (a kick, shutdown, an effect's outcome).
    pub(super) wake: Notify,
    /// An item was stored for the user since the worker last looked at the inbox.
    stored: AtomicBool,
    /// A webhook's message handed to the worker to run (see [`Runtime::offer`]).
    handed: Mutex<Option<Handed>>,
}

impl Signal {
    /// The message a webhook handed over, if one waits (the caller now owes it an
    /// answer).
    fn take_handed(&self) -> Option<Handed> {
        self.handed.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn has_handed(&self) -> bool {
        self.handed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

/// A user's message, handed by the webhook that brought it to the user's running
/// worker, which runs its turn on the direct path and answers whether it is durable.
pub(super) struct Handed {
    pub(super) event: Event,
    pub(super) done: oneshot::Sender<Result<(), StoreError>>,
}

/// What became of a message offered to the user's loop (see [`Runtime::offer`]).
pub(super) enum Offer {
    /// The caller is the user's worker now: it runs the message's turn (the direct
    /// path), then starts the worker with the returned signal.
    Claimed(Arc<Signal>, Event),
    /// The running worker took the message: whether its turn (or, declined, the
    /// message) is durable.
    Handled(Result<(), StoreError>),
    /// Neither: the caller stores the message in the inbox and kicks the user.
    Store(Event),
}

/// How long a webhook's message waits for the user's running worker to take it before
/// it is stored for that worker instead (see [`Runtime::offer`]): a worker pausing
/// between replies takes it at once, one sending only once the send is recorded.
const HANDOFF_WAIT: Duration = Duration::from_millis(50);

/// The maps every message looks into: foldhash, seeded per process (keys come from
/// Meta's signed webhooks), rather than SipHash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

pub struct Runtime {
    numbers: FastMap<String, Arc<Number>>,
    /// Every distinct store, once (for the scanner and the purge).
    stores: Vec<Arc<dyn Durable>>,
    /// This process, as lease holder: unique per start.
    pub(super) instance: String,
    pub(super) settings: LoopSettings,
    workers: Mutex<FastMap<SessionKey, Worker>>,
    /// Who waits for the turn of a message (`/dev/message`), by the message's id.
    pub waiters: Mutex<FastMap<String, oneshot::Sender<TurnReport>>>,
    pub metrics: crate::metrics::Metrics,
    /// The newest turns of each user this instance ran (`GET /api/v1/users/{user}/trace`).
    pub trace: super::trace::TraceStore,
    /// Whether new work is taken, and how much admitted work has not been stored.
    intake: Mutex<Intake>,
    /// The shutdown deadline passed: workers give their leases up at their next step.
    hurry: AtomicBool,
    /// Woken when admitted work ends or a worker stops, for [`Runtime::drain`].
    settled: Notify,
    /// What the `/dev` simulator sees of local numbers, and its clock.
    pub dev: Arc<super::dev_hub::DevHub>,
}

/// The door for new work: open until shutdown begins.
#[derive(Default)]
struct Intake {
    /// Why no new work is taken (the signal that began the shutdown), once closed.
    closed: Option<String>,
    /// Webhooks and requests admitted whose items may still be on their way to the store.
    admitted: usize,
}

/// Admitted work under way (a webhook being stored); the drain waits for it.
pub struct Admitted {
    runtime: Arc<Runtime>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut intake = self.runtime.intake();
        intake.admitted = intake.admitted.saturating_sub(1);
        drop(intake);
        self.runtime.settled.notify_waiters();
    }
}

/// What was still under way when the shutdown deadline passed. Counts only: no phone
/// numbers reach the log. What is left is durable: a restart (or another instance)
/// goes on with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Users whose worker was still running (a turn, a send, a short wait).
    pub users: usize,
    /// Webhooks still being stored.
    pub webhooks: usize,
}

impl Runtime {
    /// `dev` is the hub the local numbers' sinks were given (see `LocalSink::new`).
    pub fn new(
        numbers: Vec<Arc<Number>>,
        settings: LoopSettings,
        dev: Arc<super::dev_hub::DevHub>,
    ) -> Arc<Self> {
        let mut stores: Vec<Arc<dyn Durable>> = Vec::new();
        for n in &numbers {
            if !stores.iter().any(|s| Arc::ptr_eq(s, &n.store)) {
                stores.push(Arc::clone(&n.store));
            }
        }
        Arc::new(Runtime {
            numbers: numbers
                .into_iter()
                .map(|n| (n.phone_number_id.clone(), n))
                .collect(),
            stores,
            instance: instance_id(),
            settings,
            workers: Mutex::new(FastMap::default()),
            waiters: Mutex::new(FastMap::default()),
            metrics: crate::metrics::Metrics::default(),
            trace: super::trace::TraceStore::new(settings.trace),
            intake: Mutex::new(Intake::default()),
            hurry: AtomicBool::new(false),
            settled: Notify::new(),
            dev,
        })
    }

    fn intake(&self) -> std::sync::MutexGuard<'_, Intake> {
        self.intake.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits new work (a webhook, a `/dev/message`), or `None` once shutdown began:
    /// the caller answers 503 so Meta redelivers later. Hold the guard until the work
    /// is stored; [`Runtime::drain`] waits for it.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut intake = self.intake();
        if intake.closed.is_some() {
            return None;
        }
        intake.admitted += 1;
        Some(Admitted {
            runtime: Arc::clone(self),
        })
    }

    /// Takes no new work from now on; `why` is what `/readyz` says. Workers finish what
    /// they are doing and stop; the scanner stops.
    pub fn stop_accepting(&self, why: &str) {
        self.intake().closed = Some(why.to_string());
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        for w in workers.values() {
            w.signal.wake.notify_one();
        }
    }

    /// The shutdown deadline passed: every worker stops at its next step (a send under
    /// way finishes first) and gives its user's lease up, so another instance takes
    /// the user over at once. Waits up to `within` for them.
    pub async fn hurry(&self, within: Duration) {
        self.hurry.store(true, Ordering::SeqCst);
        {
            let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
            for w in workers.values() {
                w.signal.wake.notify_one();
            }
        }
        let _ = self.drain(within).await;
    }

    fn hurrying(&self) -> bool {
        self.hurry.load(Ordering::SeqCst)
    }

    /// Why no new work is taken, once shutdown began.
    pub fn closed(&self) -> Option<String> {
        self.intake().closed.clone()
    }

    /// What is under way: workers and webhooks being stored; `None` when nothing is.
    pub fn pending(&self) -> Option<Pending> {
        let webhooks = self.intake().admitted;
        let users = self.workers.lock().unwrap_or_else(|e| e.into_inner()).len();
        let pending = Pending { users, webhooks };
        (pending.users > 0 || pending.webhooks > 0).then_some(pending)
    }

    /// Waits until every admitted webhook is stored and every worker has finished its
    /// turn or send under way, or until `within` passed. Returns what was still under
    /// way then. Call [`Runtime::stop_accepting`] first, or it may never settle.
    pub async fn drain(&self, within: Duration) -> Option<Pending> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Registered before looking, so a change between the look and the wait
            // still wakes us.
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            self.pending()?;
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return self.pending();
            }
        }
    }

    pub fn number(&self, phone_number_id: &str) -> Option<&Arc<Number>> {
        self.numbers.get(phone_number_id)
    }

    pub fn numbers(&self) -> impl Iterator<Item = &Arc<Number>> {
        self.numbers.values()
    }

    pub fn stores(&self) -> &[Arc<dyn Durable>] {
        &self.stores
    }

    /// Makes sure a worker looks at the user's work soon: starts one, or tells the
    /// running one to look again before it stops. During the shutdown drain too (a
    /// webhook admitted just before it is finished by it); not once the drain is over.
    pub fn kick(self: &Arc<Self>, key: &SessionKey) {
        let Some(number) = self.numbers.get(&key.phone_number_id).cloned() else {
            return;
        };
        if let Some(signal) = self.claim(key) {
            self.start_worker(number, key.clone(), signal, WorkerState::default());
        }
    }

    /// Makes this caller the user's worker on this instance: `None` when one runs
    /// already (it is told to look again) or the shutdown drain is over. The caller
    /// must then [`Runtime::start_worker`] with the returned signal, whatever it did
    /// meanwhile, so the slot is always given back.
    pub(super) fn claim(&self, key: &SessionKey) -> Option<Arc<Signal>> {
        if self.hurrying() {
            return None;
        }
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = workers.get_mut(key) {
            w.again = true;
            w.signal.stored.store(true, Ordering::SeqCst);
            w.signal.wake.notify_one();
            return None;
        }
        Some(enlist(&mut workers, key))
    }

    /// Offers a webhook's message to the user's loop. With no worker running, the
    /// caller becomes the worker ([`Offer::Claimed`]). With one running, the message is
    /// handed to it: a user's next message usually comes right after the bot's reply,
    /// while the worker is still recording that reply as sent, and the worker runs the
    /// message's turn next, under the lease and with the session it holds (no lease to
    /// give up and take again, no session to read, no worker to start). If the worker
    /// does not take it within [`HANDOFF_WAIT`], the message is taken back and goes the
    /// usual way. Nothing is acknowledged meanwhile, so a crash loses nothing.
    pub(super) async fn offer(&self, key: &SessionKey, event: Event) -> Offer {
        let (done, outcome) = oneshot::channel();
        let signal = {
            let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
            if self.hurrying() {
                return Offer::Store(event);
            }
            let Some(w) = workers.get(key) else {
                return Offer::Claimed(enlist(&mut workers, key), event);
            };
            let mut handed = w.signal.handed.lock().unwrap_or_else(|e| e.into_inner());
            if handed.is_some() {
                // Another message of the user's waits to be taken: this one is stored.
                return Offer::Store(event);
            }
            *handed = Some(Handed { event, done });
            w.signal.wake.notify_one();
            Arc::clone(&w.signal)
            // The worker does not retire while a message waits for it (`retire`).
        };
        tokio::pin!(outcome);
        if let Ok(answer) = tokio::time::timeout(HANDOFF_WAIT, &mut outcome).await {
            return Offer::Handled(answer.unwrap_or_else(|_| Err(worker_gone())));
        }
        match signal.take_handed() {
            Some(back) => match self.claim(key) {
                Some(signal) => Offer::Claimed(signal, back.event),
                None => Offer::Store(back.event),
            },
            // Taken just now: the worker answers once the turn is durable.
            None => Offer::Handled(outcome.await.unwrap_or_else(|_| Err(worker_gone()))),
        }
    }

    /// Runs a handed message's turn on the direct path (which stores the message in
    /// the inbox instead when it cannot take it) and answers the webhook waiting for it.
    async fn run_handed(
        &self,
        number: &Number,
        key: &SessionKey,
        handed: Handed,
        state: &mut WorkerState,
    ) {
        // Whatever the direct path does, the worker looks at the inbox next.
        state.inbox_empty = false;
        let done = self.direct(number, key, handed.event, state).await;
        if let Ok(true) = done {
            self.metrics.turns_handed.inc();
        }
        // The webhook may have given up (its future dropped): what was done stands.
        let _ = handed.done.send(done.map(drop));
    }

    /// Runs the user's worker (claimed with [`Runtime::claim`]) from `state`.
    pub(super) fn start_worker(
        self: &Arc<Self>,
        number: Arc<Number>,
        key: SessionKey,
        signal: Arc<Signal>,
        state: WorkerState,
    ) {
        let runtime = Arc::clone(self);
        let mut state = state;
        state.signal = Some(Arc::clone(&signal));
        // Boxed: the worker's future holds a whole turn (several KiB), and tokio moves
        // a task's future by value (spawning, storing its output); a box moves as a
        // pointer. Unboxed, copying it was ~5% of the server's instructions.
        tokio::spawn(Box::pin(runtime.work(number, key, signal, state)));
    }

    /// One user's worker: takes the lease, runs turns and sends until there is nothing
    /// to do now, gives the lease up.
    async fn work(
        self: Arc<Self>,
        number: Arc<Number>,
        key: SessionKey,
        signal: Arc<Signal>,
        mut state: WorkerState,
    ) {
        let items_at_release = loop {
            let step = match self.step(&number, &key, &signal, &mut state).await {
                Ok(step) => step,
                Err(e) => {
                    tracing::warn!(number = %key.phone_number_id, error = %e, "the store failed; the user's work waits for the next scan");
                    Step::Stop
                }
            };
            match step {
                Step::Again => continue,
                Step::Sleep(until) => {
                    // Wake in time to renew the lease, then sleep on.
                    let renew_at = state
                        .lease
                        .as_ref()
                        .map_or(until, |l| l.until - millis(self.settings.renew_when_left()));
                    let until = until.min(renew_at);
                    let wait = Duration::from_millis(u64::try_from(until - now_ms()).unwrap_or(0));
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = signal.wake.notified() => {}
                    }
                    continue;
                }
                Step::Stop => {}
            }
            let items = Self::let_go(&number, &mut state).await;
            if self.retire(&key) {
                break items;
            }
        };
        self.settled.notify_waiters();
        if self.closed().is_some() || !Self::looks_again(&number, &state) {
            return;
        }
        let items = match items_at_release {
            Some(items) => items,
            None => matches!(number.store.next_item(&key).await, Ok(Some(_))),
        };
        if items {
            self.kick(&key);
        }
    }

    /// Gives the worker's lease up, if it holds one. Another instance may have stored an
    /// item while this one held the lease (its worker found the lease taken and
    /// stopped): when the worker would look once more, the release answers whether the
    /// user has items (Redis looks in the same round trip). `None` when not known: no
    /// look wanted, no lease held, or the release failed.
    async fn let_go(number: &Number, state: &mut WorkerState) -> Option<bool> {
        let lease = state.lease.take()?;
        let released = if Self::looks_again(number, state) {
            number.store.release_looking(&lease).await.map(Some)
        } else {
            number.store.release(&lease).await.map(|()| None)
        };
        released.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "cannot release a lease; it expires by itself");
            None
        })
    }

    /// Whether a stopping worker looks at the inbox once more: it stopped with nothing
    /// left, and another instance may store items for the user.
    fn looks_again(number: &Number, state: &WorkerState) -> bool {
        state.look_again && !number.store.single_process()
    }

    /// Removes the worker unless it was kicked since it last looked (then it goes on).
    fn retire(&self, key: &SessionKey) -> bool {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        match workers.get_mut(key) {
            // A handed message keeps the worker too: its webhook waits for the answer.
            Some(w) if (w.again || w.signal.has_handed()) && !self.hurrying() => {
                w.again = false;
                false
            }
            Some(_) | None => {
                workers.remove(key);
                true
            }
        }
    }

    /// One step of a worker: a turn for the oldest item, else one send, else nothing.
    async fn step(
        &self,
        number: &Number,
        key: &SessionKey,
        signal: &Signal,
        state: &mut WorkerState,
    ) -> Result<Step, crate::store::StoreError> {
        if self.hurrying() {
            return Ok(Step::Stop);
        }
        // A message a webhook handed over goes first: its webhook waits. It runs on the
        // direct path, which stores it in the inbox instead when that path cannot take
        // it (items waiting, an effect under way, the lease elsewhere).
        if let Some(handed) = signal.take_handed() {
            self.run_handed(number, key, handed, state).await;
            return Ok(Step::Again);
        }
        let Some(lease) = self.hold(number, key, state, Reading::Nothing).await? else {
            return Ok(Step::Stop);
        };
        if let Some(id) = state.mark_read.take() {
            self.mark_read(number, &id).await;
        }
        // Good for this step only (see `WorkerState::next_out`); a replay raised
        // `stored`, and its message may sort before the one peeked at.
        let peeked = std::mem::take(&mut state.next_out);
        let peeked = if signal.stored.load(Ordering::SeqCst) {
            Peek::NotLooked
        } else {
            peeked
        };
        if state.effect.is_some()
            && let Some(outcome) = Self::effect_done(state)
        {
            return Ok(self.resume(number, &lease, state, outcome).await);
        }
        // While an effect is performed the user's items wait (in order); its sends go on.
        let waiting = state.effect.is_some();
        // Taken before looking: an item stored after the look raises it again.
        let stored = !waiting && signal.stored.swap(false, Ordering::SeqCst);
        // On a store shared by instances, the last write may have seen the inbox empty:
        // an item another instance stored since is found at a later step, at the
        // latest by the look after the lease is released (`WorkerState::look_again`).
        let seen_empty = matches!(
            peeked,
            Peek::Next {
                inbox_empty: true,
                ..
            }
        );
        if !waiting && (stored || !(state.inbox_empty || seen_empty)) {
            // Unknown until the read answers (a failed read leaves it unknown).
            state.inbox_empty = false;
            match number.store.next_item(key).await? {
                Some(item) => {
                    return Ok(self.turn(number, &lease, item, state).await);
                }
                None => state.inbox_empty = number.store.single_process(),
            }
        }
        // Nothing to do now: stop, unless an effect's outcome is awaited (then sleep,
        // renewing the lease, until it wakes the worker).
        let idle = |state: &WorkerState| match state.effect {
            Some(_) => Step::Sleep(now_ms() + HOLD_FOR),
            None => Step::Stop,
        };
        if number.paused().is_some() {
            return Ok(idle(state));
        }
        let next = match peeked {
            Peek::Next { next, .. } => next,
            Peek::NotLooked => number.store.next_outgoing(key).await?,
        };
        let Some(out) = next else {
            state.look_again = true;
            self.dev_pause(number, key, false);
            return Ok(idle(state));
        };
        let now = now_ms();
        let due = out.not_before.max(state.gate);
        if due > now {
            // A long wait (a backoff): leave it to the scanner, which finds it when it
            // falls due, here or on another instance.
            if due - now > HOLD_FOR {
                return Ok(idle(state));
            }
            // Due later than the message delay says: a `wait` pause.
            if out.not_before > now {
                self.dev_pause(number, key, true);
            }
            return Ok(Step::Sleep(due));
        }
        // On a shared store, the send that empties the outbox may give the lease up in
        // its own write (one round trip fewer for every message on Redis), unless the
        // worker goes on under it: a handed message or an effect waits for it.
        let last = if number.store.single_process() || waiting || signal.has_handed() {
            Last::Hold
        } else {
            Last::MayRelease
        };
        let step = self.send(number, &lease, out, last).await;
        if let Some(sent_at) = step.sent_at {
            let delay = number.live.bot().settings.whatsapp.message_delay;
            state.gate = sent_at + millis(delay);
        }
        match step.next {
            AfterSent::Holding(peek) => {
                state.next_out = peek;
                Ok(step.then)
            }
            AfterSent::Released => {
                // The write looked at the inbox as it released: nothing to look at
                // again (an item stored since finds the lease free).
                state.lease = None;
                state.look_again = false;
                self.dev_pause(number, key, false);
                Ok(Step::Stop)
            }
        }
    }

    /// The user's lease, taken or renewed so that it outlasts a Graph request; `None`
    /// when another instance holds it (that instance does the work) or it was lost.
    /// `Reading::Session` when a turn is about to run: a lease taken now comes with
    /// the user's session, kept for `session_of` (one round trip on Redis).
    pub(super) async fn hold(
        &self,
        number: &Number,
        key: &SessionKey,
        state: &mut WorkerState,
        reading: Reading,
    ) -> Result<Option<Lease>, crate::store::StoreError> {
        let now = now_ms();
        let ttl = self.settings.lease_ttl;
        let lease = match state.lease.take() {
            Some(l) if l.until - now > millis(self.settings.renew_when_left()) => Some(l),
            Some(l) => number.store.renew(&l, now, ttl).await?,
            None => {
                let got = match reading {
                    Reading::Nothing => number.store.acquire(key, &self.instance, now, ttl).await?,
                    Reading::Session => {
                        let got = number
                            .store
                            .acquire_reading(key, &self.instance, now, ttl)
                            .await?;
                        got.map(|(lease, session)| {
                            state.session = Some(super::turn::KeptSession {
                                token: lease.token,
                                session,
                            });
                            lease
                        })
                    }
                };
                if got.is_none() {
                    tracing::debug!(number = %key.phone_number_id, "another instance holds the user's lease");
                }
                got
            }
        };
        state.lease.clone_from(&lease);
        Ok(lease)
    }

    /// Stops waiting for a turn (its requester gave up).
    pub fn forget_waiter(&self, message_id: &str) {
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(message_id);
    }

    /// Whether this instance runs a worker for the user now.
    pub(super) fn is_working(&self, key: &SessionKey) -> bool {
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key)
    }
}

/// A worker sleeps in place (renewing its lease) for a due time at most this far ahead:
/// `message_delay_ms` and `wait` (at most 25 s). Later work (a retry's backoff) is left
/// to the scanner and the lease is given up meanwhile.
const HOLD_FOR: Millis = 30_000;

/// What [`Runtime::hold`] reads with a lease it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reading {
    /// Only the lease: the step may only send.
    Nothing,
    /// The user's session too: a turn runs next.
    Session,
}

/// A worker's own state between steps.
#[derive(Default)]
pub(super) struct WorkerState {
    pub(super) lease: Option<Lease>,
    /// No message of this user goes out before this (Unix ms): `message_delay_ms`
    /// after the previous one.
    gate: Millis,
    /// The worker stopped with nothing left: worth one more look after the release.
    look_again: bool,
    /// The session as the worker's last turn committed it.
    pub(super) session: Option<super::turn::KeptSession>,
    /// A message to mark read before anything else: its turn ran on the direct path.
    pub(super) mark_read: Option<String>,
    /// The inbox was empty when the worker last looked, and the store is this
    /// process's alone: every item stored since came through [`Runtime::claim`], which
    /// raised [`Signal::stored`], so the worker need not look again until then. (The
    /// scanner's timers do not kick a user whose worker runs; they wait for it to stop,
    /// and the next scan then finds them.)
    pub(super) inbox_empty: bool,
    /// What the last write said the user's first unsent message is (see [`Peek`]):
    /// the next send takes it instead of reading the outbox again. Only writes under
    /// the worker's lease change the outbox, except a dead letter's replay, which
    /// raises [`Signal::stored`]; so it holds until the worker runs a turn or sees that
    /// signal, and is dropped at every other step.
    pub(super) next_out: Peek,
    /// The effect (`http` call) being performed for the user: while it runs, the
    /// user's items wait and the worker only sends.
    pub(super) effect: Option<super::effects::InFlight>,
    /// The worker's own signal, for an effect's outcome to wake it.
    pub(super) signal: Option<Arc<Signal>>,
}

/// What a worker does next.
pub(super) enum Step {
    /// Look at the store again now.
    Again,
    /// Sleep until this time (Unix ms) or a kick, then look again.
    Sleep(Millis),
    /// Stop (nothing to do now, the lease is someone else's, shutting down, a store
    /// error): the lease is given up.
    Stop,
}

/// What one send did.
pub(super) struct Sent {
    /// When Graph accepted a message (Unix ms), for the message delay.
    pub sent_at: Option<Millis>,
    pub then: Step,
    /// The user's next message, when the store looked in the same write; or the
    /// lease given up in it.
    pub next: AfterSent,
}

/// Whether a send may give the worker's lease up (see [`Durable::mark_sent_releasing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Last {
    /// The worker goes on under the lease whatever the send leaves.
    Hold,
    /// The worker stops when the send leaves the user nothing to do.
    MayRelease,
}

/// Makes a worker slot for the user (who has none): the caller is the worker now.
fn enlist(workers: &mut FastMap<SessionKey, Worker>, key: &SessionKey) -> Arc<Signal> {
    let signal = Arc::new(Signal::default());
    workers.insert(
        key.clone(),
        Worker {
            again: false,
            signal: Arc::clone(&signal),
        },
    );
    signal
}

fn worker_gone() -> StoreError {
    StoreError("the user's worker stopped before the message was stored".into())
}

/// Unix time in milliseconds.
pub(super) fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

pub(super) fn millis(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

/// A lease holder name unique to this start of this process.
fn instance_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "parlance".into());
    format!(
        "{host}:{}:{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    )
}

/// A phone number as logs show it: the last four digits.
pub fn mask(number: &str) -> String {
    let keep: String = number
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{keep}")
}

/// `env` for templates, shared with the CLI.
pub fn exposed_env(names: &[String]) -> Map<String, Value> {
    names
        .iter()
        .filter_map(|name| {
            std::env::var(name)
                .ok()
                .map(|v| (name.clone(), Value::from(v)))
        })
        .collect()
}
