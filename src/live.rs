//! The bot a folder serves right now: its folder, the compiled bot (swapped whole by
//! hot reload) and how the last load went. `reload` owns the swapping, `delivery` and
//! `server` only read; neither needs the other, which is why this value lives apart.
//!
//! Architecture Invariant: a turn takes the bot once (`LiveBot::bot`) and keeps it to
//! its end, so a reload never changes a bot in the middle of a turn.

use crate::diag::Diagnostic;
use crate::flow::Bot;
use arc_swap::ArcSwap;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// The outcome of the last (re)load of a bot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadReport {
    /// Unix seconds.
    pub at: i64,
    /// The version of the bot serving after this load: 1 at startup, one more for
    /// every successful reload.
    pub version: u64,
    pub ok: bool,
    /// Every diagnostic of that load, as `validate` prints them.
    pub diagnostics: Vec<String>,
    /// The same diagnostics with their parts (file, line, code...), for the `/dev`
    /// page's banner; `/admin/status` keeps showing the text.
    #[serde(skip)]
    pub found: Vec<Diagnostic>,
}

/// One bot folder and the bot compiled from it that serves now.
pub struct LiveBot {
    /// The bot folder, as given on the command line.
    pub dir: PathBuf,
    bot: ArcSwap<Bot>,
    /// The last report; its receivers (the `/dev` page's reload notices) hear of each new one.
    last_reload: watch::Sender<ReloadReport>,
}

impl LiveBot {
    /// A bot just loaded at startup: version 1.
    pub fn new(dir: PathBuf, bot: Bot) -> Self {
        LiveBot {
            dir,
            bot: ArcSwap::from_pointee(bot),
            last_reload: watch::Sender::new(ReloadReport {
                at: chrono::Utc::now().timestamp(),
                version: 1,
                ok: true,
                diagnostics: Vec::new(),
                found: Vec::new(),
            }),
        }
    }

    /// The bot serving now; hold it for a whole turn.
    pub fn bot(&self) -> Arc<Bot> {
        self.bot.load_full()
    }

    /// Serves `bot` from now on (turns under way finish with the one they took).
    pub fn swap(&self, bot: Bot) {
        self.bot.store(Arc::new(bot));
    }

    /// How the last (re)load went.
    pub fn report(&self) -> ReloadReport {
        self.last_reload.borrow().clone()
    }

    pub fn set_report(&self, report: ReloadReport) {
        self.last_reload.send_replace(report);
    }

    /// Every report from now on (the current one counts as seen).
    pub fn reports(&self) -> watch::Receiver<ReloadReport> {
        self.last_reload.subscribe()
    }
}
