//! A turn with the three endpoint transformers against the same turn without them: the
//! user's text is normalised (`input`), the answer is signed (`output`) and the turn is
//! counted in the profile (`finished`), as `examples/concierge` does. The bar (issue 9):
//! together they add at most 20 µs to a turn.
//! Run with `cargo bench --bench transformers`.

use criterion::{Criterion, criterion_group, criterion_main};
use parlance::engine::{self, Event, OfflineHost, Session};
use parlance::transform;
use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: i64 = 1_767_603_600;
const USER: &str = "15550001111";

const FLOW: &str =
    "nodes:\n  answer:\n    say: \"You asked about {{ message.text }}. Our desk is open 24/7.\"\n";
const INPUT: &str = "fn input(message) {\n    if message.type == \"text\" {\n        let text = message.text;\n        text.trim();\n        message.text = text.to_lower();\n    }\n    message\n}\n";
const OUTPUT: &str = "fn output(payload) {\n    if payload.type == \"text\" {\n        payload.text.body += \"\\n\\n— Hotel Aurora\";\n    }\n    payload\n}\n";
const FINISHED: &str = "fn finished(turn) {\n    profile.turns = (profile.turns ?? 0) + 1;\n    profile.last_sent = turn.sent.len();\n}\n";

/// A bot with the transformers named in `with` (a subset of input, output, finished).
fn load(with: &[&str]) -> parlance::flow::Bot {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let d = dir.path();
    std::fs::create_dir_all(d.join("flows")).expect("flows/");
    std::fs::create_dir_all(d.join("transformers")).expect("transformers/");
    std::fs::write(d.join("flows/main.yaml"), FLOW).expect("a flow");
    let mut config = String::from("bot: { entry: main }\ntransformers:\n");
    for (name, code) in [("input", INPUT), ("output", OUTPUT), ("finished", FINISHED)] {
        if with.contains(&name) {
            config.push_str(&format!("  {name}: transformers/{name}.rhai\n"));
            std::fs::write(d.join(format!("transformers/{name}.rhai")), code).expect("a file");
        }
    }
    std::fs::write(d.join("parlance.yaml"), config).expect("parlance.yaml");
    let loaded = parlance::compile::load_bot(d);
    loaded
        .bot
        .unwrap_or_else(|| panic!("the bench bot loads: {:#?}", loaded.diagnostics))
}

fn event() -> Event {
    Event {
        id: Some("wamid.bench".into()),
        at: NOW,
        contact_name: Some("Ada".into()),
        kind: engine::EventKind::Text("  Breakfast Hours ".into()),
    }
}

fn bench(c: &mut Criterion) {
    let host = OfflineHost::default();
    let mut group = c.benchmark_group("turn with transformers");
    let cases: [(&str, &[&str]); 5] = [
        ("without transformers", &[]),
        ("with input", &["input"]),
        ("with output", &["output"]),
        ("with finished", &["finished"]),
        (
            "with input, output, finished",
            &["input", "output", "finished"],
        ),
    ];
    for (name, with) in cases {
        let bot = load(with);
        let session = Session::new(USER, NOW);
        let check = transform::run(
            &bot,
            session.clone(),
            &event(),
            NOW,
            &host,
            &mut engine::NoEffects,
            USER,
        );
        let body = check.steps.iter().find_map(|s| match s {
            transform::Step::Send(sent) => {
                sent.payload["text"]["body"].as_str().map(str::to_string)
            }
            transform::Step::Other(_) | transform::Step::TransformerFailed(_) => None,
        });
        let text = if with.contains(&"input") {
            "breakfast hours"
        } else {
            "  Breakfast Hours "
        };
        let footer = if with.contains(&"output") {
            "\n\n— Hotel Aurora"
        } else {
            ""
        };
        let expected = format!("You asked about {text}. Our desk is open 24/7.{footer}");
        assert_eq!(
            body.as_deref(),
            Some(expected.as_str()),
            "{name}: {:?}",
            check.steps
        );
        if with.contains(&"finished") {
            assert_eq!(
                check.session.profile.get("turns"),
                Some(&serde_json::json!(1))
            );
        }
        group.bench_function(format!("text -> say ({name})"), |b| {
            b.iter(|| {
                transform::run(
                    &bot,
                    black_box(session.clone()),
                    &event(),
                    NOW,
                    &host,
                    &mut engine::NoEffects,
                    USER,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
