//! Templates, expressions and regexes: compiled, with the checks on the names they read
//! and a hint when they do not compile.

use super::Ctx;
use crate::diag::{Code, did_you_mean};
use crate::flow::templates::{CONTEXT_FIELDS, CONTEXT_ROOTS};
use crate::flow::*;
use crate::source::YamlPath;
use std::collections::HashSet;

impl Ctx<'_> {
    /// A unique name for the next template of this file. Runtime errors point at the
    /// node (it keeps its position), so the name only has to be unique and readable.
    pub(super) fn template_name(&mut self) -> String {
        self.template_count += 1;
        format!("{}#{}", self.file.display.display(), self.template_count)
    }

    pub fn text(&mut self, source: &str, path: &YamlPath) -> Text {
        let name = self.template_name();
        match self.templates.add_text(name, source) {
            Ok((text, names)) => {
                self.check_names(&names, path, &[]);
                text
            }
            Err(e) => {
                self.report(
                    path,
                    Code::TemplateSyntax,
                    format!("invalid template: {}", e.message),
                    Some(template_hint(source)),
                );
                Text::Static(String::new())
            }
        }
    }

    pub(super) fn expr(&mut self, source: &str, path: &YamlPath, extra_roots: &[&str]) -> Expr {
        let name = self.template_name();
        match self.templates.add_expr(name, source) {
            Ok((expr, names)) => {
                self.check_names(&names, path, extra_roots);
                expr
            }
            Err(e) => {
                let hint = if source.contains("{{") {
                    "write expressions without {{ }}: if: vars.age >= 18"
                } else {
                    "an expression is minijinja: vars.qty * 2, vars.age >= 18 and vars.ok, 'text in quotes'"
                };
                self.report(
                    path,
                    Code::ExpressionSyntax,
                    format!("invalid expression: {}", e.message),
                    Some(hint.into()),
                );
                Expr::broken(source)
            }
        }
    }

    /// Names a template reads must exist at run time; `env.X` must be exposed.
    pub(super) fn check_names(
        &mut self,
        names: &HashSet<String>,
        path: &YamlPath,
        extra_roots: &[&str],
    ) {
        let mut names: Vec<&String> = names.iter().collect();
        names.sort();
        let globals: Vec<String> = self
            .templates
            .env()
            .globals()
            .map(|(n, _)| n.to_string())
            .collect();
        let mut reported = HashSet::new();
        for full in names {
            let mut parts = full.split('.');
            let root = parts.next().unwrap_or_default();
            if root == "vars"
                && let Some(var) = parts.next()
            {
                let d = self.file.diag_at(
                    path,
                    Code::UnsetVariable,
                    format!("vars.{var} is never saved or set in this bot"),
                );
                self.var_reads.push((var.to_string(), d));
                continue;
            }
            if root == "env" {
                if let Some(var) = parts.next()
                    && !self.expose_env.iter().any(|e| e == var)
                    && reported.insert(full.clone())
                {
                    self.report(
                        path,
                        Code::UnknownVariable,
                        format!("env.{var} is not exposed to templates"),
                        Some(format!("add {var} to expose_env in parlance.yaml")),
                    );
                }
                continue;
            }
            if let Some((_, fields)) = CONTEXT_FIELDS.iter().find(|(r, _)| *r == root)
                && let Some(field) = parts.next()
                && !fields.contains(&field)
                && reported.insert(format!("{root}.{field}"))
            {
                let hint = match did_you_mean(field, fields.iter().copied()) {
                    Some(c) => format!("did you mean \"{root}.{c}\"?"),
                    None => format!("{root} has: {}", fields.join(", ")),
                };
                self.report(
                    path,
                    Code::UnknownVariable,
                    format!("{root} has no field \"{field}\""),
                    Some(hint),
                );
                continue;
            }
            let known = CONTEXT_ROOTS.contains(&root)
                || extra_roots.contains(&root)
                || globals.iter().any(|g| g == root);
            if !known && reported.insert(root.to_string()) {
                let candidates = CONTEXT_ROOTS.iter().chain(extra_roots.iter()).copied();
                let hint = match did_you_mean(root, candidates) {
                    Some(c) => format!("did you mean \"{c}\"?"),
                    None => format!(
                        "templates read {}; a saved answer is vars.{root}",
                        CONTEXT_ROOTS.join(", ")
                    ),
                };
                self.report(
                    path,
                    Code::UnknownVariable,
                    format!("unknown name \"{root}\""),
                    Some(hint),
                );
            }
        }
    }

    /// Compiles a designer's regex; `None` (reported) when it does not compile.
    pub(super) fn regex(
        &mut self,
        source: &str,
        path: &YamlPath,
        ignore_case: bool,
    ) -> Option<regex::Regex> {
        // Triggers ignore case, like keywords: users do not type in a fixed case. An
        // `expect` regex is validation, so it means exactly what the designer wrote.
        let build = |s: &str| {
            regex::RegexBuilder::new(s)
                .case_insensitive(ignore_case)
                .size_limit(1 << 20)
                .build()
        };
        match build(source) {
            Ok(re) => Some(re),
            Err(e) => {
                let detail = e.to_string();
                let last = detail
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("invalid");
                let message = format!(
                    "invalid regular expression: {}",
                    last.trim().trim_start_matches("error: ")
                );
                let hint = regex_hint(source, &message);
                self.report(path, Code::BadRegex, message, Some(hint));
                // Its named groups are still variables the designer meant to set.
                self.assigned_elsewhere
                    .extend(crate::compile::prune::regex_group_names(source));
                None
            }
        }
    }
}

/// Stands in for a regex that did not compile (the bot is not built then anyway).
pub(super) fn never_matches() -> regex::Regex {
    regex::Regex::new(r"[^\s\S]").unwrap_or_else(|_| unreachable!("a constant regex compiles"))
}

/// What to do about a regex that does not compile, from the regex crate's complaint.
fn regex_hint(source: &str, message: &str) -> String {
    let hint = if message.contains("look-around") {
        "look-ahead and look-behind are not supported; match the text itself, or check it in `validate:`"
    } else if message.contains("unclosed group") {
        "every ( needs a ); write \\( for a literal parenthesis"
    } else if message.contains("unclosed character class") {
        "every [ needs a ]; write \\[ for a literal bracket"
    } else if message.contains("counted repetition") {
        "a repetition like {2,4} needs its closing }; write \\{ for a literal brace"
    } else if message.contains("repetition operator missing expression") {
        "*, + and ? repeat what comes before them; write \\* \\+ \\? for the characters themselves"
    } else if message.contains("escape") {
        "write a literal backslash as \\\\; in YAML, quote regexes with single quotes so backslashes stay as written"
    } else if message.contains("size limit") {
        "the regex is too large once compiled; simplify it, e.g. fewer or smaller repetitions"
    } else if source.contains("(?<") {
        "name groups as (?P<name>...)"
    } else {
        "regular expressions use Rust's regex syntax; quote them with single quotes in YAML"
    };
    hint.to_string()
}

/// What to do about a template that does not compile.
fn template_hint(source: &str) -> String {
    let unclosed =
        |open: &str, close: &str| source.matches(open).count() > source.matches(close).count();
    if unclosed("{{", "}}") {
        "every {{ needs a closing }}, as in {{ vars.name }}".into()
    } else if unclosed("{%", "%}") {
        "every {% needs a closing %}, as in {% if vars.vip %}...{% endif %}".into()
    } else {
        "values are written {{ vars.name }} and statements {% if ... %}...{% endif %}; for a literal {{ write {{ '{{' }}".into()
    }
}
