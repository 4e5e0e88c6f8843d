//! The configured Rhai engine: compiling scripts, running them within their limits.

use super::limits::Limits;
use super::run_state::{self, Running};
use super::value::{map_to_json, map_to_rhai, to_dynamic};
use rhai::{Dynamic, Engine, EvalAltResult, Map as RhaiMap, OptimizationLevel, Position, Scope};
use serde_json::{Map, Value};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::LazyLock;
use std::time::Instant;

/// How often (in operations) a run looks at the clock: often enough that a runaway
/// overshoots its timeout by microseconds, rarely enough to cost nothing.
const CLOCK_EVERY: u64 = 256;
/// Most variables and functions a script defines (bounded by operations anyway; this
/// keeps one statement from declaring thousands).
const MAX_VARIABLES: usize = 1_000;
const MAX_FUNCTIONS: usize = 1_000;
/// How often (in variable accesses) a run measures its variables. Rhai checks a value's
/// size when a function returns it or a property is assigned, but not when `m[key] = v`
/// adds an entry to a map, so a loop could fill a map far past `max_map_size` (and
/// memory with it) before the operations limit stops it.
const MEASURE_EVERY: u64 = 64;
/// The scope name a transformer's argument (the message, payload or turn) is passed in.
const TRANSFORMER_ARG: &str = "transformer_arg";

/// A Rhai engine with the bot's limits and Parlance's functions.
pub struct Sandbox {
    engine: Engine,
    limits: Limits,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new(Limits::default())
    }
}

/// A compiled script.
#[derive(Clone)]
pub struct Program {
    ast: rhai::AST,
}

impl Program {
    /// A script that does nothing: stands in for one that did not compile.
    pub fn empty() -> Self {
        Program {
            ast: rhai::AST::empty(),
        }
    }
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Program")
    }
}

/// What went wrong, and where in the script (1-based; 0 when Rhai gives no position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}

/// What a script sees: the turn's values, with the shapes templates see them in.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub vars: &'a Map<String, Value>,
    pub profile: &'a Map<String, Value>,
    pub message: &'a Value,
    pub contact: &'a Value,
    pub session: &'a Value,
    pub env: &'a Map<String, Value>,
    /// The turn's time, Unix seconds: what `now()` returns.
    pub now: i64,
}

/// What a script left behind.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `vars` and `profile` after the run: the session's new values.
    pub vars: Map<String, Value>,
    pub profile: Map<String, Value>,
    /// The node it chose with `next_node()`.
    pub next: Option<String>,
}

impl Sandbox {
    pub fn new(limits: Limits) -> Self {
        let mut engine = Engine::new();
        engine
            .set_max_operations(limits.max_operations)
            .set_max_call_levels(limits.max_call_depth)
            .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
            .set_max_string_size(limits.max_string_size)
            .set_max_array_size(limits.max_array_size)
            .set_max_map_size(limits.max_map_size)
            .set_max_variables(MAX_VARIABLES)
            .set_max_functions(MAX_FUNCTIONS)
            // A typo in a variable's name is a load error, not a `()` at run time.
            .set_strict_variables(true)
            // `let vars = ...` would hide the session's variables from the write-back.
            .set_allow_shadowing(false)
            // Never call functions at compile time: `now()` has no value then.
            .set_optimization_level(OptimizationLevel::Simple);
        engine.disable_symbol("eval");
        engine.on_print(|_| {});
        engine.on_debug(|_, _, _| {});
        engine.on_progress(|ops| {
            if ops % CLOCK_EVERY == 0 && run_state::past_deadline() {
                Some(Dynamic::UNIT)
            } else {
                None
            }
        });
        // The API is marked volatile, not deprecated; it is the one hook that sees the scope.
        #[allow(deprecated)]
        engine.on_var(|_, _, ctx| {
            if run_state::count_access(MEASURE_EVERY) {
                for (_, constant, value) in ctx.scope().iter_raw() {
                    if !constant {
                        ctx.engine().ensure_data_size_within_limits(value)?;
                    }
                }
            }
            Ok(None)
        });
        super::api::register(&mut engine);
        Sandbox { engine, limits }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compiles a script. The names of the scope are declared, so reading any other
    /// undeclared variable is an error here.
    pub fn compile(&self, code: &str) -> Result<Program, ScriptError> {
        let mut scope = Scope::new();
        for name in super::SCOPE_NAMES {
            // Declared, not constants: the optimizer must not fold their (empty) values in.
            scope.push_dynamic(*name, Dynamic::UNIT);
        }
        let compiled = catch_unwind(AssertUnwindSafe(|| {
            self.engine.compile_with_scope(&scope, code)
        }));
        match compiled {
            Ok(Ok(ast)) => Ok(Program { ast }),
            Ok(Err(e)) => {
                let (line, column) = position(e.position());
                let message = match e.err_type() {
                    rhai::ParseErrorType::ExprTooDeep => format!(
                        "an expression nests more than {} deep (scripts.max_expr_depth)",
                        self.limits.max_expr_depth
                    ),
                    other => lowercase_first(&other.to_string()),
                };
                Err(ScriptError {
                    message,
                    line,
                    column,
                })
            }
            Err(_) => Err(ScriptError {
                message: "the script engine failed on this script".into(),
                line: 0,
                column: 0,
            }),
        }
    }

    /// Compiles a transformer file: it must define `fn <name>(x)` with one parameter.
    /// The program runs the file, then calls `name!(transformer_arg)` in the file's scope
    /// (`!`: Rhai functions are pure, but a transformer may assign into `vars` and
    /// `profile` like a script node does). `Ok(None)` when the function is missing.
    pub fn compile_transformer(
        &self,
        code: &str,
        name: &str,
    ) -> Result<Option<Program>, ScriptError> {
        let program = self.compile(code)?;
        let defined = program
            .ast
            .iter_functions()
            .any(|f| f.name == name && f.params.len() == 1);
        if !defined {
            return Ok(None);
        }
        let mut scope = Scope::new();
        for n in super::SCOPE_NAMES.iter().chain([&TRANSFORMER_ARG]) {
            scope.push_dynamic(*n, Dynamic::UNIT);
        }
        let driver = self
            .engine
            .compile_with_scope(&scope, format!("{name}!({TRANSFORMER_ARG})"))
            .map_err(|e| ScriptError {
                message: lowercase_first(&e.err_type().to_string()),
                line: 0,
                column: 0,
            })?;
        Ok(Some(Program {
            ast: program.ast.merge(&driver),
        }))
    }

    /// Runs a compiled script. `may_choose`: whether it may choose the next node.
    pub fn run(
        &self,
        program: &Program,
        input: Input<'_>,
        may_choose: bool,
    ) -> Result<Outcome, ScriptError> {
        self.eval(program, input, may_choose, None)
            .map(|(_, outcome)| outcome)
    }

    /// Runs a transformer compiled by [`Sandbox::compile_transformer`] with its argument:
    /// what its function returned, and what it left in `vars` and `profile`.
    pub fn call(
        &self,
        program: &Program,
        input: Input<'_>,
        arg: &Value,
    ) -> Result<(Dynamic, Outcome), ScriptError> {
        self.eval(program, input, false, Some(to_dynamic(arg)))
    }

    fn eval(
        &self,
        program: &Program,
        input: Input<'_>,
        may_choose: bool,
        arg: Option<Dynamic>,
    ) -> Result<(Dynamic, Outcome), ScriptError> {
        let mut scope = Scope::new();
        if let Some(arg) = arg {
            scope.push_constant_dynamic(TRANSFORMER_ARG, arg);
        }
        scope.push_dynamic("vars", Dynamic::from_map(map_to_rhai(input.vars)));
        scope.push_dynamic("profile", Dynamic::from_map(map_to_rhai(input.profile)));
        scope.push_constant_dynamic("message", to_dynamic(input.message));
        scope.push_constant_dynamic("contact", to_dynamic(input.contact));
        scope.push_constant_dynamic("session", to_dynamic(input.session));
        scope.push_constant_dynamic("env", Dynamic::from_map(map_to_rhai(input.env)));
        let running = Running::start(input.now, Instant::now() + self.limits.timeout, may_choose);
        let result = catch_unwind(AssertUnwindSafe(|| {
            self.engine
                .eval_ast_with_scope::<Dynamic>(&mut scope, &program.ast)
        }));
        let next = running.chosen();
        drop(running);
        let value = match result {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => return Err(self.run_error(&e)),
            Err(_) => {
                return Err(ScriptError {
                    message: "the script engine failed on this script".into(),
                    line: 0,
                    column: 0,
                });
            }
        };
        Ok((
            value,
            Outcome {
                vars: written_back(&mut scope, "vars")?,
                profile: written_back(&mut scope, "profile")?,
                next,
            },
        ))
    }

    /// A run-time error in the designer's words; a limit names its `scripts:` key.
    fn run_error(&self, e: &EvalAltResult) -> ScriptError {
        let (line, column) = position(e.position());
        let l = &self.limits;
        let message = match e.unwrap_inner() {
            EvalAltResult::ErrorTooManyOperations(_) => format!(
                "the script ran more than {} operations (scripts.max_operations)",
                l.max_operations
            ),
            EvalAltResult::ErrorTerminated(..) => format!(
                "the script ran longer than {:?} (scripts.timeout)",
                l.timeout
            ),
            EvalAltResult::ErrorStackOverflow(_) => format!(
                "the script called functions more than {} deep (scripts.max_call_depth)",
                l.max_call_depth
            ),
            EvalAltResult::ErrorDataTooLarge(what, _) => {
                if what.starts_with("Length of string") {
                    format!(
                        "a string, or the text in one array or map, grew over {} bytes (scripts.max_string_size)",
                        l.max_string_size
                    )
                } else if what.starts_with("Size of array") {
                    format!(
                        "an array grew over {} items (scripts.max_array_size)",
                        l.max_array_size
                    )
                } else {
                    format!(
                        "a map grew over {} entries (scripts.max_map_size)",
                        l.max_map_size
                    )
                }
            }
            EvalAltResult::ErrorTooManyVariables(_) => {
                format!("the script defined more than {MAX_VARIABLES} variables")
            }
            inner => lowercase_first(&without_positions(&inner.to_string())),
        };
        let (line, column) = match e.unwrap_inner().position() {
            p if !p.is_none() => position(p),
            _ => (line, column),
        };
        ScriptError {
            message,
            line,
            column,
        }
    }
}

/// `vars` or `profile` after the run, as JSON; it must still be a map.
fn written_back(scope: &mut Scope<'_>, name: &str) -> Result<Map<String, Value>, ScriptError> {
    let fail = |message: String| ScriptError {
        message,
        line: 0,
        column: 0,
    };
    let value = scope.remove::<Dynamic>(name).unwrap_or(Dynamic::UNIT);
    let Some(map) = value.read_lock::<RhaiMap>() else {
        return Err(fail(format!(
            "{name} must stay a map, but the script made it {}",
            value.type_name()
        )));
    };
    map_to_json(&map, name).map_err(fail)
}

fn position(p: Position) -> (usize, usize) {
    (p.line().unwrap_or(0), p.position().unwrap_or(0))
}

/// Rhai's message without its `(line 2, position 5)` parts: the caller says where.
fn without_positions(message: &str) -> String {
    static POSITION: LazyLock<Option<regex::Regex>> =
        LazyLock::new(|| regex::Regex::new(r" ?\(line \d+, position \d+\)").ok());
    match POSITION.as_ref() {
        Some(re) => re.replace_all(message, "").into_owned(),
        None => message.to_string(),
    }
}

/// `Unexpected '*'` → `unexpected '*'`: Parlance's messages start in lowercase. A word
/// in capitals (`EOF`) stays.
fn lowercase_first(message: &str) -> String {
    let mut chars = message.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => first
            .to_lowercase()
            .chain(message.chars().skip(1))
            .collect(),
        _ => message.to_string(),
    }
}
