//! Finding work nobody is doing: after a restart, when another instance died (its
//! leases expire), when a retry's backoff or a `wait` falls due, when a number's
//! sending resumes. Every `scan_every` the scanner fires due timers and kicks a worker
//! for each user with work whose lease is free; every hour it forgets old dedupe keys
//! and sent records.

use super::runtime::{Runtime, now_ms};
use std::sync::Arc;
use std::time::Duration;

/// How many users one scan of one store starts at most (the rest wait for the next).
const USERS_PER_SCAN: usize = 512;
/// How many due timers one scan of one store fires at most.
const TIMERS_PER_SCAN: usize = 512;

/// Meta redelivers for up to 7 days: dedupe keys and sent records older than this go.
pub const KEEP_MESSAGE_IDS: Duration = Duration::from_secs(8 * 24 * 3600);
const PURGE_EVERY: Duration = Duration::from_secs(3600);

impl Runtime {
    /// Runs the scanner until shutdown begins.
    pub fn spawn_scanner(self: &Arc<Self>) {
        let runtime = Arc::clone(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(runtime.settings.scan_every);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut purged_at: Option<tokio::time::Instant> = None;
            loop {
                every.tick().await;
                if runtime.closed().is_some() {
                    return;
                }
                runtime.scan_once().await;
                if purged_at.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
                    purged_at = Some(tokio::time::Instant::now());
                    runtime.purge().await;
                }
            }
        });
    }

    /// One scan of every store.
    pub async fn scan_once(self: &Arc<Self>) {
        for store in self.stores() {
            let now = now_ms();
            let on_store: Vec<_> = self
                .numbers()
                .filter(|n| Arc::ptr_eq(&n.store, store))
                .collect();
            // Timers of local numbers are set on the `/dev` clock (see
            // `Runtime::engine_ms`): a store only they use fires on it too.
            let local_only = on_store.iter().all(|n| n.transport.is_local());
            let timers_now = if local_only {
                self.dev.sim_ms(now)
            } else {
                now
            };
            match store.fire_due_timers(timers_now, TIMERS_PER_SCAN).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(fired = n, "timers fell due"),
                Err(e) => tracing::warn!(error = %e, "cannot fire due timers"),
            }
            // Only users this instance can serve now: the numbers on this store whose
            // sending is not paused. Another bot's number on a shared Redis, or a
            // paused one with thousands of users waiting, must not fill the scan and
            // hold back everyone else's work (a `wait`, a retry, a dead instance's).
            let serving: Vec<String> = on_store
                .iter()
                .filter(|n| n.paused().is_none())
                .map(|n| n.phone_number_id.clone())
                .collect();
            if serving.is_empty() {
                continue;
            }
            let users = match store
                .users_with_work(now, USERS_PER_SCAN, Some(&serving))
                .await
            {
                Ok(users) => users,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look for pending work");
                    continue;
                }
            };
            for key in users {
                // Another bot's number on a shared Redis, or one whose sending is
                // paused: not this instance's work now.
                let Some(number) = self.number(&key.phone_number_id) else {
                    continue;
                };
                if number.paused().is_some() || self.is_working(&key) {
                    continue;
                }
                self.kick(&key);
            }
        }
    }

    async fn purge(&self) {
        let before = now_ms() - super::runtime::millis(KEEP_MESSAGE_IDS);
        for store in self.stores() {
            match store.purge(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "forgot old message ids"),
                Err(e) => tracing::warn!(error = %e, "purge failed"),
            }
        }
    }
}
