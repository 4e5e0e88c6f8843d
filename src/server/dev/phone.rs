//! The simulated phone: what WhatsApp would report by itself about local numbers.
//!
//! - Every message the local sink sends gets a `sent` status at once and `delivered`
//!   just after; `read` comes when the page marks the chat read
//!   (`POST /dev/api/users/{user}/read`). Each status goes through the webhook's own
//!   status path (`Runtime::accept_webhook`), so the store keeps it as it keeps
//!   Meta's, and the trace and agent webhooks see it.
//! - Every (re)load of a local bot becomes a `reload` event, with the diagnostics of a
//!   broken edit.

use crate::delivery::dev_hub::DevEvent;
use crate::delivery::runtime::Runtime;
use crate::store::SessionKey;
use crate::whatsapp::inbound::Item;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How long after `sent` a message is `delivered`: long enough for the page to show
/// the single tick first.
pub const DELIVERED_AFTER: Duration = Duration::from_millis(300);

/// Starts the phone and the reload notices for the runtime's local numbers (none:
/// nothing starts). Call once, inside the Tokio runtime.
pub fn spawn(runtime: &Arc<Runtime>) {
    let locals: Vec<_> = runtime
        .numbers()
        .filter(|n| n.transport.is_local())
        .cloned()
        .collect();
    if locals.is_empty() {
        return;
    }
    for number in locals {
        let hub = Arc::clone(&runtime.dev);
        let mut reports = number.live.reports();
        tokio::spawn(async move {
            while reports.changed().await.is_ok() {
                let report = reports.borrow_and_update().clone();
                hub.publish(DevEvent::Reload {
                    phone_number_id: number.phone_number_id.clone(),
                    ok: report.ok,
                    version: report.version,
                    diagnostics: super::info::diagnostics(&report, &number.live.dir),
                });
            }
        });
    }
    let runtime = Arc::clone(runtime);
    let mut events = runtime.dev.subscribe();
    tokio::spawn(async move {
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                // Statuses of the messages missed are not reported; the page still
                // shows the messages (from their `message` events' history).
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "the simulated phone fell behind; some messages get no status"
                    );
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let DevEvent::Message {
                user,
                phone_number_id,
                wamid,
                ..
            } = event
            else {
                continue;
            };
            let runtime = Arc::clone(&runtime);
            tokio::spawn(async move {
                let key = SessionKey::new(&phone_number_id, &user);
                status(&runtime, &key, &wamid, "sent").await;
                tokio::time::sleep(DELIVERED_AFTER).await;
                status(&runtime, &key, &wamid, "delivered").await;
            });
        }
    });
}

/// WhatsApp reports `status` for the bot's message `wamid` to the user: through the
/// webhook's status path, then to the page. A status the store cannot keep is still
/// shown (the page is what the designer looks at) and logged.
pub async fn status(runtime: &Arc<Runtime>, key: &SessionKey, wamid: &str, status: &str) {
    let at = runtime.dev.now_ms().div_euclid(1000);
    let item = Item::Status {
        phone_number_id: Some(key.phone_number_id.clone()),
        message_id: wamid.to_string(),
        status: status.to_string(),
        recipient: Some(key.user.clone()),
        at,
        errors: Vec::new(),
        biz_opaque_callback_data: None,
    };
    if let Err(e) = runtime.accept_webhook(vec![item]).await {
        tracing::warn!(error = %e, status, "a simulated status could not be stored");
    }
    runtime.dev.status(key, wamid, status, None);
}
