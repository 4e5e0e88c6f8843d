//! Stage 2a: validate a file against its generated JSON Schema and say what is wrong in
//! a bot designer's words.
//!
//! Raw validator output is made for machines ("is not valid under any of the schemas
//! listed in the 'anyOf' keyword"). For every alternative (`anyOf`/`oneOf`) we pick the
//! branch the designer most likely meant, the one their value got furthest into, and
//! report its errors; for unknown keys we suggest the closest allowed key.

use crate::diag::{Code, Diagnostic, did_you_mean};
use crate::source::{SourceFile, YamlPath};
use crate::spec::FileKind;
use crate::spec::flow::NODE_KINDS;
use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{JsonType, ValidationError};
use serde_json::Value;

/// The outcome of a schema check: diagnostics, and the JSON pointers that had errors (so
/// later stages leave those parts out instead of reporting the same mistake twice). An
/// unknown key's pointer is the key itself (`/nodes/menu/colour`), so that leaving it out
/// keeps the rest of its mapping.
#[derive(Debug, Default)]
pub struct SchemaCheck {
    pub diagnostics: Vec<Diagnostic>,
    pub bad_pointers: Vec<String>,
}

impl SchemaCheck {
    /// Whether the value at `pointer`, or anything inside it, broke the schema.
    pub fn is_bad(&self, pointer: &str) -> bool {
        self.bad_pointers
            .iter()
            .any(|p| p == pointer || p.starts_with(&format!("{pointer}/")))
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Problem {
    pointer: String,
    /// Report at the key (`pointer` + this key) rather than at the value.
    key: Option<String>,
    code: Code,
    message: String,
    hint: Option<String>,
}

/// Validates `json` (the file's content) against the schema of `kind`.
pub fn check(file: &SourceFile, kind: FileKind, json: &Value) -> SchemaCheck {
    let schema = kind.cached_schema();
    let mut problems = Vec::new();
    // Valid files are the common case, and checking validity is much cheaper than
    // collecting every error.
    if kind.validator().is_valid(json) {
        return SchemaCheck::default();
    }
    for error in kind.validator().iter_errors(json) {
        explain(&error, json, schema, kind, &mut problems);
    }
    suppress_redundant(&mut problems);
    let mut check = SchemaCheck::default();
    let Some(tree) = &file.tree else { return check };
    for p in problems {
        let path = YamlPath::from_pointer(&p.pointer, tree);
        let diag = match &p.key {
            Some(key) => file.diag_at_key(&path.key(key), p.code, p.message),
            None => file.diag_at(&path, p.code, p.message),
        };
        check.diagnostics.push(diag.maybe_hint(p.hint));
        check.bad_pointers.push(match &p.key {
            Some(key) => format!("{}/{}", p.pointer, escape_pointer(key)),
            None => p.pointer,
        });
    }
    check
}

/// `key` as one segment of a JSON pointer (RFC 6901).
pub fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn explain(
    error: &ValidationError<'_>,
    root: &Value,
    schema: &Value,
    kind: FileKind,
    out: &mut Vec<Problem>,
) {
    let pointer = error.instance_path().as_str().to_string();
    let instance = error.instance();
    let problem = |code: Code, message: String, hint: Option<String>| Problem {
        pointer: pointer.clone(),
        key: None,
        code,
        message,
        hint,
    };
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let allowed = allowed_keys(schema, error.schema_path().as_str());
            for key in unexpected {
                let hint = match did_you_mean(key, allowed.iter().map(String::as_str)) {
                    Some(close) => Some(format!("did you mean \"{close}\"?")),
                    None if is_node(kind, &pointer) => Some(format!(
                        "a node takes one kind key ({}) and next, save, pii, on_error, on_window_closed",
                        NODE_KINDS.join(", ")
                    )),
                    None if !allowed.is_empty() => {
                        Some(format!("allowed keys here: {}", allowed.join(", ")))
                    }
                    None => None,
                };
                out.push(Problem {
                    pointer: pointer.clone(),
                    key: Some(key.clone()),
                    code: Code::UnknownField,
                    message: format!("unknown key \"{key}\""),
                    hint,
                });
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_string);
            let hint = property_description(schema, error.schema_path().as_str(), &name)
                .map(|what| format!("add `{name}:`, {what}"));
            out.push(problem(
                Code::MissingField,
                format!("missing required key \"{name}\""),
                hint,
            ));
        }
        ValidationErrorKind::Type { kind: expected } => {
            let expected = type_names(expected);
            out.push(problem(
                Code::WrongType,
                format!(
                    "expected {}, found {}",
                    join_or(&expected),
                    describe(instance)
                ),
                type_hint(instance, &expected, &pointer),
            ));
        }
        ValidationErrorKind::Enum { options } => {
            let options: Vec<String> = options
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|o| o.as_str().map_or_else(|| o.to_string(), str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let found = instance
                .as_str()
                .map_or_else(|| instance.to_string(), str::to_string);
            let hint = did_you_mean(&found, options.iter().map(String::as_str))
                .map(|c| format!("did you mean \"{c}\"?"));
            out.push(problem(
                Code::InvalidValue,
                format!("\"{found}\" is not one of: {}", options.join(", ")),
                hint,
            ));
        }
        ValidationErrorKind::Constant { expected_value } => {
            let expected = expected_value
                .as_str()
                .map_or_else(|| expected_value.to_string(), str::to_string);
            out.push(problem(
                Code::InvalidValue,
                format!("expected \"{expected}\""),
                None,
            ));
        }
        ValidationErrorKind::Pattern { pattern } => {
            let found = instance.as_str().unwrap_or_default();
            let (message, hint) = if pattern.contains("[A-Za-z_][A-Za-z0-9_]*$") {
                (
                    format!("\"{found}\" is not a valid variable name"),
                    Some(
                        "use letters, digits and _, not starting with a digit, e.g. first_name"
                            .to_string(),
                    ),
                )
            } else if pattern.starts_with("^[A-Za-z0-9_][A-Za-z0-9_.-]") {
                (
                    format!("\"{found}\" is not a valid id"),
                    Some(
                        "use letters, digits, _, - and ., not starting with - or ., e.g. order_status"
                            .to_string(),
                    ),
                )
            } else if pattern.starts_with("^v") {
                (
                    format!("\"{found}\" is not a Graph API version"),
                    Some("write it like v23.0".to_string()),
                )
            } else {
                (
                    format!("\"{found}\" does not have the expected form ({pattern})"),
                    None,
                )
            };
            out.push(problem(Code::InvalidValue, message, hint));
        }
        ValidationErrorKind::MaxItems { limit } | ValidationErrorKind::MinItems { limit } => {
            let count = instance.as_array().map_or(0, Vec::len);
            let max = matches!(error.kind(), ValidationErrorKind::MaxItems { .. });
            let what = last_key(&pointer);
            let (code, message, hint) = match (what, max) {
                ("buttons", true) => (
                    Code::WhatsappLimit,
                    format!("{count} buttons; WhatsApp allows at most {limit} reply buttons"),
                    Some("for more choices use a list node (up to 10 rows)"),
                ),
                ("sections", true) => (
                    Code::WhatsappLimit,
                    format!("{count} sections; WhatsApp allows at most {limit} in a list"),
                    Some("merge sections, or split the choices over two list nodes"),
                ),
                ("rows", true) => (
                    Code::WhatsappLimit,
                    format!("{count} rows; WhatsApp allows at most {limit} rows in a list"),
                    Some("split the choices over two list nodes, e.g. with a \"More…\" row"),
                ),
                ("contacts", true) => (
                    Code::WhatsappLimit,
                    format!("{count} contacts; WhatsApp allows at most {limit} in one message"),
                    Some("send the others in a second contacts node"),
                ),
                (_, true) => (
                    Code::InvalidValue,
                    format!("{count} items; at most {limit} allowed"),
                    None,
                ),
                (_, false) => (
                    Code::InvalidValue,
                    format!("{count} items; at least {limit} needed"),
                    None,
                ),
            };
            out.push(problem(code, message, hint.map(str::to_string)));
        }
        ValidationErrorKind::PropertyNames { error } => {
            let name = error.instance().as_str().unwrap_or_default().to_string();
            let options: Vec<String> = match error.kind() {
                ValidationErrorKind::Enum { options } => options
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|o| o.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            let hint = match did_you_mean(&name, options.iter().map(String::as_str)) {
                Some(c) => Some(format!("did you mean \"{c}\"?")),
                None if !options.is_empty() => Some(format!("one of: {}", options.join(", "))),
                None => None,
            };
            out.push(Problem {
                pointer: pointer.clone(),
                key: Some(name.clone()),
                code: Code::UnknownField,
                message: format!("unknown key \"{name}\""),
                hint,
            });
        }
        ValidationErrorKind::MaxProperties { limit } => {
            out.push(problem(
                Code::InvalidValue,
                format!(
                    "at most {limit} key{} here",
                    if *limit == 1 { "" } else { "s" }
                ),
                (*limit == 1).then(|| {
                    "one message per step: write a second `bot:` step for the next message"
                        .to_string()
                }),
            ));
        }
        ValidationErrorKind::MinProperties { limit } => {
            out.push(problem(
                Code::InvalidValue,
                format!(
                    "needs at least {limit} entr{}",
                    if *limit == 1 { "y" } else { "ies" }
                ),
                None,
            ));
        }
        ValidationErrorKind::Minimum { limit }
        | ValidationErrorKind::ExclusiveMinimum { limit } => {
            out.push(problem(
                Code::InvalidValue,
                format!("{instance} is below the minimum of {limit}"),
                None,
            ));
        }
        ValidationErrorKind::Maximum { limit }
        | ValidationErrorKind::ExclusiveMaximum { limit } => {
            out.push(problem(
                Code::InvalidValue,
                format!("{instance} is above the maximum of {limit}"),
                None,
            ));
        }
        ValidationErrorKind::OneOfNotValid { .. }
        | ValidationErrorKind::OneOfMultipleValid { .. }
            if is_node(kind, &pointer) =>
        {
            let present: Vec<&str> = NODE_KINDS
                .iter()
                .copied()
                .filter(|k| instance.get(k).is_some())
                .collect();
            let (message, hint) = if present.is_empty() {
                (
                    "the node has no kind".to_string(),
                    format!("add one of: {}", NODE_KINDS.join(", ")),
                )
            } else {
                (
                    format!(
                        "the node has {} kinds ({}); a node has exactly one",
                        present.len(),
                        present.join(", ")
                    ),
                    "split it into one node per kind; the node below runs next".to_string(),
                )
            };
            out.push(problem(Code::NodeKind, message, Some(hint)));
        }
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            explain_alternatives(&pointer, instance, context, root, schema, kind, out);
        }
        _ => out.push(problem(Code::Schema, error.to_string(), None)),
    }
}

/// Picks the alternative the designer most likely meant. A branch that fails only
/// because the value has another type altogether ("expected text") is a poor guess; of
/// the others, the one with the fewest problems wins, then the one that got deepest.
fn explain_alternatives(
    pointer: &str,
    instance: &Value,
    context: &[Vec<ValidationError<'static>>],
    root: &Value,
    schema: &Value,
    kind: FileKind,
    out: &mut Vec<Problem>,
) {
    let mut candidates: Vec<Vec<Problem>> = Vec::new();
    let mut expected_types: Vec<String> = Vec::new();
    // Documented enums are generated as `oneOf` of constants (each also `type: string`):
    // collect them into one list. A value of another type (`expect: 3`) fails both the
    // type and the constant of every branch; that is one mistake, not two.
    let mut constants: Vec<String> = Vec::new();
    for branch in context {
        let constant = branch.iter().find_map(|e| match e.kind() {
            ValidationErrorKind::Constant { expected_value } => Some(expected_value),
            _ => None,
        });
        let only_type_or_constant = branch.iter().all(|e| {
            e.instance_path().as_str() == pointer
                && matches!(
                    e.kind(),
                    ValidationErrorKind::Constant { .. } | ValidationErrorKind::Type { .. }
                )
        });
        if let Some(expected_value) = constant
            && only_type_or_constant
        {
            constants.push(
                expected_value
                    .as_str()
                    .map_or_else(|| expected_value.to_string(), str::to_string),
            );
            continue;
        }
        let mut problems = Vec::new();
        for e in branch {
            explain(e, root, schema, kind, &mut problems);
        }
        if let Some(types) = wanted_types(branch, pointer) {
            for t in types {
                if !expected_types.contains(&t) {
                    expected_types.push(t);
                }
            }
        } else if !problems.is_empty() {
            candidates.push(problems);
        }
    }
    let best = candidates.into_iter().min_by_key(|problems| {
        let depth = problems
            .iter()
            .map(|p| p.pointer.matches('/').count())
            .max()
            .unwrap_or(0);
        (problems.len(), usize::MAX - depth)
    });
    if !constants.is_empty() && best.is_none() {
        let found = instance
            .as_str()
            .map_or_else(|| instance.to_string(), str::to_string);
        let hint = did_you_mean(&found, constants.iter().map(String::as_str))
            .map(|c| format!("did you mean \"{c}\"?"))
            .or_else(|| {
                (last_key(pointer) == "expect").then(|| {
                    "for answers of another form, match them with expect: { regex: '...' }"
                        .to_string()
                })
            });
        out.push(Problem {
            pointer: pointer.to_string(),
            key: None,
            code: Code::InvalidValue,
            message: format!("\"{found}\" is not one of: {}", constants.join(", ")),
            hint,
        });
        return;
    }
    match best {
        Some(problems) => out.extend(problems),
        None => out.push(Problem {
            pointer: pointer.to_string(),
            key: None,
            code: Code::WrongType,
            message: format!(
                "expected {}, found {}",
                join_or(&expected_types),
                describe(instance)
            ),
            hint: type_hint(instance, &expected_types, pointer),
        }),
    }
}

/// The types a failing alternative wanted, when its only complaint is the value's type
/// (also through nested alternatives): such a branch is a poor guess of what was meant.
fn wanted_types(errors: &[ValidationError<'static>], pointer: &str) -> Option<Vec<String>> {
    let mut types = Vec::new();
    for e in errors {
        if e.instance_path().as_str() != pointer {
            return None;
        }
        match e.kind() {
            ValidationErrorKind::Type { kind } => types.extend(type_names(kind)),
            ValidationErrorKind::AnyOf { context }
            | ValidationErrorKind::OneOfNotValid { context } => {
                for branch in context {
                    types.extend(wanted_types(branch, pointer)?);
                }
            }
            // A constant of another type (`type: string, const: text` against a number)
            // also fails on the type: the type is what matters. A constant alone (the
            // right type, another value) leaves `types` empty: not a type mismatch.
            ValidationErrorKind::Constant { .. } => {}
            _ => return None,
        }
    }
    (!types.is_empty()).then_some(types)
}

/// A node with an unknown key also fails "exactly one kind"; the unknown key (usually a
/// misspelt kind) is the real news, so drop the node_kind report for that node.
fn suppress_redundant(problems: &mut Vec<Problem>) {
    let unknown: Vec<String> = problems
        .iter()
        .filter(|p| p.code == Code::UnknownField)
        .map(|p| p.pointer.clone())
        .collect();
    problems.retain(|p| !(p.code == Code::NodeKind && unknown.contains(&p.pointer)));
    let mut seen = Vec::new();
    problems.retain(|p| {
        if seen.contains(p) {
            false
        } else {
            seen.push(p.clone());
            true
        }
    });
}

fn is_node(kind: FileKind, pointer: &str) -> bool {
    kind == FileKind::Flow && pointer.starts_with("/nodes/") && pointer.matches('/').count() == 2
}

fn last_key(pointer: &str) -> &str {
    pointer.rsplit('/').next().unwrap_or_default()
}

/// The documentation of the key `name` of the schema object that holds the failing
/// `required`, as a phrase for a hint: "the button's label, at most 20 characters".
fn property_description(schema: &Value, schema_path: &str, name: &str) -> Option<String> {
    let parent = schema_path.strip_suffix("/required")?;
    let text = schema
        .pointer(parent)?
        .get("properties")?
        .get(name)?
        .get("description")?
        .as_str()?;
    let first = text
        .split(". ")
        .next()
        .unwrap_or(text)
        .trim()
        .trim_end_matches('.');
    let mut chars = first.chars();
    let head = chars.next()?;
    // Lowercase the first word unless it is code (`body`) or an acronym (URL).
    let lowered = if chars.clone().next().is_some_and(char::is_lowercase) {
        head.to_lowercase().collect::<String>()
    } else {
        head.to_string()
    };
    Some(format!("{lowered}{}", chars.as_str()))
}

/// The keys allowed by the schema object that holds the failing `additionalProperties`.
fn allowed_keys(schema: &Value, schema_path: &str) -> Vec<String> {
    let parent = schema_path
        .strip_suffix("/additionalProperties")
        .unwrap_or(schema_path);
    schema
        .pointer(parent)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|props| props.keys().cloned().collect())
        .unwrap_or_default()
}

fn type_names(kind: &TypeKind) -> Vec<String> {
    let types: Vec<JsonType> = match kind {
        TypeKind::Single(t) => vec![*t],
        TypeKind::Multiple(set) => set.iter().collect(),
    };
    let mut names: Vec<String> = Vec::new();
    for t in types {
        let name = match t {
            JsonType::String => "text",
            JsonType::Object => "a mapping",
            JsonType::Array => "a list",
            JsonType::Integer => "a whole number",
            JsonType::Number => "a number",
            JsonType::Boolean => "true or false",
            JsonType::Null => "nothing",
        };
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

/// "text or a mapping". An optional key also accepts nothing (null), which is not news
/// when something else was written, so it is only named when it is the only choice.
fn join_or(items: &[String]) -> String {
    let items: Vec<String> = if items.len() > 1 {
        items.iter().filter(|i| *i != "nothing").cloned().collect()
    } else {
        items.to_vec()
    };
    match items.as_slice() {
        [] => "another value".to_string(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn type_hint(found: &Value, expected: &[String], pointer: &str) -> Option<String> {
    let wants_text = expected.iter().any(|e| e == "text");
    let is_duration = matches!(
        last_key(pointer),
        "wait" | "timeout" | "keep_transcripts" | "advance"
    );
    match found {
        Value::Number(n) if is_duration => {
            Some(format!("a duration needs a unit, e.g. {n}s or {n}m"))
        }
        Value::Null if expected.iter().any(|e| e == "a mapping") => {
            Some("the key has no value; indent the lines that belong to it".into())
        }
        Value::Bool(_) | Value::Number(_) if wants_text => {
            Some("put the value in quotes to make it text".into())
        }
        Value::Object(_) if wants_text => {
            Some("text containing \": \" or starting with { must be quoted".into())
        }
        Value::Object(_) if expected.iter().any(|e| e == "a list") => {
            Some("write the items as a list, each line starting with `- `".into())
        }
        Value::Array(_) if expected.iter().any(|e| e == "a mapping") => {
            Some("write `key: value` lines here, without `- `".into())
        }
        Value::Array(_) if wants_text => {
            Some("give one text; text with commas or starting with [ must be quoted".into())
        }
        _ => None,
    }
}
