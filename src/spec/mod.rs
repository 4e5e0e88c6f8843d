//! The "as written" types of every file a bot folder holds, and the JSON Schemas that
//! are generated from them.
//!
//! Architecture Invariant: these types are the single source of truth for the file
//! formats. `schemas/*.schema.json` is generated from them (`parlance schema`), a test
//! fails when the checked-in copy is stale, and the loader validates against the same
//! generated schemas, so editors, CI and the runtime can never disagree.
//! Nothing here is resolved: targets are strings, templates are text. `compile` turns
//! them into `flow` types.

pub mod config;
pub mod flow;
pub mod test;

use schemars::{Schema, generate::SchemaSettings};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use std::sync::OnceLock;

/// Which kind of file a schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Config,
    Flow,
    Test,
}

impl FileKind {
    pub const ALL: [FileKind; 3] = [FileKind::Config, FileKind::Flow, FileKind::Test];

    /// The schema's file name under `schemas/`.
    pub fn schema_file(self) -> &'static str {
        match self {
            FileKind::Config => "config.schema.json",
            FileKind::Flow => "flow.schema.json",
            FileKind::Test => "test.schema.json",
        }
    }

    /// The generated JSON Schema, as checked in under `schemas/`.
    pub fn schema(self) -> Value {
        let generator = SchemaSettings::draft07().into_generator();
        let schema = match self {
            FileKind::Config => generator.into_root_schema_for::<config::RawConfig>(),
            FileKind::Flow => generator.into_root_schema_for::<flow::RawFlow>(),
            FileKind::Test => generator.into_root_schema_for::<test::RawTestFile>(),
        };
        let mut value = schema.to_value();
        unwrap_descriptions(&mut value);
        value
    }

    /// The generated schema, built once per process.
    pub fn cached_schema(self) -> &'static Value {
        static SCHEMAS: [OnceLock<Value>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        SCHEMAS[self as usize].get_or_init(|| self.schema())
    }

    /// The compiled validator, built once per process.
    pub fn validator(self) -> &'static jsonschema::Validator {
        static VALIDATORS: [OnceLock<jsonschema::Validator>; 3] =
            [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        VALIDATORS[self as usize].get_or_init(|| {
            // The schema is generated from our own types; failing to compile it is a bug
            // in Parlance that every test would show, not something input can cause.
            jsonschema::validator_for(self.cached_schema()).expect("generated schemas compile")
        })
    }
}

/// Doc comments are wrapped at 100 columns; editors show descriptions as flowing text,
/// so single line breaks become spaces (paragraph breaks stay).
/// Also, an enum variant written as a one-key mapping (`keywords: [...]`) carries its doc
/// on the branch; editors show the property's, so copy it there.
fn unwrap_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let branch_doc = map.get("description").cloned();
            if let (Some(doc), Some(Value::Object(props))) = (branch_doc, map.get_mut("properties"))
                && props.len() == 1
                && let Some(Value::Object(prop)) = props.values_mut().next()
                && !prop.contains_key("description")
            {
                prop.insert("description".into(), doc);
            }
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(text) if key == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|para| {
                                para.split('\n')
                                    .map(str::trim)
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            })
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    _ => unwrap_descriptions(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

/// For fields where writing the key with no value means something (`end:`, `handover:`):
/// absent stays `None`, a null value becomes `Some(None)`.
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Adds "exactly one kind key" to the node schema, so editors flag a node with no kind
/// or with two, and the loader reports it as `node_kind`. Only for mappings: an empty
/// node (`welcome:` with nothing below) gets just the type error.
pub(crate) fn exactly_one_kind(schema: &mut Schema) {
    let branches: Vec<Value> = flow::NODE_KINDS
        .iter()
        .map(|kind| json!({ "title": format!("{kind} node"), "required": [kind] }))
        .collect();
    schema.insert("if".into(), json!({ "type": "object" }));
    schema.insert("then".into(), json!({ "oneOf": branches }));
}
