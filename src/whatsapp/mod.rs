//! The inbound side of the WhatsApp Cloud API webhook.
//!
//! Only this module knows WhatsApp's inbound JSON. The server hands it the raw POST body
//! and the `X-Hub-Signature-256` header; it gets back plain Rust: [`inbound::Item`]s
//! carrying engine [`Event`](crate::engine::Event)s for user messages, delivery statuses,
//! errors, and the names of other webhook fields for the log. Nothing else in the crate
//! looks inside a webhook body.
//!
//! - [`signature`] checks (and, for tests and the fake Graph API, makes)
//!   `X-Hub-Signature-256`, in constant time, over the raw bytes.
//! - [`inbound`] parses a body into an ordered list of items, leniently
//!   (Meta's payloads vary by API version; a non-200 answer makes Meta redeliver for
//!   days), never panicking, never dropping a user message for its type.
//!
//! Order of use: [`signature::verify`] over the exact bytes received, then
//! [`inbound::parse`] over the same bytes, then answer 200 and process the items.
//! The facts this relies on are in `shared/whatsapp/README.md` §1–2.

pub mod inbound;
pub mod signature;
