//! How far one script run may go (`scripts:` in parlance.yaml), with the defaults.

use std::time::Duration;

/// Bounds on every script run. Each one stops a different runaway: `loop {}`
/// (operations, wall time), deep recursion (call depth), a deeply nested expression
/// (expression depth, checked when the bot loads), and values that grow without end
/// (string, array and map sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most operations (roughly: expressions and statements evaluated) in one run.
    pub max_operations: u64,
    /// Deepest nesting of function calls.
    pub max_call_depth: usize,
    /// Deepest nesting of an expression, at the top level and inside functions.
    pub max_expr_depth: usize,
    /// Longest string, in bytes (strings inside one array or map count together).
    pub max_string_size: usize,
    /// Most items of an array (nested arrays count together).
    pub max_array_size: usize,
    /// Most entries of a map (nested maps count together).
    pub max_map_size: usize,
    /// Longest wall time of one run.
    pub timeout: Duration,
}

pub const DEFAULT_MAX_OPERATIONS: u64 = 100_000;
pub const DEFAULT_MAX_CALL_DEPTH: usize = 16;
pub const DEFAULT_MAX_EXPR_DEPTH: usize = 32;
pub const DEFAULT_MAX_STRING_SIZE: usize = 64 * 1024;
pub const DEFAULT_MAX_ARRAY_SIZE: usize = 10_000;
pub const DEFAULT_MAX_MAP_SIZE: usize = 10_000;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
/// The longest `scripts.timeout` accepted: a script runs inside a turn, and a turn that
/// takes seconds is a bug, not a computation.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(1);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: DEFAULT_MAX_OPERATIONS,
            max_call_depth: DEFAULT_MAX_CALL_DEPTH,
            max_expr_depth: DEFAULT_MAX_EXPR_DEPTH,
            max_string_size: DEFAULT_MAX_STRING_SIZE,
            max_array_size: DEFAULT_MAX_ARRAY_SIZE,
            max_map_size: DEFAULT_MAX_MAP_SIZE,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}
