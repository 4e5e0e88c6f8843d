//! `parlance serve [DIR]...`: the WhatsApp endpoint. Each bot folder answers its
//! `phone_number_id`; a bot without credentials runs locally (nothing is sent to Meta,
//! `POST /dev/message` drives it).

use super::{EXIT_ERRORS, EXIT_OK, LogFormat};
use crate::delivery::dev_hub::DevHub;
use crate::delivery::runtime::{LoopSettings, Number, Runtime};
use crate::delivery::transport::{GraphClient, LocalSink, Transport};
use crate::diag::Severity;
use crate::flow::settings::Simulated;
use crate::live::LiveBot;
use crate::server::listen::{self, Limits};
use crate::server::{self, AdminKey, Shared, WebhookAuth};
use crate::store::StoreUrl;
use crate::store::durable::Durable;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The phone number id a bot without credentials answers as.
pub const LOCAL_NUMBER: &str = "local";

/// The phone number id of a bot's simulator twin (`dev.enabled` beside credentials)
/// is this prefix and the real number's id.
pub const DEV_TWIN_PREFIX: &str = "dev-";

pub struct Options {
    pub dirs: Vec<PathBuf>,
    pub bind: String,
    pub port: u16,
    pub max_body_bytes: usize,
    /// Timeouts and the connection limit of the HTTP server.
    pub limits: Limits,
    pub log_format: LogFormat,
    /// Leases, retry deadline and scan interval of the per-user loop.
    pub delivery: LoopSettings,
}

/// How long a shutdown waits for turns and sends under way (`--shutdown-timeout`).
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 10;

/// How long open HTTP requests may take once the drain is over: what is left then are
/// 503 answers and probes.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves until SIGTERM or Ctrl-C, then drains (see [`shut_down`]) for at most
/// `shutdown_timeout`. The timeout is an argument of its own, not an `Options` field,
/// because `Options` also builds the in-process servers of tests, which never shut down.
pub fn run(options: Options, shutdown_timeout: Duration) -> u8 {
    init_logging(options.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return EXIT_ERRORS;
        }
    };
    let code = runtime.block_on(async move {
        // Before anything else: a signal that arrives while the bots load is not lost.
        let signals = match Signals::listen() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM and Ctrl-C: {e}");
                return EXIT_ERRORS;
            }
        };
        let (state, locals) = match build(&options).await {
            Ok(s) => s,
            Err(code) => return code,
        };
        let addr = format!("{}:{}", options.bind, options.port);
        let listener = match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot listen on {addr}: {e}");
                return EXIT_ERRORS;
            }
        };
        let local: SocketAddr = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], options.port)));
        tracing::info!("listening on http://{local}");
        for dir in &locals {
            tracing::info!(
                bot = %dir.display(),
                "local mode: no WhatsApp credentials, nothing is sent to Meta; try: curl -s http://{local}/dev/message -d '{{\"from\":\"15550001111\",\"text\":\"hi\"}}'"
            );
        }
        // Edits are picked up while serving; SIGHUP reloads too.
        let _watching = match crate::reload::watch(live_bots(&state.runtime)) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("hot reload is off: {e}");
                None
            }
        };
        spawn_sighup_reload(Arc::clone(&state.runtime));
        // The HTTP server keeps answering while the runtime drains, so `/readyz` says
        // why it is not ready and new webhooks get 503; it stops once the drain is over.
        let (drained, drain_over) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(shut_down(
            signals,
            Arc::clone(&state.runtime),
            shutdown_timeout,
            drained,
        ));
        let stop_http = async {
            let _ = drain_over.await;
        };
        let app = server::app(state);
        // Everything the start runs has run (the routes and their OpenAPI document
        // just now): its code pages go back (see `start_pages`).
        let freed = super::start_pages::give_back();
        tracing::debug!(bytes = freed, "code pages only the start used were given back");
        match listen::serve_with_grace(
            listener,
            app,
            options.limits,
            stop_http,
            CLOSE_GRACE,
        )
        .await
        {
            Ok(()) => EXIT_OK,
            Err(e) => {
                tracing::error!("the server stopped: {e}");
                EXIT_ERRORS
            }
        }
    });
    // Blocking store calls of turns cut off by the deadline must not hold the exit.
    runtime.shutdown_timeout(CLOSE_GRACE);
    code
}

/// On the first SIGTERM or Ctrl-C: take no new work, wait for the turns and sends under
/// way (up to `within`, or until a second signal: someone who presses Ctrl-C twice
/// means now), log what was left, then tell the HTTP server to stop.
async fn shut_down(
    mut signals: Signals,
    runtime: Arc<Runtime>,
    within: Duration,
    drained: tokio::sync::oneshot::Sender<()>,
) {
    let signal = signals.next().await;
    runtime.stop_accepting(&format!("shutting down ({signal})"));
    tracing::info!(
        signal,
        timeout_secs = within.as_secs_f64(),
        "shutting down: new webhooks get 503; finishing the turns and sends under way (a second signal stops at once)"
    );
    let (left, why) = tokio::select! {
        left = runtime.drain(within) => (left, "the shutdown timeout passed"),
        _ = signals.next() => (runtime.pending(), "a second signal came"),
    };
    if left.is_some() {
        // Workers give their users' leases up (another instance takes over at once).
        runtime.hurry(CLOSE_GRACE).await;
    }
    match left {
        None => tracing::info!("every turn and send finished; stopping"),
        Some(left) => tracing::warn!(
            users = left.users,
            webhooks = left.webhooks,
            "{why} with work still under way; stopping (what is left is in the store: the next start goes on with it)"
        ),
    }
    let _ = drained.send(());
}

/// SIGTERM (docker stop, systemd, rollouts) and SIGINT (Ctrl-C), listened for from the
/// start.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn listen() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    #[cfg(not(unix))]
    fn listen() -> std::io::Result<Self> {
        Ok(Signals {})
    }

    /// The name of the next signal received.
    #[cfg(unix)]
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "Ctrl-C",
        }
    }

    #[cfg(not(unix))]
    async fn next(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// Loads every bot and opens its store: the server's state, and the local bots. Starts
/// the per-user loop's scanner, which at once goes on with any work a previous run left
/// in the stores.
pub async fn build(options: &Options) -> Result<(Arc<Shared>, Vec<PathBuf>), u8> {
    if let Err(e) = options.delivery.check() {
        tracing::error!("{e}");
        return Err(EXIT_ERRORS);
    }
    // The Graph API never redirects; a redirect is not followed with the bearer token.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| {
            tracing::error!("cannot create the HTTP client: {e}");
            EXIT_ERRORS
        })?;
    let mut numbers = Vec::new();
    let mut locals = Vec::new();
    let mut verify_tokens = Vec::new();
    let mut webhook_auth = HashMap::new();
    let mut admin_keys = Vec::new();
    // Bots naming the same store share one connection (and, for SQLite, one lock).
    let mut stores: Vec<(String, Arc<dyn Durable>)> = Vec::new();
    let dev = Arc::new(DevHub::default());
    for dir in &options.dirs {
        let bot = load_logged(dir)?;
        let wa = bot.settings.whatsapp.clone();
        let store = open_store(&bot.settings.store, dir, &mut stores).await?;
        let (id, transport) = if wa.is_local() {
            locals.push(dir.clone());
            (
                LOCAL_NUMBER.to_string(),
                Transport::Local(LocalSink::new(LOCAL_NUMBER, Arc::clone(&dev))),
            )
        } else {
            (
                wa.phone_number_id.clone().unwrap_or_default(),
                Transport::Graph(GraphClient::new(
                    http.clone(),
                    &wa,
                    options.delivery.graph_timeout,
                )),
            )
        };
        if numbers
            .iter()
            .any(|n: &Arc<Number>| n.phone_number_id == id)
        {
            tracing::error!(
                bot = %dir.display(),
                "phone number id \"{id}\" is served by another bot folder already"
            );
            return Err(EXIT_ERRORS);
        }
        verify_tokens.extend(wa.verify_token.clone());
        if !wa.is_local() {
            let auth = match (wa.app_secret.clone(), wa.allow_unsigned) {
                (Some(secret), _) => WebhookAuth::Secret(secret),
                (None, true) => {
                    tracing::warn!(
                        bot = %dir.display(),
                        number = %id,
                        "whatsapp.allow_unsigned is on: unsigned webhooks are accepted and anyone who reaches this server can make the bot send messages; for test setups only"
                    );
                    WebhookAuth::Unsigned
                }
                // The loader refuses this already; never serve a sending number open.
                (None, false) => {
                    tracing::error!(bot = %dir.display(), "whatsapp.app_secret is required with access_token");
                    return Err(EXIT_ERRORS);
                }
            };
            webhook_auth.insert(id.clone(), auth);
        }
        if let Some(key) = &bot.settings.api_key {
            admin_keys.push(AdminKey::new(&id, key));
        }
        let twin = bot.settings.simulated() == Simulated::Twin;
        let key = bot.settings.api_key.clone();
        let live = Arc::new(LiveBot::new(dir.clone(), bot));
        numbers.push(Arc::new(Number::new(
            &id,
            Arc::clone(&live),
            store,
            transport,
        )));
        if twin {
            // `dev.enabled` beside credentials: simulated users talk to a local twin of
            // the same live bot (reloads reach both), with sessions in a memory store of
            // its own, so nothing they do reaches Meta or the real users' store. Its
            // routes open with the bot's key only (the loader requires one).
            let twin_id = format!("{DEV_TWIN_PREFIX}{id}");
            let memory = crate::store::open(&StoreUrl::Memory, dir)
                .await
                .map_err(|e| {
                    tracing::error!(bot = %dir.display(), "the simulator's store: {e}");
                    EXIT_ERRORS
                })?;
            if let Some(key) = &key {
                admin_keys.push(AdminKey::new(&twin_id, key));
            }
            tracing::info!(
                bot = %dir.display(),
                number = %twin_id,
                "dev.enabled: the /dev simulator is served beside this number, behind api.key; its users talk to a local twin (sessions in memory, nothing sent to Meta)"
            );
            let sink = LocalSink::new(&twin_id, Arc::clone(&dev));
            numbers.push(Arc::new(Number::new(
                &twin_id,
                live,
                memory,
                Transport::Local(sink),
            )));
        }
    }
    // Every turn's payloads are checked against WhatsApp's schema: compiled before the
    // first webhook, not during it.
    crate::render::warm();
    let runtime = Runtime::new(numbers, options.delivery, dev);
    runtime.spawn_scanner();
    // The `/dev` simulator's phone (statuses) and reload notices, for local numbers.
    server::dev::spawn(&runtime);
    let state = Arc::new(Shared {
        runtime,
        verify_tokens,
        webhook_auth,
        admin_keys,
        max_body_bytes: options.max_body_bytes,
        stream_keep_alive: server::dev::events::keep_alive(options.limits.idle_timeout),
        sessions_counted_at: tokio::sync::Mutex::new(None),
    });
    Ok((state, locals))
}

/// The store `url` names for the bot in `dir`: one already opened for another bot, or
/// a new one. Errors are logged with the bot folder.
async fn open_store(
    url: &str,
    dir: &std::path::Path,
    opened: &mut Vec<(String, Arc<dyn Durable>)>,
) -> Result<Arc<dyn Durable>, u8> {
    let fail = |e: String| {
        tracing::error!(bot = %dir.display(), "session.store: {e}");
        EXIT_ERRORS
    };
    let parsed = crate::store::parse_url(url)
        .map_err(|e| fail(format!("{}; hint: {}", e.message, e.hint)))?;
    let identity = match &parsed {
        StoreUrl::Sqlite(path) if path.is_absolute() => format!("sqlite:{}", path.display()),
        StoreUrl::Sqlite(path) => {
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            format!("sqlite:{}", dir.join(path).display())
        }
        StoreUrl::Redis { url, prefix } => format!("redis:{url}#{prefix}"),
        StoreUrl::Memory => "memory".to_string(),
    };
    if let Some((_, store)) = opened.iter().find(|(id, _)| *id == identity) {
        return Ok(Arc::clone(store));
    }
    let store = crate::store::open(&parsed, dir)
        .await
        .map_err(|e| fail(e.to_string()))?;
    opened.push((identity, Arc::clone(&store)));
    Ok(store)
}

/// Every bot the runtime serves, for the reloader (which knows bots, not numbers).
fn live_bots(runtime: &Runtime) -> Vec<Arc<LiveBot>> {
    let mut bots: Vec<Arc<LiveBot>> = Vec::new();
    // A simulator twin shares its bot's live value: watched once.
    for number in runtime.numbers() {
        if !bots.iter().any(|b| Arc::ptr_eq(b, &number.live)) {
            bots.push(Arc::clone(&number.live));
        }
    }
    bots
}

/// Loads one bot folder; its diagnostics are log lines (JSON ones with
/// `--log-format json`), and a bot with errors stops the start.
fn load_logged(dir: &std::path::Path) -> Result<crate::flow::Bot, u8> {
    let loaded = crate::compile::load_bot(dir);
    for d in &loaded.diagnostics {
        match d.severity {
            Severity::Error => tracing::error!(bot = %dir.display(), "{d}"),
            Severity::Warning => tracing::warn!(bot = %dir.display(), "{d}"),
        }
    }
    loaded.bot.ok_or_else(|| {
        tracing::error!(
            bot = %dir.display(),
            "{}",
            crate::diag::summary(&loaded.diagnostics)
        );
        EXIT_ERRORS
    })
}

#[cfg(unix)]
fn spawn_sighup_reload(runtime: Arc<Runtime>) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hangups) => {
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading every bot");
                    let bots = live_bots(&runtime);
                    let _ =
                        tokio::task::spawn_blocking(move || crate::reload::reload_all(&bots)).await;
                }
            });
        }
        Err(e) => tracing::warn!("SIGHUP reload is off: {e}"),
    }
}

#[cfg(not(unix))]
fn spawn_sighup_reload(_runtime: Arc<Runtime>) {}

/// Structured logs to stderr, as text (coloured only on a terminal) or JSON lines;
/// `RUST_LOG` chooses the level (default `info`).
fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}
