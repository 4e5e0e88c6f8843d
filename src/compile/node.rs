//! Compiling nodes: resolve targets, compile templates and expressions, check WhatsApp's
//! limits on static text. Every check reports and carries on with a placeholder, so one
//! pass finds every problem; the bot is only built when nothing was an error.

use super::FlowSource;
use crate::diag::{Code, Diagnostic, Pos, did_you_mean};
use crate::flow::limits;
use crate::flow::templates::{CONTEXT_FIELDS, CONTEXT_ROOTS};
use crate::flow::*;
use crate::source::{SourceFile, YamlPath, bot_path};
use crate::spec::flow::*;
use indexmap::IndexMap;
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

/// Default timeout of an `http` node.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest timeout an `http` node may set: a user's later messages wait for it.
pub const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// Retries of an idempotent `http` call unless the node says otherwise.
pub const DEFAULT_HTTP_RETRIES: u32 = 2;
/// The most retries an `http` node may ask for.
pub const MAX_HTTP_RETRIES: u32 = 5;

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

    /// Compiles a designer's regex; `None` (reported) when it does not compile.
    fn regex(&mut self, source: &str, path: &YamlPath, ignore_case: bool) -> Option<regex::Regex> {
        // Triggers ignore case, like keywords: users do not type in a fixed case. An
        // `expect` regex is validation, so it means exactly what the designer wrote.
        let build = |s: &str| {
            regex::RegexBuilder::new(s)
                .case_insensitive(ignore_case)
                .size_limit(1 << 20)
                .build()
        };
        match build(source) {
            Ok(re) => Some(re),
            Err(e) => {
                let detail = e.to_string();
                let last = detail
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("invalid");
                let message = format!(
                    "invalid regular expression: {}",
                    last.trim().trim_start_matches("error: ")
                );
                let hint = regex_hint(source, &message);
                self.report(path, Code::BadRegex, message, Some(hint));
                // Its named groups are still variables the designer meant to set.
                self.assigned_elsewhere
                    .extend(super::prune::regex_group_names(source));
                None
            }
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

    // ----- targets -----

    fn next(&mut self, raw: &RawNext, path: &YamlPath, fallthrough: Target) -> Next {
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

    fn target(&mut self, raw: &RawTarget, path: &YamlPath) -> Target {
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

    fn flow_target(
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

    // ----- texts, expressions, limits -----

    /// A unique name for the next template of this file. Runtime errors point at the
    /// node (it keeps its position), so the name only has to be unique and readable.
    fn template_name(&mut self) -> String {
        self.template_count += 1;
        format!("{}#{}", self.file.display.display(), self.template_count)
    }

    pub fn text(&mut self, source: &str, path: &YamlPath) -> Text {
        let name = self.template_name();
        match self.templates.add_text(name, source) {
            Ok((text, names)) => {
                self.check_names(&names, path, &[]);
                text
            }
            Err(e) => {
                self.report(
                    path,
                    Code::TemplateSyntax,
                    format!("invalid template: {}", e.message),
                    Some(template_hint(source)),
                );
                Text::Static(String::new())
            }
        }
    }

    fn expr(&mut self, source: &str, path: &YamlPath, extra_roots: &[&str]) -> Expr {
        let name = self.template_name();
        match self.templates.add_expr(name, source) {
            Ok((expr, names)) => {
                self.check_names(&names, path, extra_roots);
                expr
            }
            Err(e) => {
                let hint = if source.contains("{{") {
                    "write expressions without {{ }}: if: vars.age >= 18"
                } else {
                    "an expression is minijinja: vars.qty * 2, vars.age >= 18 and vars.ok, 'text in quotes'"
                };
                self.report(
                    path,
                    Code::ExpressionSyntax,
                    format!("invalid expression: {}", e.message),
                    Some(hint.into()),
                );
                Expr::broken(source)
            }
        }
    }

    /// Names a template reads must exist at run time; `env.X` must be exposed.
    fn check_names(&mut self, names: &HashSet<String>, path: &YamlPath, extra_roots: &[&str]) {
        let mut names: Vec<&String> = names.iter().collect();
        names.sort();
        let globals: Vec<String> = self
            .templates
            .env()
            .globals()
            .map(|(n, _)| n.to_string())
            .collect();
        let mut reported = HashSet::new();
        for full in names {
            let mut parts = full.split('.');
            let root = parts.next().unwrap_or_default();
            if root == "vars"
                && let Some(var) = parts.next()
            {
                let d = self.file.diag_at(
                    path,
                    Code::UnsetVariable,
                    format!("vars.{var} is never saved or set in this bot"),
                );
                self.var_reads.push((var.to_string(), d));
                continue;
            }
            if root == "env" {
                if let Some(var) = parts.next()
                    && !self.expose_env.iter().any(|e| e == var)
                    && reported.insert(full.clone())
                {
                    self.report(
                        path,
                        Code::UnknownVariable,
                        format!("env.{var} is not exposed to templates"),
                        Some(format!("add {var} to expose_env in parlance.yaml")),
                    );
                }
                continue;
            }
            if let Some((_, fields)) = CONTEXT_FIELDS.iter().find(|(r, _)| *r == root)
                && let Some(field) = parts.next()
                && !fields.contains(&field)
                && reported.insert(format!("{root}.{field}"))
            {
                let hint = match did_you_mean(field, fields.iter().copied()) {
                    Some(c) => format!("did you mean \"{root}.{c}\"?"),
                    None => format!("{root} has: {}", fields.join(", ")),
                };
                self.report(
                    path,
                    Code::UnknownVariable,
                    format!("{root} has no field \"{field}\""),
                    Some(hint),
                );
                continue;
            }
            let known = CONTEXT_ROOTS.contains(&root)
                || extra_roots.contains(&root)
                || globals.iter().any(|g| g == root);
            if !known && reported.insert(root.to_string()) {
                let candidates = CONTEXT_ROOTS.iter().chain(extra_roots.iter()).copied();
                let hint = match did_you_mean(root, candidates) {
                    Some(c) => format!("did you mean \"{c}\"?"),
                    None => format!(
                        "templates read {}; a saved answer is vars.{root}",
                        CONTEXT_ROOTS.join(", ")
                    ),
                };
                self.report(
                    path,
                    Code::UnknownVariable,
                    format!("unknown name \"{root}\""),
                    Some(hint),
                );
            }
        }
    }

    /// A text with a WhatsApp length limit. For templates only the literal part is
    /// known here; the rendered text is checked again before sending.
    fn limited(&mut self, source: &str, path: &YamlPath, max: usize, what: &str) -> Text {
        let literal = literal_chars(source);
        if literal > max {
            let message = if Templates::is_template(source) {
                format!(
                    "{what} is at least {literal} characters before its template values are filled in; WhatsApp allows at most {max}"
                )
            } else {
                format!("{what} is {literal} characters; WhatsApp allows at most {max}")
            };
            self.report(path, Code::WhatsappLimit, message, Some(limit_hint(what)));
        }
        self.text(source, path)
    }

    /// [`Self::limited`] for an optional text.
    fn limited_opt(
        &mut self,
        source: &Option<String>,
        path: &YamlPath,
        max: usize,
        what: &str,
    ) -> Option<Text> {
        source.as_ref().map(|s| self.limited(s, path, max, what))
    }

    fn duration(&mut self, source: &str, path: &YamlPath) -> Duration {
        parse_duration(source).unwrap_or_else(|message| {
            self.report(
                path,
                Code::BadDuration,
                message,
                Some("write durations like 30s, 5m, 2h or 7d".into()),
            );
            Duration::ZERO
        })
    }

    /// A `wait`: a typing pause, bounded so no user is wedged by `wait: 3650d`.
    fn wait(&mut self, source: &str, path: &YamlPath) -> Duration {
        let d = self.duration(source, path);
        if d > limits::MAX_WAIT {
            self.report(
                path,
                Code::WaitTooLong,
                format!(
                    "{} is longer than the {}s a wait may last",
                    source.trim(),
                    limits::MAX_WAIT.as_secs()
                ),
                Some("a wait is a typing pause within one reply; longer pauses (reminders, follow-ups) need durable timers, which are planned".into()),
            );
        }
        d
    }

    fn url(&mut self, source: &str, path: &YamlPath, what: &str) -> Text {
        let is_url = source.starts_with("https://") || source.starts_with("http://");
        if !is_url && !Templates::is_template(source) {
            self.report(
                path,
                Code::InvalidValue,
                format!("{what} must be an http(s) URL, found \"{source}\""),
                Some("write the whole address, starting with https://".into()),
            );
        }
        self.text(source, path)
    }

    /// The JSON value as written at `path` (for kinds kept in Cloud API form).
    fn raw_json(&self, path: &YamlPath) -> Option<Value> {
        self.file.node(path).map(|n| n.to_json())
    }

    fn json(&mut self, value: &Value, path: &YamlPath) -> JsonTemplate {
        match value {
            Value::Null => JsonTemplate::Null,
            Value::Bool(b) => JsonTemplate::Bool(*b),
            Value::Number(n) => JsonTemplate::Number(n.clone()),
            Value::String(s) => JsonTemplate::Text(self.text(s, path)),
            Value::Array(items) => JsonTemplate::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.json(v, &path.index(i)))
                    .collect(),
            ),
            Value::Object(map) => JsonTemplate::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.json(v, &path.key(k))))
                    .collect(),
            ),
        }
    }

    // ----- kinds -----

    fn say(&mut self, raw: &RawSay, path: &YamlPath) -> Vec<TextMessage> {
        let one = |ctx: &mut Self, item: &RawTextItem, p: &YamlPath| match item {
            RawTextItem::Text(t) => TextMessage {
                text: ctx.limited(t, p, limits::TEXT_BODY, "the text"),
                preview_url: false,
            },
            RawTextItem::Rich(r) => TextMessage {
                text: ctx.limited(&r.text, &p.key("text"), limits::TEXT_BODY, "the text"),
                preview_url: r.preview_url.unwrap_or(false),
            },
        };
        match raw {
            RawSay::Text(t) => vec![one(self, &RawTextItem::Text(t.clone()), path)],
            RawSay::Rich(r) => vec![one(self, &RawTextItem::Rich(r.clone()), path)],
            RawSay::Many(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| one(self, item, &path.index(i)))
                .collect(),
        }
    }

    fn media(&mut self, kind: MediaKind, raw: &RawMedia, path: &YamlPath) -> Media {
        let obj = match raw {
            RawMedia::Link(link) => {
                return Media {
                    source: MediaSource::Link(self.url(link, path, "a media link")),
                    caption: None,
                    filename: None,
                };
            }
            RawMedia::Full(obj) => obj,
        };
        let source = match (&obj.link, &obj.id) {
            (Some(link), None) => {
                MediaSource::Link(self.url(link, &path.key("link"), "a media link"))
            }
            (None, Some(id)) => MediaSource::Id(self.text(id, &path.key("id"))),
            (Some(_), Some(_)) => {
                self.report(
                    path,
                    Code::InvalidValue,
                    "give `link` or `id`, not both",
                    Some("`link` is a public https URL of the file, `id` a file uploaded with the Media API; keep one".into()),
                );
                MediaSource::Id(Text::Static(String::new()))
            }
            (None, None) => {
                self.report(
                    path,
                    Code::MissingField,
                    format!("the {} needs a `link` or an `id`", kind.name()),
                    Some("add `link:` with a public https URL of the file, or `id:` of a file uploaded with the Media API".into()),
                );
                MediaSource::Id(Text::Static(String::new()))
            }
        };
        let caption = obj.caption.as_ref().map(|c| {
            if matches!(kind, MediaKind::Audio | MediaKind::Sticker) {
                self.report(
                    &path.key("caption"),
                    Code::InvalidValue,
                    format!("WhatsApp shows no caption on {} messages", kind.name()),
                    Some("send the text in a say node instead".into()),
                );
            }
            self.limited(c, &path.key("caption"), limits::CAPTION, "the caption")
        });
        let filename = obj.filename.as_ref().map(|f| {
            if kind != MediaKind::Document {
                self.diags.push(
                    self.file
                        .diag_at_key(
                            &path.key("filename"),
                            Code::MisplacedKey,
                            format!("`filename` has no effect on {} messages", kind.name()),
                        )
                        .with_hint("only documents show a file name"),
                );
            }
            self.text(f, &path.key("filename"))
        });
        Media {
            source,
            caption,
            filename,
        }
    }

    fn header(&mut self, raw: &RawHeader, path: &YamlPath) -> Header {
        match raw {
            RawHeader::Text(t) | RawHeader::Rich(RawRichHeader::Text(t)) => {
                let p = if matches!(raw, RawHeader::Text(_)) {
                    path.clone()
                } else {
                    path.key("text")
                };
                Header::Text(self.limited(t, &p, limits::HEADER, "the header"))
            }
            RawHeader::Rich(RawRichHeader::Image(m)) => Header::Media(
                MediaKind::Image,
                self.media(MediaKind::Image, m, &path.key("image")),
            ),
            RawHeader::Rich(RawRichHeader::Video(m)) => Header::Media(
                MediaKind::Video,
                self.media(MediaKind::Video, m, &path.key("video")),
            ),
            RawHeader::Rich(RawRichHeader::Document(m)) => Header::Media(
                MediaKind::Document,
                self.media(MediaKind::Document, m, &path.key("document")),
            ),
        }
    }

    fn retry(
        &mut self,
        retries: Option<u32>,
        reprompt: &Option<String>,
        on_fail: &Option<RawTarget>,
        path: &YamlPath,
    ) -> Retry {
        Retry {
            retries: retries.unwrap_or(DEFAULT_RETRIES),
            reprompt: reprompt
                .as_ref()
                .map(|r| self.limited(r, &path.key("reprompt"), limits::TEXT_BODY, "the reprompt")),
            on_fail: on_fail
                .as_ref()
                .map(|t| self.target(t, &path.key("on_fail"))),
        }
    }

    fn buttons(&mut self, raw: &RawButtons, path: &YamlPath) -> Buttons {
        let header = raw
            .header
            .as_ref()
            .map(|h| self.header(h, &path.key("header")));
        let body = self.limited(
            &raw.body,
            &path.key("body"),
            limits::INTERACTIVE_BODY,
            "the body",
        );
        let footer = self.limited_opt(
            &raw.footer,
            &path.key("footer"),
            limits::FOOTER,
            "the footer",
        );
        let mut ids = Vec::new();
        let mut titles = Vec::new();
        let mut buttons = Vec::new();
        for (i, b) in raw.buttons.iter().enumerate() {
            let p = path.key("buttons").index(i);
            self.unique(&mut ids, &b.id, &p.key("id"), "id");
            self.check_id(&b.id, &p.key("id"), limits::BUTTON_ID);
            if !Templates::is_template(&b.title) {
                self.unique(&mut titles, &normalize(&b.title), &p.key("title"), "title");
            }
            buttons.push(Choice {
                id: b.id.clone(),
                title: self.limited(
                    &b.title,
                    &p.key("title"),
                    limits::BUTTON_TITLE,
                    "the button title",
                ),
                description: None,
            });
        }
        let retry = self.retry(raw.retries, &raw.reprompt, &raw.on_fail, path);
        Buttons {
            header,
            body,
            footer,
            buttons,
            retry,
        }
    }

    fn unique(&mut self, seen: &mut Vec<String>, value: &str, path: &YamlPath, what: &str) {
        if seen.iter().any(|s| s == value) {
            self.report(
                path,
                Code::DuplicateId,
                format!("{what} \"{value}\" is used twice in this message"),
                Some(format!(
                    "each {what} must be unique so the reply can be told apart"
                )),
            );
        } else {
            seen.push(value.to_string());
        }
    }

    fn check_id(&mut self, id: &str, path: &YamlPath, max: usize) {
        let n = id.chars().count();
        if n == 0 {
            self.report(
                path,
                Code::InvalidValue,
                "the id is empty",
                Some("give each choice a short code; `save` stores it when the user picks the choice".into()),
            );
        } else if n > max {
            self.report(
                path,
                Code::WhatsappLimit,
                format!("the id is {n} characters; WhatsApp allows at most {max}"),
                Some("the user never sees ids; use a short code like size_large".into()),
            );
        }
    }

    fn list(&mut self, raw: &RawList, path: &YamlPath) -> List {
        let header = self.limited_opt(
            &raw.header,
            &path.key("header"),
            limits::HEADER,
            "the header",
        );
        let body = self.limited(&raw.body, &path.key("body"), limits::LIST_BODY, "the body");
        let footer = self.limited_opt(
            &raw.footer,
            &path.key("footer"),
            limits::FOOTER,
            "the footer",
        );
        let button = self.limited(
            &raw.button,
            &path.key("button"),
            limits::LIST_BUTTON,
            "the list button",
        );
        let total: usize = raw.sections.iter().map(|s| s.rows.len()).sum();
        if total > limits::LIST_ROWS {
            self.report(
                &path.key("sections"),
                Code::WhatsappLimit,
                format!(
                    "{total} rows in all; WhatsApp allows at most {} rows in a list",
                    limits::LIST_ROWS
                ),
                Some("split the choices over two list nodes, e.g. with a \"More…\" row".into()),
            );
        }
        let mut ids = Vec::new();
        let mut sections = Vec::new();
        for (s, section) in raw.sections.iter().enumerate() {
            let sp = path.key("sections").index(s);
            if raw.sections.len() > 1 && section.title.is_none() {
                self.report(
                    &sp,
                    Code::MissingField,
                    "a list with several sections needs a `title` on each",
                    Some(format!("add `title:` (at most {} characters) to each section, or merge them into one", limits::SECTION_TITLE)),
                );
            }
            let title = section.title.as_ref().map(|t| {
                self.limited(
                    t,
                    &sp.key("title"),
                    limits::SECTION_TITLE,
                    "the section title",
                )
            });
            let mut rows = Vec::new();
            for (r, row) in section.rows.iter().enumerate() {
                let rp = sp.key("rows").index(r);
                self.unique(&mut ids, &row.id, &rp.key("id"), "id");
                self.check_id(&row.id, &rp.key("id"), limits::ROW_ID);
                rows.push(Choice {
                    id: row.id.clone(),
                    title: self.limited(
                        &row.title,
                        &rp.key("title"),
                        limits::ROW_TITLE,
                        "the row title",
                    ),
                    description: row.description.as_ref().map(|d| {
                        self.limited(
                            d,
                            &rp.key("description"),
                            limits::ROW_DESCRIPTION,
                            "the row description",
                        )
                    }),
                });
            }
            sections.push(Section { title, rows });
        }
        let retry = self.retry(raw.retries, &raw.reprompt, &raw.on_fail, path);
        List {
            header,
            body,
            footer,
            button,
            sections,
            retry,
        }
    }

    fn ask(&mut self, raw: &RawAsk, path: &YamlPath) -> Ask {
        let text = self.limited(
            &raw.text,
            &path.key("text"),
            limits::TEXT_BODY,
            "the question",
        );
        let expect = match &raw.expect {
            None => Expect::Kind(ExpectKind::Text),
            Some(RawExpect::Kind(k)) => Expect::Kind(*k),
            Some(RawExpect::Regex(r)) => {
                let p = path.key("expect").key("regex");
                // The whole answer must match, not a part of it.
                let re = self
                    .regex(&r.regex, &p, false)
                    .and_then(|_| self.regex(&format!("^(?:{})$", r.regex), &p, false))
                    .unwrap_or_else(never_matches);
                Expect::Regex(re)
            }
        };
        let validate = raw
            .validate
            .as_ref()
            .map(|v| self.expr(v, &path.key("validate"), &["answer"]));
        let retry = self.retry(raw.retries, &raw.reprompt, &raw.on_fail, path);
        Ask {
            text,
            expect,
            validate,
            retry,
        }
    }

    fn template(
        &mut self,
        raw: &RawTemplate,
        path: &YamlPath,
        waits_for_reply: bool,
    ) -> TemplateMessage {
        let n = raw.name.chars().count();
        if n > limits::TEMPLATE_NAME {
            self.report(
                &path.key("name"),
                Code::WhatsappLimit,
                format!(
                    "the template name is {n} characters; WhatsApp allows at most {}",
                    limits::TEMPLATE_NAME
                ),
                Some("write the name exactly as approved in the WhatsApp Manager".into()),
            );
        } else if n == 0
            || !raw
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            self.report(
                &path.key("name"),
                Code::InvalidValue,
                format!("\"{}\" is not a template name", raw.name),
                Some("template names are lowercase letters, digits and _, as approved in the WhatsApp Manager".into()),
            );
        }
        if raw.language.trim().is_empty() {
            self.report(
                &path.key("language"),
                Code::InvalidValue,
                "the language code is empty",
                Some("e.g. en_US or de".into()),
            );
        }
        let mut components = Vec::new();
        if let Some(body) = &raw.body {
            let parameters = body
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    JsonTemplate::Object(vec![
                        (
                            "type".into(),
                            JsonTemplate::Text(Text::Static("text".into())),
                        ),
                        (
                            "text".into(),
                            JsonTemplate::Text(self.text(t, &path.key("body").index(i))),
                        ),
                    ])
                })
                .collect();
            components.push(JsonTemplate::Object(vec![
                (
                    "type".into(),
                    JsonTemplate::Text(Text::Static("body".into())),
                ),
                ("parameters".into(), JsonTemplate::Array(parameters)),
            ]));
        }
        if let Some(list) = &raw.components {
            if raw.body.is_some() && list.iter().any(|c| c.kind == TemplateComponentKind::Body) {
                self.report(
                    &path.key("body"),
                    Code::InvalidValue,
                    "give the body parameters once: in `body` or in `components`",
                    Some("remove `body`, or the `type: body` entry of `components`".into()),
                );
            }
            let p = path.key("components");
            if let Some(Value::Array(items)) = self.raw_json(&p) {
                for (i, c) in items.iter().enumerate() {
                    components.push(self.json(c, &p.index(i)));
                }
            }
        }
        TemplateMessage {
            name: raw.name.clone(),
            language: raw.language.clone(),
            components,
            waits_for_reply,
        }
    }

    fn location(&mut self, raw: &RawLocation, path: &YamlPath) -> Location {
        let number = |ctx: &mut Self, n: &RawNumber, key: &str, max: f64| match n {
            RawNumber::Number(v) => {
                if !(-max..=max).contains(v) {
                    ctx.report(
                        &path.key(key),
                        Code::InvalidValue,
                        format!("{key} {v} is outside -{max}..{max}"),
                        Some("latitude is -90..90 and longitude -180..180 degrees; check they are not swapped".into()),
                    );
                }
                Number::Fixed(*v)
            }
            RawNumber::Template(t) => Number::Template(ctx.text(t, &path.key(key))),
        };
        let latitude = number(self, &raw.latitude, "latitude", 90.0);
        let longitude = number(self, &raw.longitude, "longitude", 180.0);
        Location {
            latitude,
            longitude,
            name: raw.name.as_ref().map(|n| self.text(n, &path.key("name"))),
            address: raw
                .address
                .as_ref()
                .map(|a| self.text(a, &path.key("address"))),
        }
    }

    fn cta_url(&mut self, raw: &RawCtaUrl, path: &YamlPath) -> CtaUrl {
        CtaUrl {
            header: raw
                .header
                .as_ref()
                .map(|h| self.header(h, &path.key("header"))),
            body: self.limited(
                &raw.body,
                &path.key("body"),
                limits::INTERACTIVE_BODY,
                "the body",
            ),
            footer: self.limited_opt(
                &raw.footer,
                &path.key("footer"),
                limits::FOOTER,
                "the footer",
            ),
            button: self.limited(
                &raw.button,
                &path.key("button"),
                limits::CTA_DISPLAY_TEXT,
                "the button label",
            ),
            url: self.url(&raw.url, &path.key("url"), "the url"),
        }
    }

    fn whatsapp_flow(&mut self, raw: &RawWhatsAppFlow, path: &YamlPath) -> WhatsAppFlow {
        let flow = match (&raw.flow_id, &raw.flow_name) {
            (Some(id), None) => WhatsAppFlowRef::Id(id.clone()),
            (None, Some(name)) => WhatsAppFlowRef::Name(name.clone()),
            (Some(_), Some(_)) => {
                self.report(
                    path,
                    Code::InvalidValue,
                    "give `flow_id` or `flow_name`, not both",
                    Some(
                        "keep one: `flow_id` is the published Flow's id, `flow_name` its name"
                            .into(),
                    ),
                );
                WhatsAppFlowRef::Id(String::new())
            }
            (None, None) => {
                self.report(
                    path,
                    Code::MissingField,
                    "a whatsapp_flow needs `flow_id` or `flow_name`",
                    Some("add `flow_id:` (from the WhatsApp Manager) or `flow_name:`".into()),
                );
                WhatsAppFlowRef::Id(String::new())
            }
        };
        let data = raw
            .data
            .as_ref()
            .and_then(|_| self.raw_json(&path.key("data")))
            .map(|d| self.json(&d, &path.key("data")));
        WhatsAppFlow {
            header: self.limited_opt(
                &raw.header,
                &path.key("header"),
                limits::HEADER,
                "the header",
            ),
            body: self.limited(
                &raw.body,
                &path.key("body"),
                limits::INTERACTIVE_BODY,
                "the body",
            ),
            footer: self.limited_opt(
                &raw.footer,
                &path.key("footer"),
                limits::FOOTER,
                "the footer",
            ),
            flow,
            cta: self.limited(
                &raw.cta,
                &path.key("cta"),
                limits::FLOW_CTA,
                "the button label",
            ),
            mode: raw.mode.unwrap_or(WhatsAppFlowMode::Published),
            flow_token: raw
                .flow_token
                .as_ref()
                .map(|t| self.text(t, &path.key("flow_token"))),
            screen: raw.screen.clone(),
            data,
        }
    }

    fn set(
        &mut self,
        raw: &IndexMap<String, RawSetValue>,
        path: &YamlPath,
    ) -> Vec<(String, SetValue)> {
        let mut out = Vec::new();
        for (name, value) in raw {
            let p = path.key(name);
            if !is_identifier(name) {
                self.diags.push(
                    self.file
                        .diag_at_key(
                            &p,
                            Code::InvalidValue,
                            format!("\"{name}\" is not a valid variable name"),
                        )
                        .with_hint(
                            "use letters, digits and _, not starting with a digit, e.g. first_name",
                        ),
                );
            }
            let value = match value {
                RawSetValue::Bool(b) => SetValue::Literal(Value::Bool(*b)),
                RawSetValue::Number(n) => SetValue::Literal(Value::Number(n.clone())),
                RawSetValue::Expression(e) => SetValue::Expr(self.expr(e, &p, &[])),
            };
            out.push((name.clone(), value));
        }
        out
    }

    fn http(&mut self, raw: &RawHttp, path: &YamlPath) -> Http {
        let url = self.url(&raw.url, &path.key("url"), "the url");
        let headers = raw
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), self.text(v, &path.key("headers").key(k))))
            .collect();
        let query = raw
            .query
            .iter()
            .map(|(k, v)| (k.clone(), self.text(v, &path.key("query").key(k))))
            .collect();
        let body = match (&raw.json, &raw.form, &raw.body) {
            (Some(_), None, None) => {
                let json = self.raw_json(&path.key("json")).unwrap_or(Value::Null);
                HttpBody::Json(self.json(&json, &path.key("json")))
            }
            (None, Some(form), None) => HttpBody::Form(
                form.iter()
                    .map(|(k, v)| (k.clone(), self.text(v, &path.key("form").key(k))))
                    .collect(),
            ),
            (None, None, Some(body)) => HttpBody::Text(self.text(body, &path.key("body"))),
            (None, None, None) => HttpBody::None,
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                self.report(
                    path,
                    Code::InvalidValue,
                    "give one of `json`, `form` and `body`",
                    Some("keep one: `json` sends a JSON body, `form` a form-encoded one, `body` text as written".into()),
                );
                HttpBody::None
            }
        };
        let timeout = raw.timeout.as_ref().map_or(DEFAULT_HTTP_TIMEOUT, |t| {
            let p = path.key("timeout");
            let d = self.duration(t, &p);
            if d > MAX_HTTP_TIMEOUT || d.is_zero() {
                self.report(
                    &p,
                    Code::InvalidValue,
                    format!(
                        "an http timeout must be more than 0s and at most {}s, found {}",
                        MAX_HTTP_TIMEOUT.as_secs(),
                        t.trim()
                    ),
                    Some("the user's next messages wait for the call; a slow backend should answer at once and send the result later".into()),
                );
            }
            d
        });
        let method = raw.method.unwrap_or(HttpMethod::Get);
        let retries = match raw.retries {
            None if method.idempotent() => DEFAULT_HTTP_RETRIES,
            None | Some(0) => 0,
            Some(n) if !method.idempotent() => {
                self.report(
                    &path.key("retries"),
                    Code::InvalidValue,
                    format!(
                        "a {} request is never retried: sending it twice may do it twice",
                        method.as_str()
                    ),
                    Some(
                        "remove `retries`, or make the backend's call idempotent and use PUT"
                            .into(),
                    ),
                );
                n
            }
            Some(n) if n > MAX_HTTP_RETRIES => {
                self.report(
                    &path.key("retries"),
                    Code::InvalidValue,
                    format!("at most {MAX_HTTP_RETRIES} retries, found {n}"),
                    None,
                );
                n
            }
            Some(n) => n,
        };
        Http {
            method,
            url,
            headers,
            query,
            body,
            timeout,
            retries,
        }
    }

    fn handover(&mut self, raw: Option<&RawHandover>, path: &YamlPath) -> Handover {
        let Some(raw) = raw else {
            return Handover {
                say: None,
                queue: None,
                timeout: None,
                on_timeout: None,
                on_unavailable: None,
            };
        };
        if raw.on_timeout.is_some() && raw.timeout.is_none() {
            self.diags.push(
                self.file
                    .diag_at_key(
                        &path.key("on_timeout"),
                        Code::MisplacedKey,
                        "`on_timeout` has no effect without `timeout`",
                    )
                    .with_hint("add e.g. timeout: 10m"),
            );
        }
        Handover {
            say: self.limited_opt(&raw.say, &path.key("say"), limits::TEXT_BODY, "the text"),
            queue: raw.queue.clone(),
            timeout: raw
                .timeout
                .as_ref()
                .map(|t| self.duration(t, &path.key("timeout"))),
            on_timeout: raw
                .on_timeout
                .as_ref()
                .map(|t| self.target(t, &path.key("on_timeout"))),
            on_unavailable: raw
                .on_unavailable
                .as_ref()
                .map(|t| self.target(t, &path.key("on_unavailable"))),
        }
    }
}

/// Stands in for a regex that did not compile (the bot is not built then anyway).
fn never_matches() -> regex::Regex {
    regex::Regex::new(r"[^\s\S]").unwrap_or_else(|_| unreachable!("a constant regex compiles"))
}

/// Stands in for a node that broke the schema, so targets to it still resolve.
fn placeholder_node(id: &str, pos: Pos) -> Node {
    Node {
        id: id.to_string(),
        pos,
        kind: NodeKind::Set(Vec::new()),
        next: Next::Goto(Target::End),
        save: None,
        on_error: None,
        on_window_closed: None,
    }
}

/// Why this build cannot run a node of this kind (the hint of its `not_supported`
/// error), or `None` when it can. The one place that decides which kinds run; the
/// engine's `Host` seam for the others is for the versions that will.
fn not_runnable(kind: &NodeKind) -> Option<&'static str> {
    match kind {
        NodeKind::Handover(_) => Some(
            "tell the user how to reach a person with a `say` node for now; handover comes when agents are supported",
        ),
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
        | NodeKind::Payload(_)
        | NodeKind::Set(_)
        | NodeKind::Http(_)
        | NodeKind::Script(_)
        | NodeKind::Wait(_)
        | NodeKind::Call(_)
        | NodeKind::End(_) => None,
    }
}

/// What to do about a regex that does not compile, from the regex crate's complaint.
fn regex_hint(source: &str, message: &str) -> String {
    let hint = if message.contains("look-around") {
        "look-ahead and look-behind are not supported; match the text itself, or check it in `validate:`"
    } else if message.contains("unclosed group") {
        "every ( needs a ); write \\( for a literal parenthesis"
    } else if message.contains("unclosed character class") {
        "every [ needs a ]; write \\[ for a literal bracket"
    } else if message.contains("counted repetition") {
        "a repetition like {2,4} needs its closing }; write \\{ for a literal brace"
    } else if message.contains("repetition operator missing expression") {
        "*, + and ? repeat what comes before them; write \\* \\+ \\? for the characters themselves"
    } else if message.contains("escape") {
        "write a literal backslash as \\\\; in YAML, quote regexes with single quotes so backslashes stay as written"
    } else if message.contains("size limit") {
        "the regex is too large once compiled; simplify it, e.g. fewer or smaller repetitions"
    } else if source.contains("(?<") {
        "name groups as (?P<name>...)"
    } else {
        "regular expressions use Rust's regex syntax; quote them with single quotes in YAML"
    };
    hint.to_string()
}

/// What to do about a template that does not compile.
fn template_hint(source: &str) -> String {
    let unclosed =
        |open: &str, close: &str| source.matches(open).count() > source.matches(close).count();
    if unclosed("{{", "}}") {
        "every {{ needs a closing }}, as in {{ vars.name }}".into()
    } else if unclosed("{%", "%}") {
        "every {% needs a closing %}, as in {% if vars.vip %}...{% endif %}".into()
    } else {
        "values are written {{ vars.name }} and statements {% if ... %}...{% endif %}; for a literal {{ write {{ '{{' }}".into()
    }
}

/// What to do about a text longer than WhatsApp allows, by what the text is.
fn limit_hint(what: &str) -> String {
    match what {
        "the button title" => "shorten the title; say more in the body".into(),
        "the row title" => "shorten the title; put details in the row's `description`".into(),
        "the text" | "the question" | "the reprompt" | "the body" | "the caption" => {
            "shorten it, or send the rest in a second node".into()
        }
        other => format!("shorten {other}"),
    }
}

pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Characters outside `{{ }}`, `{% %}` and `{# #}`: a lower bound of the rendered length.
fn literal_chars(source: &str) -> usize {
    let mut count = 0;
    let mut rest = source;
    loop {
        let next = ["{{", "{%", "{#"]
            .iter()
            .filter_map(|open| rest.find(open).map(|i| (i, *open)))
            .min();
        match next {
            None => return count + rest.chars().count(),
            Some((i, open)) => {
                count += rest[..i].chars().count();
                let close = match open {
                    "{{" => "}}",
                    "{%" => "%}",
                    _ => "#}",
                };
                match rest[i + 2..].find(close) {
                    Some(j) => rest = &rest[i + 2 + j + 2..],
                    None => return count,
                }
            }
        }
    }
}

/// Parses `30s`, `5m`, `2h`, `7d`, `1h30m`, `500ms`.
pub fn parse_duration(source: &str) -> Result<Duration, String> {
    let trimmed = source.trim();
    if trimmed.is_empty() {
        return Err("the duration is empty".into());
    }
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("\"{trimmed}\" has no unit"));
    }
    humantime::parse_duration(trimmed).map_err(|e| format!("\"{trimmed}\" is not a duration ({e})"))
}

/// Why a file the bot names cannot be used: the code, the message and the hint.
pub type BotFileError = (Code, String, String);

/// Checks that a file named in the bot (a script, a transformer) exists inside the bot
/// folder, and returns its real path.
pub fn find_bot_file(dir: &Path, rel: &str) -> Result<std::path::PathBuf, BotFileError> {
    bot_path::resolve(dir, Path::new(rel)).map_err(|problem| match problem.outside_message(rel) {
        Some((message, hint)) => (Code::OutsideBotFolder, message, hint),
        None => (
            Code::NotFound,
            format!("no file \"{rel}\" in the bot folder"),
            "paths are relative to the bot folder".into(),
        ),
    })
}

/// Reads a file named in the bot (a script), relative to the bot folder and inside it.
pub fn read_bot_file(dir: &Path, rel: &str) -> Result<String, BotFileError> {
    let path = find_bot_file(dir, rel)?;
    let too_large = |size: u64| {
        (
            Code::FileTooLarge,
            format!(
                "\"{rel}\" is {:.1} MiB; Parlance reads files of at most {} MiB",
                size as f64 / (1024.0 * 1024.0),
                crate::source::MAX_FILE_BYTES / (1024 * 1024)
            ),
            "split the file, or move what is large out of it".to_string(),
        )
    };
    let io = |e: std::io::Error| {
        (
            Code::Io,
            format!("cannot read \"{rel}\": {e}"),
            "check the file's permissions".to_string(),
        )
    };
    let meta = std::fs::metadata(&path).map_err(io)?;
    if meta.len() > crate::source::MAX_FILE_BYTES {
        return Err(too_large(meta.len()));
    }
    std::fs::read_to_string(&path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_chars_skip_template_tags() {
        assert_eq!(literal_chars("Hi {{ contact.name }}!"), 4);
        assert_eq!(literal_chars("{% if x %}ab{% endif %}"), 2);
        assert_eq!(literal_chars("plain"), 5);
        assert_eq!(literal_chars("a {{ unclosed"), 2);
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
