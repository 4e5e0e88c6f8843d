//! The Graph API's answers to `POST /{phone_number_id}/messages`, and what each error
//! means for the sender (shared/whatsapp/README.md §3–4). Meta says to decide on the
//! error `code` and `details`, not on titles or the HTTP status; the status only decides
//! when there is no code (a proxy's 502, a timeout).

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Deserialize;
use std::time::Duration;

/// The id WhatsApp gave an accepted message (`wamid.…`), echoed in status webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub message_id: String,
}

/// An error from the Graph API, as much as it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError {
    /// The HTTP status (0 when no response arrived).
    pub status: u16,
    /// Meta's error code (130429, 131047, 190...), when the body had one.
    pub code: Option<i64>,
    pub subcode: Option<i64>,
    pub message: String,
    /// `error_data.details`: the useful sentence.
    pub details: Option<String>,
    pub fbtrace_id: Option<String>,
    /// The request went out but no answer came (a timeout): Graph may have accepted
    /// the message, so it is retried at most once.
    pub ambiguous: bool,
}

impl GraphError {
    /// `131047: message (details)`: how the session trace shows it, Meta's code first.
    pub fn brief(&self) -> String {
        let Some(code) = self.code else {
            return self.to_string();
        };
        match &self.details {
            Some(details) => format!("{code}: {} ({details})", self.message),
            None => format!("{code}: {}", self.message),
        }
    }
}

impl std::fmt::Display for GraphError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "Graph API error {code}: {}", self.message)?,
            None if self.status == 0 => {
                write!(f, "no answer from the Graph API: {}", self.message)?
            }
            None => write!(f, "Graph API HTTP {}: {}", self.status, self.message)?,
        }
        if let Some(details) = &self.details {
            write!(f, " ({details})")?;
        }
        Ok(())
    }
}

/// What the sender does about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Try again later with exponential backoff (throughput, temporary outages, 5xx).
    Retry,
    /// Too many messages to this user (131056): back off 4^n seconds for this
    /// recipient only; other users are not held up.
    RetryRecipient,
    /// More than 24 hours since the user last wrote (131047): a free-form message can
    /// never go out; send the node's `on_window_closed` template instead, or report.
    WindowClosed,
    /// The access token is expired, revoked or lacks permission (190, 10, 200–299, or
    /// HTTP 401): nothing this number sends can go out until its credentials change.
    /// Sending pauses for the number with everything kept queued.
    Auth,
    /// Retrying cannot help (bad request, unknown user, policy...): report it with
    /// Meta's code and details.
    Permanent,
}

/// The verdict for a code and HTTP status.
pub fn classify(status: u16, code: Option<i64>) -> Verdict {
    match code {
        Some(131056) => Verdict::RetryRecipient,
        Some(131047) => Verdict::WindowClosed,
        Some(190 | 10 | 200..=299) => Verdict::Auth,
        // Throughput, app and account rate limits, unknown and temporary errors,
        // maintenance.
        Some(130429 | 4 | 80007 | 131000 | 131016 | 2 | 133004 | 131057) => Verdict::Retry,
        // Bad parameters, undeliverable, unsupported, media, templates, token, policy,
        // per-user marketing limits, opted out, spam limit (do not hot-retry).
        Some(
            100 | 131026 | 131051 | 131053 | 132000 | 132001 | 132005 | 132007 | 132012 | 132015
            | 132016 | 132068 | 132069 | 368 | 131031 | 131049 | 131050 | 131048,
        ) => Verdict::Permanent,
        // An unknown code: trust the HTTP status class.
        Some(_) | None => match status {
            0 | 429 | 500..=599 => Verdict::Retry,
            401 => Verdict::Auth,
            _ => Verdict::Permanent,
        },
    }
}

/// How long to wait before retry number `attempt` (0 for the first retry): doubling
/// from 0.5 s (at most 128 s), or, for the pair rate limit, Meta's "retry after 4^X
/// seconds" (at most 4^6 s); each with up to as much again of random jitter, which
/// spreads the retries of many messages apart. (Computed per attempt, not slept: the
/// wait is stored as the message's `not_before`, so it survives a restart.)
pub fn backoff(verdict: Verdict, attempt: u32) -> Duration {
    let (min, factor, max) = match verdict {
        Verdict::RetryRecipient => (Duration::from_secs(1), 4.0, Duration::from_secs(4096)),
        Verdict::Retry | Verdict::WindowClosed | Verdict::Auth | Verdict::Permanent => {
            (Duration::from_millis(500), 2.0, Duration::from_secs(128))
        }
    };
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_factor(factor)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt as usize)
        .unwrap_or(max)
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    code: Option<i64>,
    error_subcode: Option<i64>,
    error_data: Option<ErrorData>,
    fbtrace_id: Option<String>,
}

#[derive(Deserialize)]
struct ErrorData {
    details: Option<String>,
}

#[derive(Deserialize)]
struct SuccessBody {
    #[serde(default)]
    messages: Vec<SuccessMessage>,
}

#[derive(Deserialize)]
struct SuccessMessage {
    id: String,
}

/// Reads the answer to a send: the accepted message's id, or the error. A body that is
/// not what Meta sends is an error too, never a panic.
pub fn read_response(status: u16, body: &[u8]) -> Result<Accepted, GraphError> {
    if (200..300).contains(&status) {
        return match serde_json::from_slice::<SuccessBody>(body) {
            Ok(ok) => match ok.messages.into_iter().next() {
                Some(m) => Ok(Accepted { message_id: m.id }),
                None => Err(unreadable(status, "the answer names no accepted message")),
            },
            Err(e) => Err(unreadable(status, &format!("the answer is not JSON: {e}"))),
        };
    }
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(ErrorEnvelope { error }) => Err(GraphError {
            status,
            code: error.code,
            subcode: error.error_subcode,
            message: error.message,
            details: error.error_data.and_then(|d| d.details),
            fbtrace_id: error.fbtrace_id,
            ambiguous: false,
        }),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let excerpt: String = text.chars().take(200).collect();
            Err(unreadable(status, &excerpt))
        }
    }
}

fn unreadable(status: u16, message: &str) -> GraphError {
    GraphError {
        status,
        code: None,
        subcode: None,
        message: message.to_string(),
        details: None,
        fbtrace_id: None,
        ambiguous: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn sample(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/whatsapp/samples")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn reads_meta_success_and_error_bodies() {
        let ok = read_response(200, &sample("meta-docs-copy/response--send-success.json")).unwrap();
        assert_eq!(
            ok.message_id,
            "wamid.HBgLMTY0NjcwNDM1OTUVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA"
        );

        let e = read_response(429, &sample("meta-docs-copy/error--graph-130429.json")).unwrap_err();
        assert_eq!((e.code, e.subcode), (Some(130429), Some(2494055)));
        assert_eq!(
            e.details.as_deref(),
            Some("Cloud API message throughput has been reached.")
        );
        assert_eq!(classify(e.status, e.code), Verdict::Retry);
        assert_eq!(
            e.to_string(),
            "Graph API error 130429: (#130429) Rate limit hit (Cloud API message throughput has been reached.)"
        );

        let e =
            read_response(400, &sample("meta-docs-copy/error--graph-100-mm-api.json")).unwrap_err();
        assert_eq!(classify(e.status, e.code), Verdict::Permanent);
    }

    #[test]
    fn the_error_table_of_the_whatsapp_notes() {
        for code in [130429, 4, 80007, 131000, 131016, 2, 133004, 131057] {
            assert_eq!(classify(400, Some(code)), Verdict::Retry, "{code}");
        }
        assert_eq!(classify(429, Some(131056)), Verdict::RetryRecipient);
        assert_eq!(classify(400, Some(131047)), Verdict::WindowClosed);
        for code in [
            100, 131026, 131051, 131053, 132000, 132001, 132012, 132015, 132016, 368, 131031,
            131049, 131050,
        ] {
            assert_eq!(classify(400, Some(code)), Verdict::Permanent, "{code}");
        }
        for code in [190, 10, 200, 299] {
            assert_eq!(classify(401, Some(code)), Verdict::Auth, "{code}");
        }
        assert_eq!(classify(401, None), Verdict::Auth, "a proxy's 401 too");
        assert_eq!(classify(503, None), Verdict::Retry);
        assert_eq!(
            classify(0, None),
            Verdict::Retry,
            "no answer (timeout) is retried"
        );
        assert_eq!(classify(403, None), Verdict::Permanent);
        assert_eq!(
            classify(500, Some(999_999)),
            Verdict::Retry,
            "an unknown code follows the HTTP status"
        );
    }

    #[test]
    fn odd_bodies_are_errors_not_panics() {
        let e = read_response(502, b"<html>Bad Gateway</html>").unwrap_err();
        assert_eq!((e.status, e.code), (502, None));
        assert_eq!(e.message, "<html>Bad Gateway</html>");
        assert!(read_response(200, b"{}").is_err());
        assert!(read_response(200, b"not json").is_err());
    }

    #[test]
    fn backoff_grows_and_the_pair_limit_uses_powers_of_four() {
        // Each wait is its step plus up to as much again of jitter.
        let within = |d: Duration, step: Duration| d >= step && d <= step * 2;
        for _ in 0..20 {
            let pair = |n| backoff(Verdict::RetryRecipient, n);
            assert!(within(pair(0), Duration::from_secs(1)));
            assert!(within(pair(2), Duration::from_secs(16)));
            assert!(within(pair(9), Duration::from_secs(4096)));
            let plain = |n| backoff(Verdict::Retry, n);
            assert!(within(plain(0), Duration::from_millis(500)));
            assert!(within(plain(3), Duration::from_secs(4)));
            assert!(within(plain(30), Duration::from_secs(128)));
        }
        // The jitter spreads them apart.
        let waits: std::collections::HashSet<Duration> =
            (0..20).map(|_| backoff(Verdict::Retry, 3)).collect();
        assert!(waits.len() > 1);
    }
}
