//! Sending one outgoing message from a user's outbox, under the user's lease: paced per
//! number, its window template sent instead on 131047, retried with backoff until the
//! retry deadline, paused (not failed) on auth errors, dead-lettered when nothing helps.
//!
//! Exactly once: a message leaves the outbox in the same store step that records its
//! wamid, so after a restart the sender resumes at the first message Graph has not
//! accepted. The one case the sender cannot know is a request that went out and got
//! no answer (a timeout): Graph may have accepted it. Such a message is retried at most
//! once (counted in `parlance_messages_ambiguous_total`); a second timeout makes it a
//! dead letter rather than risk a third copy. (A process killed between Graph's answer
//! and the store's commit is the same case, and resends that message once.)

use super::codec::{self, Destination, OutgoingBody};
use super::graph::{Accepted, GraphError, Verdict, backoff, classify};
use super::pace::Admit;
use super::runtime::{Last, Number, Runtime, Sent, Step, mask, millis, now_ms};
use crate::render;
use crate::store::SentRecord;
use crate::store::durable::{AfterSent, CommitError, Lease, Millis, OutKey, Outgoing, Peek};
use serde::{Deserialize, Serialize};

/// What a dead letter's `reason` holds: the error and Meta's code (JSON, so
/// `/admin/status` can show the code).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadReason {
    pub error: String,
    pub code: Option<i64>,
    /// Send attempts made, the last (failed) one included; 0 when none was made (an
    /// unreadable or invalid payload).
    #[serde(default)]
    pub attempts: u32,
}

impl Runtime {
    /// Sends `out`, the first message of the lease's user, and records what happened;
    /// with [`Last::MayRelease`], a message Graph accepts that leaves the user nothing to
    /// do gives the lease up in the same write ([`AfterSent::Released`]).
    pub(super) async fn send(
        &self,
        number: &Number,
        lease: &Lease,
        out: Outgoing,
        last: Last,
    ) -> Sent {
        let key = &lease.key;
        // The usual case, a checked message to the Graph API: its stored JSON is posted
        // as it is. Anything else, or a failure, takes the general path below, which
        // reads the whole body.
        let mut failed = None;
        if let Some(graph) = number.transport.graph()
            && let Some(fast) = codec::OutgoingSend::read(&out.body)
        {
            self.pace(number).await;
            let token = number.token();
            match graph
                .post_json(&token, fast.payload.get().as_bytes().to_vec())
                .await
            {
                Ok(accepted) => {
                    return self
                        .sent(number, lease, &out, accepted, fast.posted(), last)
                        .await;
                }
                Err(e) => failed = Some((e, token)),
            }
        }
        let body = match codec::decode::<OutgoingBody>(&out.body) {
            Ok(b) => b,
            Err(e) => {
                let why = format!("this build cannot read the queued message: {e}");
                return self
                    .give_up(number, lease, &out, None, why, None, false)
                    .await;
            }
        };
        match body.to {
            Destination::Graph => {}
            Destination::Agent => return self.deliver_to_agent(number, lease, &out, &body).await,
        }
        let mut payload = &body.payload;
        let mut swapped = false;
        loop {
            let (e, token) = match failed.take() {
                Some(failed) => failed,
                None => {
                    if let Err(problems) = render::check(payload) {
                        let why = format!(
                            "the payload breaks WhatsApp's schema: {}",
                            problems.join("; ")
                        );
                        return self
                            .give_up(number, lease, &out, Some(&body), why, None, false)
                            .await;
                    }
                    self.pace(number).await;
                    let token = number.token();
                    match number.transport.post(&token, payload).await {
                        Ok(accepted) => {
                            let wamid = accepted.message_id.clone();
                            let sent = self
                                .sent(number, lease, &out, accepted, body.posted(swapped), last)
                                .await;
                            if sent.sent_at.is_some() {
                                self.dev_sent(number, key, &wamid, payload, &body, out.at.turn);
                            }
                            return sent;
                        }
                        Err(e) => (e, token),
                    }
                }
            };
            let now = now_ms();
            let verdict = classify(e.status, e.code);
            match verdict {
                Verdict::WindowClosed if !swapped && body.instead.is_some() => {
                    tracing::info!(to = %mask(&key.user), node = %body.node, "window closed (131047): sending the node's template instead");
                    if let Some(t) = &body.instead {
                        payload = t;
                    }
                    swapped = true;
                }
                Verdict::Auth => {
                    let why = format!("sending is paused: {}", e.brief());
                    self.trace.attempt_failed(key, out.at, &why);
                    number.pause(&token, e.to_string());
                    return stop();
                }
                Verdict::Retry | Verdict::RetryRecipient => {
                    return self
                        .retry(number, lease, &out, &body, verdict, &e, now)
                        .await;
                }
                Verdict::WindowClosed | Verdict::Permanent => {
                    self.trace.failed(key, out.at, &e.brief());
                    self.dev_failed(number, key, payload, &body, out.at, &e.brief());
                    return self
                        .give_up(
                            number,
                            lease,
                            &out,
                            Some(&body),
                            e.to_string(),
                            e.code,
                            true,
                        )
                        .await;
                }
            }
        }
    }

    /// Graph accepted `out`: records it as sent with its wamid (which takes it out of
    /// the outbox) and says what comes next.
    async fn sent(
        &self,
        number: &Number,
        lease: &Lease,
        out: &Outgoing,
        accepted: Accepted,
        posted: Posted<'_>,
        last: Last,
    ) -> Sent {
        let key = &lease.key;
        let now = now_ms();
        self.trace
            .sent(key, out.at, &accepted.message_id, posted.swapped);
        let sent = SentRecord {
            message_id: accepted.message_id,
            key: key.clone(),
            flow: posted.flow.to_string(),
            node: posted.node.to_string(),
            at: now,
        };
        self.metrics.messages_sent.inc();
        let recorded = match last {
            Last::Hold => number
                .store
                .mark_sent(lease, now, out.at, sent)
                .await
                .map(AfterSent::Holding),
            Last::MayRelease => {
                number
                    .store
                    .mark_sent_releasing(lease, now, out.at, sent)
                    .await
            }
        };
        match recorded {
            Ok(next) => Sent {
                sent_at: Some(now),
                then: Step::Again,
                next,
            },
            Err(e) => {
                // Graph has it; the outbox still says unsent. The next attempt is the
                // crash case (see the module docs).
                tracing::error!(number = %key.phone_number_id, error = %e, "a sent message could not be recorded as sent");
                stop()
            }
        }
    }

    /// Posts a handover event to the bot's agent webhook (`handover.webhook`, read at
    /// each attempt so a reload's new URL or secret takes effect). Delivered, it leaves
    /// the outbox with a sent record named `agent:<random>` (flow `handover`, node =
    /// the event; no status ever names it), so the user's later messages go on; a refusal (4xx but 408
    /// and 429) is a dead letter at once, anything else is retried with the Graph
    /// sends' backoff until the retry deadline. At least once: a receiver dedupes by
    /// the event's `id`.
    async fn deliver_to_agent(
        &self,
        number: &Number,
        lease: &Lease,
        out: &Outgoing,
        body: &OutgoingBody,
    ) -> Sent {
        let Some(settings) = number.live.bot().settings.handover.clone() else {
            let why = "parlance.yaml has no handover.webhook any more; the agent event cannot be delivered".to_string();
            return self
                .give_up(number, lease, out, Some(body), why, None, false)
                .await;
        };
        let result = number.agent.post(&settings, &body.payload).await;
        let now = now_ms();
        let e = match result {
            Ok(()) => {
                let sent = SentRecord {
                    message_id: super::agent_hook::random_id("agent:"),
                    key: lease.key.clone(),
                    flow: body.flow.clone(),
                    node: body.node.clone(),
                    at: now,
                };
                return match number.store.mark_sent(lease, now, out.at, sent).await {
                    Ok(next) => Sent {
                        sent_at: None,
                        then: Step::Again,
                        next: AfterSent::Holding(next),
                    },
                    Err(e) => {
                        log_write_error(&lease.key.phone_number_id, out.at, &e);
                        stop()
                    }
                };
            }
            Err(e) => e,
        };
        if !e.retry {
            return self
                .give_up(number, lease, out, Some(body), e.to_string(), None, true)
                .await;
        }
        let wait = millis(backoff(Verdict::Retry, out.attempts));
        let deadline = body
            .queued_at
            .saturating_add(millis(self.settings.retry_deadline));
        if now + wait > deadline {
            let why = format!(
                "{e}; still failing {} after it was queued",
                humantime::format_duration(self.settings.retry_deadline)
            );
            return self
                .give_up(number, lease, out, Some(body), why, None, true)
                .await;
        }
        tracing::info!(number = %lease.key.phone_number_id, to = %mask(&lease.key.user), error = %e, attempt = out.attempts + 1, wait_ms = wait, "retrying an agent webhook delivery");
        match number
            .store
            .mark_attempt(lease, now, out.at, false, now + wait)
            .await
        {
            Ok(()) => Sent {
                sent_at: None,
                then: Step::Again,
                next: AfterSent::Holding(Peek::NotLooked),
            },
            Err(e) => {
                log_write_error(&lease.key.phone_number_id, out.at, &e);
                stop()
            }
        }
    }

    /// Waits for a send slot of the number's pace: shared by every instance when the
    /// store is (Redis, asked for every send waiting at once: `pace`), else this
    /// process's own.
    async fn pace(&self, number: &Number) {
        if number.store.single_process() {
            return number.limiter.until_ready().await;
        }
        let per_second = number.live.bot().settings.whatsapp.max_messages_per_second;
        let admit = number
            .pace
            .slot(&number.store, &number.phone_number_id, per_second)
            .await;
        match admit {
            Admit::Shared => {}
            Admit::Local => number.limiter.until_ready().await,
        }
    }

    /// A retryable failure: try again after the backoff, unless that passes the retry
    /// deadline or the message already timed out once (then it is a dead letter).
    #[allow(clippy::too_many_arguments)]
    async fn retry(
        &self,
        number: &Number,
        lease: &Lease,
        out: &Outgoing,
        body: &OutgoingBody,
        verdict: Verdict,
        e: &GraphError,
        now: Millis,
    ) -> Sent {
        if e.ambiguous {
            self.metrics.messages_ambiguous.inc();
            if out.ambiguous >= 1 {
                let why = format!(
                    "{e}; it timed out twice and Graph may have accepted it, so it is not sent a third time"
                );
                return self
                    .give_up(number, lease, out, Some(body), why, e.code, true)
                    .await;
            }
        }
        let wait = millis(backoff(verdict, out.attempts));
        let deadline = body
            .queued_at
            .saturating_add(millis(self.settings.retry_deadline));
        if now + wait > deadline {
            let why = format!(
                "{e}; still failing {} after it was queued",
                humantime::format_duration(self.settings.retry_deadline)
            );
            return self
                .give_up(number, lease, out, Some(body), why, e.code, true)
                .await;
        }
        self.metrics.messages_retried.inc();
        let why = format!("retrying: {}", e.brief());
        self.trace.attempt_failed(&lease.key, out.at, &why);
        tracing::info!(number = %lease.key.phone_number_id, error = %e, attempt = out.attempts + 1, wait_ms = wait, "retrying a send");
        match number
            .store
            .mark_attempt(lease, now, out.at, e.ambiguous, now + wait)
            .await
        {
            Ok(()) => Sent {
                sent_at: None,
                then: Step::Again,
                next: AfterSent::Holding(Peek::NotLooked),
            },
            Err(e) => {
                log_write_error(&lease.key.phone_number_id, out.at, &e);
                stop()
            }
        }
    }

    /// Makes the message a dead letter: kept in the store, listed in `/admin/status`,
    /// replayable.
    #[allow(clippy::too_many_arguments)]
    async fn give_up(
        &self,
        number: &Number,
        lease: &Lease,
        out: &Outgoing,
        body: Option<&OutgoingBody>,
        error: String,
        code: Option<i64>,
        sent: bool,
    ) -> Sent {
        self.metrics.messages_failed.inc();
        // Failed already, with Graph's own words, when Graph refused it.
        self.trace.failed(&lease.key, out.at, &error);
        let node = body.map_or_else(|| "?".to_string(), |b| format!("{}.{}", b.flow, b.node));
        tracing::error!(number = %number.phone_number_id, to = %mask(&lease.key.user), %node, %error, "message not delivered: kept as a dead letter");
        let attempts = out.attempts + u32::from(sent);
        let reason = codec::encode(&DeadReason {
            error,
            code,
            attempts,
        });
        match number
            .store
            .dead_letter(lease, now_ms(), out.at, &reason)
            .await
        {
            Ok(()) => Sent {
                sent_at: None,
                then: Step::Again,
                next: AfterSent::Holding(Peek::NotLooked),
            },
            Err(e) => {
                log_write_error(&number.phone_number_id, out.at, &e);
                stop()
            }
        }
    }
}

/// What Graph accepted: the flow and node that wrote the message, and whether the
/// node's template went instead (the 24-hour window had closed).
struct Posted<'a> {
    flow: &'a str,
    node: &'a str,
    swapped: bool,
}

impl codec::OutgoingSend<'_> {
    fn posted(&self) -> Posted<'_> {
        Posted {
            flow: &self.flow,
            node: &self.node,
            swapped: false,
        }
    }
}

impl OutgoingBody {
    fn posted(&self, swapped: bool) -> Posted<'_> {
        Posted {
            flow: &self.flow,
            node: &self.node,
            swapped,
        }
    }
}

fn stop() -> Sent {
    Sent {
        sent_at: None,
        then: Step::Stop,
        next: AfterSent::Holding(Peek::NotLooked),
    }
}

fn log_write_error(number: &str, at: OutKey, e: &CommitError) {
    match e {
        CommitError::Fenced => {
            tracing::info!(%number, turn = at.turn, "the user's lease passed to another instance")
        }
        CommitError::Store(e) => {
            tracing::warn!(%number, error = %e, "cannot record a send attempt; it is retried")
        }
    }
}
