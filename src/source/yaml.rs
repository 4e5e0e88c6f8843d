//! YAML text → a tree that remembers where every value and key was written.
//!
//! serde's YAML deserializers forget positions, and a bot designer needs
//! `file:line:column` for every problem, so we build our own tree from the event stream
//! of `yaml-rust2` (YAML 1.2: `yes`, `no` and `on` stay text, no Norway problem).
//! The tree converts to `serde_json::Value`, which is what the schemas validate and the
//! `spec` types deserialize from; diagnostics find their position back through a path.
//!
//! Hostile input is bounded here, before anything else sees it: nesting depth, and the
//! number of values after aliases are expanded (a "billion laughs" file stops at the
//! budget instead of eating memory).

use crate::diag::{Code, Pos};
use std::collections::{HashMap, HashSet};
use std::fmt;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deepest nesting of mappings and lists we accept. Real flows stay under 15.
pub const MAX_DEPTH: usize = 64;
/// Most values one file may hold once aliases are expanded.
pub const MAX_VALUES: usize = 250_000;

/// One value and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// A mapping entry; keys are always text (YAML `1:` becomes the key `"1"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

/// One step of a path into the tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path like `nodes.welcome.buttons.buttons[2].title`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct YamlPath(pub Vec<Seg>);

impl YamlPath {
    pub fn root() -> Self {
        YamlPath(Vec::new())
    }

    pub fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_string()));
        YamlPath(segs)
    }

    pub fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        YamlPath(segs)
    }

    /// Parses a JSON pointer (`/nodes/a~1b/0`) as reported by the schema validator,
    /// using the tree to tell list indices from mapping keys that look like numbers.
    pub fn from_pointer(pointer: &str, tree: &Node) -> Self {
        let mut segs = Vec::new();
        let mut node = Some(tree);
        for raw in pointer.split('/').skip(1) {
            let key = raw.replace("~1", "/").replace("~0", "~");
            let seg = match (node.map(|n| &n.value), key.parse::<usize>()) {
                (Some(Value::Seq(_)), Ok(i)) => Seg::Index(i),
                _ => Seg::Key(key),
            };
            node = node.and_then(|n| n.child(&seg));
            segs.push(seg);
        }
        YamlPath(segs)
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

impl Node {
    pub fn child(&self, seg: &Seg) -> Option<&Node> {
        match (&self.value, seg) {
            (Value::Map(entries), Seg::Key(k)) => {
                entries.iter().find(|e| &e.key == k).map(|e| &e.value)
            }
            (Value::Seq(items), Seg::Index(i)) => items.get(*i),
            _ => None,
        }
    }

    /// Where the value at `path` starts, or the closest existing parent when the path
    /// goes further than the file does (a missing key is reported at its mapping).
    pub fn pos_of(&self, path: &YamlPath) -> Pos {
        let mut node = self;
        for seg in &path.0 {
            match node.child(seg) {
                Some(child) => node = child,
                None => break,
            }
        }
        node.pos
    }

    /// Where the key that ends `path` is written (for "duplicate id"-style problems that
    /// are about the key, not its value). Falls back to the value's position.
    pub fn key_pos_of(&self, path: &YamlPath) -> Pos {
        let Some((Seg::Key(last), parent)) = path.0.split_last() else {
            return self.pos_of(path);
        };
        let mut node = self;
        for seg in parent {
            match node.child(seg) {
                Some(child) => node = child,
                None => return node.pos,
            }
        }
        match &node.value {
            Value::Map(entries) => entries
                .iter()
                .find(|e| &e.key == last)
                .map_or(node.pos, |e| e.key_pos),
            _ => node.pos,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.child(&Seg::Key(key.to_string()))
    }

    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            // NaN and infinities have no JSON form; as text they fail type checks clearly.
            Value::Float(f) => {
                serde_json::Number::from_f64(*f).map_or_else(|| J::String(f.to_string()), J::Number)
            }
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }
}

/// A problem found while reading YAML: the tree builder collects these instead of
/// stopping, so one run shows every duplicate key and every missing variable.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlProblem {
    pub pos: Pos,
    pub code: Code,
    pub message: String,
    pub hint: Option<String>,
    /// The path of the value concerned, where there is one.
    pub path: YamlPath,
}

/// What reading a file gives: the tree (absent when the text is not YAML at all, or
/// is empty) and every problem seen.
pub struct Parsed {
    pub tree: Option<Node>,
    pub problems: Vec<YamlProblem>,
    /// Where `${NAME}` was replaced in an unquoted value: such a value is text, whatever
    /// it looks like (an all-digit phone number id, `true`, `1e5`); the loader gives it
    /// another type only where the schema has no room for text.
    pub interpolated: Vec<YamlPath>,
}

/// Turns a scalar as written into text; the caller decides (`${NAME}` interpolation).
pub type ScalarHook<'a> = &'a dyn Fn(&str, Pos) -> Result<String, (Code, String, Option<String>)>;

/// Parses one YAML document. `hook` is applied to every scalar (and key); an unquoted
/// scalar it changed stays text and its path is listed in [`Parsed::interpolated`].
pub fn parse(text: &str, hook: Option<ScalarHook<'_>>) -> Parsed {
    let mut builder = Builder {
        hook,
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        documents: 0,
        values: 0,
        problems: Vec::new(),
        interpolated: Vec::new(),
        interpolated_anchors: HashSet::new(),
        fatal: false,
    };
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, true) {
        let pos = to_pos(e.marker());
        builder.problems.push(YamlProblem {
            pos,
            code: Code::YamlSyntax,
            message: e.info().to_string(),
            hint: syntax_hint(e.info()),
            path: YamlPath::root(),
        });
        builder.root = None;
    }
    if builder.fatal {
        builder.root = None;
    }
    Parsed {
        tree: builder.root,
        problems: builder.problems,
        interpolated: builder.interpolated,
    }
}

fn syntax_hint(info: &str) -> Option<String> {
    if info.contains("unknown escape character") {
        Some("in double quotes a backslash starts an escape; write regexes in single quotes: '^\\d+$'".into())
    } else if info.contains("flow mapping") || info.contains("flow sequence") {
        Some("inside { } or [ ], quote values that contain {, }, [, ], : or ${...}; or write them one per line".into())
    } else if info.contains("quoted scalar") {
        Some("a quoted text is not closed, or its next line is indented less than the key".into())
    } else if info.contains("tab") {
        Some("indent with spaces; YAML does not allow tabs".into())
    } else if info.contains("mapping values are not allowed") {
        Some("a value containing \": \" must be quoted, e.g. say: \"Note: ...\"".into())
    } else if info.contains("did not find expected key") || info.contains("did not find expected") {
        Some("check the indentation of this line and the one before".into())
    } else {
        None
    }
}

fn to_pos(m: &Marker) -> Pos {
    // yaml-rust2 counts lines from 1 and columns from 0.
    Pos {
        line: m.line().max(1),
        column: m.col() + 1,
    }
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<Entry>,
        pending_key: Option<(String, Pos)>,
    },
}

struct Builder<'a> {
    hook: Option<ScalarHook<'a>>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    documents: usize,
    /// Values created so far, aliases counted as often as they are used.
    values: usize,
    problems: Vec<YamlProblem>,
    interpolated: Vec<YamlPath>,
    /// Anchors of scalars in `interpolated`.
    interpolated_anchors: HashSet<usize>,
    /// Set when the tree cannot be trusted (too deep, too large, two documents).
    fatal: bool,
}

impl Builder<'_> {
    fn report(&mut self, pos: Pos, code: Code, message: String, hint: Option<String>) {
        let path = self.current_path();
        self.problems.push(YamlProblem {
            pos,
            code,
            message,
            hint,
            path,
        });
    }

    /// Reports a problem after which the tree cannot be trusted (too deep, too large,
    /// two documents); later events are ignored.
    fn fail(&mut self, pos: Pos, code: Code, message: String, hint: Option<String>) {
        if !self.fatal {
            self.report(pos, code, message, hint);
        }
        self.fatal = true;
    }

    fn current_path(&self) -> YamlPath {
        let mut segs = Vec::new();
        for frame in &self.stack {
            match frame {
                Frame::Seq { items, .. } => segs.push(Seg::Index(items.len())),
                Frame::Map {
                    pending_key: Some((k, _)),
                    ..
                } => segs.push(Seg::Key(k.clone())),
                Frame::Map { .. } => {}
            }
        }
        YamlPath(segs)
    }

    fn count(&mut self, n: usize, pos: Pos) -> bool {
        self.values = self.values.saturating_add(n);
        if self.values > MAX_VALUES {
            self.fail(
                pos,
                Code::YamlTooComplex,
                format!("the file expands to more than {MAX_VALUES} values"),
                Some(
                    "a flow file this large is usually a mistake or an alias bomb; split it up"
                        .into(),
                ),
            );
            return false;
        }
        true
    }

    fn scalar(&mut self, text: String, style: TScalarStyle, tag: Option<Tag>, pos: Pos) -> Value {
        let mut interpolated = false;
        let text = match self.hook {
            Some(hook) if text.contains('$') => match hook(&text, pos) {
                Ok(t) => {
                    interpolated = t != text;
                    t
                }
                Err((code, message, hint)) => {
                    self.report(pos, code, message, hint);
                    text
                }
            },
            _ => text,
        };
        let explicit_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
        if style != TScalarStyle::Plain || explicit_str {
            return Value::Str(text);
        }
        if interpolated {
            // Typed by the schema later, not by what the variable's value looks like.
            let path = self.current_path();
            self.interpolated.push(path);
            return Value::Str(text);
        }
        resolve_plain(text)
    }

    fn push_value(&mut self, node: Node, anchor: usize, size: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        let problem = match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                None
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                None
            }
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => match node.value {
                    Value::Str(s) => {
                        *pending_key = Some((s, node.pos));
                        None
                    }
                    Value::Null => {
                        *pending_key = Some((String::new(), node.pos));
                        None
                    }
                    Value::Bool(b) => {
                        *pending_key = Some((b.to_string(), node.pos));
                        None
                    }
                    Value::Int(i) => {
                        *pending_key = Some((i.to_string(), node.pos));
                        None
                    }
                    Value::Float(f) => {
                        *pending_key = Some((f.to_string(), node.pos));
                        None
                    }
                    Value::Seq(_) | Value::Map(_) => {
                        // Complex keys have no use in a bot; keep a placeholder so the
                        // value that follows still pairs up, and report it.
                        *pending_key = Some((String::new(), node.pos));
                        Some((
                            node.pos,
                            "a mapping key must be text, not a list or mapping".to_string(),
                        ))
                    }
                },
                Some((key, key_pos)) => {
                    if let Some(first) = entries.iter().find(|e| e.key == key) {
                        let message = format!(
                            "key \"{key}\" is already defined at line {}",
                            first.key_pos.line
                        );
                        entries.push(Entry {
                            key,
                            key_pos,
                            value: node,
                        });
                        Some((key_pos, message))
                    } else {
                        entries.push(Entry {
                            key,
                            key_pos,
                            value: node,
                        });
                        None
                    }
                }
            },
        };
        if let Some((pos, message)) = problem {
            let mut path = self.current_path();
            if let Some(Frame::Map { entries, .. }) = self.stack.last()
                && let Some(e) = entries.last()
            {
                path.0.push(Seg::Key(e.key.clone()));
            }
            self.problems.push(YamlProblem {
                pos,
                code: Code::DuplicateKey,
                message,
                hint: Some(
                    "each key may appear once in a mapping; rename or merge one of them".into(),
                ),
                path,
            });
        }
    }

    fn open(&mut self, frame: Frame, pos: Pos) {
        if self.stack.len() >= MAX_DEPTH {
            self.fail(
                pos,
                Code::YamlTooComplex,
                format!("nesting is deeper than {MAX_DEPTH} levels"),
                Some("flows never need this much nesting; check for runaway indentation".into()),
            );
            return;
        }
        if self.count(1, pos) {
            self.stack.push(frame);
        }
    }

    fn close(&mut self) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        let (node, anchor) = match frame {
            Frame::Seq { pos, anchor, items } => (
                Node {
                    pos,
                    value: Value::Seq(items),
                },
                anchor,
            ),
            Frame::Map {
                pos,
                anchor,
                entries,
                ..
            } => (
                Node {
                    // yaml-rust2 starts a block mapping at its first `:`; a designer
                    // expects the mapping to start where its first key is written.
                    pos: entries.first().map_or(pos, |e| e.key_pos.min(pos)),
                    value: Value::Map(entries),
                },
                anchor,
            ),
        };
        let size = if anchor > 0 { size_of(&node) } else { 0 };
        self.push_value(node, anchor, size);
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.fatal {
            return;
        }
        let pos = to_pos(&mark);
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.fail(
                        pos,
                        Code::MultipleDocuments,
                        "a file may hold one YAML document; found a second one".into(),
                        Some(
                            "remove the `---` line, or move the second document into its own file"
                                .into(),
                        ),
                    );
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                if !self.count(1, pos) {
                    return;
                }
                let before = self.interpolated.len();
                let value = self.scalar(text, style, tag, pos);
                if anchor > 0 && self.interpolated.len() > before {
                    self.interpolated_anchors.insert(anchor);
                }
                self.push_value(Node { pos, value }, anchor, 1);
            }
            Event::SequenceStart(anchor, _) => self.open(
                Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                },
                pos,
            ),
            Event::MappingStart(anchor, _) => self.open(
                Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    pending_key: None,
                },
                pos,
            ),
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some((node, size)) => {
                    if self.count(size, pos) {
                        // An alias of a `${NAME}` scalar is typed like it.
                        if self.interpolated_anchors.contains(&id) {
                            let path = self.current_path();
                            self.interpolated.push(path);
                        }
                        // The alias points at the anchored value; report problems where
                        // the alias is written.
                        let node = Node {
                            pos,
                            value: node.value,
                        };
                        self.push_value(node, 0, size);
                    }
                }
                None => self.fail(
                    pos,
                    Code::YamlSyntax,
                    "alias to an unknown anchor".into(),
                    None,
                ),
            },
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
}

fn size_of(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(size_of).sum::<usize>(),
        Value::Map(entries) => 1 + entries.iter().map(|e| 1 + size_of(&e.value)).sum::<usize>(),
        _ => 1,
    }
}

/// The JSON value an unquoted scalar with this text has (YAML 1.2 core schema).
pub fn plain_json(text: &str) -> serde_json::Value {
    Node {
        pos: Pos::START,
        value: resolve_plain(text.to_string()),
    }
    .to_json()
}

/// YAML 1.2 core schema resolution of an unquoted scalar.
fn resolve_plain(text: String) -> Value {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Int(i);
    }
    let looks_numeric = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
        && text.bytes().any(|b| b.is_ascii_digit());
    if looks_numeric {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Int(i);
        }
        if let Ok(f) = text.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> Node {
        let parsed = parse(text, None);
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        parsed.tree.expect("a tree")
    }

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        let t = tree("id: main\nnodes:\n  hello:\n    say: \"Hi\"\n");
        let path = YamlPath::root().key("nodes").key("hello").key("say");
        assert_eq!(
            t.pos_of(&path),
            Pos {
                line: 4,
                column: 10
            }
        );
        assert_eq!(t.key_pos_of(&path), Pos { line: 4, column: 5 });
        assert_eq!(path.to_string(), "nodes.hello.say");
    }

    #[test]
    fn yaml_1_2_keeps_yes_and_on_as_text() {
        let t = tree("a: yes\nb: on\nc: 0012\nd: 1.5\ne: ~\nf: '5'\n");
        assert_eq!(
            t.to_json(),
            serde_json::json!({"a": "yes", "b": "on", "c": 12, "d": 1.5, "e": null, "f": "5"})
        );
    }

    #[test]
    fn duplicate_keys_are_reported_with_both_lines() {
        let parsed = parse("a: 1\nb: 2\na: 3\n", None);
        assert_eq!(parsed.problems.len(), 1);
        let p = &parsed.problems[0];
        assert_eq!(p.code, Code::DuplicateKey);
        assert_eq!(p.pos, Pos { line: 3, column: 1 });
        assert_eq!(p.message, "key \"a\" is already defined at line 1");
    }

    #[test]
    fn alias_bombs_stop_at_the_budget() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        let parsed = parse(&text, None);
        assert!(parsed.tree.is_none());
        assert_eq!(parsed.problems[0].code, Code::YamlTooComplex);
    }

    #[test]
    fn deep_nesting_stops_at_the_limit() {
        let text = "[".repeat(5000) + "]".repeat(5000).as_str();
        let parsed = parse(&text, None);
        assert!(parsed.tree.is_none());
        assert!(!parsed.problems.is_empty());
        let block: String = (0..200)
            .map(|i| format!("{}k:\n", "  ".repeat(i)))
            .collect();
        let parsed = parse(&block, None);
        assert!(parsed.tree.is_none());
        assert_eq!(parsed.problems[0].code, Code::YamlTooComplex);
    }

    #[test]
    fn two_documents_are_an_error() {
        let parsed = parse("a: 1\n---\nb: 2\n", None);
        assert_eq!(parsed.problems[0].code, Code::MultipleDocuments);
        assert_eq!(parsed.problems[0].pos.line, 2);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let parsed = parse("a: [1, 2\nb: 3\n", None);
        assert!(parsed.tree.is_none());
        assert_eq!(parsed.problems[0].code, Code::YamlSyntax);
    }
}
