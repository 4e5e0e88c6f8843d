//! Stage 6, send: the per-user event loop on the durable store, getting rendered
//! payloads to WhatsApp exactly once and in order.
//!
//! - [`inbox`]: what a webhook item becomes: stored in its user's durable inbox
//!   (deduplicated in the same step) or recorded as a status, before the ack.
//! - [`runtime`]: the per-user workers (lease, turns, sends), intake and shutdown drain.
//! - [`turn`]: one item → the engine → one atomic commit of session and outbox.
//! - [`effects`]: a turn that waits on the outside world (`http`): performed beside
//!   the worker, its outcome committed as the rest of the turn; a watchdog after a crash.
//! - [`sender`]: one outgoing message: pacing, window template, retries until the
//!   deadline, auth pause, dead letters.
//! - [`scan`]: finding work nobody is doing (restarts, dead instances, due retries).
//! - [`trace`]: the session trace: each user's newest turns as this instance ran them
//!   (nodes visited, variables, payloads and their statuses), in memory, bounded.
//! - [`api_items`]: what the API's inject and notify put in a user's loop.
//! - [`codec`]: the versioned bodies the store keeps for items and messages.
//! - [`graph`]: what the Graph API answers and what each error means for a retry.
//! - [`transport`]: where payloads go: the Graph API, or a local sink without credentials.
//! - [`dev_hub`]: what the `/dev` simulator sees of local numbers: events, histories,
//!   the simulated clock.

pub mod agent_hook;
pub mod api_items;
pub mod codec;
pub mod dev_hub;
pub mod effects;
pub mod graph;
pub mod handover;
pub mod inbox;
mod pace;
pub mod runtime;
pub mod scan;
pub mod sender;
pub mod trace;
pub mod transport;
pub mod turn;
