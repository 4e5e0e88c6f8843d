//! The webhook parser against the WhatsApp sample corpus (`fixtures/whatsapp/samples`, a
//! copy of `shared/whatsapp/samples` so the tests pass on a plain clone).
//!
//! * every file in `samples/inbound/` (and the `inbound--*` Meta-page copies in
//!   `samples/meta-docs-copy/`) parses, with no message lost: the items match the
//!   `messages[]`, `statuses[]`, `errors[]` and non-`messages` changes of the file;
//! * per file name, the facts a user would check (text body, reply id, status and error
//!   code, business-scoped sender, `Unsupported` type, `Other` field), written out as
//!   literals in [`rules`]; every file must be covered by at least one rule;
//! * per-kind counts over the corpus are printed (`--nocapture` to see them);
//! * bodies that are not webhooks fail with the right error, and a 1000-update batch
//!   comes out complete and in order.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use parlance::engine::{Event, EventKind};
use parlance::flow::MediaKind;
use parlance::whatsapp::inbound::{self, ApiError, Item, ParseError, UserId, Webhook};
use parlance::whatsapp::signature;
use serde_json::{Value, json};

/// `samples/inbound/` holds 132 files (README §6); fewer means the corpus went missing.
const MIN_INBOUND_FILES: usize = 132;

fn samples_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/whatsapp/samples");
    assert!(
        dir.join("inbound").is_dir(),
        "the WhatsApp sample corpus is missing: expected {}/inbound (a copy of shared/whatsapp/samples)",
        dir.display()
    );
    dir
}

/// (name, path) of every inbound sample: `inbound/*.json` and `meta-docs-copy/inbound--*.json`.
fn corpus() -> Vec<(String, PathBuf)> {
    let dir = samples_dir();
    let mut files = Vec::new();
    for (sub, prefix) in [("inbound", ""), ("meta-docs-copy", "inbound--")] {
        let entries = fs::read_dir(dir.join(sub))
            .unwrap_or_else(|e| panic!("cannot read {}/{sub}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("UTF-8 file name")
                .to_string();
            if name.ends_with(".json") && name.starts_with(prefix) {
                files.push((format!("{sub}/{name}"), path));
            }
        }
    }
    files.sort();
    let inbound = files
        .iter()
        .filter(|(n, _)| n.starts_with("inbound/"))
        .count();
    assert!(
        inbound >= MIN_INBOUND_FILES,
        "expected at least {MIN_INBOUND_FILES} files in samples/inbound, found {inbound}"
    );
    files
}

// ---------------------------------------------------------------------------------------
// Helpers over parsed items
// ---------------------------------------------------------------------------------------

type Check = Box<dyn Fn(&Webhook) -> Result<(), String>>;

fn messages(hook: &Webhook) -> Vec<(&Option<String>, &UserId, &Event, &str)> {
    hook.items
        .iter()
        .filter_map(|item| match item {
            Item::Message {
                phone_number_id,
                user,
                event,
                raw_type,
            } => Some((phone_number_id, user, event, raw_type.as_str())),
            _ => None,
        })
        .collect()
}

fn only_event(hook: &Webhook) -> Result<&Event, String> {
    match messages(hook).as_slice() {
        [(_, _, event, _)] => Ok(event),
        other => Err(format!("expected exactly one message, got {}", other.len())),
    }
}

fn only_kind(hook: &Webhook) -> Result<&EventKind, String> {
    only_event(hook).map(|e| &e.kind)
}

fn statuses(hook: &Webhook) -> Vec<&Item> {
    hook.items
        .iter()
        .filter(|i| matches!(i, Item::Status { .. }))
        .collect()
}

fn expect_kind(expected: EventKind) -> Check {
    Box::new(move |hook| {
        let kind = only_kind(hook)?;
        if *kind == expected {
            Ok(())
        } else {
            Err(format!("expected {expected:?}, got {kind:?}"))
        }
    })
}

fn text(body: &'static str) -> Check {
    expect_kind(EventKind::Text(body.into()))
}

fn reply(id: &'static str, title: &'static str) -> Check {
    expect_kind(EventKind::Reply {
        id: id.into(),
        title: title.into(),
    })
}

fn button(payload: &'static str, text: &'static str) -> Check {
    expect_kind(EventKind::Button {
        payload: payload.into(),
        text: text.into(),
    })
}

fn unsupported(what: &'static str) -> Check {
    expect_kind(EventKind::Unsupported(what.into()))
}

fn reaction(message_id: &'static str, emoji: &'static str) -> Check {
    expect_kind(EventKind::Reaction {
        message_id: message_id.into(),
        emoji: emoji.into(),
    })
}

fn media(
    kind: MediaKind,
    id: &'static str,
    mime: &'static str,
    caption: Option<&'static str>,
    filename: Option<&'static str>,
) -> Check {
    expect_kind(EventKind::Media {
        kind,
        id: id.into(),
        mime_type: Some(mime.into()),
        caption: caption.map(Into::into),
        filename: filename.map(Into::into),
    })
}

fn location(lat: f64, long: f64, name: Option<&'static str>) -> Check {
    Box::new(move |hook| match only_kind(hook)? {
        EventKind::Location {
            latitude,
            longitude,
            name: got,
            ..
        } if *latitude == lat && *longitude == long && got.as_deref() == name => Ok(()),
        other => Err(format!(
            "expected location {lat},{long} {name:?}, got {other:?}"
        )),
    })
}

fn contacts(count: usize, first_name: &'static str) -> Check {
    Box::new(move |hook| match only_kind(hook)? {
        EventKind::Contacts(cards)
            if cards.len() == count
                && cards[0]["name"]["formatted_name"].as_str() == Some(first_name) =>
        {
            Ok(())
        }
        other => Err(format!(
            "expected {count} contact cards, first {first_name:?}, got {other:?}"
        )),
    })
}

fn flow_reply(key: &'static str, value: &'static str, has_token: bool) -> Check {
    Box::new(move |hook| match only_kind(hook)? {
        EventKind::FlowReply(response)
            if response[key].as_str() == Some(value)
                && response.get("flow_token").is_some() == has_token =>
        {
            Ok(())
        }
        other => Err(format!(
            "expected a flow reply with {key}={value:?} (flow_token: {has_token}), got {other:?}"
        )),
    })
}

fn sender(expected: UserId) -> Check {
    Box::new(move |hook| {
        let all = messages(hook);
        if !all.is_empty() && all.iter().all(|(_, user, _, _)| **user == expected) {
            Ok(())
        } else {
            Err(format!(
                "expected every message from {expected:?}, got {:?}",
                all.iter().map(|m| m.1).collect::<Vec<_>>()
            ))
        }
    })
}

fn contact_name(name: &'static str) -> Check {
    Box::new(move |hook| {
        let event = only_event(hook)?;
        if event.contact_name.as_deref() == Some(name) {
            Ok(())
        } else {
            Err(format!(
                "expected contact {name:?}, got {:?}",
                event.contact_name
            ))
        }
    })
}

fn message_meta(id: &'static str, at: i64, phone_number_id: Option<&'static str>) -> Check {
    Box::new(move |hook| {
        let all = messages(hook);
        let [(pnid, _, event, _)] = all.as_slice() else {
            return Err("expected exactly one message".into());
        };
        if event.id.as_deref() == Some(id) && event.at == at && pnid.as_deref() == phone_number_id {
            Ok(())
        } else {
            Err(format!(
                "expected id {id}, at {at}, phone_number_id {phone_number_id:?}; got {:?}, {}, {pnid:?}",
                event.id, event.at
            ))
        }
    })
}

/// One status with this `status`; `code`: the first error's code for failures.
fn status(expected: &'static str, code: Option<i64>) -> Check {
    Box::new(move |hook| {
        let all = statuses(hook);
        let [Item::Status { status, errors, .. }] = all.as_slice() else {
            return Err(format!("expected exactly one status, got {:?}", hook.items));
        };
        if status != expected {
            return Err(format!("expected status {expected:?}, got {status:?}"));
        }
        match (code, errors.first()) {
            (None, None) => Ok(()),
            (Some(code), Some(ApiError { code: got, .. })) if *got == code => Ok(()),
            (_, got) => Err(format!("expected error code {code:?}, got {got:?}")),
        }
    })
}

fn recipient(expected: &'static str) -> Check {
    Box::new(move |hook| match statuses(hook).as_slice() {
        [Item::Status { recipient, .. }] if recipient.as_deref() == Some(expected) => Ok(()),
        other => Err(format!("expected recipient {expected:?}, got {other:?}")),
    })
}

fn callback_data(expected: &'static str) -> Check {
    Box::new(move |hook| match statuses(hook).as_slice() {
        [
            Item::Status {
                biz_opaque_callback_data: Some(data),
                ..
            },
        ] if data == expected => Ok(()),
        other => Err(format!(
            "expected biz_opaque_callback_data {expected:?}, got {other:?}"
        )),
    })
}

fn value_error(code: i64, details_contains: &'static str) -> Check {
    Box::new(move |hook| {
        let found = hook.items.iter().any(|item| match item {
            Item::Error { errors, .. } => errors.iter().any(|e| {
                e.code == code
                    && e.details
                        .as_deref()
                        .is_some_and(|d| d.contains(details_contains))
            }),
            _ => false,
        });
        if found {
            Ok(())
        } else {
            Err(format!(
                "expected an Error item with code {code}, got {:?}",
                hook.items
            ))
        }
    })
}

/// Only `Other` items, all with this field.
fn other(field: &'static str) -> Check {
    Box::new(move |hook| {
        let ok = !hook.items.is_empty()
            && hook
                .items
                .iter()
                .all(|i| matches!(i, Item::Other { field: f } if f == field));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "expected only Other {{ field: {field:?} }}, got {:?}",
                hook.items
            ))
        }
    })
}

/// Samples the parser must note something about: an `interactive` message without its
/// `interactive` object (Meta's 131000 "Unsupported webhook payload").
const NOTED: &[&str] = &["pywa--message--interactive-message-with-err.json"];

const BSUID: &str = "US.13491208655302741918";

/// (file name fragment, check). A file gets every rule whose fragment it contains.
fn rules() -> Vec<(&'static str, Check)> {
    use MediaKind::*;
    vec![
        // --- text
        (
            "meta-openapi--webhook--text-message.json",
            text("Does it come in another color?"),
        ),
        (
            "meta-openapi--webhook--text-message.json",
            contact_name("Sheena Nelson"),
        ),
        (
            "meta-openapi--webhook--text-message.json",
            message_meta(
                "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
                1_749_416_383,
                Some("106540352242922"),
            ),
        ),
        (
            "meta-openapi--webhook--text-message.json",
            sender(UserId::WaId("16505551234".into())),
        ),
        (
            "click-to-whatsapp-ad",
            text("Hello! Can I get more info on this?"),
        ),
        ("context-product-inquiry", text("Is this still available?")),
        ("pywa--message--text.json", text("Body Text")),
        ("pywa--message--text.json", contact_name("Test Name")),
        ("pywa--message--reply.json", text("replied text")),
        ("pywa--message--forwarded.json", text("forwarded text")),
        (
            "pywa--message--forwarded-many-times",
            text("text forwarded many times"),
        ),
        ("pywa--message--referral", text("BODY")),
        // --- business-scoped user ids (waj v25): no wa_id → the user_id
        ("v25--incoming-message", text("this is a text message")),
        ("v25--incoming-message", contact_name("test user name")),
        (
            "v25--incoming-message--with-username--",
            sender(UserId::Bsuid(BSUID.into())),
        ),
        (
            "v25--incoming-message--with-phone",
            sender(UserId::WaId("16315551181".into())),
        ),
        (
            "quick-reply-without-context",
            sender(UserId::WaId("972987654321".into())),
        ),
        // --- replies and buttons
        (
            "interactive-button-reply-message",
            reply("cancel-button", "Cancel"),
        ),
        (
            "interactive-list-reply",
            reply("priority_express", "Priority Mail Express"),
        ),
        (
            "pywa--callback-button--button",
            reply("callback_data", "title"),
        ),
        (
            "pywa--callback-selection--",
            reply("callback_data", "title"),
        ),
        (
            "pywa--callback-button--quick-reply",
            button("callback_data", "title"),
        ),
        (
            "meta-openapi--webhook--button-message",
            button("Unsubscribe", "Unsubscribe"),
        ),
        (
            "pywa--flow-completion--completion",
            flow_reply("flow_token", "AQAAAAACS5FpgQ_cAAAAAD0QI3s.", true),
        ),
        (
            "pywa--flow-completion--without-flow-token",
            flow_reply("comment_text", "Comment Text", false),
        ),
        // --- location, media, contacts, reactions
        (
            "meta-openapi--webhook--location-message",
            location(37.44221496582, -122.16165924072, Some("Philz Coffee")),
        ),
        (
            "location-reply-to-location-request",
            location(
                40.782910059774,
                -73.959075808525,
                Some("Solomon R. Guggenheim Museum"),
            ),
        ),
        (
            "pywa--message--chosen-location",
            location(37.4611978, -122.2164385, Some("Facebook HQ")),
        ),
        (
            "pywa--message--current-location",
            location(12.25089, 43.90539, None),
        ),
        (
            "meta-openapi--webhook--image-message",
            media(
                Image,
                "1003383421387256",
                "image/jpeg",
                Some("Taj Mahal"),
                None,
            ),
        ),
        (
            "pywa--message--image",
            media(Image, "65463453", "image/jpeg", None, None),
        ),
        (
            "pywa--message--media-with-url",
            media(Image, "65463453", "image/jpeg", None, None),
        ),
        (
            "pywa--message--video",
            media(Video, "765756756", "video/mp4", Some("caption"), None),
        ),
        (
            "pywa--message--audio",
            media(
                Audio,
                "1234567890987654321",
                "audio/ogg; codecs=opus",
                None,
                None,
            ),
        ),
        (
            "pywa--message--voice",
            media(
                Audio,
                "1234567890987654321",
                "audio/ogg; codecs=opus",
                None,
                None,
            ),
        ),
        (
            "pywa--message--document",
            media(
                Document,
                "1234567890987654321",
                "application/pdf",
                Some("caption"),
                Some("filename.pdf"),
            ),
        ),
        (
            "pywa--message--static-sticker",
            media(Sticker, "1234567890987654321", "image/webp", None, None),
        ),
        (
            "pywa--message--animated-sticker",
            media(Sticker, "1234567890987654321", "image/webp", None, None),
        ),
        ("contact-sharing-message", contacts(1, "Lucía Gómez")),
        ("pywa--message--contacts", contacts(3, "Chandler Bing")),
        (
            "meta-openapi--webhook--reaction-message",
            reaction(
                "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI0RTJEOTc2ODVERUY5RDlGNkYA",
                "👍",
            ),
        ),
        ("pywa--message--reaction", reaction("wamid.yzxyzx=", "😮")),
        ("pywa--message--unreaction-", reaction("wamid.yzxyzx=", "")),
        // --- what the engine has no event for: Unsupported(type), never dropped
        ("order-message", unsupported("order")),
        ("pywa--message--order", unsupported("order")),
        ("system-message", unsupported("system")),
        ("pywa--system--", unsupported("system")),
        (
            "pywa--system--",
            sender(UserId::WaId("972987654321".into())),
        ),
        (
            "pywa--system--phone-number-change",
            message_meta("wamid.xyzxyz==", 1_753_851_315, Some("1122334455667")),
        ),
        ("unsupported-message", unsupported("unsupported")),
        ("pywa--message--unsupported", unsupported("unsupported")),
        ("pywa--deleted-message--revoke", unsupported("revoke")),
        ("pywa--edited-message--image", unsupported("edit")),
        (
            "call-permission-update",
            unsupported("call_permission_reply"),
        ),
        ("interactive-message-with-err", unsupported("interactive")),
        (
            "interactive-message-with-err",
            value_error(131000, "Unsupported webhook payload"),
        ),
        // --- statuses
        ("pywa--message-status--sent", status("sent", None)),
        ("pywa--message-status--delivered", status("delivered", None)),
        ("pywa--message-status--read", status("read", None)),
        ("pywa--message-status--played", status("played", None)),
        (
            "pywa--message-status--failed",
            status("failed", Some(130472)),
        ),
        ("pywa--message-status--group", status("read", None)),
        ("pywa--message-status--group", recipient("fowefinoewcnw")),
        ("pywa--message-status--with-tracker", status("sent", None)),
        (
            "pywa--message-status--with-tracker",
            callback_data("some data"),
        ),
        (
            "inbound--status-failed-131049",
            status("failed", Some(131049)),
        ),
        ("inbound--status-sent-marketing-pmp", status("sent", None)),
        ("inbound--status-v24-no-conversation", status("sent", None)),
        ("v25--sent-status", status("sent", None)),
        ("v25--delivered-status", status("delivered", None)),
        ("v25--read-status", status("read", None)),
        ("was-sent-to-bsuid", recipient(BSUID)),
        ("was-sent-to-phone", recipient("16315551181")),
        // --- value.errors
        (
            "inbound--value-errors-130429",
            value_error(130429, "too many messages"),
        ),
        // --- other fields: logged, not run
        ("pywa--account-update--", other("account_update")),
        ("pywa--call-connect--", other("calls")),
        ("pywa--call-status--", other("calls")),
        ("pywa--call-terminate--", other("calls")),
        ("group-create-message", other("group_lifecycle_update")),
        (
            "group-remove-participants",
            other("group_participants_update"),
        ),
        ("group-settings-update", other("group_settings_update")),
        ("pywa--outgoing-message--", other("smb_message_echoes")),
        (
            "pywa--template-category-update",
            other("template_category_update"),
        ),
        (
            "pywa--template-components-update",
            other("message_template_components_update"),
        ),
        (
            "pywa--template-quality-update",
            other("message_template_quality_update"),
        ),
        (
            "pywa--template-status-update",
            other("message_template_status_update"),
        ),
        (
            "pywa--user-marketing-preferences",
            other("user_preferences"),
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// Cross-checks against the raw JSON: nothing lost, ids and times carried over
// ---------------------------------------------------------------------------------------

fn as_array(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The items a file must produce, derived independently from its raw JSON.
fn cross_check(raw: &Value, hook: &Webhook) -> Result<(), String> {
    let mut expected_messages = Vec::new();
    let mut expected_statuses = Vec::new();
    let mut expected_errors = 0;
    let mut expected_others = Vec::new();
    for entry in as_array(&raw["entry"]) {
        for change in as_array(&entry["changes"]) {
            let field = change["field"].as_str().unwrap_or_default();
            if field != "messages" {
                expected_others.push(field.to_string());
                continue;
            }
            let value = &change["value"];
            expected_messages.extend(as_array(&value["messages"]).iter().cloned());
            expected_statuses.extend(as_array(&value["statuses"]).iter().cloned());
            if !as_array(&value["errors"]).is_empty() {
                expected_errors += 1;
            }
        }
    }

    let got_messages = messages(hook);
    if got_messages.len() != expected_messages.len() {
        return Err(format!(
            "{} messages in the file, {} parsed",
            expected_messages.len(),
            got_messages.len()
        ));
    }
    for (raw, (_, user, event, raw_type)) in expected_messages.iter().zip(&got_messages) {
        if event.id.as_deref() != raw["id"].as_str() {
            return Err(format!("message id {:?} became {:?}", raw["id"], event.id));
        }
        let ts = raw["timestamp"]
            .as_str()
            .and_then(|s| s.parse::<i64>().ok());
        if Some(event.at) != ts {
            return Err(format!(
                "timestamp {:?} became {}",
                raw["timestamp"], event.at
            ));
        }
        if Some(*raw_type) != raw["type"].as_str() {
            return Err(format!("type {:?} became {raw_type:?}", raw["type"]));
        }
        let want_user = match (raw["from"].as_str(), raw["from_user_id"].as_str()) {
            (Some(from), _) => UserId::WaId(from.into()),
            (None, Some(bsuid)) => UserId::Bsuid(bsuid.into()),
            (None, None) => return Err("a sample message without a sender".into()),
        };
        if **user != want_user {
            return Err(format!("sender {want_user:?} became {user:?}"));
        }
        // The engine sees the WhatsApp type, except for types it has an event for under
        // another name (interactive replies, Flows) and media (named by kind).
        let type_name = event.kind.type_name();
        let consistent = match *raw_type {
            "interactive" => matches!(
                event.kind,
                EventKind::Reply { .. } | EventKind::FlowReply(_) | EventKind::Unsupported(_)
            ),
            t => type_name == t,
        };
        if !consistent {
            return Err(format!("type {raw_type:?} became event {type_name:?}"));
        }
    }

    let got_statuses = statuses(hook);
    if got_statuses.len() != expected_statuses.len() {
        return Err(format!(
            "{} statuses in the file, {} parsed",
            expected_statuses.len(),
            got_statuses.len()
        ));
    }
    for (raw, item) in expected_statuses.iter().zip(&got_statuses) {
        let Item::Status {
            message_id,
            status,
            at,
            errors,
            ..
        } = item
        else {
            unreachable!()
        };
        let ts = raw["timestamp"]
            .as_str()
            .and_then(|s| s.parse::<i64>().ok());
        if Some(message_id.as_str()) != raw["id"].as_str()
            || Some(status.as_str()) != raw["status"].as_str()
            || Some(*at) != ts
            || errors.len() != as_array(&raw["errors"]).len()
        {
            return Err(format!("status {raw} became {item:?}"));
        }
    }

    let got_errors = hook
        .items
        .iter()
        .filter(|i| matches!(i, Item::Error { .. }))
        .count();
    if got_errors != expected_errors {
        return Err(format!(
            "{expected_errors} value.errors expected, {got_errors} parsed"
        ));
    }
    let got_others: Vec<_> = hook
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Other { field } => Some(field.clone()),
            _ => None,
        })
        .collect();
    if got_others != expected_others {
        return Err(format!(
            "other fields {expected_others:?} became {got_others:?}"
        ));
    }
    Ok(())
}

fn kind_label(item: &Item) -> String {
    match item {
        Item::Message { event, .. } => format!("Message/{}", event.kind.type_name()),
        Item::Status { status, .. } => format!("Status/{status}"),
        Item::Error { .. } => "Error".to_string(),
        Item::Other { field } => format!("Other/{field}"),
    }
}

#[test]
fn every_inbound_sample_parses_with_the_expected_facts() {
    let rules = rules();
    let mut failures = Vec::new();
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_variant: BTreeMap<&str, usize> = BTreeMap::new();
    let mut rules_used = vec![0usize; rules.len()];
    let files = corpus();

    for (name, path) in &files {
        let bytes = fs::read(path).unwrap_or_else(|e| panic!("{name}: cannot read: {e}"));
        let hook = match inbound::parse(&bytes) {
            Ok(hook) => hook,
            Err(e) => {
                failures.push(format!("{name}: does not parse: {e}"));
                continue;
            }
        };
        // Notes mark what the parser had to work around; the corpus should need none
        // except where a sample is known to be odd.
        let expects_notes = NOTED.iter().any(|f| name.ends_with(f));
        if hook.notes.is_empty() == expects_notes {
            failures.push(format!(
                "{name}: notes {:?} (expected {})",
                hook.notes,
                if expects_notes { "some" } else { "none" }
            ));
        }
        for item in &hook.items {
            *by_kind.entry(kind_label(item)).or_default() += 1;
            let variant = match item {
                Item::Message { .. } => "Message",
                Item::Status { .. } => "Status",
                Item::Error { .. } => "Error",
                Item::Other { .. } => "Other",
            };
            *by_variant.entry(variant).or_default() += 1;
        }
        let raw: Value = serde_json::from_slice(&bytes).expect("samples are valid JSON");
        if let Err(e) = cross_check(&raw, &hook) {
            failures.push(format!("{name}: {e}"));
        }
        let mut covered = false;
        for (i, (fragment, check)) in rules.iter().enumerate() {
            if name.contains(fragment) {
                covered = true;
                rules_used[i] += 1;
                if let Err(e) = check(&hook) {
                    failures.push(format!("{name} [{fragment}]: {e}"));
                }
            }
        }
        if !covered {
            failures.push(format!(
                "{name}: no rule checks this file; add one to rules()"
            ));
        }
        // Signing and verifying works for every body as stored (UTF-8 included).
        let header = signature::sign("corpus-secret", &bytes);
        if signature::verify("corpus-secret", &bytes, Some(&header)).is_err() {
            failures.push(format!("{name}: sign/verify round trip failed"));
        }
    }
    for ((fragment, _), used) in rules.iter().zip(&rules_used) {
        if *used == 0 {
            failures.push(format!("rule {fragment:?} matches no sample"));
        }
    }

    println!("{} inbound samples parsed; items per variant:", files.len());
    for (variant, n) in &by_variant {
        println!("  {variant:<8} {n}");
    }
    println!("items per kind:");
    for (kind, n) in &by_kind {
        println!("  {kind:<45} {n}");
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// Bodies that are not webhooks, and big batches
// ---------------------------------------------------------------------------------------

#[test]
fn malformed_json_reports_line_and_column() {
    let err = inbound::parse(b"{\n  \"object\": \"whatsapp_business_account\",\n  \"entry\": [\n}")
        .expect_err("malformed");
    let ParseError::Json { line, column, .. } = &err else {
        panic!("expected a JSON error, got {err:?}");
    };
    assert_eq!((*line, *column), (4, 1), "{err}");
    assert!(
        err.to_string()
            .starts_with("malformed JSON at line 4, column 1:"),
        "{err}"
    );
    assert!(matches!(inbound::parse(b""), Err(ParseError::Json { .. })));
    assert!(matches!(
        inbound::parse(b"\xff\xfe{}"),
        Err(ParseError::Json { .. })
    ));
}

#[test]
fn a_json_array_is_not_a_webhook() {
    let body = json!([{"object": "whatsapp_business_account", "entry": []}]).to_string();
    let err = inbound::parse(body.as_bytes()).expect_err("array");
    assert_eq!(err, ParseError::NotAnObject("array"));
    assert_eq!(err.to_string(), "expected a JSON object, found an array");
    assert_eq!(
        inbound::parse(b"\"hi\""),
        Err(ParseError::NotAnObject("string"))
    );
}

#[test]
fn a_wrong_object_is_refused() {
    let body = json!({"object": "page", "entry": [{"id": "1", "messaging": []}]}).to_string();
    let err = inbound::parse(body.as_bytes()).expect_err("page");
    assert_eq!(err, ParseError::WrongObject("\"page\"".into()));
    assert!(
        err.to_string().contains("whatsapp_business_account"),
        "{err}"
    );
    let err = inbound::parse(br#"{"object": 1}"#).expect_err("number");
    assert_eq!(err, ParseError::WrongObject("1".into()));
}

#[test]
fn an_empty_object_is_refused() {
    let err = inbound::parse(b"{}").expect_err("empty");
    assert_eq!(err, ParseError::MissingObject);
    assert!(err.to_string().contains("\"object\""), "{err}");
    // The envelope alone is a webhook with nothing in it.
    let hook = inbound::parse(br#"{"object":"whatsapp_business_account","entry":[]}"#)
        .expect("empty batch");
    assert!(hook.items.is_empty() && hook.notes.is_empty(), "{hook:?}");
}

fn text_message(i: usize) -> Value {
    json!({
        "from": format!("{}", 15550000000u64 + i as u64),
        "id": format!("wamid.{i}"),
        "timestamp": format!("{}", 1_700_000_000 + i),
        "type": "text",
        "text": {"body": format!("message {i}")}
    })
}

fn assert_text_in_order(items: &[Item], expected: impl Iterator<Item = usize>) {
    let mut count = 0;
    for (item, i) in items.iter().zip(expected) {
        count += 1;
        match item {
            Item::Message { user, event, .. } => {
                assert_eq!(event.id.as_deref(), Some(format!("wamid.{i}").as_str()));
                assert_eq!(event.at, 1_700_000_000 + i as i64);
                assert_eq!(event.kind, EventKind::Text(format!("message {i}")));
                assert_eq!(
                    user,
                    &UserId::WaId(format!("{}", 15550000000u64 + i as u64))
                );
            }
            other => panic!("item {i}: expected a message, got {other:?}"),
        }
    }
    assert_eq!(count, items.len());
}

#[test]
fn a_batch_of_1000_messages_parses_to_1000_items_in_order() {
    let messages: Vec<Value> = (0..1000).map(text_message).collect();
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "PNID"},
            "messages": messages
        }}]}]
    })
    .to_string();
    let hook = inbound::parse(body.as_bytes()).expect("batch parses");
    assert_eq!(hook.items.len(), 1000);
    assert!(
        hook.notes.is_empty(),
        "{:?}",
        &hook.notes[..hook.notes.len().min(5)]
    );
    assert_text_in_order(&hook.items, 0..1000);
}

#[test]
fn a_batch_spread_over_entries_and_changes_keeps_body_order() {
    // 10 entries × 10 changes × (9 messages + 1 status) = 1000 updates.
    let mut entries = Vec::new();
    let mut n = 0;
    for e in 0..10 {
        let mut changes = Vec::new();
        for c in 0..10 {
            let messages: Vec<Value> = (n..n + 9).map(text_message).collect();
            n += 9;
            changes.push(json!({"field": "messages", "value": {
                "metadata": {"phone_number_id": format!("P{e}")},
                "messages": messages,
                "statuses": [{"id": format!("s{e}.{c}"), "status": "delivered", "timestamp": "1"}]
            }}));
        }
        entries.push(json!({"id": format!("W{e}"), "changes": changes}));
    }
    let body = json!({"object": "whatsapp_business_account", "entry": entries}).to_string();
    let hook = inbound::parse(body.as_bytes()).expect("batch parses");
    assert_eq!(hook.items.len(), 1000);
    for (block, chunk) in hook.items.chunks(10).enumerate() {
        let (e, c) = (block / 10, block % 10);
        assert_text_in_order(&chunk[..9], block * 9..block * 9 + 9);
        assert!(
            matches!(&chunk[9], Item::Status { message_id, phone_number_id: Some(p), .. }
                if *message_id == format!("s{e}.{c}") && *p == format!("P{e}")),
            "{:?}",
            chunk[9]
        );
    }
}

/// JSON pointers of every node below the root.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                out.push(path.clone());
                pointers(child, path, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let path = format!("{at}/{i}");
                out.push(path.clone());
                pointers(child, path, out);
            }
        }
        _ => {}
    }
}

#[test]
fn any_part_of_any_sample_can_be_the_wrong_type_without_failing_the_body() {
    let replacements = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1.5e300),
        json!("x"),
        json!([]),
        json!({}),
    ];
    let mut parses = 0;
    for (name, path) in corpus() {
        let original: Value =
            serde_json::from_slice(&fs::read(&path).expect("readable")).expect("valid JSON");
        let mut all = Vec::new();
        pointers(&original, String::new(), &mut all);
        for pointer in all.iter().filter(|p| p.as_str() != "/object") {
            for replacement in &replacements {
                let mut mutated = original.clone();
                *mutated.pointer_mut(pointer).expect("pointer exists") = replacement.clone();
                let body = serde_json::to_vec(&mutated).expect("serialises");
                parses += 1;
                if let Err(e) = inbound::parse(&body) {
                    panic!("{name}: {pointer} = {replacement} fails the whole body: {e}");
                }
            }
        }
    }
    println!("{parses} mutated bodies parsed");
}
