//! Diagnostics: every problem Parlance finds in a bot folder, with where it is and
//! what to do about it.
//!
//! The text form is `file:line:column: severity[code] yaml.path: message; hint: ...`
//! (the path and hint only where there is one). Codes are stable: tools and tests match
//! on them, so a code is never renamed, only added.

use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// How bad a problem is. Errors stop a bot from loading; warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

macro_rules! codes {
    ($($variant:ident => $name:literal, $severity:ident, $doc:literal;)*) => {
        /// The stable identifier of a kind of problem. `docs/diagnostics.md` lists them all.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code { $(#[doc = $doc] $variant,)* }

        impl Code {
            /// Every code, in declaration order (tests check that each has a fixture).
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as printed: `error[unknown_node]`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// The severity this code is reported with.
            pub fn severity(self) -> Severity {
                match self { $(Code::$variant => Severity::$severity,)* }
            }

            /// One line saying what the code means, for docs and `--help`.
            pub fn summary(self) -> &'static str {
                match self { $(Code::$variant => $doc,)* }
            }
        }
    };
}

codes! {
    NotFound => "not_found", Error, "the bot folder or a file it names does not exist";
    Io => "io", Error, "a file could not be read";
    OutsideBotFolder => "outside_bot_folder", Error, "a file the bot names or holds lies outside the bot folder (an absolute path, `..`, or a symbolic link that leaves it)";
    FileTooLarge => "file_too_large", Error, "a file is larger than Parlance reads";
    NotUtf8 => "not_utf8", Error, "a file is not valid UTF-8 text";
    YamlSyntax => "yaml_syntax", Error, "a file is not valid YAML";
    YamlTooComplex => "yaml_too_complex", Error, "a file nests too deeply or expands too many aliases";
    MultipleDocuments => "multiple_documents", Error, "a file holds more than one YAML document";
    EmptyFile => "empty_file", Error, "a flow or test file is empty";
    DuplicateKey => "duplicate_key", Error, "a mapping has the same key twice";
    EnvMissing => "env_missing", Error, "a ${NAME} reference names an environment variable that is not set";
    UnknownField => "unknown_field", Error, "a key that this place does not accept (often a typo)";
    MissingField => "missing_field", Error, "a required key is missing";
    WrongType => "wrong_type", Error, "a value has the wrong type (text, number, list, mapping...)";
    InvalidValue => "invalid_value", Error, "a value is not one of the accepted values or forms";
    NodeKind => "node_kind", Error, "a node does not have exactly one kind key (say, buttons, ask...)";
    Schema => "schema", Error, "a value breaks another rule of the schema";
    NoFlows => "no_flows", Error, "the bot folder has no flow files";
    DuplicateFlow => "duplicate_flow", Error, "two flows have the same id";
    DuplicateNode => "duplicate_node", Error, "a flow has two nodes with the same id";
    UnknownNode => "unknown_node", Error, "a target names a node that does not exist";
    UnknownFlow => "unknown_flow", Error, "a target, call, entry or fallback names a flow that does not exist";
    UnreachableNode => "unreachable_node", Warning, "no path leads to this node";
    WhatsappLimit => "whatsapp_limit", Error, "text or a count is outside what WhatsApp accepts";
    DuplicateId => "duplicate_id", Error, "two buttons or rows of one message share an id or a title";
    TemplateSyntax => "template_syntax", Error, "a text is not a valid minijinja template";
    ExpressionSyntax => "expression_syntax", Error, "an `if:`, `set:` or `validate:` value is not a valid minijinja expression";
        UnknownVariable => "unknown_variable", Error, "a template or expression reads a name that is never defined";
    UnsetVariable => "unset_variable", Error, "a template or expression reads a `vars.X` that nothing in the bot saves or sets";
    ScriptSyntax => "script_syntax", Error, "a script (inline or a `.rhai` file) does not compile";
    MissingFunction => "missing_function", Error, "a transformer file does not define the function it must (`fn input(message)`, `fn output(payload)`, `fn finished(turn)`)";
    BadRegex => "bad_regex", Error, "a regular expression does not compile";
    BadDuration => "bad_duration", Error, "a duration is not written like 30s, 5m, 2h or 7d";
    WaitTooLong => "wait_too_long", Error, "a `wait` is longer than a typing pause may be (25s)";
    DuplicateTrigger => "duplicate_trigger", Warning, "two flows claim the same keyword or reply id";
    MisplacedKey => "misplaced_key", Warning, "a key has no effect on this kind of node";
    NotSupported => "not_supported", Error, "a feature this build checks but cannot run yet (no node kind in this build)";
    EndlessLoop => "endless_loop", Error, "nodes that do not wait for the user lead back to each other unconditionally";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A 1-based line and column in a file. Columns count characters, as editors do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };
}

/// One problem found in a bot folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file, as given to the user (relative to where they ran the command).
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub severity: Severity,
    pub code: Code,
    /// The YAML path of the value, like `nodes.ask_name.next`; empty for whole-file problems.
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(file: impl Into<PathBuf>, pos: Pos, code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.into(),
            line: pos.line,
            column: pos.column,
            severity: code.severity(),
            code,
            path: String::new(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn at_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn maybe_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}[{}] ",
            self.file.display(),
            self.line,
            self.column,
            self.severity,
            self.code
        )?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

/// Sorts diagnostics by file, line and column (then code, for a stable order) and drops
/// exact repeats, which happen when one cause is seen by two checks.
pub fn sort(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| {
        (
            &a.file,
            a.line,
            a.column,
            a.code.as_str(),
            &a.path,
            &a.message,
        )
            .cmp(&(
                &b.file,
                b.line,
                b.column,
                b.code.as_str(),
                &b.path,
                &b.message,
            ))
    });
    diags.dedup();
}

/// `1 error, 2 warnings`-style summary.
pub fn summary(diags: &[Diagnostic]) -> String {
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    format!(
        "{errors} error{}, {warnings} warning{}",
        if errors == 1 { "" } else { "s" },
        if warnings == 1 { "" } else { "s" }
    )
}

/// The closest candidate to `wanted`, if one is close enough to be a likely typo:
/// at most one edit (a swap counts as one) per three characters, or a shared prefix.
pub fn did_you_mean<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let budget = (wanted.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != wanted)
        .map(|c| {
            (
                strsim::damerau_levenshtein(wanted, c),
                strsim::jaro_winkler(wanted, c),
                c,
            )
        })
        .filter(|(edits, similarity, _)| *edits <= budget || *similarity >= 0.9)
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, _, c)| c)
}

/// Joins a folder the user named with a file inside it, as it should be printed:
/// `flows/main.yaml` for the current folder, `examples/pizza/flows/main.yaml` otherwise.
pub fn display_path(root: &Path, rel: &Path) -> PathBuf {
    if root == Path::new(".") || root.as_os_str().is_empty() {
        rel.to_path_buf()
    } else {
        root.join(rel)
    }
}
