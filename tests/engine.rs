//! The engine, conversation by conversation.
//!
//! Each script below plays user events against the bot in `fixtures/engine/bot/` (one
//! small flow per behaviour, each started by its own keyword), with a fresh
//! `Session::new("15550001111", CLOCK)` and a simulated clock that moves only when a
//! script says `advance`. Every turn is recorded: the actions as JSON (a `Send` as the
//! exact Cloud API body from `render::payload`), then the session's `vars` and `state`
//! (and its call `stack` when one is running). The recording must equal
//! `fixtures/engine/snapshots/<script>.json`, and every payload must pass
//! `render::check` (WhatsApp's outbound schema).
//!
//! To write the snapshots instead of comparing them:
//!
//! ```text
//! UPDATE_SNAPSHOTS=1 cargo test --test engine
//! ```
//!
//! then READ every changed file against docs/flows.md and the Cloud API shapes
//! (/work/shared/whatsapp/README.md §3) before committing it: a snapshot nobody read
//! only proves that the engine does what it does.
//!
//! The focused tests at the end check the most important behaviours with readable
//! failures (saved values, the loop bound, expiry, the 24-hour window). The `#[ignore]`d
//! ones are known engine bugs, written as docs/flows.md says the engine should behave;
//! their flows are kept out of the snapshot scripts so no snapshot records a bug. When
//! you fix one, remove its `ignore` (`cargo test --test engine -- --ignored` runs them).

use parlance::compile::{COMPLETE_BUT_REFUSED, load_bot_allowing, load_bot_with_env};
use parlance::engine::{self, Action, Event, EventKind, OfflineHost, Session, State};
use parlance::flow::{Bot, MediaKind};
use parlance::render;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// Monday 2026-01-05 09:00 UTC.
const CLOCK: i64 = 1_767_603_600;
const WA_ID: &str = "15550001111";
/// The WhatsApp profile name every event carries.
const NAME: &str = "Ada";
const MINUTE: i64 = 60;
const HOUR: i64 = 60 * MINUTE;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/engine")
}

/// The fixture bot holds on purpose what `serve` refuses to run (a loop, effect nodes,
/// a variable nothing sets), to test how the engine copes; nothing else may be wrong.
fn load_fixture_bot() -> parlance::compile::Loaded {
    load_bot_allowing(&fixtures().join("bot"), &|_| None, COMPLETE_BUT_REFUSED)
}

static BOT: LazyLock<Bot> = LazyLock::new(|| {
    let loaded = load_fixture_bot();
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error() && !COMPLETE_BUT_REFUSED.contains(&d.code))
        .map(ToString::to_string)
        .collect();
    assert!(
        errors.is_empty(),
        "the engine fixture bot has errors: {errors:#?}"
    );
    loaded.bot.expect("the engine fixture bot loads")
});

// ----- scripts -----

/// One step of a script.
#[derive(Debug, Clone)]
enum Step {
    /// The user sends something. `id`: whether it has a wamid; `age`: how many seconds
    /// before "now" it was sent (the 24-hour window runs from then).
    User { kind: EventKind, id: bool, age: i64 },
    /// Move the clock.
    Advance(i64),
}

impl Step {
    /// The message carries no WhatsApp id.
    fn without_id(self) -> Self {
        match self {
            Step::User { kind, age, .. } => Step::User {
                kind,
                id: false,
                age,
            },
            other => other,
        }
    }

    /// The message was sent `secs` before it is handled.
    fn aged(self, secs: i64) -> Self {
        match self {
            Step::User { kind, id, .. } => Step::User {
                kind,
                id,
                age: secs,
            },
            other => other,
        }
    }
}

fn user(kind: EventKind) -> Step {
    Step::User {
        kind,
        id: true,
        age: 0,
    }
}

fn text(body: &str) -> Step {
    user(EventKind::Text(body.into()))
}

/// A tapped reply button or list row.
fn reply(id: &str, title: &str) -> Step {
    user(EventKind::Reply {
        id: id.into(),
        title: title.into(),
    })
}

/// A tapped template quick-reply button.
fn button(payload: &str, text: &str) -> Step {
    user(EventKind::Button {
        payload: payload.into(),
        text: text.into(),
    })
}

fn location(latitude: f64, longitude: f64) -> Step {
    user(EventKind::Location {
        latitude,
        longitude,
        name: None,
        address: None,
    })
}

fn place(latitude: f64, longitude: f64, name: &str, address: &str) -> Step {
    user(EventKind::Location {
        latitude,
        longitude,
        name: Some(name.into()),
        address: Some(address.into()),
    })
}

fn media(kind: MediaKind, id: &str, mime: &str, caption: Option<&str>) -> Step {
    user(EventKind::Media {
        kind,
        id: id.into(),
        mime_type: Some(mime.into()),
        caption: caption.map(Into::into),
        filename: None,
    })
}

fn document(id: &str, filename: &str) -> Step {
    user(EventKind::Media {
        kind: MediaKind::Document,
        id: id.into(),
        mime_type: Some("application/pdf".into()),
        caption: None,
        filename: Some(filename.into()),
    })
}

fn flow_reply(response: Value) -> Step {
    user(EventKind::FlowReply(response))
}

fn unsupported(what: &str) -> Step {
    user(EventKind::Unsupported(what.into()))
}

/// WhatsApp reports that the message `flow.node` sent could not be delivered: a turn the
/// user did not start.
fn delivery_failed(flow: &str, node: &str) -> Step {
    user(EventKind::DeliveryFailed {
        flow: flow.into(),
        node: node.into(),
        code: Some(131026),
        reason: "Message undeliverable".into(),
    })
    .without_id()
}

fn advance(secs: i64) -> Step {
    Step::Advance(secs)
}

/// Declares the scripts: `script::NAME()` gives the steps, `SCRIPTS` the names, and
/// `snapshot::NAME` is the test comparing the recording with its snapshot.
macro_rules! scripts {
    ($( $(#[$attr:meta])* $name:ident => [$($step:expr),* $(,)?]; )*) => {
        mod script {
            use super::*;
            $( pub fn $name() -> Vec<Step> { vec![$($step),*] } )*
        }
        const SCRIPTS: &[&str] = &[$(stringify!($name)),*];
        mod snapshot {
            $( $(#[$attr])* #[test] fn $name() {
                super::check_snapshot(stringify!($name), &super::script::$name());
            } )*
        }
    };
}

scripts! {
    // 1. Message kinds and templates.
    // Every kind that does not wait, in one turn; every context name and filter.
    sends => [text("sends")];
    // Every kind that waits: template quick reply, buttons (text and media header), list,
    // request_location, whatsapp_flow with and without a screen; end with two messages.
    interactive => [
        text("interactive"),
        button("confirm", "Confirm"),
        text("  CAFÉ  CRÈME "),
        reply("l", "Large"),
        reply("munich", "München"),
        place(53.5511, 9.9937, "Rathaus", "Rathausmarkt 1, Hamburg"),
        flow_reply(json!({ "name": "Ada", "flow_token": "tok-15550001111" })),
        flow_reply(json!({ "stars": 5 })),
    ];

    // 2. Control nodes.
    // set in order, wait, if-branch, next { flow, node }, call falling off the end, call
    // of an end node, call into a node that waits.
    control_call => [text("control"), text("7"), text("42")];
    // The else branch (falling through to the node below it).
    control_else => [text("control"), text("2"), text("42")];
    // A branch to { flow: control_jump }, whose end ends the conversation.
    control_jump => [text("control"), text("0")];
    // A script node: vars and profile written back; the second time (the profile
    // remembers the first) it chooses the next node with next_node.
    script_node => [text("script"), text("script")];

    // 3. Every expect kind: one unusable answer, then a usable one.
    asks => [
        text("asks"),
        media(MediaKind::Image, "img-0", "image/jpeg", None),
        text("  Ada Lovelace "),
        text("three"),
        text("2,5"),
        text("4.5"),
        text("11"),
        text("7"),
        text("ada@"),
        text("Ada@Example.ORG"),
        text("call me"),
        text("+49 (30) 123-4567"),
        text("2026-02-30"),
        text("14.03.2026"),
        text("25:00"),
        text("2:30 pm"),
        text("maybe"),
        text("Ja!"),
        text("Berlin"),
        location(52.52, 13.405),
        media(MediaKind::Document, "doc-0", "application/pdf", None),
        media(MediaKind::Image, "img-1", "image/png", Some("my cat")),
        media(MediaKind::Image, "img-2", "image/png", None),
        document("doc-1", "contract.pdf"),
        text("here it is"),
        media(MediaKind::Audio, "aud-1", "audio/ogg", None),
        media(MediaKind::Image, "img-3", "image/png", None),
        media(MediaKind::Video, "vid-1", "video/mp4", None),
        text("whatever you like"),
        text("QA-0042 please"),
        text("qa-0042"),
        text("QA-0042"),
    ];

    // 4. Waiting.
    buttons_by_id => [text("pick"), reply("tea", "Tea"), reply("large", "Large")];
    // Typed titles: case, accents and spaces ignored, for buttons and list rows.
    typed_titles => [text("pick"), text("  CAFE "), text("small")];
    // An unknown reply id: the custom reprompt quoting the message; then the retries
    // are used up: on_fail.
    reprompt_then_on_fail => [text("pick"), reply("water", "Water"), text("milk")];
    // After a reprompt a usable answer still counts.
    reprompt_then_answer => [text("pick"), text("juice"), text("tea")];
    // The list's defaults: the message again, twice, then the fallback flow.
    default_reprompt_then_fallback => [
        text("pick"),
        reply("tea", "Tea"),
        text("huge"),
        media(MediaKind::Image, "img-9", "image/jpeg", None),
        text("enormous"),
    ];

    // 5. Triggers.
    trigger_keywords => [text("  HELP  "), text("AYUDAME")];
    // Named groups become vars; an optional group that did not take part is not set,
    // and the previous conversation's vars are gone.
    trigger_regex => [text("Order Pizza x2"), text("yes"), text("order tea"), text("no")];
    // A reply id starts its flow when idle, and interrupts a waiting buttons node whose
    // own buttons do not include it.
    trigger_reply => [reply("open_help", "Help"), text("pick"), reply("open_help", "Help")];
    // A trigger interrupts a waiting interruptible flow.
    // It is not a new conversation: the vars stay.
    interrupt => [text("asks"), text("Ada"), text("order tea"), text("yes")];
    // ... but is an answer in a flow with interruptible: false.
    no_interrupt => [text("pay"), text("order tea"), text("pay"), text("help")];

    // 6. Errors.
    // A loop only a condition closes: stopped at limits.messages_per_turn, then the
    // fallback flow answers.
    loop_bound => [text("loop")];
    // A loop that sends nothing: stopped at limits.nodes_per_turn (default 100).
    node_bound => [text("spin")];
    template_error => [text("broken")];
    // A variable saved on one branch only, read on the other: named, with the node's
    // file:line, and the fallback flow answers.
    undefined_value => [text("price"), reply("box", "A box")];
    // 29 minutes of silence keep the session; 31 more expire it.
    expiry => [text("hi"), advance(29 * MINUTE), text("Ada"), advance(31 * MINUTE), text("Blue")];
    effects_offline => [text("http"), text("agent")];
    // Idle: the fallback flow. Waiting: an unusable answer.
    unsupported_event => [unsupported("order"), text("pick"), unsupported("order")];
    react_without_message_id => [text("react"), text("react").without_id()];

    // 7. The 24-hour window.
    window_open => [text("window"), reply("yes", "Yes")];
    // Each free-form message becomes its on_window_closed template.
    window_closed => [text("window").aged(25 * HOUR), text("Yes")];
    // A delivery failure reported 2 seconds before the window closes: its on_error
    // waits 5 seconds, so its message meets a closed window and becomes the template.
    window_after_pause => [text("late"), advance(24 * HOUR - 2), delivery_failed("late", "shipped")];
    // A delivery failure after the window closed, at a node whose on_error has no
    // template: an error; the fallback flow cannot send free text either, so the turn stops.
    window_closed_status => [text("late"), advance(25 * HOUR), delivery_failed("late", "strict")];
}

// ----- playing and recording -----

/// One turn as it happened.
struct Played {
    actions: Vec<Action>,
    session: Session,
}

/// Plays `steps`; returns the recording (the snapshot's content) and every turn.
fn play(steps: &[Step]) -> (Value, Vec<Played>) {
    let bot: &Bot = &BOT;
    let host = OfflineHost::default();
    let mut session = Session::new(WA_ID, CLOCK);
    let mut clock = CLOCK;
    let mut count = 0;
    let mut record = Vec::new();
    let mut played = Vec::new();
    for step in steps {
        let (kind, has_id, age) = match step {
            Step::Advance(secs) => {
                clock += secs;
                record.push(json!({ "advance": duration(*secs) }));
                continue;
            }
            Step::User { kind, id, age } => (kind, *id, *age),
        };
        count += 1;
        let event = Event {
            id: has_id.then(|| format!("wamid.{count}")),
            at: clock - age,
            contact_name: Some(NAME.into()),
            kind: kind.clone(),
        };
        let turn = engine::run(bot, session, &event, clock, &host, &mut engine::NoEffects);
        session = turn.session;
        let actions: Vec<Value> = turn
            .actions
            .iter()
            .map(|a| action_json(a, &session))
            .collect();
        let mut entry = json!({
            "user": user_json(&event, age),
            "actions": actions,
            "vars": session.vars,
            "state": session.state,
        });
        if !session.stack.is_empty() {
            entry["stack"] = json!(session.stack);
        }
        record.push(entry);
        played.push(Played {
            actions: turn.actions,
            session: session.clone(),
        });
    }
    (json!({ "turns": record }), played)
}

fn duration(secs: i64) -> String {
    if secs % HOUR == 0 {
        format!("{}h", secs / HOUR)
    } else if secs % MINUTE == 0 {
        format!("{}m", secs / MINUTE)
    } else {
        format!("{secs}s")
    }
}

fn user_json(event: &Event, age: i64) -> Value {
    let what = match &event.kind {
        EventKind::Text(t) => json!({ "text": t }),
        EventKind::Reply { id, title } => json!({ "reply": { "id": id, "title": title } }),
        EventKind::Button { payload, text } => {
            json!({ "button": { "payload": payload, "text": text } })
        }
        EventKind::Location {
            latitude,
            longitude,
            name,
            address,
        } => json!({ "location": {
            "latitude": latitude, "longitude": longitude, "name": name, "address": address
        } }),
        EventKind::Media {
            kind,
            id,
            mime_type,
            caption,
            filename,
        } => json!({ kind.name(): {
            "id": id, "mime_type": mime_type, "caption": caption, "filename": filename
        } }),
        EventKind::Contacts(c) => json!({ "contacts": c }),
        EventKind::DeliveryFailed {
            flow,
            node,
            code,
            reason,
        } => {
            json!({ "delivery_failed": { "flow": flow, "node": node, "code": code, "reason": reason } })
        }
        EventKind::Reaction { message_id, emoji } => {
            json!({ "reaction": { "message_id": message_id, "emoji": emoji } })
        }
        EventKind::FlowReply(v) => json!({ "flow_reply": v }),
        EventKind::Unsupported(what) => json!({ "unsupported": what }),
        EventKind::EffectResult(outcome) => json!({ "effect_result": outcome }),
        EventKind::Injected(inner) => json!({ "injected": inner }),
        EventKind::Data(v) => json!({ "data": v }),
        EventKind::StartFlow { flow, node } => {
            json!({ "start_flow": { "flow": flow, "node": node } })
        }
        EventKind::HandoverEnded(end) => json!({ "handover_ended": end }),
    };
    let mut out = json!({ "id": event.id });
    if let (Value::Object(out), Value::Object(what)) = (&mut out, what) {
        out.extend(what);
        if age != 0 {
            out.insert("sent_ago".into(), json!(duration(age)));
        }
    }
    out
}

fn action_json(action: &Action, session: &Session) -> Value {
    match action {
        Action::Send(out) => {
            let payload = render::payload(
                &session.contact.wa_id,
                &out.message,
                out.reply_to.as_deref(),
            );
            if let Err(problems) = render::check(&payload) {
                panic!(
                    "{}.{} sent a payload WhatsApp would refuse: {problems:#?}\n{payload:#}",
                    out.at.flow, out.at.node
                );
            }
            json!({ "send": payload })
        }
        Action::Pause(d) => json!({ "pause": d.as_secs() }),
        Action::HandoverStarted { at, queue } => {
            json!({ "handover_started": { "at": format!("{}.{}", at.flow, at.node), "queue": queue } })
        }
        Action::ToAgent => json!({ "to_agent": true }),
        Action::Effect { at, effect } => {
            let effect = match effect {
                engine::Effect::Http(r) => json!({ "http": r.url }),
                engine::Effect::Handover { queue } => json!({ "handover": queue }),
            };
            json!({ "effect": { "at": format!("{}.{}", at.flow, at.node), "what": effect } })
        }
        Action::Ended => json!({ "ended": true }),
        Action::Warning(p) => json!({ "warning": p.to_string() }),
        Action::Error(p) => json!({ "error": p.to_string() }),
    }
}

fn snapshot_path(name: &str) -> PathBuf {
    fixtures().join("snapshots").join(format!("{name}.json"))
}

fn check_snapshot(name: &str, steps: &[Step]) {
    let (record, _) = play(steps);
    let actual = serde_json::to_string_pretty(&record).unwrap() + "\n";
    let path = snapshot_path(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run UPDATE_SNAPSHOTS=1 cargo test --test engine and read the file",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "the conversation {name} differs from {}:\n{}\n(run UPDATE_SNAPSHOTS=1 cargo test --test engine to rewrite it, then read the diff)",
            path.display(),
            first_difference(&expected, &actual)
        );
    }
}

/// The first differing line, with a little context.
fn first_difference(expected: &str, actual: &str) -> String {
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    let at = e
        .iter()
        .zip(&a)
        .position(|(x, y)| x != y)
        .unwrap_or(e.len().min(a.len()));
    let from = at.saturating_sub(3);
    let mut out = String::new();
    for (i, line) in e.iter().enumerate().take(at).skip(from) {
        out.push_str(&format!("  {:>5}   {line}\n", i + 1));
    }
    for line in e.iter().skip(at).take(4) {
        out.push_str(&format!("  {:>5} - {line}\n", at + 1));
    }
    for line in a.iter().skip(at).take(4) {
        out.push_str(&format!("  {:>5} + {line}\n", at + 1));
    }
    out
}

// ----- focused checks -----

fn sends(actions: &[Action]) -> Vec<Value> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(o) => Some(render::payload(WA_ID, &o.message, o.reply_to.as_deref())),
            _ => None,
        })
        .collect()
}

fn errors(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Error(p) => Some(p.to_string()),
            _ => None,
        })
        .collect()
}

fn waiting_at(session: &Session) -> Option<String> {
    match &session.state {
        State::Waiting { at, .. } => Some(format!("{}.{}", at.flow, at.node)),
        _ => None,
    }
}

#[test]
fn every_snapshot_belongs_to_a_script() {
    let dir = fixtures().join("snapshots");
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        if !SCRIPTS.contains(&stem.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(stale.is_empty(), "snapshots without a script: {stale:#?}");
}

#[test]
fn the_bot_loads_with_only_the_expected_warnings() {
    let loaded = load_fixture_bot();
    let mut codes: Vec<String> = loaded
        .diagnostics
        .iter()
        .map(|d| d.code.to_string())
        .collect();
    codes.sort();
    // `broken` reads a variable nothing sets, but the bot hands over (fx_handover),
    // and an agent's resolve may set any variable: no unset_variable.
    assert_eq!(codes, Vec::<String>::new(), "{:#?}", loaded.diagnostics);
}

#[test]
fn asks_save_the_parsed_answers() {
    let (_, turns) = play(&script::asks());
    let vars = &turns.last().unwrap().session.vars;
    let expected = json!({
        "full_name": "Ada Lovelace",
        "kilos": 2.5,
        "rating": 7,
        "email": "ada@example.org",
        "phone": "+49301234567",
        "day": "2026-03-14",
        "time": "14:30",
        "remind": true,
        "where": { "latitude": 52.52, "longitude": 13.405, "name": null, "address": null },
        "photo": { "kind": "image", "id": "img-1", "mime_type": "image/png", "caption": "my cat", "filename": null },
        "contract": { "kind": "document", "id": "doc-1", "mime_type": "application/pdf", "caption": null, "filename": "contract.pdf" },
        "voice": { "kind": "audio", "id": "aud-1", "mime_type": "audio/ogg", "caption": null, "filename": null },
        "clip": { "kind": "video", "id": "vid-1", "mime_type": "video/mp4", "caption": null, "filename": null },
        "anything": "whatever you like",
        "ticket": "QA-0042",
        "team": "QA",
        "num": "0042",
    });
    assert_eq!(Value::Object(vars.clone()), expected);
    for (i, t) in turns.iter().enumerate() {
        assert!(
            errors(&t.actions).is_empty(),
            "turn {}: {:?}",
            i + 1,
            t.actions
        );
    }
}

#[test]
fn an_unusable_answer_asks_again_and_saves_nothing() {
    let (_, turns) = play(&script::asks());
    // Turn 4 "three" is not a number: the question again, still waiting, nothing saved.
    let asked = |t: &Played| sends(&t.actions)[0]["text"]["body"].clone();
    assert_eq!(asked(&turns[3]), "How many kilos?");
    assert_eq!(
        waiting_at(&turns[3].session).as_deref(),
        Some("asks.a_number")
    );
    assert!(!turns[3].session.vars.contains_key("kilos"));
    // Turns 6 "4.5" (not an integer) and 7 "11" (an integer that `validate` rejects).
    for t in &turns[5..7] {
        assert_eq!(asked(t), "Rate us from 1 to 10.");
        assert_eq!(waiting_at(&t.session).as_deref(), Some("asks.a_integer"));
        assert!(!t.session.vars.contains_key("rating"));
    }
    assert_eq!(turns[7].session.vars["rating"], 7);
}

/// What the fixture bot's fallback flow says to a text message.
const SORRY_TEXT: &str = "Sorry, I did not understand that (text). Write hi to start again.";

#[test]
fn a_loop_closed_by_a_condition_stops_at_the_message_limit_and_the_fallback_answers() {
    // loop.yaml would say 1 to 50; the fixture bot allows 25 messages per turn.
    let (_, turns) = play(&script::loop_bound());
    let turn = &turns[0];
    assert_eq!(
        errors(&turn.actions),
        [
            "flows/loop.yaml:9:3: loop.tell: stopped before sending more than 25 messages in one turn (limits.messages_per_turn); path: loop.count → loop.tell → loop.count → loop.tell → loop.count → … 42 more … → loop.tell → loop.count → loop.tell → loop.count → loop.tell; the fallback flow takes over"
        ]
    );
    let mut expected: Vec<String> = (1..=25).map(|n| n.to_string()).collect();
    expected.push(SORRY_TEXT.into());
    assert_eq!(texts(&turn.actions), expected);
    assert!(matches!(turn.actions.last(), Some(Action::Ended)));
    assert_eq!(turn.session.state, State::Idle);
}

#[test]
fn a_loop_that_sends_nothing_stops_at_the_node_limit() {
    let (_, turns) = play(&script::node_bound());
    let turn = &turns[0];
    assert_eq!(
        errors(&turn.actions),
        [
            "flows/spin.yaml:7:3: spin.count: stopped after 100 nodes in one turn without waiting for the user (limits.nodes_per_turn); path: spin.count → spin.count → spin.count → spin.count → spin.count → … 90 more … → spin.count → spin.count → spin.count → spin.count → spin.count; the fallback flow takes over"
        ]
    );
    assert_eq!(texts(&turn.actions), [SORRY_TEXT]);
    assert_eq!(turn.session.vars["n"], 100);
}

/// Loads a bot written into a temporary folder: `files` are (path, content) pairs.
fn temp_bot(files: &[(&str, &str)]) -> Bot {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let loaded = load_bot_with_env(dir.path(), &|_| None);
    loaded
        .bot
        .unwrap_or_else(|| panic!("the bot loads: {:#?}", loaded.diagnostics))
}

/// One turn of `bot` for a new user who writes `body`.
fn first_turn(bot: &Bot, body: &str) -> engine::Turn {
    let host = OfflineHost::default();
    let session = Session::new(WA_ID, CLOCK);
    engine::step(bot, session, &Event::text(body, CLOCK), CLOCK, &host)
}

const COUNT_TO_50: &str = "nodes:
  count:
    set: { n: \"vars.n | default(0) + 1\" }
  tell:
    say: \"{{ vars.n }}\"
    next:
      - if: vars.n < 50
        then: count
      - else: end
";

#[test]
fn a_turn_sends_at_most_10_messages_by_default() {
    let bot = temp_bot(&[
        ("flows/main.yaml", COUNT_TO_50),
        (
            "flows/sorry.yaml",
            "nodes:\n  sorry:\n    say: \"Sorry.\"\n",
        ),
        ("parlance.yaml", "bot: { entry: main, fallback: sorry }\n"),
    ]);
    let turn = first_turn(&bot, "hi");
    assert_eq!(
        texts(&turn.actions),
        ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "Sorry."]
    );
    assert_eq!(
        errors(&turn.actions),
        [
            "flows/main.yaml:4:3: main.tell: stopped before sending more than 10 messages in one turn (limits.messages_per_turn); path: main.count → main.tell → main.count → main.tell → main.count → … 12 more … → main.tell → main.count → main.tell → main.count → main.tell; the fallback flow takes over"
        ]
    );
}

#[test]
fn a_fallback_flow_that_overruns_too_stops_the_turn() {
    // Without bot.fallback the fallback is the entry flow: the same loop again.
    let bot = temp_bot(&[
        ("flows/main.yaml", COUNT_TO_50),
        ("parlance.yaml", "limits: { messages_per_turn: 3 }\n"),
    ]);
    let turn = first_turn(&bot, "hi");
    // The fallback starts over with the same vars: n was 4 when the limit stopped "4".
    assert_eq!(texts(&turn.actions), ["1", "2", "3", "5", "6", "7"]);
    let errors = errors(&turn.actions);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].ends_with("; the fallback flow takes over"),
        "{errors:#?}"
    );
    assert_eq!(
        errors[1],
        "flows/main.yaml:4:3: main.tell: stopped before sending more than 3 messages in one turn (limits.messages_per_turn); path: main.count → main.tell → main.count → main.tell → main.count → main.tell → main.count → main.tell; this happened in the fallback flow, so the turn stops"
    );
    assert!(matches!(turn.actions.last(), Some(Action::Error(_))));
    assert_eq!(turn.session.state, State::Idle);
}

#[test]
fn an_undefined_value_names_the_variable_and_the_node_and_the_fallback_answers() {
    let (_, turns) = play(&script::undefined_value());
    let turn = &turns[1];
    assert_eq!(
        errors(&turn.actions),
        [
            "flows/undefined.yaml:21:3: undefined.total: set total: tried to use * operator on unsupported types undefined and number (`vars.quantity` is undefined); the fallback flow takes over"
        ]
    );
    assert_eq!(
        texts(&turn.actions),
        ["Sorry, I did not understand that (reply). Write hi to start again."]
    );
}

/// "echo " and 99,995 more characters.
fn long_echo() -> String {
    format!("echo {}", "x".repeat(99_995))
}

#[test]
fn an_over_long_echo_is_an_error_naming_the_field_and_the_fallback_answers() {
    let (_, turns) = play(&[text(&long_echo())]);
    let turn = &turns[0];
    assert_eq!(
        errors(&turn.actions),
        [
            "flows/echo.yaml:7:3: echo.back: the text is 100000 characters after rendering; WhatsApp allows at most 4096 (set render.overflow: truncate to shorten it instead); the fallback flow takes over"
        ]
    );
    assert_eq!(texts(&turn.actions), [SORRY_TEXT]);
}

#[test]
fn an_over_long_echo_is_shortened_with_overflow_truncate() {
    let bot = temp_bot(&[
        (
            "flows/main.yaml",
            "nodes:\n  back:\n    say: \"{{ message.text }}\"\n",
        ),
        ("parlance.yaml", "render: { overflow: truncate }\n"),
    ]);
    let turn = first_turn(&bot, &long_echo());
    let sent = texts(&turn.actions);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].chars().count(), 4096);
    assert!(sent[0].starts_with("echo xxx"));
    assert!(sent[0].ends_with("x…"));
    assert!(errors(&turn.actions).is_empty(), "{:?}", turn.actions);
    let warnings: Vec<String> = turn
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Warning(p) => Some(p.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        warnings,
        [
            "flows/main.yaml:2:3: main.back: the text was longer than WhatsApp allows and was shortened"
        ]
    );
}

#[test]
fn a_message_after_a_pause_past_the_window_becomes_its_template() {
    let (_, turns) = play(&script::window_after_pause());
    let turn = &turns[1];
    assert!(errors(&turn.actions).is_empty(), "{:?}", turn.actions);
    assert!(
        matches!(turn.actions[1], Action::Pause(_)),
        "{:?}",
        turn.actions
    );
    let sent = sends(&turn.actions);
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0]["template"]["name"], "we_miss_you");
    assert_eq!(
        sent[0]["template"]["components"][0]["parameters"][0]["text"],
        "Ada"
    );
    // A status is not a user message: the window stays where the user left it.
    assert_eq!(turn.session.last_user_message_at, Some(CLOCK));
}

#[test]
fn a_status_turn_after_the_window_closed_without_a_template_is_an_error() {
    let (_, turns) = play(&script::window_closed_status());
    let turn = &turns[1];
    assert!(sends(&turn.actions).is_empty(), "{:?}", turn.actions);
    assert_eq!(
        errors(&turn.actions),
        [
            "flows/late.yaml:23:3: late.sorry_strict: the user's 24-hour window is closed and the node has no on_window_closed template; nothing was sent; the fallback flow takes over",
            "flows/fallback.yaml:5:3: fallback.sorry: the user's 24-hour window is closed and the node has no on_window_closed template; nothing was sent; this happened in the fallback flow, so the turn stops",
        ]
    );
}

#[test]
fn an_expired_session_starts_the_entry_flow_afresh() {
    let (_, turns) = play(&script::expiry());
    // After 29 minutes the answer still counts.
    assert_eq!(turns[1].session.vars["name"], "Ada");
    assert_eq!(
        waiting_at(&turns[1].session).as_deref(),
        Some("main.colour")
    );
    // After 31 more, "Blue" is not an answer to the colour buttons: a new conversation.
    let last = &turns[2];
    let now = CLOCK + 60 * MINUTE;
    assert!(last.session.vars.is_empty(), "{:?}", last.session.vars);
    assert_eq!(waiting_at(&last.session).as_deref(), Some("main.ask_name"));
    assert_eq!(last.session.id, format!("{WA_ID}-{now}"));
    assert_eq!(last.session.started_at, now);
    assert_eq!(last.session.turn, 1);
    let texts: Vec<Value> = sends(&last.actions)
        .iter()
        .map(|p| p["text"]["body"].clone())
        .collect();
    assert_eq!(texts, ["Welcome, Ada!", "What should I call you?"]);
}

#[test]
fn effects_are_errors_without_a_host_that_supports_them() {
    let (_, turns) = play(&script::effects_offline());
    // The user is not left in silence: the fallback flow answers.
    for t in &turns {
        assert_eq!(texts(&t.actions), [SORRY_TEXT], "{:?}", t.actions);
        assert_eq!(t.session.state, State::Idle);
    }
    let all: Vec<String> = turns.iter().flat_map(|t| errors(&t.actions)).collect();
    assert_eq!(
        all,
        [
            "flows/fx_http.yaml:6:3: fx_http.call_api: http nodes are not supported by this runtime yet; the fallback flow takes over",
            "flows/fx_handover.yaml:6:3: fx_handover.human: handover nodes are not supported by this runtime yet; the fallback flow takes over",
        ]
    );
}

#[test]
fn outside_the_window_free_form_becomes_the_template() {
    let (_, turns) = play(&script::window_closed());
    let turn = &turns[0];
    assert!(errors(&turn.actions).is_empty(), "{:?}", turn.actions);
    let names: Vec<Value> = sends(&turn.actions)
        .iter()
        .map(|p| p["template"]["name"].clone())
        .collect();
    assert_eq!(names, ["we_miss_you", "order_update", "still_there"]);
    let sent = sends(&turn.actions);
    assert_eq!(
        sent[0]["template"]["components"][0]["parameters"][0]["text"],
        "Ada"
    );
    assert_eq!(
        waiting_at(&turn.session).as_deref(),
        Some("window.still_there")
    );
}

#[test]
fn a_reprompt_quotes_the_unusable_message() {
    let (_, turns) = play(&script::reprompt_then_on_fail());
    let sent = sends(&turns[1].actions);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["context"]["message_id"], "wamid.2");
    assert_eq!(
        sent[0]["text"]["body"],
        "Sorry, \"Water\" is not on the menu. Tap Tea or Café."
    );
    assert_eq!(
        sends(&turns[2].actions)[0]["text"]["body"],
        "Let us try again later."
    );
}

#[test]
fn a_trigger_from_idle_starts_a_new_conversation() {
    let (_, turns) = play(&script::trigger_regex());
    assert_eq!(
        Value::Object(turns[0].session.vars.clone()),
        json!({ "item": "Pizza", "qty": "2" })
    );
    // The conversation ended; "order tea" starts a new one without the old qty.
    assert_eq!(
        Value::Object(turns[2].session.vars.clone()),
        json!({ "item": "tea" })
    );
    assert_eq!(
        sends(&turns[2].actions)[0]["text"]["body"],
        "Order 1 × tea?"
    );
}

#[test]
fn a_flow_that_is_not_interruptible_takes_a_trigger_as_its_answer() {
    let (_, turns) = play(&script::no_interrupt());
    assert_eq!(turns[1].session.vars["holder"], "order tea");
    assert_eq!(turns[3].session.vars["holder"], "help");
}

// ----- known engine bugs: what docs/flows.md says should happen -----

/// The texts of the `text` messages sent.
fn texts(actions: &[Action]) -> Vec<String> {
    sends(actions)
        .iter()
        .filter_map(|p| p["text"]["body"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn session_flow_and_node_name_the_running_node() {
    let (_, turns) = play(&[text("where")]);
    assert_eq!(texts(&turns[0].actions), ["where.tell"]);
}

#[test]
fn giving_up_inside_a_call_does_not_return_to_the_caller() {
    // control calls sub_ask.question (retries: 0); "forty" is not a number: the
    // conversation goes to the fallback flow (flows.md, "How a conversation runs" 3).
    // The fallback flow was not called, so its end ends the conversation; it must not
    // continue below control's call (where `vars.fav` is not set).
    let (_, turns) = play(&[text("control"), text("2"), text("forty")]);
    let turn = &turns[2];
    assert_eq!(
        texts(&turn.actions),
        ["Sorry, I did not understand that (text). Write hi to start again."]
    );
    assert!(errors(&turn.actions).is_empty(), "{:?}", turn.actions);
    assert!(matches!(turn.actions.last(), Some(Action::Ended)));
    assert!(turn.session.stack.is_empty());
}

#[test]
fn any_saves_a_message_as_message_shows_it() {
    let (_, turns) = play(&[text("anything"), advance(MINUTE), location(52.52, 13.405)]);
    assert_eq!(
        turns[1].session.vars["thing"],
        json!({
            "id": "wamid.2",
            "type": "location",
            "timestamp": "2026-01-05T09:01:00Z",
            "location": { "latitude": 52.52, "longitude": 13.405, "name": null, "address": null },
        })
    );
}

#[test]
fn a_send_refused_outside_the_window_stops_the_turn() {
    // flows.md, "How a conversation runs" 7 and 9: the send is an error; without
    // on_error the fallback flow answers, but it cannot send free text either, so the
    // turn stops. Above all the bot must not wait for an answer to buttons the user
    // never received.
    let (_, turns) = play(&[text("window strict").aged(25 * HOUR)]);
    let turn = &turns[0];
    assert_eq!(
        errors(&turn.actions),
        [
            "flows/window_strict.yaml:7:3: window_strict.without_template: the user's 24-hour window is closed and the node has no on_window_closed template; nothing was sent; the fallback flow takes over",
            "flows/fallback.yaml:5:3: fallback.sorry: the user's 24-hour window is closed and the node has no on_window_closed template; nothing was sent; this happened in the fallback flow, so the turn stops",
        ]
    );
    assert_eq!(turn.actions.len(), 2, "{:?}", turn.actions);
    assert_eq!(turn.session.state, State::Idle);
}

#[test]
fn a_say_list_outside_the_window_sends_its_template_once() {
    let (_, turns) = play(&[text("window list").aged(25 * HOUR)]);
    let names: Vec<Value> = sends(&turns[0].actions)
        .iter()
        .map(|p| p["template"]["name"].clone())
        .collect();
    assert_eq!(names, ["we_miss_you"]);
}

#[test]
fn the_quick_reply_of_the_window_template_answers_the_buttons() {
    // The template is sent "instead of this message"; its quick reply's payload is the
    // id of the button it stands for.
    let (_, turns) = play(&[text("window").aged(25 * HOUR), button("yes", "Yes")]);
    let turn = &turns[1];
    assert_eq!(turn.session.vars.get("still"), Some(&json!("yes")));
    assert_eq!(texts(&turn.actions), ["Bye."]);
}

#[test]
fn a_handover_that_fails_does_not_promise_an_agent() {
    let (_, turns) = play(&[text("human")]);
    let turn = &turns[0];
    // Only the fallback flow's answer, not the handover's "an agent will be with you".
    assert_eq!(texts(&turn.actions), [SORRY_TEXT], "{:?}", turn.actions);
    assert_eq!(
        errors(&turn.actions),
        [
            "flows/fx_handover_say.yaml:7:3: fx_handover_say.human: handover nodes are not supported by this runtime yet; the fallback flow takes over"
        ]
    );
}

#[test]
fn an_optional_regex_group_that_did_not_match_is_not_kept() {
    // "order pizza x2" waits for a confirmation; "order tea" interrupts it (the same
    // conversation, so vars stay), but qty was not part of this match.
    let (_, turns) = play(&[text("order pizza x2"), text("order tea")]);
    assert_eq!(texts(&turns[1].actions), ["Order 1 × tea?"]);
    assert_eq!(turns[1].session.vars.get("qty"), None);
}

/// A `failed` delivery status of a node without `on_error` is reported, and the
/// conversation stays where it is (the user can still answer).
#[test]
fn a_delivery_failure_without_on_error_is_reported_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("flows")).unwrap();
    std::fs::write(
        dir.path().join("flows/main.yaml"),
        "nodes:\n  q:\n    ask: { text: \"Name?\" }\n    save: name\n  hi:\n    say: \"Hi {{ vars.name }}\"\n",
    )
    .unwrap();
    let bot = parlance::compile::load_bot_with_env(dir.path(), &|_| None)
        .bot
        .unwrap();
    let host = parlance::engine::OfflineHost::default();
    let s = Session::new("15550001111", CLOCK);
    let t = parlance::engine::step(&bot, s, &Event::text("hi", CLOCK), CLOCK, &host);
    let waiting = t.session.state.clone();
    let failed = Event {
        id: None,
        at: CLOCK + 5,
        contact_name: None,
        kind: EventKind::DeliveryFailed {
            flow: "main".into(),
            node: "q".into(),
            code: Some(131026),
            reason: "Message undeliverable".into(),
        },
    };
    let t = parlance::engine::step(&bot, t.session, &failed, CLOCK + 5, &host);
    assert_eq!(
        errors(&t.actions),
        [
            "flows/main.yaml:2:3: main.q: WhatsApp could not deliver the message (131026): Message undeliverable; the node has no on_error"
        ]
    );
    assert_eq!(t.session.state, waiting);
    assert_eq!(
        t.session.last_user_message_at,
        Some(CLOCK),
        "a status is not a user message"
    );
}

/// A reload removed the node that called the running flow: when the called flow ends,
/// the user hears the fallback flow instead of nothing, and the log says why.
#[test]
fn returning_to_a_call_that_a_reload_removed_is_an_error_and_the_fallback_answers() {
    let bot = temp_bot(&[
        (
            "flows/main.yaml",
            "nodes:\n  q:\n    ask: { text: \"Name?\" }\n    save: name\n  thanks:\n    say: \"Thanks, {{ vars.name }}.\"\n",
        ),
        (
            "flows/sorry.yaml",
            "nodes:\n  sorry:\n    say: \"Sorry.\"\n",
        ),
        ("parlance.yaml", "bot: { entry: main, fallback: sorry }\n"),
    ]);
    let mut session = Session::new(WA_ID, CLOCK);
    session.last_user_message_at = Some(CLOCK);
    session.state = State::Waiting {
        at: engine::NodeAt {
            flow: "main".into(),
            node: "q".into(),
        },
        retries_used: 0,
        choices: Vec::new(),
    };
    // Written before the reload: `old.ask_name` called main.
    session.stack.push(engine::NodeAt {
        flow: "old".into(),
        node: "ask_name".into(),
    });
    let host = OfflineHost::default();
    let turn = engine::step(&bot, session, &Event::text("Ada", CLOCK), CLOCK, &host);
    assert_eq!(texts(&turn.actions), ["Thanks, Ada.", "Sorry."]);
    assert_eq!(
        errors(&turn.actions),
        [
            "old.ask_name: the flow this node called ended, but the node no longer exists (the bot was edited); the fallback flow takes over"
        ]
    );
    assert!(turn.session.stack.is_empty());
}

/// Performs effects with scripted outcomes, and remembers what it was asked.
struct Scripted {
    outcomes: Vec<engine::EffectOutcome>,
    asked: Vec<engine::Effect>,
}

impl engine::Perform for Scripted {
    fn perform(&mut self, effect: &engine::Effect) -> engine::EffectOutcome {
        self.asked.push(effect.clone());
        if self.outcomes.is_empty() {
            engine::EffectOutcome::Unsupported
        } else {
            self.outcomes.remove(0)
        }
    }
}

fn run_with(word: &str, outcomes: Vec<engine::EffectOutcome>) -> (engine::Turn, Scripted) {
    let mut perform = Scripted {
        outcomes,
        asked: Vec::new(),
    };
    let event = Event {
        id: Some("wamid.fx".into()),
        at: CLOCK,
        contact_name: Some("Ada".into()),
        kind: EventKind::Text(word.into()),
    };
    let session = Session::new(WA_ID, CLOCK);
    let turn = engine::run(
        &BOT,
        session,
        &event,
        CLOCK,
        &OfflineHost::default(),
        &mut perform,
    );
    (turn, perform)
}

#[test]
fn an_http_node_ends_the_turn_with_an_effect_and_waits_for_its_outcome() {
    let event = Event {
        contact_name: Some("Ada".into()),
        ..Event::text("http", CLOCK)
    };
    let turn = engine::step(
        &BOT,
        Session::new(WA_ID, CLOCK),
        &event,
        CLOCK,
        &OfflineHost::default(),
    );
    match turn.actions.last() {
        Some(Action::Effect {
            at,
            effect: engine::Effect::Http(request),
        }) => {
            assert_eq!(
                (at.flow.as_str(), at.node.as_str()),
                ("fx_http", "call_api")
            );
            assert_eq!(request.url, "https://api.example.com/users/15550001111");
        }
        other => panic!("expected an http effect, got {other:?}"),
    }
    assert!(
        matches!(&turn.session.state, State::Effect { at, .. } if at.node == "call_api"),
        "{:?}",
        turn.session.state
    );
}

#[test]
fn an_effects_outcome_continues_at_its_node() {
    // The answer is saved and the flow goes on.
    let (turn, perform) = run_with(
        "http",
        vec![engine::EffectOutcome::Http(json!({ "id": 7 }))],
    );
    assert_eq!(perform.asked.len(), 1);
    assert_eq!(turn.session.vars.get("api"), Some(&json!({ "id": 7 })));
    assert!(errors(&turn.actions).is_empty(), "{:?}", turn.actions);
    // A failed call takes on_error; the message templates see is still the user's.
    let (turn, _) = run_with(
        "http",
        vec![engine::EffectOutcome::Failed("HTTP 500".into())],
    );
    assert_eq!(texts(&turn.actions), ["The API failed."]);
    assert_eq!(turn.session.vars.get("api"), None);
    // A handover that began says so and leaves the conversation to the agent.
    let (turn, _) = run_with("human", vec![engine::EffectOutcome::HandoverStarted]);
    assert_eq!(texts(&turn.actions), ["Connecting you to an agent…"]);
    assert!(matches!(turn.session.state, State::Handover { .. }));
    assert!(
        turn.actions
            .iter()
            .any(|a| matches!(a, Action::HandoverStarted { queue: Some(q), .. } if q == "billing"))
    );
}

#[test]
fn a_turn_keeps_its_one_fallback_and_its_limits_across_effects() {
    // The answer is text, so `tell` fails; the fallback (the same flow) calls again and
    // fails again: the turn stops there instead of calling once per step until the
    // effect limit.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("flows")).unwrap();
    std::fs::write(dir.path().join("parlance.yaml"), "bot: { entry: orders }\n").unwrap();
    std::fs::write(
        dir.path().join("flows/orders.yaml"),
        "nodes:\n  look:\n    say: looking\n  lookup:\n    http: { url: \"https://api.example.com/orders\" }\n    save: order\n  tell:\n    say: \"{{ vars.order.body.status }}\"\n    next: end\n",
    )
    .unwrap();
    let bot = parlance::compile::load_bot(dir.path())
        .bot
        .expect("the bot loads");
    let text =
        || engine::EffectOutcome::Http(json!({ "status": 200, "headers": {}, "body": "ok" }));
    let mut perform = Scripted {
        outcomes: (0..10).map(|_| text()).collect(),
        asked: Vec::new(),
    };
    let turn = engine::run(
        &bot,
        Session::new(WA_ID, CLOCK),
        &Event::text("hi", CLOCK),
        CLOCK,
        &OfflineHost::default(),
        &mut perform,
    );
    assert_eq!(perform.asked.len(), 2, "{:?}", turn.actions);
    assert_eq!(texts(&turn.actions), ["looking", "looking"]);
    let errors = errors(&turn.actions);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].ends_with("the fallback flow takes over"),
        "{errors:?}"
    );
    assert!(errors[1].ends_with("so the turn stops"), "{errors:?}");
}

#[test]
fn an_outcome_nobody_waits_for_is_ignored_with_a_warning() {
    let event = Event {
        id: None,
        at: CLOCK,
        contact_name: None,
        kind: EventKind::EffectResult(engine::EffectOutcome::HandoverStarted),
    };
    let turn = engine::step(
        &BOT,
        Session::new(WA_ID, CLOCK),
        &event,
        CLOCK,
        &OfflineHost::default(),
    );
    assert!(texts(&turn.actions).is_empty());
    assert_eq!(turn.session.state, State::Idle);
    assert!(
        turn.actions.iter().any(|a| matches!(a, Action::Warning(_))),
        "{:?}",
        turn.actions
    );
}

/// A performer whose every http call fails, counting the calls.
struct FailingCalls(usize);

impl engine::Perform for FailingCalls {
    fn perform(&mut self, _effect: &engine::Effect) -> engine::EffectOutcome {
        self.0 += 1;
        engine::EffectOutcome::HttpFailed(engine::HttpFailure {
            kind: engine::HttpErrorKind::Connect,
            status: None,
            message: "cannot connect: Connection refused".into(),
            response: None,
        })
    }
}

#[test]
fn a_failing_call_in_the_fallback_flow_stops_the_turn() {
    // The only flow is the fallback too: its failing call must not start it again and
    // again (each round a call with its timeouts and retries).
    let bot = temp_bot(&[(
        "flows/main.yaml",
        "nodes:\n  lookup:\n    http: { url: \"http://127.0.0.1:1/x\" }\n  tell:\n    say: \"Found.\"\n",
    )]);
    let mut calls = FailingCalls(0);
    let turn = engine::run(
        &bot,
        Session::new(WA_ID, CLOCK),
        &Event::text("hi", CLOCK),
        CLOCK,
        &OfflineHost::default(),
        &mut calls,
    );
    assert_eq!(calls.0, 2, "the call, then once more in the fallback flow");
    let errors = errors(&turn.actions);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].ends_with("; the fallback flow takes over"),
        "{errors:#?}"
    );
    assert!(
        errors[1].ends_with("; this happened in the fallback flow, so the turn stops"),
        "{errors:#?}"
    );
    assert_eq!(turn.session.state, State::Idle);
}

/// A bot whose entry asks for a word, with a `news` flow a notify can start.
fn api_bot() -> Bot {
    temp_bot(&[
        (
            "flows/main.yaml",
            "nodes:\n  q:\n    ask: { text: \"Word?\", expect: any }\n    save: word\n  done:\n    say: \"got {{ vars.word.type | default(vars.word) }} {{ message.injected | default(false) }} {{ message.data.n | default('-') if message.data is defined else '-' }}\"\n",
        ),
        (
            "flows/news.yaml",
            "nodes:\n  hello:\n    say: \"news for {{ vars.word | default('you') }} ({{ message.type }})\"\n  later:\n    say: \"later\"\n",
        ),
        ("parlance.yaml", "bot: { entry: main }\n"),
    ])
}

#[test]
fn an_injected_message_answers_like_the_users_but_leaves_the_window_alone() {
    let bot = api_bot();
    let host = OfflineHost::default();
    // The user wrote a minute ago: the window is open; the inject answers the ask.
    let turn = first_turn(&bot, "hi");
    let wrote_at = turn.session.last_user_message_at;
    assert_eq!(wrote_at, Some(CLOCK));
    let injected = Event {
        id: None,
        at: CLOCK + MINUTE,
        contact_name: Some("Mallory".into()),
        kind: EventKind::Injected(Box::new(EventKind::Text("apple".into()))),
    };
    let next = engine::step(&bot, turn.session, &injected, CLOCK + MINUTE, &host);
    assert_eq!(texts(&next.actions), ["got apple True -"]);
    assert_eq!(next.session.last_user_message_at, wrote_at);
    // Only the user's own messages carry their profile name.
    assert_eq!(next.session.contact.name, None);
    // Data: `message.type` is `data`, `message.data` the caller's JSON.
    let data = Event {
        kind: EventKind::Injected(Box::new(EventKind::Data(json!({ "n": 7 })))),
        ..injected
    };
    let turn = first_turn(&bot, "hi");
    let next = engine::step(&bot, turn.session, &data, CLOCK + MINUTE, &host);
    assert_eq!(next.session.last_user_message_at, wrote_at);
    assert_eq!(next.session.vars["word"]["type"], "data");
    assert_eq!(next.session.vars["word"]["data"], json!({ "n": 7 }));
    assert_eq!(texts(&next.actions), ["got data True 7"]);
}

#[test]
fn an_injected_message_outside_the_window_sends_no_free_form_text() {
    let bot = api_bot();
    let host = OfflineHost::default();
    let session = Session::new(WA_ID, CLOCK);
    let injected = Event {
        id: None,
        at: CLOCK,
        contact_name: None,
        kind: EventKind::Injected(Box::new(EventKind::Text("hi".into()))),
    };
    let turn = engine::step(&bot, session, &injected, CLOCK, &host);
    assert_eq!(turn.session.last_user_message_at, None);
    assert!(texts(&turn.actions).is_empty(), "{:?}", turn.actions);
    assert!(
        errors(&turn.actions)[0].contains("24-hour window is closed"),
        "{:?}",
        errors(&turn.actions)
    );
}

#[test]
fn a_notify_starts_a_flow_at_a_node_keeping_the_variables() {
    let bot = api_bot();
    let host = OfflineHost::default();
    let turn = first_turn(&bot, "hi");
    let answered = engine::step(
        &bot,
        turn.session,
        &Event::text("pear", CLOCK),
        CLOCK,
        &host,
    );
    let start = |node: Option<&str>, flow: &str| Event {
        id: None,
        at: CLOCK + MINUTE,
        contact_name: None,
        kind: EventKind::StartFlow {
            flow: flow.into(),
            node: node.map(str::to_string),
        },
    };
    let news = engine::step(
        &bot,
        answered.session.clone(),
        &start(None, "news"),
        CLOCK + MINUTE,
        &host,
    );
    assert_eq!(texts(&news.actions), ["news for pear (notify)", "later"]);
    assert_eq!(news.session.last_user_message_at, Some(CLOCK));
    let later = engine::step(
        &bot,
        answered.session.clone(),
        &start(Some("later"), "news"),
        CLOCK + MINUTE,
        &host,
    );
    assert_eq!(texts(&later.actions), ["later"]);
    let gone = engine::step(
        &bot,
        answered.session,
        &start(Some("nope"), "news"),
        CLOCK + MINUTE,
        &host,
    );
    assert!(texts(&gone.actions).is_empty());
    assert_eq!(
        errors(&gone.actions),
        ["notify: the bot has no node news.nope; nothing was started"]
    );
}

#[test]
fn a_handover_that_ends_goes_on_at_next_with_its_status_and_vars() {
    let (started, _) = run_with("human", vec![engine::EffectOutcome::HandoverStarted]);
    assert!(matches!(started.session.state, State::Handover { .. }));
    let ended = |outcome, vars: serde_json::Map<String, Value>| Event {
        id: None,
        at: CLOCK + 60,
        contact_name: None,
        kind: EventKind::HandoverEnded(engine::HandoverEnd {
            id: "ho_1".into(),
            outcome,
            status: Some("solved".into()),
            agent: Some("ada".into()),
            vars,
        }),
    };
    let window = started.session.last_user_message_at;
    let mut vars = serde_json::Map::new();
    vars.insert("ticket".into(), json!("T-1"));
    let turn = engine::step(
        &BOT,
        started.session.clone(),
        &ended(engine::HandoverOutcome::Resolved, vars),
        CLOCK + 60,
        &OfflineHost::default(),
    );
    assert_eq!(texts(&turn.actions), ["The agent is done."]);
    assert_eq!(turn.session.vars.get("ticket"), Some(&json!("T-1")));
    assert_eq!(
        turn.session.handover,
        Some(json!({ "id": "ho_1", "state": "resolved", "status": "solved", "agent": "ada" }))
    );
    // Not a message from the user: the 24-hour window is as the user left it.
    assert_eq!(turn.session.last_user_message_at, window);
    // Timed out without `on_timeout`: `next` too.
    let turn = engine::step(
        &BOT,
        started.session.clone(),
        &ended(engine::HandoverOutcome::TimedOut, serde_json::Map::new()),
        CLOCK + 60,
        &OfflineHost::default(),
    );
    assert_eq!(texts(&turn.actions), ["The agent is done."]);
    assert_eq!(
        turn.session.handover.as_ref().unwrap()["state"],
        "timed_out"
    );
    // While handed over, the session does not expire; an end for a conversation that
    // is not handed over is ignored with a warning.
    let much_later = CLOCK + 7 * 24 * 3600;
    let turn = engine::step(
        &BOT,
        started.session.clone(),
        &Event::text("still there?", much_later),
        much_later,
        &OfflineHost::default(),
    );
    assert!(matches!(turn.session.state, State::Handover { .. }));
    assert!(turn.actions.iter().any(|a| matches!(a, Action::ToAgent)));
    let turn = engine::step(
        &BOT,
        Session::new(WA_ID, CLOCK),
        &ended(engine::HandoverOutcome::Resolved, serde_json::Map::new()),
        CLOCK,
        &OfflineHost::default(),
    );
    assert!(texts(&turn.actions).is_empty());
    assert!(
        turn.actions.iter().any(|a| matches!(a, Action::Warning(_))),
        "{:?}",
        turn.actions
    );
}

#[test]
fn settings_never_print_their_secrets() {
    let bot = temp_bot(&[
        ("flows/main.yaml", "nodes:\n  hi:\n    say: hello\n"),
        (
            "parlance.yaml",
            "bot: { entry: main }\nsession: { store: \"redis://:hunter2@127.0.0.1:6379/0\" }\napi: { key: sup3r-s3cret-key }\nwhatsapp:\n  access_token: t0ken-value\n  phone_number_id: \"1001\"\n  app_secret: app-s3cret\n  verify_token: v3rify\n",
        ),
    ]);
    let shown = format!("{:?}", bot.settings);
    for secret in [
        "hunter2",
        "sup3r-s3cret-key",
        "t0ken-value",
        "app-s3cret",
        "v3rify",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(
        shown.contains("redis://<credentials>@127.0.0.1:6379/0"),
        "{shown}"
    );
}

/// Answers every `http` call with 200 and `{"eta": "5 min"}`.
struct AnswersEta;

impl engine::Perform for AnswersEta {
    fn perform(&mut self, _effect: &engine::Effect) -> engine::EffectOutcome {
        engine::EffectOutcome::Http(
            json!({ "status": 200, "headers": {}, "body": { "eta": "5 min" } }),
        )
    }
}

/// The session trace's "nodes visited": every node a turn ran or answered, in order,
/// across the steps of an effect and into the fallback flow, each named with its kind
/// and where it is written.
#[test]
fn a_turn_lists_the_nodes_it_visited_across_effects_and_the_fallback() {
    let bot = temp_bot(&[
        ("parlance.yaml", "bot: { entry: main, fallback: sorry }\n"),
        (
            "flows/sorry.yaml",
            "nodes:\n  sorry:\n    say: \"Sorry\"\n    next: end\n",
        ),
        (
            "flows/main.yaml",
            "nodes:
  hello:
    say: \"hi\"
  lookup:
    http: { url: \"https://shop.example.com/eta\" }
    save: order
  tell:
    say: \"ETA {{ vars.order.body.eta }}\"
  broken:
    say: \"{{ vars.order.body.missing.deeper }}\"
",
        ),
    ]);
    let session = Session::new(WA_ID, CLOCK);
    let host = OfflineHost::default();
    let turn = engine::run(
        &bot,
        session,
        &Event::text("go", CLOCK),
        CLOCK,
        &host,
        &mut AnswersEta,
    );
    let visits: Vec<String> = turn
        .visited
        .iter()
        .map(|r| {
            let v = engine::visit_of(&bot, *r);
            format!("{}.{} {} {}", v.at.flow, v.at.node, v.kind, v.source)
        })
        .collect();
    assert_eq!(
        visits[..5],
        [
            "main.hello say flows/main.yaml:2:3",
            "main.lookup http flows/main.yaml:4:3",
            // Its answer continues there.
            "main.lookup http flows/main.yaml:4:3",
            "main.tell say flows/main.yaml:7:3",
            "main.broken say flows/main.yaml:9:3",
        ]
    );
    // Then the fallback flow answers the error.
    assert_eq!(visits[5..], ["sorry.sorry say flows/sorry.yaml:2:3"]);
    assert_eq!(texts(&turn.actions), ["hi", "ETA 5 min", "Sorry"]);
}
