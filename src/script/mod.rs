//! The Rhai sandbox shared by `script` nodes and endpoint transformers (`crate::transform`).
//!
//! One [`Sandbox`] per bot: a Rhai engine configured with the bot's `scripts:` limits,
//! kept in the compiled `Bot` with every script compiled into a [`Program`] when the bot
//! loads (a syntax error is a load error). [`Sandbox::run`] runs a program over a copy
//! of the turn's values and hands back what the script changed.
//!
//! Architecture Invariant: scripts do no I/O. No modules or `import` (the crate is
//! built without them), no `eval`, `print` and `debug` go nowhere, no wall clock (the
//! crate is built without `timestamp()`; `now()` is the turn's time). Every run is
//! bounded by [`Limits`], and a runaway is an error, never a hang or a panic.

mod api;
pub mod limits;
mod run_state;
mod sandbox;
pub mod value;

pub use limits::Limits;
pub use sandbox::{Input, Outcome, Program, Sandbox, ScriptError};

/// The names a script sees, as written in scripts. `vars` and `profile` may be changed;
/// the others are constants.
pub const SCOPE_NAMES: &[&str] = &["vars", "profile", "message", "contact", "session", "env"];

#[cfg(test)]
mod tests;
