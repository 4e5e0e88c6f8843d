//! Checks the outbound WhatsApp Cloud API JSON Schemas in `schemas/whatsapp/`.
//!
//! * every schema file is valid JSON, declares draft 2020-12 and compiles;
//! * every property a bot designer can see in an error carries a description;
//! * every outbound sample in the sample corpus (`fixtures/whatsapp/samples`, copied from shared/) validates,
//!   except the files in [`ALLOWED_FAILURES`], which must fail exactly where the list says;
//! * hand-written payloads: limits are enforced at the right instance path, and minimal
//!   payloads of every supported type are accepted.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use jsonschema::Validator;
use serde_json::{Value, json};

const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";
const ID_BASE: &str = "https://parlance.dev/schemas/whatsapp/";
const MESSAGE_SCHEMA: &str = "message.schema.json";
const STATUS_SCHEMA: &str = "status.schema.json";

/// Samples that do not validate, with the exact set of instance paths that must fail.
/// Listing the paths (instead of skipping the file) keeps the rest of each sample checked.
/// Paths are relative to `samples/`.
const ALLOWED_FAILURES: &[(&str, &[&str], &str)] = &[
    // Meta OAS example that omits "type". Meta treats a missing type as "text", and this
    // body has no `text` object, so Meta would reject it too. The same body with
    // "type": "interactive" is `send-list-message.json`, which validates.
    (
        "outbound/meta-openapi--send-reply-to-list-message.json",
        &[""],
        "no `type`, so it defaults to text, but there is no `text` object",
    ),
    // Interactive subtypes Parlance does not render (commerce / payments).
    (
        "outbound/meta-openapi--send-catalog-message.json",
        &["/interactive/type"],
        "interactive type catalog_message is not covered",
    ),
    (
        "outbound/meta-openapi--send-multi-product-message.json",
        &["/interactive/type"],
        "interactive type product_list is not covered",
    ),
    (
        "outbound/meta-openapi--send-single-product-message.json",
        &["/interactive/type"],
        "interactive type product is not covered",
    ),
    (
        "outbound/meta-openapi--send-order-details-message.json",
        &["/interactive/type"],
        "interactive type order_details is not covered",
    ),
    (
        "outbound/meta-openapi--send-order-status-message.json",
        &["/interactive/type"],
        "interactive type order_status is not covered",
    ),
    // Template name placeholders that break Meta's own naming rule (lowercase, digits, `_`).
    (
        "outbound/meta-openapi--send-message-template-interactive.json",
        &["/template/name"],
        "placeholder template name \"template-name\" contains '-'",
    ),
    (
        "outbound/meta-openapi--send-message-template-media.json",
        &["/template/name"],
        "placeholder template name \"template-name\" contains '-'",
    ),
    (
        "outbound/meta-openapi--send-message-template-text.json",
        &["/template/name"],
        "placeholder template name \"template-name\" contains '-'",
    ),
    (
        "outbound/meta-openapi--send-sample-shipping-confirmation-template.json",
        &["/template/name"],
        "placeholder template name \"template-name\" contains '-'",
    ),
    (
        "outbound/meta-openapi--send-sample-text-message.json",
        &["/template/name"],
        "placeholder template name \"template-name\" contains '-'",
    ),
    (
        "outbound/meta-openapi--send-flow-template-message.json",
        &["/template/name"],
        "placeholder template name \"<TEMPLATE_NAME>\" has '<', '>' and capitals",
    ),
    // The quick-reply parameters are JSON booleans (`"text": true` / `false`), most likely the
    // YAML words Yes/No of the sample_issue_resolution buttons turned into booleans; a text
    // parameter is a string in Meta's reference.
    (
        "outbound/meta-openapi--send-sample-issue-resolution-template.json",
        &[
            "/template/components/1/parameters/0/text",
            "/template/components/2/parameters/0/text",
        ],
        "button text parameters are booleans, not strings",
    ),
    // pywa test body for POST /marketing_messages (not /messages) with a stub template that
    // has no `language`, which Meta requires.
    (
        "outbound/pywa--send-marketing-message-template.json",
        &["/template"],
        "stub template without `language` (marketing_messages endpoint test)",
    ),
];

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn schema_dir() -> PathBuf {
    repo_root().join("schemas/whatsapp")
}

fn samples_dir() -> PathBuf {
    repo_root().join("fixtures/whatsapp/samples")
}

fn load_json(path: &Path) -> Value {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

fn validator(schema_file: &str) -> Validator {
    let path = schema_dir().join(schema_file);
    let schema = load_json(&path);
    jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("{} does not compile: {e}", path.display()))
}

fn message_validator() -> Validator {
    validator(MESSAGE_SCHEMA)
}

fn status_validator() -> Validator {
    validator(STATUS_SCHEMA)
}

/// Instance paths (JSON pointers) of all validation errors.
fn error_paths(validator: &Validator, instance: &Value) -> BTreeSet<String> {
    validator
        .iter_errors(instance)
        .map(|e| e.instance_path().to_string())
        .collect()
}

/// One line per error: `<instance path>: <message>`.
fn error_report(validator: &Validator, instance: &Value) -> String {
    validator
        .iter_errors(instance)
        .map(|e| format!("  {:?}: {}", e.instance_path().to_string(), e))
        .collect::<Vec<_>>()
        .join("\n")
}

#[track_caller]
fn assert_valid(validator: &Validator, instance: &Value) {
    let report = error_report(validator, instance);
    assert!(
        report.is_empty(),
        "expected payload to be valid:\n{instance:#}\nerrors:\n{report}"
    );
}

/// Asserts that the payload is rejected and that the errors sit exactly at `paths`.
#[track_caller]
fn assert_rejected_at(validator: &Validator, instance: &Value, paths: &[&str]) {
    let expected: BTreeSet<String> = paths.iter().map(|p| (*p).to_string()).collect();
    let actual = error_paths(validator, instance);
    assert!(
        !actual.is_empty(),
        "expected payload to be rejected:\n{instance:#}"
    );
    assert_eq!(
        actual,
        expected,
        "payload rejected at unexpected paths; errors:\n{}",
        error_report(validator, instance)
    );
}

/// A message envelope of the given `type` carrying `payload` under the key of the same name.
fn message(kind: &str, payload: Value) -> Value {
    let mut msg = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "+16505551234",
        "type": kind,
    });
    msg[kind] = payload;
    msg
}

fn reply_button(id: &str, title: &str) -> Value {
    json!({"type": "reply", "reply": {"id": id, "title": title}})
}

fn buttons_message(buttons: Vec<Value>) -> Value {
    message(
        "interactive",
        json!({
            "type": "button",
            "body": {"text": "Pick one"},
            "action": {"buttons": buttons},
        }),
    )
}

fn list_message(row: Value) -> Value {
    message(
        "interactive",
        json!({
            "type": "list",
            "body": {"text": "Which shipping option do you prefer?"},
            "action": {
                "button": "Options",
                "sections": [{"title": "Shipping", "rows": [row]}],
            },
        }),
    )
}

// ---------------------------------------------------------------- the schema files themselves

fn schema_files() -> Vec<PathBuf> {
    let dir = schema_dir();
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn schema_files_are_valid_draft_2020_12_schemas() {
    let files = schema_files();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for required in [MESSAGE_SCHEMA, STATUS_SCHEMA] {
        assert!(names.iter().any(|n| n == required), "{required} is missing");
    }
    for (path, name) in files.iter().zip(&names) {
        let schema = load_json(path);
        assert_eq!(schema["$schema"], DRAFT_2020_12, "{name}: wrong $schema");
        assert_eq!(
            schema["$id"],
            format!("{ID_BASE}{name}").as_str(),
            "{name}: $id must match the file name"
        );
        assert!(
            schema["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{name}: missing title"
        );
        if let Err(e) = jsonschema::draft202012::meta::validate(&schema) {
            panic!(
                "{name} violates the 2020-12 meta-schema at {}: {e}",
                e.instance_path()
            );
        }
        if let Err(e) = jsonschema::draft202012::new(&schema) {
            panic!("{name} does not compile: {e}");
        }
        println!("schema ok: {name}");
    }
}

/// Walks a schema and collects the locations of properties without a description.
/// Subschemas under `if` are conditions, never reported to the user, and are skipped.
fn missing_descriptions(node: &Value, location: &str, out: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "if" {
                    continue;
                }
                let child_location = format!("{location}/{key}");
                if key == "properties"
                    && let Value::Object(props) = child
                {
                    for (name, prop) in props {
                        let has_description = prop
                            .get("description")
                            .and_then(Value::as_str)
                            .is_some_and(|d| !d.trim().is_empty());
                        if !has_description {
                            out.push(format!("{child_location}/{name}"));
                        }
                    }
                }
                if key == "$defs"
                    && let Value::Object(defs) = child
                {
                    for (name, def) in defs {
                        for field in ["title", "description"] {
                            if def.get(field).and_then(Value::as_str).is_none() {
                                out.push(format!("{child_location}/{name} ({field})"));
                            }
                        }
                    }
                }
                missing_descriptions(child, &child_location, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                missing_descriptions(item, &format!("{location}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_property_has_a_description() {
    for path in schema_files() {
        let schema = load_json(&path);
        let mut missing = Vec::new();
        missing_descriptions(&schema, "", &mut missing);
        assert!(
            missing.is_empty(),
            "{}: properties without description:\n{}",
            path.display(),
            missing.join("\n")
        );
    }
}

// ---------------------------------------------------------------- the shared sample corpus

/// Outbound samples: every file in `outbound/` plus the `outbound--*` transcriptions of
/// Meta's pages in `meta-docs-copy/`, as paths relative to `samples/`.
fn outbound_samples(samples: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for (folder, prefix) in [("outbound", ""), ("meta-docs-copy", "outbound--")] {
        let dir = samples.join(folder);
        let entries =
            fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let name = entry.expect("directory entry").file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".json") && name.starts_with(prefix) {
                found.push(format!("{folder}/{name}"));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn outbound_samples_validate() {
    let samples = samples_dir();
    assert!(
        samples.is_dir(),
        "WhatsApp samples not found at {} (fixtures/whatsapp/samples is checked in); this test must not be skipped",
        samples.display()
    );
    let message_schema = message_validator();
    let status_schema = status_validator();

    let files = outbound_samples(&samples);
    assert!(
        files.len() >= 50,
        "only {} outbound samples found in {}",
        files.len(),
        samples.display()
    );
    for (allowed, _, _) in ALLOWED_FAILURES {
        assert!(
            files.iter().any(|f| f == allowed),
            "allow-listed sample {allowed} does not exist (stale allow-list entry)"
        );
    }

    let mut problems = Vec::new();
    let mut validated = 0;
    for file in &files {
        let instance = load_json(&samples.join(file));
        // Mark-as-read / typing-indicator bodies carry a top-level `status` and no `type`.
        let (schema, schema_name) = if instance.get("status").is_some() {
            (&status_schema, STATUS_SCHEMA)
        } else {
            (&message_schema, MESSAGE_SCHEMA)
        };
        let actual = error_paths(schema, &instance);
        match ALLOWED_FAILURES.iter().find(|(name, _, _)| name == file) {
            None => {
                if actual.is_empty() {
                    validated += 1;
                    println!("valid    {file} ({schema_name})");
                } else {
                    problems.push(format!(
                        "{file} is rejected by {schema_name}:\n{}",
                        error_report(schema, &instance)
                    ));
                }
            }
            Some((_, paths, reason)) => {
                let expected: BTreeSet<String> = paths.iter().map(|p| (*p).to_string()).collect();
                if actual == expected {
                    println!("allowed  {file} ({schema_name}): {reason}");
                } else {
                    problems.push(format!(
                        "{file} is allow-listed to fail at {expected:?} ({reason}) but fails at \
                         {actual:?}:\n{}",
                        error_report(schema, &instance)
                    ));
                }
            }
        }
    }
    println!(
        "{} outbound samples: {validated} valid, {} allow-listed",
        files.len(),
        ALLOWED_FAILURES.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

// ---------------------------------------------------------------- negative tests

#[test]
fn rejects_four_reply_buttons() {
    let v = message_validator();
    let three: Vec<Value> = (1..=3)
        .map(|i| reply_button(&format!("b{i}"), "Ok"))
        .collect();
    assert_valid(&v, &buttons_message(three));
    let four: Vec<Value> = (1..=4)
        .map(|i| reply_button(&format!("b{i}"), "Ok"))
        .collect();
    assert_rejected_at(&v, &buttons_message(four), &["/interactive/action/buttons"]);
}

#[test]
fn rejects_reply_button_title_of_21_chars() {
    let v = message_validator();
    assert_valid(
        &v,
        &buttons_message(vec![reply_button("b1", &"x".repeat(20))]),
    );
    assert_rejected_at(
        &v,
        &buttons_message(vec![reply_button("b1", &"x".repeat(21))]),
        &["/interactive/action/buttons/0/reply/title"],
    );
}

#[test]
fn rejects_unknown_field_in_reply_button() {
    let v = message_validator();
    let mut button = reply_button("b1", "Ok");
    button["reply"]["payload"] = json!("x");
    assert_rejected_at(
        &v,
        &buttons_message(vec![button]),
        &["/interactive/action/buttons/0/reply"],
    );
}

#[test]
fn rejects_text_body_of_4097_chars() {
    let v = message_validator();
    assert_valid(&v, &message("text", json!({"body": "x".repeat(4096)})));
    assert_rejected_at(
        &v,
        &message("text", json!({"body": "x".repeat(4097)})),
        &["/text/body"],
    );
}

#[test]
fn rejects_list_row_description_of_73_chars() {
    let v = message_validator();
    let row = |len: usize| json!({"id": "r1", "title": "Row", "description": "d".repeat(len)});
    assert_valid(&v, &list_message(row(72)));
    assert_rejected_at(
        &v,
        &list_message(row(73)),
        &["/interactive/action/sections/0/rows/0/description"],
    );
}

#[test]
fn rejects_list_with_media_header() {
    let v = message_validator();
    let mut msg = list_message(json!({"id": "r1", "title": "Row"}));
    msg["interactive"]["header"] = json!({"type": "image", "image": {"id": "123"}});
    // The header is both of the wrong type and missing the text a list header needs.
    assert_rejected_at(
        &v,
        &msg,
        &["/interactive/header", "/interactive/header/type"],
    );
}

#[test]
fn rejects_image_with_both_id_and_link() {
    let v = message_validator();
    assert_rejected_at(
        &v,
        &message(
            "image",
            json!({"id": "1479537139650973", "link": "https://example.com/a.png"}),
        ),
        &["/image"],
    );
}

#[test]
fn rejects_image_with_neither_id_nor_link() {
    let v = message_validator();
    assert_rejected_at(&v, &message("image", json!({"caption": "hi"})), &["/image"]);
}

#[test]
fn rejects_audio_with_caption() {
    let v = message_validator();
    assert_rejected_at(
        &v,
        &message("audio", json!({"id": "123", "caption": "listen"})),
        &["/audio/caption"],
    );
}

#[test]
fn rejects_sticker_with_caption() {
    let v = message_validator();
    assert_rejected_at(
        &v,
        &message("sticker", json!({"id": "123", "caption": "hi"})),
        &["/sticker/caption"],
    );
}

#[test]
fn rejects_template_name_with_uppercase() {
    let v = message_validator();
    assert_rejected_at(
        &v,
        &message(
            "template",
            json!({"name": "Order_Confirmation", "language": {"code": "en_US"}}),
        ),
        &["/template/name"],
    );
}

#[test]
fn rejects_six_contacts() {
    let v = message_validator();
    let contacts = |n: usize| -> Value {
        (0..n)
            .map(|i| json!({"name": {"formatted_name": format!("Person {i}"), "first_name": "P"}}))
            .collect()
    };
    assert_valid(&v, &message("contacts", contacts(5)));
    assert_rejected_at(&v, &message("contacts", contacts(6)), &["/contacts"]);
}

#[test]
fn rejects_unknown_type() {
    let v = message_validator();
    assert_rejected_at(
        &v,
        &message("poll", json!({"question": "Lunch?"})),
        &["/type"],
    );
}

#[test]
fn rejects_type_without_its_payload_object() {
    let v = message_validator();
    let mut msg = message("image", json!({"id": "123"}));
    msg.as_object_mut().unwrap().remove("image");
    assert_rejected_at(&v, &msg, &[""]);
}

#[test]
fn rejects_flow_with_both_id_and_name() {
    let v = message_validator();
    let msg = message(
        "interactive",
        json!({
            "type": "flow",
            "body": {"text": "Book a table"},
            "action": {"name": "flow", "parameters": {
                "flow_message_version": "3",
                "flow_id": "1234",
                "flow_name": "booking",
                "flow_cta": "Book",
            }},
        }),
    );
    assert_rejected_at(&v, &msg, &["/interactive/action/parameters"]);
}

#[test]
fn rejects_wrong_messaging_product_and_empty_recipient() {
    let v = message_validator();
    let mut msg = message("text", json!({"body": "hi"}));
    msg["messaging_product"] = json!("sms");
    msg["to"] = json!("");
    assert_rejected_at(&v, &msg, &["/messaging_product", "/to"]);
}

#[test]
fn rejects_status_with_unknown_typing_indicator() {
    let v = status_validator();
    let body = json!({
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": "wamid.1",
        "typing_indicator": {"type": "audio"},
    });
    assert_rejected_at(&v, &body, &["/typing_indicator/type"]);
}

// ---------------------------------------------------------------- positive tests

#[test]
fn accepts_minimal_text() {
    let v = message_validator();
    assert_valid(&v, &message("text", json!({"body": "Hello"})));
    assert_valid(
        &v,
        &message(
            "text",
            json!({"body": "See https://example.com", "preview_url": true}),
        ),
    );
}

#[test]
fn accepts_text_without_type_and_with_envelope_extras() {
    let v = message_validator();
    assert_valid(
        &v,
        &json!({
            "messaging_product": "whatsapp",
            "to": "16505551234",
            "text": {"body": "type defaults to text"},
        }),
    );
    let mut msg = message("text", json!({"body": "hi"}));
    msg["recipient_type"] = json!("group");
    msg["context"] = json!({"message_id": "wamid.1"});
    msg["biz_opaque_callback_data"] = json!("tracker");
    assert_valid(&v, &msg);
}

#[test]
fn accepts_minimal_media() {
    let v = message_validator();
    for kind in ["image", "video", "audio", "document", "sticker"] {
        assert_valid(&v, &message(kind, json!({"id": "1479537139650973"})));
        assert_valid(
            &v,
            &message(kind, json!({"link": "https://example.com/file"})),
        );
    }
    assert_valid(
        &v,
        &message("image", json!({"id": "1", "caption": "c".repeat(1024)})),
    );
    assert_valid(
        &v,
        &message(
            "document",
            json!({"link": "https://example.com/i.pdf", "caption": "Invoice", "filename": "i.pdf"}),
        ),
    );
}

#[test]
fn accepts_minimal_reply_buttons() {
    let v = message_validator();
    assert_valid(&v, &buttons_message(vec![reply_button("yes", "Yes")]));
    let mut msg = buttons_message(vec![reply_button("yes", "Yes"), reply_button("no", "No")]);
    msg["interactive"]["header"] = json!({"type": "text", "text": "Question"});
    msg["interactive"]["footer"] = json!({"text": "Footer"});
    assert_valid(&v, &msg);
}

#[test]
fn accepts_minimal_list() {
    let v = message_validator();
    assert_valid(&v, &list_message(json!({"id": "r1", "title": "Row"})));
}

#[test]
fn accepts_minimal_cta_url() {
    let v = message_validator();
    assert_valid(
        &v,
        &message(
            "interactive",
            json!({
                "type": "cta_url",
                "body": {"text": "See the dates"},
                "action": {"name": "cta_url", "parameters": {
                    "display_text": "See Dates",
                    "url": "https://example.com",
                }},
            }),
        ),
    );
}

#[test]
fn accepts_minimal_flow() {
    let v = message_validator();
    assert_valid(
        &v,
        &message(
            "interactive",
            json!({
                "type": "flow",
                "body": {"text": "Book a table"},
                "action": {"name": "flow", "parameters": {
                    "flow_message_version": "3",
                    "flow_name": "booking",
                    "flow_cta": "Book now",
                }},
            }),
        ),
    );
}

#[test]
fn accepts_minimal_location_request() {
    let v = message_validator();
    assert_valid(
        &v,
        &message(
            "interactive",
            json!({
                "type": "location_request_message",
                "body": {"text": "Where should we pick you up?"},
                "action": {"name": "send_location"},
            }),
        ),
    );
}

#[test]
fn accepts_minimal_template() {
    let v = message_validator();
    assert_valid(
        &v,
        &message(
            "template",
            json!({"name": "hello_world", "language": {"code": "en_US"}}),
        ),
    );
    assert_valid(
        &v,
        &message(
            "template",
            json!({
                "name": "order_update_2",
                "language": {"code": "en", "policy": "deterministic"},
                "components": [
                    {"type": "header", "parameters": [{"type": "text", "text": "Order 42"}]},
                    {"type": "body", "parameters": [
                        {"type": "text", "parameter_name": "first_name", "text": "Ana"},
                        {"type": "currency", "currency":
                            {"fallback_value": "$1.50", "code": "USD", "amount_1000": 1500}},
                        {"type": "date_time", "date_time": {"fallback_value": "May 5"}},
                    ]},
                    {"type": "button", "sub_type": "quick_reply", "index": "0",
                     "parameters": [{"type": "payload", "payload": "STOP"}]},
                    {"type": "button", "sub_type": "url", "index": 1,
                     "parameters": [{"type": "text", "text": "orders/42"}]},
                ],
            }),
        ),
    );
}

#[test]
fn accepts_minimal_location() {
    let v = message_validator();
    assert_valid(
        &v,
        &message(
            "location",
            json!({"latitude": 37.4847, "longitude": -122.1477}),
        ),
    );
}

#[test]
fn accepts_minimal_contacts() {
    let v = message_validator();
    assert_valid(
        &v,
        &message(
            "contacts",
            json!([{"name": {"formatted_name": "Ana Lima"}}]),
        ),
    );
}

#[test]
fn accepts_minimal_reaction_and_its_removal() {
    let v = message_validator();
    assert_valid(
        &v,
        &message("reaction", json!({"message_id": "wamid.1", "emoji": "👍"})),
    );
    assert_valid(
        &v,
        &message("reaction", json!({"message_id": "wamid.1", "emoji": ""})),
    );
}

#[test]
fn accepts_mark_as_read_and_typing_indicator() {
    let v = status_validator();
    let mut body =
        json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.1"});
    assert_valid(&v, &body);
    body["typing_indicator"] = json!({"type": "text"});
    assert_valid(&v, &body);
}
