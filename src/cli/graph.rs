//! `parlance graph [DIR] [--flow ID]`: the bot's flows as a Mermaid flowchart, to paste
//! into a README or a pull request, or to open in <https://mermaid.live>.
//!
//! The chart is drawn from the compiled [`Bot`], so it shows what the bot will do: every
//! fall-through and `else` resolved, every target checked. [`mermaid`] is a pure function;
//! `run` only loads the bot and prints.

use super::{EXIT_ERRORS, EXIT_OK};
use crate::diag;
use crate::flow::{
    Bot, Flow, FlowIdx, HttpMethod, Media, MediaSource, Next, Node, NodeKind, NodeRef, Number,
    Target, Text, TextMessage, Trigger,
};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// Characters of designer text shown in a node box.
const EXCERPT_CHARS: usize = 40;
/// Characters of an `if:` condition shown on its edge.
const CONDITION_CHARS: usize = 60;

pub fn run(dir: &Path, flow: Option<&str>) -> u8 {
    // Diagnostics go to stderr, so stdout stays pure Mermaid for redirecting.
    let bot = match super::load_runnable(dir) {
        Ok(bot) => bot,
        Err(code) => return code,
    };
    let only = match flow {
        None => None,
        Some(id) => match bot.flow_by_id(id) {
            Some(idx) => Some(idx),
            None => {
                eprintln!("error: {}", unknown_flow(&bot, id));
                return EXIT_ERRORS;
            }
        },
    };
    let chart = mermaid(&bot, only);
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(chart.as_bytes()).and_then(|()| out.flush()) {
        eprintln!("error: cannot write the chart: {e}");
        return EXIT_ERRORS;
    }
    EXIT_OK
}

/// `no flow "x"; did you mean "y"? The flows are: a, b, c`.
fn unknown_flow(bot: &Bot, id: &str) -> String {
    let mut ids: Vec<&str> = bot.flows.iter().map(|f| f.id.as_str()).collect();
    ids.sort_unstable();
    let mut message = format!("no flow \"{id}\" in this bot");
    match diag::did_you_mean(id, ids.iter().copied()) {
        Some(close) => {
            let _ = write!(message, "; did you mean \"{close}\"?");
        }
        None => message.push('.'),
    }
    let _ = write!(message, " The flows are: {}", ids.join(", "));
    message
}

/// How an edge is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// `-->`: where the conversation goes next.
    Solid,
    /// `-.->`: the exceptional ways out (`on_fail`, `on_error`, handover outcomes) and the
    /// return from a `call`.
    Dotted,
    /// `==>`: a `call` into a subflow.
    Thick,
}

struct Edge {
    from: String,
    line: Line,
    /// Already escaped.
    label: Option<String>,
    to: String,
}

/// The Mermaid flowchart of `bot`, or of its flow `only` (edges leaving that flow end in
/// small stub boxes naming their target).
///
/// Ids are `f{flow}_n{node}` (indices into [`Bot::flows`] and [`Flow::nodes`]),
/// `f{flow}_end` (the flow's end), `f{flow}_trg` (its triggers) and `f{flow}` (its
/// subgraph), so designer ids never have to be valid Mermaid ids. Every label is quoted
/// and escaped with [`escape`].
pub fn mermaid(bot: &Bot, only: Option<FlowIdx>) -> String {
    // The entry flow first and the fallback last: Mermaid lays subgraphs out roughly in
    // the order they are written, so the chart reads from where conversations start.
    let shown: Vec<FlowIdx> = match only {
        Some(f) => vec![f],
        None => {
            let rank = |f: FlowIdx| match f {
                f if f == bot.entry => 0,
                f if f == bot.fallback => 2,
                _ => 1,
            };
            let mut all: Vec<FlowIdx> = (0..bot.flows.len() as u32).map(FlowIdx).collect();
            all.sort_by_key(|f| rank(*f));
            all
        }
    };
    let is_shown = |f: FlowIdx| shown.contains(&f);

    let mut edges: Vec<Edge> = Vec::new();
    // Flows whose end something leads to: they get an end circle.
    let mut ends: BTreeSet<FlowIdx> = BTreeSet::new();
    // Nodes of flows not shown that an edge leads to.
    let mut stubs: BTreeSet<NodeRef> = BTreeSet::new();
    for &f in &shown {
        let flow = bot.flow(f);
        if !flow.triggers.is_empty() && !flow.nodes.is_empty() {
            edges.push(Edge {
                from: trigger_id(f),
                line: Line::Solid,
                label: None,
                to: node_id(NodeRef { flow: f, node: 0 }),
            });
        }
        for (n, node) in flow.nodes.iter().enumerate() {
            let here = NodeRef {
                flow: f,
                node: n as u32,
            };
            let mut add = |line: Line, label: Option<String>, target: Target| {
                let to = match target {
                    Target::Node(r) => {
                        if !is_shown(r.flow) {
                            stubs.insert(r);
                        }
                        node_id(r)
                    }
                    Target::End => {
                        ends.insert(f);
                        end_id(f)
                    }
                };
                edges.push(Edge {
                    from: node_id(here),
                    line,
                    label,
                    to,
                });
            };
            let label = |s: &str| Some(escape(s));
            if let NodeKind::End(_) = node.kind {
                // An `end` node ends the conversation whatever its compiled `next` says.
                add(Line::Solid, None, Target::End);
            } else {
                match &node.next {
                    Next::Goto(t) => add(Line::Solid, None, *t),
                    Next::Branch {
                        branches,
                        otherwise,
                    } => {
                        for (cond, t) in branches {
                            add(
                                Line::Solid,
                                Some(escape(&excerpt(cond.source(), CONDITION_CHARS))),
                                *t,
                            );
                        }
                        add(Line::Solid, label("else"), *otherwise);
                    }
                }
            }
            let retry = node.kind.retry();
            if let Some(t) = retry.and_then(|r| r.on_fail) {
                add(Line::Dotted, label("on_fail"), t);
            }
            if let Some(t) = node.on_error {
                add(Line::Dotted, label("on_error"), t);
            }
            if let NodeKind::Handover(h) = &node.kind {
                if let Some(t) = h.on_timeout {
                    add(Line::Dotted, label("on_timeout"), t);
                }
                if let Some(t) = h.on_unavailable {
                    add(Line::Dotted, label("on_unavailable"), t);
                }
            }
            if let NodeKind::Call(c) = node.kind {
                add(Line::Thick, label("call"), Target::Node(c));
            }
        }
    }
    // The way back from a subflow: its end returns to the node that called it.
    for &f in &shown {
        for (n, node) in bot.flow(f).nodes.iter().enumerate() {
            if let NodeKind::Call(c) = node.kind
                && ends.contains(&c.flow)
                && is_shown(c.flow)
            {
                edges.push(Edge {
                    from: end_id(c.flow),
                    line: Line::Dotted,
                    label: Some("return".into()),
                    to: node_id(NodeRef {
                        flow: f,
                        node: n as u32,
                    }),
                });
            }
        }
    }

    let mut out = String::from("flowchart TD\n");
    for &f in &shown {
        write_flow(&mut out, bot, f, ends.contains(&f));
    }
    for r in &stubs {
        let flow = bot.flow(r.flow);
        let node = bot.node(*r);
        let text = format!("→ {} · {}", flow.id, node.id);
        let _ = writeln!(out, "    {}[/\"{}\"/]", node_id(*r), escape(&text));
    }
    for e in &edges {
        let arrow = match e.line {
            Line::Solid => "-->",
            Line::Dotted => "-.->",
            Line::Thick => "==>",
        };
        match &e.label {
            Some(l) => {
                let _ = writeln!(out, "    {} {arrow}|\"{l}\"| {}", e.from, e.to);
            }
            None => {
                let _ = writeln!(out, "    {} {arrow} {}", e.from, e.to);
            }
        }
    }
    out
}

/// One flow's subgraph: its triggers, its nodes in order, its end.
fn write_flow(out: &mut String, bot: &Bot, f: FlowIdx, has_end: bool) {
    let flow = bot.flow(f);
    let mut roles = Vec::new();
    if f == bot.entry {
        roles.push("entry");
    }
    if f == bot.fallback {
        roles.push("fallback");
    }
    let title = if roles.is_empty() {
        flow.id.clone()
    } else {
        format!("{} ({})", flow.id, roles.join(", "))
    };
    let _ = writeln!(out, "    subgraph {}[\"{}\"]", flow_id(f), escape(&title));
    if !flow.triggers.is_empty() && !flow.nodes.is_empty() {
        let lines: Vec<String> = flow
            .triggers
            .iter()
            .map(|t| {
                let text = match t {
                    Trigger::Keywords(words) => format!("keywords: {}", words.join(", ")),
                    Trigger::Regex(re) => format!("regex: {}", re.as_str()),
                    Trigger::Reply(id) => format!("reply: {id}"),
                };
                escape(&excerpt(&text, CONDITION_CHARS))
            })
            .collect();
        let _ = writeln!(
            out,
            "        {}>\"{}\"]",
            trigger_id(f),
            lines.join("<br/>")
        );
    }
    for (n, node) in flow.nodes.iter().enumerate() {
        let id = node_id(NodeRef {
            flow: f,
            node: n as u32,
        });
        let mut label = format!("{}<br/>{}", escape(&node.id), node.kind.name());
        if let Some(text) = summary(bot, flow, node) {
            let _ = write!(label, ": {}", escape(&excerpt(&text, EXCERPT_CHARS)));
        }
        let (open, close) = if node.kind.waits() {
            ("([", "])")
        } else if matches!(node.kind, NodeKind::Call(_)) {
            ("[[", "]]")
        } else {
            ("[", "]")
        };
        let _ = writeln!(out, "        {id}{open}\"{label}\"{close}");
    }
    if has_end {
        let _ = writeln!(out, "        {}((\"end\"))", end_id(f));
    }
    out.push_str("    end\n");
}

fn flow_id(f: FlowIdx) -> String {
    format!("f{}", f.0)
}

/// The Mermaid id of a node in [`mermaid`]'s charts (the `/dev` page highlights nodes by it).
pub fn node_id(r: NodeRef) -> String {
    format!("f{}_n{}", r.flow.0, r.node)
}

fn end_id(f: FlowIdx) -> String {
    format!("f{}_end", f.0)
}

fn trigger_id(f: FlowIdx) -> String {
    format!("f{}_trg", f.0)
}

/// The source of a text as the designer wrote it.
fn text_source(flow: &Flow, text: &Text) -> String {
    match text {
        Text::Static(s) => s.clone(),
        Text::Template(name) => flow
            .templates
            .env()
            .get_template(name)
            .map_or_else(|_| "{{…}}".to_string(), |t| t.source().to_string()),
    }
}

fn first_text(flow: &Flow, messages: &[TextMessage]) -> Option<String> {
    let first = text_source(flow, &messages.first()?.text);
    Some(if messages.len() > 1 {
        format!("{first} (+{} more)", messages.len() - 1)
    } else {
        first
    })
}

fn media_text(flow: &Flow, media: &Media) -> String {
    match (&media.caption, &media.source) {
        (Some(caption), _) => text_source(flow, caption),
        (None, MediaSource::Link(link)) => text_source(flow, link),
        (None, MediaSource::Id(id)) => format!("id {}", text_source(flow, id)),
    }
}

/// A few words saying what a node does: the start of its text, the variables it sets,
/// the URL it calls.
fn summary(bot: &Bot, flow: &Flow, node: &Node) -> Option<String> {
    let text = |t: &Text| Some(text_source(flow, t));
    match &node.kind {
        NodeKind::Say(messages) | NodeKind::End(messages) => first_text(flow, messages),
        NodeKind::Media(_, media) => Some(media_text(flow, media)),
        NodeKind::Buttons(b) => text(&b.body),
        NodeKind::List(l) => text(&l.body),
        NodeKind::Ask(a) => text(&a.text),
        NodeKind::Template(t) => Some(format!("{} ({})", t.name, t.language)),
        NodeKind::Location(l) => match (&l.name, &l.latitude, &l.longitude) {
            (Some(name), _, _) => text(name),
            (None, Number::Fixed(lat), Number::Fixed(lon)) => Some(format!("{lat}, {lon}")),
            _ => None,
        },
        NodeKind::RequestLocation(r) => text(&r.body),
        NodeKind::Contacts(cards) => Some(format!(
            "{} card{}",
            cards.len(),
            if cards.len() == 1 { "" } else { "s" }
        )),
        NodeKind::CtaUrl(c) => text(&c.body),
        NodeKind::WhatsAppFlow(w) => text(&w.body),
        NodeKind::React(emoji) => text(emoji),
        NodeKind::Payload(_) => None,
        NodeKind::Set(values) => Some(
            values
                .iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        NodeKind::Http(h) => {
            let method = match h.method {
                HttpMethod::Get => "GET",
                HttpMethod::Post => "POST",
                HttpMethod::Put => "PUT",
                HttpMethod::Patch => "PATCH",
                HttpMethod::Delete => "DELETE",
            };
            Some(format!("{method} {}", text_source(flow, &h.url)))
        }
        NodeKind::Script(s) => Some(s.origin.clone()),
        NodeKind::Handover(h) => match (&h.queue, &h.say) {
            (Some(q), _) => Some(format!("queue {q}")),
            (None, Some(say)) => text(say),
            (None, None) => None,
        },
        NodeKind::Wait(d) => Some(humantime::format_duration(*d).to_string()),
        NodeKind::Call(r) => Some(format!("{} · {}", bot.flow(r.flow).id, bot.node(*r).id)),
    }
}

/// The first `max` characters of `s` on one line, with `…` when cut.
fn excerpt(s: &str, max: usize) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max).collect();
        format!("{}…", cut.trim_end())
    }
}

/// Makes text safe inside a quoted Mermaid label: `"` and the characters Mermaid or
/// its HTML labels would read as syntax become entity codes (`#quot;`, `#60;`), line
/// breaks become spaces and other control characters are dropped. Emojis stay.
///
/// Mermaid strips the last `;` of a line where `style` or `classDef` is followed by
/// `…:…#…;` (it takes that for a colour), which would break an entity code; one letter of
/// those words is written as a code too, so the rule never matches.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' | '<' | '>' | '{' | '}' | '[' | ']' | '|' | '&' | '`' => {
                let _ = write!(out, "#{};", c as u32);
            }
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    if out.contains("style") || out.contains("classDef") {
        out = out
            .replace("style", "st#121;le")
            .replace("classDef", "class#68;ef");
    }
    out
}
