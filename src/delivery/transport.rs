//! Where rendered payloads go: the Graph API, or (in local mode) a sink that keeps them
//! for the developer to see.

use super::dev_hub::DevHub;
use super::graph::{self, Accepted, GraphError};
use crate::flow::WhatsAppSettings;
use crate::store::SessionKey;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
        self.post_json(token, serde_json::to_vec(body).unwrap_or_default())
            .await
    }

    /// Posts a body that is JSON text already (see `codec::OutgoingSend`).
    pub async fn post_json(&self, token: &str, json: Vec<u8>) -> Result<Accepted, GraphError> {
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
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json)
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

/// Local mode: nothing goes to Meta. The sink answers as the Graph API would: a wamid
/// for every message, and Meta's 131047 for a free-form message more than 24 hours
/// (on the `/dev` clock) after the user last wrote, so the node's `on_window_closed`
/// template goes out instead. What was sent is the `/dev` simulator's to show
/// ([`DevHub`]); the sender tells it once the outbox recorded the send.
#[derive(Debug)]
pub struct LocalSink {
    phone_number_id: String,
    hub: Arc<DevHub>,
    /// Random per start: the store keeps sent records by wamid, and a restart must
    /// not give a new message the id of an old one.
    run: String,
    counter: AtomicU64,
}

impl LocalSink {
    pub fn new(phone_number_id: &str, hub: Arc<DevHub>) -> Self {
        LocalSink {
            phone_number_id: phone_number_id.to_string(),
            hub,
            run: super::agent_hook::random_id("")[..8].to_string(),
            counter: AtomicU64::new(0),
        }
    }

    pub fn post(&self, body: &Value) -> Result<Accepted, GraphError> {
        let to = body["to"].as_str().unwrap_or_default();
        let template = body["type"].as_str() == Some("template");
        let key = SessionKey::new(&self.phone_number_id, to);
        if !template && !self.hub.window_open(&key) {
            return Err(GraphError {
                status: 400,
                code: Some(131047),
                subcode: None,
                message: "Re-engagement message".into(),
                details: Some(
                    "Message failed to send because more than 24 hours have passed since the customer last replied to this number.".into(),
                ),
                fbtrace_id: None,
                ambiguous: false,
            });
        }
        let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Accepted {
            message_id: format!("wamid.local.{}.{n}", self.run),
        })
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
            Transport::Local(l) => l.post(body),
        }
    }

    /// The Graph API's client, unless local: the sender posts stored JSON text to it
    /// as it is.
    pub fn graph(&self) -> Option<&GraphClient> {
        match self {
            Transport::Graph(g) => Some(g),
            Transport::Local(_) => None,
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Transport::Local(_))
    }
}
