//! Types of `${NAME}` values in `parlance.yaml`. The reader keeps a replaced value as
//! text, because a phone number id or an app secret may be all digits (or `true`, or
//! `1e5`); here a replaced value gets a number or boolean type only where the schema
//! has no room for text, so `message_delay_ms: ${DELAY:-500}` is still the number 500.

use crate::source::YamlPath;
use crate::source::yaml::{Seg, plain_json};
use serde_json::Value;

/// Retypes, in `json`, each value at `paths` that is text where the schema wants none.
pub(crate) fn retype(json: &mut Value, paths: &[YamlPath], schema: &Value) {
    for path in paths {
        let Some(Value::String(text)) = value_mut(json, &path.0) else {
            continue;
        };
        if !accepts_text(schema, schema, &path.0, 0) {
            let typed = plain_json(text);
            if let Some(slot) = value_mut(json, &path.0) {
                *slot = typed;
            }
        }
    }
}

fn value_mut<'a>(mut json: &'a mut Value, segs: &[Seg]) -> Option<&'a mut Value> {
    for seg in segs {
        json = match (seg, json) {
            (Seg::Key(k), Value::Object(map)) => map.get_mut(k)?,
            (Seg::Index(i), Value::Array(items)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(json)
}

/// Most `$ref`/`anyOf` hops followed; the config schema needs a handful.
const MAX_HOPS: usize = 32;

/// Whether the schema lets the value at `segs` be text. A place the schema does not
/// describe counts as text: the schema check then reports it as written.
fn accepts_text(root: &Value, schema: &Value, segs: &[Seg], hops: usize) -> bool {
    described(root, schema, segs, hops).unwrap_or(true)
}

/// `Some(true)` when a branch of `schema` takes text at `segs`, `Some(false)` when the
/// branches that describe `segs` take none, `None` when none describes it.
fn described(root: &Value, schema: &Value, segs: &[Seg], hops: usize) -> Option<bool> {
    if hops > MAX_HOPS {
        return None;
    }
    // `true` (anything) or `false` (nothing): text is not the problem here.
    let obj = schema.as_object()?;
    if let Some(target) = obj.get("$ref").and_then(Value::as_str) {
        let name = target.rsplit('/').next().unwrap_or_default();
        let def = root
            .get("definitions")
            .or_else(|| root.get("$defs"))
            .and_then(|d| d.get(name))?;
        return described(root, def, segs, hops + 1);
    }
    for combinator in ["anyOf", "oneOf"] {
        if let Some(branches) = obj.get(combinator).and_then(Value::as_array) {
            let answers: Vec<bool> = branches
                .iter()
                .filter_map(|b| described(root, b, segs, hops + 1))
                .collect();
            return match answers.as_slice() {
                [] => None,
                _ => Some(answers.contains(&true)),
            };
        }
    }
    let Some((first, rest)) = segs.split_first() else {
        return Some(match obj.get("type") {
            Some(Value::String(t)) => t == "string",
            Some(Value::Array(types)) => types.iter().any(|t| t == "string"),
            _ => obj
                .get("enum")
                .and_then(Value::as_array)
                .is_none_or(|values| values.iter().any(Value::is_string)),
        });
    };
    let child = match first {
        Seg::Key(k) => obj
            .get("properties")
            .and_then(|p| p.get(k))
            .or_else(|| obj.get("additionalProperties")),
        Seg::Index(_) => obj.get("items"),
    }?;
    described(root, child, rest, hops + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::FileKind;
    use serde_json::json;

    fn retyped(mut json: Value, paths: &[&[&str]]) -> Value {
        let paths: Vec<YamlPath> = paths
            .iter()
            .map(|p| YamlPath(p.iter().map(|k| Seg::Key(k.to_string())).collect()))
            .collect();
        retype(&mut json, &paths, FileKind::Config.cached_schema());
        json
    }

    #[test]
    fn text_stays_text_where_the_schema_wants_text_and_numbers_become_numbers() {
        let json = json!({ "whatsapp": {
            "phone_number_id": "106540352242922",
            "app_secret": "1e5",
            "verify_token": "true",
            "app_id": "null",
            "message_delay_ms": "500",
            "mark_as_read": "true",
        }});
        let keys = [
            "phone_number_id",
            "app_secret",
            "verify_token",
            "app_id",
            "message_delay_ms",
            "mark_as_read",
        ];
        let paths: Vec<[&str; 2]> = keys.iter().map(|k| ["whatsapp", *k]).collect();
        let paths: Vec<&[&str]> = paths.iter().map(|p| p.as_slice()).collect();
        assert_eq!(
            retyped(json, &paths),
            json!({ "whatsapp": {
                "phone_number_id": "106540352242922",
                "app_secret": "1e5",
                "verify_token": "true",
                "app_id": "null",
                "message_delay_ms": 500,
                "mark_as_read": true,
            }})
        );
    }

    #[test]
    fn an_empty_value_where_a_number_is_wanted_is_absent() {
        assert_eq!(
            retyped(
                json!({ "whatsapp": { "message_delay_ms": "" } }),
                &[&["whatsapp", "message_delay_ms"]]
            ),
            json!({ "whatsapp": { "message_delay_ms": null } })
        );
    }
}
