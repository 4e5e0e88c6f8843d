//! Texts and values: WhatsApp's length limits, ids, URLs, JSON kept in Cloud API form,
//! durations and variable names.

use super::Ctx;
use crate::diag::Code;
use crate::flow::limits;
use crate::flow::*;
use crate::source::YamlPath;
use serde_json::Value;
use std::time::Duration;

impl Ctx<'_> {
    /// A text with a WhatsApp length limit. For templates only the literal part is
    /// known here; the rendered text is checked again before sending.
    pub(super) fn limited(
        &mut self,
        source: &str,
        path: &YamlPath,
        max: usize,
        what: &str,
    ) -> Text {
        let literal = literal_chars(source);
        if literal > max {
            let message = if Templates::is_template(source) {
                format!(
                    "{what} is at least {literal} characters before its template values are filled in; WhatsApp allows at most {max}"
                )
            } else {
                format!("{what} is {literal} characters; WhatsApp allows at most {max}")
            };
            self.report(path, Code::WhatsappLimit, message, Some(limit_hint(what)));
        }
        self.text(source, path)
    }

    /// [`Self::limited`] for an optional text.
    pub(super) fn limited_opt(
        &mut self,
        source: &Option<String>,
        path: &YamlPath,
        max: usize,
        what: &str,
    ) -> Option<Text> {
        source.as_ref().map(|s| self.limited(s, path, max, what))
    }

    pub(super) fn unique(
        &mut self,
        seen: &mut Vec<String>,
        value: &str,
        path: &YamlPath,
        what: &str,
    ) {
        if seen.iter().any(|s| s == value) {
            self.report(
                path,
                Code::DuplicateId,
                format!("{what} \"{value}\" is used twice in this message"),
                Some(format!(
                    "each {what} must be unique so the reply can be told apart"
                )),
            );
        } else {
            seen.push(value.to_string());
        }
    }

    pub(super) fn check_id(&mut self, id: &str, path: &YamlPath, max: usize) {
        let n = id.chars().count();
        if n == 0 {
            self.report(
                path,
                Code::InvalidValue,
                "the id is empty",
                Some("give each choice a short code; `save` stores it when the user picks the choice".into()),
            );
        } else if n > max {
            self.report(
                path,
                Code::WhatsappLimit,
                format!("the id is {n} characters; WhatsApp allows at most {max}"),
                Some("the user never sees ids; use a short code like size_large".into()),
            );
        }
    }

    pub(super) fn url(&mut self, source: &str, path: &YamlPath, what: &str) -> Text {
        let is_url = source.starts_with("https://") || source.starts_with("http://");
        if !is_url && !Templates::is_template(source) {
            self.report(
                path,
                Code::InvalidValue,
                format!("{what} must be an http(s) URL, found \"{source}\""),
                Some("write the whole address, starting with https://".into()),
            );
        }
        self.text(source, path)
    }

    /// The JSON value as written at `path` (for kinds kept in Cloud API form).
    pub(super) fn raw_json(&self, path: &YamlPath) -> Option<Value> {
        self.file.node(path).map(|n| n.to_json())
    }

    pub(super) fn json(&mut self, value: &Value, path: &YamlPath) -> JsonTemplate {
        match value {
            Value::Null => JsonTemplate::Null,
            Value::Bool(b) => JsonTemplate::Bool(*b),
            Value::Number(n) => JsonTemplate::Number(n.clone()),
            Value::String(s) => JsonTemplate::Text(self.text(s, path)),
            Value::Array(items) => JsonTemplate::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.json(v, &path.index(i)))
                    .collect(),
            ),
            Value::Object(map) => JsonTemplate::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.json(v, &path.key(k))))
                    .collect(),
            ),
        }
    }

    pub(super) fn duration(&mut self, source: &str, path: &YamlPath) -> Duration {
        parse_duration(source).unwrap_or_else(|message| {
            self.report(
                path,
                Code::BadDuration,
                message,
                Some("write durations like 30s, 5m, 2h or 7d".into()),
            );
            Duration::ZERO
        })
    }

    /// A `wait`: a typing pause, bounded so no user is wedged by `wait: 3650d`.
    pub(super) fn wait(&mut self, source: &str, path: &YamlPath) -> Duration {
        let d = self.duration(source, path);
        if d > limits::MAX_WAIT {
            self.report(
                path,
                Code::WaitTooLong,
                format!(
                    "{} is longer than the {}s a wait may last",
                    source.trim(),
                    limits::MAX_WAIT.as_secs()
                ),
                Some("a wait is a typing pause within one reply; longer pauses (reminders, follow-ups) need durable timers, which are planned".into()),
            );
        }
        d
    }
}

/// What to do about a text longer than WhatsApp allows, by what the text is.
fn limit_hint(what: &str) -> String {
    match what {
        "the button title" => "shorten the title; say more in the body".into(),
        "the row title" => "shorten the title; put details in the row's `description`".into(),
        "the text" | "the question" | "the reprompt" | "the body" | "the caption" => {
            "shorten it, or send the rest in a second node".into()
        }
        other => format!("shorten {other}"),
    }
}

pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Characters outside `{{ }}`, `{% %}` and `{# #}`: a lower bound of the rendered length.
fn literal_chars(source: &str) -> usize {
    let mut count = 0;
    let mut rest = source;
    loop {
        let next = ["{{", "{%", "{#"]
            .iter()
            .filter_map(|open| rest.find(open).map(|i| (i, *open)))
            .min();
        match next {
            None => return count + rest.chars().count(),
            Some((i, open)) => {
                count += rest[..i].chars().count();
                let close = match open {
                    "{{" => "}}",
                    "{%" => "%}",
                    _ => "#}",
                };
                match rest[i + 2..].find(close) {
                    Some(j) => rest = &rest[i + 2 + j + 2..],
                    None => return count,
                }
            }
        }
    }
}

/// Parses `30s`, `5m`, `2h`, `7d`, `1h30m`, `500ms`.
pub fn parse_duration(source: &str) -> Result<Duration, String> {
    let trimmed = source.trim();
    if trimmed.is_empty() {
        return Err("the duration is empty".into());
    }
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("\"{trimmed}\" has no unit"));
    }
    humantime::parse_duration(trimmed).map_err(|e| format!("\"{trimmed}\" is not a duration ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_chars_skip_template_tags() {
        assert_eq!(literal_chars("Hi {{ contact.name }}!"), 4);
        assert_eq!(literal_chars("{% if x %}ab{% endif %}"), 2);
        assert_eq!(literal_chars("plain"), 5);
        assert_eq!(literal_chars("a {{ unclosed"), 2);
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
