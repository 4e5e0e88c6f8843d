//! One turn with the bot's transformers around the engine: the function `serve`,
//! `chat` and `test` share, so a bot behaves the same in all three.

use super::message::{json_kind, to_event};
use super::{Kind, Transformer};
use crate::engine::context::{contact_value, message_value, session_value};
use crate::engine::{
    self, Action, Event, EventKind, Host, Outgoing, Perform, Problem, Session, State,
};
use crate::flow::Bot;
use crate::render;
use crate::script::{self, value::to_json};
use rhai::Dynamic;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::LazyLock;

/// What a turn did, in order, with every message already rendered to the payload that
/// goes out.
#[derive(Debug)]
pub struct Turn {
    pub session: Session,
    pub steps: Vec<Step>,
    /// The nodes the engine ran or answered ([`engine::Turn::visited`]).
    pub visited: Vec<crate::flow::NodeRef>,
    /// The input transformer dropped the message: no turn ran.
    pub dropped: bool,
}

#[derive(Debug)]
pub enum Step {
    /// A message to send (not dropped by the output transformer).
    Send(Box<Sent>),
    /// Anything else the engine asked for (never `Action::Send`).
    Other(Action),
    /// A transformer failed, and the turn went on without it (a warning of the turn in
    /// `serve` and `chat`; `test` fails the step).
    TransformerFailed(Problem),
}

/// A message the turn sends.
#[derive(Debug)]
pub struct Sent {
    /// What the engine decided to send (the node, the message as built).
    pub out: Outgoing,
    /// The Cloud API payload that goes out: rendered, then through the output
    /// transformer.
    pub payload: Value,
    /// The output transformer changed the payload: `out.message` no longer says what the
    /// user gets.
    pub transformed: bool,
}

/// Runs one turn for `event` (from `user`, the session's WhatsApp id) through the
/// input transformer, the engine, the output transformer and the finished transformer.
pub fn run(
    bot: &Bot,
    mut session: Session,
    event: &Event,
    now: i64,
    host: &dyn Host,
    perform: &mut dyn Perform,
    user: &str,
) -> Turn {
    let t = &bot.transformers;
    let mut steps = Vec::new();
    let mut event = Cow::Borrowed(event);
    let mut carry = Map::new();
    if let Some(input) = &t.input
        && is_users_message(&event.kind)
    {
        let message = message_value(event.id.as_deref(), &event.kind, event.at);
        let seen = Seen::of(&session, now);
        let result = call(bot, input, &session, &seen, &message, now, host, &message);
        match result.and_then(|(returned, outcome)| {
            if returned.is_unit() {
                return Ok((None, outcome));
            }
            let value = to_json(&returned, "the returned message").map_err(Failure::Value)?;
            let changed = to_event(&event, &value).map_err(Failure::Value)?;
            Ok((Some(changed), outcome))
        }) {
            Ok((changed, outcome)) => {
                // What it set is kept if the message starts a new conversation.
                carry = outcome
                    .vars
                    .iter()
                    .filter(|(k, v)| session.vars.get(*k) != Some(*v))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                session.vars = outcome.vars;
                session.profile = outcome.profile;
                match changed {
                    Some(e) => event = Cow::Owned(e),
                    None => {
                        return Turn {
                            session,
                            steps,
                            visited: Vec::new(),
                            dropped: true,
                        };
                    }
                }
            }
            Err(f) => steps.push(warning(Kind::Input, input, f, host)),
        }
    }

    let carry = (!carry.is_empty()).then_some(&carry);
    let turn = engine::run_carrying(bot, session, &event, now, host, perform, carry);
    let mut session = turn.session;
    let visited = turn.visited;
    let after = t.output.is_some() || t.finished.is_some();
    let message = if after {
        message_value(event.id.as_deref(), &event.kind, event.at)
    } else {
        Value::Null
    };
    let seen = after.then(|| Seen::of(&session, now));
    let mut sent = Vec::new();
    for action in turn.actions {
        let out = match action {
            Action::Send(out) => out,
            other @ (Action::Pause(_)
            | Action::Effect { .. }
            | Action::HandoverStarted { .. }
            | Action::ToAgent
            | Action::Ended
            | Action::Error(_)
            | Action::Warning(_)) => {
                steps.push(Step::Other(other));
                continue;
            }
        };
        let rendered = render::payload(user, &out.message, out.reply_to.as_deref());
        let (payload, transformed) = match (&t.output, &seen) {
            (None, _) | (_, None) => (rendered, false),
            (Some(output), Some(seen)) => {
                match transform_payload(bot, output, &session, seen, &message, now, host, &rendered)
                {
                    Ok((payload, outcome)) => {
                        session.vars = outcome.vars;
                        session.profile = outcome.profile;
                        match payload {
                            // Dropped.
                            None => continue,
                            Some(p) => {
                                let changed = p != rendered;
                                (p, changed)
                            }
                        }
                    }
                    Err(f) => {
                        steps.push(warning(Kind::Output, output, f, host));
                        (rendered, false)
                    }
                }
            }
        };
        if t.finished.is_some() {
            sent.push(payload.clone());
        }
        steps.push(Step::Send(Box::new(Sent {
            out: *out,
            payload,
            transformed,
        })));
    }

    if let (Some(finished), Some(seen)) = (&t.finished, &seen) {
        let mut arg = Map::new();
        arg.insert("message".into(), message.clone());
        arg.insert("sent".into(), Value::Array(sent));
        match call(
            bot,
            finished,
            &session,
            seen,
            &message,
            now,
            host,
            &Value::Object(arg),
        ) {
            Ok((_, outcome)) => {
                session.vars = outcome.vars;
                session.profile = outcome.profile;
            }
            Err(f) => steps.push(warning(Kind::Finished, finished, f, host)),
        }
    }
    Turn {
        session,
        steps,
        visited,
        dropped: false,
    }
}

/// The output transformer on one payload: `None` when it dropped it.
#[allow(clippy::too_many_arguments)]
fn transform_payload(
    bot: &Bot,
    output: &Transformer,
    session: &Session,
    seen: &Seen,
    message: &Value,
    now: i64,
    host: &dyn Host,
    payload: &Value,
) -> Result<(Option<Value>, script::Outcome), Failure> {
    let (returned, outcome) = call(bot, output, session, seen, message, now, host, payload)?;
    if returned.is_unit() {
        return Ok((None, outcome));
    }
    let value = to_json(&returned, "the returned payload").map_err(Failure::Value)?;
    if !value.is_object() {
        return Err(Failure::Value(format!(
            "output must return the payload (a map) or () to drop it, not {}",
            json_kind(&value)
        )));
    }
    if &value != payload
        && let Err(problems) = render::check(&value)
    {
        return Err(Failure::Value(format!(
            "the returned payload is one WhatsApp would reject: {}",
            problems.join("; ")
        )));
    }
    Ok((Some(value), outcome))
}

/// Why a transformer's work was not used.
enum Failure {
    /// It failed while running.
    Run(script::ScriptError),
    /// It returned something unusable.
    Value(String),
}

/// What a transformer sees of the session besides `vars` and `profile`: built once for
/// the input transformer and once for those after the engine (a transformer changes
/// only `vars` and `profile`).
struct Seen {
    contact: Value,
    session: Value,
}

impl Seen {
    fn of(session: &Session, now: i64) -> Self {
        let here = match &session.state {
            State::Idle => None,
            State::Waiting { at, .. } | State::Handover { at } | State::Effect { at, .. } => {
                Some(at)
            }
        };
        Seen {
            contact: contact_value(session),
            session: session_value(session, here, now),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn call(
    bot: &Bot,
    t: &Transformer,
    session: &Session,
    seen: &Seen,
    message: &Value,
    now: i64,
    host: &dyn Host,
    arg: &Value,
) -> Result<(Dynamic, script::Outcome), Failure> {
    let input = script::Input {
        vars: &session.vars,
        profile: &session.profile,
        message,
        contact: &seen.contact,
        session: &seen.session,
        env: host.env(),
        now,
    };
    bot.scripts
        .call(&t.program, input, arg)
        .map_err(Failure::Run)
}

/// The warning for a transformer that failed: its file and position, what went wrong,
/// and that the turn went on without it. Warnings are logged, so what a script may have
/// put in its error is masked: long digit runs (phone numbers) and the values of the
/// exposed environment variables (which may be secrets).
fn warning(kind: Kind, t: &Transformer, f: Failure, host: &dyn Host) -> Step {
    let (at, what) = match f {
        Failure::Run(e) if e.line > 0 => (
            format!("{}:{}:{}", t.file.display(), e.line, e.column.max(1)),
            e.message,
        ),
        Failure::Run(e) => (t.file.display().to_string(), e.message),
        Failure::Value(why) => (t.file.display().to_string(), why),
    };
    let then = match kind {
        Kind::Input => "the message went on unchanged",
        Kind::Output => "the message went out unchanged",
        Kind::Finished => "its changes were not kept",
    };
    Step::TransformerFailed(Problem {
        at: None,
        source: Some(at),
        message: format!(
            "{} transformer error: {}; {then}",
            kind.name(),
            mask_numbers(&mask_env(&what, host))
        ),
    })
}

/// Replaces the value of every exposed environment variable (of 4 characters or more:
/// shorter ones would mask ordinary words) with `***`.
fn mask_env(text: &str, host: &dyn Host) -> String {
    let mut text = text.to_string();
    for value in host.env().values() {
        if let Some(v) = value.as_str()
            && v.chars().count() >= 4
        {
            text = text.replace(v, "***");
        }
    }
    text
}

/// Replaces every run of 7 or more digits with `…` and its last 4.
fn mask_numbers(text: &str) -> String {
    static DIGITS: LazyLock<Option<regex::Regex>> =
        LazyLock::new(|| regex::Regex::new(r"\d{7,}").ok());
    match DIGITS.as_ref() {
        Some(re) => re
            .replace_all(text, |c: &regex::Captures<'_>| {
                crate::delivery::runtime::mask(&c[0])
            })
            .into_owned(),
        None => text.to_string(),
    }
}

/// Messages from the user go through the input transformer; delivery reports, effect
/// results and what the API puts in are not.
fn is_users_message(kind: &EventKind) -> bool {
    match kind {
        EventKind::Text(_)
        | EventKind::Reply { .. }
        | EventKind::Button { .. }
        | EventKind::Location { .. }
        | EventKind::Media { .. }
        | EventKind::Contacts(_)
        | EventKind::Reaction { .. }
        | EventKind::FlowReply(_)
        | EventKind::Unsupported(_) => true,
        // Not what the user sent: the API's messages are the caller's own.
        EventKind::DeliveryFailed { .. }
        | EventKind::EffectResult(_)
        | EventKind::Injected(_)
        | EventKind::Data(_)
        | EventKind::StartFlow { .. }
        | EventKind::HandoverEnded(_) => false,
    }
}
