//! Compiling `script` nodes: read the code (inline or `file:`), compile it with the
//! bot's sandbox, and place a syntax error where the designer wrote it: in the `.rhai`
//! file, or at the script's own line and column inside the flow's YAML.

use super::node::{Ctx, read_bot_file};
use crate::diag::{self, Code, Diagnostic, Pos, did_you_mean};
use crate::flow::{NodeRef, Script, ScriptPlace};
use crate::script::{Program, ScriptError};
use crate::source::{SourceFile, YamlPath};
use crate::spec::flow::RawScript;
use std::path::PathBuf;
use std::sync::LazyLock;

const SYNTAX_HINT: &str = "scripts are Rhai: statements end with `;`, strings are in \"double quotes\", maps are #{ key: value }; see docs/scripts.md";

impl Ctx<'_> {
    pub(super) fn script(&mut self, raw: &RawScript, path: &YamlPath) -> Script {
        let (origin, code, place) = match raw {
            RawScript::Inline(code) => (
                "inline".to_string(),
                code.clone(),
                inline_place(self.file, path),
            ),
            RawScript::File(f) => {
                let code = match read_bot_file(self.dir, &f.file) {
                    Ok(code) => code,
                    Err((code, message, hint)) => {
                        self.diags.push(
                            self.file
                                .diag_at(&path.key("file"), code, message)
                                .with_hint(hint),
                        );
                        // Reported; an empty script stands in.
                        return Script {
                            origin: f.file.clone(),
                            sets: None,
                            targets: Vec::new(),
                            program: Program::empty(),
                            place: ScriptPlace::File(PathBuf::from(&f.file)),
                        };
                    }
                };
                (
                    f.file.clone(),
                    code,
                    ScriptPlace::File(PathBuf::from(&f.file)),
                )
            }
        };
        let program = match self.scripts.compile(&code) {
            Ok(program) => program,
            Err(e) => {
                self.diags.push(self.script_error(&place, path, &e));
                Program::empty()
            }
        };
        let targets = self.script_targets(&code, &place, path);
        Script {
            origin,
            sets: assigned_vars(&code),
            targets,
            program,
            place,
        }
    }

    /// The nodes `next_node("…")` names with a literal: each must be a node of this flow
    /// (or `end`), and the graph checks count them as ways out of the node.
    fn script_targets(&mut self, code: &str, place: &ScriptPlace, path: &YamlPath) -> Vec<NodeRef> {
        static NEXT_NODE: LazyLock<Option<regex::Regex>> =
            LazyLock::new(|| regex::Regex::new(r#"\bnext_node\s*\(\s*"([^"\\]*)"\s*\)"#).ok());
        let Some(re) = NEXT_NODE.as_ref() else {
            return Vec::new();
        };
        let mut targets = Vec::new();
        for caps in re.captures_iter(code) {
            let Some(name) = caps.get(1) else { continue };
            let id = name.as_str();
            if id == "end" {
                continue;
            }
            let nodes = self.names.nodes(self.flow);
            if let Some(i) = nodes.iter().position(|n| n == id) {
                targets.push(NodeRef {
                    flow: self.flow,
                    node: i as u32,
                });
                continue;
            }
            let hint = match did_you_mean(id, nodes.iter().map(String::as_str)) {
                Some(close) => format!("did you mean \"{close}\"?"),
                None => format!("nodes of this flow: {}", nodes.join(", ")),
            };
            let before = &code[..name.start()];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            let e = ScriptError {
                message: format!("next_node(\"{id}\"): no node named \"{id}\" in this flow"),
                line,
                column,
            };
            let mut d = self.script_error(place, path, &e).with_hint(hint);
            d.code = Code::UnknownNode;
            d.message = d.message.replacen("invalid script", "the script", 1);
            self.diags.push(d);
        }
        targets.sort();
        targets.dedup();
        targets
    }

    /// The `script_syntax` diagnostic: in the `.rhai` file (naming the node that uses
    /// it), or in the flow file at the script's own position.
    fn script_error(&self, place: &ScriptPlace, path: &YamlPath, e: &ScriptError) -> Diagnostic {
        let (file, pos) = place.locate(e.line, e.column);
        match place {
            ScriptPlace::File(_) => Diagnostic::new(
                diag::display_path(self.dir, &file),
                pos,
                Code::ScriptSyntax,
                format!(
                    "invalid script: {} (the script of {path} in {})",
                    e.message,
                    self.file.display.display(),
                ),
            )
            .with_hint(SYNTAX_HINT),
            ScriptPlace::Inline { .. } => {
                let at = if e.line > 0 {
                    format!(" (line {}, column {} of the script)", e.line, e.column)
                } else {
                    String::new()
                };
                Diagnostic::new(
                    &self.file.display,
                    pos,
                    Code::ScriptSyntax,
                    format!("invalid script: {}{at}", e.message),
                )
                .at_path(path.to_string())
                .with_hint(SYNTAX_HINT)
            }
        }
    }
}

/// Where an inline script's first character is in the flow file, from how its YAML
/// value is written: a `|` block starts on the line after `script: |` at the block's
/// indentation, a quoted value one column after the quote, a plain value where it starts.
pub(super) fn inline_place(file: &SourceFile, path: &YamlPath) -> ScriptPlace {
    let (start, key) = file.tree.as_ref().map_or((Pos::START, Pos::START), |t| {
        (t.pos_of(path), t.key_pos_of(path))
    });
    let place = |line, column, block_indent| ScriptPlace::Inline {
        file: file.rel.clone(),
        line,
        column,
        block_indent,
    };
    let line_text = |n: usize| {
        file.text
            .lines()
            .nth(n.saturating_sub(1))
            .unwrap_or_default()
    };
    // A block's header (`|`, `|-`, `>`) follows the key's colon on the key's line.
    let after_key: String = line_text(key.line)
        .chars()
        .skip(key.column.saturating_sub(1))
        .skip_while(|c| *c != ':')
        .skip(1)
        .collect();
    if let Some(c @ ('|' | '>')) = after_key.trim_start().chars().next() {
        // The block's indentation is that of its first line with text.
        let indent = file
            .text
            .lines()
            .skip(key.line)
            .find(|l| !l.trim().is_empty())
            .map_or(0, |l| l.chars().take_while(|c| *c == ' ').count());
        // A folded block (`>`) joins lines, so only its first line maps exactly.
        let block = (c == '|').then_some(indent + 1);
        return place(key.line + 1, indent + 1, block);
    }
    match line_text(start.line)
        .chars()
        .nth(start.column.saturating_sub(1))
    {
        Some('"' | '\'') => place(start.line, start.column + 1, None),
        Some(_) | None => place(start.line, start.column, None),
    }
}

/// Methods of a map that do not change it: `vars.contains("x")` only reads.
const READING_METHODS: &[&str] = &["contains", "keys", "values", "len", "is_empty", "get"];

/// The variables a script assigns, for the `unset_variable` check, when every use of
/// `vars` is `vars.NAME` (read, assigned, or a reading method); `None` when the script
/// may set any variable (`vars[key] = …`, `vars = …`, `vars.insert(…)`, `vars` passed
/// on). A textual scan: `vars` inside a string or comment makes it give up, which only
/// skips the check.
pub(super) fn assigned_vars(code: &str) -> Option<Vec<String>> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = Vec::new();
    let mut rest = code;
    let mut before: Option<char> = None;
    while let Some(i) = rest.find("vars") {
        let prev = rest[..i].chars().next_back().or(before);
        let after = &rest[i + 4..];
        before = Some('s');
        let standalone = !prev.is_some_and(is_ident) && !after.starts_with(is_ident);
        if !standalone {
            rest = after;
            continue;
        }
        let member = after.trim_start().strip_prefix('.')?;
        let member = member.trim_start();
        let len = member.find(|c: char| !is_ident(c)).unwrap_or(member.len());
        let name = &member[..len];
        if name.is_empty() {
            return None;
        }
        let follow = member[len..].trim_start();
        if follow.starts_with('(') {
            if !READING_METHODS.contains(&name) {
                return None;
            }
        } else if is_assignment(follow) || follow.starts_with('.') || follow.starts_with('[') {
            // `vars.order.total = …` changes `order`: count it as set, so no false error.
            names.push(name.to_string());
        }
        rest = after;
    }
    names.sort();
    names.dedup();
    Some(names)
}

/// Whether `text` starts with an assignment operator (`=`, `+=`, `<<=`…), not `==`.
fn is_assignment(text: &str) -> bool {
    let ops = [
        "**=", "<<=", ">>=", "+=", "-=", "*=", "/=", "%=", "|=", "&=", "^=", "??=",
    ];
    if ops.iter().any(|op| text.starts_with(op)) {
        return true;
    }
    text.starts_with('=') && !text.starts_with("==") && !text.starts_with("=>")
}

#[cfg(test)]
mod tests {
    use super::assigned_vars;

    #[test]
    fn assignments_to_vars_are_found() {
        assert_eq!(
            assigned_vars(
                "vars.total = vars.qty * 9.5;\nvars.n += 1; if vars.x == 1 { vars . tip= 2 }"
            ),
            Some(vec!["n".to_string(), "tip".into(), "total".into()])
        );
        assert_eq!(
            assigned_vars("let myvars = 1; vars.order.size = 2; if vars.contains(\"a\") {}"),
            Some(vec!["order".to_string()])
        );
        assert_eq!(assigned_vars("let x = 1;"), Some(vec![]));
    }

    #[test]
    fn dynamic_uses_of_vars_give_up() {
        for code in [
            "vars[\"x\"] = 1;",
            "vars = #{};",
            "vars.insert(\"x\", 1);",
            "let v = vars;",
            "f(vars);",
            "vars.remove(\"x\");",
        ] {
            assert_eq!(assigned_vars(code), None, "{code}");
        }
    }
}
