//! Stage 1, read: find a bot folder's files and turn each into a positioned YAML tree.
//!
//! Architecture Invariant: nothing here knows what a flow is. It reads text, bounds it
//! (size, encoding, nesting, aliases), interpolates `${NAME}` and reports problems with
//! their positions; `spec` and `compile` give the tree its meaning.

pub mod env;
pub mod yaml;

use crate::diag::{self, Code, Diagnostic, Pos};
use std::path::{Path, PathBuf};
pub use yaml::{Node, YamlPath};

/// Largest file we read. Real flow files are a few KiB; a 50 MB file is a mistake and
/// must not stall a reload.
pub const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024;

/// One YAML file of a bot folder, read and parsed.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Relative to the bot folder, e.g. `flows/orders/pizza.yaml`.
    pub rel: PathBuf,
    /// As printed in diagnostics (the bot folder joined with `rel`).
    pub display: PathBuf,
    /// Absent when the file could not be read or parsed; the reason is a diagnostic.
    pub tree: Option<Node>,
    /// The values where `${NAME}` was replaced (see [`yaml::Parsed::interpolated`]).
    pub interpolated: Vec<YamlPath>,
}

impl SourceFile {
    /// A diagnostic about the value at `path` in this file.
    pub fn diag_at(&self, path: &YamlPath, code: Code, message: impl Into<String>) -> Diagnostic {
        let pos = self.tree.as_ref().map_or(Pos::START, |t| t.pos_of(path));
        Diagnostic::new(&self.display, pos, code, message).at_path(path.to_string())
    }

    /// A diagnostic about the key that ends `path` (a duplicate id, an unknown key).
    pub fn diag_at_key(
        &self,
        path: &YamlPath,
        code: Code,
        message: impl Into<String>,
    ) -> Diagnostic {
        let pos = self
            .tree
            .as_ref()
            .map_or(Pos::START, |t| t.key_pos_of(path));
        Diagnostic::new(&self.display, pos, code, message).at_path(path.to_string())
    }

    /// The value at `path`, if the file has one there.
    pub fn node(&self, path: &YamlPath) -> Option<&Node> {
        let mut node = self.tree.as_ref()?;
        for seg in &path.0 {
            node = node.child(seg)?;
        }
        Some(node)
    }
}

/// Reads and parses one file; with `env`, `${NAME}` references are interpolated
/// (only `parlance.yaml` is). `required_content` makes an empty file an error (a flow
/// or test file); an empty `parlance.yaml` is just "all defaults".
pub fn read_file(
    root: &Path,
    rel: &Path,
    env: Option<env::EnvLookup<'_>>,
    required_content: bool,
    diags: &mut Vec<Diagnostic>,
) -> SourceFile {
    let display = diag::display_path(root, rel);
    let mut file = SourceFile {
        rel: rel.to_path_buf(),
        display: display.clone(),
        tree: None,
        interpolated: Vec::new(),
    };
    let text = match read_text(&root.join(rel)) {
        Ok(text) => text,
        Err((pos, code, message, hint)) => {
            diags.push(Diagnostic::new(&display, pos, code, message).maybe_hint(hint));
            return file;
        }
    };
    let parsed = match env {
        Some(env) => yaml::parse(&text, Some(&|s: &str, _pos: Pos| env::interpolate(s, env))),
        None => yaml::parse(&text, None),
    };
    for p in parsed.problems {
        diags.push(
            Diagnostic::new(&display, p.pos, p.code, p.message)
                .at_path(p.path.to_string())
                .maybe_hint(p.hint),
        );
    }
    file.tree = parsed.tree;
    file.interpolated = parsed.interpolated;
    let empty = match &file.tree {
        None => !diags.iter().any(|d| d.file == display),
        Some(node) => node.value == yaml::Value::Null,
    };
    if empty {
        file.tree = None;
        if required_content {
            diags.push(
                Diagnostic::new(&display, Pos::START, Code::EmptyFile, "the file is empty")
                    .with_hint("write the flow as a mapping with `nodes:`, or delete the file"),
            );
        }
    }
    file
}

type ReadError = (Pos, Code, String, Option<String>);

fn read_text(path: &Path) -> Result<String, ReadError> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, &e))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err((
            Pos::START,
            Code::FileTooLarge,
            format!(
                "the file is {:.1} MiB; Parlance reads files of at most {} MiB",
                meta.len() as f64 / (1024.0 * 1024.0),
                MAX_FILE_BYTES / (1024 * 1024)
            ),
            Some("split the flow into several files".into()),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| io_error(path, &e))?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.to_string()),
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            let prefix = String::from_utf8_lossy(valid);
            let line = prefix.matches('\n').count() + 1;
            let column = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            Err((
                Pos { line, column },
                Code::NotUtf8,
                format!(
                    "the file is not UTF-8 text (invalid byte 0x{:02x})",
                    bytes[e.valid_up_to()]
                ),
                Some("save the file as UTF-8 in your editor".into()),
            ))
        }
    }
}

fn io_error(path: &Path, e: &std::io::Error) -> ReadError {
    let code = if e.kind() == std::io::ErrorKind::NotFound {
        Code::NotFound
    } else {
        Code::Io
    };
    (
        Pos::START,
        code,
        format!("cannot read {}: {e}", path.display()),
        None,
    )
}

/// Every `*.yaml`/`*.yml` file below `root/sub`, relative to `root`, sorted, hidden
/// files and folders (editor swap files, `.git`) left out. A file that cannot be
/// reached (a dangling link, no permission) is reported, never silently skipped.
pub fn yaml_files(root: &Path, sub: &str, diags: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    let base = root.join(sub);
    if !base.is_dir() {
        return Vec::new();
    }
    let mut files = Vec::new();
    let walk = walkdir::WalkDir::new(&base)
        .follow_links(true)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walk {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                let path = e.path().unwrap_or(&base);
                let rel = path.strip_prefix(root).unwrap_or(path);
                let reason = e
                    .io_error()
                    .map_or_else(|| e.to_string(), ToString::to_string);
                diags.push(Diagnostic::new(
                    diag::display_path(root, rel),
                    Pos::START,
                    Code::Io,
                    format!("cannot read {}: {reason}", rel.display()),
                ));
                continue;
            }
        };
        let is_yaml = entry
            .path()
            .extension()
            .is_some_and(|x| x == "yaml" || x == "yml");
        if entry.file_type().is_file()
            && is_yaml
            && let Ok(rel) = entry.path().strip_prefix(root)
        {
            files.push(rel.to_path_buf());
        }
    }
    files.sort();
    files
}
