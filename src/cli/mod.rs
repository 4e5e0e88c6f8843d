//! The command line: one module per subcommand. `main.rs` only maps the result to an
//! exit code.

pub mod schema;
mod validate;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Exit code: everything fine.
pub const EXIT_OK: u8 = 0;
/// Exit code: the bot (or a check) has errors.
pub const EXIT_ERRORS: u8 = 1;
/// Exit code: the command line was wrong (clap uses 2 as well).
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "parlance",
    version,
    about = "A declarative conversation-flow runtime for WhatsApp bots"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a bot folder: YAML, schemas, targets, templates, WhatsApp limits.
    /// Exits 0 when valid, 1 on errors, 2 on a wrong command line.
    Validate {
        /// The bot folder (the one holding parlance.yaml and flows/).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Output format: `text` (one line per problem) or `json` (an array).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Exit 1 on warnings too.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Write the JSON Schemas of parlance.yaml, flow files and test files.
    Schema {
        /// Where to write them.
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
        /// Write nothing; exit 1 if the files in --out differ from what would be written.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Validate {
            dir,
            format,
            deny_warnings,
        } => validate::run(&dir, format, deny_warnings),
        Command::Schema { out, check } => schema::run(&out, check),
    }
}
