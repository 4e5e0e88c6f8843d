//! Turning what the user sent into the value an `ask` saves, or saying it is unusable.
//! Lenient where people are: "2,5" is a number, "14.03.2026" a date, "ja" a yes.

use super::event::EventKind;
use crate::flow::{Expect, ExpectKind, MediaKind, normalize};
use chrono::NaiveDate;
use regex::Regex;
use serde_json::{Map, Value, json};
use std::sync::LazyLock;

/// A usable answer: the value to save, and variables from named regex groups.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub value: Value,
    pub groups: Map<String, Value>,
}

impl Answer {
    fn of(value: Value) -> Option<Self> {
        Some(Answer {
            value,
            groups: Map::new(),
        })
    }
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$").expect("a constant regex compiles")
});

const YES: &[&str] = &[
    "yes", "y", "yeah", "yep", "sure", "ok", "okay", "ja", "j", "si", "oui", "sim", "da", "true",
    "1", "👍",
];
const NO: &[&str] = &[
    "no", "n", "nope", "nein", "non", "nao", "net", "false", "0", "👎",
];

/// The answer `expect` accepts from this message, or `None` when it is unusable.
pub fn parse(expect: &Expect, kind: &EventKind, message: &Value) -> Option<Answer> {
    // Only what the user typed or tapped is text: a media caption is not an answer.
    let text = match kind {
        EventKind::Text(_) | EventKind::Reply { .. } | EventKind::Button { .. } => {
            kind.text().map(str::trim)
        }
        _ => None,
    };
    match expect {
        Expect::Regex(re) => {
            let text = text?;
            let caps = re.captures(text)?;
            Some(Answer {
                value: Value::from(text),
                groups: groups(re, &caps),
            })
        }
        Expect::Kind(k) => match k {
            ExpectKind::Text => text
                .filter(|t| !t.is_empty())
                .and_then(|t| Answer::of(Value::from(t))),
            ExpectKind::Number => text.and_then(number).and_then(Answer::of),
            ExpectKind::Integer => text.and_then(integer).and_then(Answer::of),
            ExpectKind::Email => text
                .filter(|t| EMAIL.is_match(t))
                .and_then(|t| Answer::of(Value::from(t.to_lowercase()))),
            ExpectKind::Phone => text.and_then(phone).and_then(Answer::of),
            ExpectKind::Date => text.and_then(date).and_then(Answer::of),
            ExpectKind::Time => text.and_then(time).and_then(Answer::of),
            ExpectKind::YesNo => yes_no(kind).and_then(|b| Answer::of(Value::Bool(b))),
            ExpectKind::Location => match kind {
                EventKind::Location {
                    latitude,
                    longitude,
                    name,
                    address,
                } => Answer::of(location(*latitude, *longitude, name, address)),
                _ => None,
            },
            ExpectKind::Image => media(kind, MediaKind::Image),
            ExpectKind::Document => media(kind, MediaKind::Document),
            ExpectKind::Audio => media(kind, MediaKind::Audio),
            ExpectKind::Video => media(kind, MediaKind::Video),
            ExpectKind::Any => Answer::of(match kind {
                EventKind::Text(t) => Value::from(t.as_str()),
                _ => message.clone(),
            }),
        },
    }
}

/// The value `request_location` saves.
pub fn location(
    latitude: f64,
    longitude: f64,
    name: &Option<String>,
    address: &Option<String>,
) -> Value {
    json!({ "latitude": latitude, "longitude": longitude, "name": name, "address": address })
}

fn number(text: &str) -> Option<Value> {
    let t = text.replace(' ', "");
    // "2,5" is two and a half where a comma is the decimal mark; "1,000" is not a number
    // we can read unambiguously, so only a lone comma followed by 1–2 digits counts.
    let t = match t.split_once(',') {
        Some((int, frac))
            if !frac.contains(',') && !int.contains('.') && (1..=2).contains(&frac.len()) =>
        {
            format!("{int}.{frac}")
        }
        Some(_) => return None,
        None => t,
    };
    let f: f64 = t.parse().ok().filter(|f: &f64| f.is_finite())?;
    Some(if f.fract() == 0.0 && f.abs() < 9e15 {
        Value::from(f as i64)
    } else {
        Value::from(f)
    })
}

fn integer(text: &str) -> Option<Value> {
    let t = text.strip_prefix('+').unwrap_or(text);
    let digits = t.strip_prefix('-').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse::<i64>().ok().map(Value::from)
}

fn phone(text: &str) -> Option<Value> {
    let plus = text.starts_with('+') || text.starts_with("00");
    let body = text
        .strip_prefix('+')
        .or_else(|| text.strip_prefix("00"))
        .unwrap_or(text);
    if !body
        .chars()
        .all(|c| c.is_ascii_digit() || " -./()".contains(c))
    {
        return None;
    }
    let digits: String = body.chars().filter(char::is_ascii_digit).collect();
    if !(7..=15).contains(&digits.len()) {
        return None;
    }
    Some(Value::from(if plus {
        format!("+{digits}")
    } else {
        digits
    }))
}

fn date(text: &str) -> Option<Value> {
    const FORMATS: &[&str] = &[
        "%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%d-%m-%Y", "%d.%m.%y", "%d/%m/%y",
    ];
    FORMATS
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(text, f).ok())
        .map(|d| Value::from(d.format("%Y-%m-%d").to_string()))
}

fn time(text: &str) -> Option<Value> {
    let t = normalize(text).replace(' ', "");
    let (t, offset) = if let Some(rest) = t.strip_suffix("pm").or_else(|| t.strip_suffix("p.m.")) {
        (rest.to_string(), Some(12))
    } else if let Some(rest) = t.strip_suffix("am").or_else(|| t.strip_suffix("a.m.")) {
        (rest.to_string(), Some(0))
    } else {
        (t, None)
    };
    let (h, m) = match t.split_once([':', '.', 'h']) {
        Some((h, m)) => (
            h.parse::<u32>().ok()?,
            if m.is_empty() {
                0
            } else {
                m.parse::<u32>().ok()?
            },
        ),
        None => (t.parse::<u32>().ok().filter(|_| offset.is_some())?, 0),
    };
    let h = match offset {
        Some(add) if (1..=12).contains(&h) => h % 12 + add,
        Some(_) => return None,
        None => h,
    };
    (h < 24 && m < 60).then(|| Value::from(format!("{h:02}:{m:02}")))
}

fn yes_no(kind: &EventKind) -> Option<bool> {
    let candidates = match kind {
        EventKind::Reply { id, title } => vec![normalize(id), normalize(title)],
        EventKind::Button { payload, text } => vec![normalize(payload), normalize(text)],
        EventKind::Reaction { emoji, .. } => vec![emoji.clone()],
        other => vec![
            normalize(other.text()?)
                .trim_end_matches(['!', '.'])
                .to_string(),
        ],
    };
    candidates.iter().find_map(|c| {
        if YES.contains(&c.as_str()) {
            Some(true)
        } else if NO.contains(&c.as_str()) {
            Some(false)
        } else {
            None
        }
    })
}

/// The value of a media message: what an `ask` with `expect: image` (and the like)
/// saves, and `message.media` in templates.
pub fn media_value(kind: &EventKind) -> Option<Value> {
    match kind {
        EventKind::Media {
            kind,
            id,
            mime_type,
            caption,
            filename,
        } => Some(
            json!({ "kind": kind.name(), "id": id, "mime_type": mime_type, "caption": caption, "filename": filename }),
        ),
        _ => None,
    }
}

fn media(kind: &EventKind, want: MediaKind) -> Option<Answer> {
    match kind {
        EventKind::Media { kind: got, .. } if *got == want => {
            media_value(kind).and_then(Answer::of)
        }
        _ => None,
    }
}

/// A regex match's named groups; a group that did not take part is null (the caller
/// removes such variables, so an optional group never keeps an old value).
pub fn groups(re: &Regex, caps: &regex::Captures<'_>) -> Map<String, Value> {
    re.capture_names()
        .flatten()
        .map(|n| {
            (
                n.to_string(),
                caps.name(n)
                    .map_or(Value::Null, |m| Value::from(m.as_str())),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(kind: ExpectKind, text: &str) -> Option<Value> {
        parse(
            &Expect::Kind(kind),
            &EventKind::Text(text.into()),
            &Value::Null,
        )
        .map(|a| a.value)
    }

    #[test]
    fn numbers_accept_decimal_commas() {
        assert_eq!(answer(ExpectKind::Number, "2,5"), Some(json!(2.5)));
        assert_eq!(answer(ExpectKind::Number, " 3 "), Some(json!(3)));
        assert_eq!(answer(ExpectKind::Number, "-0.25"), Some(json!(-0.25)));
        assert_eq!(answer(ExpectKind::Number, "1,000,000"), None);
        assert_eq!(answer(ExpectKind::Number, "three"), None);
        assert_eq!(answer(ExpectKind::Number, "NaN"), None);
    }

    #[test]
    fn integers_are_whole() {
        assert_eq!(answer(ExpectKind::Integer, "42"), Some(json!(42)));
        assert_eq!(answer(ExpectKind::Integer, "+7"), Some(json!(7)));
        assert_eq!(answer(ExpectKind::Integer, "4.5"), None);
        assert_eq!(answer(ExpectKind::Integer, ""), None);
        assert_eq!(answer(ExpectKind::Integer, "99999999999999999999"), None);
    }

    #[test]
    fn emails_phones_dates_times() {
        assert_eq!(
            answer(ExpectKind::Email, "Ada@Example.org"),
            Some(json!("ada@example.org"))
        );
        assert_eq!(answer(ExpectKind::Email, "ada@"), None);
        assert_eq!(
            answer(ExpectKind::Phone, "+49 (30) 123-4567"),
            Some(json!("+49301234567"))
        );
        assert_eq!(
            answer(ExpectKind::Phone, "0049 30 1234567"),
            Some(json!("+49301234567"))
        );
        assert_eq!(answer(ExpectKind::Phone, "call me"), None);
        assert_eq!(answer(ExpectKind::Phone, "123"), None);
        assert_eq!(
            answer(ExpectKind::Date, "14.03.2026"),
            Some(json!("2026-03-14"))
        );
        assert_eq!(answer(ExpectKind::Date, "2026-02-30"), None);
        assert_eq!(answer(ExpectKind::Time, "2:30 pm"), Some(json!("14:30")));
        assert_eq!(answer(ExpectKind::Time, "9pm"), Some(json!("21:00")));
        assert_eq!(answer(ExpectKind::Time, "14.05"), Some(json!("14:05")));
        assert_eq!(answer(ExpectKind::Time, "25:00"), None);
        assert_eq!(answer(ExpectKind::Time, "14"), None);
    }

    #[test]
    fn yes_and_no_in_several_languages() {
        assert_eq!(answer(ExpectKind::YesNo, "Ja!"), Some(json!(true)));
        assert_eq!(answer(ExpectKind::YesNo, "Sí"), Some(json!(true)));
        assert_eq!(answer(ExpectKind::YesNo, "nope"), Some(json!(false)));
        assert_eq!(answer(ExpectKind::YesNo, "maybe"), None);
        let tap = EventKind::Reply {
            id: "no".into(),
            title: "No thanks".into(),
        };
        assert_eq!(
            parse(&Expect::Kind(ExpectKind::YesNo), &tap, &Value::Null).map(|a| a.value),
            Some(json!(false))
        );
    }

    #[test]
    fn media_and_location_need_that_kind_of_message() {
        let image = EventKind::Media {
            kind: MediaKind::Image,
            id: "m1".into(),
            mime_type: Some("image/jpeg".into()),
            caption: None,
            filename: None,
        };
        assert_eq!(
            parse(&Expect::Kind(ExpectKind::Image), &image, &Value::Null)
                .unwrap()
                .value["id"],
            "m1"
        );
        assert!(parse(&Expect::Kind(ExpectKind::Document), &image, &Value::Null).is_none());
        assert!(
            parse(
                &Expect::Kind(ExpectKind::Location),
                &EventKind::Text("Berlin".into()),
                &Value::Null
            )
            .is_none()
        );
    }

    #[test]
    fn regex_answers_bring_their_groups() {
        let re = Regex::new(r"^(?:(?P<prefix>[A-Z]{2})-(?P<num>\d{4}))$").unwrap();
        let a = parse(
            &Expect::Regex(re),
            &EventKind::Text("QA-0042".into()),
            &Value::Null,
        )
        .unwrap();
        assert_eq!(a.value, json!("QA-0042"));
        assert_eq!(a.groups["num"], json!("0042"));
    }
}
