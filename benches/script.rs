//! A turn through a `script` node against the same turn through a `set` node: the user
//! answers a quantity, the node computes the unit price, the total and the delivery fee
//! (three values and a branch, as `examples/pizza` does), and a `say` answers with the
//! total. The bar (issue 9): the script turn costs at most twice the set turn.
//! Run with `cargo bench --bench script`.

use criterion::{Criterion, criterion_group, criterion_main};
use parlance::engine::{self, Event, OfflineHost, Session};
use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: i64 = 1_767_603_600;

const ASK: &str = "  size:\n    set: { size: \"'medium'\" }\n  qty:\n    ask: { text: \"How many?\", expect: integer }\n    save: qty\n";
const TAIL: &str = "  free:\n    say: \"Total {{ vars.total }}, free delivery\"\n    next: end\n  fee:\n    say: \"Total {{ vars.total }} with delivery\"\n";

fn flows() -> [(&'static str, String); 2] {
    let set = format!(
        "triggers: [{{ keywords: [set] }}]\nnodes:\n{ASK}  price:
    set:
      unit_price: \"{{'small': 7.5, 'medium': 9.5, 'large': 12.5}}[vars.size]\"
      total: \"vars.qty * vars.unit_price\"
    next:
      - if: \"vars.total >= 25\"
        then: free
      - else: add_fee
  add_fee:
    set: {{ total: \"vars.total + 2.5\" }}
    next: fee
{TAIL}"
    );
    let script = format!(
        "triggers: [{{ keywords: [script] }}]\nnodes:\n{ASK}  price:
    script: |
      let prices = #{{ small: 7.5, medium: 9.5, large: 12.5 }};
      vars.unit_price = prices[vars.size];
      vars.total = vars.qty * vars.unit_price;
      if vars.total >= 25.0 {{
        next_node(\"free\");
      }} else {{
        vars.total += 2.5;
        next_node(\"fee\");
      }}
{TAIL}"
    );
    [("set", set), ("script", script)]
}

fn event(text: &str) -> Event {
    Event {
        id: Some("wamid.bench".into()),
        at: NOW,
        contact_name: Some("Ada".into()),
        kind: engine::EventKind::Text(text.into()),
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    std::fs::create_dir_all(dir.path().join("flows")).expect("flows/");
    std::fs::write(
        dir.path().join("parlance.yaml"),
        "bot: { entry: set, fallback: set }\n",
    )
    .expect("parlance.yaml");
    for (name, text) in flows() {
        std::fs::write(dir.path().join(format!("flows/{name}.yaml")), text).expect("a flow");
    }
    let loaded = parlance::compile::load_bot(dir.path());
    let bot = loaded
        .bot
        .unwrap_or_else(|| panic!("the bench bot loads: {:#?}", loaded.diagnostics));
    let host = OfflineHost::default();

    let mut group = c.benchmark_group("turn through a node");
    for (name, _) in flows() {
        // The session waits at the quantity question; the answer runs the node.
        let waiting = engine::step(
            &bot,
            Session::new("15550001111", NOW),
            &event(name),
            NOW,
            &host,
        )
        .session;
        let check = engine::step(&bot, waiting.clone(), &event("2"), NOW, &host);
        assert_eq!(
            check.session.vars.get("total"),
            Some(&serde_json::json!(21.5)),
            "{name}: {:?}",
            check.actions
        );
        group.bench_function(format!("answer -> {name} (3 values, branch) -> say"), |b| {
            b.iter(|| engine::step(&bot, black_box(waiting.clone()), &event("2"), NOW, &host))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
