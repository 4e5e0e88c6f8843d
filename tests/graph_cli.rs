//! `parlance graph` as a user runs it: the real binary on the demo bot and the examples.
//!
//! The chart is parsed back line by line and checked against the compiled `Bot`: every
//! flow is a subgraph, every node a box labelled with its id, and every way from one node
//! to another (next, branches, on_fail, on_error, handover outcomes, call) is an arrow
//! between the right boxes. The expected arrows are derived here from the `Bot`, not
//! from the generator.

use parlance::cli::graph::mermaid;
use parlance::compile::load_bot;
use parlance::flow::{Bot, FlowIdx, Next, NodeKind, NodeRef, Target};
use regex::Regex;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::LazyLock;

/// The bots checked in: the demo bot (the repository root) and the examples.
const BOTS: &[&str] = &[".", "examples/pizza", "examples/support"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn graph(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_parlance"))
        .arg("graph")
        .args(args)
        .current_dir(root())
        .output()
        .expect("the parlance binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn load(dir: &Path) -> Bot {
    let loaded = load_bot(dir);
    loaded
        .bot
        .unwrap_or_else(|| panic!("{} loads: {:?}", dir.display(), loaded.diagnostics))
}

// ----- reading the chart back -----

/// Every line `parlance graph` writes has one of these forms.
static HEADER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^flowchart TD$").unwrap());
static SUBGRAPH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"^    subgraph (f\d+)\["([^"]*)"\]$"#).unwrap());
static END: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^    end$").unwrap());
/// A box: inside a subgraph (8 spaces) or a stub for another flow's node (4).
static BOX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^( {4}| {8})(f\d+_(?:n\d+|end|trg))(\(\[|\[\[|\(\(|\[/|>|\[)"([^"]*)"(\]\)|\]\]|\)\)|/\]|\])$"#)
        .unwrap()
});
static EDGE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"^    (f\d+_(?:n\d+|end|trg)) (-->|-\.->|==>)(?:\|"([^"]*)"\|)? (f\d+_(?:n\d+|end))$"#,
    )
    .unwrap()
});
static ENTITY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"#(quot|\d+);").unwrap());

/// The shapes, by their brackets.
const SHAPES: &[(&str, &str, &str)] = &[
    ("([", "])", "stadium"),
    ("[[", "]]", "subroutine"),
    ("((", "))", "circle"),
    ("[/", "/]", "parallelogram"),
    (">", "]", "flag"),
    ("[", "]", "box"),
];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    arrow: String,
    /// Decoded.
    label: Option<String>,
    to: String,
}

impl std::fmt::Display for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.label {
            Some(l) => write!(f, "{} {}|{l}| {}", self.from, self.arrow, self.to),
            None => write!(f, "{} {} {}", self.from, self.arrow, self.to),
        }
    }
}

#[derive(Debug)]
struct BoxDecl {
    shape: &'static str,
    /// Decoded.
    label: String,
    /// The subgraph it is declared in; `None` for a stub outside every subgraph.
    subgraph: Option<String>,
}

#[derive(Debug, Default)]
struct Chart {
    /// Subgraph id → decoded title, in order.
    subgraphs: Vec<(String, String)>,
    boxes: BTreeMap<String, BoxDecl>,
    edges: Vec<Edge>,
}

/// Mermaid entity codes back to text: what the reader of the rendered chart sees.
fn decode(label: &str) -> String {
    ENTITY
        .replace_all(label, |c: &regex::Captures| match &c[1] {
            "quot" => "\"".to_string(),
            n => char::from_u32(n.parse().unwrap()).unwrap().to_string(),
        })
        .into_owned()
}

/// What may not appear raw inside a quoted label: it would end the label or be read as
/// Mermaid or HTML syntax.
fn check_label(line: &str, label: &str) {
    let without_breaks = label.replace("<br/>", "");
    for c in ['"', '<', '>', '{', '}', '[', ']', '|', '`', '\n', '\r'] {
        assert!(!without_breaks.contains(c), "raw {c:?} in a label: {line}");
    }
    assert!(
        without_breaks.matches('#').count() == ENTITY.find_iter(&without_breaks).count(),
        "a # that is not an entity code in: {line}"
    );
}

/// Parses the chart, asserting that every line has one of the forms above, that
/// subgraphs open and close in pairs, and that every label is safe.
fn parse(text: &str) -> Chart {
    let mut chart = Chart::default();
    let mut current: Option<String> = None;
    let mut lines = text.lines();
    assert!(
        HEADER.is_match(lines.next().unwrap_or_default()),
        "the chart starts with `flowchart TD`:\n{text}"
    );
    assert!(text.ends_with('\n'), "the chart ends with a line break");
    for line in lines {
        assert_eq!(
            line.matches('"').count() % 2,
            0,
            "unbalanced quotes: {line}"
        );
        if let Some(c) = SUBGRAPH.captures(line) {
            assert!(current.is_none(), "nested subgraph: {line}");
            check_label(line, &c[2]);
            current = Some(c[1].to_string());
            chart.subgraphs.push((c[1].to_string(), decode(&c[2])));
        } else if END.is_match(line) {
            assert!(current.take().is_some(), "`end` without a subgraph");
        } else if let Some(c) = BOX.captures(line) {
            let inside = c[1].len() == 8;
            assert_eq!(inside, current.is_some(), "indentation of: {line}");
            let (open, close) = (&c[3], &c[5]);
            let shape = SHAPES
                .iter()
                .find(|(o, cl, _)| *o == open && *cl == close)
                .unwrap_or_else(|| panic!("mismatched brackets {open} … {close}: {line}"))
                .2;
            check_label(line, &c[4]);
            let id = c[2].to_string();
            let decl = BoxDecl {
                shape,
                label: decode(&c[4]),
                subgraph: current.clone(),
            };
            assert!(
                chart.boxes.insert(id, decl).is_none(),
                "declared twice: {line}"
            );
        } else if let Some(c) = EDGE.captures(line) {
            assert!(current.is_none(), "edges come after the subgraphs: {line}");
            if let Some(l) = c.get(3) {
                check_label(line, l.as_str());
            }
            chart.edges.push(Edge {
                from: c[1].to_string(),
                arrow: c[2].to_string(),
                label: c.get(3).map(|l| decode(l.as_str())),
                to: c[4].to_string(),
            });
        } else {
            panic!("a line of no known form: {line:?}");
        }
    }
    assert!(current.is_none(), "a subgraph is not closed");
    for e in &chart.edges {
        for id in [&e.from, &e.to] {
            assert!(
                chart.boxes.contains_key(id),
                "edge {e} names undeclared {id}"
            );
        }
    }
    chart
}

// ----- what the bot implies -----

fn node_id(r: NodeRef) -> String {
    format!("f{}_n{}", r.flow.0, r.node)
}

fn end_id(f: FlowIdx) -> String {
    format!("f{}_end", f.0)
}

fn refs(bot: &Bot, f: FlowIdx) -> impl Iterator<Item = NodeRef> + '_ {
    (0..bot.flow(f).nodes.len() as u32).map(move |node| NodeRef { flow: f, node })
}

fn all_flows(bot: &Bot) -> impl Iterator<Item = FlowIdx> {
    (0..bot.flows.len() as u32).map(FlowIdx)
}

/// How an `if:` condition reads on its arrow: as written, cut after 60 characters.
fn shown_condition(source: &str) -> String {
    let one_line = source.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= 60 {
        one_line
    } else {
        format!(
            "{}…",
            one_line.chars().take(60).collect::<String>().trim_end()
        )
    }
}

/// Every arrow leaving the nodes of flow `f`, from the compiled bot. An `end` node ends
/// the conversation, so its arrow goes to the flow's end whatever it would fall through to.
fn expected_edges(bot: &Bot, f: FlowIdx) -> Vec<Edge> {
    let mut edges = Vec::new();
    for r in refs(bot, f) {
        let node = bot.node(r);
        let mut push = |arrow: &str, label: Option<String>, t: Target| {
            edges.push(Edge {
                from: node_id(r),
                arrow: arrow.to_string(),
                label,
                to: match t {
                    Target::Node(n) => node_id(n),
                    Target::End => end_id(f),
                },
            })
        };
        match (&node.kind, &node.next) {
            (NodeKind::End(_), _) => push("-->", None, Target::End),
            (_, Next::Goto(t)) => push("-->", None, *t),
            (
                _,
                Next::Branch {
                    branches,
                    otherwise,
                },
            ) => {
                for (cond, t) in branches {
                    push("-->", Some(shown_condition(cond.source())), *t);
                }
                push("-->", Some("else".into()), *otherwise);
            }
        }
        let on_fail = match &node.kind {
            NodeKind::Buttons(b) => b.retry.on_fail,
            NodeKind::List(l) => l.retry.on_fail,
            NodeKind::Ask(a) => a.retry.on_fail,
            NodeKind::RequestLocation(r) => r.retry.on_fail,
            _ => None,
        };
        if let Some(t) = on_fail {
            push("-.->", Some("on_fail".into()), t);
        }
        if let Some(t) = node.on_error {
            push("-.->", Some("on_error".into()), t);
        }
        if let NodeKind::Handover(h) = &node.kind {
            if let Some(t) = h.on_timeout {
                push("-.->", Some("on_timeout".into()), t);
            }
            if let Some(t) = h.on_unavailable {
                push("-.->", Some("on_unavailable".into()), t);
            }
        }
        if let NodeKind::Call(c) = &node.kind {
            push("==>", Some("call".into()), Target::Node(*c));
        }
    }
    edges
}

fn sorted(mut v: Vec<Edge>) -> Vec<Edge> {
    v.sort();
    v
}

fn list(edges: &[Edge]) -> String {
    edges.iter().map(|e| format!("  {e}\n")).collect::<String>()
}

/// The whole-bot chart of `dir` agrees with its compiled bot.
fn check_whole_bot(dir: &str) {
    let out = graph(&[dir]);
    assert_eq!(out.status.code(), Some(0), "{dir}: {}", stderr(&out));
    let text = stdout(&out);
    let bot = load(&root().join(dir));
    assert_eq!(
        text,
        mermaid(&bot, None),
        "{dir}: the binary prints mermaid()"
    );
    let chart = parse(&text);

    // One subgraph per flow, titled with its id; entry and fallback say so.
    let mut titles: HashMap<String, String> = chart.subgraphs.iter().cloned().collect();
    assert_eq!(
        titles.len(),
        bot.flows.len(),
        "{dir}: one subgraph per flow"
    );
    for f in all_flows(&bot) {
        let flow = bot.flow(f);
        let title = titles
            .remove(&format!("f{}", f.0))
            .unwrap_or_else(|| panic!("{dir}: no subgraph for flow {}", flow.id));
        assert!(
            title == flow.id || title.starts_with(&format!("{} (", flow.id)),
            "{dir}: subgraph of {} titled {title:?}",
            flow.id
        );
        assert_eq!(
            title.contains("entry"),
            f == bot.entry,
            "{dir}: {title:?} and the entry flow"
        );
        assert_eq!(
            title.contains("fallback"),
            f == bot.fallback,
            "{dir}: {title:?} and the fallback flow"
        );
    }
    assert!(
        chart.subgraphs[0].1.contains("(entry"),
        "{dir}: the entry flow comes first"
    );

    // Every node is a box in its flow's subgraph, labelled with its id and kind, shaped
    // by whether it waits.
    for f in all_flows(&bot) {
        for r in refs(&bot, f) {
            let node = bot.node(r);
            let id = node_id(r);
            let b = chart
                .boxes
                .get(&id)
                .unwrap_or_else(|| panic!("{dir}: no box for {}.{}", bot.flow(f).id, node.id));
            assert_eq!(b.subgraph.as_deref(), Some(format!("f{}", f.0).as_str()));
            let head = format!("{}<br/>{}", node.id, node.kind.name());
            assert!(
                b.label == head || b.label.starts_with(&format!("{head}: ")),
                "{dir}: box {id} labelled {:?}, want it to start with {head:?}",
                b.label
            );
            let shape = if node.kind.waits() {
                "stadium"
            } else if matches!(node.kind, NodeKind::Call(_)) {
                "subroutine"
            } else {
                "box"
            };
            assert_eq!(b.shape, shape, "{dir}: shape of {}", node.id);
        }
    }
    let stubs: Vec<&String> = chart
        .boxes
        .iter()
        .filter(|(_, b)| b.subgraph.is_none())
        .map(|(id, _)| id)
        .collect();
    assert!(
        stubs.is_empty(),
        "{dir}: stubs in a whole-bot chart: {stubs:?}"
    );

    // Every arrow the compiled bot implies, exactly once, and no other.
    let mut want: Vec<Edge> = all_flows(&bot)
        .flat_map(|f| expected_edges(&bot, f))
        .collect();
    // Triggers point at the flow's first node.
    for f in all_flows(&bot).filter(|f| !bot.flow(*f).triggers.is_empty()) {
        let trg = format!("f{}_trg", f.0);
        assert!(
            chart.boxes.get(&trg).is_some_and(|b| b.shape == "flag"),
            "{dir}: no trigger flag for {}",
            bot.flow(f).id
        );
        want.push(Edge {
            from: trg,
            arrow: "-->".into(),
            label: None,
            to: node_id(NodeRef { flow: f, node: 0 }),
        });
    }
    // A subflow's end returns to each node that calls it.
    let ends: Vec<String> = want.iter().map(|e| e.to.clone()).collect();
    for f in all_flows(&bot) {
        for r in refs(&bot, f) {
            if let NodeKind::Call(c) = bot.node(r).kind
                && ends.contains(&end_id(c.flow))
            {
                want.push(Edge {
                    from: end_id(c.flow),
                    arrow: "-.->".into(),
                    label: Some("return".into()),
                    to: node_id(r),
                });
            }
        }
    }
    let (want, got) = (sorted(want), sorted(chart.edges.clone()));
    assert!(
        want == got,
        "{dir}: arrows differ\n--- missing\n{}--- unexpected\n{}",
        list(
            &want
                .iter()
                .filter(|e| !got.contains(e))
                .cloned()
                .collect::<Vec<_>>()
        ),
        list(
            &got.iter()
                .filter(|e| !want.contains(e))
                .cloned()
                .collect::<Vec<_>>()
        ),
    );

    // An end circle exactly for the flows something ends in.
    for f in all_flows(&bot) {
        let id = end_id(f);
        assert_eq!(
            chart.boxes.get(&id).map(|b| b.shape),
            ends.contains(&id).then_some("circle"),
            "{dir}: end of {}",
            bot.flow(f).id
        );
    }
}

#[test]
fn the_demo_bot_chart_matches_the_bot() {
    check_whole_bot(".");
}

#[test]
fn the_pizza_chart_matches_the_bot() {
    check_whole_bot("examples/pizza");
}

#[test]
fn the_support_chart_matches_the_bot() {
    check_whole_bot("examples/support");
}

/// The conditions as the designer wrote them in `if:` (YAML quotes removed) label arrows.
#[test]
fn every_condition_written_labels_an_arrow() {
    let if_line = Regex::new(r"^\s*- if: (.+?)\s*$").unwrap();
    for dir in BOTS {
        let chart = parse(&stdout(&graph(&[dir])));
        let labels: Vec<&str> = chart
            .edges
            .iter()
            .filter_map(|e| e.label.as_deref())
            .collect();
        let flows = root().join(dir).join("flows");
        let mut found = 0;
        for entry in walkdir::WalkDir::new(&flows) {
            let path = entry.unwrap().into_path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let Some(c) = if_line.captures(line) else {
                    continue;
                };
                let written = &c[1];
                let condition = match written.chars().next() {
                    Some(q @ ('"' | '\'')) if written.ends_with(q) && written.len() > 1 => {
                        &written[1..written.len() - 1]
                    }
                    _ => written,
                };
                found += 1;
                assert!(
                    labels.contains(&shown_condition(condition).as_str()),
                    "{}: `if: {condition}` labels no arrow; labels: {labels:?}",
                    path.display()
                );
            }
        }
        assert!(found > 0, "{dir} has conditions to check");
    }
}

#[test]
fn one_flow_only_shows_that_flow_and_stubs_for_the_others() {
    let out = graph(&[".", "--flow", "tour"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bot = load(root());
    let tour = bot.flow_by_id("tour").unwrap();
    let text = stdout(&out);
    assert_eq!(text, mermaid(&bot, Some(tour)));
    let chart = parse(&text);
    let sub = format!("f{}", tour.0);
    assert_eq!(chart.subgraphs, vec![(sub.clone(), "tour".to_string())]);
    let want = sorted(
        expected_edges(&bot, tour)
            .into_iter()
            .chain(std::iter::once(Edge {
                from: format!("{sub}_trg"),
                arrow: "-->".into(),
                label: None,
                to: node_id(NodeRef {
                    flow: tour,
                    node: 0,
                }),
            }))
            .collect(),
    );
    assert_eq!(sorted(chart.edges.clone()), want);
    // Targets in other flows are stubs outside the subgraph, naming flow and node.
    for e in &chart.edges {
        let b = &chart.boxes[&e.to];
        if e.to.starts_with(&format!("{sub}_")) {
            assert_eq!(b.subgraph.as_deref(), Some(sub.as_str()));
        } else {
            assert_eq!((b.subgraph.as_deref(), b.shape), (None, "parallelogram"));
        }
    }
    let stubs: Vec<&str> = chart
        .boxes
        .values()
        .filter(|b| b.subgraph.is_none())
        .map(|b| b.label.as_str())
        .collect();
    assert_eq!(stubs, vec!["→ main · welcome"]);
    for flow in ["main", "survey", "fallback"] {
        assert!(
            !chart.subgraphs.iter().any(|(_, t)| t.starts_with(flow)),
            "{flow} is not drawn"
        );
    }
}

#[test]
fn an_unknown_flow_is_an_error_naming_the_flows() {
    for (wanted, hint) in [("nope", None), ("toru", Some("did you mean \"tour\"?"))] {
        let out = graph(&[".", "--flow", wanted]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(stdout(&out), "", "nothing on stdout");
        let err = stderr(&out);
        assert!(err.contains(&format!("no flow \"{wanted}\"")), "{err}");
        assert!(
            err.contains("fallback, main, survey, tour"),
            "lists the flows: {err}"
        );
        if let Some(hint) = hint {
            assert!(err.contains(hint), "{err}");
        }
    }
}

#[test]
fn a_bot_with_errors_prints_its_diagnostics_and_no_chart() {
    for name in ["unknown_node", "unknown_flow", "yaml_syntax"] {
        let rel = format!("fixtures/invalid/{name}");
        let out = graph(&[&rel]);
        assert_eq!(out.status.code(), Some(1), "{rel}");
        assert_eq!(stdout(&out), "", "{rel}: no chart on stdout");
        let expected = std::fs::read_to_string(root().join(&rel).join("expected.txt")).unwrap();
        let err = stderr(&out);
        for line in expected.lines() {
            assert!(err.contains(line), "{rel}: stderr lacks {line:?}:\n{err}");
        }
    }
    let out = graph(&["no/such/bot"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("[not_found]"), "{}", stderr(&out));
}

#[test]
fn warnings_go_to_stderr_and_the_chart_is_still_drawn() {
    let rel = "fixtures/invalid/unreachable_node";
    let out = graph(&[rel]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("warning[unreachable_node]"));
    let chart = parse(&stdout(&out));
    assert!(
        chart
            .boxes
            .values()
            .any(|b| b.label.starts_with("orphan<br/>"))
    );
}

/// Designer text full of Mermaid and HTML syntax stays inside its label and reads back
/// as written.
#[test]
fn hostile_text_is_escaped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("flows")).unwrap();
    std::fs::write(
        dir.path().join("flows/main.yaml"),
        r##"
triggers:
  - regex: '^order (?P<item>[a-z]+)$'
  - reply: "x|y"
nodes:
  start:
    say: "He said \"hi\" <b>x</b>\n[a] {b} c|d #1 & `e` 🍕"
    next:
      - if: 'vars.item == "a|b" or vars.item == "<]>"'
        then: end
      - else: ask_it
  ask_it:
    ask:
      text: "#quot; is not a quote; {{ vars.item }}"
      on_fail: start
    save: answer
  colours:
    say: "style: fill:#f00; classDef x fill:#fff;"
"##,
    )
    .unwrap();
    let bot = load(dir.path());
    let text = mermaid(&bot, None);
    let chart = parse(&text);
    let start = &chart.boxes["f0_n0"].label;
    assert_eq!(
        start,
        "start<br/>say: He said \"hi\" <b>x</b> [a] {b} c|d #1 & `…"
    );
    assert_eq!(
        chart.boxes["f0_n1"].label,
        "ask_it<br/>ask: #quot; is not a quote; {{ vars.item }}"
    );
    assert_eq!(
        chart.boxes["f0_trg"].label,
        "regex: ^order (?P<item>[a-z]+)$<br/>reply: x|y"
    );
    // Mermaid drops the last `;` of a line with `style…:…#…;` or `classDef…` (a colour,
    // it thinks), which would break an entity code: those words never appear raw.
    assert_eq!(
        chart.boxes["f0_n2"].label,
        "colours<br/>say: style: fill:#f00; classDef x fill:#fff;"
    );
    assert!(
        !text.contains("style") && !text.contains("classDef"),
        "{text}"
    );
    assert!(
        chart
            .edges
            .iter()
            .any(|e| e.label.as_deref() == Some(r#"vars.item == "a|b" or vars.item == "<]>""#)),
        "{text}"
    );
    assert_eq!(
        sorted(chart.edges.clone()),
        sorted(
            expected_edges(&bot, FlowIdx(0))
                .into_iter()
                .chain(std::iter::once(Edge {
                    from: "f0_trg".into(),
                    arrow: "-->".into(),
                    label: None,
                    to: "f0_n0".into(),
                }))
                .collect()
        )
    );
}
