//! What `parlance chat` does with effects: `http` nodes make their real calls through
//! [`http::Caller`] (or none with `--no-http`), each one noted for the chat to show.
//! Chat is synchronous; it blocks on each call in a runtime of its own.

use crate::engine::{Effect, EffectOutcome, HttpErrorKind, HttpFailure, Perform};
use crate::flow::settings::HttpSettings;
use crate::http::{self, Caller};
use std::collections::VecDeque;
use std::time::Instant;

pub(super) struct ChatEffects {
    /// `None` with `--no-http`.
    caller: Option<Caller>,
    runtime: tokio::runtime::Runtime,
    /// One line per call, in order: what the chat prints where the turn made it.
    pub calls: VecDeque<String>,
}

impl ChatEffects {
    pub fn new(settings: &HttpSettings, calls_on: bool) -> Result<ChatEffects, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime for http calls: {e}"))?;
        let caller = if calls_on {
            Some(Caller::new(settings)?)
        } else {
            None
        };
        Ok(ChatEffects {
            caller,
            runtime,
            calls: VecDeque::new(),
        })
    }

    /// Runs the call to its end. Inside another runtime (chat run from async code)
    /// `block_on` would panic, so the call then runs on a thread of its own.
    fn call(&self, caller: &Caller, request: &crate::engine::HttpRequest) -> EffectOutcome {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.runtime.block_on(caller.call(request));
        }
        std::thread::scope(|s| {
            s.spawn(|| self.runtime.block_on(caller.call(request)))
                .join()
                .unwrap_or_else(|_| {
                    EffectOutcome::HttpFailed(HttpFailure {
                        kind: HttpErrorKind::Connect,
                        status: None,
                        message: "the call stopped unexpectedly".into(),
                        response: None,
                    })
                })
        })
    }
}

impl Perform for ChatEffects {
    fn perform(&mut self, effect: &Effect) -> EffectOutcome {
        let request = match effect {
            Effect::Http(request) => request,
            // No agent inbox in the simulator: the handover starts (its `say` is
            // shown) and later messages are shown as forwarded; `/reset` ends it.
            Effect::Handover { .. } => return EffectOutcome::HandoverStarted,
        };
        let what = format!(
            "{} {}",
            request.method.as_str(),
            http::shown_url(&request.url)
        );
        let Some(caller) = &self.caller else {
            self.calls
                .push_back(format!("(http {what}: not called, --no-http)"));
            return EffectOutcome::HttpFailed(HttpFailure {
                kind: HttpErrorKind::NotCalled,
                status: None,
                message: "http calls are off (parlance chat --no-http)".into(),
                response: None,
            });
        };
        let started = Instant::now();
        let outcome = self.call(caller, request);
        let ms = started.elapsed().as_millis();
        let result = match &outcome {
            EffectOutcome::Http(value) => value
                .get("status")
                .map(|s| s.to_string())
                .unwrap_or_default(),
            EffectOutcome::HttpFailed(f) => match f.status {
                Some(status) => format!("{status}, {}: {}", f.kind.as_str(), f.message),
                None => format!("{}: {}", f.kind.as_str(), f.message),
            },
            EffectOutcome::HandoverStarted
            | EffectOutcome::Unavailable
            | EffectOutcome::Failed(_)
            | EffectOutcome::Unsupported => String::new(),
        };
        self.calls
            .push_back(format!("(http {what} → {result}, {ms} ms)"));
        outcome
    }
}
