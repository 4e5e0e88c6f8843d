//! Prometheus metrics (`GET /metrics`), with the official client library: what operators
//! graph and alert on.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of rejected webhooks: why.
pub type ReasonLabels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    pub webhooks_received: Counter,
    pub webhooks_rejected: Family<ReasonLabels, Counter>,
    pub messages_sent: Counter,
    pub messages_failed: Counter,
    pub messages_retried: Counter,
    /// Send attempts whose outcome is unknown (a timeout after the request went out).
    pub messages_ambiguous: Counter,
    /// 1 for each phone number whose sending is paused by an auth error.
    pub sending_paused: Family<ReasonLabels, Gauge>,
    pub turns: Counter,
    /// Turns run by the worker already running for the user, which a webhook handed
    /// the message to (see `delivery::runtime::Runtime::offer`).
    pub turns_handed: Counter,
    pub turn_errors: Counter,
    /// `http` node calls, by outcome (`ok` or the failure's kind).
    pub http_calls: Family<ReasonLabels, Counter>,
    /// Effects performed again because the process that started them stopped first.
    pub effects_recovered: Counter,
    /// Seconds from loading the session to saving it (the engine and the store).
    pub turn_seconds: Histogram,
    /// Sessions with activity within their bot's session timeout, recounted by a scrape
    /// at most every `server::SESSION_COUNT_EVERY`.
    pub sessions_active: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("parlance");
        let m = Metrics {
            webhooks_received: Counter::default(),
            webhooks_rejected: Family::default(),
            messages_sent: Counter::default(),
            messages_failed: Counter::default(),
            messages_retried: Counter::default(),
            messages_ambiguous: Counter::default(),
            sending_paused: Family::default(),
            turns: Counter::default(),
            turns_handed: Counter::default(),
            turn_errors: Counter::default(),
            http_calls: Family::default(),
            effects_recovered: Counter::default(),
            // 10 µs to ~2.6 s.
            turn_seconds: Histogram::new(exponential_buckets(0.00001, 4.0, 10)),
            sessions_active: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "webhooks_received",
            "Webhook deliveries received",
            m.webhooks_received.clone(),
        );
        registry.register(
            "webhooks_rejected",
            "Webhook deliveries rejected, by reason",
            m.webhooks_rejected.clone(),
        );
        registry.register(
            "messages_sent",
            "Messages the Graph API accepted",
            m.messages_sent.clone(),
        );
        registry.register(
            "messages_failed",
            "Messages given up on (dead letters)",
            m.messages_failed.clone(),
        );
        registry.register(
            "messages_retried",
            "Send attempts retried",
            m.messages_retried.clone(),
        );
        registry.register(
            "messages_ambiguous",
            "Send attempts that timed out after the request went out (Graph may have accepted them; each is retried at most once)",
            m.messages_ambiguous.clone(),
        );
        registry.register(
            "sending_paused",
            "1 while a phone number's sending is paused because the Graph API refused its access token",
            m.sending_paused.clone(),
        );
        registry.register("turns", "Conversation turns run", m.turns.clone());
        registry.register(
            "turns_handed",
            "Turns whose message a webhook handed to the worker already running for the user (a user answering while the bot's replies go out)",
            m.turns_handed.clone(),
        );
        registry.register(
            "turn_errors",
            "Turns that stopped with an error",
            m.turn_errors.clone(),
        );
        registry.register(
            "http_calls",
            "Calls of http nodes, by outcome (ok, or why they failed: status, timeout, connect, forbidden, too_large, invalid_json, redirect)",
            m.http_calls.clone(),
        );
        registry.register(
            "effects_recovered",
            "Effects (http calls) performed again because the process that started them stopped before their outcome was committed",
            m.effects_recovered.clone(),
        );
        registry.register(
            "turn_seconds",
            "Time of one turn: session load, engine, session save",
            m.turn_seconds.clone(),
        );
        registry.register(
            "sessions_active",
            "Sessions active within their timeout",
            m.sessions_active.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn reject(&self, reason: &str) {
        self.webhooks_rejected
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }
}
