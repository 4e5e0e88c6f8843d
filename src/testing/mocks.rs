//! The `mocks:` of a conversation test: what `parlance test` answers for the bot's
//! `http` nodes instead of calling the network.
//!
//! [`Mocks`] is the test's [`Perform`]: each `http` effect is answered from the mock of
//! the node that asked, in the shapes the real performer gives (`{status, headers,
//! body}` with lower-case header names; a status of 300 or more is an
//! `HttpFailed { kind: status }` that still carries the answer). What a mock cannot
//! answer (no mock, a list used up, a request that does not match `request:`) is a test
//! failure, kept here until the runner asks for it after the turn: the turn itself goes
//! on as the engine would with a call that was not made (`not_called`).

use super::{matches, same_value};
use crate::diag::Pos;
use crate::engine::{
    Effect, EffectOutcome, HttpErrorKind, HttpFailure, HttpRequest, NodeAt, Perform, RequestBody,
};
use crate::flow::{Bot, NodeKind, NodeRef};
use crate::source::{SourceFile, YamlPath};
use crate::spec::test::{
    RawMock, RawMockAnswer, RawMockFailKind, RawMockHandoverOutcome, RawMocks, RawRequestExpect,
    RawTestFile,
};
use indexmap::IndexMap;
use serde_json::{Map, Value, json};

/// The answers of one `http` node.
struct NodeMocks {
    flow: String,
    node: String,
    mocks: RawMocks,
    /// Where the mock is written (`tests/x.yaml:5:3`), for failures.
    place: String,
    /// Calls answered so far.
    calls: usize,
}

/// A test's mocks, resolved against the bot: the performer of its `http` effects.
pub struct Mocks {
    nodes: Vec<NodeMocks>,
    /// Flow files and positions of the bot's `http` nodes, for messages.
    sources: Vec<(NodeAt, String)>,
    /// The bare node ids that name one node in the bot (what a hint may suggest).
    unique_ids: Vec<String>,
    /// The environment templates read: header values are shown with `{{ env.NAME }}` in
    /// place of these values, so a failing test does not print a token.
    env: Map<String, Value>,
    /// The first failure of the turn, if any.
    failure: Option<String>,
}

/// Why the `mocks:` of a test do not fit the bot: where (the mock's key) and what.
pub struct MockError {
    pub path: YamlPath,
    pub message: String,
}

impl Mocks {
    /// Resolves each key of `mocks:` to one `http` node of `bot`.
    pub fn new(
        bot: &Bot,
        file: &SourceFile,
        test: &RawTestFile,
        env: &Map<String, Value>,
    ) -> Result<Mocks, MockError> {
        let mut all: Vec<(String, String, NodeRef)> = Vec::new();
        for (f, flow) in bot.flows.iter().enumerate() {
            for (n, node) in flow.nodes.iter().enumerate() {
                let r = NodeRef {
                    flow: crate::flow::FlowIdx(f as u32),
                    node: n as u32,
                };
                all.push((flow.id.clone(), node.id.clone(), r));
            }
        }
        let unique_ids: Vec<String> = all
            .iter()
            .filter(|(_, id, _)| all.iter().filter(|(_, other, _)| other == id).count() == 1)
            .map(|(_, id, _)| id.clone())
            .collect();
        let sources = all
            .iter()
            .filter(|(_, _, r)| matches!(bot.node(*r).kind, NodeKind::Http(_)))
            .map(|(flow, node, r)| {
                let at = NodeAt {
                    flow: flow.clone(),
                    node: node.clone(),
                };
                (at, node_place(bot, *r))
            })
            .collect();
        let mut nodes: Vec<NodeMocks> = Vec::new();
        for (key, mocks) in &test.mocks {
            let path = YamlPath::root().key("mocks").key(key);
            let error = |message: String| MockError {
                path: path.clone(),
                message,
            };
            let candidates: Vec<&(String, String, NodeRef)> = match key.split_once('.') {
                Some((flow, node)) => all
                    .iter()
                    .filter(|(f, n, _)| f == flow && n == node)
                    .collect(),
                None => all.iter().filter(|(_, n, _)| n == key).collect(),
            };
            let (flow, node, r) = match candidates.as_slice() {
                [one] => *one,
                [] => {
                    let http: Vec<String> = all
                        .iter()
                        .filter(|(_, _, r)| matches!(bot.node(*r).kind, NodeKind::Http(_)))
                        .map(|(f, n, _)| format!("{f}.{n}"))
                        .collect();
                    return Err(error(if http.is_empty() {
                        format!(
                            "`mocks` names {key}, but the bot has no such node (and no http node at all)"
                        )
                    } else {
                        format!(
                            "`mocks` names {key}, but the bot has no such node; its http nodes are {}",
                            http.join(", ")
                        )
                    }));
                }
                many => {
                    let names: Vec<String> =
                        many.iter().map(|(f, n, _)| format!("{f}.{n}")).collect();
                    return Err(error(format!(
                        "`mocks` names {key}, but several flows have a node with that id: {}; write the mock as `flow.node`",
                        names.join(", ")
                    )));
                }
            };
            let kind = bot.node(*r).kind.name();
            let answers: Vec<&RawMock> = match mocks {
                RawMocks::One(m) => vec![m.as_ref()],
                RawMocks::Each(list) => list.iter().collect(),
            };
            let handover_mocks = answers
                .iter()
                .filter(|m| matches!(m, RawMock::Handover(_)))
                .count();
            match (kind, handover_mocks) {
                ("http", 0) => {}
                ("handover", n) if n == answers.len() => {}
                ("http", _) => {
                    return Err(error(format!(
                        "`mocks` gives the http node {flow}.{node} a `handover:` mock; an http node's mock answers (`status`, `json`, `body`) or fails (`fail`)"
                    )));
                }
                ("handover", _) => {
                    return Err(error(format!(
                        "`mocks` names the handover node {flow}.{node}; its mock is `{{ handover: started }}` or `{{ handover: unavailable }}`"
                    )));
                }
                (kind, _) => {
                    return Err(error(format!(
                        "`mocks` names {flow}.{node}, a {kind} node; only http and handover nodes are mocked"
                    )));
                }
            }
            if nodes.iter().any(|m| &m.flow == flow && &m.node == node) {
                return Err(error(format!(
                    "{flow}.{node} is mocked twice in `mocks`; give it one entry (a list answers several calls)"
                )));
            }
            let answers: Vec<&RawMock> = match mocks {
                RawMocks::One(m) => vec![m.as_ref()],
                RawMocks::Each(list) => list.iter().collect(),
            };
            for (i, mock) in answers.into_iter().enumerate() {
                if let RawMock::Answer(a) = mock
                    && a.json.is_some()
                    && a.body.is_some()
                {
                    let at = match mocks {
                        RawMocks::One(_) => path.clone(),
                        RawMocks::Each(_) => path.index(i),
                    };
                    return Err(MockError {
                        path: at,
                        message: format!(
                            "the mock of {flow}.{node} has both `json` and `body`; an answer has one body"
                        ),
                    });
                }
            }
            nodes.push(NodeMocks {
                flow: flow.clone(),
                node: node.clone(),
                mocks: mocks.clone(),
                place: file_place(file, &path),
                calls: 0,
            });
        }
        Ok(Mocks {
            nodes,
            sources,
            unique_ids,
            env: env.clone(),
            failure: None,
        })
    }

    /// The failure of the turn just played, if any (and forgets it).
    pub fn take_failure(&mut self) -> Option<String> {
        self.failure.take()
    }

    fn fail(&mut self, message: String) {
        // The first failure is the cause; what follows in the same turn is its consequence.
        if self.failure.is_none() {
            self.failure = Some(message);
        }
    }

    fn source_of(&self, at: &NodeAt) -> String {
        self.sources
            .iter()
            .find(|(a, _)| a == at)
            .map_or_else(String::new, |(_, place)| format!(" ({place})"))
    }

    fn http(&mut self, at: &NodeAt, request: &HttpRequest) -> EffectOutcome {
        let url = match full_url(request) {
            Ok(url) => url,
            Err(message) => {
                let source = self.source_of(at);
                self.fail(format!("{}.{}{source}: {message}", at.flow, at.node));
                return not_called(request);
            }
        };
        let Some(i) = self
            .nodes
            .iter()
            .position(|m| m.flow == at.flow && m.node == at.node)
        else {
            let key = if self.unique_ids.contains(&at.node) {
                at.node.clone()
            } else {
                format!("{}.{}", at.flow, at.node)
            };
            let source = self.source_of(at);
            self.fail(format!(
                "{}.{}{source} calls {} {url}, and this test has no mock for it (tests never call the network); add one to the test file, e.g.\n    mocks:\n      {key}: {{ status: 200, json: {{ ... }} }}\n  or `{key}: {{ fail: timeout }}` for a call that fails",
                at.flow,
                at.node,
                request.method.as_str(),
            ));
            return not_called(request);
        };
        let entry = &mut self.nodes[i];
        let call = entry.calls;
        entry.calls += 1;
        let mock = match &entry.mocks {
            RawMocks::One(m) => m.as_ref().clone(),
            RawMocks::Each(list) => match list.get(call) {
                Some(m) => m.clone(),
                None => {
                    let message = format!(
                        "{}.{} was called {} times, but its mocks ({}) answer {} call{}; add an answer to the list",
                        at.flow,
                        at.node,
                        call + 1,
                        entry.place,
                        list.len(),
                        if list.len() == 1 { "" } else { "s" }
                    );
                    self.fail(message);
                    return not_called(request);
                }
            },
        };
        let place = entry.place.clone();
        let expect = match &mock {
            RawMock::Fail(f) => f.request.as_ref(),
            RawMock::Answer(a) => a.request.as_ref(),
            // Refused when the mocks were read (`Mocks::new`).
            RawMock::Handover(_) => None,
        };
        if let Some(expect) = expect {
            let differences = self.differences(expect, request, &url);
            if !differences.is_empty() {
                self.fail(format!(
                    "the request of {}.{} is not what its mock ({place}) expects:\n    {}\n  the request made:\n{}",
                    at.flow,
                    at.node,
                    differences.join("\n    "),
                    self.describe(request, &url)
                ));
            }
        }
        match &mock {
            RawMock::Fail(f) => failed(f.fail, request),
            RawMock::Answer(a) => answer(a, request),
            RawMock::Handover(_) => not_called(request),
        }
    }

    /// How `request` differs from what the mock expects, one line per difference.
    fn differences(
        &self,
        expect: &RawRequestExpect,
        request: &HttpRequest,
        url: &str,
    ) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(method) = expect.method
            && method != request.method
        {
            out.push(format!(
                "method: expected {}, got {}",
                method.as_str(),
                request.method.as_str()
            ));
        }
        if let Some(want) = &expect.url
            && matches(want, url).is_err()
        {
            out.push(format!("url: expected {want:?}, got {url:?}"));
        }
        for (name, want) in expect.headers.iter().flatten() {
            let sent = request
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name));
            match sent {
                Some((_, value)) if matches(want, value).is_ok() => {}
                Some((_, value)) => out.push(format!(
                    "header {name}: expected {want:?}, got {:?}",
                    self.mask(value)
                )),
                None => out.push(format!(
                    "header {name}: expected {want:?}, but it was not sent"
                )),
            }
        }
        if let Some(want) = &expect.json {
            match &request.body {
                RequestBody::Json(got) if same_value(want, got) => {}
                RequestBody::Json(got) => {
                    out.push(format!("json: expected {want}, got {got}"));
                }
                other => out.push(format!("json: expected {want}, got {}", body_kind(other))),
            }
        }
        if let Some(want) = &expect.form {
            match &request.body {
                RequestBody::Form(got) => {
                    let got: IndexMap<&str, &str> =
                        got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    let same = got.len() == want.len()
                        && want.iter().all(|(k, v)| {
                            got.get(k.as_str()).is_some_and(|g| matches(v, g).is_ok())
                        });
                    if !same {
                        out.push(format!("form: expected {want:?}, got {got:?}"));
                    }
                }
                other => out.push(format!("form: expected {want:?}, got {}", body_kind(other))),
            }
        }
        if let Some(want) = &expect.body {
            match &request.body {
                RequestBody::Text(got) if matches(want, got).is_ok() => {}
                RequestBody::Text(got) => out.push(format!("body: expected {want:?}, got {got:?}")),
                other => out.push(format!("body: expected {want:?}, got {}", body_kind(other))),
            }
        }
        out
    }

    /// The request as the failure shows it: header values from `env` masked.
    fn describe(&self, request: &HttpRequest, url: &str) -> String {
        let mut lines = vec![format!("    {} {url}", request.method.as_str())];
        for (name, value) in &request.headers {
            lines.push(format!("    {name}: {}", self.mask(value)));
        }
        match &request.body {
            RequestBody::None => {}
            RequestBody::Json(v) => lines.push(format!("    json: {v}")),
            RequestBody::Form(pairs) => {
                let pairs: IndexMap<&str, &str> = pairs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                lines.push(format!("    form: {pairs:?}"));
            }
            RequestBody::Text(t) => lines.push(format!("    body: {t:?}")),
        }
        lines.join("\n")
    }

    /// `value` with every exposed environment value replaced by `{{ env.NAME }}`.
    fn mask(&self, value: &str) -> String {
        let mut masked = value.to_string();
        for (name, v) in &self.env {
            if let Some(secret) = v.as_str()
                && !secret.is_empty()
            {
                masked = masked.replace(secret, &format!("{{{{ env.{name} }}}}"));
            }
        }
        masked
    }
}

impl Perform for Mocks {
    /// Without the node that asks no mock can be chosen; [`crate::engine::run`] always
    /// calls [`Perform::perform_at`].
    fn perform(&mut self, _effect: &Effect) -> EffectOutcome {
        EffectOutcome::Unsupported
    }

    fn perform_at(&mut self, at: &NodeAt, effect: &Effect) -> EffectOutcome {
        match effect {
            Effect::Http(request) => self.http(at, request),
            Effect::Handover { .. } => self.handover(at),
        }
    }
}

impl Mocks {
    /// A `handover` node's outcome: its mock's (`{ handover: unavailable }`), else the
    /// handover starts. Agents are not played: after a start the bot is silent, so a
    /// test ends at the handover (docs/flows.md).
    fn handover(&mut self, at: &NodeAt) -> EffectOutcome {
        let Some(entry) = self
            .nodes
            .iter_mut()
            .find(|m| m.flow == at.flow && m.node == at.node)
        else {
            return EffectOutcome::HandoverStarted;
        };
        let call = entry.calls;
        entry.calls += 1;
        let mock = match &entry.mocks {
            RawMocks::One(m) => Some(m.as_ref()),
            RawMocks::Each(list) => list.get(call),
        };
        match mock {
            Some(RawMock::Handover(h)) => match h.handover {
                RawMockHandoverOutcome::Started => EffectOutcome::HandoverStarted,
                RawMockHandoverOutcome::Unavailable => EffectOutcome::Unavailable,
            },
            // A list used up: the default. (Other kinds were refused in `Mocks::new`.)
            Some(RawMock::Fail(_) | RawMock::Answer(_)) | None => EffectOutcome::HandoverStarted,
        }
    }
}

/// The URL the request goes to: the rendered `url` with `query` encoded into it, as the
/// real performer sends it.
fn full_url(request: &HttpRequest) -> Result<String, String> {
    let mut url = reqwest::Url::parse(&request.url).map_err(|e| {
        format!(
            "the url rendered as {:?}, which is not a URL ({e})",
            request.url
        )
    })?;
    if !request.query.is_empty() {
        url.query_pairs_mut().extend_pairs(&request.query);
    }
    Ok(url.to_string())
}

/// The URL without its query, as failure messages name it (a query may hold secrets).
fn without_query(request: &HttpRequest) -> String {
    match reqwest::Url::parse(&request.url) {
        Ok(mut url) => {
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => request
            .url
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

fn host_of(request: &HttpRequest) -> String {
    reqwest::Url::parse(&request.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| without_query(request))
}

fn body_kind(body: &RequestBody) -> &'static str {
    match body {
        RequestBody::None => "no body",
        RequestBody::Json(_) => "a JSON body",
        RequestBody::Form(_) => "a form body",
        RequestBody::Text(_) => "a text body",
    }
}

/// A call the test could not answer: the turn goes on as without the call.
fn not_called(request: &HttpRequest) -> EffectOutcome {
    EffectOutcome::HttpFailed(HttpFailure {
        kind: HttpErrorKind::NotCalled,
        status: None,
        message: format!(
            "{} was not called: the test has no answer for it",
            without_query(request)
        ),
        response: None,
    })
}

fn answer(mock: &RawMockAnswer, request: &HttpRequest) -> EffectOutcome {
    let status = mock.status.unwrap_or(200);
    let mut headers = Map::new();
    for (name, value) in &mock.headers {
        headers.insert(name.to_ascii_lowercase(), Value::String(value.clone()));
    }
    let (body, content_type) = match (&mock.json, &mock.body) {
        (Some(v), _) => (v.clone(), Some("application/json")),
        (None, Some(text)) => (
            Value::String(text.clone()),
            Some("text/plain; charset=utf-8"),
        ),
        (None, None) => (Value::Null, None),
    };
    if let Some(ct) = content_type
        && !headers.contains_key("content-type")
    {
        headers.insert("content-type".into(), Value::String(ct.into()));
    }
    let response = json!({ "status": status, "headers": headers, "body": body });
    if (200..300).contains(&status) {
        return EffectOutcome::Http(response);
    }
    EffectOutcome::HttpFailed(HttpFailure {
        kind: HttpErrorKind::Status,
        status: Some(status),
        message: format!("{} answered {status}", without_query(request)),
        response: Some(response),
    })
}

fn failed(kind: RawMockFailKind, request: &HttpRequest) -> EffectOutcome {
    let url = without_query(request);
    let (kind, message) = match kind {
        RawMockFailKind::Timeout => (
            HttpErrorKind::Timeout,
            format!(
                "no answer from {url} within {}",
                humantime::format_duration(request.timeout)
            ),
        ),
        RawMockFailKind::Connect => (
            HttpErrorKind::Connect,
            format!("could not connect to {}", host_of(request)),
        ),
        RawMockFailKind::Forbidden => (
            HttpErrorKind::Forbidden,
            format!("{} may not be called (http.allow_hosts)", host_of(request)),
        ),
        RawMockFailKind::TooLarge => (
            HttpErrorKind::TooLarge,
            format!("the answer from {url} was over the size limit"),
        ),
        RawMockFailKind::InvalidJson => (
            HttpErrorKind::InvalidJson,
            format!("the answer from {url} said it was JSON and was not"),
        ),
        RawMockFailKind::Redirect => (
            HttpErrorKind::Redirect,
            format!("{url} redirected, and the redirect was not followed"),
        ),
    };
    EffectOutcome::HttpFailed(HttpFailure {
        kind,
        status: None,
        message,
        response: None,
    })
}

/// `flows/main.yaml:12:3` for node `r`.
fn node_place(bot: &Bot, r: NodeRef) -> String {
    let pos = bot.node(r).pos;
    format!(
        "{}:{}:{}",
        bot.flow(r.flow).file.display(),
        pos.line,
        pos.column
    )
}

/// `tests/x.yaml:5:3` for `path` in the test file.
fn file_place(file: &SourceFile, path: &YamlPath) -> String {
    let pos = file
        .tree
        .as_ref()
        .map_or(Pos::START, |t| t.key_pos_of(path));
    format!("{}:{}:{}", file.display.display(), pos.line, pos.column)
}
