//! Endpoint transformers (`transformers: { input, output, finished }` in parlance.yaml):
//! Rhai functions around every turn, run by the bot's sandbox.
//!
//! - `fn input(message)` sees the user's message as templates see it and returns it
//!   (changed or not) or `()` to drop it;
//! - `fn output(payload)` sees each Cloud API payload the turn sends and returns it or
//!   `()` to drop that message; a changed payload is checked against WhatsApp's schema;
//! - `fn finished(turn)` runs after the turn with `turn.message` and `turn.sent`.
//!
//! Each may assign into `vars` and `profile`. An error in one (run time, a limit, a bad
//! return value) is a warning of the turn, and the turn goes on as if that transformer
//! were not configured. [`run`] is the one place a turn meets them: `serve`, `chat` and
//! `test` all call it.

mod message;
mod payload;
mod turn;

pub use payload::{payload_lines, payload_text};
pub use turn::{Sent, Step, Turn, run};

use crate::script::Program;
use std::path::PathBuf;

/// Which transformer, with the function its file must define.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Input,
    Output,
    Finished,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Input, Kind::Output, Kind::Finished];

    /// The `transformers:` key, which is also the function's name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Input => "input",
            Kind::Output => "output",
            Kind::Finished => "finished",
        }
    }

    /// The function as the designer writes it.
    pub fn signature(self) -> &'static str {
        match self {
            Kind::Input => "fn input(message)",
            Kind::Output => "fn output(payload)",
            Kind::Finished => "fn finished(turn)",
        }
    }
}

/// One compiled transformer.
#[derive(Debug, Clone)]
pub struct Transformer {
    /// The `.rhai` file, relative to the bot folder, as `parlance.yaml` names it.
    pub file: PathBuf,
    pub program: Program,
}

/// The bot's transformers, compiled when it loads.
#[derive(Debug, Clone, Default)]
pub struct Transformers {
    pub input: Option<Transformer>,
    pub output: Option<Transformer>,
    pub finished: Option<Transformer>,
}

impl Transformers {
    pub fn get(&self, kind: Kind) -> Option<&Transformer> {
        match kind {
            Kind::Input => self.input.as_ref(),
            Kind::Output => self.output.as_ref(),
            Kind::Finished => self.finished.as_ref(),
        }
    }

    pub fn set(&mut self, kind: Kind, t: Transformer) {
        match kind {
            Kind::Input => self.input = Some(t),
            Kind::Output => self.output = Some(t),
            Kind::Finished => self.finished = Some(t),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.input.is_none() && self.output.is_none() && self.finished.is_none()
    }
}

#[cfg(test)]
mod tests;
