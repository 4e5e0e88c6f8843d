//! Stage 6, send: getting rendered payloads to WhatsApp, exactly once and in order.
//!
//! - [`graph`]: what the Graph API answers and what each error means for a retry.
//! - [`transport`]: where payloads go: the Graph API, or a local sink without credentials.
//! - [`inbox`]: what a webhook item becomes: dedupe, a job in its user's queue, a
//!   recorded status, a failed message reported back to its conversation.
//! - [`runtime`]: per-user ordered processing, the turn, pacing, retries, dead letters,
//!   and the shutdown drain.

pub mod graph;
pub mod inbox;
pub mod runtime;
pub mod transport;
