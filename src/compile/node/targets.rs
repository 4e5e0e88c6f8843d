//! Targets: `next` and its branches, a node of this flow, a flow and its node.

use super::{Ctx, PLACEHOLDER};
use crate::diag::{Code, did_you_mean};
use crate::flow::*;
use crate::source::YamlPath;
use crate::spec::flow::*;

impl Ctx<'_> {
    pub(super) fn next(&mut self, raw: &RawNext, path: &YamlPath, fallthrough: Target) -> Next {
        match raw {
            RawNext::Target(t) => Next::Goto(self.target(t, path)),
            RawNext::Branches(list) => {
                let mut branches = Vec::new();
                let mut otherwise = None;
                for (i, b) in list.iter().enumerate() {
                    let p = path.index(i);
                    match b {
                        RawBranch::When(w) => {
                            if otherwise.is_some() {
                                self.report(
                                    &p,
                                    Code::InvalidValue,
                                    "a branch after `else` is never taken",
                                    Some("move `else` to the end of the list".into()),
                                );
                            }
                            let cond = self.expr(&w.condition, &p.key("if"), &[]);
                            let target = self.target(&w.then, &p.key("then"));
                            branches.push((cond, target));
                        }
                        RawBranch::Else(e) => {
                            if otherwise.is_some() {
                                self.report(
                                    &p,
                                    Code::InvalidValue,
                                    "a second `else`; only the first is ever taken",
                                    Some("keep one `else`, as the last branch".into()),
                                );
                            }
                            otherwise = Some(self.target(&e.otherwise, &p.key("else")));
                        }
                    }
                }
                Next::Branch {
                    branches,
                    otherwise: otherwise.unwrap_or(fallthrough),
                }
            }
        }
    }

    pub(super) fn target(&mut self, raw: &RawTarget, path: &YamlPath) -> Target {
        match raw {
            RawTarget::Node(id) if id == "end" => Target::End,
            RawTarget::Node(id) => {
                let nodes = self.names.nodes(self.flow);
                if let Some(i) = nodes.iter().position(|n| n == id) {
                    return Target::Node(NodeRef {
                        flow: self.flow,
                        node: i as u32,
                    });
                }
                let hint = match did_you_mean(id, nodes.iter().map(String::as_str)) {
                    Some(close) => Some(format!("did you mean \"{close}\"?")),
                    None if self.names.flow(id).is_some() => Some(format!(
                        "to go to the flow \"{id}\", write {{ flow: {id} }}"
                    )),
                    None => Some(format!("nodes of this flow: {}", nodes.join(", "))),
                };
                self.report(
                    path,
                    Code::UnknownNode,
                    format!("no node named \"{id}\" in this flow"),
                    hint,
                );
                PLACEHOLDER
            }
            RawTarget::Flow(t) => self.flow_target(
                &t.flow,
                t.node.as_deref(),
                &path.key("flow"),
                &path.key("node"),
            ),
        }
    }

    pub(super) fn flow_target(
        &mut self,
        flow: &str,
        node: Option<&str>,
        flow_path: &YamlPath,
        node_path: &YamlPath,
    ) -> Target {
        let Some(f) = self.names.flow(flow) else {
            if !self.names.is_unreadable(flow) {
                let hint = did_you_mean(flow, self.names.flow_ids())
                    .map(|c| format!("did you mean \"{c}\"?"))
                    .or_else(|| {
                        Some(format!(
                            "flows: {}",
                            self.names.flow_ids().collect::<Vec<_>>().join(", ")
                        ))
                    });
                self.report(
                    flow_path,
                    Code::UnknownFlow,
                    format!("no flow named \"{flow}\""),
                    hint,
                );
            }
            return PLACEHOLDER;
        };
        let nodes = self.names.nodes(f);
        let index = match node {
            None if nodes.is_empty() => return PLACEHOLDER,
            None => 0,
            Some(id) => match nodes.iter().position(|n| n == id) {
                Some(i) => i,
                None => {
                    let hint = did_you_mean(id, nodes.iter().map(String::as_str))
                        .map(|c| format!("did you mean \"{c}\"?"))
                        .or_else(|| Some(format!("nodes of that flow: {}", nodes.join(", "))));
                    let message = format!(
                        "flow \"{}\" has no node named \"{id}\"",
                        self.names.flow_id(f)
                    );
                    self.report(node_path, Code::UnknownNode, message, hint);
                    return PLACEHOLDER;
                }
            },
        };
        Target::Node(NodeRef {
            flow: f,
            node: index as u32,
        })
    }
}
