//! Hot reload: watch each bot folder, rerun exactly the loader that startup runs, and
//! swap the new bot in atomically. A broken edit never takes a bot down: the last good
//! version keeps serving and every diagnostic is logged (and shown by `/admin/status`).
//! Running conversations continue: sessions name nodes by id, and one whose node is
//! gone restarts its flow (see `engine`).

use crate::compile::load_bot;
use crate::live::LiveBot;
pub use crate::live::ReloadReport;
use notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Editors save in bursts (write, rename, chmod): wait this long for the burst to end.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Keeps the file watcher alive; dropping it stops watching.
pub struct Watching {
    _debouncer: Debouncer<notify::RecommendedWatcher>,
}

/// Reloads `live`'s bot from its folder now. Returns whether the new bot is serving.
pub fn reload(live: &LiveBot) -> bool {
    let loaded = load_bot(&live.dir);
    let diagnostics: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    let ok = loaded.bot.is_some();
    match loaded.bot {
        Some(bot) => {
            let old = live.bot();
            // The server's signature checks, routing and admin keys are built at
            // start; the access token is read at every send, so a new one (after an
            // expired token paused sending) takes effect at once.
            let (was, is) = (&old.settings.whatsapp, &bot.settings.whatsapp);
            if was.phone_number_id != is.phone_number_id
                || was.app_secret != is.app_secret
                || was.allow_unsigned != is.allow_unsigned
                || was.verify_token != is.verify_token
                || old.settings.api_key != bot.settings.api_key
            {
                tracing::warn!(bot = %live.dir.display(), "the phone number id, app secret, verify token or API key changed; they take effect after a restart");
            }
            if was.access_token != is.access_token {
                tracing::info!(bot = %live.dir.display(), "the access token changed; the next send uses it");
            }
            live.swap(bot);
            tracing::info!(bot = %live.dir.display(), warnings = diagnostics.len(), "bot reloaded");
        }
        None => {
            for d in &diagnostics {
                tracing::warn!(bot = %live.dir.display(), "{d}");
            }
            tracing::error!(bot = %live.dir.display(), "the edit has errors; the previous version keeps serving");
        }
    }
    let version = live.report().version + u64::from(ok);
    live.set_report(ReloadReport {
        at: chrono::Utc::now().timestamp(),
        version,
        ok,
        diagnostics,
        found: loaded.diagnostics,
    });
    ok
}

/// Reloads every bot (SIGHUP).
pub fn reload_all(bots: &[Arc<LiveBot>]) {
    for live in bots {
        reload(live);
    }
}

/// Starts watching every bot folder in `bots`.
pub fn watch(bots: Vec<Arc<LiveBot>>) -> Result<Watching, String> {
    let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
    let mut debouncer = new_debouncer(DEBOUNCE, move |result: DebounceEventResult| {
        if let Ok(events) = result {
            for event in events {
                let _ = tx.send(event.path);
            }
        }
    })
    .map_err(|e| format!("cannot watch files: {e}"))?;
    let mut folders = Vec::new();
    for live in bots {
        let dir = std::fs::canonicalize(&live.dir).unwrap_or_else(|_| live.dir.clone());
        debouncer
            .watcher()
            .watch(&dir, RecursiveMode::Recursive)
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
        let seen = fingerprint(&dir);
        folders.push((dir, live, seen));
    }
    std::thread::Builder::new()
        .name("parlance-reload".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut changed = vec![first];
                changed.extend(rx.try_iter());
                for (dir, live, seen) in &mut folders {
                    if !changed.iter().any(|p| is_bot_file(dir, p)) {
                        continue;
                    }
                    // Reading the files to reload them raises events too (inotify
                    // reports opens): reload only when a file really changed.
                    let now = fingerprint(dir);
                    if now != *seen {
                        *seen = now;
                        reload(live);
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the reload thread: {e}"))?;
    Ok(Watching {
        _debouncer: debouncer,
    })
}

/// Size and modification time of every bot file below `dir`, sorted: a change to any
/// file changes it. Built from metadata only, which raises no file events.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut files: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && is_bot_file(dir, e.path()))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.path().to_path_buf(), meta.len(), meta.modified().ok()))
        })
        .collect();
    files.sort();
    files
}

/// Whether a changed path is part of the bot in `dir`: its YAML files and scripts, not
/// its database, editor swap files or conversation tests (`tests/`: not part of the
/// bot that serves; the `/dev` simulator writes recorded tests there).
fn is_bot_file(dir: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(dir) else {
        return false;
    };
    if rel.starts_with("tests") {
        return false;
    }
    let hidden = rel
        .components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    !hidden && matches!(ext, "yaml" | "yml" | "rhai")
}

#[cfg(test)]
mod tests {
    use super::is_bot_file;
    use std::path::Path;

    #[test]
    fn only_bot_files_trigger_a_reload() {
        let dir = Path::new("/bots/acme");
        assert!(is_bot_file(dir, Path::new("/bots/acme/flows/main.yaml")));
        assert!(is_bot_file(dir, Path::new("/bots/acme/parlance.yaml")));
        assert!(is_bot_file(dir, Path::new("/bots/acme/scripts/price.rhai")));
        assert!(!is_bot_file(
            dir,
            Path::new("/bots/acme/data/parlance.db-wal")
        ));
        assert!(!is_bot_file(
            dir,
            Path::new("/bots/acme/flows/.main.yaml.swp")
        ));
        assert!(!is_bot_file(dir, Path::new("/bots/other/flows/main.yaml")));
        assert!(!is_bot_file(dir, Path::new("/bots/acme/tests/happy.yaml")));
    }
}
