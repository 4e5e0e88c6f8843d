//! Where rendered payloads go: the Graph API, or (in local mode) a sink that keeps them
//! for the developer to see.

use super::graph::{self, Accepted, GraphError};
use crate::flow::WhatsAppSettings;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// How long one Graph API request may take before it counts as failed (and retryable),
/// unless `--graph-timeout` says otherwise.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The Graph API for one phone number.
#[derive(Debug, Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    /// Parsed once: reqwest would parse a string URL again for every message.
    messages_url: Result<reqwest::Url, String>,
    timeout: Duration,
}

impl GraphClient {
    /// `http` is shared by every number: one pool of connections.
    pub fn new(http: reqwest::Client, wa: &WhatsAppSettings, timeout: Duration) -> Self {
        let base = wa.base_url.trim_end_matches('/');
        let url = format!(
            "{base}/{}/{}/messages",
            wa.api_version,
            wa.phone_number_id.as_deref().unwrap_or_default()
        );
        GraphClient {
            http,
            messages_url: reqwest::Url::parse(&url)
                .map_err(|e| format!("whatsapp.base_url does not make a valid URL: {e}")),
            timeout,
        }
    }

    /// Posts one body to `/{phone_number_id}/messages`. The token is the bot's current
    /// one, so a reload with new credentials takes effect at the next send.
    pub async fn post(&self, token: &str, body: &Value) -> Result<Accepted, GraphError> {
        let url = match &self.messages_url {
            Ok(url) => url.clone(),
            Err(e) => {
                return Err(GraphError {
                    status: 0,
                    code: None,
                    subcode: None,
                    message: e.clone(),
                    details: None,
                    fbtrace_id: None,
                    // Nothing went out.
                    ambiguous: false,
                });
            }
        };
        let response = self
            .http
            .post(url)
            .bearer_auth(token)
            .timeout(self.timeout)
            .json(body)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                let ambiguous = !e.is_connect();
                return Err(GraphError {
                    status: 0,
                    code: None,
                    subcode: None,
                    // Never echo the URL's query or headers: the message is logged.
                    message: if e.is_timeout() {
                        "timed out".into()
                    } else {
                        e.without_url().to_string()
                    },
                    details: None,
                    fbtrace_id: None,
                    // A connection never made sent nothing; anything else may have
                    // reached Meta.
                    ambiguous,
                });
            }
        };
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap_or_default();
        graph::read_response(status, &bytes)
    }
}

/// Local mode: nothing goes to Meta; every payload is kept per user (the newest
/// `KEEP_PER_USER`), for `/dev/message` and the simulator.
#[derive(Debug, Default)]
pub struct LocalSink {
    sent: Mutex<HashMap<String, Vec<Value>>>,
    counter: Mutex<u64>,
}

impl LocalSink {
    pub const KEEP_PER_USER: usize = 200;

    pub fn post(&self, body: &Value) -> Accepted {
        let to = body["to"].as_str().unwrap_or_default().to_string();
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let list = sent.entry(to).or_default();
        list.push(body.clone());
        let excess = list.len().saturating_sub(Self::KEEP_PER_USER);
        list.drain(..excess);
        let mut counter = self.counter.lock().unwrap_or_else(|e| e.into_inner());
        *counter += 1;
        Accepted {
            message_id: format!("wamid.local.{counter}"),
        }
    }

    /// What was sent to `user`, oldest first.
    pub fn sent_to(&self, user: &str) -> Vec<Value> {
        let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent.get(user).cloned().unwrap_or_default()
    }
}

/// Where one bot's messages go. (Not the outbox: that name is kept for the durable
/// queue of messages waiting to be sent.)
#[derive(Debug)]
pub enum Transport {
    Graph(GraphClient),
    Local(LocalSink),
}

impl Transport {
    pub async fn post(&self, token: &str, body: &Value) -> Result<Accepted, GraphError> {
        match self {
            Transport::Graph(g) => g.post(token, body).await,
            Transport::Local(l) => Ok(l.post(body)),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Transport::Local(_))
    }
}
