//! Hot reload: watch each bot folder, rerun exactly the loader that startup runs, and
//! swap the new bot in atomically. A broken edit never takes a bot down: the last good
//! version keeps serving and every diagnostic is logged (and shown by `/admin/status`).
//! Running conversations continue: sessions name nodes by id, and one whose node is
//! gone restarts its flow (see `engine`).

use crate::compile::load_bot;
use crate::live::LiveBot;
pub use crate::live::ReloadReport;
use crate::store::StoreUrl;
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
        // Every commit writes the SQLite files, and each write would wake the watcher
        // (on Linux, an inotify event per write, which the watcher thread reads and
        // the debouncer sorts): their folder is left out.
        match store_folder(&live.bot().settings.store, &dir) {
            StoreFolder::Apart(data) => match debouncer.watcher().unwatch(&data) {
                Ok(()) => {
                    tracing::debug!(folder = %data.display(), "the store's folder is not watched")
                }
                Err(e) => {
                    tracing::debug!(folder = %data.display(), "the store's folder stays watched: {e}")
                }
            },
            StoreFolder::Root => tracing::warn!(
                bot = %dir.display(),
                "the SQLite store is in the bot folder itself, so every commit wakes the file watcher; hint: keep it in a subfolder, e.g. sqlite://data/parlance.db"
            ),
            StoreFolder::Elsewhere => {}
        }
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

/// Where a bot's SQLite store lies against its (canonical) folder `dir`.
#[derive(Debug, PartialEq)]
enum StoreFolder {
    /// In a subfolder that holds no bot file: left out of the watch.
    Apart(PathBuf),
    /// In the bot folder itself, which must stay watched.
    Root,
    /// Outside the folder, in a subfolder with bot files, or not SQLite: nothing to do.
    Elsewhere,
}

fn store_folder(url: &str, dir: &Path) -> StoreFolder {
    let Ok(StoreUrl::Sqlite(file)) = crate::store::parse_url(url) else {
        return StoreFolder::Elsewhere;
    };
    let file = if file.is_absolute() {
        file
    } else {
        dir.join(file)
    };
    let Some(folder) = file.parent() else {
        return StoreFolder::Elsewhere;
    };
    // The store is open (it was opened before the watch starts), so its folder exists.
    let Ok(folder) = std::fs::canonicalize(folder) else {
        return StoreFolder::Elsewhere;
    };
    if folder == dir {
        return StoreFolder::Root;
    }
    if !folder.starts_with(dir) || !fingerprint_in(dir, &folder).is_empty() {
        return StoreFolder::Elsewhere;
    }
    StoreFolder::Apart(folder)
}

/// Size and modification time of every bot file below `dir`, sorted: a change to any
/// file changes it. Built from metadata only, which raises no file events.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    fingerprint_in(dir, dir)
}

/// [`fingerprint`] of the bot files of `dir` below `under`.
fn fingerprint_in(dir: &Path, under: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut files: Vec<_> = walkdir::WalkDir::new(under)
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
    use super::{StoreFolder, is_bot_file, store_folder};
    use std::path::Path;

    #[test]
    fn the_store_folder_is_left_out_only_when_it_holds_no_bot_file() {
        let bot = tempfile::tempdir().expect("tempdir");
        let dir = bot.path().canonicalize().expect("canonical");
        std::fs::create_dir_all(dir.join("data")).expect("data");
        std::fs::create_dir_all(dir.join("flows")).expect("flows");
        std::fs::write(dir.join("flows/main.yaml"), "flows: {}").expect("flow");
        assert_eq!(
            store_folder("sqlite://data/parlance.db", &dir),
            StoreFolder::Apart(dir.join("data"))
        );
        let absolute = format!("sqlite://{}", dir.join("data/x.db").display());
        assert_eq!(
            store_folder(&absolute, &dir),
            StoreFolder::Apart(dir.join("data"))
        );
        assert_eq!(
            store_folder("sqlite://parlance.db", &dir),
            StoreFolder::Root
        );
        // A folder with flows in it must stay watched.
        assert_eq!(
            store_folder("sqlite://flows/parlance.db", &dir),
            StoreFolder::Elsewhere
        );
        let outside = tempfile::tempdir().expect("tempdir");
        let elsewhere = format!("sqlite://{}/x.db", outside.path().display());
        assert_eq!(store_folder(&elsewhere, &dir), StoreFolder::Elsewhere);
        assert_eq!(
            store_folder("redis://127.0.0.1:6379/0", &dir),
            StoreFolder::Elsewhere
        );
        assert_eq!(store_folder("memory://", &dir), StoreFolder::Elsewhere);
    }

    /// The inodes every inotify instance of this process watches, from
    /// `/proc/self/fdinfo` (one line per watch: `inotify wd:1 ino:1f2e …`, in hex).
    #[cfg(target_os = "linux")]
    fn watched_inodes() -> Vec<u64> {
        let mut inodes = Vec::new();
        for fd in std::fs::read_dir("/proc/self/fd").expect("fds").flatten() {
            let inotify = std::fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy() == "anon_inode:inotify");
            if !inotify {
                continue;
            }
            let info = std::fs::read_to_string(format!(
                "/proc/self/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            for line in info.lines().filter(|l| l.starts_with("inotify ")) {
                let ino = line
                    .split_whitespace()
                    .find_map(|field| field.strip_prefix("ino:"))
                    .and_then(|hex| u64::from_str_radix(hex, 16).ok());
                inodes.extend(ino);
            }
        }
        inodes
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_sqlite_files_folder_is_not_watched_and_the_flows_are() {
        use std::os::unix::fs::MetadataExt;
        let copy = tempfile::tempdir().expect("tempdir");
        let dir = copy.path().join("pizza");
        for entry in walkdir::WalkDir::new("examples/pizza")
            .into_iter()
            .flatten()
        {
            let to = dir.join(entry.path().strip_prefix("examples/pizza").expect("below"));
            if entry.file_type().is_dir() {
                std::fs::create_dir_all(&to).expect("mkdir");
            } else {
                std::fs::copy(entry.path(), &to).expect("copy");
            }
        }
        // The store makes its folder when it opens, before the watch starts.
        std::fs::create_dir_all(dir.join("data")).expect("data");
        let loaded = crate::compile::load_bot(&dir);
        let bot = loaded.bot.expect("the example loads");
        assert!(bot.settings.store.starts_with("sqlite://data/"));
        let live = std::sync::Arc::new(crate::live::LiveBot::new(dir.clone(), bot));
        let _watching = super::watch(vec![live]).expect("watch");
        let inode = |p: &Path| std::fs::metadata(p).expect("metadata").ino();
        let watched = watched_inodes();
        assert!(watched.contains(&inode(&dir)), "the bot folder is watched");
        assert!(
            watched.contains(&inode(&dir.join("flows"))),
            "its flows are watched"
        );
        assert!(
            !watched.contains(&inode(&dir.join("data"))),
            "the store's folder is not watched"
        );
    }

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
