//! Endpoint transformers end to end: a bot folder with `transformers:` is loaded like
//! `serve` loads it, and turns run through `transform::run`, the function `serve`,
//! `chat` and `test` share. What a designer sees: the message changed or dropped on the
//! way in, payloads changed or dropped on the way out, `finished` keeping its notes, and
//! every failure reported at its place in the `.rhai` file while the turn goes on.

mod support;

use parlance::compile::load_bot;
use parlance::engine::{self, Action, Event, EventKind, OfflineHost, Session};
use parlance::flow::Bot;
use parlance::transform::{self, Step};
use serde_json::{Value, json};

use support::bot_folder;

const NOW: i64 = 1_767_603_600;
const USER: &str = "4915112345678";

const MAIN: (&str, &str) = (
    "flows/main.yaml",
    "nodes:\n  echo:\n    say: \"You said {{ message.text }}{{ vars.tag | default('') }}\"\n",
);

/// A bot echoing the user's text, with the given transformers (key, code).
fn load(transformers: &[(&str, &str)]) -> Bot {
    let mut config = String::from("bot: { entry: main }\ntransformers:\n");
    let mut files: Vec<(String, String)> = vec![(MAIN.0.into(), MAIN.1.into())];
    for (key, code) in transformers {
        config.push_str(&format!("  {key}: transformers/{key}.rhai\n"));
        files.push((format!("transformers/{key}.rhai"), code.to_string()));
    }
    files.push(("parlance.yaml".into(), config));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dir = bot_folder(&refs);
    let loaded = load_bot(dir.path());
    let problems: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
    loaded
        .bot
        .unwrap_or_else(|| panic!("the bot does not load: {problems:#?}"))
}

fn turn(bot: &Bot, kind: EventKind) -> transform::Turn {
    let event = Event {
        id: Some("wamid.1".into()),
        at: NOW,
        contact_name: None,
        kind,
    };
    transform::run(
        bot,
        Session::new(USER, NOW),
        &event,
        NOW,
        &OfflineHost::default(),
        &mut engine::NoEffects,
        USER,
    )
}

fn text(bot: &Bot, t: &str) -> transform::Turn {
    turn(bot, EventKind::Text(t.into()))
}

fn payloads(turn: &transform::Turn) -> Vec<Value> {
    turn.steps
        .iter()
        .filter_map(|s| match s {
            Step::Send(sent) => Some(sent.payload.clone()),
            Step::Other(_) | Step::TransformerFailed(_) => None,
        })
        .collect()
}

fn failures(turn: &transform::Turn) -> Vec<String> {
    turn.steps
        .iter()
        .filter_map(|s| match s {
            Step::TransformerFailed(p) => Some(p.to_string()),
            Step::Send(_) | Step::Other(_) => None,
        })
        .collect()
}

fn bodies(turn: &transform::Turn) -> Vec<String> {
    payloads(turn)
        .iter()
        .map(|p| p["text"]["body"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn input_changes_the_message_the_flow_sees_and_sets_vars() {
    let bot = load(&[(
        "input",
        "fn input(message) {\n  message.text = message.text.to_lower();\n  vars.tag = \" [seen]\";\n  profile.seen = true;\n  message\n}\n",
    )]);
    let t = text(&bot, "HeLLo There");
    // The flow saw the changed text and the variable the transformer set.
    assert_eq!(bodies(&t), ["You said hello there [seen]"]);
    assert_eq!(t.session.profile.get("seen"), Some(&json!(true)));
    assert!(failures(&t).is_empty());
}

#[test]
fn input_returning_unit_drops_the_message() {
    let bot = load(&[(
        "input",
        "fn input(message) {\n  profile.dropped = true;\n  if message.text == \"spam\" { return (); }\n  message\n}\n",
    )]);
    let t = text(&bot, "spam");
    assert!(t.dropped);
    assert!(t.steps.is_empty(), "{:?}", t.steps);
    assert_eq!(t.session.profile.get("dropped"), Some(&json!(true)));
    let t = text(&bot, "hi");
    assert!(!t.dropped);
    assert_eq!(bodies(&t), ["You said hi"]);
}

#[test]
fn input_can_turn_a_reply_into_another_reply() {
    let bot = load(&[(
        "input",
        "fn input(message) {\n  if message.type == \"reply\" { message.reply.id = \"yes\"; message.text = \"Yes!\"; }\n  message\n}\n",
    )]);
    let t = turn(
        &bot,
        EventKind::Reply {
            id: "y".into(),
            title: "Y".into(),
        },
    );
    assert_eq!(bodies(&t), ["You said Yes!"]);
}

#[test]
fn output_adds_a_footer_and_the_payload_is_what_goes_out() {
    let bot = load(&[(
        "output",
        "fn output(payload) {\n  if payload.type == \"text\" { payload.text.body += \"\\n— Pizza Shop\"; }\n  payload\n}\n",
    )]);
    let t = text(&bot, "hi");
    assert_eq!(bodies(&t), ["You said hi\n— Pizza Shop"]);
    let Some(Step::Send(sent)) = t.steps.first() else {
        panic!("no message: {:?}", t.steps)
    };
    assert!(sent.transformed);
    assert_eq!(sent.payload["to"], json!(USER));
    assert_eq!(
        transform::payload_text(&sent.payload),
        Some("You said hi\n— Pizza Shop")
    );
}

#[test]
fn output_returning_unit_drops_that_message() {
    let bot = load(&[("output", "fn output(payload) { () }\n")]);
    let t = text(&bot, "hi");
    assert!(payloads(&t).is_empty());
    assert!(failures(&t).is_empty());
}

#[test]
fn an_output_payload_whatsapp_would_reject_is_an_error_and_the_original_goes_out() {
    let bot = load(&[(
        "output",
        "fn output(payload) {\n  payload.type = \"bogus\";\n  payload\n}\n",
    )]);
    let t = text(&bot, "hi");
    assert_eq!(bodies(&t), ["You said hi"]);
    let f = failures(&t);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(
        f[0].starts_with("transformers/output.rhai: output transformer error: the returned payload is one WhatsApp would reject"),
        "{f:?}"
    );
    assert!(f[0].ends_with("the message went out unchanged"), "{f:?}");
}

#[test]
fn finished_sees_the_turn_and_keeps_profile_notes() {
    let bot = load(&[(
        "finished",
        "fn finished(turn) {\n  profile.turns = (profile.turns ?? 0) + 1;\n  profile.last_text = turn.message.text;\n  profile.sent = turn.sent.len();\n  profile.first_body = turn.sent[0].text.body;\n}\n",
    )]);
    let t = text(&bot, "hi");
    assert_eq!(bodies(&t), ["You said hi"]);
    assert!(failures(&t).is_empty(), "{:?}", failures(&t));
    let p = &t.session.profile;
    assert_eq!(p.get("turns"), Some(&json!(1)));
    assert_eq!(p.get("last_text"), Some(&json!("hi")));
    assert_eq!(p.get("sent"), Some(&json!(1)));
    assert_eq!(p.get("first_body"), Some(&json!("You said hi")));
}

#[test]
fn a_run_time_error_is_reported_at_its_place_and_the_turn_goes_on_unchanged() {
    let bot = load(&[
        (
            "input",
            "fn input(message) {\n  vars.lost = 1;\n  let n = 1 / 0;\n  message\n}\n",
        ),
        (
            "output",
            "fn output(payload) {\n  payload.nope.deeper = 1;\n  payload\n}\n",
        ),
        (
            "finished",
            "fn finished(turn) {\n  profile.x = 1;\n  throw \"call 4915112345678\";\n}\n",
        ),
    ]);
    let t = text(&bot, "Hi");
    assert_eq!(bodies(&t), ["You said Hi"]);
    let f = failures(&t);
    assert_eq!(f.len(), 3, "{f:?}");
    assert!(f[0].starts_with("transformers/input.rhai:3:"), "{f:?}");
    assert!(
        f[0].contains("input transformer error: division by zero"),
        "{f:?}"
    );
    assert!(f[0].ends_with("the message went on unchanged"), "{f:?}");
    assert!(f[1].starts_with("transformers/output.rhai:2:"), "{f:?}");
    assert!(f[2].starts_with("transformers/finished.rhai:3:"), "{f:?}");
    // A number in an error is masked: warnings are logged.
    assert!(!f[2].contains(USER), "{f:?}");
    assert!(f[2].contains("…5678"), "{f:?}");
    // What a failed transformer assigned is not kept.
    assert_eq!(t.session.vars.get("lost"), None);
    assert_eq!(t.session.profile.get("x"), None);
}

#[test]
fn a_runaway_transformer_is_stopped_by_its_limit() {
    let bot = load(&[("input", "fn input(message) {\n  loop {}\n}\n")]);
    let started = std::time::Instant::now();
    let t = text(&bot, "hi");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(bodies(&t), ["You said hi"]);
    let f = failures(&t);
    assert!(
        f[0].contains("scripts.max_operations") || f[0].contains("scripts.timeout"),
        "{f:?}"
    );
}

#[test]
fn a_bad_return_value_is_an_error() {
    let bot = load(&[("input", "fn input(message) { 42 }\n")]);
    let t = text(&bot, "hi");
    assert_eq!(bodies(&t), ["You said hi"]);
    assert_eq!(
        failures(&t),
        [
            "transformers/input.rhai: input transformer error: input must return the message (a map) or () to drop it, not a number; the message went on unchanged"
        ]
    );
    let bot = load(&[(
        "input",
        "fn input(message) { message.type = \"order\"; message }\n",
    )]);
    let f = failures(&text(&bot, "hi"));
    assert!(
        f[0].contains("message.type \"order\" is not a kind of message"),
        "{f:?}"
    );
}

#[test]
fn delivery_reports_do_not_go_through_input() {
    let bot = load(&[("input", "fn input(message) { () }\n")]);
    let t = turn(
        &bot,
        EventKind::DeliveryFailed {
            flow: "main".into(),
            node: "echo".into(),
            code: None,
            reason: "x".into(),
        },
    );
    assert!(!t.dropped);
}

#[test]
fn without_transformers_the_turn_is_the_engines() {
    let dir = bot_folder(&[(
        "flows/main.yaml",
        "nodes:\n  echo:\n    say: \"You said {{ message.text }}\"\n",
    )]);
    let bot = load_bot(dir.path()).bot.expect("the bot loads");
    let t = text(&bot, "hi");
    let event = Event {
        id: Some("wamid.1".into()),
        at: NOW,
        contact_name: None,
        kind: EventKind::Text("hi".into()),
    };
    let plain = engine::run(
        &bot,
        Session::new(USER, NOW),
        &event,
        NOW,
        &OfflineHost::default(),
        &mut engine::NoEffects,
    );
    let sends = plain
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Send(_)))
        .count();
    assert_eq!(payloads(&t).len(), sends);
    assert_eq!(t.session, plain.session);
}

/// The diagnostics of a bot folder with this transformer config and files.
fn diagnostics(files: &[(&str, &str)]) -> Vec<String> {
    let dir = bot_folder(files);
    load_bot(dir.path())
        .diagnostics
        .iter()
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn a_syntax_error_is_reported_inside_the_rhai_file() {
    let d = diagnostics(&[
        MAIN,
        (
            "parlance.yaml",
            "transformers:\n  input: transformers/in.rhai\n",
        ),
        (
            "transformers/in.rhai",
            "fn input(message) {\n  message.text = ;\n}\n",
        ),
    ]);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(d[0].contains("transformers/in.rhai:2:"), "{d:#?}");
    assert!(d[0].contains("error[script_syntax]"), "{d:#?}");
    assert!(d[0].contains("(the input transformer)"), "{d:#?}");
}

#[test]
fn a_file_without_its_function_is_a_load_error() {
    let d = diagnostics(&[
        MAIN,
        ("parlance.yaml", "transformers:\n  output: t/out.rhai\n"),
        ("t/out.rhai", "fn input(message) { message }\n"),
    ]);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(
        d[0].contains("parlance.yaml:2:11: error[missing_function] transformers.output: \"t/out.rhai\" does not define `fn output(payload)`"),
        "{d:#?}"
    );
}

#[test]
fn an_exposed_secret_in_an_error_is_masked() {
    let bot = load(&[(
        "finished",
        "fn finished(turn) {\n  throw \"key \" + env.CRM_KEY;\n}\n",
    )]);
    let mut host = OfflineHost::default();
    host.env.insert("CRM_KEY".into(), json!("sk-live-abcdef"));
    let event = Event {
        id: Some("wamid.1".into()),
        at: NOW,
        contact_name: None,
        kind: EventKind::Text("hi".into()),
    };
    let t = transform::run(
        &bot,
        Session::new(USER, NOW),
        &event,
        NOW,
        &host,
        &mut engine::NoEffects,
        USER,
    );
    let f = failures(&t);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].contains("key ***"), "{f:?}");
    assert!(!f[0].contains("sk-live"), "{f:?}");
}
