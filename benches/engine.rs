//! One engine turn plus rendering its payloads, on the demo bot: a greeting that sends
//! a buttons node, and an `ask` answer that is parsed, validated, branched on and
//! answered with a reaction and a templated text. Run with `cargo bench --bench engine`.

use criterion::{Criterion, criterion_group, criterion_main};
use parlance::engine::{self, Action, Event, OfflineHost, Session};
use std::hint::black_box;
use std::path::Path;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: i64 = 1_767_603_600;

fn turn(
    bot: &parlance::flow::Bot,
    session: Session,
    text: &str,
    host: &OfflineHost,
) -> (Session, usize) {
    let event = Event {
        id: Some("wamid.bench".into()),
        at: NOW,
        contact_name: Some("Ada".into()),
        kind: engine::EventKind::Text(text.into()),
    };
    let turn = engine::step(bot, session, &event, NOW, host);
    let mut bytes = 0;
    for action in &turn.actions {
        if let Action::Send(o) = action {
            let payload =
                parlance::render::payload("15550001111", &o.message, o.reply_to.as_deref());
            bytes += payload.to_string().len();
        }
    }
    (turn.session, bytes)
}

fn bench(c: &mut Criterion) {
    let bot = parlance::compile::load_bot(Path::new(env!("CARGO_MANIFEST_DIR")))
        .bot
        .expect("the demo bot loads");
    let host = OfflineHost::default();
    let fresh = Session::new("15550001111", NOW);
    let (at_menu, _) = turn(&bot, fresh.clone(), "hi", &host);
    let (at_rating, _) = turn(&bot, at_menu, "Rate this demo", &host);
    assert!(
        turn(&bot, at_rating.clone(), "5", &host).1 > 0,
        "the answer is replied to"
    );

    let mut group = c.benchmark_group("step+render");
    group.bench_function("greeting -> buttons node", |b| {
        b.iter(|| turn(&bot, black_box(fresh.clone()), black_box("hi"), &host))
    });
    group.bench_function("ask answer -> validate, branch, react, say", |b| {
        b.iter(|| turn(&bot, black_box(at_rating.clone()), black_box("5"), &host))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
