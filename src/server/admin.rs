//! Whose key opens what in the admin routes. Each bot folder's `api.key` opens that
//! bot's number only; with several bots the given key is compared with every key, in
//! constant time and without stopping at the first match, so neither timing nor the
//! answer tells an attacker how close a guess was or how many bots there are. Meta's
//! verify token is compared the same way.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// One bot's admin key and the phone number id it opens.
pub struct AdminKey {
    pub phone_number_id: String,
    /// SHA-256 of the key: fixed length, so comparing does not reveal the key's length.
    digest: [u8; 32],
}

impl AdminKey {
    pub fn new(phone_number_id: &str, key: &str) -> Self {
        AdminKey {
            phone_number_id: phone_number_id.to_string(),
            digest: Sha256::digest(key.as_bytes()).into(),
        }
    }
}

/// Whether `given` equals one of `secrets`, compared like admin keys: every one, in
/// constant time (Meta's verify token in the webhook handshake).
pub fn any_equal<'a>(secrets: impl IntoIterator<Item = &'a str>, given: &str) -> bool {
    let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
    let mut found = subtle::Choice::from(0);
    for secret in secrets {
        let theirs: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        found |= theirs.ct_eq(&digest);
    }
    found.into()
}

/// The numbers the `given` key opens (none without a key).
pub fn opened_numbers<'a>(keys: &'a [AdminKey], given: Option<&str>) -> Vec<&'a str> {
    let Some(given) = given else {
        return Vec::new();
    };
    let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
    let mut opened = Vec::new();
    for key in keys {
        // Every key is compared; the branch only collects results already computed.
        let same: bool = key.digest.ct_eq(&digest).into();
        if same {
            opened.push(key.phone_number_id.as_str());
        }
    }
    opened
}

/// A dead letter as `/admin/status` shows it: where it was going, which node sent it,
/// why it was given up on, and the exact payload (`id` is for the replay route).
pub fn dead_letter_json(d: &crate::store::durable::DeadLetter) -> serde_json::Value {
    use crate::delivery::codec::{self, OutgoingBody};
    use crate::delivery::sender::DeadReason;
    let body = codec::decode::<OutgoingBody>(&d.body).ok();
    let reason = serde_json::from_str::<DeadReason>(&d.reason).unwrap_or(DeadReason {
        error: d.reason.clone(),
        code: None,
        attempts: d.attempts,
    });
    serde_json::json!({
        "id": d.id,
        "phone_number_id": d.key.phone_number_id,
        "to": d.key.user,
        "node": body.as_ref().map(|b| format!("{}.{}", b.flow, b.node)),
        "at": d.since.div_euclid(1000),
        "attempts": reason.attempts.max(d.attempts),
        "error": reason.error,
        "error_code": reason.code,
        "payload": body.map(|b| b.payload),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_opens_the_numbers_it_belongs_to() {
        let keys = [
            AdminKey::new("1001", "key-a"),
            AdminKey::new("2002", "key-b"),
            AdminKey::new("3003", "key-a"),
        ];
        assert_eq!(opened_numbers(&keys, Some("key-a")), ["1001", "3003"]);
        assert_eq!(opened_numbers(&keys, Some("key-b")), ["2002"]);
        assert!(opened_numbers(&keys, Some("key-")).is_empty());
        assert!(opened_numbers(&keys, Some("")).is_empty());
        assert!(opened_numbers(&keys, None).is_empty());
    }

    #[test]
    fn any_equal_finds_a_secret_among_several() {
        assert!(any_equal(["a", "let-me-in"], "let-me-in"));
        assert!(!any_equal(["a", "let-me-in"], "let-me-i"));
        assert!(!any_equal([], "x"));
    }
}
