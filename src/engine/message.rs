//! What the bot sends, rendered: every template filled in, ready to become a Cloud API
//! payload (`render`). Kept typed so tests, `chat` and limits can look inside.

use crate::flow::{MediaKind, WhatsAppFlowMode};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Text {
        body: String,
        preview_url: bool,
    },
    Media {
        kind: MediaKind,
        source: MediaRef,
        caption: Option<String>,
        filename: Option<String>,
    },
    Buttons {
        header: Option<Header>,
        body: String,
        footer: Option<String>,
        buttons: Vec<Row>,
    },
    List {
        header: Option<String>,
        body: String,
        footer: Option<String>,
        button: String,
        sections: Vec<Section>,
    },
    Template {
        name: String,
        language: String,
        components: Vec<Value>,
    },
    Location {
        latitude: f64,
        longitude: f64,
        name: Option<String>,
        address: Option<String>,
    },
    RequestLocation {
        body: String,
    },
    Contacts(Vec<Value>),
    CtaUrl {
        header: Option<Header>,
        body: String,
        footer: Option<String>,
        button: String,
        url: String,
    },
    WhatsAppFlow {
        header: Option<String>,
        body: String,
        footer: Option<String>,
        flow_id: Option<String>,
        flow_name: Option<String>,
        cta: String,
        mode: WhatsAppFlowMode,
        flow_token: String,
        screen: Option<String>,
        data: Option<Value>,
    },
    Reaction {
        message_id: String,
        emoji: String,
    },
    /// A Cloud API message object written by the designer (`payload` node).
    Payload(Value),
}

#[derive(Debug, Clone, PartialEq)]
pub enum MediaRef {
    Link(String),
    Id(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Header {
    Text(String),
    Media(MediaKind, MediaRef),
}

/// A button or list row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub title: Option<String>,
    pub rows: Vec<Row>,
}

impl Message {
    /// The node kind name a conversation test uses for it (`say`, `buttons`...).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Message::Text { .. } => "say",
            Message::Media { kind, .. } => kind.name(),
            Message::Buttons { .. } => "buttons",
            Message::List { .. } => "list",
            Message::Template { .. } => "template",
            Message::Location { .. } => "location",
            Message::RequestLocation { .. } => "request_location",
            Message::Contacts(_) => "contacts",
            Message::CtaUrl { .. } => "cta_url",
            Message::WhatsAppFlow { .. } => "whatsapp_flow",
            Message::Reaction { .. } => "react",
            Message::Payload(_) => "payload",
        }
    }

    /// The main text: a text's body, an interactive body, a caption, a reaction's emoji.
    pub fn main_text(&self) -> Option<&str> {
        match self {
            Message::Text { body, .. }
            | Message::Buttons { body, .. }
            | Message::List { body, .. }
            | Message::RequestLocation { body }
            | Message::CtaUrl { body, .. }
            | Message::WhatsAppFlow { body, .. } => Some(body),
            Message::Media { caption, .. } => caption.as_deref(),
            Message::Reaction { emoji, .. } => Some(emoji),
            Message::Template { name, .. } => Some(name),
            Message::Location { name, .. } => name.as_deref(),
            Message::Contacts(_) | Message::Payload(_) => None,
        }
    }

    /// Whether WhatsApp delivers it outside the 24-hour window (only templates).
    pub fn allowed_outside_window(&self) -> bool {
        matches!(self, Message::Template { .. })
    }
}
