//! How long loading a large bot takes: read, parse, schema-validate and compile
//! 1,000 flow files of 20 nodes each (templates, expressions, branches, cross-flow
//! targets); and the same bot with one inline `script` node in every flow (1,000
//! scripts compiled at load). Run with `cargo bench --bench load`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

// The same allocator as the `parlance` binary, so the figure is what users get.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FLOWS: usize = 1000;
const NODES: usize = 20;

/// One flow file of `NODES` nodes, cycling through the common kinds; with `script`,
/// its last node is an inline script instead.
fn flow_file(i: usize, script: bool) -> String {
    let mut f = format!(
        "id: flow_{i}\ndescription: Generated flow {i}\ntriggers:\n  - keywords: [start{i}]\nnodes:\n"
    );
    for n in 0..NODES {
        let next_flow = (i + 1) % FLOWS;
        let body = match n % 5 {
            _ if script && n == NODES - 1 => format!(
                "    script: |\n      let qty = vars.qty{} ?? 1;\n      vars.total = qty * 9.5;\n      if vars.total > 50.0 {{ vars.big = true; }}\n      vars.note = `flow {i}: ${{vars.total}}`;\n",
                NODES - 3
            ),
            0 => format!(
                "    say: \"Hello {{{{ contact.name | default('there') }}}}, this is step {n} of flow {i}.\"\n"
            ),
            1 => format!(
                "    buttons:\n      body: \"Pick one for step {n}\"\n      buttons:\n        - {{ id: a{n}, title: \"Option A\" }}\n        - {{ id: b{n}, title: \"Option B\" }}\n    save: choice{n}\n    next:\n      - if: vars.choice{n} == \"a{n}\"\n        then: n{}\n      - else: {{ flow: flow_{next_flow} }}\n",
                n + 1
            ),
            2 => format!(
                "    ask:\n      text: \"How many for step {n}?\"\n      expect: integer\n      validate: \"answer >= 1 and answer <= 10\"\n      reprompt: \"A number from 1 to 10, please.\"\n    save: qty{n}\n"
            ),
            3 => format!(
                "    set: {{ total{n}: \"vars.qty{} * 9.5\", seen{n}: true }}\n",
                n - 1
            ),
            _ => format!(
                "    list:\n      body: \"Choose a row\"\n      button: \"Open\"\n      sections:\n        - title: \"Rows\"\n          rows:\n            - {{ id: r1_{n}, title: \"Row one\", description: \"The first\" }}\n            - {{ id: r2_{n}, title: \"Row two\" }}\n    save: row{n}\n"
            ),
        };
        let _ = write!(f, "  n{n}:\n{body}");
    }
    f
}

fn write_bot(dir: &Path, script: bool) {
    std::fs::create_dir_all(dir.join("flows")).expect("temp dir");
    std::fs::write(dir.join("parlance.yaml"), "bot: { entry: flow_0 }\n").expect("write config");
    for i in 0..FLOWS {
        std::fs::write(
            dir.join(format!("flows/flow_{i:04}.yaml")),
            flow_file(i, script),
        )
        .expect("write flow");
    }
}

fn load(c: &mut Criterion) {
    let mut group = c.benchmark_group("load_bot");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for (name, script) in [
        ("1000 flows x 20 nodes", false),
        ("1000 flows x 20 nodes, 1000 inline scripts", true),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        write_bot(dir.path(), script);
        let loaded = parlance::compile::load_bot(dir.path());
        assert!(
            loaded.bot.is_some(),
            "the generated bot is valid: {:?}",
            loaded.diagnostics.first()
        );
        assert_eq!(
            loaded.bot.as_ref().map(|b| b.node_count()),
            Some(FLOWS * NODES)
        );
        group.bench_function(name, |b| b.iter(|| parlance::compile::load_bot(dir.path())));
    }
    group.finish();
}

criterion_group!(benches, load);
criterion_main!(benches);
