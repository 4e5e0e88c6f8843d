//! # Parlance
//!
//! A declarative conversation-flow runtime for WhatsApp bots. A YAML file flows one way:
//!
//! ```text
//! read (source) → validate (compile::schema + compile) → compile (flow::Bot) →
//! run one turn (engine) → render (WhatsApp payload) → send (transport)
//! ```
//!
//! ## Code map
//! - [`diag`]: `Diagnostic`, the one way every problem is reported, with stable codes.
//! - [`source`]: reads a bot folder's files into positioned YAML trees; bounds hostile
//!   input (size, encoding, nesting, alias bombs); `${NAME}` interpolation; keeps every
//!   path inside the bot folder (`source::bot_path`).
//! - [`spec`]: the "as written" serde types; the JSON Schemas under `schemas/` are
//!   generated from them.
//! - [`compile`]: schema validation with designer-friendly messages, then meaning:
//!   targets, limits, templates, expressions, regexes, durations, and whether this build
//!   can run the bot; builds the `Bot`. What `validate` passes, `serve` runs: both load
//!   through `compile::load_bot`.
//! - [`flow`]: the compiled, immutable bot. No serde, no I/O.
//! - [`engine`]: one turn of one session: `step(bot, session, event, now, host)`. No I/O;
//!   effects (http, script, handover) go through the caller's `Host`.
//! - [`render`]: typed messages → the exact Cloud API JSON (checked against
//!   `schemas/whatsapp/`), and → text for the terminal.
//! - [`testing`]: the conversation test runner behind `parlance test`.
//! - [`store`]: sessions, seen message ids and statuses: SQLite (default) or memory.
//!   `store::durable` is the durable store the per-user event loop will stand on (inbox
//!   with dedupe, per-user leases with fencing, atomic turn commits with the outbox, dead
//!   letters, timers) with one conformance suite and three implementations: SQLite (one
//!   writer, group commit), Redis (one Lua script per atomic step, one cluster slot per
//!   user) and memory. Not wired into `serve` yet.
//! - [`whatsapp`]: WhatsApp's inbound webhook JSON and its signature; the only place that
//!   knows them.
//! - [`live`]: `LiveBot`, the bot a folder serves now (folder, swappable compiled bot,
//!   last reload report): what `reload` swaps and `delivery` and `server` read.
//! - [`delivery`]: the runtime behind the server: what a webhook item becomes
//!   (`delivery::inbox`: dedupe, queueing, statuses), per-user ordered turns, the sender
//!   (pacing, message delay, retries, dead letters) over a `delivery::transport` (the
//!   Graph API or the local sink), and the shutdown drain.
//! - [`reload`]: watches bot folders and swaps a `LiveBot`'s bot in when an edit is
//!   valid.
//! - [`server`]: the HTTP routes (axum): Meta's webhook, `/dev/message`, `/healthz`,
//!   `/readyz`, admin, metrics; handlers only translate HTTP. The accept loop with its
//!   timeouts and connection limit is `server::listen`.
//! - [`cli`]: one module per subcommand.
//!
//! Architecture Invariant: `delivery` and `reload` do not import each other; both
//! depend on `live`. `server` never touches a store for a webhook item: it hands items to
//! `delivery`.
//!
//! Architecture Invariant: data flows one way. `source` knows nothing of flows, `spec`
//! nothing of positions, `flow` nothing of files; only `compile` sees all three.

pub mod cli;
pub mod compile;
pub mod delivery;
pub mod diag;
pub mod engine;
pub mod flow;
pub mod live;
pub mod metrics;
pub mod reload;
pub mod render;
pub mod server;
pub mod source;
pub mod spec;
pub mod store;
pub mod testing;
pub mod whatsapp;
