//! `parlance-load`: measures the whole path (signature check, parsing, dedupe, the
//! durable store, engine, rendering, sending) under load, on loopback only, and checks
//! that nothing is lost or reordered when servers are killed.
//!
//! Three modes:
//!
//! - **in process** (the default): the fake Graph API and a real server in this process;
//!   measures throughput and latency.
//! - **crash** (`--crash N [--signal kill|term]`): the real `parlance serve` binary as a
//!   child process on SQLite, killed N times mid-load and restarted on the same port.
//! - **several instances** (`--instances K`): K `parlance serve` processes sharing one
//!   Redis, webhooks spread over them; combinable with `--crash`.
//!
//! The last two count the replies lost, duplicated and out of order, and exit non-zero
//! when one is lost or out of order. Every mode is bounded: exactly
//! `--users × --messages` webhooks, and it gives up after `--timeout` seconds.
//!
//!     cargo run --release --bin parlance-load -- --users 200 --messages 10 --concurrency 32
//!     cargo build --release && target/release/parlance-load --crash 3 --users 50 --messages 5

mod child;
mod in_process;
mod processes;
mod tally;

use clap::{Parser, ValueEnum};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SECRET: &str = "load-test-secret";
const NUMBER: &str = "1001";

#[derive(Parser)]
#[command(
    about = "Load-test the WhatsApp endpoint end to end against a fake Graph API on loopback; \
             with --crash or --instances, run real `parlance serve` processes, kill them \
             mid-load and count lost, duplicated and out-of-order replies"
)]
struct Args {
    /// Simulated users.
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Messages per user (in process each is answered with one reply; with --crash or
    /// --instances with three).
    #[arg(long, default_value_t = 10)]
    messages: usize,
    /// Webhook POSTs in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Messages per second each server may send per number (Meta: 80 by default, up to 1000).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Kill a `parlance serve` child this many times, spread over the load, and restart
    /// it on the same port (one instance per kill, in turn, with --instances); 0 runs
    /// the child server without kills, as a baseline.
    #[arg(long, value_name = "N")]
    crash: Option<usize>,
    /// How --crash stops a server: `kill` (SIGKILL, no chance to finish anything) or
    /// `term` (SIGTERM: the server drains, then exits).
    #[arg(long, value_enum, default_value_t = Signal::Kill, requires = "crash")]
    signal: Signal,
    /// Run this many `parlance serve` processes sharing one Redis (at least 2), and
    /// spread the webhooks over them round robin.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(2..))]
    instances: Option<u64>,
    /// The Redis for --instances, without a query (each run keeps its keys under a
    /// fresh `load-<random>:` prefix and deletes them at the end).
    #[arg(
        long,
        value_name = "URL",
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis: String,
    /// The `parlance` binary to run (default: the one next to this program).
    #[arg(long, value_name = "PATH")]
    parlance: Option<PathBuf>,
    /// With --crash or --instances: `message_delay_ms` of the bot the child servers run
    /// (the pause between a turn's three replies).
    #[arg(long, value_name = "MS", default_value_t = 20)]
    delay_ms: u64,
    /// With --crash or --instances: each user's pause between their messages (as a
    /// person types), so webhooks keep arriving while replies go out and servers die.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pause_ms: u64,
}

/// How a server is stopped in crash mode.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Signal {
    Kill,
    Term,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Kill => "SIGKILL",
            Signal::Term => "SIGTERM",
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = if args.crash.is_some() || args.instances.is_some() {
        rt.block_on(processes::run(&args))
    } else {
        rt.block_on(in_process::run(&args))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The text of a user's message `round`.
fn message_text(round: usize) -> String {
    format!("message {round}")
}

/// The phone number of user `user`.
fn user_number(user: usize) -> String {
    format!("49170{user:08}")
}

/// A webhook body with one text message of `user`, as Meta sends it.
fn webhook(user: usize, round: usize) -> Vec<u8> {
    let from = user_number(user);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "WABA", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550000000", "phone_number_id": NUMBER },
            "contacts": [{ "profile": { "name": format!("User {user}") }, "wa_id": from }],
            "messages": [{ "from": from, "id": format!("wamid.load.{user}.{round}"), "timestamp": now.to_string(), "type": "text", "text": { "body": message_text(round) } }]
        }}]}]
    });
    serde_json::to_vec(&body).unwrap_or_default()
}
