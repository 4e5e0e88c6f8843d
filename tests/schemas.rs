//! The checked-in JSON Schemas are what the `spec` types generate, and they say enough
//! for an editor to help a bot designer.

use parlance::cli::schema::schema_text;
use parlance::spec::FileKind;
use serde_json::Value;
use std::path::Path;

#[test]
fn checked_in_schemas_are_up_to_date() {
    for kind in FileKind::ALL {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("schemas")
            .join(kind.schema_file());
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == schema_text(kind),
            "{} is stale: run `cargo run -- schema` and commit the result",
            path.display()
        );
    }
}

/// Every property an editor can complete has a description to show.
#[test]
fn every_property_is_described() {
    fn walk(value: &Value, at: &str, missing: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Object(props)) = map.get("properties") {
                    for (name, prop) in props {
                        let described = prop.get("description").is_some()
                            || prop.get("$ref").is_some() && prop.get("description").is_some();
                        if !described {
                            missing.push(format!("{at}/properties/{name}"));
                        }
                    }
                }
                for (k, v) in map {
                    walk(v, &format!("{at}/{k}"), missing);
                }
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .for_each(|(i, v)| walk(v, &format!("{at}/{i}"), missing)),
            _ => {}
        }
    }
    for kind in FileKind::ALL {
        let mut missing = Vec::new();
        walk(&kind.schema(), "", &mut missing);
        assert!(
            missing.is_empty(),
            "{}: undocumented properties: {missing:?}",
            kind.schema_file()
        );
    }
}

#[test]
fn the_node_schema_names_every_kind() {
    let schema = FileKind::Flow.schema();
    let node = &schema["definitions"]["Node"];
    let kinds: Vec<&str> = node["then"]["oneOf"]
        .as_array()
        .expect("exactly-one-kind constraint")
        .iter()
        .map(|b| b["required"][0].as_str().unwrap())
        .collect();
    assert_eq!(kinds, parlance::spec::flow::NODE_KINDS);
    for kind in kinds {
        assert!(
            node["properties"][kind]["description"].is_string(),
            "{kind} is described"
        );
    }
    let expect = serde_json::to_string(&schema["definitions"]["ExpectKind"]).unwrap();
    for e in ["yes_no", "integer", "email", "location"] {
        assert!(expect.contains(&format!("\"{e}\"")), "ExpectKind lists {e}");
    }
}
