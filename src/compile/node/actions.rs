//! The kinds that act instead of sending: set, http, handover.

use super::{Ctx, is_identifier};
use crate::diag::Code;
use crate::flow::limits;
use crate::flow::*;
use crate::source::YamlPath;
use crate::spec::flow::*;
use indexmap::IndexMap;
use serde_json::Value;
use std::time::Duration;

/// Default timeout of an `http` node.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest timeout an `http` node may set: a user's later messages wait for it.
pub const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// Retries of an idempotent `http` call unless the node says otherwise.
pub const DEFAULT_HTTP_RETRIES: u32 = 2;
/// The most retries an `http` node may ask for.
pub const MAX_HTTP_RETRIES: u32 = 5;

impl Ctx<'_> {
    pub(super) fn set(
        &mut self,
        raw: &IndexMap<String, RawSetValue>,
        path: &YamlPath,
    ) -> Vec<(String, SetValue)> {
        let mut out = Vec::new();
        for (name, value) in raw {
            let p = path.key(name);
            if !is_identifier(name) {
                self.diags.push(
                    self.file
                        .diag_at_key(
                            &p,
                            Code::InvalidValue,
                            format!("\"{name}\" is not a valid variable name"),
                        )
                        .with_hint(
                            "use letters, digits and _, not starting with a digit, e.g. first_name",
                        ),
                );
            }
            let value = match value {
                RawSetValue::Bool(b) => SetValue::Literal(Value::Bool(*b)),
                RawSetValue::Number(n) => SetValue::Literal(Value::Number(n.clone())),
                RawSetValue::Expression(e) => SetValue::Expr(self.expr(e, &p, &[])),
            };
            out.push((name.clone(), value));
        }
        out
    }

    pub(super) fn http(&mut self, raw: &RawHttp, path: &YamlPath) -> Http {
        let url = self.url(&raw.url, &path.key("url"), "the url");
        let headers = raw
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), self.text(v, &path.key("headers").key(k))))
            .collect();
        let query = raw
            .query
            .iter()
            .map(|(k, v)| (k.clone(), self.text(v, &path.key("query").key(k))))
            .collect();
        let body = match (&raw.json, &raw.form, &raw.body) {
            (Some(_), None, None) => {
                let json = self.raw_json(&path.key("json")).unwrap_or(Value::Null);
                HttpBody::Json(self.json(&json, &path.key("json")))
            }
            (None, Some(form), None) => HttpBody::Form(
                form.iter()
                    .map(|(k, v)| (k.clone(), self.text(v, &path.key("form").key(k))))
                    .collect(),
            ),
            (None, None, Some(body)) => HttpBody::Text(self.text(body, &path.key("body"))),
            (None, None, None) => HttpBody::None,
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                self.report(
                    path,
                    Code::InvalidValue,
                    "give one of `json`, `form` and `body`",
                    Some("keep one: `json` sends a JSON body, `form` a form-encoded one, `body` text as written".into()),
                );
                HttpBody::None
            }
        };
        let timeout = raw.timeout.as_ref().map_or(DEFAULT_HTTP_TIMEOUT, |t| {
            let p = path.key("timeout");
            let d = self.duration(t, &p);
            if d > MAX_HTTP_TIMEOUT || d.is_zero() {
                self.report(
                    &p,
                    Code::InvalidValue,
                    format!(
                        "an http timeout must be more than 0s and at most {}s, found {}",
                        MAX_HTTP_TIMEOUT.as_secs(),
                        t.trim()
                    ),
                    Some("the user's next messages wait for the call; a slow backend should answer at once and send the result later".into()),
                );
            }
            d
        });
        let method = raw.method.unwrap_or(HttpMethod::Get);
        let retries = match raw.retries {
            None if method.idempotent() => DEFAULT_HTTP_RETRIES,
            None | Some(0) => 0,
            Some(n) if !method.idempotent() => {
                self.report(
                    &path.key("retries"),
                    Code::InvalidValue,
                    format!(
                        "a {} request is never retried: sending it twice may do it twice",
                        method.as_str()
                    ),
                    Some(
                        "remove `retries`, or make the backend's call idempotent and use PUT"
                            .into(),
                    ),
                );
                n
            }
            Some(n) if n > MAX_HTTP_RETRIES => {
                self.report(
                    &path.key("retries"),
                    Code::InvalidValue,
                    format!("at most {MAX_HTTP_RETRIES} retries, found {n}"),
                    None,
                );
                n
            }
            Some(n) => n,
        };
        Http {
            method,
            url,
            headers,
            query,
            body,
            timeout,
            retries,
        }
    }

    pub(super) fn handover(&mut self, raw: Option<&RawHandover>, path: &YamlPath) -> Handover {
        let Some(raw) = raw else {
            return Handover {
                say: None,
                queue: None,
                timeout: None,
                on_timeout: None,
                on_unavailable: None,
            };
        };
        if raw.on_timeout.is_some() && raw.timeout.is_none() {
            self.diags.push(
                self.file
                    .diag_at_key(
                        &path.key("on_timeout"),
                        Code::MisplacedKey,
                        "`on_timeout` has no effect without `timeout`",
                    )
                    .with_hint("add e.g. timeout: 10m"),
            );
        }
        Handover {
            say: self.limited_opt(&raw.say, &path.key("say"), limits::TEXT_BODY, "the text"),
            queue: raw.queue.clone(),
            timeout: raw
                .timeout
                .as_ref()
                .map(|t| self.duration(t, &path.key("timeout"))),
            on_timeout: raw
                .on_timeout
                .as_ref()
                .map(|t| self.target(t, &path.key("on_timeout"))),
            on_unavailable: raw
                .on_unavailable
                .as_ref()
                .map(|t| self.target(t, &path.key("on_unavailable"))),
        }
    }
}
