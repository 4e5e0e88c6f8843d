//! Keeping what did parse: a node that breaks the schema is compiled without its broken
//! parts, so its other mistakes (a template, a limit, a target) are reported in the same
//! run and what it saves still counts.
//!
//! The schema check says which values are wrong (JSON pointers). Those values are cut
//! out and the rest is deserialized. When the rest still does not deserialize (a
//! required key was the broken part), every cut grows to the enclosing mapping key and
//! we try again, at worst down to the node's own keys. Array elements are never cut one
//! by one: that would renumber their siblings, and positions of later diagnostics would
//! point at the wrong line. The whole list goes instead.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Deserializes `value` (one node, as JSON) without the parts at `bad`, JSON pointers
/// relative to it (`/buttons/body`; empty for the node itself). `None` when even the
/// node's remaining top-level keys do not deserialize (it is not a mapping at all).
pub(crate) fn parse_without<T: DeserializeOwned>(value: &Value, bad: &[&str]) -> Option<T> {
    let mut cuts: Vec<Vec<String>> = bad.iter().map(|p| to_key(value, segments(p))).collect();
    loop {
        let mut rest = value.clone();
        for cut in &cuts {
            remove(&mut rest, cut);
        }
        if let Ok(parsed) = serde_json::from_value(rest) {
            return Some(parsed);
        }
        let mut grew = false;
        for cut in &mut cuts {
            // A node's own key is as far as a cut grows: the node itself stays.
            if cut.len() > 1 {
                cut.pop();
                *cut = to_key(value, std::mem::take(cut));
                grew = true;
            }
        }
        if !grew {
            return None;
        }
    }
}

/// The segments of a JSON pointer, unescaped.
fn segments(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Shortens `path` until it ends at a mapping key: an array element is not cut alone.
fn to_key(root: &Value, mut path: Vec<String>) -> Vec<String> {
    while let Some(last) = path.len().checked_sub(1) {
        match lookup(root, &path[..last]) {
            Some(Value::Array(_)) => {
                path.pop();
            }
            _ => break,
        }
    }
    path
}

fn lookup<'a>(root: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(root, |v, seg| match v {
        Value::Object(map) => map.get(seg),
        Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Removes the mapping key at `path` (nothing when `path` is empty or not there).
fn remove(root: &mut Value, path: &[String]) {
    let Some((key, parent)) = path.split_last() else {
        return;
    };
    let mut v = root;
    for seg in parent {
        v = match v {
            Value::Object(map) => match map.get_mut(seg) {
                Some(next) => next,
                None => return,
            },
            Value::Array(items) => match seg.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                Some(next) => next,
                None => return,
            },
            _ => return,
        };
    }
    if let Value::Object(map) = v {
        map.shift_remove(key);
    }
}

/// Variable names a node assigns, read from its JSON as written: for a node with schema
/// errors, whose `save`, `set` or `expect` regex may have been cut, so that reading them
/// elsewhere is not reported as a typo.
pub(crate) fn assigned_names(node: &Value) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(save) = node.get("save").and_then(Value::as_str) {
        names.push(save.to_string());
    }
    if let Some(set) = node.get("set").and_then(Value::as_object) {
        names.extend(set.keys().cloned());
    }
    let regex = node
        .pointer("/ask/expect/regex")
        .and_then(Value::as_str)
        .unwrap_or_default();
    names.extend(regex_group_names(regex));
    names
}

/// Named groups written in a regex, `(?P<name>...)` or `(?<name>...)`, read from its
/// text: for a regex that did not compile or was cut, whose groups still name variables
/// the designer meant to set.
pub(crate) fn regex_group_names(source: &str) -> impl Iterator<Item = String> + '_ {
    static GROUP_NAME: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\(\?P?<([A-Za-z_][A-Za-z0-9_]*)>")
            .unwrap_or_else(|_| unreachable!("a constant regex compiles"))
    });
    GROUP_NAME.captures_iter(source).map(|c| c[1].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::flow::RawNode;
    use serde_json::json;

    #[test]
    fn an_unknown_key_is_cut_and_the_rest_kept() {
        let node = json!({ "say": "Hi", "save": "x", "colour": "red" });
        let raw: RawNode = parse_without(&node, &["/colour"]).unwrap();
        assert!(raw.say.is_some());
        assert_eq!(raw.save.as_deref(), Some("x"));
    }

    #[test]
    fn a_bad_optional_value_is_cut_alone() {
        let node = json!({ "ask": { "text": "How many?", "expect": "numbre" }, "next": "x" });
        let raw: RawNode = parse_without(&node, &["/ask/expect"]).unwrap();
        let ask = raw.ask.unwrap();
        assert_eq!(ask.text, "How many?");
        assert!(ask.expect.is_none());
        assert!(raw.next.is_some());
    }

    #[test]
    fn a_broken_required_part_takes_its_kind_with_it_but_not_the_node() {
        // The second button lacks its title: the list goes, then (required) the kind.
        let node = json!({
            "buttons": { "body": "Pick", "buttons": [{ "id": "a", "title": "A" }, { "id": "b" }] },
            "save": "pick",
            "next": "done",
        });
        let raw: RawNode = parse_without(&node, &["/buttons/buttons/1"]).unwrap();
        assert!(raw.buttons.is_none());
        assert_eq!(raw.save.as_deref(), Some("pick"));
        assert!(raw.next.is_some());
    }

    #[test]
    fn a_node_that_is_not_a_mapping_gives_none() {
        assert!(parse_without::<RawNode>(&json!("hello"), &[""]).is_none());
    }

    #[test]
    fn names_a_broken_node_assigns_are_read_as_written() {
        let node = json!({
            "ask": { "text": "Code?", "expect": { "regex": "(?P<team>[A-Z]{2})-(?<num>\\d+", "flags": "i" } },
            "save": "code",
        });
        assert_eq!(assigned_names(&node), ["code", "team", "num"]);
        let node = json!({ "set": { "a": 1, "b": [1] } });
        assert_eq!(assigned_names(&node), ["a", "b"]);
    }

    #[test]
    fn escaped_keys_are_found() {
        let node = json!({ "say": "Hi", "a/b": 1, "c~d": 2 });
        let raw: Option<RawNode> = parse_without(&node, &["/a~1b", "/c~0d"]);
        assert!(raw.is_some());
    }
}
