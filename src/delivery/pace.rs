//! Waiting for a send slot of a number's pace when the pace is shared by instances
//! (the store paces, `Durable::take_send_slots`): the sends of this instance that wait
//! at the same moment are served by one request for all of them, so under load the
//! pace costs a round trip per batch of sends instead of one per send. Each slot is
//! taken as a single take at that moment would be and goes to a waiting send at once,
//! so the pace holds as strictly as with one take per send.

use crate::store::durable::{Durable, Pace};
use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;

/// How a waiting send may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    /// It took a slot of the shared pace.
    Shared,
    /// The store could not be asked (or paces no number): the caller paces in process.
    Local,
}

/// The sends of one number waiting for a slot.
#[derive(Debug, Default)]
pub(super) struct PaceGate {
    state: Mutex<Gate>,
}

#[derive(Debug, Default)]
struct Gate {
    /// In the order they came.
    waiting: VecDeque<oneshot::Sender<Admit>>,
    /// A task is asking the store for slots for `waiting` (one at a time).
    asking: bool,
}

/// The longest wait between asks, whatever the store says.
const WAIT_AT_MOST: Duration = Duration::from_secs(1);

impl PaceGate {
    fn lock(&self) -> MutexGuard<'_, Gate> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot of `number`'s pace of `per_second`, shared through `store`.
    pub(super) async fn slot(
        self: &Arc<Self>,
        store: &Arc<dyn Durable>,
        number: &str,
        per_second: u32,
    ) -> Admit {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut gate = self.lock();
            gate.waiting.push_back(tx);
            !std::mem::replace(&mut gate.asking, true)
        };
        if start {
            // On a task of its own: a waiter that gives up (its send cancelled) must
            // not leave the others without anyone asking.
            tokio::spawn(Arc::clone(self).ask(Arc::clone(store), number.to_string(), per_second));
        }
        rx.await.unwrap_or(Admit::Local)
    }

    /// Asks the store for slots until nobody waits.
    async fn ask(self: Arc<Self>, store: Arc<dyn Durable>, number: String, per_second: u32) {
        let mut asker = Asker {
            gate: Arc::clone(&self),
            done: false,
        };
        loop {
            let wanted = {
                let mut gate = self.lock();
                gate.waiting.retain(|tx| !tx.is_closed());
                let Some(wanted) =
                    NonZeroU32::new(u32::try_from(gate.waiting.len()).unwrap_or(u32::MAX))
                else {
                    gate.asking = false;
                    asker.done = true;
                    return;
                };
                wanted
            };
            match store.take_send_slots(&number, per_second, wanted).await {
                Ok(Some(Pace::Go(n))) => self.admit(n.get(), Admit::Shared),
                Ok(Some(Pace::Wait(ms))) => {
                    let wait = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
                    tokio::time::sleep(wait.min(WAIT_AT_MOST)).await;
                }
                Ok(None) => self.admit(u32::MAX, Admit::Local),
                Err(e) => {
                    tracing::warn!(error = %e, "the shared pace cannot be read; pacing in this process");
                    self.admit(u32::MAX, Admit::Local);
                }
            }
        }
    }

    /// Lets the first `n` waiting sends go.
    fn admit(&self, n: u32, how: Admit) {
        let mut gate = self.lock();
        let n = usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(gate.waiting.len());
        for tx in gate.waiting.drain(..n) {
            // One that gave up meanwhile wastes its slot: the pace only runs slower.
            let _ = tx.send(how);
        }
    }
}

/// The asking task, should it end before nobody waits (a panic, the runtime shutting
/// down): the waiting sends pace in process, and the next one to wait asks again.
struct Asker {
    gate: Arc<PaceGate>,
    /// It ended because nobody waits (and said so in the gate).
    done: bool,
}

impl Drop for Asker {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut gate = self.gate.lock();
        gate.asking = false;
        for tx in gate.waiting.drain(..) {
            let _ = tx.send(Admit::Local);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::durable::redis::RedisDurable;
    use std::time::Instant;

    /// A store on the Redis at `REDIS_URL` (CI sets it) under a key prefix of its own.
    /// (A pace key expires by itself a second after its last slot.)
    async fn redis_store() -> Arc<dyn Durable> {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let prefix = format!("parlance-test:pace-{}-{nanos}:", std::process::id());
        let store = RedisDurable::connect(&url, &prefix)
            .await
            .expect("Redis at REDIS_URL (default redis://127.0.0.1:6379) must be reachable");
        Arc::new(store)
    }

    /// Sends waiting together all go through the gate, each at its slot of the shared
    /// pace: 5 a second lets 5 go at once, then one every 200 ms.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_sends_go_at_the_pace() {
        let store = redis_store().await;
        let number = "1001";
        let gate = Arc::new(PaceGate::default());
        let started = Instant::now();
        let sends: Vec<_> = (0..8)
            .map(|_| {
                let (gate, store) = (Arc::clone(&gate), Arc::clone(&store));
                tokio::spawn(async move {
                    let admit = gate.slot(&store, number, 5).await;
                    (admit, started.elapsed())
                })
            })
            .collect();
        let mut times = Vec::new();
        for send in sends {
            let (admit, at) = send.await.expect("a send");
            assert_eq!(admit, Admit::Shared);
            times.push(at);
        }
        times.sort();
        // Redis counts in whole ms; a little slack for rounding.
        for (i, at) in times.iter().enumerate().skip(5) {
            let slot = Duration::from_millis(200 * (i as u64 - 4));
            assert!(
                *at + Duration::from_millis(5) >= slot,
                "send {i} went after {at:?}, before its slot at {slot:?}: {times:?}"
            );
        }
        assert!(!gate.lock().asking, "nobody left asking once all went");
    }

    /// A send that gives up while it waits (its task cancelled) takes no slot from
    /// the ones after it, and never leaves them without anyone asking.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_send_that_gives_up_leaves_the_others_going() {
        let store = redis_store().await;
        let number = "1001";
        let gate = Arc::new(PaceGate::default());
        // 1 a second: one goes at once, the next one a second later, the one after
        // that two seconds later.
        assert_eq!(gate.slot(&store, number, 1).await, Admit::Shared);
        let gives_up = {
            let (gate, store) = (Arc::clone(&gate), Arc::clone(&store));
            tokio::spawn(async move { gate.slot(&store, number, 1).await })
        };
        // Once it waits (the gate is asking for it), it gives up.
        while !gate.lock().asking {
            tokio::task::yield_now().await;
        }
        gives_up.abort();
        let started = Instant::now();
        assert_eq!(gate.slot(&store, number, 1).await, Admit::Shared);
        assert!(
            started.elapsed() < Duration::from_millis(1800),
            "the slot the cancelled send did not use goes to the next one, not the one after"
        );
    }
}
