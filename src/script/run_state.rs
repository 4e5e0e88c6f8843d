//! What one script run knows beyond its scope: the turn's time, its deadline and the
//! node it chose. The Rhai engine is shared by every run (it lives in the compiled
//! `Bot`), so this per-run state sits in a thread-local for the run's duration: a run
//! is synchronous, starts and ends on one thread, and never starts another run.

use std::cell::RefCell;
use std::time::Instant;

struct RunState {
    now: i64,
    deadline: Instant,
    /// Whether `next_node()` may be called (script nodes; not transformers).
    may_choose: bool,
    next: Option<String>,
    /// Variable accesses so far, to look at the values' sizes now and then.
    accesses: u64,
}

thread_local! {
    static RUN: RefCell<Option<RunState>> = const { RefCell::new(None) };
}

/// Marks a run as in progress on this thread until dropped (also when the run panics).
pub struct Running {
    previous: Option<RunState>,
}

impl Running {
    pub fn start(now: i64, deadline: Instant, may_choose: bool) -> Self {
        let state = RunState {
            now,
            deadline,
            may_choose,
            next: None,
            accesses: 0,
        };
        let previous = RUN.with(|r| r.borrow_mut().replace(state));
        Running { previous }
    }

    /// The node the script chose with `next_node()`, if it did.
    pub fn chosen(&self) -> Option<String> {
        RUN.with(|r| r.borrow_mut().as_mut().and_then(|s| s.next.take()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let previous = self.previous.take();
        RUN.with(|r| *r.borrow_mut() = previous);
    }
}

/// The running script's turn time.
pub fn now() -> Option<i64> {
    RUN.with(|r| r.try_borrow().ok()?.as_ref().map(|s| s.now))
}

/// Records the running script's `next_node`; `false` when no run that may choose is in
/// progress.
pub fn set_next(node: &str) -> bool {
    RUN.with(|r| {
        let Ok(mut state) = r.try_borrow_mut() else {
            return false;
        };
        match state.as_mut() {
            Some(s) if s.may_choose => {
                s.next = Some(node.to_string());
                true
            }
            Some(_) | None => false,
        }
    })
}

/// Whether the running script is past its deadline.
pub fn past_deadline() -> bool {
    RUN.with(|r| {
        r.try_borrow()
            .ok()
            .and_then(|s| s.as_ref().map(|s| Instant::now() >= s.deadline))
            .unwrap_or(false)
    })
}

/// Counts a variable access; true every `every`th one.
pub fn count_access(every: u64) -> bool {
    RUN.with(|r| {
        let Ok(mut state) = r.try_borrow_mut() else {
            return false;
        };
        match state.as_mut() {
            Some(s) => {
                s.accesses += 1;
                s.accesses % every == 0
            }
            None => false,
        }
    })
}
