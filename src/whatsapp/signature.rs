//! `X-Hub-Signature-256`: Meta signs every webhook POST with
//! `sha256=<lowercase hex HMAC-SHA256 of the raw body, keyed with the App Secret>`.
//!
//! [`verify`] checks it in constant time over the **raw wire bytes** (never re-serialised
//! JSON). Meta's documentation also says the signature is computed over an "escaped
//! unicode version of the payload" (`äöå` → `\u00e4\u00f6\u00e5`, lowercase hex), which
//! is what whatsapp-api-js does. Whether the wire body already carries those escapes is
//! not confirmed, so when the plain check fails and the body holds bytes outside
//! `0x00..=0x7E`, [`verify`] retries over that escaped form and accepts either.
//!
//! Hex case: the header is decoded as hex, so `sha256=ABCD…` and `sha256=abcd…` are the
//! same 32 bytes and both are accepted. Meta sends lowercase; accepting uppercase does
//! not weaken anything (the comparison is over the decoded MAC, in constant time, and a
//! forger still needs all 32 bytes), while rejecting it would turn a harmless proxy or
//! client re-casing into dropped webhooks and endless retries.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// The header value prefix.
pub const PREFIX: &str = "sha256=";

/// Why a webhook signature was refused. Answer any of them with a 4xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header.
    Missing,
    /// The header is not `sha256=` followed by 64 hex digits.
    Malformed,
    /// Well formed, but not the HMAC of this body with this secret.
    Mismatch,
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureError::Missing => "missing X-Hub-Signature-256 header",
            SignatureError::Malformed => {
                "malformed X-Hub-Signature-256 header (expected sha256=<64 hex digits>)"
            }
            SignatureError::Mismatch => {
                "X-Hub-Signature-256 does not match the body (wrong app secret or altered body)"
            }
        })
    }
}

impl std::error::Error for SignatureError {}

fn mac(app_secret: &str) -> HmacSha256 {
    // HMAC accepts keys of any length (long keys are hashed), so this cannot fail.
    HmacSha256::new_from_slice(app_secret.as_bytes()).expect("HMAC takes keys of any length")
}

/// Checks `header` (the `X-Hub-Signature-256` value) against `body`, the raw request
/// bytes exactly as received.
pub fn verify(app_secret: &str, body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let hex_digits = header
        .strip_prefix(PREFIX)
        .ok_or(SignatureError::Malformed)?;
    let tag = hex::decode(hex_digits).map_err(|_| SignatureError::Malformed)?;
    if tag.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    if mac(app_secret)
        .chain_update(body)
        .verify_slice(&tag)
        .is_ok()
    {
        return Ok(());
    }
    if let Some(escaped) = escape_unicode(body)
        && mac(app_secret)
            .chain_update(&escaped)
            .verify_slice(&tag)
            .is_ok()
    {
        return Ok(());
    }
    Err(SignatureError::Mismatch)
}

/// The full header value (`sha256=<lowercase hex>`) for `body`: for tests and the fake
/// Graph API.
pub fn sign(app_secret: &str, body: &[u8]) -> String {
    let tag = mac(app_secret).chain_update(body).finalize().into_bytes();
    format!("{PREFIX}{}", hex::encode(tag))
}

/// `body` with every character outside `0x00..=0x7E` replaced by `\uXXXX` (lowercase
/// hex, one escape per UTF-16 code unit, so characters beyond the BMP become a surrogate
/// pair), exactly as whatsapp-api-js's `escapeUnicode`. `None` when there is nothing to
/// escape (the retry would be the same computation) or the body is not UTF-8 (a JSON
/// body must be, and there is no sound way to escape it).
pub fn escape_unicode(body: &[u8]) -> Option<Vec<u8>> {
    if body.iter().all(|&b| b <= 0x7e) {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    let mut out = Vec::with_capacity(body.len() + body.len() / 2);
    let mut units = [0u16; 2];
    for ch in text.chars() {
        if (ch as u32) <= 0x7e {
            out.push(ch as u8);
        } else {
            for unit in ch.encode_utf16(&mut units) {
                out.extend_from_slice(format!("\\u{unit:04x}").as_bytes());
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // samples/signature/whatsapp-api-js--x-hub-signature-256-vector.json
    const SECRET: &str = "YOUR_APP_SECRET";
    const BODY: &str = "Let's pretend this body is equal to the message object and can handle unicode characters like みどりいろ and J'ai mangé des pâtes";
    const ESCAPED_SIG: &str =
        "sha256=0363007aabdf1ab579f35936651a460fb5fa1aaf40df98b1264446b72cc96688";

    #[test]
    fn vector_escaped_form_matches_the_sample() {
        let escaped = escape_unicode(BODY.as_bytes()).expect("body has non-ASCII");
        let escaped = String::from_utf8(escaped).expect("escaped form is ASCII");
        assert!(
            escaped.contains(r"\u307f\u3069\u308a\u3044\u308d"),
            "{escaped}"
        );
        assert!(escaped.contains(r"mang\u00e9 des p\u00e2tes"), "{escaped}");
        assert_eq!(sign(SECRET, escaped.as_bytes()), ESCAPED_SIG);
    }

    #[test]
    fn vector_raw_body_is_accepted_through_the_escape_retry() {
        assert_eq!(verify(SECRET, BODY.as_bytes(), Some(ESCAPED_SIG)), Ok(()));
    }

    #[test]
    fn vector_plain_utf8_computation() {
        // The README's "5ab50fef…": HMAC over the unescaped UTF-8 bytes.
        let plain = sign(SECRET, BODY.as_bytes());
        assert!(plain.starts_with("sha256=5ab50fef"), "{plain}");
        assert_ne!(plain, ESCAPED_SIG);
        assert_eq!(verify(SECRET, BODY.as_bytes(), Some(&plain)), Ok(()));
    }

    #[test]
    fn ascii_body_round_trips() {
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let header = sign("s3cret", body);
        assert_eq!(header.len(), PREFIX.len() + 64);
        assert_eq!(verify("s3cret", body, Some(&header)), Ok(()));
        assert_eq!(escape_unicode(body), None);
    }

    #[test]
    fn wrong_secret_is_a_mismatch() {
        assert_eq!(
            verify("NOT_THE_SECRET", BODY.as_bytes(), Some(ESCAPED_SIG)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn flipped_byte_is_a_mismatch() {
        let mut body = BODY.as_bytes().to_vec();
        body[3] ^= 0x01;
        assert_eq!(
            verify(SECRET, &body, Some(ESCAPED_SIG)),
            Err(SignatureError::Mismatch)
        );
        let ascii = b"{\"a\":1}".to_vec();
        let header = sign(SECRET, &ascii);
        let mut flipped = ascii.clone();
        flipped[5] = b'2';
        assert_eq!(
            verify(SECRET, &flipped, Some(&header)),
            Err(SignatureError::Mismatch)
        );
        // and one flipped hex digit in the header
        let mut bad = header.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
        let bad = String::from_utf8(bad).expect("ascii");
        assert_eq!(
            verify(SECRET, &ascii, Some(&bad)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_header() {
        assert_eq!(
            verify(SECRET, BODY.as_bytes(), None),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn uppercase_hex_is_accepted() {
        let upper = format!("{PREFIX}{}", ESCAPED_SIG[PREFIX.len()..].to_uppercase());
        assert_eq!(verify(SECRET, BODY.as_bytes(), Some(&upper)), Ok(()));
    }

    #[test]
    fn header_without_prefix_is_malformed() {
        let bare = &ESCAPED_SIG[PREFIX.len()..];
        assert_eq!(
            verify(SECRET, BODY.as_bytes(), Some(bare)),
            Err(SignatureError::Malformed)
        );
        let sha1 = format!("sha1={bare}");
        assert_eq!(
            verify(SECRET, BODY.as_bytes(), Some(&sha1)),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn bad_hex_or_length_is_malformed() {
        for header in [
            "sha256=",
            "sha256=xyz",
            "sha256=0363007a",
            "sha256=0363007aabdf1ab579f35936651a460fb5fa1aaf40df98b1264446b72cc9668",
            "sha256=0363007aabdf1ab579f35936651a460fb5fa1aaf40df98b1264446b72cc96688ff",
            "",
        ] {
            assert_eq!(
                verify(SECRET, BODY.as_bytes(), Some(header)),
                Err(SignatureError::Malformed),
                "{header:?}"
            );
        }
    }

    #[test]
    fn escape_covers_del_and_astral_characters() {
        let escaped = escape_unicode("a\u{7f}😀é".as_bytes()).expect("non-ascii");
        assert_eq!(escaped, br"a\u007f\ud83d\ude00\u00e9".to_vec());
        // Invalid UTF-8 cannot be escaped: the plain check alone decides.
        assert_eq!(escape_unicode(&[b'{', 0xff, b'}']), None);
    }
}
