//! The command line: one module per subcommand. `main.rs` only maps the result to an
//! exit code.

mod chat;
mod chat_http;
pub mod graph;
pub mod schema;
pub mod serve;
mod start_pages;
mod test;
mod validate;

use crate::delivery::runtime::LoopSettings;
use crate::server::listen;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

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
    /// Serve the WhatsApp webhook. Each bot folder answers its phone_number_id; a bot
    /// without WhatsApp credentials runs locally: nothing goes to Meta, and
    /// POST /dev/message {"from": "...", "text": "..."} answers what it would send.
    Serve {
        /// The bot folders (default: the current one).
        #[arg(default_value = ".")]
        dirs: Vec<PathBuf>,
        /// The port to listen on.
        #[arg(long, default_value_t = 8080, env = "PARLANCE_PORT")]
        port: u16,
        /// The address to listen on (0.0.0.0 for every interface).
        #[arg(long, default_value = "127.0.0.1", env = "PARLANCE_BIND")]
        bind: String,
        /// Largest webhook body accepted (Meta sends up to 3 MB); larger gets 413.
        #[arg(long, default_value_t = crate::server::DEFAULT_MAX_BODY_BYTES, env = "PARLANCE_MAX_BODY_BYTES")]
        max_body_bytes: usize,
        /// Seconds a client has to send a request's headers, from their first byte.
        #[arg(long, value_name = "SECS", default_value_t = listen::DEFAULT_HEADER_TIMEOUT_SECS, env = "PARLANCE_HEADER_TIMEOUT", value_parser = clap::value_parser!(u64).range(1..))]
        header_timeout: u64,
        /// Seconds a client has to send a request's body.
        #[arg(long, value_name = "SECS", default_value_t = listen::DEFAULT_BODY_TIMEOUT_SECS, env = "PARLANCE_BODY_TIMEOUT", value_parser = clap::value_parser!(u64).range(1..))]
        body_timeout: u64,
        /// Seconds a connection may stay open with no request under way (keep-alive).
        #[arg(long, value_name = "SECS", default_value_t = listen::DEFAULT_IDLE_TIMEOUT_SECS, env = "PARLANCE_IDLE_TIMEOUT", value_parser = clap::value_parser!(u64).range(1..))]
        idle_timeout: u64,
        /// Most open connections; beyond, new ones are answered 503 at once.
        #[arg(long, value_name = "N", default_value_t = listen::DEFAULT_MAX_CONNECTIONS, env = "PARLANCE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
        max_connections: u32,
        /// Log lines as readable text (coloured on a terminal) or as JSON, one object a line.
        #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "PARLANCE_LOG_FORMAT")]
        log_format: LogFormat,
        /// Seconds SIGTERM or Ctrl-C waits for the turns and sends under way (new
        /// webhooks get 503 meanwhile) before the server exits.
        #[arg(long, value_name = "SECS", default_value_t = serve::DEFAULT_SHUTDOWN_TIMEOUT_SECS, env = "PARLANCE_SHUTDOWN_TIMEOUT")]
        shutdown_timeout: u64,
        /// How long a failed send is retried (with backoff) before it becomes a dead
        /// letter, e.g. `6h`, `30m`.
        #[arg(long, value_name = "DURATION", default_value = "6h", env = "PARLANCE_RETRY_DEADLINE", value_parser = humantime::parse_duration)]
        retry_deadline: Duration,
        /// How long a user's lease lasts without renewal: how soon another instance
        /// takes over the users of one that died, e.g. `20s` (longer than
        /// --graph-timeout plus 5s: a lease must outlast one Graph API request).
        #[arg(long, value_name = "DURATION", default_value = "20s", env = "PARLANCE_LEASE_TTL", value_parser = humantime::parse_duration)]
        lease_ttl: Duration,
        /// How long one Graph API request may take before it counts as failed; a
        /// request that timed out may have been accepted, so its message is retried at
        /// most once.
        #[arg(long, value_name = "DURATION", default_value = "10s", env = "PARLANCE_GRAPH_TIMEOUT", value_parser = humantime::parse_duration)]
        graph_timeout: Duration,
        /// MiB of memory the session trace (`GET /api/v1/users/{user}/trace`) may take
        /// at most; the least recently active users' traces go first. 0 keeps none.
        #[arg(long, value_name = "MIB", default_value_t = crate::delivery::trace::DEFAULT_MIB as u64, env = "PARLANCE_TRACE_MEMORY", value_parser = clap::value_parser!(u64).range(0..=65_536))]
        trace_memory: u64,
    },
    /// Talk to the bot in the terminal: type a message, a number to tap a button or
    /// row, or /help. Reads piped input one message per line, so it can be scripted.
    Chat {
        /// The bot folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Print the exact Cloud API payloads instead of the readable conversation.
        #[arg(long)]
        json: bool,
        /// The simulated user's WhatsApp id.
        #[arg(long, default_value = "15550001111")]
        user: String,
        /// The simulated user's WhatsApp profile name.
        #[arg(long)]
        name: Option<String>,
        /// Make no HTTP calls: every `http` node fails with the kind `not_called` (its
        /// `on_error` runs), so a flow can be walked without reaching its backends.
        #[arg(long)]
        no_http: bool,
    },
    /// Run the bot's conversation tests (tests/**/*.yaml) against the engine, offline.
    /// Exits 0 when all pass, 1 when one fails or the bot has errors.
    Test {
        /// The bot folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Print the bot's flows as a Mermaid flowchart, for a README, a pull request or
    /// mermaid.live. Exits 0 with the chart on stdout; 1 when the bot has errors (shown
    /// on stderr) or --flow names no flow.
    Graph {
        /// The bot folder (the one holding parlance.yaml and flows/).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Draw only this flow; its edges to other flows end in small boxes naming them.
        #[arg(long, value_name = "ID")]
        flow: Option<String>,
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
    /// Print the OpenAPI 3.1 document of the HTTP API (/api/v1), as
    /// GET /api/openapi.json serves it: `parlance openapi > docs/openapi.json`.
    Openapi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// How `serve` writes its log lines to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
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
        Command::Serve {
            dirs,
            port,
            bind,
            max_body_bytes,
            header_timeout,
            body_timeout,
            idle_timeout,
            max_connections,
            log_format,
            shutdown_timeout,
            retry_deadline,
            lease_ttl,
            graph_timeout,
            trace_memory,
        } => serve::run(
            serve::Options {
                dirs,
                bind,
                port,
                max_body_bytes,
                limits: listen::Limits {
                    header_timeout: Duration::from_secs(header_timeout),
                    body_timeout: Duration::from_secs(body_timeout),
                    idle_timeout: Duration::from_secs(idle_timeout),
                    max_connections: max_connections as usize,
                },
                log_format,
                delivery: LoopSettings {
                    retry_deadline,
                    lease_ttl,
                    graph_timeout,
                    trace: crate::delivery::trace::TraceLimits {
                        bytes: usize::try_from(trace_memory << 20).unwrap_or(usize::MAX),
                        ..Default::default()
                    },
                    ..LoopSettings::default()
                },
            },
            Duration::from_secs(shutdown_timeout),
        ),
        Command::Chat {
            dir,
            json,
            user,
            name,
            no_http,
        } => chat::run(&dir, json, &user, name.as_deref(), !no_http),
        Command::Test { dir } => test::run(&dir),
        Command::Graph { dir, flow } => graph::run(&dir, flow.as_deref()),
        Command::Schema { out, check } => schema::run(&out, check),
        Command::Openapi => {
            print!("{}", crate::api::openapi_json());
            0
        }
    }
}

/// Loads the bot in `dir` for a command that runs it: its diagnostics go to stderr,
/// and a bot with errors is the exit code.
pub(crate) fn load_runnable(dir: &std::path::Path) -> Result<crate::flow::Bot, u8> {
    let loaded = crate::compile::load_bot(dir);
    for d in &loaded.diagnostics {
        eprintln!("{d}");
    }
    match loaded.bot {
        Some(bot) => Ok(bot),
        None => {
            eprintln!(
                "{}: {}",
                dir.display(),
                crate::diag::summary(&loaded.diagnostics)
            );
            Err(EXIT_ERRORS)
        }
    }
}
