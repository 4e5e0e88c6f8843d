//! Stage 1, read: find a bot folder's files and turn each into a positioned YAML tree.
//!
//! Architecture Invariant: nothing here knows what a flow is. It reads text, bounds it
//! (size, encoding, nesting, aliases), interpolates `${NAME}` and reports problems with
//! their positions; `spec` and `compile` give the tree its meaning.

pub mod bot_path;
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
    /// The file's text as read (empty when it could not be read): positions inside a
    /// value, such as a line of an inline script, are found in it.
    pub text: String,
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
        text: String::new(),
    };
    if let Some(d) = outside(root, rel) {
        diags.push(d);
        return file;
    }
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
    file.text = text;
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

/// The diagnostic for a file or folder of the bot folder that lies outside it (through a
/// symbolic link); `None` when it is inside or missing (missing is reported by the reader).
fn outside(root: &Path, rel: &Path) -> Option<Diagnostic> {
    let problem = bot_path::resolve(root, rel).err()?;
    let (message, hint) = problem.outside_message(&rel.to_string_lossy())?;
    Some(
        Diagnostic::new(
            diag::display_path(root, rel),
            Pos::START,
            Code::OutsideBotFolder,
            message,
        )
        .with_hint(hint),
    )
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
        Some(io_hint(e)),
    )
}

/// What to do about a file that cannot be read.
fn io_hint(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            "usually a symbolic link whose target was moved or deleted; fix the link or remove it"
                .into()
        }
        std::io::ErrorKind::PermissionDenied => {
            "give the user running Parlance permission to read it, or remove it from the bot folder"
                .into()
        }
        _ => "check the file and its permissions, or remove it from the bot folder".into(),
    }
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
    if let Some(d) = outside(root, Path::new(sub)) {
        diags.push(d);
        return files;
    }
    let mut walk = walkdir::WalkDir::new(&base)
        .follow_links(true)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    while let Some(entry) = walk.next() {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                let path = e.path().unwrap_or(&base);
                let rel = path.strip_prefix(root).unwrap_or(path);
                let reason = e
                    .io_error()
                    .map_or_else(|| e.to_string(), ToString::to_string);
                // walkdir's own errors (no io error) are symbolic link loops.
                let hint = e.io_error().map_or_else(
                    || {
                        "a symbolic link leads back to a folder above it; remove the link"
                            .to_string()
                    },
                    io_hint,
                );
                diags.push(
                    Diagnostic::new(
                        diag::display_path(root, rel),
                        Pos::START,
                        Code::Io,
                        format!("cannot read {}: {reason}", rel.display()),
                    )
                    .with_hint(hint),
                );
                continue;
            }
        };
        // A linked folder that leaves the bot folder is reported once and not walked
        // (it could be anything, up to `/`); linked files are checked by `read_file`.
        if entry.file_type().is_dir()
            && entry.path_is_symlink()
            && let Ok(rel) = entry.path().strip_prefix(root)
            && let Some(d) = outside(root, rel)
        {
            diags.push(d);
            walk.skip_current_dir();
            continue;
        }
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
