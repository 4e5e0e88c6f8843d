//! Stage 6, send: getting rendered payloads to WhatsApp, exactly once and in order.
//!
//! - [`graph`]: what the Graph API answers and what each error means for a retry.

pub mod graph;
