//! Stage 4: run one turn of one session.
//!
//! `step(bot, session, event, now, host)` → the new session and the actions to carry out
//! (messages to send, pauses, the conversation ending, errors). The engine does no I/O:
//! time is an argument, and a node that waits on the outside world (`http`, `handover`)
//! ends the turn with an [`Action::Effect`]: the session waits there (`State::Effect`)
//! until the caller performs it and hands the outcome back as an
//! [`EventKind::EffectResult`] event, which continues the conversation at that node.
//! [`run`] does that loop for a caller with a [`Perform`]. `script` nodes run in place
//! through the bot's sandbox (`crate::script`: bounded, no I/O). So a turn is fast, deterministic, and the same in
//! the server, `parlance chat` and `parlance test`.
//!
//! Architecture Invariant: the engine reads the compiled `flow::Bot` and its session,
//! nothing else. Sessions name flows and nodes by id, so they survive reloads.

pub mod answer;
pub mod context;
pub mod event;
pub mod fit;
pub mod message;
pub mod session;

pub use event::{
    EffectOutcome, Event, EventKind, HandoverEnd, HandoverOutcome, HttpErrorKind, HttpFailure,
    NO_FAILURE_REASON,
};
pub use message::Message;
pub use session::{NodeAt, OutboxPlace, Session, ShownChoice, SoFar, State};

use crate::flow::{
    Bot, FlowIdx, HttpBody, HttpMethod, JsonTemplate, MediaSource, Next, Node, NodeKind, NodeRef,
    Number, Script, Target, Text, Trigger, normalize,
};
use crate::script;
use message::{Header, MediaRef, Row, Section};
use serde_json::{Map, Value};
use std::time::Duration;

/// How many node ids a runaway turn's log shows from its start and from its end.
const PATH_SHOWN: usize = 5;

/// The result of a turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub session: Session,
    pub actions: Vec<Action>,
    /// The nodes the turn ran or answered, in order (every step of [`run`]'s, the
    /// fallback flow's included): the session trace's "why did the bot say this".
    /// Indices into the bot that ran it; [`visit_of`] names them.
    pub visited: Vec<NodeRef>,
}

/// Something the caller must do or know, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this message to the user.
    Send(Box<Outgoing>),
    /// Pause before the next message (a `wait` node), shown as typing.
    Pause(Duration),
    /// Perform this and hand the outcome back as an [`EventKind::EffectResult`]: the
    /// turn stopped at the node `at`, and the session waits for it (`State::Effect`).
    Effect { at: NodeAt, effect: Effect },
    /// A human agent takes over; the bot stays silent until it is resolved.
    HandoverStarted { at: NodeAt, queue: Option<String> },
    /// While an agent has the conversation, the user's message goes to the agent.
    ToAgent,
    /// The conversation ended; the next message starts a new one.
    Ended,
    /// Something the designer should know that did not stop the turn.
    Warning(Problem),
    /// A node failed without an `on_error`, or the turn went over `limits:`. Unless it
    /// happened in the fallback flow run for an earlier error, the fallback flow takes
    /// over (its messages follow); then the turn stops.
    Error(Problem),
}

/// A message and the node that sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub at: NodeAt,
    pub message: Message,
    /// Quote this user message (WhatsApp `context.message_id`).
    pub reply_to: Option<String>,
    /// The node's `on_window_closed` template, rendered: what to send instead when
    /// WhatsApp answers that the 24-hour window has closed (131047).
    pub instead_outside_window: Option<Message>,
}

/// A node the turn visited, named: its flow and node ids, its kind and where it is
/// written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visit {
    pub at: NodeAt,
    pub kind: &'static str,
    /// `flows/order.yaml:12:3`
    pub source: String,
}

/// Names node `r` of `bot` (the bot that ran the turn: indices are its own).
pub fn visit_of(bot: &Bot, r: NodeRef) -> Visit {
    Visit {
        at: at(bot, r),
        kind: bot.node(r).kind.name(),
        source: source_of(bot, r),
    }
}

/// Where node `r` is written: `file:line:column`.
fn source_of(bot: &Bot, r: NodeRef) -> String {
    let pos = bot.node(r).pos;
    format!(
        "{}:{}:{}",
        bot.flow(r.flow).file.display(),
        pos.line,
        pos.column
    )
}

/// What went wrong, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub at: Option<NodeAt>,
    /// Where that node is written (`flows/order.yaml:12:3`), so a log line leads to it.
    pub source: Option<String>,
    pub message: String,
}

impl Problem {
    /// A problem at node `r` of `bot`.
    pub fn at_node(bot: &Bot, r: NodeRef, message: String) -> Self {
        Problem {
            at: Some(at(bot, r)),
            source: Some(source_of(bot, r)),
            message,
        }
    }

    /// A problem at no node in particular.
    pub fn general(message: String) -> Self {
        Problem {
            at: None,
            source: None,
            message,
        }
    }
}

/// `file:line:col: flow.node: message`, the house diagnostic format without a code.
impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(source) = &self.source {
            write!(f, "{source}: ")?;
        }
        match &self.at {
            Some(at) => write!(f, "{}.{}: {}", at.flow, at.node, self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// An `http` node's request, rendered.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HttpRequest {
    pub method: HttpMethod,
    /// The URL as rendered, without `query`.
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// Query parameters to add to `url`, not yet encoded.
    pub query: Vec<(String, String)>,
    pub body: RequestBody,
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    /// Tries after the first, for a timeout, a connection error, a 5xx or a 429.
    pub retries: u32,
}

/// An `http` node's body, rendered.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestBody {
    None,
    Json(Value),
    Form(Vec<(String, String)>),
    Text(String),
}

/// A `Duration` as whole milliseconds in JSON.
mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Why an effect did not happen.
#[derive(Debug, Clone, PartialEq)]
pub enum EffectError {
    /// This runtime cannot perform it at all (yet): always an error, never `on_error`.
    Unsupported,
    /// No agent can take the conversation (handover): the node's `on_unavailable`.
    Unavailable,
    /// It was tried and failed: the node's `on_error`.
    Failed(String),
}

/// What the engine reads from its caller during a turn: nothing here waits on the
/// outside world (that is an [`Effect`]).
pub trait Host {
    /// The environment variables templates may read (`env`), already limited to the
    /// bot's `expose_env`.
    fn env(&self) -> &Map<String, Value>;
}

/// Something a node needs from the outside world: the turn stops at the node, the
/// caller performs it (as long as it takes, without holding anyone else up), and its
/// outcome comes back as an [`EventKind::EffectResult`].
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// An `http` node's request.
    Http(HttpRequest),
    /// A `handover` node: find an agent in this queue.
    Handover { queue: Option<String> },
}

/// Who performs effects for [`run`].
pub trait Perform {
    fn perform(&mut self, effect: &Effect) -> EffectOutcome;

    /// [`Perform::perform`] for the node `at`, which [`run`] calls: a performer that
    /// answers per node (the mocks of `parlance test`) needs to know which node asks; one
    /// that does not keeps this default.
    fn perform_at(&mut self, at: &NodeAt, effect: &Effect) -> EffectOutcome {
        let _ = at;
        self.perform(effect)
    }

    /// Whether effects are performed later, by the caller, rather than inline: then
    /// [`run`] ends the turn at the first effect, the session waiting there
    /// (`State::Effect`), and `perform` is never called. (`serve` performs them beside
    /// its worker and hands each outcome back as an [`EventKind::EffectResult`].)
    fn defers(&self) -> bool {
        false
    }
}

/// Performs nothing: every effect is [`EffectOutcome::Unsupported`] (benchmarks, and
/// callers without a performer; `chat` performs http calls with `crate::http::Caller`).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEffects;

impl Perform for NoEffects {
    fn perform(&mut self, _effect: &Effect) -> EffectOutcome {
        EffectOutcome::Unsupported
    }
}

/// At most this many effects in one [`run`]: a flow that loops through `http` nodes
/// stops like any runaway turn.
const EFFECTS_PER_RUN: usize = 100;

/// Runs a turn to its end: [`step`], then each effect the turn stopped at is performed
/// and its outcome handed back, until the turn ends without one. The actions of every
/// step, in order (each `Effect` included, followed by what its outcome caused).
pub fn run(
    bot: &Bot,
    session: Session,
    event: &Event,
    now: i64,
    host: &dyn Host,
    perform: &mut dyn Perform,
) -> Turn {
    run_carrying(bot, session, event, now, host, perform, None)
}

/// [`run`], where `carry` are variables set for this message before the turn (by an
/// input transformer): they are kept when the message starts a new conversation, which
/// otherwise starts with no variables.
pub fn run_carrying(
    bot: &Bot,
    session: Session,
    event: &Event,
    now: i64,
    host: &dyn Host,
    perform: &mut dyn Perform,
    carry: Option<&Map<String, Value>>,
) -> Turn {
    let mut turn = step_carrying(bot, session, event, now, host, carry);
    if perform.defers() {
        return turn;
    }
    for _ in 0..EFFECTS_PER_RUN {
        let Some(Action::Effect { at, effect }) = turn.actions.last() else {
            return turn;
        };
        let outcome = perform.perform_at(at, effect);
        let result = Event {
            id: None,
            at: now,
            contact_name: None,
            kind: EventKind::EffectResult(outcome),
        };
        let next = step(bot, turn.session, &result, now, host);
        turn.actions.extend(next.actions);
        turn.visited.extend(next.visited);
        turn.session = next.session;
    }
    turn
}

/// The effect a session waits for (`State::Effect`), rendered again from its node, the
/// session's variables and the turn's message: what a restart performs when the one
/// asked for was lost with its process. (Rendered, not stored: an `http` node's
/// headers may carry secrets from `env`.) `None` when the session waits for no effect;
/// `Err` when its node is gone or no longer renders.
pub fn pending_effect(
    bot: &Bot,
    session: &Session,
    now: i64,
    host: &dyn Host,
) -> Option<Result<Effect, String>> {
    let State::Effect { at, message, .. } = &session.state else {
        return None;
    };
    let Some(r) = bot.node_by_id(&at.flow, &at.node) else {
        return Some(Err(format!(
            "the conversation waited for an effect of {}.{}, which no longer exists",
            at.flow, at.node
        )));
    };
    let run = Run {
        carry: None,
        bot,
        session: session.clone(),
        now,
        host,
        message: message.clone(),
        actions: Vec::new(),
        path: Vec::new(),
        visited: Vec::new(),
        earlier_nodes: 0,
        sent: 0,
        paused: 0,
        over_limit: false,
        recovering: false,
        here: Some(at.clone()),
    };
    Some(match &bot.node(r).kind {
        NodeKind::Http(h) => run.http_request(r, h).map(Effect::Http),
        NodeKind::Handover(h) => Ok(Effect::Handover {
            queue: h.queue.clone(),
        }),
        kind => Err(format!(
            "the conversation waited for an effect of {}.{}, which is a {} node now",
            at.flow,
            at.node,
            kind.name()
        )),
    })
}

/// A host with no effects: `parlance chat`, `parlance test`, benchmarks.
#[derive(Debug, Default)]
pub struct OfflineHost {
    pub env: Map<String, Value>,
}

impl Host for OfflineHost {
    fn env(&self) -> &Map<String, Value> {
        &self.env
    }
}

/// Runs one turn: `event` arrives for `session` at `now` (Unix seconds).
pub fn step(bot: &Bot, session: Session, event: &Event, now: i64, host: &dyn Host) -> Turn {
    step_carrying(bot, session, event, now, host, None)
}

fn step_carrying(
    bot: &Bot,
    session: Session,
    event: &Event,
    now: i64,
    host: &dyn Host,
    carry: Option<&Map<String, Value>>,
) -> Turn {
    let message = context::message_value(event.id.as_deref(), &event.kind, event.at);
    let mut run = Run {
        carry,
        bot,
        session,
        now,
        host,
        message,
        actions: Vec::new(),
        path: Vec::new(),
        visited: Vec::new(),
        earlier_nodes: 0,
        sent: 0,
        paused: 0,
        over_limit: false,
        recovering: false,
        here: None,
    };
    run.handle(event);
    Turn {
        session: run.session,
        actions: run.actions,
        visited: run.visited,
    }
}

/// Where a node leaves the turn.
enum Then {
    Go(Target),
    Stop,
}

struct Run<'a> {
    /// Variables set for this message before the turn, kept across a restart.
    carry: Option<&'a Map<String, Value>>,
    bot: &'a Bot,
    session: Session,
    now: i64,
    host: &'a dyn Host,
    /// `message` as templates see it.
    message: Value,
    actions: Vec<Action>,
    /// The nodes run so far (since the fallback took over, once it has), for
    /// `limits.nodes_per_turn` and for the log of a runaway turn.
    path: Vec<NodeRef>,
    /// Every node run or answered, in order, kept across the fallback's takeover
    /// ([`Turn::visited`]).
    visited: Vec<NodeRef>,
    /// Nodes the same turn ran before it stopped at an effect (this step goes on
    /// from its outcome), counted against `limits.nodes_per_turn` with `path`.
    earlier_nodes: usize,
    /// Messages queued so far (since the fallback took over), for `limits.messages_per_turn`.
    sent: usize,
    /// Seconds of `wait` so far: a message after a pause goes out that much later, which
    /// matters when the 24-hour window closes in between.
    paused: i64,
    /// The turn went over `limits:`: no `on_error` may continue it.
    over_limit: bool,
    /// The fallback flow runs because of an error: another error stops the turn.
    recovering: bool,
    /// The node running (or being answered), for `session.flow` / `session.node`.
    here: Option<NodeAt>,
}

/// Where a message goes.
enum Route {
    /// A human agent has the conversation.
    ToAgent,
    /// The answer to the node the session waits at.
    Answer(Waiting),
    /// Start a flow; `fresh` starts a new conversation (vars cleared).
    Start {
        flow: FlowIdx,
        groups: Map<String, Value>,
        fresh: bool,
    },
    /// The node the session waited at no longer exists.
    Gone(NodeAt),
}

/// What the session waits at.
enum Lookup {
    NotWaiting,
    Found(Waiting),
    /// A node that no longer exists (the bot was reloaded).
    Gone(NodeAt),
}

/// The node a session waits at, resolved.
struct Waiting {
    node: NodeRef,
    retries_used: u32,
    choices: Vec<ShownChoice>,
}

impl Run<'_> {
    /// A new conversation: fresh variables, but for those carried into this turn.
    fn restart(&mut self) {
        self.session.restart(self.now);
        if let Some(carry) = self.carry {
            self.session
                .vars
                .extend(carry.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }

    fn handle(&mut self, event: &Event) {
        let timeout = self.bot.settings.session_timeout.as_secs() as i64;
        // While an agent has the conversation, silence is the agent's to end, not the
        // session timeout's: the handover (its timer, the agent's resolve) ends it.
        let handed_over = matches!(self.session.state, State::Handover { .. });
        if !handed_over && self.session.is_expired(self.now, timeout) {
            self.restart();
        }
        self.session.updated_at = self.now;
        if let EventKind::DeliveryFailed {
            flow,
            node,
            code,
            reason,
        } = &event.kind
        {
            // Not a message from the user: the 24-hour window and the conversation stay.
            return self.delivery_failed(flow, node, *code, reason);
        }
        if let EventKind::EffectResult(outcome) = &event.kind {
            // Not a message from the user either: the conversation goes on at the node
            // that asked for the effect.
            return self.effect_result(outcome);
        }
        if let EventKind::HandoverEnded(end) = &event.kind {
            // Not from the user: the window stays as the user left it.
            self.session.turn += 1;
            return self.handover_ended(end);
        }
        if let EventKind::StartFlow { flow, node } = &event.kind {
            // The bot's own move (an API notify): the window stays as the user left it.
            self.session.turn += 1;
            return self.start_flow(flow, node.as_deref());
        }
        // An injected message runs as the user's would, but only the user opens the
        // 24-hour window, and only their messages can be quoted.
        let kind = match &event.kind {
            EventKind::Injected(inner) => inner.as_ref(),
            kind => {
                self.session.last_user_message_at = Some(event.at);
                self.session.last_user_message_id = event.id.clone();
                if let Some(name) = &event.contact_name {
                    self.session.contact.name = Some(name.clone());
                }
                kind
            }
        };
        let route = self.route(kind);
        if matches!(route, Route::Start { fresh: true, .. }) {
            self.restart();
        }
        self.session.turn += 1;
        match route {
            Route::ToAgent => self.actions.push(Action::ToAgent),
            Route::Answer(w) => self.answer(&w, kind),
            Route::Start { flow, groups, .. } => {
                self.session.state = State::Idle;
                self.session.stack.clear();
                self.apply_groups(groups);
                self.run_from(first_node(self.bot, flow));
            }
            Route::Gone(at) => {
                // The bot was edited and the node is gone: restart its flow (or the
                // entry flow when the flow is gone too), and say so.
                let flow = self.bot.flow_by_id(&at.flow).unwrap_or(self.bot.entry);
                let message = format!(
                    "the conversation waited at {}.{}, which no longer exists; restarting flow \"{}\"",
                    at.flow,
                    at.node,
                    self.bot.flow(flow).id
                );
                self.actions
                    .push(Action::Warning(Problem::general(message)));
                self.session.state = State::Idle;
                self.session.stack.clear();
                self.run_from(first_node(self.bot, flow));
            }
        }
    }

    /// Starts `flow` at `node` (its first node without one) for an API notify, keeping
    /// the conversation's variables; a flow or node that does not exist (a reload removed
    /// it since the request) is an error and nothing runs.
    fn start_flow(&mut self, flow: &str, node: Option<&str>) {
        if matches!(self.session.state, State::Handover { .. }) {
            self.actions.push(Action::Error(Problem::general(
                "notify: an agent has the conversation (handover); nothing was started".into(),
            )));
            return;
        }
        let start = match (self.bot.flow_by_id(flow), node) {
            (Some(f), None) => Some(first_node(self.bot, f)),
            (Some(_), Some(node)) => self.bot.node_by_id(flow, node).map(Target::Node),
            (None, _) => None,
        };
        let Some(start) = start else {
            let what = node.map_or_else(
                || format!("flow \"{flow}\""),
                |n| format!("node {flow}.{n}"),
            );
            self.actions.push(Action::Error(Problem::general(format!(
                "notify: the bot has no {what}; nothing was started"
            ))));
            return;
        };
        self.session.state = State::Idle;
        self.session.stack.clear();
        self.run_from(start);
    }

    /// A message the bot sent was not delivered: its node's `on_error` runs; without
    /// one, the failure is reported and the conversation stays where it is.
    fn delivery_failed(&mut self, flow: &str, node: &str, code: Option<i64>, reason: &str) {
        let failed = NodeAt {
            flow: flow.to_string(),
            node: node.to_string(),
        };
        let code = code.map_or_else(String::new, |c| format!(" ({c})"));
        let target = self
            .bot
            .node_by_id(flow, node)
            .and_then(|r| self.bot.node(r).on_error);
        match target {
            Some(target) => {
                self.actions.push(Action::Warning(self.problem_at(flow, node, failed, format!("WhatsApp could not deliver the message{code}: {reason}; continuing at on_error"))));
                self.session.state = State::Idle;
                self.session.stack.clear();
                self.run_from(target);
            }
            // Nobody waits for an answer here (the user did not write), so the fallback
            // flow does not answer: the failure is only reported.
            None => self.actions.push(Action::Error(self.problem_at(flow, node, failed, format!("WhatsApp could not deliver the message{code}: {reason}; the node has no on_error")))),
        }
    }

    /// The outcome of the effect the session waits for: the node that asked for it goes
    /// on (`save` and `next`, `on_error`, `on_unavailable`, the handover itself).
    fn effect_result(&mut self, outcome: &EffectOutcome) {
        let State::Effect {
            at,
            message,
            so_far,
            ..
        } = self.session.state.clone()
        else {
            let message =
                "an effect's outcome arrived while the conversation waited for none; ignored"
                    .to_string();
            self.actions
                .push(Action::Warning(Problem::general(message)));
            return;
        };
        let Some(r) = self.bot.node_by_id(&at.flow, &at.node) else {
            let message = format!(
                "the conversation waited for an effect of {}.{}, which no longer exists; the conversation ends",
                at.flow, at.node
            );
            self.actions
                .push(Action::Warning(Problem::general(message)));
            self.end();
            return;
        };
        self.session.state = State::Idle;
        self.here = Some(at);
        // The node goes on with its outcome: the trace shows it again.
        self.visited.push(r);
        self.message = message;
        self.earlier_nodes = so_far.nodes as usize;
        self.sent = so_far.sent as usize;
        self.recovering = so_far.recovering;
        let node = self.bot.node(r);
        let then = match (&node.kind, outcome) {
            (NodeKind::Http(_), EffectOutcome::Http(value)) => {
                if let Some(name) = &node.save {
                    self.session.vars.insert(name.clone(), value.clone());
                }
                match self.next_of(r) {
                    Some(t) => Then::Go(t),
                    None => Then::Stop,
                }
            }
            (NodeKind::Http(_), EffectOutcome::HttpFailed(failure)) => {
                if let (Some(name), Some(response)) = (&node.save, &failure.response) {
                    self.session.vars.insert(name.clone(), response.clone());
                }
                if let Value::Object(m) = &mut self.message {
                    m.insert(
                        "error".into(),
                        serde_json::json!({
                            "kind": failure.kind.as_str(),
                            "status": failure.status,
                            "message": failure.message,
                        }),
                    );
                }
                self.effect_failed(r, "http", EffectError::Failed(failure.message.clone()))
            }
            (NodeKind::Handover(h), EffectOutcome::HandoverStarted) => self.handover_started(r, h),
            (NodeKind::Handover(h), EffectOutcome::Unavailable) if h.on_unavailable.is_some() => {
                Then::Go(h.on_unavailable.unwrap_or(Target::End))
            }
            (kind, EffectOutcome::Unavailable) => {
                self.effect_failed(r, effect_name(kind), EffectError::Unavailable)
            }
            (kind, EffectOutcome::Failed(message)) => {
                self.effect_failed(r, effect_name(kind), EffectError::Failed(message.clone()))
            }
            (kind, EffectOutcome::Unsupported) => {
                self.effect_failed(r, effect_name(kind), EffectError::Unsupported)
            }
            (
                kind,
                EffectOutcome::Http(_)
                | EffectOutcome::HttpFailed(_)
                | EffectOutcome::HandoverStarted,
            ) => self.fail(
                r,
                format!(
                    "the outcome of another effect arrived at this {} node",
                    effect_name(kind)
                ),
            ),
        };
        if let Then::Go(target) = then {
            self.run_from(target);
        }
    }

    /// An agent has the conversation: tell the user (the node's `say`), and the bot is
    /// silent until the handover ends.
    fn handover_started(&mut self, r: NodeRef, h: &crate::flow::Handover) -> Then {
        if let Some(say) = &h.say {
            let said = self.render(r, say).and_then(|body| {
                let text = Message::Text {
                    body,
                    preview_url: false,
                };
                self.deliver(r, vec![text], None)
            });
            if let Err(e) = said {
                self.actions
                    .push(Action::Warning(Problem::at_node(self.bot, r, e)));
            }
        }
        let here = at(self.bot, r);
        self.session.state = State::Handover { at: here.clone() };
        self.actions.push(Action::HandoverStarted {
            at: here,
            queue: h.queue.clone(),
        });
        Then::Stop
    }

    /// The handover the conversation is in ended: `handover` is readable in templates,
    /// the resolve's `vars` are merged, and the flow goes on at the node's `next`
    /// (resolved) or its `on_timeout` (timed out; `next` without one).
    fn handover_ended(&mut self, end: &HandoverEnd) {
        let State::Handover { at } = self.session.state.clone() else {
            self.actions.push(Action::Warning(Problem::general(
                "a handover ended while the conversation was not handed over; ignored".into(),
            )));
            return;
        };
        self.session.handover = Some(serde_json::json!({
            "id": end.id,
            "state": end.outcome.as_str(),
            "status": end.status,
            "agent": end.agent,
        }));
        self.session
            .vars
            .extend(end.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.session.state = State::Idle;
        let Some(r) = self.bot.node_by_id(&at.flow, &at.node) else {
            let message = format!(
                "the conversation was handed over at {}.{}, which no longer exists; the conversation ends",
                at.flow, at.node
            );
            self.actions
                .push(Action::Warning(Problem::general(message)));
            self.end();
            return;
        };
        self.here = Some(at);
        self.visited.push(r);
        let on_timeout = match &self.bot.node(r).kind {
            NodeKind::Handover(h) => h.on_timeout,
            _ => None,
        };
        let target = match end.outcome {
            HandoverOutcome::TimedOut if on_timeout.is_some() => on_timeout,
            HandoverOutcome::TimedOut | HandoverOutcome::Resolved => self.next_of(r),
        };
        match target {
            Some(t) => self.run_from(t),
            None => self.end(),
        }
    }

    /// The turn stops at `r` until the effect's outcome arrives.
    fn await_effect(&mut self, r: NodeRef, effect: Effect) -> Then {
        let here = at(self.bot, r);
        self.session.state = State::Effect {
            at: here.clone(),
            message: self.message.clone(),
            resume: None,
            so_far: SoFar {
                nodes: u32::try_from(self.earlier_nodes + self.path.len()).unwrap_or(u32::MAX),
                sent: u32::try_from(self.sent).unwrap_or(u32::MAX),
                recovering: self.recovering,
            },
        };
        self.actions.push(Action::Effect { at: here, effect });
        Then::Stop
    }

    /// A problem at a node named by id, with its source position when it still exists.
    fn problem_at(&self, flow: &str, node: &str, failed: NodeAt, message: String) -> Problem {
        match self.bot.node_by_id(flow, node) {
            Some(r) => Problem::at_node(self.bot, r, message),
            None => Problem {
                at: Some(failed),
                source: None,
                message,
            },
        }
    }

    /// Decides where the message goes (docs/flows.md, "How a conversation runs").
    fn route(&self, kind: &EventKind) -> Route {
        if matches!(self.session.state, State::Handover { .. }) {
            return Route::ToAgent;
        }
        let waiting = match self.waiting() {
            Lookup::Found(w) => Some(w),
            Lookup::NotWaiting => None,
            Lookup::Gone(at) => return Route::Gone(at),
        };
        // Tapping a button of the message being answered answers it, even when another
        // flow's trigger names the same id.
        if let Some(w) = waiting {
            if choice_of(&w.choices, kind).is_some() {
                return Route::Answer(w);
            }
            if self.bot.flow(w.node.flow).interruptible
                && let Some((flow, groups)) = self.trigger(kind)
            {
                return Route::Start {
                    flow,
                    groups,
                    fresh: false,
                };
            }
            return Route::Answer(w);
        }
        if let Some((flow, groups)) = self.trigger(kind) {
            return Route::Start {
                flow,
                groups,
                fresh: true,
            };
        }
        let flow = if matches!(kind, EventKind::Unsupported(_)) {
            self.bot.fallback
        } else {
            self.bot.entry
        };
        Route::Start {
            flow,
            groups: Map::new(),
            fresh: true,
        }
    }

    /// The node the session waits at, resolved.
    fn waiting(&self) -> Lookup {
        let State::Waiting {
            at,
            retries_used,
            choices,
        } = &self.session.state
        else {
            return Lookup::NotWaiting;
        };
        match self.bot.node_by_id(&at.flow, &at.node) {
            Some(node) => Lookup::Found(Waiting {
                node,
                retries_used: *retries_used,
                choices: choices.clone(),
            }),
            None => Lookup::Gone(at.clone()),
        }
    }

    /// The first flow whose trigger matches, with the variables a regex captured.
    fn trigger(&self, kind: &EventKind) -> Option<(FlowIdx, Map<String, Value>)> {
        for (i, flow) in self.bot.flows.iter().enumerate() {
            for t in &flow.triggers {
                let groups = match (t, kind) {
                    (Trigger::Keywords(words), EventKind::Text(text)) => {
                        let text = normalize(text);
                        words.contains(&text).then(Map::new)
                    }
                    (Trigger::Regex(re), EventKind::Text(text)) => re
                        .captures(text.trim())
                        .map(|caps| answer::groups(re, &caps)),
                    (Trigger::Reply(id), EventKind::Reply { id: got, .. })
                    | (Trigger::Reply(id), EventKind::Button { payload: got, .. }) => {
                        (id == got).then(Map::new)
                    }
                    _ => None,
                };
                if let Some(groups) = groups {
                    return Some((FlowIdx(i as u32), groups));
                }
            }
        }
        None
    }

    /// The user answered the node the session waits at.
    fn answer(&mut self, w: &Waiting, kind: &EventKind) {
        let node = self.bot.node(w.node);
        self.here = Some(at(self.bot, w.node));
        self.visited.push(w.node);
        let value = match &node.kind {
            NodeKind::Buttons(_) | NodeKind::List(_) => {
                choice_of(&w.choices, kind).map(|id| (Value::from(id), Map::new()))
            }
            NodeKind::Ask(ask) => match answer::parse(&ask.expect, kind, &self.message) {
                Some(a) => match &ask.validate {
                    None => Some((a.value, a.groups)),
                    Some(check) => {
                        let ctx = self.context(Some(("answer", &a.value)));
                        match self.bot.flow(w.node.flow).templates.eval(check, &ctx) {
                            Ok(ok) if ok.is_true() => Some((a.value, a.groups)),
                            Ok(_) => None,
                            Err(e) => {
                                return self.fail_and_go_on(
                                    w.node,
                                    format!("`validate` failed: {}", e.message),
                                );
                            }
                        }
                    }
                },
                None => None,
            },
            NodeKind::RequestLocation(_) => match kind {
                EventKind::Location {
                    latitude,
                    longitude,
                    name,
                    address,
                } => Some((
                    answer::location(*latitude, *longitude, name, address),
                    Map::new(),
                )),
                _ => None,
            },
            NodeKind::Template(_) => match kind {
                EventKind::Button { payload, .. } => {
                    Some((Value::from(payload.as_str()), Map::new()))
                }
                EventKind::Reply { id, .. } => Some((Value::from(id.as_str()), Map::new())),
                _ => None,
            },
            NodeKind::WhatsAppFlow(_) => match kind {
                EventKind::FlowReply(v) => Some((v.clone(), Map::new())),
                _ => None,
            },
            // The session waited at a node that no longer waits (the bot was edited):
            // carry on from it.
            _ => Some((Value::Null, Map::new())),
        };
        match value {
            Some((value, groups)) => {
                self.session.state = State::Idle;
                if let Some(name) = &node.save {
                    self.session.vars.insert(name.clone(), value);
                }
                self.apply_groups(groups);
                if let Some(target) = self.next_of(w.node) {
                    self.run_from(target);
                }
            }
            None => self.retry(w),
        }
    }

    /// An unusable answer: ask again, or give up to `on_fail` / the fallback flow.
    fn retry(&mut self, w: &Waiting) {
        let node = self.bot.node(w.node);
        let retry = node.kind.retry();
        let (retries, reprompt, on_fail) = match retry {
            Some(r) => (r.retries, r.reprompt.as_ref(), r.on_fail),
            None => (crate::flow::DEFAULT_RETRIES, None, None),
        };
        if w.retries_used < retries {
            let reply_to = self.session.last_user_message_id.clone();
            match reprompt {
                Some(text) => match self.render(w.node, text).and_then(|body| {
                    let reprompt = Message::Text {
                        body,
                        preview_url: false,
                    };
                    self.deliver(w.node, vec![reprompt], reply_to)
                }) {
                    Ok(()) => {
                        self.session.state = State::Waiting {
                            at: at(self.bot, w.node),
                            retries_used: w.retries_used + 1,
                            choices: w.choices.clone(),
                        };
                    }
                    Err(e) => self.fail_and_go_on(w.node, e),
                },
                None => {
                    if let Then::Stop = self.visit(w.node)
                        && let State::Waiting { retries_used, .. } = &mut self.session.state
                    {
                        *retries_used = w.retries_used + 1;
                    }
                }
            }
            return;
        }
        self.session.state = State::Idle;
        let target = match on_fail {
            Some(target) => target,
            None => {
                // The fallback flow takes over the conversation: running calls are abandoned.
                self.session.stack.clear();
                first_node(self.bot, self.bot.fallback)
            }
        };
        self.run_from(target);
    }

    /// Runs nodes from `target` until one waits, the conversation ends, or an error.
    fn run_from(&mut self, mut target: Target) {
        loop {
            let node = match target {
                Target::Node(node) => node,
                Target::End => match self.session.stack.pop() {
                    // The end of a called flow returns to the node after the `call`.
                    Some(frame) => match self.bot.node_by_id(&frame.flow, &frame.node) {
                        Some(call) => match self.next_of(call) {
                            Some(t) => {
                                target = t;
                                continue;
                            }
                            None => return,
                        },
                        None => {
                            // The bot was edited while the call ran: say so, do not
                            // leave the user in silence.
                            let problem = Problem {
                                at: Some(frame),
                                source: None,
                                message: "the flow this node called ended, but the node no longer exists (the bot was edited)".into(),
                            };
                            match self.stop_with_error(problem) {
                                Then::Go(t) => {
                                    target = t;
                                    continue;
                                }
                                Then::Stop => return,
                            }
                        }
                    },
                    None => return self.end(),
                },
            };
            let most = self.bot.settings.limits.nodes_per_turn as usize;
            if self.earlier_nodes + self.path.len() >= most {
                // Straight to the fallback: `on_error` could go on looping.
                self.over_limit = true;
                let message = format!(
                    "stopped after {most} nodes in one turn without waiting for the user (limits.nodes_per_turn); path: {}",
                    self.path_text()
                );
                match self.fail_hard(node, message) {
                    Then::Go(t) => {
                        target = t;
                        continue;
                    }
                    Then::Stop => return,
                }
            }
            self.path.push(node);
            match self.visit(node) {
                Then::Go(next) => target = next,
                Then::Stop => return,
            }
        }
    }

    fn end(&mut self) {
        self.session.state = State::Idle;
        self.session.stack.clear();
        self.actions.push(Action::Ended);
    }

    /// Runs one node.
    fn visit(&mut self, r: NodeRef) -> Then {
        let node = self.bot.node(r);
        self.here = Some(at(self.bot, r));
        self.visited.push(r);
        match &node.kind {
            NodeKind::Set(values) => {
                // In order: a later value can read an earlier one.
                for (name, value) in values {
                    let v = match value {
                        crate::flow::SetValue::Literal(v) => v.clone(),
                        crate::flow::SetValue::Expr(e) => {
                            let ctx = self.context(None);
                            match self.bot.flow(r.flow).templates.eval(e, &ctx) {
                                Ok(v) => context::to_json(&v),
                                Err(err) => {
                                    return self.fail(r, format!("set {name}: {}", err.message));
                                }
                            }
                        }
                    };
                    self.session.vars.insert(name.clone(), v);
                }
            }
            NodeKind::Wait(d) => {
                self.paused = self.paused.saturating_add(d.as_secs() as i64);
                self.actions.push(Action::Pause(*d));
            }
            NodeKind::Call(target) => {
                self.session.stack.push(at(self.bot, r));
                return Then::Go(Target::Node(*target));
            }
            NodeKind::End(texts) => {
                let messages = texts
                    .iter()
                    .map(|t| {
                        Ok(Message::Text {
                            body: self.render(r, &t.text)?,
                            preview_url: t.preview_url,
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()
                    .and_then(|m| self.deliver(r, m, None));
                if let Err(e) = messages {
                    return self.fail(r, e);
                }
                return Then::Go(Target::End);
            }
            NodeKind::Http(h) => {
                return match self.http_request(r, h) {
                    Ok(request) => self.await_effect(r, Effect::Http(request)),
                    Err(e) => self.fail(r, e),
                };
            }
            NodeKind::Script(s) => {
                return match self.run_script(r, s) {
                    Ok(Some(target)) => Then::Go(target),
                    Ok(None) => match self.next_of(r) {
                        Some(t) => Then::Go(t),
                        None => Then::Stop,
                    },
                    Err(e) => self.fail(r, e),
                };
            }
            NodeKind::Handover(h) => {
                let queue = h.queue.clone();
                return self.await_effect(r, Effect::Handover { queue });
            }
            _ => {
                let messages = match self.messages_of(r) {
                    Ok(m) => m,
                    Err(e) => return self.fail(r, e),
                };
                let choices = messages.last().map(shown_choices).unwrap_or_default();
                if let Err(e) = self.deliver(r, messages, None) {
                    return self.fail(r, e);
                }
                if node.kind.waits() {
                    self.session.state = State::Waiting {
                        at: at(self.bot, r),
                        retries_used: 0,
                        choices,
                    };
                    return Then::Stop;
                }
            }
        }
        match self.next_of(r) {
            Some(t) => Then::Go(t),
            None => Then::Stop,
        }
    }

    /// Where to go after a node; `None` when a condition failed (already reported).
    fn next_of(&mut self, r: NodeRef) -> Option<Target> {
        match &self.bot.node(r).next {
            Next::Goto(t) => Some(*t),
            Next::Branch {
                branches,
                otherwise,
            } => {
                let ctx = self.context(None);
                for (cond, target) in branches {
                    match self.bot.flow(r.flow).templates.eval(cond, &ctx) {
                        Ok(v) if v.is_true() => return Some(*target),
                        Ok(_) => {}
                        Err(e) => {
                            let message =
                                format!("condition `{}` failed: {}", cond.source(), e.message);
                            return match self.fail(r, message) {
                                Then::Go(t) => Some(t),
                                Then::Stop => None,
                            };
                        }
                    }
                }
                Some(*otherwise)
            }
        }
    }

    /// A node failed: go to its `on_error`, or to the fallback flow with an error.
    fn fail(&mut self, r: NodeRef, message: String) -> Then {
        // A turn over its limits must not continue at `on_error`: that may loop again.
        let on_error = if self.over_limit {
            None
        } else {
            self.bot.node(r).on_error
        };
        match on_error {
            Some(target) => {
                self.actions.push(Action::Warning(Problem::at_node(
                    self.bot,
                    r,
                    format!("{message}; continuing at on_error"),
                )));
                Then::Go(target)
            }
            None => self.fail_hard(r, message),
        }
    }

    /// [`Self::fail`] outside a node's run (validating an answer, reprompting):
    /// continue at `on_error` right away.
    fn fail_and_go_on(&mut self, r: NodeRef, message: String) {
        if let Then::Go(target) = self.fail(r, message) {
            self.run_from(target);
        }
    }

    fn fail_hard(&mut self, r: NodeRef, message: String) -> Then {
        self.stop_with_error(Problem::at_node(self.bot, r, message))
    }

    /// The turn cannot go on: report why, and let the fallback flow answer so the user
    /// is not left in silence. Running calls are abandoned. When the fallback flow itself
    /// fails (or overruns), the turn just stops: trying it again could loop.
    fn stop_with_error(&mut self, mut problem: Problem) -> Then {
        self.session.state = State::Idle;
        self.session.stack.clear();
        if self.recovering {
            problem
                .message
                .push_str("; this happened in the fallback flow, so the turn stops");
            self.actions.push(Action::Error(problem));
            return Then::Stop;
        }
        problem.message.push_str("; the fallback flow takes over");
        self.actions.push(Action::Error(problem));
        // The fallback gets a turn's budget of its own.
        self.recovering = true;
        self.over_limit = false;
        self.path.clear();
        self.earlier_nodes = 0;
        self.sent = 0;
        Then::Go(first_node(self.bot, self.bot.fallback))
    }

    /// The nodes this turn ran, as `flow.node` ids; a long path shows its start and end.
    fn path_text(&self) -> String {
        let ids: Vec<String> = self
            .path
            .iter()
            .map(|r| {
                let id = at(self.bot, *r);
                format!("{}.{}", id.flow, id.node)
            })
            .collect();
        if ids.len() <= 2 * PATH_SHOWN + 1 {
            return ids.join(" → ");
        }
        format!(
            "{} → … {} more … → {}",
            ids[..PATH_SHOWN].join(" → "),
            ids.len() - 2 * PATH_SHOWN,
            ids[ids.len() - PATH_SHOWN..].join(" → ")
        )
    }

    /// Now as the user will see the next message: after the pauses of this turn.
    fn clock(&self) -> i64 {
        self.now.saturating_add(self.paused)
    }

    fn effect_failed(&mut self, r: NodeRef, what: &str, e: EffectError) -> Then {
        match e {
            EffectError::Unsupported => self.fail_hard(
                r,
                format!("{what} nodes are not supported by this runtime yet"),
            ),
            EffectError::Unavailable => self.fail(r, format!("{what}: no agent is available")),
            EffectError::Failed(message) => self.fail(r, format!("{what} failed: {message}")),
        }
    }

    /// Runs a `script` node: `vars` and `profile` take what the script left in them;
    /// the target it chose with `next_node()`, if any.
    fn run_script(&mut self, r: NodeRef, s: &Script) -> Result<Option<Target>, String> {
        let contact = context::contact_value(&self.session);
        let session = context::session_value(&self.session, self.here.as_ref(), self.clock());
        let input = script::Input {
            vars: &self.session.vars,
            profile: &self.session.profile,
            message: &self.message,
            contact: &contact,
            session: &session,
            env: self.host.env(),
            now: self.clock(),
        };
        let outcome = self
            .bot
            .scripts
            .run(&s.program, input, true)
            .map_err(|e| script_error(s, &e))?;
        self.session.vars = outcome.vars;
        self.session.profile = outcome.profile;
        let Some(next) = outcome.next else {
            return Ok(None);
        };
        if next == "end" {
            return Ok(Some(Target::End));
        }
        let flow = self.bot.flow(r.flow);
        match flow.node_index(&next) {
            Some(node) => Ok(Some(Target::Node(NodeRef { flow: r.flow, node }))),
            None => Err(format!(
                "the script ({}) chose next_node(\"{next}\"), but flow \"{}\" has no node \"{next}\"",
                s.origin, flow.id
            )),
        }
    }

    fn context(&self, extra: Option<(&str, &Value)>) -> minijinja::Value {
        context::build(
            &self.session,
            self.here.as_ref(),
            &self.message,
            self.clock(),
            self.host.env(),
            extra,
        )
    }

    fn render(&self, r: NodeRef, text: &Text) -> Result<String, String> {
        match text {
            Text::Static(s) => Ok(s.clone()),
            Text::Template(_) => {
                let ctx = self.context(None);
                self.bot
                    .flow(r.flow)
                    .templates
                    .render(text, &ctx)
                    .map_err(|e| e.message)
            }
        }
    }

    fn render_opt(&self, r: NodeRef, text: &Option<Text>) -> Result<Option<String>, String> {
        text.as_ref().map(|t| self.render(r, t)).transpose()
    }

    fn render_json(&self, r: NodeRef, t: &JsonTemplate) -> Result<Value, String> {
        Ok(match t {
            JsonTemplate::Null => Value::Null,
            JsonTemplate::Bool(b) => Value::Bool(*b),
            JsonTemplate::Number(n) => Value::Number(n.clone()),
            JsonTemplate::Text(text) => Value::String(self.render(r, text)?),
            JsonTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.render_json(r, i))
                    .collect::<Result<_, _>>()?,
            ),
            JsonTemplate::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.render_json(r, v)?)))
                    .collect::<Result<_, String>>()?,
            ),
        })
    }

    fn number(&self, r: NodeRef, n: &Number, what: &str) -> Result<f64, String> {
        match n {
            Number::Fixed(v) => Ok(*v),
            Number::Template(t) => {
                let text = self.render(r, t)?;
                text.trim()
                    .parse()
                    .map_err(|_| format!("{what} rendered as \"{text}\", which is not a number"))
            }
        }
    }

    fn media_ref(&self, r: NodeRef, source: &MediaSource) -> Result<MediaRef, String> {
        Ok(match source {
            MediaSource::Link(t) => MediaRef::Link(self.render(r, t)?),
            MediaSource::Id(t) => MediaRef::Id(self.render(r, t)?),
        })
    }

    fn header(
        &self,
        r: NodeRef,
        h: &Option<crate::flow::Header>,
    ) -> Result<Option<Header>, String> {
        Ok(match h {
            None => None,
            Some(crate::flow::Header::Text(t)) => Some(Header::Text(self.render(r, t)?)),
            Some(crate::flow::Header::Media(kind, m)) => {
                Some(Header::Media(*kind, self.media_ref(r, &m.source)?))
            }
        })
    }

    fn rows(&self, r: NodeRef, choices: &[crate::flow::Choice]) -> Result<Vec<Row>, String> {
        choices
            .iter()
            .map(|c| {
                Ok(Row {
                    id: c.id.clone(),
                    title: self.render(r, &c.title)?,
                    description: self.render_opt(r, &c.description)?,
                })
            })
            .collect()
    }

    /// The messages a sending node sends, rendered (several only for a `say` list).
    fn messages_of(&self, r: NodeRef) -> Result<Vec<Message>, String> {
        let node: &Node = self.bot.node(r);
        if let NodeKind::Say(texts) = &node.kind {
            return texts
                .iter()
                .map(|t| {
                    Ok(Message::Text {
                        body: self.render(r, &t.text)?,
                        preview_url: t.preview_url,
                    })
                })
                .collect();
        }
        Ok(vec![match &node.kind {
            NodeKind::Media(kind, m) => Message::Media {
                kind: *kind,
                source: self.media_ref(r, &m.source)?,
                caption: self.render_opt(r, &m.caption)?,
                filename: self.render_opt(r, &m.filename)?,
            },
            NodeKind::Buttons(b) => Message::Buttons {
                header: self.header(r, &b.header)?,
                body: self.render(r, &b.body)?,
                footer: self.render_opt(r, &b.footer)?,
                buttons: self.rows(r, &b.buttons)?,
            },
            NodeKind::List(l) => Message::List {
                header: self.render_opt(r, &l.header)?,
                body: self.render(r, &l.body)?,
                footer: self.render_opt(r, &l.footer)?,
                button: self.render(r, &l.button)?,
                sections: l
                    .sections
                    .iter()
                    .map(|s| {
                        Ok(Section {
                            title: self.render_opt(r, &s.title)?,
                            rows: self.rows(r, &s.rows)?,
                        })
                    })
                    .collect::<Result<_, String>>()?,
            },
            NodeKind::Ask(a) => Message::Text {
                body: self.render(r, &a.text)?,
                preview_url: false,
            },
            NodeKind::Template(t) => Message::Template {
                name: t.name.clone(),
                language: t.language.clone(),
                components: t
                    .components
                    .iter()
                    .map(|c| self.render_json(r, c))
                    .collect::<Result<_, _>>()?,
            },
            NodeKind::Location(l) => Message::Location {
                latitude: self.number(r, &l.latitude, "latitude")?,
                longitude: self.number(r, &l.longitude, "longitude")?,
                name: self.render_opt(r, &l.name)?,
                address: self.render_opt(r, &l.address)?,
            },
            NodeKind::RequestLocation(rl) => Message::RequestLocation {
                body: self.render(r, &rl.body)?,
            },
            NodeKind::Contacts(cards) => Message::Contacts(
                cards
                    .iter()
                    .map(|c| self.render_json(r, c))
                    .collect::<Result<_, _>>()?,
            ),
            NodeKind::CtaUrl(c) => Message::CtaUrl {
                header: self.header(r, &c.header)?,
                body: self.render(r, &c.body)?,
                footer: self.render_opt(r, &c.footer)?,
                button: self.render(r, &c.button)?,
                url: self.render(r, &c.url)?,
            },
            NodeKind::WhatsAppFlow(f) => {
                let (flow_id, flow_name) = match &f.flow {
                    crate::flow::WhatsAppFlowRef::Id(id) => (Some(id.clone()), None),
                    crate::flow::WhatsAppFlowRef::Name(name) => (None, Some(name.clone())),
                };
                Message::WhatsAppFlow {
                    header: self.render_opt(r, &f.header)?,
                    body: self.render(r, &f.body)?,
                    footer: self.render_opt(r, &f.footer)?,
                    flow_id,
                    flow_name,
                    cta: self.render(r, &f.cta)?,
                    mode: f.mode,
                    flow_token: self
                        .render_opt(r, &f.flow_token)?
                        .unwrap_or_else(|| self.session.id.clone()),
                    screen: f.screen.clone(),
                    data: f
                        .data
                        .as_ref()
                        .map(|d| self.render_json(r, d))
                        .transpose()?,
                }
            }
            NodeKind::React(emoji) => Message::Reaction {
                message_id: self
                    .session
                    .last_user_message_id
                    .clone()
                    .ok_or("there is no user message to react to")?,
                emoji: self.render(r, emoji)?,
            },
            NodeKind::Payload(p) => Message::Payload(self.render_json(r, p)?),
            NodeKind::Say(_)
            | NodeKind::Set(_)
            | NodeKind::Wait(_)
            | NodeKind::Call(_)
            | NodeKind::End(_)
            | NodeKind::Http(_)
            | NodeKind::Script(_)
            | NodeKind::Handover(_) => {
                return Err(format!("a {} node sends no message", node.kind.name()));
            }
        }])
    }

    fn http_request(&self, r: NodeRef, h: &crate::flow::Http) -> Result<HttpRequest, String> {
        let headers = h
            .headers
            .iter()
            .map(|(k, v)| Ok((k.clone(), self.render(r, v)?)))
            .collect::<Result<_, String>>()?;
        let pairs = |list: &[(String, crate::flow::Text)]| {
            list.iter()
                .map(|(k, v)| Ok((k.clone(), self.render(r, v)?)))
                .collect::<Result<Vec<_>, String>>()
        };
        let body = match &h.body {
            HttpBody::None => RequestBody::None,
            HttpBody::Json(j) => RequestBody::Json(self.render_json(r, j)?),
            HttpBody::Form(f) => RequestBody::Form(pairs(f)?),
            HttpBody::Text(t) => RequestBody::Text(self.render(r, t)?),
        };
        Ok(HttpRequest {
            method: h.method,
            url: self.render(r, &h.url)?,
            headers,
            query: pairs(&h.query)?,
            body,
            timeout: h.timeout,
            retries: h.retries,
        })
    }

    /// Queues a node's messages, all or none: outside the 24-hour window a node's free-form
    /// messages are replaced by its one `on_window_closed` template (or not sent: an
    /// error), and each message must fit WhatsApp's limits (or is shortened, per the
    /// bot's `render.overflow`).
    fn deliver(
        &mut self,
        r: NodeRef,
        mut messages: Vec<Message>,
        reply_to: Option<String>,
    ) -> Result<(), String> {
        let here = at(self.bot, r);
        let free_form = !messages.iter().all(Message::allowed_outside_window);
        let instead = if free_form {
            self.window_template(r)?
        } else {
            None
        };
        // The window is judged when the message goes out: after this turn's pauses, and
        // a turn the user did not start (a delivery status) may find it closed.
        if free_form && !self.session.window_open(self.clock()) {
            let Some(template) = instead.clone() else {
                return Err("the user's 24-hour window is closed and the node has no on_window_closed template; nothing was sent".into());
            };
            messages = vec![template];
        }
        let most = self.bot.settings.limits.messages_per_turn as usize;
        if self.sent + messages.len() > most {
            self.over_limit = true;
            return Err(format!(
                "stopped before sending more than {most} messages in one turn (limits.messages_per_turn); path: {}",
                self.path_text()
            ));
        }
        let mut warnings = Vec::new();
        for message in &mut messages {
            for field in fit::fit(message, self.bot.settings.overflow)? {
                warnings.push(Action::Warning(Problem::at_node(
                    self.bot,
                    r,
                    format!("{field} was longer than WhatsApp allows and was shortened"),
                )));
            }
        }
        self.actions.extend(warnings);
        self.sent += messages.len();
        for message in messages {
            let instead_outside_window = if message.allowed_outside_window() {
                None
            } else {
                instead.clone()
            };
            self.actions.push(Action::Send(Box::new(Outgoing {
                at: here.clone(),
                message,
                reply_to: reply_to.clone(),
                instead_outside_window,
            })));
        }
        Ok(())
    }

    /// The node's `on_window_closed` template, rendered, if it has one.
    fn window_template(&self, r: NodeRef) -> Result<Option<Message>, String> {
        let Some(t) = &self.bot.node(r).on_window_closed else {
            return Ok(None);
        };
        let components = t
            .components
            .iter()
            .map(|c| self.render_json(r, c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Message::Template {
            name: t.name.clone(),
            language: t.language.clone(),
            components,
        }))
    }

    /// Saves regex groups: a named group that did not take part in the match is removed,
    /// so an optional group never keeps a value from an earlier message.
    fn apply_groups(&mut self, groups: Map<String, Value>) {
        for (name, value) in groups {
            if value.is_null() {
                self.session.vars.remove(&name);
            } else {
                self.session.vars.insert(name, value);
            }
        }
    }
}

/// The id a tap or typed title picks among the shown choices.
fn choice_of<'c>(choices: &'c [ShownChoice], kind: &EventKind) -> Option<&'c str> {
    match kind {
        EventKind::Reply { id, .. } => choices.iter().find(|c| &c.id == id).map(|c| c.id.as_str()),
        // A quick reply of the template sent instead outside the 24-hour window.
        EventKind::Button { payload, text } => choices
            .iter()
            .find(|c| &c.id == payload || normalize(&c.title) == normalize(text))
            .map(|c| c.id.as_str()),
        EventKind::Text(text) => {
            let typed = normalize(text);
            choices
                .iter()
                .find(|c| normalize(&c.title) == typed)
                .map(|c| c.id.as_str())
        }
        _ => None,
    }
}

fn shown_choices(message: &Message) -> Vec<ShownChoice> {
    let rows: Vec<&Row> = match message {
        Message::Buttons { buttons, .. } => buttons.iter().collect(),
        Message::List { sections, .. } => sections.iter().flat_map(|s| &s.rows).collect(),
        _ => Vec::new(),
    };
    rows.into_iter()
        .map(|r| ShownChoice {
            id: r.id.clone(),
            title: r.title.clone(),
        })
        .collect()
}

fn first_node(bot: &Bot, flow: FlowIdx) -> Target {
    if bot.flow(flow).nodes.is_empty() {
        Target::End
    } else {
        Target::Node(NodeRef { flow, node: 0 })
    }
}

fn at(bot: &Bot, r: NodeRef) -> NodeAt {
    NodeAt {
        flow: bot.flow(r.flow).id.clone(),
        node: bot.node(r).id.clone(),
    }
}

/// A script's run-time error, at its place in the `.rhai` file or the flow file.
fn script_error(s: &Script, e: &script::ScriptError) -> String {
    if e.line == 0 {
        return format!("script error in {}: {}", s.origin, e.message);
    }
    let (file, pos) = s.place.locate(e.line, e.column);
    format!(
        "script error at {}:{}:{}: {}",
        file.display(),
        pos.line,
        pos.column,
        e.message
    )
}

/// How a node that asks for an effect is named in messages.
fn effect_name(kind: &NodeKind) -> &'static str {
    match kind {
        NodeKind::Http(_) => "http",
        NodeKind::Handover(_) => "handover",
        _ => "effect",
    }
}
