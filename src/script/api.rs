//! The functions Parlance adds to Rhai's own (docs/scripts.md lists them all, with an
//! example each that a test runs): the turn's clock, dates, JSON, regular expressions,
//! number formatting and `next_node`.
//!
//! Everything here is bounded: results are checked against the string limit, regexes
//! are compiled with a size limit, and nothing touches files, the network or the wall
//! clock (`now()` is the turn's time, so `parlance test` is deterministic).

use super::run_state;
use super::value::{to_dynamic, to_json};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use rhai::{Dynamic, Engine, EvalAltResult, FLOAT, INT, Map as RhaiMap, NativeCallContext};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write;

type Fallible<T> = Result<T, Box<EvalAltResult>>;

/// Most compiled regexes kept per thread: scripts use a handful of literal patterns.
const REGEX_CACHE: usize = 64;
/// Largest compiled regex (the `regex` crate's size limit), as for `expect: { regex }`.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub fn register(engine: &mut Engine) {
    engine.register_fn("now", now);
    engine.register_fn("next_node", next_node);
    engine.register_fn("format_date", format_date);
    engine.register_fn("parse_date", parse_date);
    engine.register_fn("parse_json", parse_json);
    engine.register_fn("to_json", to_json_text);
    engine.register_fn("regex_match", regex_match);
    engine.register_fn("regex_captures", regex_captures);
    engine.register_fn("regex_replace", regex_replace);
    engine.register_fn("format_number", format_int);
    engine.register_fn("format_number", format_float);
}

fn error(message: impl Into<String>) -> Box<EvalAltResult> {
    message.into().into()
}

/// The turn's time, Unix seconds.
fn now() -> Fallible<INT> {
    run_state::now().ok_or_else(|| error("now() is only available while a script runs"))
}

/// Where the conversation goes after the script: a node of the script's flow.
fn next_node(node: &str) -> Fallible<()> {
    if run_state::set_next(node) {
        Ok(())
    } else {
        Err(error("next_node() is only available in a script node"))
    }
}

/// A string the script made must fit `scripts.max_string_size`, as Rhai's own do.
fn bounded(ctx: &NativeCallContext, text: String) -> Fallible<String> {
    let max = ctx.engine().max_string_size();
    if max > 0 && text.len() > max {
        return Err(error(format!(
            "the result is {} bytes, over the limit of {max} (scripts.max_string_size)",
            text.len()
        )));
    }
    Ok(text)
}

/// `format_date(ts, "%d.%m.%Y")`: Unix seconds as text (UTC), strftime-style.
fn format_date(ctx: NativeCallContext, ts: INT, format: &str) -> Fallible<String> {
    let Some(time) = DateTime::from_timestamp(ts, 0) else {
        return Err(error(format!("{ts} is not a time chrono can represent")));
    };
    let items = chrono::format::StrftimeItems::new(format)
        .parse()
        .map_err(|_| error(format!("\"{format}\" is not a valid date format")))?;
    let mut out = String::new();
    write!(out, "{}", time.format_with_items(items.iter()))
        .map_err(|_| error(format!("\"{format}\" cannot format this date")))?;
    bounded(&ctx, out)
}

/// `parse_date("14.03.2026", "%d.%m.%Y")`: Unix seconds (UTC; midnight for a date
/// without a time), or `()` when the text does not match the format.
fn parse_date(text: &str, format: &str) -> Dynamic {
    let text = text.trim();
    let parsed = NaiveDateTime::parse_from_str(text, format)
        .or_else(|_| NaiveDate::parse_from_str(text, format).map(|d| d.and_time(NaiveTime::MIN)));
    match parsed {
        Ok(t) => Dynamic::from_int(t.and_utc().timestamp()),
        Err(_) => Dynamic::UNIT,
    }
}

/// `parse_json(text)`: the value, or `()` when the text is not JSON.
fn parse_json(text: &str) -> Dynamic {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => to_dynamic(&v),
        Err(_) => Dynamic::UNIT,
    }
}

/// `to_json(value)`: compact JSON text.
fn to_json_text(ctx: NativeCallContext, value: Dynamic) -> Fallible<String> {
    let json = to_json(&value, "the value").map_err(error)?;
    bounded(&ctx, json.to_string())
}

thread_local! {
    static REGEXES: RefCell<HashMap<String, regex::Regex>> = RefCell::new(HashMap::new());
}

/// Compiles `pattern` (or takes it from this thread's cache) and applies `f`.
fn with_regex<T>(pattern: &str, f: impl FnOnce(&regex::Regex) -> T) -> Fallible<T> {
    let cached = REGEXES.with(|c| c.borrow().get(pattern).cloned());
    let re = match cached {
        Some(re) => re,
        None => {
            let re = regex::RegexBuilder::new(pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    let detail = e.to_string();
                    let last = detail
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("invalid")
                        .trim()
                        .trim_start_matches("error: ")
                        .to_string();
                    error(format!("invalid regular expression \"{pattern}\": {last}"))
                })?;
            REGEXES.with(|c| {
                let mut c = c.borrow_mut();
                if c.len() >= REGEX_CACHE {
                    c.clear();
                }
                c.insert(pattern.to_string(), re.clone());
            });
            re
        }
    };
    Ok(f(&re))
}

/// `regex_match(text, pattern)`: whether the pattern matches anywhere in the text
/// (anchor it with `^…$` for the whole text).
fn regex_match(text: &str, pattern: &str) -> Fallible<bool> {
    with_regex(pattern, |re| re.is_match(text))
}

/// `regex_captures(text, pattern)`: the first match's groups as a map (`"0"` the whole
/// match, `"1"`… by number, and named groups by name; a group that took no part is
/// `()`), or `()` when the pattern does not match.
fn regex_captures(text: &str, pattern: &str) -> Fallible<Dynamic> {
    with_regex(pattern, |re| {
        let Some(caps) = re.captures(text) else {
            return Dynamic::UNIT;
        };
        let group = |m: Option<regex::Match<'_>>| {
            m.map_or(Dynamic::UNIT, |m| Dynamic::from(m.as_str().to_string()))
        };
        let mut map = RhaiMap::new();
        for i in 0..caps.len() {
            map.insert(i.to_string().into(), group(caps.get(i)));
        }
        for name in re.capture_names().flatten() {
            map.insert(name.into(), group(caps.name(name)));
        }
        Dynamic::from_map(map)
    })
}

/// `regex_replace(text, pattern, replacement)`: every match replaced (`$1`, `$name`
/// insert groups).
fn regex_replace(
    ctx: NativeCallContext,
    text: &str,
    pattern: &str,
    replacement: &str,
) -> Fallible<String> {
    let out = with_regex(pattern, |re| re.replace_all(text, replacement).into_owned())?;
    bounded(&ctx, out)
}

/// Most decimals `format_number` writes; more is noise for a float.
const MAX_DECIMALS: INT = 12;

/// `format_number(19, 2)` → `"19.00"`.
fn format_int(n: INT, decimals: INT) -> Fallible<String> {
    format_float(n as FLOAT, decimals)
}

/// `format_number(9.5 * 3, 2)` → `"28.50"`: rounded to the nearest of the number as
/// stored (so 2.675, stored as 2.67499…, gives `"2.67"`).
fn format_float(n: FLOAT, decimals: INT) -> Fallible<String> {
    if !(0..=MAX_DECIMALS).contains(&decimals) {
        return Err(error(format!(
            "format_number takes 0 to {MAX_DECIMALS} decimals, not {decimals}"
        )));
    }
    Ok(format!("{n:.prec$}", prec = decimals as usize))
}
