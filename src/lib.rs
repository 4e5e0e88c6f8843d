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
//!   a node that waits on the outside world (http, handover) ends the turn with an
//!   `Action::Effect` whose outcome comes back as an `EventKind::EffectResult`
//!   (`engine::run` loops that for a `Perform`). `script` nodes run in place, through
//!   the bot's [`script::Sandbox`].
//! - [`script`]: the Rhai sandbox: one engine per bot with the `scripts:` limits, scripts
//!   compiled at load into the `Bot`, runs bounded in operations, depth, sizes and wall
//!   time; no I/O. Parlance's functions (`now`, dates, JSON, regex, `goto`) in
//!   `script::api`.
//! - [`http`]: the `http` node's performer (`http::Caller`): real calls with the host
//!   policy (`http.allow_hosts`, no link-local or cloud-metadata addresses unless
//!   listed, checked again on the resolved addresses), size limit, redirects and retries.
//! - [`transform`]: the endpoint transformers around a turn (`transform::run`, the one
//!   turn function of `serve`, `chat` and `test`).
//! - [`render`]: typed messages → the exact Cloud API JSON (checked against
//!   `schemas/whatsapp/`), and → text for the terminal.
//! - [`testing`]: the conversation test runner behind `parlance test`.
//! - [`store`]: the `session.store` URL and `store::durable`, the store the per-user
//!   event loop stands on (inbox with dedupe, per-user leases with fencing, atomic turn
//!   commits with the outbox, dead letters, timers, statuses) with one conformance suite
//!   and three implementations: SQLite (one writer, group commit; one process per file),
//!   Redis (one Lua script per atomic step, one cluster slot per user; several
//!   instances) and memory.
//! - [`whatsapp`]: WhatsApp's inbound webhook JSON and its signature; the only place that
//!   knows them.
//! - [`live`]: `LiveBot`, the bot a folder serves now (folder, swappable compiled bot,
//!   last reload report): what `reload` swaps and `delivery` and `server` read.
//! - [`delivery`]: the per-user event loop behind the server: webhook items into the
//!   durable inbox before the ack (`delivery::inbox`), one leased worker per user
//!   (`runtime`) running turns (`turn`) and draining the outbox exactly once, in order
//!   (`sender`: pacing, shared by instances through `pace`, message delay, retries
//!   until a deadline, auth pause, dead letters) over a `delivery::transport` (the Graph API or the local sink); the
//!   scanner for work nobody does (`scan`), and the shutdown drain. The session trace
//!   (`trace`): each user's newest turns as this instance ran them, in memory.
//! - [`reload`]: watches bot folders and swaps a `LiveBot`'s bot in when an edit is
//!   valid.
//! - [`server`]: the HTTP routes (axum): Meta's webhook, `/dev/message`, `/healthz`,
//!   `/readyz`, admin, metrics, and the `/dev` simulator of local numbers (local
//!   bots, and the twins `cli::serve` builds beside real numbers for `dev.enabled`;
//!   `server::dev`, its page embedded in the binary); handlers only translate HTTP. The accept loop with its
//!   timeouts and connection limit is `server::listen`.
//! - [`cli`]: one module per subcommand; `start_pages` gives back the binary's code pages
//!   only the start used once `serve` is up.
//!
//! Architecture Invariant: `delivery` and `reload` do not import each other; both
//! depend on `live`. `server` never touches a store for a webhook item: it hands items to
//! `delivery`. Only the per-user loop runs turns and sends, and only under the user's
//! lease.
//!
//! Architecture Invariant: data flows one way. `source` knows nothing of flows, `spec`
//! nothing of positions, `flow` nothing of files; only `compile` sees all three.

pub mod api;
pub mod cli;
pub mod compile;
pub mod delivery;
pub mod diag;
pub mod engine;
pub mod flow;
pub mod http;
pub mod live;
pub mod metrics;
pub mod reload;
pub mod render;
pub mod script;
pub mod server;
pub mod source;
pub mod spec;
pub mod store;
pub mod testing;
pub mod transform;
pub mod whatsapp;
