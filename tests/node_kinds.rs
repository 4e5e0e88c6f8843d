//! Every node kind the schema documents compiles into the node kind of the same name,
//! so a kind added to the language cannot be half wired.

use parlance::cli::graph::mermaid;
use parlance::compile::{load_bot_allowing, load_tests};
use parlance::engine::{self, Action, Effect, Event, EventKind, OfflineHost, Session};
use parlance::flow::NodeKind;
use parlance::render::{self, terminal};
use parlance::spec::flow::NODE_KINDS;
use parlance::testing::mocks::Mocks;
use serde_json::Map;

/// A minimal valid body for each kind, as a designer would write it.
fn sample(kind: &str) -> &'static str {
    match kind {
        "say" => r#""Hello""#,
        "image" | "video" | "audio" | "document" | "sticker" => r#""https://example.com/file""#,
        "buttons" => "{ body: Pick, buttons: [{ id: a, title: A }] }",
        "list" => "{ body: Pick, button: Open, sections: [{ rows: [{ id: a, title: A }] }] }",
        "ask" => r#"{ text: "Your name?" }"#,
        "template" => "{ name: order_update, language: en_US }",
        "location" => "{ latitude: 52.5, longitude: 13.4 }",
        "request_location" => r#""Where are you?""#,
        "contacts" => "[{ name: { formatted_name: Ada } }]",
        "cta_url" => r#"{ body: Docs, button: Open, url: "https://example.com" }"#,
        "whatsapp_flow" => r#"{ body: Form, cta: Open, flow_id: "123" }"#,
        "react" => r#""👍""#,
        "payload" => "{ type: text, text: { body: Hi } }",
        "set" => "{ n: 1 }",
        "http" => r#"{ url: "https://example.com" }"#,
        "script" => r#""vars.n = 1 + 1;""#,
        "handover" => "",
        "wait" => "2s",
        "call" => "{ flow: other }",
        "end" => "",
        other => panic!("no sample for the node kind {other}: add one here"),
    }
}

#[test]
fn every_documented_kind_compiles_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("flows")).unwrap();
    let mut flow = String::from("nodes:\n");
    for kind in NODE_KINDS {
        flow.push_str(&format!("  node_{kind}:\n    {kind}: {}\n", sample(kind)));
    }
    std::fs::write(dir.path().join("flows/main.yaml"), flow).unwrap();
    std::fs::write(
        dir.path().join("flows/other.yaml"),
        "nodes:\n  hi:\n    say: Hi\n",
    )
    .unwrap();
    // handover needs the agent inbox of parlance.yaml.
    std::fs::write(
        dir.path().join("parlance.yaml"),
        "handover: { webhook: \"http://127.0.0.1:9/agents\", secret: s }\n",
    )
    .unwrap();
    let loaded = load_bot_allowing(dir.path(), &|_| None, &[]);
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| format!("{}: {}", d.code, d.path))
        .collect();
    assert_eq!(errors, Vec::<String>::new());
    let bot = loaded.bot.expect("a bot");
    let main = &bot.flows[bot.flow_by_id("main").unwrap().0 as usize];
    let compiled: Vec<&str> = main.nodes.iter().map(|n| n.kind.name()).collect();
    assert_eq!(compiled, NODE_KINDS);
}

/// What running a node of this kind must show. An exhaustive match: a new `NodeKind`
/// does not compile here until the test says what it does.
enum Runs {
    /// Sends a message from the node itself.
    Sends,
    /// Stops at an `http` effect, answered by the test's mock, then goes on.
    Http,
    /// Stops at a handover effect (which this build does not perform).
    Handover,
    /// Sends nothing itself; the node below it (or the called flow) answers.
    Silent,
}

fn runs(kind: &NodeKind) -> Runs {
    match kind {
        NodeKind::Say(_)
        | NodeKind::Media(..)
        | NodeKind::Buttons(_)
        | NodeKind::List(_)
        | NodeKind::Ask(_)
        | NodeKind::Template(_)
        | NodeKind::Location(_)
        | NodeKind::RequestLocation(_)
        | NodeKind::Contacts(_)
        | NodeKind::CtaUrl(_)
        | NodeKind::WhatsAppFlow(_)
        | NodeKind::React(_)
        | NodeKind::Payload(_) => Runs::Sends,
        NodeKind::End(messages) if !messages.is_empty() => Runs::Sends,
        NodeKind::End(_) => Runs::Silent,
        NodeKind::Http(_) => Runs::Http,
        NodeKind::Handover(_) => Runs::Handover,
        NodeKind::Set(_) | NodeKind::Script(_) | NodeKind::Wait(_) | NodeKind::Call(_) => {
            Runs::Silent
        }
    }
}

/// A goodbye for `end`, so its message is rendered and checked too.
fn runnable_sample(kind: &str) -> &'static str {
    match kind {
        "end" => r#""Bye""#,
        other => sample(other),
    }
}

/// For every kind the schema documents: a bot of one such node (and a `say` below it)
/// compiles, runs through the engine (http answered by `parlance test`'s mock
/// performer), each message it sends renders for the terminal and as a Cloud API
/// payload that passes WhatsApp's outbound schema, and the node is in `parlance graph`.
#[test]
fn every_kind_compiles_runs_renders_and_is_drawn() {
    for kind in NODE_KINDS {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["flows", "tests"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let id = format!("node_{kind}");
        std::fs::write(
            dir.path().join("flows/main.yaml"),
            format!(
                "nodes:\n  {id}:\n    {kind}: {}\n  after:\n    say: After\n",
                runnable_sample(kind)
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("flows/other.yaml"),
            "nodes:\n  hi:\n    say: Hi\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("tests/t.yaml"),
            format!("name: {kind}\nmocks:\n  main.node_http: {{ json: {{ ok: true }} }}\nsteps:\n  - user: hi\n"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("parlance.yaml"),
            "handover: { webhook: \"http://127.0.0.1:9/agents\", secret: s }\n",
        )
        .unwrap();
        let loaded = load_bot_allowing(dir.path(), &|_| None, &[]);
        let errors: Vec<String> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(ToString::to_string)
            .collect();
        assert!(errors.is_empty(), "{kind}: {errors:#?}");
        let bot = loaded.bot.expect("a bot");
        let main = bot.flow_by_id("main").unwrap();
        let node = &bot.flows[main.0 as usize].nodes[0];
        assert_eq!(node.kind.name(), *kind);

        // The mocks are those of a conversation test, resolved like `parlance test` does;
        // only the http sample has one (a mock for another kind's bot names no node).
        let tests = load_tests(dir.path());
        let (file, test) = &tests.files[0];
        let mut test = test.clone();
        if *kind != "http" {
            test.mocks.clear();
        }
        let mut mocks = Mocks::new(&bot, file, &test, &Map::new())
            .unwrap_or_else(|e| panic!("{kind}: {}", e.message));
        let now = 1_767_603_600;
        let event = Event {
            id: Some("wamid.test.1".into()),
            at: now,
            contact_name: Some("Ada".into()),
            kind: EventKind::Text("hi".into()),
        };
        let turn = engine::run(
            &bot,
            Session::new("15550001111", now),
            &event,
            now,
            &OfflineHost::default(),
            &mut mocks,
        );
        assert_eq!(mocks.take_failure(), None, "{kind}");
        let mut from_node = 0;
        let mut after = false;
        let mut effects = Vec::new();
        for action in &turn.actions {
            match action {
                Action::Send(out) => {
                    assert!(
                        !terminal::describe(&out.message).is_empty(),
                        "{kind}: the terminal shows nothing for {:?}",
                        out.message
                    );
                    let payload =
                        render::payload("15550001111", &out.message, out.reply_to.as_deref());
                    if let Err(problems) = render::check(&payload) {
                        panic!("{kind}: WhatsApp would reject {payload}: {problems:?}");
                    }
                    if out.at.node == id {
                        from_node += 1;
                    }
                    after |= out.at.node == "after";
                }
                Action::Effect { at, effect } => {
                    assert_eq!(at.node, id, "{kind}");
                    effects.push(effect.clone());
                }
                Action::Error(p) if *kind != "handover" => panic!("{kind}: {p}"),
                Action::Error(_)
                | Action::Pause(_)
                | Action::HandoverStarted { .. }
                | Action::ToAgent
                | Action::Ended
                | Action::Warning(_) => {}
            }
        }
        match runs(&node.kind) {
            Runs::Sends => assert!(from_node >= 1, "{kind}: sent nothing: {:#?}", turn.actions),
            Runs::Http => {
                assert!(
                    matches!(effects.as_slice(), [Effect::Http(_)]),
                    "{kind}: {effects:?}"
                );
                // The mock's answer let the turn go on to the node below.
                assert!(after, "{kind}: the turn did not go on: {:#?}", turn.actions);
            }
            // A test's handover starts (no agents are played): one effect, then silence.
            Runs::Handover => assert!(
                matches!(effects.as_slice(), [Effect::Handover { .. }]),
                "{kind}: {effects:?}"
            ),
            Runs::Silent => assert_eq!(from_node, 0, "{kind}"),
        }

        let chart = mermaid(&bot, None);
        assert!(
            chart.contains(&id),
            "{kind}: not in `parlance graph`:\n{chart}"
        );
    }
}
