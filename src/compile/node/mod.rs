//! Compiling nodes: resolve targets, compile templates and expressions, check WhatsApp's
//! limits on static text. Every check reports and carries on with a placeholder, so one
//! pass finds every problem; the bot is only built when nothing was an error.
//!
//! Here: the compiler state ([`Ctx`]), a flow's triggers and nodes, and the dispatch over a
//! node's kind (`kind`), with `not_runnable`. Each job has its file, an `impl Ctx` block:
//!
//! - `targets.rs`: `next` and its branches, node and flow targets
//! - `lints.rs`: templates, expressions and regexes, and the names they read
//! - `text.rs`: length limits, ids, URLs, JSON, durations, variable names
//! - `messages.rs`: say, media, template, location
//! - `interactive.rs`: buttons, list, ask (and their retries), cta_url, whatsapp_flow
//! - `actions.rs`: set, http, handover
//! - `files.rs`: files the bot names, read inside the bot folder
//!
//! `script` nodes compile in `compile/script.rs`.

mod actions;
mod files;
mod interactive;
mod lints;
mod messages;
mod targets;
mod text;

pub use files::read_bot_file;
pub use text::{is_identifier, parse_duration};

use super::FlowSource;
use crate::diag::{Code, Diagnostic, Pos};
use crate::flow::limits;
use crate::flow::*;
use crate::source::{SourceFile, YamlPath};
use crate::spec::flow::*;
use indexmap::IndexMap;
use lints::never_matches;
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;

/// Every flow and node id of the bot, for resolving targets.
pub(crate) struct Names {
    flows: IndexMap<String, Vec<String>>,
    /// Flows whose file could not be read: targets to them are not reported again.
    unreadable: HashSet<String>,
}

impl Names {
    pub fn new(sources: &[FlowSource], unreadable: HashSet<String>) -> Self {
        let flows = sources
            .iter()
            .map(|s| (s.id.clone(), s.nodes.keys().cloned().collect()))
            .collect();
        Names { flows, unreadable }
    }

    pub fn flow(&self, id: &str) -> Option<FlowIdx> {
        self.flows.get_index_of(id).map(|i| FlowIdx(i as u32))
    }

    pub fn flow_ids(&self) -> impl Iterator<Item = &str> {
        self.flows.keys().map(String::as_str)
    }

    pub fn is_unreadable(&self, id: &str) -> bool {
        self.unreadable.contains(id)
    }

    /// Whether some flow file could not be read (so what it defines is unknown).
    pub fn has_unreadable(&self) -> bool {
        !self.unreadable.is_empty()
    }

    pub(crate) fn nodes(&self, flow: FlowIdx) -> &[String] {
        self.flows
            .get_index(flow.0 as usize)
            .map_or(&[], |(_, n)| n.as_slice())
    }

    fn flow_id(&self, flow: FlowIdx) -> &str {
        self.flows
            .get_index(flow.0 as usize)
            .map_or("", |(id, _)| id.as_str())
    }
}

/// What compiling one flow file needs.
pub(crate) struct Ctx<'a> {
    pub dir: &'a Path,
    pub file: &'a SourceFile,
    pub flow: FlowIdx,
    pub names: &'a Names,
    pub expose_env: &'a [String],
    /// Compiles the flow's scripts, with the bot's `scripts:` limits.
    pub scripts: &'a crate::script::Sandbox,
    /// The flow's own templates: flows compile in parallel and each owns what it uses.
    pub templates: Templates,
    /// Templates named so far in this file (names are `file#n`).
    pub template_count: usize,
    /// Every `vars.X` read, with the error to give if nothing sets X.
    pub var_reads: Vec<(String, Diagnostic)>,
    /// Variables that parts which did not compile (a bad regex's named groups) would set.
    pub assigned_elsewhere: Vec<String>,
    pub diags: Vec<Diagnostic>,
}

/// One flow compiled, with what the whole-bot checks need from it.
pub(crate) struct CompiledFlow {
    pub flow: Flow,
    pub var_reads: Vec<(String, Diagnostic)>,
    pub assigned_elsewhere: Vec<String>,
    pub diags: Vec<Diagnostic>,
}

const PLACEHOLDER: Target = Target::End;

impl Ctx<'_> {
    fn report(
        &mut self,
        path: &YamlPath,
        code: Code,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let d = self.file.diag_at(path, code, message).maybe_hint(hint);
        self.diags.push(d);
    }

    pub fn compile_flow(mut self, src: &FlowSource) -> CompiledFlow {
        let triggers = src
            .triggers
            .iter()
            .map(|(i, t)| self.trigger(t, &YamlPath::root().key("triggers").index(*i)))
            .collect();
        let mut nodes = Vec::with_capacity(src.nodes.len());
        for (i, (id, raw)) in src.nodes.iter().enumerate() {
            let path = YamlPath::root().key("nodes").key(id);
            // A node without `next` continues with the node below it; the last one ends.
            let fallthrough = if i + 1 < src.nodes.len() {
                Target::Node(NodeRef {
                    flow: self.flow,
                    node: (i + 1) as u32,
                })
            } else {
                Target::End
            };
            let pos = self
                .file
                .tree
                .as_ref()
                .map_or_else(Default::default, |t| t.key_pos_of(&path));
            nodes.push(match raw {
                Some(raw) => self.node(id, pos, raw, &path, fallthrough),
                None => placeholder_node(id, pos),
            });
        }
        let flow = Flow::new(
            src.id.clone(),
            src.file.rel.clone(),
            src.description.clone(),
            triggers,
            src.interruptible,
            nodes,
            self.templates,
        );
        CompiledFlow {
            flow,
            var_reads: self.var_reads,
            assigned_elsewhere: self.assigned_elsewhere,
            diags: self.diags,
        }
    }

    fn trigger(&mut self, raw: &RawTrigger, path: &YamlPath) -> Trigger {
        match raw {
            RawTrigger::Keywords(words) => {
                let mut out = Vec::new();
                for (i, w) in words.iter().enumerate() {
                    let n = normalize(w);
                    if n.is_empty() {
                        self.report(
                            &path.key("keywords").index(i),
                            Code::InvalidValue,
                            "empty keyword",
                            Some("remove the empty entry, or write the word".into()),
                        );
                    } else {
                        out.push(n);
                    }
                }
                Trigger::Keywords(out)
            }
            RawTrigger::Regex(re) => Trigger::Regex(
                self.regex(re, &path.key("regex"), true)
                    .unwrap_or_else(never_matches),
            ),
            RawTrigger::Reply(id) => Trigger::Reply(id.clone()),
        }
    }

    fn node(
        &mut self,
        id: &str,
        pos: Pos,
        raw: &RawNode,
        path: &YamlPath,
        fallthrough: Target,
    ) -> Node {
        let next = match &raw.next {
            None => Next::Goto(fallthrough),
            Some(next) => self.next(next, &path.key("next"), fallthrough),
        };
        let kind = self.kind(raw, path);
        if let Some(save) = &raw.save
            && let Some(kind) = &kind
            && !kind.saves()
        {
            self.diags.push(
                self.file
                    .diag_at_key(&path.key("save"), Code::MisplacedKey, format!("`save` has no effect on a {} node", kind.name()))
                    .with_hint(format!(
                        "only buttons, list, ask, request_location, whatsapp_flow, template, http and handover nodes produce a value for \"{save}\""
                    )),
            );
        }
        if raw.pii == Some(true) && raw.save.is_none() {
            self.diags.push(
                self.file
                    .diag_at_key(&path.key("pii"), Code::MisplacedKey, "`pii` has no effect without `save`".to_string())
                    .with_hint("it marks the variable `save` stores as personal data; add `save: NAME` or remove `pii`".to_string()),
            );
        }
        if raw.on_window_closed.is_some()
            && let Some(kind) = &kind
            && !kind.sends_free_form()
        {
            self.diags.push(
                self.file
                    .diag_at_key(&path.key("on_window_closed"), Code::MisplacedKey, format!("`on_window_closed` has no effect on a {} node", kind.name()))
                    .with_hint("it replaces a free-form message sent outside the 24-hour window; templates are always allowed".to_string()),
            );
        }
        if let Some(hint) = kind.as_ref().and_then(not_runnable) {
            let name = kind.as_ref().map_or("", NodeKind::name);
            self.diags.push(
                self.file
                    .diag_at_key(
                        &path.key(name),
                        Code::NotSupported,
                        format!("{name} nodes are checked but this build cannot run them"),
                    )
                    .with_hint(hint),
            );
        }
        let on_error = raw
            .on_error
            .as_ref()
            .map(|t| self.target(t, &path.key("on_error")));
        let on_window_closed = raw
            .on_window_closed
            .as_ref()
            .map(|t| self.template(t, &path.key("on_window_closed"), false));
        Node {
            id: id.to_string(),
            pos,
            kind: kind.unwrap_or(NodeKind::Set(Vec::new())),
            next,
            save: raw.save.clone(),
            pii: raw.pii == Some(true),
            on_error,
            on_window_closed,
        }
    }

    /// The node's one kind, compiled. `None` when it has none or several (the schema
    /// check already said so).
    fn kind(&mut self, raw: &RawNode, path: &YamlPath) -> Option<NodeKind> {
        let count = [
            raw.say.is_some(),
            raw.image.is_some(),
            raw.video.is_some(),
            raw.audio.is_some(),
            raw.document.is_some(),
            raw.sticker.is_some(),
            raw.buttons.is_some(),
            raw.list.is_some(),
            raw.ask.is_some(),
            raw.template.is_some(),
            raw.location.is_some(),
            raw.request_location.is_some(),
            raw.contacts.is_some(),
            raw.cta_url.is_some(),
            raw.whatsapp_flow.is_some(),
            raw.react.is_some(),
            raw.payload.is_some(),
            raw.set.is_some(),
            raw.http.is_some(),
            raw.script.is_some(),
            raw.handover.is_some(),
            raw.wait.is_some(),
            raw.call.is_some(),
            raw.end.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if count != 1 {
            return None;
        }
        let media = [
            (MediaKind::Image, &raw.image),
            (MediaKind::Video, &raw.video),
            (MediaKind::Audio, &raw.audio),
            (MediaKind::Document, &raw.document),
            (MediaKind::Sticker, &raw.sticker),
        ]
        .into_iter()
        .find_map(|(kind, m)| m.as_ref().map(|m| (kind, m)));
        if let Some((kind, m)) = media {
            let p = path.key(kind.name());
            return Some(NodeKind::Media(kind, self.media(kind, m, &p)));
        }
        Some(if let Some(say) = &raw.say {
            NodeKind::Say(self.say(say, &path.key("say")))
        } else if let Some(b) = &raw.buttons {
            NodeKind::Buttons(self.buttons(b, &path.key("buttons")))
        } else if let Some(l) = &raw.list {
            NodeKind::List(self.list(l, &path.key("list")))
        } else if let Some(a) = &raw.ask {
            NodeKind::Ask(self.ask(a, &path.key("ask")))
        } else if let Some(t) = &raw.template {
            NodeKind::Template(self.template(t, &path.key("template"), raw.save.is_some()))
        } else if let Some(l) = &raw.location {
            NodeKind::Location(self.location(l, &path.key("location")))
        } else if let Some(r) = &raw.request_location {
            let p = path.key("request_location");
            let (body, retry) = match r {
                RawRequestLocation::Text(t) => (
                    self.limited(t, &p, limits::INTERACTIVE_BODY, "the body"),
                    self.retry(None, &None, &None, &p),
                ),
                RawRequestLocation::Full(b) => (
                    self.limited(
                        &b.body,
                        &p.key("body"),
                        limits::INTERACTIVE_BODY,
                        "the body",
                    ),
                    self.retry(b.retries, &b.reprompt, &b.on_fail, &p),
                ),
            };
            NodeKind::RequestLocation(RequestLocation { body, retry })
        } else if raw.contacts.is_some() {
            let p = path.key("contacts");
            let items = self
                .raw_json(&p)
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default();
            NodeKind::Contacts(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, c)| self.json(c, &p.index(i)))
                    .collect(),
            )
        } else if let Some(c) = &raw.cta_url {
            NodeKind::CtaUrl(self.cta_url(c, &path.key("cta_url")))
        } else if let Some(f) = &raw.whatsapp_flow {
            NodeKind::WhatsAppFlow(self.whatsapp_flow(f, &path.key("whatsapp_flow")))
        } else if let Some(r) = &raw.react {
            NodeKind::React(self.text(r, &path.key("react")))
        } else if let Some(payload) = &raw.payload {
            let p = path.key("payload");
            if !payload.get("type").is_some_and(Value::is_string) {
                self.report(
                    &p,
                    Code::MissingField,
                    "a payload needs a \"type\" (text, image, interactive...)",
                    Some(
                        "add e.g. `type: text` with `text: { body: ... }`, as in the Cloud API"
                            .into(),
                    ),
                );
            }
            let json = self.raw_json(&p).unwrap_or(Value::Null);
            NodeKind::Payload(self.json(&json, &p))
        } else if let Some(set) = &raw.set {
            NodeKind::Set(self.set(set, &path.key("set")))
        } else if let Some(h) = &raw.http {
            NodeKind::Http(self.http(h, &path.key("http")))
        } else if let Some(s) = &raw.script {
            NodeKind::Script(self.script(s, &path.key("script")))
        } else if let Some(h) = &raw.handover {
            NodeKind::Handover(self.handover(h.as_ref(), &path.key("handover")))
        } else if let Some(w) = &raw.wait {
            NodeKind::Wait(self.wait(w, &path.key("wait")))
        } else if let Some(c) = &raw.call {
            let p = path.key("call");
            let target = match c {
                RawFlowRef::Id(flow) => self.flow_target(flow, None, &p, &p),
                RawFlowRef::Full(t) => {
                    self.flow_target(&t.flow, t.node.as_deref(), &p.key("flow"), &p.key("node"))
                }
            };
            match target {
                Target::Node(r) => NodeKind::Call(r),
                Target::End => NodeKind::Set(Vec::new()),
            }
        } else if let Some(end) = &raw.end {
            NodeKind::End(
                end.as_ref()
                    .map(|s| self.say(s, &path.key("end")))
                    .unwrap_or_default(),
            )
        } else {
            return None;
        })
    }
}

/// Stands in for a node that broke the schema, so targets to it still resolve.
fn placeholder_node(id: &str, pos: Pos) -> Node {
    Node {
        id: id.to_string(),
        pos,
        kind: NodeKind::Set(Vec::new()),
        next: Next::Goto(Target::End),
        save: None,
        pii: false,
        on_error: None,
        on_window_closed: None,
    }
}

/// Why this build cannot run a node of this kind (the hint of its `not_supported`
/// error), or `None` when it can. The one place that decides which kinds run; the
/// engine's `Host` seam for the others is for the versions that will.
fn not_runnable(kind: &NodeKind) -> Option<&'static str> {
    match kind {
        NodeKind::Handover(_)
        | NodeKind::Say(_)
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
        | NodeKind::Payload(_)
        | NodeKind::Set(_)
        | NodeKind::Http(_)
        | NodeKind::Script(_)
        | NodeKind::Wait(_)
        | NodeKind::Call(_)
        | NodeKind::End(_) => None,
    }
}
