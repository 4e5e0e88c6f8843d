//! Serve-time settings of `parlance.yaml`: whether this build can serve the bot as
//! configured. The loader runs these checks, so `validate`, `serve` and hot reload give
//! the same answer: a bot `validate` passes is one `serve` runs.
//!
//! - WhatsApp credentials come whole or not at all: a token without a phone number id
//!   (or the reverse) is an error, never a silent fall-back to local mode.
//! - A number that can send checks webhook signatures: `app_secret` is required with
//!   `access_token`, unless `allow_unsigned: true` (test setups only).
//! - Meta cannot verify the callback URL without a `verify_token`: required too.
//! - `session.store` is parsed by the same function that `serve` opens it with.

use crate::diag::{Code, Diagnostic};
use crate::source::{SourceFile, YamlPath};
use crate::spec::config::RawWhatsApp;

/// Checks the credentials of `whatsapp:` as written (empty values count as absent:
/// `${WA_ACCESS_TOKEN:-}` is how a bot says "local unless the variable is set").
pub(crate) fn check_whatsapp(file: &SourceFile, wa: &RawWhatsApp, diags: &mut Vec<Diagnostic>) {
    // A value already reported (an unset `${NAME}`, say) would only repeat that error.
    let reported = diags
        .iter()
        .any(|d| d.file == file.display && d.path.starts_with("whatsapp"));
    if reported {
        return;
    }
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    let at = YamlPath::root().key("whatsapp");
    let token = set(&wa.access_token);
    let number = set(&wa.phone_number_id);
    let mut missing = |key: &str, why: &str, hint: &str| {
        diags.push(
            file.diag_at_key(
                &at,
                Code::MissingField,
                format!("`{key}` is missing: {why}"),
            )
            .with_hint(hint.to_string()),
        );
    };
    match (token, number) {
        (true, false) => missing(
            "phone_number_id",
            "access_token is set, and sending needs the id of the number to send from",
            "set phone_number_id (WhatsApp Manager: API setup, \"Phone number ID\"), e.g. ${WA_PHONE_NUMBER_ID}; or remove access_token to run locally",
        ),
        (false, true) => missing(
            "access_token",
            "phone_number_id is set, but without a token nothing can be sent",
            "set access_token, e.g. ${WA_ACCESS_TOKEN}; or remove phone_number_id to run locally",
        ),
        (false, false) => {}
        (true, true) => {
            if !set(&wa.app_secret) && wa.allow_unsigned != Some(true) {
                missing(
                    "app_secret",
                    "a number that can send must check webhook signatures, or anyone who reaches the server makes it send messages",
                    "set app_secret: ${WA_APP_SECRET} (Meta app dashboard: App settings, Basic); for a test setup only, allow_unsigned: true",
                );
            }
            if !set(&wa.verify_token) {
                missing(
                    "verify_token",
                    "Meta cannot verify the webhook's callback URL without it",
                    "set verify_token: ${WA_VERIFY_TOKEN} and enter the same text as \"Verify token\" in Meta's app dashboard",
                );
            }
        }
    }
}

/// Checks `session.store` with [`crate::store::parse_url`], the parser `serve` uses.
pub(crate) fn check_store(file: &SourceFile, url: &str, diags: &mut Vec<Diagnostic>) {
    if let Err(e) = crate::store::parse_url(url) {
        diags.push(
            file.diag_at(
                &YamlPath::root().key("session").key("store"),
                Code::InvalidValue,
                e.message,
            )
            .with_hint(e.hint),
        );
    }
}
