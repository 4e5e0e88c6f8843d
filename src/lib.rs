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
//!   input (size, encoding, nesting, alias bombs); `${NAME}` interpolation.
//! - [`spec`]: the "as written" serde types; the JSON Schemas under `schemas/` are
//!   generated from them.
//! - [`compile`]: schema validation with designer-friendly messages, then meaning:
//!   targets, limits, templates, expressions, regexes, durations; builds the `Bot`.
//! - [`flow`]: the compiled, immutable bot. No serde, no I/O.
//! - [`cli`]: one module per subcommand.
//!
//! Architecture Invariant: data flows one way. `source` knows nothing of flows, `spec`
//! nothing of positions, `flow` nothing of files; only `compile` sees all three.

pub mod cli;
pub mod compile;
pub mod diag;
pub mod engine;
pub mod flow;
pub mod render;
pub mod source;
pub mod spec;
pub mod store;
pub mod testing;
