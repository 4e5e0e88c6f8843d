//! `POST /dev/api/record`: the conversation on screen as a `tests/*.yaml` conversation
//! test, written the way designers write them (`user: hi`, `bot: { say: ... }`,
//! `bot: { buttons: { body, buttons } }`, `advance: 3600s`...).
//!
//! The test is built from the user's history since the last reset ([`build`]), then
//! read back with `parlance test`'s own reader and run against the bot serving now,
//! so the answer says whether it passes (and why not) before anyone saves it. Written
//! into the bot folder, it lands in `tests/<slug of the name>.yaml` and nowhere else.

use crate::api::error::ApiError;
use crate::delivery::dev_hub::{DevInput, Entry, Inbound, Outbound};
use crate::delivery::runtime::Number;
use crate::engine::EventKind;
use crate::flow::Bot;
use crate::flow::settings::Simulated;
use crate::server::AppState;
use crate::store::SessionKey;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Gaps between two messages of the user shorter than this are not written as
/// `advance:` (typing takes time; only long pauses change what a bot does).
pub const ADVANCE_FROM_SECS: i64 = 60;
/// The longest file name stem a test gets.
const MAX_SLUG: usize = 60;

const FORMS: &str =
    r#"{"user": "15550001111", "name": "orders a pizza", "write": false, "overwrite": false}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordRequest {
    user: String,
    name: String,
    #[serde(default)]
    write: bool,
    #[serde(default)]
    overwrite: bool,
    phone_number_id: Option<String>,
}

/// `POST /dev/api/record` → `{"yaml", "path", "passes", "failure", "notes"}`.
pub async fn record(
    State(state): State<AppState>,
    sim: super::Sim,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: RecordRequest = super::json_body(&body, FORMS)?;
    let number = sim.number(request.phone_number_id.as_deref())?;
    super::user(&request.user)?;
    let name = request.name.trim().to_string();
    let slug = slug(&name)?;
    let key = SessionKey::new(&number.phone_number_id, &request.user);
    let history = state.runtime.dev.history(&key);
    let bot = number.live.bot();
    let recorded = build(&bot, &key.user, &name, &history)?;
    let rel = PathBuf::from("tests").join(format!("{slug}.yaml"));
    // Run as `parlance test` would: read back with its reader, played on the bot.
    let checked = {
        let (bot, rel, yaml) = (
            std::sync::Arc::clone(&bot),
            rel.clone(),
            recorded.yaml.clone(),
        );
        tokio::task::spawn_blocking(move || check(&bot, &rel, &yaml))
            .await
            .map_err(|e| internal(format!("the recorded test could not be run: {e}")))??
    };
    let mut notes = recorded.notes;
    if checked.as_deref().is_some_and(|f| f.contains("mock")) {
        notes.push("a test never calls the network: give each http node the conversation reaches an answer under `mocks:` (docs/flows.md#mocking-http-nodes)".into());
    }
    let path = if request.write {
        if !writes_tests(&number) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not_local",
                "a recorded test is written into the bot folder in local mode only; beside a real number (dev.enabled), download it and commit it with the bot",
            ));
        }
        write(&number.live.dir, &rel, &recorded.yaml, request.overwrite)?;
        tracing::info!(bot = %number.live.dir.display(), file = %rel.display(), "a recorded test was written");
        Some(rel.to_string_lossy().into_owned())
    } else {
        None
    };
    Ok(Json(json!({
        "yaml": recorded.yaml,
        "path": path,
        "passes": checked.is_none(),
        "failure": checked,
        "notes": notes,
    })))
}

/// Whether `write: true` may put the test into the bot folder: in local mode only, not
/// from a twin beside a real number (a production server's files are not the page's to
/// change).
pub fn writes_tests(number: &Number) -> bool {
    number.live.bot().settings.simulated() == Simulated::Itself
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message)
}

fn internal(message: String) -> ApiError {
    tracing::error!(%message, "recording a test failed");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
}

/// The file name stem for a test called `name`: lower-case ASCII letters, digits and
/// `_`. A name that reads as a path is refused, not cleaned: the test is only ever
/// written into the bot's `tests/` folder.
pub fn slug(name: &str) -> Result<String, ApiError> {
    if name.contains('/') || name.contains('\\') || name.contains("..") {
        return Err(bad(
            "the test's name is a name, not a path: it may not hold /, \\ or ..; it is written to tests/<name>.yaml",
        ));
    }
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('_') {
            slug.push('_');
        }
    }
    let slug: String = slug.trim_matches('_').chars().take(MAX_SLUG).collect();
    let slug = slug.trim_end_matches('_').to_string();
    if slug.is_empty() {
        return Err(bad(
            "the test's name needs at least one letter or digit (it names the file)",
        ));
    }
    Ok(slug)
}

/// A recorded test and what the designer should know about it.
#[derive(Debug)]
pub struct Recorded {
    pub yaml: String,
    /// Things the recording could not capture (a message the bot sent on its own
    /// before the user wrote, `http` calls a test must mock...).
    pub notes: Vec<String>,
}

/// The test for `history` (the user's, oldest first): each user message, the bot's
/// messages its turn sent (matched by turn, not by time, so a reply still queued
/// behind `message_delay_ms` when the user typed again stays with its turn), and the
/// long pauses between messages as `advance:`.
pub fn build(bot: &Bot, user: &str, name: &str, history: &[Entry]) -> Result<Recorded, ApiError> {
    let inbound: Vec<&Inbound> = history
        .iter()
        .filter_map(|e| match e {
            Entry::In(i) => Some(i),
            Entry::Out(_) => None,
        })
        .collect();
    if inbound.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "nothing_to_record",
            "the user has sent nothing since the last reset: talk to the bot first",
        ));
    }
    let mut notes = Vec::new();
    // The bot's messages of each user message, by position in `inbound`.
    let mut answers: Vec<Vec<&Outbound>> = vec![Vec::new(); inbound.len()];
    let mut before_first = 0usize;
    let mut refused = 0usize;
    let mut latest: Option<usize> = None;
    for e in history {
        match e {
            Entry::In(i) => latest = inbound.iter().position(|x| x.id == i.id),
            // WhatsApp refused it (the window had closed): the user never saw it, and
            // `parlance test` plays a closed window its own way (docs/flows.md).
            Entry::Out(o) if o.status == "failed" => refused += 1,
            Entry::Out(o) => {
                let own = inbound.iter().position(|i| i.item == Some(o.item));
                // Not from a user message's turn (a timer, the API): where it showed.
                match own.or(latest) {
                    Some(at) => answers[at].push(o),
                    None => before_first += 1,
                }
            }
        }
    }
    if before_first > 0 {
        notes.push(format!(
            "{before_first} message(s) the bot sent before the user's first message are left out: a conversation test starts with the user"
        ));
    }
    if refused > 0 {
        notes.push(format!(
            "{refused} message(s) WhatsApp refused (shown failed in the chat) are left out: a test of a closed 24-hour window uses `advance:` and a `status:` step (docs/flows.md#conversation-tests)"
        ));
    }
    let name_of_user = inbound.iter().rev().find_map(|i| i.name.clone());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Recorded with the /dev simulator; edit it as any test (docs/flows.md#conversation-tests)."
    );
    let _ = writeln!(out, "name: {}", scalar(name));
    let mut contact = Map::new();
    contact.insert("wa_id".into(), Value::String(user.to_string()));
    if let Some(n) = &name_of_user {
        contact.insert("name".into(), Value::String(n.clone()));
    }
    let _ = writeln!(out, "contact: {}", flow(&Value::Object(contact)));
    let _ = writeln!(out, "steps:");
    let mut previous_at: Option<i64> = None;
    for (i, message) in inbound.iter().enumerate() {
        if let Some(before) = previous_at {
            let gap = (message.at - before).div_euclid(1000);
            if gap >= ADVANCE_FROM_SECS {
                step(&mut out, "advance", &Value::String(format!("{gap}s")));
            }
        }
        previous_at = Some(message.at);
        step(&mut out, "user", &user_step(&message.input));
        for o in &answers[i] {
            step(&mut out, "bot", &bot_step(bot, o));
        }
    }
    Ok(Recorded { yaml: out, notes })
}

/// `  - KEY: VALUE`, or the value on lines of its own when long.
fn step(out: &mut String, key: &str, value: &Value) {
    let line = flow(value);
    if line.chars().count() <= 100 {
        let _ = writeln!(out, "  - {key}: {line}");
        return;
    }
    // `bot: { KIND: {...} }` → KIND on a line of its own.
    if let Value::Object(map) = value
        && map.len() == 1
        && let Some((kind, inner)) = map.iter().next()
    {
        let _ = writeln!(
            out,
            "  - {key}:\n      {}: {}",
            plain_key(kind),
            flow(inner)
        );
        return;
    }
    let _ = writeln!(out, "  - {key}: {line}");
}

/// What the user sent, as a `user:` step: text as is, everything else as the event
/// the server made of it (a media file with the id the bot saw).
fn user_step(input: &DevInput) -> Value {
    match input {
        DevInput::Text(t) => Value::String(t.clone()),
        DevInput::Reply(r) => json!({ "reply": r.id }),
        DevInput::Location(l) => {
            let mut m = Map::new();
            m.insert("latitude".into(), json!(l.latitude));
            m.insert("longitude".into(), json!(l.longitude));
            if let Some(n) = &l.name {
                m.insert("name".into(), json!(n));
            }
            if let Some(a) = &l.address {
                m.insert("address".into(), json!(a));
            }
            json!({ "location": m })
        }
        DevInput::Media(media) => {
            let mut m = Map::new();
            if let EventKind::Media {
                id,
                mime_type,
                caption,
                filename,
                ..
            } = super::messages::event_kind(input)
            {
                m.insert("id".into(), json!(id));
                if let Some(t) = mime_type {
                    m.insert("mime_type".into(), json!(t));
                }
                if let Some(c) = caption {
                    m.insert("caption".into(), json!(c));
                }
                if let Some(f) = filename {
                    m.insert("filename".into(), json!(f));
                }
            }
            let mut outer = Map::new();
            outer.insert(media.kind.name().into(), Value::Object(m));
            Value::Object(outer)
        }
    }
}

/// What the bot sent, as a `bot:` step: `{ KIND: ... }` with the kind of the node that
/// sent it (`say`, `ask`, `end`, ...; the message's kind when the node is gone since),
/// checking the text, titles and links the user saw; exact, whatever they hold.
fn bot_step(bot: &Bot, o: &Outbound) -> Value {
    let p = &o.payload;
    let kind_of_payload = payload_kind(p);
    let kind = bot
        .node_by_id(&o.flow, &o.node)
        .map(|r| bot.node(r).kind.name())
        .unwrap_or(kind_of_payload);
    let kind_name = p["type"].as_str().unwrap_or_default();
    let expect = match kind_name {
        "text" => Value::String(literal(p["text"]["body"].as_str().unwrap_or_default())),
        "interactive" => interactive(p),
        "image" | "video" | "audio" | "document" | "sticker" => {
            let media = &p[kind_name];
            match media["link"].as_str() {
                Some(link) => {
                    let mut m = Map::new();
                    m.insert("link".into(), Value::String(literal(link)));
                    if let Some(c) = media["caption"].as_str() {
                        m.insert("body".into(), Value::String(literal(c)));
                    }
                    Value::Object(m)
                }
                None => part(p, kind_name),
            }
        }
        "template" => {
            let mut template = p["template"].clone();
            let name = template
                .as_object_mut()
                .and_then(|t| t.remove("name"))
                .unwrap_or(Value::Null);
            let mut m = Map::new();
            m.insert(
                "name".into(),
                Value::String(literal(name.as_str().unwrap_or_default())),
            );
            m.insert("payload".into(), json!({ "template": literals(&template) }));
            Value::Object(m)
        }
        "reaction" => {
            json!({ "payload": { "reaction": { "emoji": literals(&p["reaction"]["emoji"]) } } })
        }
        _ => part(p, kind_name),
    };
    let mut m = Map::new();
    m.insert(kind.to_string(), expect);
    Value::Object(m)
}

/// `{ payload: { TYPE: ... } }`: the message's part of the payload, exactly.
fn part(p: &Value, kind: &str) -> Value {
    let mut inner = Map::new();
    inner.insert(kind.to_string(), literals(&p[kind]));
    json!({ "payload": inner })
}

/// An interactive message: its body, header and footer, and its buttons, rows or link.
fn interactive(p: &Value) -> Value {
    let i = &p["interactive"];
    let kind = i["type"].as_str().unwrap_or_default();
    let body = i["body"]["text"].as_str().unwrap_or_default();
    if kind == "location_request_message" {
        return Value::String(literal(body));
    }
    let mut m = Map::new();
    if let Some(h) = i["header"]["text"].as_str() {
        m.insert("header".into(), Value::String(literal(h)));
    }
    m.insert("body".into(), Value::String(literal(body)));
    if let Some(f) = i["footer"]["text"].as_str() {
        m.insert("footer".into(), Value::String(literal(f)));
    }
    let action = &i["action"];
    match kind {
        "button" => {
            let titles: Vec<Value> = action["buttons"]
                .as_array()
                .map(|b| b.iter().map(|b| b["reply"]["title"].clone()).collect())
                .unwrap_or_default();
            m.insert("buttons".into(), Value::Array(titles));
        }
        "list" => {
            if let Some(b) = action["button"].as_str() {
                m.insert("button".into(), Value::String(literal(b)));
            }
            let rows: Vec<Value> = action["sections"]
                .as_array()
                .map(|sections| {
                    sections
                        .iter()
                        .filter_map(|s| s["rows"].as_array())
                        .flatten()
                        .map(|r| r["title"].clone())
                        .collect()
                })
                .unwrap_or_default();
            m.insert("rows".into(), Value::Array(rows));
        }
        "cta_url" => {
            let params = &action["parameters"];
            if let Some(b) = params["display_text"].as_str() {
                m.insert("button".into(), Value::String(literal(b)));
            }
            if let Some(u) = params["url"].as_str() {
                m.insert("url".into(), Value::String(literal(u)));
            }
        }
        "flow" => {
            if let Some(b) = action["parameters"]["flow_cta"].as_str() {
                m.insert("button".into(), Value::String(literal(b)));
            }
        }
        // Other interactive kinds (products): the whole part, exactly.
        _ => return part(p, "interactive"),
    }
    Value::Object(m)
}

/// The node-kind name a test uses for a payload (when the node that sent it is gone).
fn payload_kind(p: &Value) -> &'static str {
    match p["type"].as_str().unwrap_or_default() {
        "text" => "say",
        "image" => "image",
        "video" => "video",
        "audio" => "audio",
        "document" => "document",
        "sticker" => "sticker",
        "template" => "template",
        "location" => "location",
        "contacts" => "contacts",
        "reaction" => "react",
        "interactive" => match p["interactive"]["type"].as_str().unwrap_or_default() {
            "button" => "buttons",
            "list" => "list",
            "location_request_message" => "request_location",
            "cta_url" => "cta_url",
            "flow" => "whatsapp_flow",
            _ => "payload",
        },
        _ => "payload",
    }
}

/// A text a test matches exactly: as is, unless it reads as a `/regex/`; then a regex
/// that matches exactly it.
pub fn literal(text: &str) -> String {
    if text.len() >= 2 && text.starts_with('/') && text.ends_with('/') {
        format!("/^{}$/", regex::escape(text))
    } else {
        text.to_string()
    }
}

/// `value` with every text made [`literal`] (a payload compared part by part).
fn literals(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(literal(s)),
        Value::Array(a) => Value::Array(a.iter().map(literals).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), literals(v))).collect())
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => value.clone(),
    }
}

/// `value` in YAML's flow style: `{ key: value, ... }`, `[a, b]`, text always quoted.
pub fn flow(value: &Value) -> String {
    match value {
        Value::Object(m) if m.is_empty() => "{}".into(),
        Value::Object(m) => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}: {}", plain_key(k), flow(v)))
                .collect();
            format!("{{ {} }}", parts.join(", "))
        }
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(flow).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::String(s) => scalar(s),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
    }
}

/// A key as written: plain when it is a simple identifier YAML reads as text.
fn plain_key(key: &str) -> String {
    let simple = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let special = matches!(
        key.to_ascii_lowercase().as_str(),
        "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
    );
    if simple && !special {
        key.to_string()
    } else {
        scalar(key)
    }
}

/// Text as a YAML double-quoted scalar: every character YAML does not print as is,
/// escaped.
pub fn scalar(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20
                || (0x7f..=0x9f).contains(&(c as u32))
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') =>
            {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Reads the test back as `parlance test` does and plays it on `bot`: `None` when it
/// passes, else why not. A test the reader refuses is a bug here (500).
fn check(bot: &Bot, rel: &Path, yaml: &str) -> Result<Option<String>, ApiError> {
    let (file, test) = crate::compile::read_test_text(rel, yaml).map_err(|diags| {
        let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
        internal(format!(
            "the recorded test does not read back as a test (a Parlance bug; please report it): {}",
            text.join("; ")
        ))
    })?;
    let env = crate::delivery::runtime::exposed_env(&bot.settings.expose_env);
    let report = crate::testing::run(bot, &file, &test, env);
    Ok(report.failure.map(|f| f.to_string()))
}

/// Writes the test into the bot folder's `tests/` (made when missing): never outside
/// the folder (a `tests` link that leads out is refused), never over a file unless
/// `overwrite` (else 409).
fn write(dir: &Path, rel: &Path, yaml: &str, overwrite: bool) -> Result<(), ApiError> {
    let io = |what: &str, e: std::io::Error| {
        tracing::warn!(error = %e, "{what}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "write_failed",
            format!("{what}: {e}"),
        )
    };
    let tests = Path::new("tests");
    if !dir.join(tests).exists() {
        std::fs::create_dir_all(dir.join(tests))
            .map_err(|e| io("cannot make the tests folder", e))?;
    }
    let folder = crate::source::bot_path::resolve(dir, tests).map_err(|p| {
        let why = p
            .outside_message("tests")
            .map_or_else(|| "the tests folder cannot be used".to_string(), |(m, _)| m);
        ApiError::new(StatusCode::BAD_REQUEST, "outside_bot_folder", why)
    })?;
    let Some(file_name) = rel.file_name() else {
        return Err(internal("a test path without a file name".into()));
    };
    let target = folder.join(file_name);
    let exists = |path: &Path| {
        ApiError::new(
            StatusCode::CONFLICT,
            "exists",
            format!(
                "{} exists already; choose another name, or send \"overwrite\": true",
                path.display()
            ),
        )
    };
    if overwrite {
        // A link in its place could point anywhere: replace it, never write through it.
        let temp =
            tempfile::NamedTempFile::new_in(&folder).map_err(|e| io("cannot write the test", e))?;
        std::fs::write(temp.path(), yaml).map_err(|e| io("cannot write the test", e))?;
        temp.persist(&target)
            .map_err(|e| io("cannot write the test", e.error))?;
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
    {
        Ok(mut f) => {
            std::io::Write::write_all(&mut f, yaml.as_bytes())
                .map_err(|e| io("cannot write the test", e))?;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(exists(rel)),
        Err(e) => Err(io("cannot write the test", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(wamid: &str, item: u64, node: &str, text: &str) -> Entry {
        Entry::Out(Outbound {
            wamid: wamid.into(),
            payload: json!({"type": "text", "text": {"body": text}}),
            status: "read".into(),
            error: None,
            at: 0,
            flow: "main".into(),
            node: node.into(),
            item,
        })
    }

    fn inbound(id: &str, at: i64, item: u64, text: &str) -> Entry {
        Entry::In(Inbound {
            id: id.into(),
            input: DevInput::Text(text.into()),
            name: Some("Ann".into()),
            at,
            item: Some(item),
        })
    }

    #[test]
    fn replies_stay_with_their_turn_and_long_pauses_advance_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("flows")).unwrap();
        std::fs::write(
            dir.path().join("flows/main.yaml"),
            "id: main\nnodes:\n  greet:\n    say: Hello\n  ask_name:\n    ask: { text: \"Name?\" }\n    save: name\n  done:\n    say: \"Bye {{ vars.name }}\"\n",
        )
        .unwrap();
        let bot = crate::compile::load_bot(dir.path())
            .bot
            .expect("the bot loads");
        // The user typed "Ann" before the first turn's replies went out.
        let history = vec![
            out("w0", 99, "greet", "from the API, before the user wrote"),
            inbound("m1", 1_000, 1, "hi"),
            inbound("m2", 121_000, 2, "Ann"),
            out("w1", 1, "greet", "Hello"),
            out("w2", 1, "ask_name", "Name?"),
            out("w3", 2, "done", "Bye Ann"),
        ];
        let recorded = build(&bot, "15550001111", "greets Ann", &history).unwrap();
        let steps: Vec<&str> = recorded
            .yaml
            .lines()
            .skip_while(|l| *l != "steps:")
            .skip(1)
            .collect();
        assert_eq!(
            steps,
            [
                "  - user: \"hi\"",
                "  - bot: { say: \"Hello\" }",
                "  - bot: { ask: \"Name?\" }",
                "  - advance: \"120s\"",
                "  - user: \"Ann\"",
                "  - bot: { say: \"Bye Ann\" }",
            ]
        );
        assert!(
            recorded
                .yaml
                .contains("contact: { wa_id: \"15550001111\", name: \"Ann\" }")
        );
        assert_eq!(recorded.notes.len(), 1, "{:?}", recorded.notes);
        let rel = Path::new("tests/greets_ann.yaml");
        assert_eq!(check(&bot, rel, &recorded.yaml).unwrap(), None);
        assert!(build(&bot, "15550001111", "x", &[]).is_err());
    }

    #[test]
    fn names_become_file_names_and_paths_are_refused() {
        assert_eq!(slug("Orders a pizza!").unwrap(), "orders_a_pizza");
        assert_eq!(slug("  größe: L ").unwrap(), "gr_e_l");
        for name in ["../../etc/passwd", "a/b", "a\\b", "..", "🍕", "  "] {
            assert!(slug(name).is_err(), "{name}");
        }
        assert_eq!(slug(&"x".repeat(100)).unwrap().len(), MAX_SLUG);
    }

    #[test]
    fn texts_that_read_as_regexes_are_matched_exactly() {
        assert_eq!(literal("hi"), "hi");
        assert_eq!(literal("/start/"), "/^/start/$/");
        assert_eq!(literal("/"), "/");
    }

    #[test]
    fn scalars_are_yaml_double_quoted() {
        assert_eq!(scalar("yes"), "\"yes\"");
        assert_eq!(scalar("a \"b\"\n\\"), "\"a \\\"b\\\"\\n\\\\\"");
        assert_eq!(scalar("\u{85}x"), "\"\\u0085x\"");
        assert_eq!(
            flow(&json!({"reply": "medium", "m": [1, true, null], "no": "x"})),
            "{ reply: \"medium\", m: [1, true, null], \"no\": \"x\" }"
        );
    }
}
