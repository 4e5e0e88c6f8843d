//! Stage 6, send: getting rendered payloads to WhatsApp, exactly once and in order.
//!
//! - [`graph`]: what the Graph API answers and what each error means for a retry.
//! - [`outbox`]: where payloads go: the Graph API, or a local sink without credentials.
//! - [`runtime`]: per-user ordered processing, the turn, pacing, retries, dead letters.

pub mod graph;
pub mod outbox;
pub mod runtime;
