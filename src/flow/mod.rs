//! The compiled bot: immutable, resolved, ready to run.
//!
//! Architecture Invariant: no serde, no files, no network. Every target is a resolved
//! [`NodeRef`] (a dangling target cannot be represented), every template and expression
//! is compiled into its flow's [`Flow::templates`], every regex is compiled. Sessions store flow and
//! node *ids* (strings), never these indices, so they survive a reload.

pub mod filters;
pub mod limits;
mod normalize;
pub mod settings;
pub mod templates;

pub use normalize::normalize;
pub use settings::{Settings, Transformers, TurnLimits, WhatsAppSettings};
pub use templates::{Expr, Templates, Text};

use crate::diag::Pos;
pub use crate::spec::config::Overflow;
pub use crate::spec::flow::{ExpectKind, HttpMethod, TemplateButtonKind, WhatsAppFlowMode};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// How often a waiting node asks again after an unusable answer, unless it says.
pub const DEFAULT_RETRIES: u32 = 2;

/// Index of a flow in [`Bot::flows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowIdx(pub u32);

/// A node of a flow: indices into [`Bot::flows`] and [`Flow::nodes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeRef {
    pub flow: FlowIdx,
    pub node: u32,
}

/// Where the conversation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Node(NodeRef),
    /// End the conversation (or return from a `call`).
    End,
}

/// What follows a node.
#[derive(Debug, Clone)]
pub enum Next {
    Goto(Target),
    /// The first branch whose condition is true wins; `otherwise` when none is.
    Branch {
        branches: Vec<(Expr, Target)>,
        otherwise: Target,
    },
}

/// A whole bot, compiled.
#[derive(Debug)]
pub struct Bot {
    pub settings: Settings,
    /// Runs the bot's scripts, with its `scripts:` limits.
    pub scripts: crate::script::Sandbox,
    /// The endpoint transformers, compiled (none unless `transformers:` names them).
    pub transformers: crate::transform::Transformers,
    pub entry: FlowIdx,
    pub fallback: FlowIdx,
    pub flows: Vec<Flow>,
    flow_ids: HashMap<String, FlowIdx>,
    /// Some node is a `script` node.
    script_nodes: bool,
    /// The variables declared personal data (`pii: true` beside their `save`).
    pii: std::collections::HashSet<String>,
}

impl Bot {
    pub fn new(
        settings: Settings,
        scripts: crate::script::Sandbox,
        entry: FlowIdx,
        fallback: FlowIdx,
        flows: Vec<Flow>,
    ) -> Self {
        let flow_ids = flows
            .iter()
            .enumerate()
            .map(|(i, f)| (f.id.clone(), FlowIdx(i as u32)))
            .collect();
        let script_nodes = flows.iter().any(|f| {
            f.nodes
                .iter()
                .any(|n| matches!(n.kind, NodeKind::Script(_)))
        });
        let pii = flows
            .iter()
            .flat_map(|f| &f.nodes)
            .filter(|n| n.pii)
            .filter_map(|n| n.save.clone())
            .collect();
        Bot {
            script_nodes,
            pii,
            settings,
            scripts,
            transformers: crate::transform::Transformers::default(),
            entry,
            fallback,
            flows,
            flow_ids,
        }
    }

    pub fn flow(&self, idx: FlowIdx) -> &Flow {
        &self.flows[idx.0 as usize]
    }

    pub fn node(&self, r: NodeRef) -> &Node {
        &self.flow(r.flow).nodes[r.node as usize]
    }

    pub fn flow_by_id(&self, id: &str) -> Option<FlowIdx> {
        self.flow_ids.get(id).copied()
    }

    /// Finds a node by the ids a session stored.
    pub fn node_by_id(&self, flow: &str, node: &str) -> Option<NodeRef> {
        let f = self.flow_by_id(flow)?;
        let n = self.flow(f).node_index(node)?;
        Some(NodeRef { flow: f, node: n })
    }

    pub fn node_count(&self) -> usize {
        self.flows.iter().map(|f| f.nodes.len()).sum()
    }

    /// Whether variable `name` is declared personal data (`pii: true`): masked where
    /// variables are shown (the session trace).
    pub fn is_pii(&self, name: &str) -> bool {
        self.pii.contains(name)
    }

    /// Whether any variable is declared personal data.
    pub fn has_pii(&self) -> bool {
        !self.pii.is_empty()
    }

    /// Whether a turn may run a script (a `script` node or a transformer): such a
    /// turn may take up to the scripts' wall-time limit of CPU.
    pub fn runs_scripts(&self) -> bool {
        let t = &self.transformers;
        t.input.is_some() || t.output.is_some() || t.finished.is_some() || self.script_nodes
    }
}

/// One flow.
#[derive(Debug)]
pub struct Flow {
    pub id: String,
    /// The file it was written in, relative to the bot folder.
    pub file: PathBuf,
    pub description: Option<String>,
    pub triggers: Vec<Trigger>,
    pub interruptible: bool,
    /// In the order written; the first is where the flow starts.
    pub nodes: Vec<Node>,
    /// The compiled templates and expressions of this flow's nodes.
    pub templates: Templates,
    node_ids: HashMap<String, u32>,
}

impl Flow {
    pub fn new(
        id: String,
        file: PathBuf,
        description: Option<String>,
        triggers: Vec<Trigger>,
        interruptible: bool,
        nodes: Vec<Node>,
        templates: Templates,
    ) -> Self {
        let node_ids = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i as u32))
            .collect();
        Flow {
            id,
            file,
            description,
            triggers,
            interruptible,
            nodes,
            templates,
            node_ids,
        }
    }

    pub fn node_index(&self, id: &str) -> Option<u32> {
        self.node_ids.get(id).copied()
    }
}

/// What starts a flow.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// Normalized words (lowercase, no accents, single spaces).
    Keywords(Vec<String>),
    Regex(regex::Regex),
    Reply(String),
}

/// One node.
#[derive(Debug)]
pub struct Node {
    pub id: String,
    /// Where the node is written, for runtime errors.
    pub pos: Pos,
    pub kind: NodeKind,
    pub next: Next,
    pub save: Option<String>,
    /// What `save` stores is personal data (`pii: true`): masked in the session trace.
    pub pii: bool,
    pub on_error: Option<Target>,
    pub on_window_closed: Option<TemplateMessage>,
}

/// What a node does. A closed set: the engine matches on it exhaustively.
#[derive(Debug)]
pub enum NodeKind {
    Say(Vec<TextMessage>),
    Media(MediaKind, Media),
    Buttons(Buttons),
    List(List),
    Ask(Ask),
    Template(TemplateMessage),
    Location(Location),
    RequestLocation(RequestLocation),
    /// Contact cards in Cloud API form, strings templated.
    Contacts(Vec<JsonTemplate>),
    CtaUrl(CtaUrl),
    WhatsAppFlow(WhatsAppFlow),
    React(Text),
    /// A Cloud API message object, strings templated.
    Payload(JsonTemplate),
    Set(Vec<(String, SetValue)>),
    Http(Http),
    Script(Script),
    Handover(Handover),
    Wait(Duration),
    /// Run the flow from this node, then continue at `next`.
    Call(NodeRef),
    /// End, optionally saying goodbye first.
    End(Vec<TextMessage>),
}

impl NodeKind {
    /// The kind key as written in YAML.
    pub fn name(&self) -> &'static str {
        match self {
            NodeKind::Say(_) => "say",
            NodeKind::Media(kind, _) => kind.name(),
            NodeKind::Buttons(_) => "buttons",
            NodeKind::List(_) => "list",
            NodeKind::Ask(_) => "ask",
            NodeKind::Template(_) => "template",
            NodeKind::Location(_) => "location",
            NodeKind::RequestLocation(_) => "request_location",
            NodeKind::Contacts(_) => "contacts",
            NodeKind::CtaUrl(_) => "cta_url",
            NodeKind::WhatsAppFlow(_) => "whatsapp_flow",
            NodeKind::React(_) => "react",
            NodeKind::Payload(_) => "payload",
            NodeKind::Set(_) => "set",
            NodeKind::Http(_) => "http",
            NodeKind::Script(_) => "script",
            NodeKind::Handover(_) => "handover",
            NodeKind::Wait(_) => "wait",
            NodeKind::Call(_) => "call",
            NodeKind::End(_) => "end",
        }
    }

    /// How a waiting node handles unusable answers; `None` for kinds without retries.
    pub fn retry(&self) -> Option<&Retry> {
        match self {
            NodeKind::Buttons(b) => Some(&b.retry),
            NodeKind::List(l) => Some(&l.retry),
            NodeKind::Ask(a) => Some(&a.retry),
            NodeKind::RequestLocation(r) => Some(&r.retry),
            NodeKind::Say(_)
            | NodeKind::Media(..)
            | NodeKind::Template(_)
            | NodeKind::Location(_)
            | NodeKind::Contacts(_)
            | NodeKind::CtaUrl(_)
            | NodeKind::WhatsAppFlow(_)
            | NodeKind::React(_)
            | NodeKind::Payload(_)
            | NodeKind::Set(_)
            | NodeKind::Http(_)
            | NodeKind::Script(_)
            | NodeKind::Handover(_)
            | NodeKind::Wait(_)
            | NodeKind::Call(_)
            | NodeKind::End(_) => None,
        }
    }

    /// Whether the node stops the turn to wait for the user.
    pub fn waits(&self) -> bool {
        match self {
            NodeKind::Buttons(_)
            | NodeKind::List(_)
            | NodeKind::Ask(_)
            | NodeKind::RequestLocation(_)
            | NodeKind::WhatsAppFlow(_)
            | NodeKind::Handover(_) => true,
            NodeKind::Template(t) => t.waits_for_reply,
            NodeKind::Say(_)
            | NodeKind::Media(..)
            | NodeKind::Location(_)
            | NodeKind::Contacts(_)
            | NodeKind::CtaUrl(_)
            | NodeKind::React(_)
            | NodeKind::Payload(_)
            | NodeKind::Set(_)
            | NodeKind::Http(_)
            | NodeKind::Script(_)
            | NodeKind::Wait(_)
            | NodeKind::Call(_)
            | NodeKind::End(_) => false,
        }
    }

    /// Whether the node produces a value for `save` (an answer, a reply, a response); on
    /// any other kind `save` is a `misplaced_key` warning.
    pub fn saves(&self) -> bool {
        match self {
            NodeKind::Buttons(_)
            | NodeKind::List(_)
            | NodeKind::Ask(_)
            | NodeKind::RequestLocation(_)
            | NodeKind::WhatsAppFlow(_)
            | NodeKind::Template(_)
            | NodeKind::Http(_)
            | NodeKind::Handover(_) => true,
            NodeKind::Say(_)
            | NodeKind::Media(..)
            | NodeKind::Location(_)
            | NodeKind::Contacts(_)
            | NodeKind::CtaUrl(_)
            | NodeKind::React(_)
            | NodeKind::Payload(_)
            | NodeKind::Set(_)
            | NodeKind::Script(_)
            | NodeKind::Wait(_)
            | NodeKind::Call(_)
            | NodeKind::End(_) => false,
        }
    }

    /// Whether the node may send a free-form message (anything but a template), which
    /// WhatsApp refuses outside the 24-hour window: where `on_window_closed` has an
    /// effect.
    pub fn sends_free_form(&self) -> bool {
        match self {
            NodeKind::Say(_)
            | NodeKind::Media(..)
            | NodeKind::Buttons(_)
            | NodeKind::List(_)
            | NodeKind::Ask(_)
            | NodeKind::Location(_)
            | NodeKind::RequestLocation(_)
            | NodeKind::Contacts(_)
            | NodeKind::CtaUrl(_)
            | NodeKind::WhatsAppFlow(_)
            | NodeKind::React(_)
            | NodeKind::Payload(_)
            // Its `say`, and its goodbye.
            | NodeKind::Handover(_)
            | NodeKind::End(_) => true,
            NodeKind::Template(_)
            | NodeKind::Set(_)
            | NodeKind::Http(_)
            | NodeKind::Script(_)
            | NodeKind::Wait(_)
            | NodeKind::Call(_) => false,
        }
    }
}

#[derive(Debug)]
pub struct TextMessage {
    pub text: Text,
    pub preview_url: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    Document,
    Sticker,
}

impl MediaKind {
    pub fn name(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
            MediaKind::Document => "document",
            MediaKind::Sticker => "sticker",
        }
    }
}

/// A media file: by public link or by uploaded id.
#[derive(Debug)]
pub struct Media {
    pub source: MediaSource,
    pub caption: Option<Text>,
    pub filename: Option<Text>,
}

#[derive(Debug)]
pub enum MediaSource {
    Link(Text),
    Id(Text),
}

#[derive(Debug)]
pub enum Header {
    Text(Text),
    Media(MediaKind, Media),
}

/// What a waiting node does with an answer it cannot use.
#[derive(Debug)]
pub struct Retry {
    pub retries: u32,
    pub reprompt: Option<Text>,
    /// `None`: the bot's fallback flow.
    pub on_fail: Option<Target>,
}

#[derive(Debug)]
pub struct Buttons {
    pub header: Option<Header>,
    pub body: Text,
    pub footer: Option<Text>,
    pub buttons: Vec<Choice>,
    pub retry: Retry,
}

/// A button or list row.
#[derive(Debug)]
pub struct Choice {
    pub id: String,
    pub title: Text,
    pub description: Option<Text>,
}

#[derive(Debug)]
pub struct List {
    pub header: Option<Text>,
    pub body: Text,
    pub footer: Option<Text>,
    pub button: Text,
    pub sections: Vec<Section>,
    pub retry: Retry,
}

#[derive(Debug)]
pub struct Section {
    pub title: Option<Text>,
    pub rows: Vec<Choice>,
}

#[derive(Debug)]
pub struct Ask {
    pub text: Text,
    pub expect: Expect,
    pub validate: Option<Expr>,
    pub retry: Retry,
}

#[derive(Debug)]
pub enum Expect {
    Kind(ExpectKind),
    Regex(regex::Regex),
}

#[derive(Debug)]
pub struct TemplateMessage {
    pub name: String,
    pub language: String,
    /// Cloud API components, strings templated.
    pub components: Vec<JsonTemplate>,
    /// Set when the node has `save`: the template has quick-reply buttons and the bot
    /// waits for one of them.
    pub waits_for_reply: bool,
}

#[derive(Debug)]
pub enum Number {
    Fixed(f64),
    Template(Text),
}

#[derive(Debug)]
pub struct Location {
    pub latitude: Number,
    pub longitude: Number,
    pub name: Option<Text>,
    pub address: Option<Text>,
}

#[derive(Debug)]
pub struct RequestLocation {
    pub body: Text,
    pub retry: Retry,
}

#[derive(Debug)]
pub struct CtaUrl {
    pub header: Option<Header>,
    pub body: Text,
    pub footer: Option<Text>,
    pub button: Text,
    pub url: Text,
}

#[derive(Debug)]
pub enum WhatsAppFlowRef {
    Id(String),
    Name(String),
}

#[derive(Debug)]
pub struct WhatsAppFlow {
    pub header: Option<Text>,
    pub body: Text,
    pub footer: Option<Text>,
    pub flow: WhatsAppFlowRef,
    pub cta: Text,
    pub mode: WhatsAppFlowMode,
    pub flow_token: Option<Text>,
    pub screen: Option<String>,
    pub data: Option<JsonTemplate>,
}

#[derive(Debug)]
pub enum SetValue {
    Literal(serde_json::Value),
    Expr(Expr),
}

#[derive(Debug)]
pub struct Http {
    pub method: HttpMethod,
    pub url: Text,
    pub headers: Vec<(String, Text)>,
    pub query: Vec<(String, Text)>,
    pub body: HttpBody,
    pub timeout: Duration,
    /// Tries after the first (only ever non-zero for idempotent methods).
    pub retries: u32,
}

#[derive(Debug)]
pub enum HttpBody {
    None,
    Json(JsonTemplate),
    Form(Vec<(String, Text)>),
    Text(Text),
}

#[derive(Debug)]
pub struct Script {
    /// Where the code came from: `inline` or the file's path (relative to the bot folder).
    pub origin: String,
    pub program: crate::script::Program,
    /// The variables it assigns as `vars.NAME = …`; `None` when it may set any.
    pub sets: Option<Vec<String>>,
    /// The nodes it names in `next_node("…")`: where it may go instead of `next`.
    pub targets: Vec<NodeRef>,
    /// Where the script is written, to turn a position in it into a file position.
    pub place: ScriptPlace,
}

/// Where a script's text is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptPlace {
    /// Its own file (relative to the bot folder): positions are the file's.
    File(PathBuf),
    /// Inside a flow file's YAML value: line 1, column 1 of the script is at `line`,
    /// `column`; with `block_indent` (a `|` block) line n is `line + n - 1` with the
    /// text starting at that column; otherwise only line 1 maps exactly and later lines
    /// are reported at the value's start.
    Inline {
        file: PathBuf,
        line: usize,
        column: usize,
        block_indent: Option<usize>,
    },
}

impl ScriptPlace {
    /// `file:line:col` of a position in the script (1-based; 0 when unknown).
    pub fn locate(&self, line: usize, column: usize) -> (PathBuf, Pos) {
        match self {
            ScriptPlace::File(file) => (
                file.clone(),
                Pos {
                    line: line.max(1),
                    column: column.max(1),
                },
            ),
            ScriptPlace::Inline {
                file,
                line: first,
                column: start,
                block_indent,
            } => {
                let pos = match (line, block_indent) {
                    (0, _) => Pos {
                        line: *first,
                        column: *start,
                    },
                    (1, _) => Pos {
                        line: *first,
                        column: start + column.max(1) - 1,
                    },
                    (n, Some(indent)) => Pos {
                        line: first + n - 1,
                        column: indent + column.max(1) - 1,
                    },
                    (_, None) => Pos {
                        line: *first,
                        column: *start,
                    },
                };
                (file.clone(), pos)
            }
        }
    }
}

#[derive(Debug)]
pub struct Handover {
    pub say: Option<Text>,
    pub queue: Option<String>,
    pub timeout: Option<Duration>,
    pub on_timeout: Option<Target>,
    pub on_unavailable: Option<Target>,
}

/// A JSON value whose strings are templates.
#[derive(Debug)]
pub enum JsonTemplate {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    Text(Text),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}
