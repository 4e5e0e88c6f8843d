//! The agent webhook (`handover.webhook`): where handover events go, signed.
//!
//! Every delivery is a JSON POST with the header
//! `X-Parlance-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`,
//! keyed with `handover.secret`: the receiver recomputes it over the raw body and
//! refuses a mismatch (and, if it likes, an old `t`, against replays). The time is
//! the sending time, so a retried delivery is signed afresh.
//!
//! Events (docs/api.md, "Connecting an agent inbox"): `handover.started`, `message`
//! (a user's message during the handover, as templates see it), `status` (the delivery
//! status of an agent's reply) and `handover.ended`. `handover.started` is posted by
//! the effect performer (its answer decides `on_unavailable`); the others go through
//! the user's outbox ([`super::codec::Destination::Agent`]).

use crate::flow::settings::HandoverSettings;
use crate::store::durable::handover::Handover;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Parlance-Signature";

/// How long one delivery may take before it counts as failed (and is retried).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The signature header's value for `body` sent at `t` (Unix seconds).
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A fresh opaque id: `prefix` + 32 random hex digits (128 bits from the OS), so
/// handover ids cannot be guessed. Should the OS refuse randomness (it does not on
/// the systems Parlance runs on), a digest of the time and a counter keeps ids unique.
pub fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        use sha2::Digest;
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        tracing::warn!("the OS gave no random bytes; an id is made from the time");
        let seed = format!(
            "{:?}{}",
            std::time::SystemTime::now(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        bytes.copy_from_slice(&Sha256::digest(seed.as_bytes())[..16]);
    }
    format!("{prefix}{}", hex::encode(bytes))
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookError {
    /// The HTTP status (0 when no answer came).
    pub status: u16,
    /// Whether trying again may help: no answer, 408, 429 or 5xx. Any other answer
    /// is a refusal.
    pub retry: bool,
    /// What went wrong; never the URL's query or the secret.
    pub message: String,
}

impl std::fmt::Display for HookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.status == 0 {
            write!(f, "agent webhook: {}", self.message)
        } else {
            write!(
                f,
                "agent webhook answered {}: {}",
                self.status, self.message
            )
        }
    }
}

/// Posts events to the agent webhook.
#[derive(Debug, Clone)]
pub struct AgentHook {
    http: reqwest::Client,
}

impl Default for AgentHook {
    fn default() -> Self {
        AgentHook {
            http: reqwest::Client::builder()
                .timeout(DELIVERY_TIMEOUT)
                // Deliveries carry a conversation: no redirects to somewhere else.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
        }
    }
}

impl AgentHook {
    /// Posts `event`, signed now. `Ok` on any 2xx answer.
    pub async fn post(&self, settings: &HandoverSettings, event: &Value) -> Result<(), HookError> {
        let body = serde_json::to_vec(event).unwrap_or_default();
        let t = chrono::Utc::now().timestamp();
        let signature = sign(&settings.secret, t, &body);
        let answer = self
            .http
            .post(&settings.webhook)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await;
        match answer {
            Err(e) => Err(HookError {
                status: 0,
                retry: true,
                message: if e.is_timeout() {
                    "timed out".into()
                } else {
                    e.without_url().to_string()
                },
            }),
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                Err(HookError {
                    status,
                    retry: status == 408 || status == 429 || status >= 500,
                    message: text.chars().take(200).collect(),
                })
            }
        }
    }
}

/// The fields every event carries: which handover, whose, when (Unix ms).
fn base(event: &str, h: &Handover, at: i64) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("event".into(), json!(event));
    m.insert("handover_id".into(), json!(h.id));
    m.insert("user".into(), json!(h.key.user));
    m.insert("phone_number_id".into(), json!(h.key.phone_number_id));
    m.insert("queue".into(), json!(h.queue));
    m.insert("at".into(), json!(at));
    m
}

/// `handover.started`: a conversation waits for an agent.
pub fn started(h: &Handover, at: i64, contact_name: Option<&str>) -> Value {
    let mut m = base("handover.started", h, at);
    m.insert(
        "contact".into(),
        json!({ "wa_id": h.key.user, "name": contact_name }),
    );
    Value::Object(m)
}

/// `message`: what the user sent, as templates see it (`message`).
pub fn message(h: &Handover, at: i64, message: Value) -> Value {
    let mut m = base("message", h, at);
    m.insert("message".into(), message);
    Value::Object(m)
}

/// `status`: WhatsApp's delivery status of an agent's reply.
pub fn status(h: &Handover, at: i64, status: Value) -> Value {
    let mut m = base("status", h, at);
    m.insert("status".into(), status);
    Value::Object(m)
}

/// `handover.ended`: the handover is over (`state`: resolved, timed_out).
pub fn ended(h: &Handover, at: i64) -> Value {
    let mut m = base("handover.ended", h, at);
    m.insert("state".into(), json!(h.state.as_str()));
    m.insert("status".into(), json!(h.status));
    m.insert("agent".into(), json!(h.agent));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_random_hex() {
        let (a, b) = (random_id("ho_"), random_id("ho_"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 32);
        assert!(a.starts_with("ho_") && a[3..].bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            sign("s3cret", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
    }
}
