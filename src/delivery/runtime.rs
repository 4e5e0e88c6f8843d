//! The conversation runtime behind the server: per-user ordered processing, the turn
//! (load session → engine → save → send), and sending with pacing, message delay,
//! retries and a dead-letter list.
//!
//! Ordering: every inbound message is queued per (phone number, user) the moment it
//! arrives; one worker per user with work drains that queue in order, so one user's
//! messages are handled, and their replies sent, strictly one after the other, while
//! different users never wait on each other.

use super::graph::{Verdict, backoff, classify};
use super::transport::Transport;
use crate::engine::{self, Action, Event, Message, OfflineHost, Outgoing, Session};
use crate::flow::Bot;
use crate::live::LiveBot;
use crate::render;
use crate::store::{SentRecord, SessionKey, StatusRecord, Store};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, oneshot};

/// How often a retryable failure is retried before the message is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 6;
/// Dead letters kept for `/admin/status` (the oldest go first).
pub const DEAD_LETTERS_KEPT: usize = 1000;

/// One phone number and the bot that answers it.
pub struct Number {
    pub phone_number_id: String,
    /// The bot folder and the bot serving now (swapped by hot reload; a turn keeps the
    /// bot it started with).
    pub live: Arc<LiveBot>,
    pub store: Arc<dyn Store>,
    pub transport: Transport,
    /// Meta's throughput limit per number (80 messages per second by default).
    limiter: DefaultDirectRateLimiter,
    /// The environment variables templates may read (`expose_env`).
    host: OfflineHost,
}

impl Number {
    pub fn new(
        phone_number_id: &str,
        live: Arc<LiveBot>,
        store: Arc<dyn Store>,
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
            host: OfflineHost { env },
        }
    }
}

/// A message that could not be delivered, kept for people to see.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub phone_number_id: String,
    pub to: String,
    pub node: String,
    pub at: i64,
    pub attempts: u32,
    pub error: String,
    pub error_code: Option<i64>,
    pub payload: Value,
}

/// What a turn did, for `/dev/message` and tests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TurnReport {
    /// The payloads accepted for sending, in order.
    pub sent: Vec<Value>,
    /// Errors and warnings the designer should see.
    pub problems: Vec<String>,
}

/// One inbound message waiting for its turn.
pub struct Job {
    pub event: Event,
    /// Told what the turn did, when someone waits for it.
    pub done: Option<oneshot::Sender<TurnReport>>,
}

/// One user's waiting messages. `busy` while a worker runs for the user: the worker
/// takes jobs one by one and removes the queue when it finds it empty.
#[derive(Default)]
struct UserQueue {
    jobs: VecDeque<Job>,
    busy: bool,
}

pub struct Runtime {
    numbers: HashMap<String, Arc<Number>>,
    queues: Mutex<HashMap<SessionKey, UserQueue>>,
    dead_letters: Mutex<VecDeque<DeadLetter>>,
    pub metrics: crate::metrics::Metrics,
    /// Whether new work is taken, and how much admitted work has not reached a queue.
    intake: Mutex<Intake>,
    /// Woken when admitted work ends or a user's queue empties, for [`Runtime::drain`].
    settled: Notify,
}

/// The door for new work: open until shutdown begins.
#[derive(Default)]
struct Intake {
    /// Why no new work is taken (the signal that began the shutdown), once closed.
    closed: Option<String>,
    /// Webhooks and requests admitted whose jobs may still be on their way to a queue.
    admitted: usize,
}

/// Admitted work under way (a webhook being handled); the drain waits for it.
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
/// numbers reach the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Users with a turn under way or messages waiting for one.
    pub users: usize,
    /// Messages waiting behind the turn under way, all users together.
    pub waiting: usize,
    /// Webhooks still being handled.
    pub webhooks: usize,
}

/// The inbound message names a number this server does not serve.
#[derive(Debug)]
pub struct UnknownNumber(pub String);

impl Runtime {
    pub fn new(numbers: Vec<Arc<Number>>) -> Arc<Self> {
        Arc::new(Runtime {
            numbers: numbers
                .into_iter()
                .map(|n| (n.phone_number_id.clone(), n))
                .collect(),
            queues: Mutex::new(HashMap::new()),
            dead_letters: Mutex::new(VecDeque::new()),
            metrics: crate::metrics::Metrics::default(),
            intake: Mutex::new(Intake::default()),
            settled: Notify::new(),
        })
    }

    fn intake(&self) -> std::sync::MutexGuard<'_, Intake> {
        self.intake.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits new work (a webhook, a `/dev/message`), or `None` once shutdown began:
    /// the caller answers 503 so Meta redelivers later. Hold the guard until the work
    /// is queued; [`Runtime::drain`] waits for it.
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

    /// Takes no new work from now on; `why` is what `/readyz` says.
    pub fn stop_accepting(&self, why: &str) {
        self.intake().closed = Some(why.to_string());
    }

    /// Why no new work is taken, once shutdown began.
    pub fn closed(&self) -> Option<String> {
        self.intake().closed.clone()
    }

    /// What is under way: turns, waiting messages, webhooks being handled; `None` when
    /// nothing is.
    pub fn pending(&self) -> Option<Pending> {
        let webhooks = self.intake().admitted;
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let pending = Pending {
            users: queues.len(),
            waiting: queues.values().map(|q| q.jobs.len()).sum(),
            webhooks,
        };
        (pending.users > 0 || pending.webhooks > 0).then_some(pending)
    }

    /// Waits until every admitted webhook is queued and every queued turn has run and
    /// sent its replies, or until `within` passed. Returns what was still under way
    /// then. Call [`Runtime::stop_accepting`] first, or it may never settle.
    pub async fn drain(&self, within: std::time::Duration) -> Option<Pending> {
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

    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Queues a message for its user. Must be called in arrival order (the webhook
    /// handler does, item by item); the reply goes out after every earlier one.
    pub fn submit(
        self: &Arc<Self>,
        phone_number_id: &str,
        user: &str,
        job: Job,
    ) -> Result<(), UnknownNumber> {
        let Some(number) = self.numbers.get(phone_number_id).cloned() else {
            return Err(UnknownNumber(phone_number_id.to_string()));
        };
        let key = SessionKey::new(phone_number_id, user);
        let start_worker = {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            let queue = queues.entry(key.clone()).or_default();
            queue.jobs.push_back(job);
            !std::mem::replace(&mut queue.busy, true)
        };
        if start_worker {
            let runtime = Arc::clone(self);
            tokio::spawn(async move { runtime.work(number, key).await });
        }
        Ok(())
    }

    /// Drains one user's queue, oldest first, then removes it.
    async fn work(self: Arc<Self>, number: Arc<Number>, key: SessionKey) {
        loop {
            let job = {
                let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
                match queues.get_mut(&key).and_then(|q| q.jobs.pop_front()) {
                    Some(job) => job,
                    None => {
                        queues.remove(&key);
                        drop(queues);
                        self.settled.notify_waiters();
                        return;
                    }
                }
            };
            let report = self.turn(&number, &key, &job.event).await;
            if let Some(done) = job.done {
                let _ = done.send(report);
            }
        }
    }

    /// One turn: load the session, run the engine, save, send the replies in order.
    async fn turn(&self, number: &Number, key: &SessionKey, event: &Event) -> TurnReport {
        let started = std::time::Instant::now();
        let now = chrono::Utc::now().timestamp();
        let mut report = TurnReport::default();
        let store = Arc::clone(&number.store);
        let load_key = key.clone();
        let loaded = tokio::task::spawn_blocking(move || store.load_session(&load_key)).await;
        let session = match loaded {
            Ok(Ok(Some(s))) => s,
            Ok(Ok(None)) => Session::new(&key.user, now),
            Ok(Err(e)) => {
                tracing::error!(number = %key.phone_number_id, error = %e, "cannot load a session; starting afresh");
                Session::new(&key.user, now)
            }
            Err(e) => {
                tracing::error!(error = %e, "session loading failed");
                Session::new(&key.user, now)
            }
        };
        let bot = number.live.bot();
        let turn = engine::step(&bot, session, event, now, &number.host);
        let store = Arc::clone(&number.store);
        let save_key = key.clone();
        let session = turn.session;
        match tokio::task::spawn_blocking(move || store.save_session(&save_key, &session)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot save a session"),
            Err(e) => tracing::error!(error = %e, "session saving failed"),
        }
        self.metrics.turns.inc();
        self.metrics
            .turn_seconds
            .observe(started.elapsed().as_secs_f64());

        if let Some(id) = &event.id {
            self.mark_read(number, &bot, id).await;
        }
        let delay = bot.settings.whatsapp.message_delay;
        let mut first = true;
        for action in turn.actions {
            match action {
                Action::Send(out) => {
                    if !first && !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    first = false;
                    if let Some(body) = self.send(number, &key.user, &out).await {
                        report.sent.push(body);
                    }
                }
                Action::Pause(d) => tokio::time::sleep(d).await,
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
                Action::Ended | Action::HandoverStarted { .. } | Action::ToAgent => {}
            }
        }
        report
    }

    /// Marks the user's message read (and shows typing), when the bot says so.
    async fn mark_read(&self, number: &Number, bot: &Bot, message_id: &str) {
        let wa = &bot.settings.whatsapp;
        if number.transport.is_local() || !(wa.mark_as_read || wa.typing_indicator) {
            return;
        }
        let mut body =
            json!({ "messaging_product": "whatsapp", "status": "read", "message_id": message_id });
        if wa.typing_indicator {
            body["typing_indicator"] = json!({ "type": "text" });
        }
        if let Err(e) = number.transport.post(&body).await {
            tracing::debug!(error = %e, "mark as read failed");
        }
    }

    /// Sends one message: paced per number, retried with backoff when Meta says so, its
    /// window template sent instead on 131047, dead-lettered when nothing helps.
    /// Returns the body that was accepted.
    async fn send(&self, number: &Number, to: &str, out: &Outgoing) -> Option<Value> {
        let mut message: &Message = &out.message;
        let mut swapped = false;
        let mut attempt = 0;
        loop {
            let body = render::payload(to, message, out.reply_to.as_deref());
            if let Err(problems) = render::check(&body) {
                let error = format!(
                    "the payload breaks WhatsApp's schema: {}",
                    problems.join("; ")
                );
                self.dead_letter(number, to, out, attempt, error, None, body);
                return None;
            }
            number.limiter.until_ready().await;
            match number.transport.post(&body).await {
                Ok(accepted) => {
                    self.metrics.messages_sent.inc();
                    let sent = SentRecord {
                        message_id: accepted.message_id.clone(),
                        key: SessionKey::new(&number.phone_number_id, to),
                        flow: out.at.flow.clone(),
                        node: out.at.node.clone(),
                        at: chrono::Utc::now().timestamp(),
                    };
                    let record = StatusRecord {
                        message_id: accepted.message_id,
                        status: "accepted".into(),
                        at: chrono::Utc::now().timestamp(),
                        recipient: Some(to.to_string()),
                        error_code: None,
                        error_title: None,
                    };
                    let store = Arc::clone(&number.store);
                    let saved = tokio::task::spawn_blocking(move || {
                        store
                            .record_sent(&sent)
                            .and_then(|()| store.record_status(&record))
                    })
                    .await;
                    if let Ok(Err(e)) = saved {
                        tracing::error!(error = %e, "cannot record a sent message");
                    }
                    return Some(body);
                }
                Err(e) => match classify(e.status, e.code) {
                    Verdict::WindowClosed if !swapped && out.instead_outside_window.is_some() => {
                        tracing::info!(to = %mask(to), node = %out.at.node, "window closed (131047): sending the node's template instead");
                        if let Some(t) = &out.instead_outside_window {
                            message = t;
                        }
                        swapped = true;
                    }
                    verdict @ (Verdict::Retry | Verdict::RetryRecipient)
                        if attempt + 1 < MAX_ATTEMPTS =>
                    {
                        self.metrics.messages_retried.inc();
                        let wait = backoff(verdict, attempt, jitter());
                        tracing::info!(error = %e, attempt, wait_ms = wait.as_millis() as u64, "retrying a send");
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                    }
                    _ => {
                        let code = e.code;
                        self.dead_letter(number, to, out, attempt + 1, e.to_string(), code, body);
                        return None;
                    }
                },
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn dead_letter(
        &self,
        number: &Number,
        to: &str,
        out: &Outgoing,
        attempts: u32,
        error: String,
        error_code: Option<i64>,
        payload: Value,
    ) {
        self.metrics.messages_failed.inc();
        tracing::error!(number = %number.phone_number_id, to = %mask(to), node = %format!("{}.{}", out.at.flow, out.at.node), %error, "message not delivered");
        let letter = DeadLetter {
            phone_number_id: number.phone_number_id.clone(),
            to: to.to_string(),
            node: format!("{}.{}", out.at.flow, out.at.node),
            at: chrono::Utc::now().timestamp(),
            attempts,
            error,
            error_code,
            payload,
        };
        let mut letters = self.dead_letters.lock().unwrap_or_else(|e| e.into_inner());
        letters.push_back(letter);
        while letters.len() > DEAD_LETTERS_KEPT {
            letters.pop_front();
        }
    }
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

/// A number in [0, 1) that differs from call to call, to spread retries apart.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1000) / 1000.0
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
