//! `script` nodes end to end: a bot folder with scripts is loaded like `serve` loads it,
//! and turns run through the engine. What a designer sees: variables written back, the
//! node a script chose, and every failure (a syntax error, a runaway, an unknown node)
//! reported where the script is written, with the `on_error` branch or the fallback flow
//! answering.

mod support;

use parlance::compile::load_bot;
use parlance::engine::{self, Action, Event, EventKind, OfflineHost, Session};
use parlance::flow::Bot;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

use support::bot_folder;

const NOW: i64 = 1_767_603_600;

const FALLBACK: (&str, &str) = (
    "flows/fallback.yaml",
    "nodes:\n  sorry:\n    say: \"Sorry, something went wrong.\"\n",
);
const CONFIG: &str = "bot: { entry: main, fallback: fallback }\n";

fn load(files: &[(&str, &str)]) -> Bot {
    let dir = bot_folder(files);
    let loaded = load_bot(dir.path());
    let problems: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
    loaded
        .bot
        .unwrap_or_else(|| panic!("the bot does not load: {problems:#?}"))
}

/// Diagnostics of a bot that must not load, with the folder replaced by `BOT`.
fn diagnostics(files: &[(&str, &str)]) -> Vec<String> {
    let dir = bot_folder(files);
    let loaded = load_bot(dir.path());
    assert!(loaded.bot.is_none(), "the bot loads");
    let root = dir.path().display().to_string();
    loaded
        .diagnostics
        .iter()
        .map(|d| d.to_string().replace(&root, "BOT"))
        .collect()
}

fn turn(bot: &Bot, session: Session, text: &str) -> engine::Turn {
    let event = Event {
        id: Some("wamid.1".into()),
        at: NOW,
        contact_name: Some("Ada".into()),
        kind: EventKind::Text(text.into()),
    };
    engine::step(bot, session, &event, NOW, &OfflineHost::default())
}

fn texts(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(o) => match &o.message {
                engine::Message::Text { body, .. } => Some(body.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn problems(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Error(p) => Some(format!("error: {p}")),
            Action::Warning(p) => Some(format!("warning: {p}")),
            _ => None,
        })
        .collect()
}

fn one_flow(flow: &str) -> Bot {
    load(&[
        ("parlance.yaml", CONFIG),
        ("flows/main.yaml", flow),
        FALLBACK,
    ])
}

#[test]
fn a_script_computes_values_and_the_next_node() {
    let bot = one_flow(
        "nodes:
  start:
    ask: { text: \"How many?\", expect: integer }
    save: qty
  total:
    script: |
      vars.total = vars.qty * 9.5;
      profile.orders = (profile.orders ?? 0) + 1;
      if vars.total > 50.0 { next_node(\"big\"); }
  small:
    say: \"Total {{ vars.total }}, order {{ profile.orders }}\"
    next: end
  big:
    say: \"A big order: {{ vars.total }}\"
",
    );
    let t = turn(&bot, Session::new("15550001111", NOW), "hi");
    let t = turn(&bot, t.session, "2");
    assert_eq!(texts(&t.actions), ["Total 19.0, order 1"]);
    assert_eq!(t.session.vars["total"], json!(19.0));
    assert_eq!(t.session.profile["orders"], json!(1));
    let t = turn(&bot, t.session, "hi");
    let t = turn(&bot, t.session, "6");
    assert_eq!(texts(&t.actions), ["A big order: 57.0"]);
    assert_eq!(t.session.profile["orders"], json!(2));
}

#[test]
fn a_file_script_runs_and_reports_errors_in_its_file() {
    let bot = load(&[
        ("parlance.yaml", CONFIG),
        (
            "flows/main.yaml",
            "nodes:\n  calc:\n    script: { file: scripts/calc.rhai }\n  tell:\n    say: \"{{ vars.n }}\"\n",
        ),
        (
            "scripts/calc.rhai",
            "// Fails for \"boom\".\nvars.n = 1;\nif message.text == \"boom\" {\n  vars.n = 1 / 0;\n}\n",
        ),
        FALLBACK,
    ]);
    let t = turn(&bot, Session::new("15550001111", NOW), "hi");
    assert_eq!(texts(&t.actions), ["1"]);
    let t = turn(&bot, Session::new("15550001111", NOW), "boom");
    assert_eq!(
        problems(&t.actions),
        [
            "error: flows/main.yaml:2:3: main.calc: script error at scripts/calc.rhai:4:14: division by zero: 1 / 0; the fallback flow takes over"
        ]
    );
    assert_eq!(texts(&t.actions), ["Sorry, something went wrong."]);
}

#[test]
fn a_runaway_script_takes_on_error_quickly() {
    let bot = one_flow(
        "nodes:
  spin:
    script: |
      let n = 0;
      loop { n += 1; }
    on_error: oops
  never:
    say: \"unreachable\"
    next: end
  oops:
    say: \"The script gave up.\"
",
    );
    let started = Instant::now();
    let t = turn(&bot, Session::new("15550001111", NOW), "hi");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        problems(&t.actions),
        [
            "warning: flows/main.yaml:2:3: main.spin: script error at flows/main.yaml:5:19: the script ran more than 100000 operations (scripts.max_operations); continuing at on_error"
        ]
    );
    assert_eq!(texts(&t.actions), ["The script gave up."]);
}

#[test]
fn limits_come_from_parlance_yaml() {
    let bot = load(&[
        (
            "parlance.yaml",
            "bot: { entry: main, fallback: fallback }\nscripts: { max_operations: 50, max_string_size: 100, timeout: 50ms }\n",
        ),
        (
            "flows/main.yaml",
            "nodes:\n  count:\n    script: \"let n = 0; while n < 1000 { n += 1; }\"\n",
        ),
        FALLBACK,
    ]);
    assert_eq!(bot.scripts.limits().max_operations, 50);
    assert_eq!(bot.scripts.limits().timeout, Duration::from_millis(50));
    let t = turn(&bot, Session::new("15550001111", NOW), "hi");
    let problems = problems(&t.actions);
    assert!(
        problems[0].contains("the script ran more than 50 operations (scripts.max_operations)"),
        "{problems:?}"
    );
    assert_eq!(texts(&t.actions), ["Sorry, something went wrong."]);
}

#[test]
fn a_script_timeout_is_bounded() {
    let d = diagnostics(&[
        ("parlance.yaml", "scripts: { timeout: 5s }\n"),
        ("flows/main.yaml", "nodes:\n  hi:\n    say: Hi\n"),
    ]);
    assert_eq!(
        d,
        [
            "BOT/parlance.yaml:1:21: error[invalid_value] scripts.timeout: a script timeout of 5s is not allowed; it must be more than 0 and at most 1s; hint: scripts run inside a turn and should take microseconds; the default is 100ms"
        ]
    );
}

#[test]
fn choosing_a_node_that_does_not_exist_is_an_error_naming_script_and_node() {
    let bot = one_flow(
        "nodes:
  route:
    script: \"next_node(`step_${message.text}`);\"
  step_1:
    say: \"one\"
",
    );
    let t = turn(&bot, Session::new("15550001111", NOW), "1");
    assert_eq!(texts(&t.actions), ["one"]);
    let t = turn(&bot, Session::new("15550001111", NOW), "2");
    assert_eq!(
        problems(&t.actions),
        [
            "error: flows/main.yaml:2:3: main.route: the script (inline) chose next_node(\"step_2\"), but flow \"main\" has no node \"step_2\"; the fallback flow takes over"
        ]
    );
}

#[test]
fn a_literal_next_node_is_checked_when_the_bot_loads() {
    let d = diagnostics(&[
        ("parlance.yaml", CONFIG),
        (
            "flows/main.yaml",
            "nodes:\n  route:\n    script: |\n      if vars.x == () {\n        next_node(\"confrim\");\n      }\n  confirm:\n    say: ok\n",
        ),
        FALLBACK,
    ]);
    assert_eq!(
        d,
        [
            "BOT/flows/main.yaml:5:20: error[unknown_node] nodes.route.script: the script: next_node(\"confrim\"): no node named \"confrim\" in this flow (line 2, column 14 of the script); hint: did you mean \"confirm\"?"
        ]
    );
}

#[test]
fn syntax_errors_point_into_the_yaml_for_every_way_of_writing_a_script() {
    let d = diagnostics(&[
        ("parlance.yaml", CONFIG),
        (
            "flows/main.yaml",
            "nodes:
  plain:
    script: vars.a = 1 +;
  quoted:
    script: 'vars.b = 2 +;'
  block:
    script: |-

      vars.c = 1;
        vars.d = totl;
  tell:
    say: \"{{ vars.a }} {{ vars.b }} {{ vars.c }} {{ vars.d }}\"
",
        ),
        FALLBACK,
    ]);
    let lines: Vec<String> = d
        .iter()
        .map(|l| l.split(": invalid script").next().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        lines,
        [
            "BOT/flows/main.yaml:3:25: error[script_syntax] nodes.plain.script",
            "BOT/flows/main.yaml:5:26: error[script_syntax] nodes.quoted.script",
            "BOT/flows/main.yaml:10:18: error[script_syntax] nodes.block.script",
        ],
        "{d:#?}"
    );
    assert!(d[2].contains("totl"), "{}", d[2]);
}

#[test]
fn validate_runs_a_bot_with_scripts_and_the_example_passes_its_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let loaded = load_bot(&root.join("examples/pizza"));
    assert!(loaded.bot.is_some(), "{:#?}", loaded.diagnostics);
    assert!(
        loaded
            .diagnostics
            .iter()
            .all(|d| d.code.as_str() != "not_supported"),
        "{:#?}",
        loaded.diagnostics
    );
}
