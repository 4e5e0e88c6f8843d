//! Compiled templates and expressions, kept in one minijinja environment per bot.
//!
//! Every string a designer writes in a node is a template, compiled once when the bot
//! loads; a string without `{{`, `{%` or `{#` stays plain text and costs nothing to render.
//! Expressions (`if:`, `set:`, `validate:`) are compiled too. minijinja's `Expression`
//! borrows its environment, which a long-lived `Bot` cannot hold, so each expression is
//! stored as a one-line template `{% set __value = (EXPR) %}` and evaluated by reading
//! `__value` back: same parser, same semantics, compiled once.

use minijinja::{Environment, UndefinedBehavior, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// The names every template and expression may read.
pub const CONTEXT_ROOTS: &[&str] = &[
    "vars", "profile", "message", "contact", "session", "now", "env", "handover",
];

/// The fields of the context values whose shape Parlance fixes (`vars` and `profile`
/// hold whatever the flows save; `now` and `env` are checked elsewhere).
pub const CONTEXT_FIELDS: &[(&str, &[&str])] = &[
    ("contact", &["wa_id", "name"]),
    ("handover", &["id", "state", "status", "agent"]),
    (
        "session",
        &["id", "started_at", "window_open", "turn", "flow", "node"],
    ),
    (
        "message",
        &[
            "id",
            "type",
            "text",
            "reply",
            "button",
            "location",
            "media",
            "contacts",
            "reaction",
            "flow_reply",
            "context",
            "timestamp",
            "error",
            "data",
            "injected",
        ],
    ),
];

/// The variable a stored expression leaves its value in.
pub const EXPR_RESULT: &str = "__value";

/// Text to send: plain, or a compiled template (by its name in [`Templates`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    Static(String),
    Template(Arc<str>),
}

/// A compiled expression (by its name in [`Templates`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    name: Arc<str>,
    /// The expression as written, for diagrams and error messages.
    source: Arc<str>,
}

impl Expr {
    /// Its name in [`Templates`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The expression as the designer wrote it.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Stands in for an expression that did not compile (the bot is not built then).
    pub fn broken(source: &str) -> Self {
        Expr {
            name: Arc::from(""),
            source: Arc::from(source),
        }
    }
}

/// A template or expression that does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub message: String,
}

/// All templates and expressions of one bot.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        // A typo like `vars.nmae` must fail loudly, not render as nothing.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // A runaway loop in a template stops instead of hanging a turn.
        env.set_fuel(Some(100_000));
        // Debug mode is what makes minijinja remember which expression produced an
        // undefined value, so the error names it (`vars.quantity` is undefined). It is
        // on by default only in debug builds; `serve --release` said "undefined value".
        env.set_debug(true);
        env.add_filter("currency", super::filters::currency);
        env.add_filter("date", super::filters::date);
        env.add_filter("wa_bold", super::filters::wa_bold);
        env.add_filter("wa_italic", super::filters::wa_italic);
        env.add_filter("wa_code", super::filters::wa_code);
        env.add_filter("truncate_chars", super::filters::truncate_chars);
        Templates { env }
    }

    pub fn env(&self) -> &Environment<'static> {
        &self.env
    }

    /// Whether a string holds template syntax at all.
    pub fn is_template(source: &str) -> bool {
        source.contains("{{") || source.contains("{%") || source.contains("{#")
    }

    /// Compiles `source` under `name` (unique in the bot: file and position) and returns
    /// the text with the names it reads from outside (for the unknown-variable check).
    pub fn add_text(
        &mut self,
        name: String,
        source: &str,
    ) -> Result<(Text, HashSet<String>), TemplateError> {
        if !Self::is_template(source) {
            return Ok((Text::Static(source.to_string()), HashSet::new()));
        }
        self.env
            .add_template_owned(name.clone(), source.to_string())
            .map_err(describe)?;
        let names = self.undeclared(&name);
        Ok((Text::Template(name.into()), names))
    }

    /// Compiles the expression `source` under `name`.
    pub fn add_expr(
        &mut self,
        name: String,
        source: &str,
    ) -> Result<(Expr, HashSet<String>), TemplateError> {
        // A source that closes the wrapper early (`x) %}{% ...`) would compile as a
        // template without being one expression; such sources, and any that fail, are
        // checked as a lone expression too, which also gives the honest error message.
        if source.contains("%}") || source.contains("}}") {
            self.env.compile_expression(source).map_err(describe)?;
        }
        let wrapped = format!("{{% set {EXPR_RESULT} = ({source}) %}}");
        if let Err(e) = self.env.add_template_owned(name.clone(), wrapped) {
            return Err(self
                .env
                .compile_expression(source)
                .err()
                .map_or_else(|| describe(e), describe));
        }
        let names = self.undeclared(&name);
        let expr = Expr {
            name: name.into(),
            source: source.into(),
        };
        Ok((expr, names))
    }

    /// Renders a text with the given context.
    pub fn render(&self, text: &Text, ctx: &Value) -> Result<String, TemplateError> {
        match text {
            Text::Static(s) => Ok(s.clone()),
            Text::Template(name) => self
                .env
                .get_template(name)
                .and_then(|t| t.render(ctx))
                .map_err(|e| self.describe_runtime(name, ctx, e)),
        }
    }

    /// Evaluates an expression with the given context.
    pub fn eval(&self, expr: &Expr, ctx: &Value) -> Result<Value, TemplateError> {
        let fail = |e| self.describe_runtime(expr.name(), ctx, e);
        let template = self.env.get_template(expr.name()).map_err(fail)?;
        let captured = template.render_captured(ctx).map_err(fail)?;
        Ok(captured.state().lookup(EXPR_RESULT).unwrap_or_default())
    }

    /// A render error in the designer's terms. An undefined value is always named: when
    /// minijinja could not tell which expression produced it, the names the template
    /// reads that the context lacks are listed instead.
    fn describe_runtime(&self, name: &str, ctx: &Value, e: minijinja::Error) -> TemplateError {
        let kind = e.kind();
        let mut error = describe_runtime(e);
        // An operation on an undefined value fails as an invalid operation that says
        // "undefined" but not which value.
        let undefined =
            kind == minijinja::ErrorKind::UndefinedError || error.message.contains("undefined");
        if undefined && !error.message.contains('`') {
            let mut missing: Vec<String> = self
                .undeclared(name)
                .into_iter()
                .filter(|path| !resolves(ctx, path))
                .collect();
            missing.sort();
            if !missing.is_empty() {
                let names = missing
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                error.message = format!("{} ({names} is not set)", error.message);
            }
        }
        error
    }

    fn undeclared(&self, name: &str) -> HashSet<String> {
        self.env
            .get_template(name)
            .map(|t| t.undeclared_variables(true))
            .unwrap_or_default()
    }
}

/// Whether a dotted name (`vars.order.qty`) has a value in `ctx`.
fn resolves(ctx: &Value, path: &str) -> bool {
    let mut value = ctx.clone();
    for part in path.split('.') {
        match value.get_attr(part) {
            Ok(v) if !v.is_undefined() => value = v,
            _ => return false,
        }
    }
    true
}

/// A render error, in the designer's terms: what failed, without minijinja's template name.
fn describe_runtime(e: minijinja::Error) -> TemplateError {
    let mut message = e
        .detail()
        .map_or_else(|| e.kind().to_string(), str::to_string);
    if e.kind() == minijinja::ErrorKind::OutOfFuel {
        message = "the template ran too long (a runaway loop?)".into();
    }
    TemplateError { message }
}

fn describe(e: minijinja::Error) -> TemplateError {
    let mut message = e
        .detail()
        .map_or_else(|| e.kind().to_string(), str::to_string);
    if let Some(line) = e.line().filter(|l| *l > 1) {
        message.push_str(&format!(" (line {line} of the text)"));
    }
    TemplateError { message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval_error(templates: &mut Templates, source: &str) -> String {
        let (expr, _) = templates
            .add_expr("e".into(), source)
            .expect("the expression compiles");
        let ctx = Value::from(minijinja::value::Serde(json!({ "vars": { "qty": 2 } })));
        templates
            .eval(&expr, &ctx)
            .expect_err("vars.quantity is not set")
            .message
    }

    #[test]
    fn an_undefined_value_is_named_in_release_builds_too() {
        // minijinja names it only in debug mode, which release builds turn off by default.
        let mut templates = Templates::new();
        assert!(templates.env().debug());
        assert_eq!(
            eval_error(&mut templates, "vars.quantity * 9.5"),
            "tried to use * operator on unsupported types undefined and number (`vars.quantity` is undefined)"
        );
    }

    #[test]
    fn an_undefined_value_minijinja_cannot_trace_is_named_from_the_template() {
        let mut templates = Templates::new();
        templates.env.set_debug(false);
        assert_eq!(
            eval_error(&mut templates, "vars.quantity * 9.5 + vars.qty"),
            "tried to use * operator on unsupported types undefined and number (`vars.quantity` is not set)"
        );
    }
}
