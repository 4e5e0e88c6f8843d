//! `parlance validate [DIR]`: every problem of a bot folder, for people and for CI.

use super::{EXIT_ERRORS, EXIT_OK, Format};
use crate::compile::{load_bot, load_tests};
use crate::diag;
use std::io::Write;
use std::path::Path;

pub fn run(dir: &Path, format: Format, deny_warnings: bool) -> u8 {
    let mut loaded = load_bot(dir);
    if dir.is_dir() {
        loaded.diagnostics.extend(load_tests(dir).diagnostics);
        diag::sort(&mut loaded.diagnostics);
    }
    let mut out = std::io::stdout().lock();
    let written = match format {
        Format::Text => loaded
            .diagnostics
            .iter()
            .try_for_each(|d| writeln!(out, "{d}")),
        Format::Json => serde_json::to_writer_pretty(&mut out, &loaded.diagnostics)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out)),
    };
    if let Err(e) = written {
        eprintln!("error: cannot write the report: {e}");
        return EXIT_ERRORS;
    }
    let failed = loaded.has_errors() || (deny_warnings && !loaded.diagnostics.is_empty());
    if format == Format::Text {
        match &loaded.bot {
            Some(bot) if !failed => eprintln!(
                "{}: valid ({} flow{}, {} nodes{})",
                dir.display(),
                bot.flows.len(),
                if bot.flows.len() == 1 { "" } else { "s" },
                bot.node_count(),
                if loaded.diagnostics.is_empty() {
                    String::new()
                } else {
                    format!("; {}", diag::summary(&loaded.diagnostics))
                }
            ),
            _ => eprintln!("{}: {}", dir.display(), diag::summary(&loaded.diagnostics)),
        }
    }
    if failed { EXIT_ERRORS } else { EXIT_OK }
}
