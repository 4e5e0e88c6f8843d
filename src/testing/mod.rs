//! The conversation test runner behind `parlance test`: plays each test's user steps
//! against the real engine with a simulated clock, and checks every bot message, every
//! variable and every error against what the test expects.
//!
//! Strict on purpose: a message the test does not expect fails it at the next user step,
//! and so does an engine error, so a test that passes says what the bot really does.

pub mod fake_graph;
pub mod mocks;

use crate::diag::Pos;
use crate::engine::{
    self, Action, Event, EventKind, NO_FAILURE_REASON, NodeAt, OfflineHost, Session,
};
use crate::flow::{Bot, MediaKind};
use crate::render::{self, terminal};
use crate::source::{SourceFile, YamlPath};
use crate::spec::test::{
    RawBotExpect, RawFailed, RawFailedDetails, RawMessageExpect, RawMessageFields, RawStatus,
    RawStep, RawTestFile, RawTestMedia, RawUserEvent, RawUserInput,
};
use crate::transform::{self, Sent, Step};
use mocks::{MockError, Mocks};
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::path::PathBuf;

/// The simulated user, unless the test says otherwise.
pub const DEFAULT_WA_ID: &str = "15550001111";
pub const DEFAULT_NAME: &str = "Test User";

/// Puts the test's `env:` over the process's: only names the bot exposes, as templates
/// can read no others.
fn test_env(bot: &Bot, test: &RawTestFile, env: &mut Map<String, Value>) -> Result<(), MockError> {
    for (name, value) in &test.env {
        if !bot.settings.expose_env.contains(name) {
            return Err(MockError {
                path: YamlPath::root().key("env").key(name),
                message: format!(
                    "`env` sets {name}, which is not in `expose_env` in parlance.yaml; templates cannot read it"
                ),
            });
        }
        env.insert(name.clone(), Value::String(value.clone()));
    }
    Ok(())
}

/// Where the simulated clock starts: Monday 2026-01-05 09:00 UTC.
pub const CLOCK_START: i64 = 1_767_603_600;

/// The outcome of one test.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub name: String,
    pub file: PathBuf,
    pub failure: Option<Failure>,
}

/// Why a test failed: at which step, and what differed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub file: PathBuf,
    pub pos: Pos,
    /// The step number, from 1; `None` when the test failed before its steps (its
    /// `mocks:` or `env:` do not fit the bot).
    pub step: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: ",
            self.file.display(),
            self.pos.line,
            self.pos.column
        )?;
        if let Some(step) = self.step {
            write!(f, "step {step}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Runs one conversation test. `env` is what the process exposes (`expose_env`); the
/// test's own `env:` goes over it.
pub fn run(
    bot: &Bot,
    file: &SourceFile,
    test: &RawTestFile,
    mut env: Map<String, Value>,
) -> Report {
    let before_steps = |e: MockError| Failure {
        file: file.display.clone(),
        pos: file
            .tree
            .as_ref()
            .map_or(Pos::START, |t| t.key_pos_of(&e.path)),
        step: None,
        message: e.message,
    };
    let prepared = test_env(bot, test, &mut env)
        .and_then(|()| Mocks::new(bot, file, test, &env))
        .map_err(before_steps);
    let failure = match prepared {
        Ok(mocks) => Runner::new(bot, test, env, mocks).run(file, test),
        Err(failure) => Some(failure),
    };
    Report {
        name: test.name.clone(),
        file: file.display.clone(),
        failure,
    }
}

struct Runner<'a> {
    bot: &'a Bot,
    host: OfflineHost,
    session: Session,
    contact_name: Option<String>,
    clock: i64,
    counter: u64,
    /// Messages the bot sent that no `bot:` step has checked yet.
    pending: VecDeque<Sent>,
    /// The node of every message the bot sent, in order: what a `status:` step can
    /// report on, as `serve` finds a status's message among those it sent.
    sent: Vec<NodeAt>,
    /// Answers the bot's `http` calls.
    mocks: Mocks,
}

impl<'a> Runner<'a> {
    fn new(bot: &'a Bot, test: &RawTestFile, env: Map<String, Value>, mocks: Mocks) -> Self {
        let contact = test.contact.clone();
        let wa_id = contact
            .as_ref()
            .and_then(|c| c.wa_id.clone())
            .unwrap_or_else(|| DEFAULT_WA_ID.into());
        let mut session = Session::new(&wa_id, CLOCK_START);
        session.profile = test
            .profile
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Runner {
            bot,
            host: OfflineHost { env },
            session,
            contact_name: Some(
                contact
                    .and_then(|c| c.name)
                    .unwrap_or_else(|| DEFAULT_NAME.into()),
            ),
            clock: CLOCK_START,
            counter: 0,
            pending: VecDeque::new(),
            sent: Vec::new(),
            mocks,
        }
    }

    fn run(mut self, file: &SourceFile, test: &RawTestFile) -> Option<Failure> {
        for (i, step) in test.steps.iter().enumerate() {
            let path = YamlPath::root().key("steps").index(i);
            let fail = |message: String| {
                Some(Failure {
                    file: file.display.clone(),
                    pos: file.tree.as_ref().map_or(Pos::START, |t| t.pos_of(&path)),
                    step: Some(i + 1),
                    message,
                })
            };
            let result = match step {
                RawStep::User(input) => self.user(input),
                RawStep::Bot(expect) => self.bot_step(expect),
                RawStep::Vars(expected) => self.vars(expected),
                RawStep::Advance(duration) => match crate::compile::parse_duration(duration) {
                    Ok(d) => {
                        self.clock += d.as_secs() as i64;
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
                RawStep::Status(status) => self.status(status),
            };
            if let Err(message) = result {
                return fail(message);
            }
        }
        None
    }

    fn user(&mut self, input: &RawUserInput) -> Result<(), String> {
        self.nothing_pending()?;
        self.counter += 1;
        let event = Event {
            id: Some(format!("wamid.test.{}", self.counter)),
            at: self.clock,
            contact_name: self.contact_name.clone(),
            kind: event_kind(input),
        };
        self.play(&event)
    }

    /// A delivery status for a message the bot sent: the event `serve` makes of a
    /// `failed` status (the sending node's flow and node, Meta's code and title, no
    /// message id, no contact name), played as its own turn at the simulated clock.
    fn status(&mut self, status: &RawStatus) -> Result<(), String> {
        self.nothing_pending()?;
        let RawStatus::Failed(failed) = status;
        let details = match failed {
            RawFailed::Code(code) => RawFailedDetails {
                code: Some(*code),
                ..RawFailedDetails::default()
            },
            RawFailed::Details(details) => details.clone(),
        };
        let at = self.sent_by(details.node.as_deref())?;
        let event = Event {
            id: None,
            at: self.clock,
            contact_name: None,
            kind: EventKind::DeliveryFailed {
                flow: at.flow,
                node: at.node,
                code: details.code,
                reason: details
                    .reason
                    .unwrap_or_else(|| NO_FAILURE_REASON.to_string()),
            },
        };
        self.play(&event)
    }

    /// The node of the message a status reports on: the last message the bot sent, or
    /// the last one `node` (`flow.node`) sent. WhatsApp only reports on messages that
    /// were sent, so naming any other is a mistake in the test.
    fn sent_by(&self, node: Option<&str>) -> Result<NodeAt, String> {
        let Some(name) = node else {
            return self.sent.last().cloned().ok_or_else(|| {
                "a `failed` status reports on the bot's last message, but the bot has sent nothing yet in this test".to_string()
            });
        };
        let Some((flow, id)) = name.split_once('.') else {
            return Err(format!(
                "`node: {name}` must name a node as `flow.node`, e.g. `main.welcome`"
            ));
        };
        if let Some(at) = self
            .sent
            .iter()
            .rev()
            .find(|at| at.flow == flow && at.node == id)
        {
            return Ok(at.clone());
        }
        if self.bot.node_by_id(flow, id).is_none() {
            return Err(format!(
                "a `failed` status names {name}, a node the bot does not have"
            ));
        }
        let mut senders: Vec<String> = Vec::new();
        for at in &self.sent {
            let sender = format!("{}.{}", at.flow, at.node);
            if !senders.contains(&sender) {
                senders.push(sender);
            }
        }
        Err(if senders.is_empty() {
            format!("a `failed` status names {name}, but the bot has sent nothing yet in this test")
        } else {
            format!(
                "a `failed` status names {name}, but that node has sent no message yet in this test (messages came from {})",
                senders.join(", ")
            )
        })
    }

    /// A message no `bot:` step checked fails the test before the next event.
    fn nothing_pending(&self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        Err(format!(
            "the bot sent more than the test expects before this step:\n{}",
            self.describe_pending()
        ))
    }

    /// Runs one turn for `event` and queues what the bot sends; an engine error or a
    /// payload WhatsApp would reject fails the step.
    fn play(&mut self, event: &Event) -> Result<(), String> {
        let session = std::mem::replace(&mut self.session, Session::new("", 0));
        let wa_id = session.contact.wa_id.clone();
        // `http` calls are answered by the test's mocks; a handover is `Unsupported`,
        // which stops the test with the engine's error.
        let turn = transform::run(
            self.bot,
            session,
            event,
            self.clock,
            &self.host,
            &mut self.mocks,
            &wa_id,
        );
        self.session = turn.session;
        // A call the mocks could not answer is the cause of whatever the turn did next.
        if let Some(failure) = self.mocks.take_failure() {
            return Err(failure);
        }
        for step in turn.steps {
            let action = match step {
                Step::Send(sent) => {
                    // A payload the output transformer changed was checked then.
                    if !sent.transformed
                        && let Err(problems) = render::check(&sent.payload)
                    {
                        return Err(format!(
                            "{}.{} rendered a payload WhatsApp would reject:\n    {}\n    {}",
                            sent.out.at.flow,
                            sent.out.at.node,
                            problems.join("\n    "),
                            sent.payload
                        ));
                    }
                    self.sent.push(sent.out.at.clone());
                    self.pending.push_back(*sent);
                    continue;
                }
                // `serve` goes on without the transformer; a test stops, so the
                // error is found before the bot serves.
                Step::TransformerFailed(p) => return Err(format!("{p}")),
                Step::Other(action) => action,
            };
            match action {
                Action::Error(p) => return Err(format!("the bot stopped with an error: {p}")),
                Action::Pause(d) => self.clock += d.as_secs() as i64,
                // Messages come as `Step::Send`.
                Action::Send(_)
                | Action::Warning(_)
                | Action::Ended
                | Action::HandoverStarted { .. }
                | Action::Effect { .. }
                | Action::ToAgent => {}
            }
        }
        Ok(())
    }

    fn bot_step(&mut self, expect: &RawBotExpect) -> Result<(), String> {
        let Some(sent) = self.pending.pop_front() else {
            return Err("expected a message from the bot, but it sent nothing more".into());
        };
        let out = &sent.out;
        let sent_by = self
            .bot
            .node_by_id(&out.at.flow, &out.at.node)
            .map(|r| self.bot.node(r).kind.name())
            .unwrap_or_default();
        let check = match expect {
            RawBotExpect::Text(pattern) => match sent_text(&sent) {
                Some(text) => {
                    matches(pattern, text).map_err(|_| format!("expected the text {pattern:?}"))
                }
                None => Err(format!(
                    "expected the text {pattern:?}, but the message has no text"
                )),
            },
            RawBotExpect::Kind(map) => {
                let Some((kind, expect)) = map.iter().next() else {
                    return Err("a bot step needs a message kind".into());
                };
                if kind != sent_by && kind != out.message.kind_name() {
                    Err(format!("expected a {kind} message"))
                } else {
                    self.check_message(&sent, expect)
                }
            }
        };
        check.map_err(|why| {
            format!(
                "{why}\n  received from {}.{} ({sent_by}):\n{}",
                out.at.flow,
                out.at.node,
                indent(&sent)
            )
        })
    }

    fn check_message(&self, sent: &Sent, expect: &RawMessageExpect) -> Result<(), String> {
        let out = &sent.out;
        let fields = match expect {
            RawMessageExpect::Text(pattern) => {
                let text = sent_text(sent).unwrap_or_default();
                return matches(pattern, text)
                    .map_err(|_| format!("expected the text {pattern:?}"));
            }
            RawMessageExpect::Fields(f) => f,
        };
        let RawMessageFields {
            body,
            body_contains,
            header,
            footer,
            buttons,
            button,
            rows,
            link,
            url,
            name,
            payload,
        } = fields.as_ref();
        let rendered = &sent.payload;
        let text = sent_text(sent).unwrap_or_default();
        let interactive = &rendered["interactive"];
        let check =
            |what: &str, pattern: &Option<String>, actual: Option<&str>| -> Result<(), String> {
                match pattern {
                    None => Ok(()),
                    Some(p) => match actual {
                        Some(a) => matches(p, a)
                            .map_err(|_| format!("expected the {what} {p:?}, got {a:?}")),
                        None => Err(format!(
                            "expected the {what} {p:?}, but the message has none"
                        )),
                    },
                }
            };
        check("body", body, Some(text))?;
        if let Some(part) = body_contains
            && !text.contains(part.as_str())
        {
            return Err(format!("expected the body to contain {part:?}"));
        }
        check("header", header, interactive["header"]["text"].as_str())?;
        check("footer", footer, interactive["footer"]["text"].as_str())?;
        let button_label = interactive["action"]["button"]
            .as_str()
            .or(interactive["action"]["parameters"]["display_text"].as_str())
            .or(interactive["action"]["parameters"]["flow_cta"].as_str());
        check("button label", button, button_label)?;
        check(
            "url",
            url,
            interactive["action"]["parameters"]["url"].as_str(),
        )?;
        let kind = rendered["type"].as_str().unwrap_or_default();
        check("link", link, rendered[kind]["link"].as_str())?;
        check("template name", name, rendered["template"]["name"].as_str())?;
        if let Some(expected) = buttons {
            let titles: Vec<String> = terminal::choices(&out.message)
                .into_iter()
                .map(|(_, t)| t)
                .filter(|_| matches!(out.message, engine::Message::Buttons { .. }))
                .collect();
            if &titles != expected {
                return Err(format!("expected the buttons {expected:?}, got {titles:?}"));
            }
        }
        if let Some(expected) = rows {
            let titles: Vec<String> = match &out.message {
                engine::Message::List { .. } => terminal::choices(&out.message)
                    .into_iter()
                    .map(|(_, t)| t)
                    .collect(),
                _ => Vec::new(),
            };
            if &titles != expected {
                return Err(format!("expected the rows {expected:?}, got {titles:?}"));
            }
        }
        if let Some(expected) = payload {
            partial_match(expected, rendered, "")
                .map_err(|e| format!("the payload differs: {e}"))?;
        }
        Ok(())
    }

    fn vars(&self, expected: &indexmap::IndexMap<String, Value>) -> Result<(), String> {
        for (name, want) in expected {
            match self.session.vars.get(name) {
                Some(got) if same_value(got, want) => {}
                Some(got) => return Err(format!("expected vars.{name} = {want}, got {got}")),
                None => {
                    let set: Vec<&String> = self.session.vars.keys().collect();
                    return Err(format!(
                        "expected vars.{name} = {want}, but it is not set (set: {set:?})"
                    ));
                }
            }
        }
        Ok(())
    }

    fn describe_pending(&self) -> String {
        self.pending
            .iter()
            .map(indent)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The text the user gets: from the payload when the output transformer changed it.
fn sent_text(sent: &Sent) -> Option<&str> {
    if sent.transformed {
        transform::payload_text(&sent.payload)
    } else {
        sent.out.message.main_text()
    }
}

fn indent(sent: &Sent) -> String {
    let lines = if sent.transformed {
        transform::payload_lines(&sent.payload)
    } else {
        terminal::describe(&sent.out.message)
    };
    lines
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Exact text, or a regular expression when written as `/.../`.
fn matches(pattern: &str, actual: &str) -> Result<(), ()> {
    let ok = match pattern.strip_prefix('/').and_then(|p| p.strip_suffix('/')) {
        Some(re) if !re.is_empty() => regex::Regex::new(re)
            .map(|r| r.is_match(actual))
            .unwrap_or(false),
        _ => pattern == actual,
    };
    if ok { Ok(()) } else { Err(()) }
}

/// Numbers compare by value (5 and 5.0 are the same answer); everything else exactly.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// Every key of `expected` is in `actual` with a matching value; strings may be `/regex/`.
fn partial_match(expected: &Value, actual: &Value, at: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let here = format!("{at}/{k}");
                match a.get(k) {
                    Some(av) => partial_match(v, av, &here)?,
                    None => return Err(format!("{here} is missing")),
                }
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!("{at} has {} items, expected {}", a.len(), e.len()));
            }
            e.iter()
                .zip(a)
                .enumerate()
                .try_for_each(|(i, (ev, av))| partial_match(ev, av, &format!("{at}/{i}")))
        }
        (Value::String(e), Value::String(a)) => {
            matches(e, a).map_err(|_| format!("{at} is {a:?}, expected {e:?}"))
        }
        _ if same_value(expected, actual) => Ok(()),
        _ => Err(format!("{at} is {actual}, expected {expected}")),
    }
}

fn event_kind(input: &RawUserInput) -> EventKind {
    let media = |kind: MediaKind, m: &RawTestMedia, n: &str| EventKind::Media {
        kind,
        id: m.id.clone().unwrap_or_else(|| format!("media.test.{n}")),
        mime_type: m.mime_type.clone(),
        caption: m.caption.clone(),
        filename: m.filename.clone(),
    };
    match input {
        RawUserInput::Text(t) => EventKind::Text(t.clone()),
        RawUserInput::Event(e) => match e {
            RawUserEvent::Text(t) => EventKind::Text(t.clone()),
            RawUserEvent::Reply(id) => EventKind::Reply {
                id: id.clone(),
                title: id.clone(),
            },
            RawUserEvent::Button(payload) => EventKind::Button {
                payload: payload.clone(),
                text: payload.clone(),
            },
            RawUserEvent::Location(l) => EventKind::Location {
                latitude: l.latitude,
                longitude: l.longitude,
                name: l.name.clone(),
                address: l.address.clone(),
            },
            RawUserEvent::Image(m) => media(MediaKind::Image, m, "image"),
            RawUserEvent::Document(m) => media(MediaKind::Document, m, "document"),
            RawUserEvent::Audio(m) => media(MediaKind::Audio, m, "audio"),
            RawUserEvent::Video(m) => media(MediaKind::Video, m, "video"),
            RawUserEvent::Sticker(m) => media(MediaKind::Sticker, m, "sticker"),
            RawUserEvent::Reaction(emoji) => EventKind::Reaction {
                message_id: "wamid.bot.last".into(),
                emoji: emoji.clone(),
            },
            RawUserEvent::Contacts(c) => EventKind::Contacts(c.clone()),
            RawUserEvent::FlowReply(r) => EventKind::FlowReply(Value::Object(r.clone())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn regex_or_exact() {
        assert!(matches("/^Hi .*!$/", "Hi Ada!").is_ok());
        assert!(matches("Hi", "Hi Ada").is_err());
        assert!(matches("/", "/").is_ok());
    }

    #[test]
    fn partial_payloads_name_the_difference() {
        let actual = json!({ "type": "text", "text": { "body": "Hi", "preview_url": false } });
        assert!(partial_match(&json!({ "text": { "body": "/H/" } }), &actual, "").is_ok());
        assert_eq!(
            partial_match(&json!({ "text": { "preview_url": true } }), &actual, ""),
            Err("/text/preview_url is false, expected true".into())
        );
    }
}
