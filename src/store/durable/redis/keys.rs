//! Key names. Every key of one (phone number, user) carries the Redis Cluster hash tag
//! `{number:user}`, so all of them live in one slot and a Lua script may touch them
//! together on a cluster too. Global indexes carry tags of their own (`{work}`,
//! `{timers}`, `{dead}`, `{sent}`, `{ids}`): they are hints, see `super`.
//!
//! Both parts of the tag are percent-encoded (everything but `[A-Za-z0-9._@+=-]`), so
//! the tag is unambiguous (number `a:b` with user `c` is not number `a` with user `b:c`),
//! never contains `}` (which would end the tag early), and is safe in a SCAN pattern.

use crate::store::SessionKey;

/// The keys of one user.
#[derive(Debug, Clone)]
pub(crate) struct UserKeys {
    /// `number:user`, encoded: the hash tag's content and the member in global indexes.
    pub tag: String,
    base: String,
}

impl UserKeys {
    pub fn new(prefix: &str, key: &SessionKey) -> UserKeys {
        let tag = tag_of(key);
        let base = format!("{prefix}{{{tag}}}:");
        UserKeys { tag, base }
    }

    fn k(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }

    /// The last item id stored for the user (ids increase per user, see `super`).
    pub fn last_id(&self) -> String {
        self.k("last")
    }
    /// Sorted set of unhandled item ids (score = id).
    pub fn inbox(&self) -> String {
        self.k("inbox")
    }
    /// Hash `<id>:k|b|a` → kind, body, at.
    pub fn items(&self) -> String {
        self.k("items")
    }
    /// A dedupe record (value = the item's `at`, 8-day TTL).
    pub fn dedupe(&self, dedupe: &str) -> String {
        self.k(&format!("d:{dedupe}"))
    }
    /// Hash holder, token, until.
    pub fn lease(&self) -> String {
        self.k("lease")
    }
    /// The last lease token handed out.
    pub fn fence(&self) -> String {
        self.k("fence")
    }
    /// Hash v (format version), data, at (updated_at, Unix seconds).
    pub fn session(&self) -> String {
        self.k("session")
    }
    /// Sorted set of outgoing messages `turn:index`, score = position in the outbox.
    pub fn outbox(&self) -> String {
        self.k("out")
    }
    /// The last outbox position handed out.
    pub fn outbox_seq(&self) -> String {
        self.k("outseq")
    }
    /// Hash `<turn:index>:b|n|a|t` → body, attempts, ambiguous attempts, not_before.
    pub fn outgoing(&self) -> String {
        self.k("outmsg")
    }
    /// Hash `<id>:m|b|n|r|s` → `turn:index`, body, attempts, reason, since.
    pub fn dead(&self) -> String {
        self.k("dead")
    }
    /// Sorted set of timer names, score = due.
    pub fn timers(&self) -> String {
        self.k("timers")
    }
    /// Hash timer name → body.
    pub fn timer_bodies(&self) -> String {
        self.k("timerbody")
    }
    /// Hash `<id>:k|b|a`: items that could not be read, moved out of the inbox.
    pub fn aside(&self) -> String {
        self.k("aside")
    }
    /// Hash wamid → the sent record (JSON).
    pub fn sent(&self) -> String {
        self.k("sent")
    }

    /// Hash handover id → the handover record (JSON).
    pub fn handovers(&self) -> String {
        self.k("ho")
    }
    /// List of one handover's messages (JSON), in the order added.
    pub fn handover_messages(&self, id: &str) -> String {
        self.k(&format!("hom:{}", encode(id)))
    }

    /// Every fixed-name key of the user (dedupe keys and handover messages are found
    /// by SCAN).
    pub fn all_fixed(&self) -> Vec<String> {
        vec![
            self.last_id(),
            self.inbox(),
            self.items(),
            self.lease(),
            self.fence(),
            self.session(),
            self.outbox(),
            self.outbox_seq(),
            self.outgoing(),
            self.dead(),
            self.timers(),
            self.timer_bodies(),
            self.sent(),
            self.aside(),
            self.handovers(),
        ]
    }
}

/// The global keys, each in its own slot.
#[derive(Debug, Clone)]
pub(crate) struct GlobalKeys {
    /// Item id counter.
    pub ids: String,
    /// Users that may have work: sorted set tag → when it is due (ms), plus a hash tag →
    /// version of the last hint, for removals that must not race an addition.
    pub work: String,
    pub work_ver: String,
    /// Users that may have timers: tag → earliest due (ms), and its versions.
    pub timers: String,
    pub timers_ver: String,
    /// Dead letter id counter, index (id → id) and owners (id → tag).
    pub dead_next: String,
    pub dead_ids: String,
    pub dead_owner: String,
    /// wamid → tag of the user the message was sent to.
    pub sent_owner: String,
    /// Handover id → tag of its user, and the sorted set id → created (ms): the
    /// listing's index, a hint like the others (the user's `ho` hash is the truth).
    pub handover_owner: String,
    pub handover_created: String,
}

impl GlobalKeys {
    pub fn new(prefix: &str) -> GlobalKeys {
        GlobalKeys {
            ids: format!("{prefix}{{ids}}:next"),
            work: format!("{prefix}{{work}}:due"),
            work_ver: format!("{prefix}{{work}}:ver"),
            timers: format!("{prefix}{{timers}}:due"),
            timers_ver: format!("{prefix}{{timers}}:ver"),
            dead_next: format!("{prefix}{{dead}}:next"),
            dead_ids: format!("{prefix}{{dead}}:ids"),
            dead_owner: format!("{prefix}{{dead}}:owner"),
            sent_owner: format!("{prefix}{{sent}}:owner"),
            handover_owner: format!("{prefix}{{handovers}}:owner"),
            handover_created: format!("{prefix}{{handovers}}:created"),
        }
    }
}

/// The statuses of one sent message: its own slot, tagged by the wamid.
pub(crate) fn statuses(prefix: &str, message_id: &str) -> String {
    format!("{prefix}{{w:{}}}:st", encode(message_id))
}

/// A SCAN pattern matching every message's statuses.
pub(crate) fn statuses_pattern(prefix: &str) -> String {
    format!("{}{{w:*}}:st", glob_escape(prefix))
}

/// Whether a user key found by SCAN is one of the user's dedupe records.
pub(crate) fn is_user_dedupe(prefix: &str, key: &str) -> bool {
    key.strip_prefix(prefix)
        .and_then(|rest| rest.split_once('}'))
        .is_some_and(|(_, name)| name.starts_with(":d:"))
}

/// The global claim on a dedupe key: its own slot, tagged by the key (`#` never starts
/// a user's tag, whose parts are encoded).
pub(crate) fn dedupe_claim(prefix: &str, dedupe: &str) -> String {
    format!("{prefix}{{#{}}}:dedupe", encode(dedupe))
}

/// A SCAN pattern matching every global dedupe claim.
pub(crate) fn claims_pattern(prefix: &str) -> String {
    format!("{}{{#*}}:dedupe", glob_escape(prefix))
}

/// Stands for a user in a dedupe claim without naming them: the claim outlives an
/// erasure (`delete_user`), so a redelivery after it is still a duplicate.
pub(crate) fn fingerprint(tag: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(tag.as_bytes())[..8])
}

/// `number:user`, each part encoded.
pub(crate) fn tag_of(key: &SessionKey) -> String {
    format!("{}:{}", encode(&key.phone_number_id), encode(&key.user))
}

/// The key a tag stands for; `None` for a tag this build did not write.
pub(crate) fn key_of(tag: &str) -> Option<SessionKey> {
    let (number, user) = tag.split_once(':')?;
    Some(SessionKey {
        phone_number_id: decode(number)?,
        user: decode(user)?,
    })
}

/// A SCAN pattern matching every session key of every user.
pub(crate) fn sessions_pattern(prefix: &str) -> String {
    format!("{}{{*}}:session", glob_escape(prefix))
}

/// A SCAN pattern matching every dedupe key.
pub(crate) fn dedupe_pattern(prefix: &str) -> String {
    format!("{}{{*}}:d:*", glob_escape(prefix))
}

/// A SCAN pattern matching every sent-records hash.
pub(crate) fn sent_pattern(prefix: &str) -> String {
    format!("{}{{*}}:sent", glob_escape(prefix))
}

/// A SCAN pattern matching every key of `user` on every number. The encoded parts
/// hold no `:`, so `*` before `:user}` can only be a number.
pub(crate) fn user_pattern(prefix: &str, user: &str) -> String {
    format!("{}{{*:{}}}:*", glob_escape(prefix), encode(user))
}

/// The tag of a user key found by SCAN.
pub(crate) fn tag_in(prefix: &str, key: &str) -> Option<String> {
    let rest = key.strip_prefix(prefix)?.strip_prefix('{')?;
    let (tag, _) = rest.split_once('}')?;
    Some(tag.to_string())
}

fn keep(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b'=' | b'-')
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Escapes the characters a SCAN (glob) pattern treats specially.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The Redis Cluster slot of a key: CRC16 (XMODEM) of its hash tag, mod 16384.
#[cfg(test)]
pub(crate) fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            Some(_) | None => bytes,
        },
        None => bytes,
    };
    let mut crc: u16 = 0;
    for &b in hashed {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_redis_cluster_spec() {
        // The check value of CRC16/XMODEM, and CLUSTER KEYSLOT answers from Redis's docs.
        assert_eq!(slot("123456789"), 0x31C3);
        assert_eq!(slot("somekey"), 11058);
        assert_eq!(slot("foo{hash_tag}"), 2515);
        assert_eq!(slot("bar{hash_tag}"), 2515);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
    }

    #[test]
    fn every_key_of_one_user_is_in_one_slot() {
        let key = SessionKey::new("1001", "4915112345678");
        let keys = UserKeys::new("parlance:", &key);
        let slot0 = slot(&keys.inbox());
        let mut all = keys.all_fixed();
        all.push(keys.dedupe("wamid.HBgLNDkxNTE="));
        for k in &all {
            assert!(k.starts_with("parlance:{1001:4915112345678}:"), "{k}");
            assert_eq!(slot(k), slot0, "{k}");
        }
        // Another user: (almost surely) another slot, and never the same tag.
        let other = UserKeys::new("parlance:", &SessionKey::new("1001", "4915112345679"));
        assert_ne!(other.tag, keys.tag);
        assert_ne!(slot(&other.inbox()), slot0);
    }

    #[test]
    fn tags_are_unambiguous_and_round_trip() {
        let a = SessionKey::new("a:b", "c");
        let b = SessionKey::new("a", "b:c");
        assert_ne!(tag_of(&a), tag_of(&b));
        for key in [a, b, SessionKey::new("1}{2", "x*?[]\\ ü")] {
            let tag = tag_of(&key);
            assert!(!tag.contains('}') && !tag.contains('{'), "{tag}");
            assert_eq!(key_of(&tag), Some(key.clone()));
            let keys = UserKeys::new("p:", &key);
            assert_eq!(tag_in("p:", &keys.inbox()), Some(tag));
        }
        assert_eq!(key_of("no-colon"), None);
        let keys = UserKeys::new("p:", &SessionKey::new("1", "d:x"));
        assert!(is_user_dedupe("p:", &keys.dedupe("wamid.1")));
        assert!(!is_user_dedupe("p:", &keys.sent()));
        assert!(!is_user_dedupe("p:", &keys.session()));
        assert_eq!(key_of("1:%ZZ"), None);
    }
}
