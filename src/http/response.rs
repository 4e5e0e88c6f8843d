//! Reading an answer: the body streamed up to the size limit (a larger one is never read
//! whole), JSON parsed when the answer says it is JSON, and the shape `save` stores:
//! `{status, headers, body}`.

use super::{Failure, classify};
use crate::engine::HttpErrorKind;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// The answer as `save` stores it: `Ok` for 2xx, a failure otherwise.
pub(super) async fn read(mut response: reqwest::Response, limit: u64) -> Result<Value, Failure> {
    let status = response.status();
    let code = status.as_u16();
    let headers = response.headers();
    let too_large = || Failure {
        kind: HttpErrorKind::TooLarge,
        status: Some(code),
        message: format!("the answer's body is larger than http.max_body_bytes ({limit} bytes)"),
        response: None,
        retryable: false,
        retry_after: None,
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let is_json = is_json(headers);
    let retry_after = retry_after(headers);
    let header_map = header_object(headers);

    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if (body.len() + chunk.len()) as u64 > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                let mut f = classify(&e);
                f.status = Some(code);
                return Err(f);
            }
        }
    }

    let text = || Value::String(String::from_utf8_lossy(&body).into_owned());
    let parsed = if !is_json {
        Ok(text())
    } else if body.iter().all(u8::is_ascii_whitespace) {
        // A JSON answer with no body (204, or a 200 that says nothing) holds null.
        Ok(Value::Null)
    } else {
        serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string())
    };
    let shape = |body: Value| json!({ "status": code, "headers": header_map, "body": body });
    if status.is_success() {
        return match parsed {
            Ok(body) => Ok(shape(body)),
            Err(e) => Err(Failure {
                kind: HttpErrorKind::InvalidJson,
                status: Some(code),
                message: format!("the answer says it is JSON but is not: {e}"),
                response: Some(shape(text())),
                retryable: false,
                retry_after: None,
            }),
        };
    }
    // An error answer keeps its body as text when it is not the JSON it claims to be:
    // the status is what went wrong.
    let body = parsed.unwrap_or_else(|_| text());
    Err(Failure {
        kind: HttpErrorKind::Status,
        status: Some(code),
        message: format!("the answer was {status}"),
        response: Some(shape(body)),
        retryable: status.is_server_error() || code == 429,
        retry_after,
    })
}

/// `application/json` or any `+json` type.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// `Retry-After` in seconds (the HTTP-date form is not read: the backoff applies).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Headers by lower-case name; a repeated header's values joined with ", ".
fn header_object(headers: &HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match out.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            Some(_) | None => {
                out.insert(name.as_str().to_string(), Value::String(value));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn json_types_are_recognised() {
        let mut h = HeaderMap::new();
        for (ct, json) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/problem+json", true),
            ("text/plain", false),
            ("application/jsonp", false),
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_json(&h), json, "{ct}");
        }
        h.remove(CONTENT_TYPE);
        assert!(!is_json(&h));
    }

    #[test]
    fn repeated_headers_are_joined() {
        let mut h = HeaderMap::new();
        h.append("x-tag", HeaderValue::from_static("a"));
        h.append("x-tag", HeaderValue::from_static("b"));
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        let o = header_object(&h);
        assert_eq!(o["x-tag"], "a, b");
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
    }
}
