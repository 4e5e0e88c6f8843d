//! `parlance schema [--out DIR] [--check]`: the JSON Schemas editors and CI use, generated
//! from the `spec` types.

use super::{EXIT_ERRORS, EXIT_OK};
use crate::spec::FileKind;
use std::path::Path;

/// The text of a schema file, exactly as checked in.
pub fn schema_text(kind: FileKind) -> String {
    let mut text = serde_json::to_string_pretty(&kind.schema()).unwrap_or_default();
    text.push('\n');
    text
}

pub fn run(out: &Path, check: bool) -> u8 {
    let mut stale = Vec::new();
    for kind in FileKind::ALL {
        let path = out.join(kind.schema_file());
        let text = schema_text(kind);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path);
            }
            continue;
        }
        if let Err(e) = std::fs::create_dir_all(out).and_then(|()| std::fs::write(&path, text)) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return EXIT_ERRORS;
        }
        println!("wrote {}", path.display());
    }
    for path in &stale {
        eprintln!(
            "{} is out of date; run `parlance schema --out {}`",
            path.display(),
            out.display()
        );
    }
    if stale.is_empty() {
        EXIT_OK
    } else {
        EXIT_ERRORS
    }
}
