//! Whole-bot checks on the compiled graph: nodes nothing leads to and triggers claimed
//! by two flows (warnings: the bot runs), loops that never wait for the user and reads of
//! variables nothing sets (errors: one user message would run away, or a typo would leave
//! the user in silence).

use super::FlowSource;
use crate::diag::{Code, Diagnostic};
use crate::flow::{Flow, FlowIdx, Next, NodeKind, NodeRef, Target, Trigger};
use crate::source::YamlPath;
use std::collections::{HashMap, HashSet};

pub(crate) fn check(sources: &[FlowSource], flows: &[Flow], diags: &mut Vec<Diagnostic>) {
    // In a file with errors, broken targets make nodes look unreachable: report those
    // warnings once the errors are fixed.
    let broken: HashSet<&std::path::Path> = diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.file.as_path())
        .collect();
    let mut found = Vec::new();
    unreachable_nodes(sources, flows, &mut found);
    found.retain(|d| !broken.contains(d.file.as_path()));
    diags.extend(found);
    endless_loops(sources, flows, diags);
    duplicate_triggers(sources, flows, diags);
}

/// Every node a node can lead to.
fn successors(flows: &[Flow], r: NodeRef) -> Vec<NodeRef> {
    let node = &flows[r.flow.0 as usize].nodes[r.node as usize];
    let mut targets: Vec<Target> = Vec::new();
    match &node.next {
        Next::Goto(t) => targets.push(*t),
        Next::Branch {
            branches,
            otherwise,
        } => {
            targets.extend(branches.iter().map(|(_, t)| *t));
            targets.push(*otherwise);
        }
    }
    targets.extend(node.on_error);
    let retry = node.kind.retry();
    targets.extend(retry.and_then(|r| r.on_fail));
    if let NodeKind::Handover(h) = &node.kind {
        targets.extend(h.on_timeout);
        targets.extend(h.on_unavailable);
    }
    if let NodeKind::Call(c) = &node.kind {
        targets.push(Target::Node(*c));
    }
    if let NodeKind::Script(s) = &node.kind {
        targets.extend(s.targets.iter().copied().map(Target::Node));
    }
    targets
        .into_iter()
        .filter_map(|t| match t {
            Target::Node(n) => Some(n),
            Target::End => None,
        })
        .collect()
}

fn all_refs(flows: &[Flow]) -> impl Iterator<Item = NodeRef> + '_ {
    flows.iter().enumerate().flat_map(|(f, flow)| {
        (0..flow.nodes.len() as u32).map(move |n| NodeRef {
            flow: FlowIdx(f as u32),
            node: n,
        })
    })
}

fn unreachable_nodes(sources: &[FlowSource], flows: &[Flow], diags: &mut Vec<Diagnostic>) {
    // A flow is entered at its first node (triggers, entry, fallback, `{ flow: x }`);
    // every node an explicit target names is entered too.
    let mut reached: HashSet<NodeRef> = HashSet::new();
    let mut stack: Vec<NodeRef> = flows
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.nodes.is_empty())
        .map(|(i, _)| NodeRef {
            flow: FlowIdx(i as u32),
            node: 0,
        })
        .collect();
    while let Some(r) = stack.pop() {
        if reached.insert(r) {
            stack.extend(successors(flows, r));
        }
    }
    for r in all_refs(flows) {
        if !reached.contains(&r) {
            let src = &sources[r.flow.0 as usize];
            let node = &flows[r.flow.0 as usize].nodes[r.node as usize];
            let path = YamlPath::root().key("nodes").key(&node.id);
            diags.push(
                src.file
                    .diag_at_key(&path, Code::UnreachableNode, format!("no path leads to node \"{}\"", node.id))
                    .with_hint("the node above always goes elsewhere and no target names this node; remove it or point a `next` at it"),
            );
        }
    }
}

/// Cycles of nodes that neither wait for the user nor branch: a turn entering one would
/// send message after message until the engine's bound stops it. A node with schema
/// errors was compiled from what parsed (a `buttons` whose list broke no longer waits),
/// so a cycle through one is not reported: it may not exist once the node is fixed.
fn endless_loops(sources: &[FlowSource], flows: &[Flow], diags: &mut Vec<Diagnostic>) {
    let unconditional_next = |r: NodeRef| -> Option<NodeRef> {
        let node = &flows[r.flow.0 as usize].nodes[r.node as usize];
        // A script that names nodes with `next_node` branches like an `if`.
        let script_branches = matches!(&node.kind, NodeKind::Script(s) if !s.targets.is_empty());
        if node.kind.waits()
            || script_branches
            || matches!(node.kind, NodeKind::End(_) | NodeKind::Call(_))
            || sources[r.flow.0 as usize].broken_nodes.contains(&node.id)
        {
            return None;
        }
        match node.next {
            Next::Goto(Target::Node(n)) => Some(n),
            _ => None,
        }
    };
    let mut done: HashSet<NodeRef> = HashSet::new();
    for start in all_refs(flows) {
        let mut path: Vec<NodeRef> = Vec::new();
        let mut on_path: HashMap<NodeRef, usize> = HashMap::new();
        let mut current = Some(start);
        while let Some(r) = current {
            if done.contains(&r) {
                break;
            }
            if let Some(&at) = on_path.get(&r) {
                let cycle = &path[at..];
                let first = cycle.iter().min().copied().unwrap_or(r);
                let names: Vec<String> = cycle
                    .iter()
                    .chain(std::iter::once(&r))
                    .map(|n| {
                        let flow = &flows[n.flow.0 as usize];
                        let node = &flow.nodes[n.node as usize].id;
                        if n.flow == first.flow {
                            node.clone()
                        } else {
                            format!("{}.{node}", flow.id)
                        }
                    })
                    .collect();
                let src = &sources[first.flow.0 as usize];
                let node = &flows[first.flow.0 as usize].nodes[first.node as usize];
                diags.push(
                    src.file
                        .diag_at_key(&YamlPath::root().key("nodes").key(&node.id), Code::EndlessLoop, format!("{} loop forever without waiting for the user", names.join(" → ")))
                        .with_hint("add a node that waits (ask, buttons, list) or a branch that leaves the loop"),
                );
                break;
            }
            on_path.insert(r, path.len());
            path.push(r);
            current = unconditional_next(r);
        }
        done.extend(path);
    }
}

fn duplicate_triggers(sources: &[FlowSource], flows: &[Flow], diags: &mut Vec<Diagnostic>) {
    let mut claimed: HashMap<String, (usize, String)> = HashMap::new();
    for (f, flow) in flows.iter().enumerate() {
        let src = &sources[f];
        for (t, (index, _)) in flow.triggers.iter().zip(&src.triggers) {
            let base = YamlPath::root().key("triggers").index(*index);
            let keys: Vec<(String, String, YamlPath)> = match t {
                Trigger::Keywords(words) => words
                    .iter()
                    .enumerate()
                    .map(|(i, w)| {
                        (
                            format!("keyword:{w}"),
                            format!("keyword \"{w}\""),
                            base.key("keywords").index(i),
                        )
                    })
                    .collect(),
                Trigger::Reply(id) => vec![(
                    format!("reply:{id}"),
                    format!("reply id \"{id}\""),
                    base.key("reply"),
                )],
                Trigger::Regex(_) => Vec::new(),
            };
            for (key, what, path) in keys {
                match claimed.get(&key) {
                    Some((other, _)) if *other != f => {
                        diags.push(
                            src.file
                                .diag_at(&path, Code::DuplicateTrigger, format!("{what} also starts flow \"{}\"", flows[*other].id))
                                .with_hint("the flow listed first (by file name) wins; remove one of the triggers"),
                        );
                    }
                    Some(_) => {}
                    None => {
                        claimed.insert(key, (f, what));
                    }
                }
            }
        }
    }
}

/// `vars.X` read somewhere while nothing assigns X: almost always a typo, and at run time
/// the user would get an error instead of an answer. A script counts with the variables
/// it assigns as `vars.NAME = …`; one that may set any variable (`vars[key] = …`) turns
/// the check off for the bot.
/// `assigned_elsewhere` are names that parts which did not compile would assign (the
/// `save` of a node with schema errors, a bad regex's groups).
pub(crate) fn unset_variables<'a>(
    flows: &[Flow],
    assigned_elsewhere: impl Iterator<Item = &'a String>,
    reads: Vec<(String, Diagnostic)>,
    diags: &mut Vec<Diagnostic>,
) {
    let mut assigned: HashSet<String> = assigned_elsewhere.cloned().collect();
    let groups = |re: &regex::Regex| {
        re.capture_names()
            .flatten()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    for flow in flows {
        for t in &flow.triggers {
            if let Trigger::Regex(re) = t {
                assigned.extend(groups(re));
            }
        }
        for node in &flow.nodes {
            // `save` counts on every kind (http and handover results too).
            assigned.extend(node.save.clone());
            match &node.kind {
                NodeKind::Script(s) => match &s.sets {
                    Some(names) => assigned.extend(names.iter().cloned()),
                    None => return,
                },
                NodeKind::Set(values) => {
                    assigned.extend(values.iter().map(|(name, _)| name.clone()))
                }
                NodeKind::Ask(a) => {
                    if let crate::flow::Expect::Regex(re) = &a.expect {
                        assigned.extend(groups(re));
                    }
                }
                // These assign nothing but what `save` names. Listed one by one so that
                // a new kind that sets variables cannot be forgotten here.
                NodeKind::Say(_)
                | NodeKind::Media(..)
                | NodeKind::Buttons(_)
                | NodeKind::List(_)
                | NodeKind::Template(_)
                | NodeKind::Location(_)
                | NodeKind::RequestLocation(_)
                | NodeKind::Contacts(_)
                | NodeKind::CtaUrl(_)
                | NodeKind::WhatsAppFlow(_)
                | NodeKind::React(_)
                | NodeKind::Payload(_)
                | NodeKind::Http(_)
                | NodeKind::Handover(_)
                | NodeKind::Wait(_)
                | NodeKind::Call(_)
                | NodeKind::End(_) => {}
            }
        }
    }
    let mut names: Vec<&str> = assigned.iter().map(String::as_str).collect();
    names.sort();
    for (var, d) in reads {
        if !assigned.contains(&var) {
            diags.push(d.with_hint(unset_hint(&var, &names)));
        }
    }
}

/// The hint for reading `vars.{var}` that nothing sets: the likely meant variable when
/// one is close (a typo, or an abbreviation like `qty` for `quantity`), else what the
/// bot does set.
fn unset_hint(var: &str, names: &[&str]) -> String {
    let close = crate::diag::did_you_mean(var, names.iter().copied())
        .or_else(|| names.iter().copied().find(|n| abbreviates(n, var)));
    if let Some(close) = close {
        return format!("did you mean vars.{close}?");
    }
    const SHOWN: usize = 8;
    match names {
        [] => "nothing in this bot sets a variable; variables are set by `save`, `set` and named regex groups".into(),
        few if few.len() <= SHOWN => format!("the variables this bot sets are {}", few.join(", ")),
        many => format!(
            "the variables this bot sets include {}, and {} more",
            many[..SHOWN].join(", "),
            many.len() - SHOWN
        ),
    }
}

/// Whether one name is a shortening of the other: same first letter, and the shorter
/// one's letters appear in order in the longer (`qty` and `quantity`, `addr` and `address`).
fn abbreviates(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if short.len() < 2 || short.chars().next() != long.chars().next() {
        return false;
    }
    let mut rest = long.chars();
    short.chars().all(|c| rest.any(|l| l == c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abbreviations_are_recognised_both_ways() {
        assert!(abbreviates("qty", "quantity"));
        assert!(abbreviates("quantity", "qty"));
        assert!(abbreviates("addr", "address"));
        assert!(!abbreviates("qty", "total"));
        assert!(!abbreviates("ty", "quantity"));
        assert!(!abbreviates("q", "quantity"));
    }

    #[test]
    fn the_hint_names_the_meant_variable_or_what_is_set() {
        assert_eq!(
            unset_hint("quantity", &["qty", "size"]),
            "did you mean vars.qty?"
        );
        assert_eq!(unset_hint("nmae", &["name"]), "did you mean vars.name?");
        assert_eq!(
            unset_hint("total", &["name", "size"]),
            "the variables this bot sets are name, size"
        );
        let many: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            unset_hint("total", &many),
            "the variables this bot sets include v0, v1, v2, v3, v4, v5, v6, v7, and 2 more"
        );
    }
}
