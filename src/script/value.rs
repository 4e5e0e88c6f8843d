//! JSON values (what sessions, messages and templates hold) ↔ Rhai values.
//!
//! Written out rather than through serde: it is on every script run, and a value a
//! script cannot hand back (a function pointer) must be an error naming where it is.

use rhai::{Array, Dynamic, FLOAT, INT, ImmutableString, Map as RhaiMap};
use serde_json::{Map, Number, Value};

/// A JSON value as a script sees it: `null` is `()`, whole numbers are integers,
/// others floats, objects are maps.
pub fn to_dynamic(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(FLOAT::NAN)),
        },
        Value::String(s) => Dynamic::from(ImmutableString::from(s.as_str())),
        Value::Array(items) => Dynamic::from_array(items.iter().map(to_dynamic).collect()),
        Value::Object(map) => Dynamic::from_map(map_to_rhai(map)),
    }
}

pub fn map_to_rhai(map: &Map<String, Value>) -> RhaiMap {
    map.iter()
        .map(|(k, v)| (k.as_str().into(), to_dynamic(v)))
        .collect()
}

/// A script's value as JSON; `Err` names the first part that has no JSON form (`where_`
/// is how the value is named, e.g. `vars.total`).
pub fn to_json(value: &Dynamic, where_: &str) -> Result<Value, String> {
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Value::Number(Number::from(i as INT)));
    }
    if let Ok(f) = value.as_float() {
        // NaN and infinities have no JSON form: they become null, as JSON.stringify does.
        return Ok(Number::from_f64(f).map_or(Value::Null, Value::Number));
    }
    if let Ok(c) = value.as_char() {
        return Ok(Value::String(c.to_string()));
    }
    if value.is_string() {
        let s = value.clone().into_immutable_string().unwrap_or_default();
        return Ok(Value::String(s.to_string()));
    }
    if value.is_array() {
        let items = value.read_lock::<Array>();
        let Some(items) = items else {
            return Err(format!("{where_} could not be read"));
        };
        return items
            .iter()
            .enumerate()
            .map(|(i, v)| to_json(v, &format!("{where_}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if value.is_map() {
        let map = value.read_lock::<RhaiMap>();
        let Some(map) = map else {
            return Err(format!("{where_} could not be read"));
        };
        return map_to_json(&map, where_).map(Value::Object);
    }
    Err(format!(
        "{where_} holds a value of type {}, which cannot be saved (only (), booleans, numbers, strings, arrays and maps can)",
        value.type_name()
    ))
}

pub fn map_to_json(map: &RhaiMap, where_: &str) -> Result<Map<String, Value>, String> {
    map.iter()
        .map(|(k, v)| Ok((k.to_string(), to_json(v, &format!("{where_}.{k}"))?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_survives_the_round_trip() {
        let v = json!({
            "n": 3, "f": 2.5, "s": "hé", "b": true, "z": null,
            "a": [1, "x", { "deep": [false] }],
        });
        assert_eq!(to_json(&to_dynamic(&v), "v"), Ok(v));
    }

    #[test]
    fn a_function_pointer_cannot_be_saved() {
        let f = Dynamic::from(rhai::FnPtr::new("f").unwrap());
        let mut map = RhaiMap::new();
        map.insert("f".into(), f);
        let err = map_to_json(&map, "vars").unwrap_err();
        assert!(err.starts_with("vars.f holds a value of type Fn"), "{err}");
    }
}
