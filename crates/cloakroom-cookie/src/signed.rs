//! `signed_cookies`: the session in the clear, with an HMAC-SHA256 tag.
//!
//! The value is unpadded base64url of this envelope:
//!
//! | bytes | content |
//! |---|---|
//! | 1 | format version, `0x02` |
//! | 1 | payload flag: `0` the record, `1` the record raw-deflated |
//! | 8 | deadline, milliseconds since the Unix epoch, big-endian |
//! | 8 | issued at (first issue or last new id), milliseconds, big-endian |
//! | n | payload |
//! | 32 | HMAC-SHA256 tag |
//!
//! The tag covers the first 18 bytes, the cookie name (length-prefixed) and
//! the payload. The key is derived from the secret for this purpose only.
//! Values of the unreleased `0x01` format (without the issue time) are not
//! read.
//!
//! Anyone holding the cookie can read the session: decode the base64url,
//! skip 18 bytes, drop the last 32, and inflate if the flag says so. Keep
//! nothing in it that the user must not see; use
//! [`EncryptedCookies`](crate::EncryptedCookies) for that.

use std::fmt;

use cloakroom_core::record::{from_millis, millis};
use cloakroom_core::{ConfigError, CookieCodec, Error, Opened, Record, Settings};
use ring::hmac;
use time::OffsetDateTime;

use crate::keys::{KeyRing, Secret, Secrets};
use crate::payload;

/// Format version byte of a signed value.
const VERSION: u8 = 0x02;
/// Version, flag, deadline and issue time.
const HEADER_LEN: usize = 18;
/// HMAC-SHA256 output length.
const TAG_LEN: usize = 32;

/// The `signed_cookies` engine: tamper-proof, but readable by the client.
///
/// ```
/// use cloakroom_cookie::{Secret, SignedCookies};
/// use cloakroom_core::{CookieCodec, Record, record::Data};
/// use time::{Duration, OffsetDateTime};
///
/// let codec = SignedCookies::new(&Secret::new("a secret of at least thirty-two bytes")?);
/// let now = OffsetDateTime::now_utc();
/// let record = Record::new(Data::new(), now + Duration::minutes(5));
/// let value = codec.seal("sessionid", &record, now)?;
/// let opened = codec.open("sessionid", &value, now).expect("a value it sealed");
/// assert_eq!(opened.record.data, record.data);
/// // The deadline travels in whole milliseconds.
/// assert_eq!(opened.record.expires_at_millis(), record.expires_at_millis());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SignedCookies {
    keys: KeyRing,
    compress: bool,
}

impl SignedCookies {
    /// A codec that signs with `secret`, compressing when that is shorter.
    pub fn new(secret: &Secret) -> Self {
        Self {
            keys: KeyRing::new(secret),
            compress: true,
        }
    }

    /// Builds the codec from `SESSION_SECRET_KEY` (else `SECRET_KEY`) and
    /// `SESSION_SECRET_KEY_FALLBACKS` (named in [`settings`](crate::settings)).
    ///
    /// # Errors
    /// When no secret is set, or one is shorter than
    /// [`MIN_SECRET_LEN`](crate::MIN_SECRET_LEN) bytes; the error names the
    /// variable and not the value.
    pub fn from_settings(settings: &dyn Settings) -> Result<Self, ConfigError> {
        let secrets = Secrets::from_settings(settings, "signed_cookies")?;
        Ok(Self {
            keys: KeyRing::from_secrets(secrets),
            compress: true,
        })
    }

    /// Also accepts values signed with `old`, a previous secret. They open
    /// with [`Opened::stale_key`] set, so the layer re-issues them under the
    /// current secret. Fallbacks are tried in the order they were added.
    #[must_use]
    pub fn with_fallback(mut self, old: &Secret) -> Self {
        self.keys.push_fallback(old);
        self
    }

    /// Whether to deflate the payload when that makes it shorter (default
    /// `true`).
    #[must_use]
    pub fn with_compression(mut self, compress: bool) -> Self {
        self.compress = compress;
        self
    }

    /// Whether the payload is deflated when that makes it shorter.
    pub fn compression(&self) -> bool {
        self.compress
    }
}

impl fmt::Debug for SignedCookies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedCookies")
            .field("keys", &self.keys)
            .field("compress", &self.compress)
            .finish()
    }
}

/// What the tag covers: header, cookie name, payload.
fn mac_input(header: &[u8], cookie_name: &str, body: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(header.len() + 8 + cookie_name.len() + body.len());
    input.extend_from_slice(header);
    payload::push_name(&mut input, cookie_name);
    input.extend_from_slice(body);
    input
}

impl CookieCodec for SignedCookies {
    fn engine(&self) -> &'static str {
        "signed_cookies"
    }

    fn seal(
        &self,
        cookie_name: &str,
        record: &Record,
        issued_at: OffsetDateTime,
    ) -> Result<String, Error> {
        let (flag, body) = payload::encode(record, self.compress)?;
        let mut header = [0u8; HEADER_LEN];
        header[0] = VERSION;
        header[1] = flag;
        header[2..10].copy_from_slice(&record.expires_at_millis().to_be_bytes());
        header[10..].copy_from_slice(&millis(issued_at).to_be_bytes());

        let tag = hmac::sign(
            self.keys.current().signing_key(),
            &mac_input(&header, cookie_name, &body),
        );
        let mut envelope = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
        envelope.extend_from_slice(&header);
        envelope.extend_from_slice(&body);
        envelope.extend_from_slice(tag.as_ref());
        Ok(payload::to_text(&envelope)?)
    }

    fn open(&self, cookie_name: &str, value: &str, now: OffsetDateTime) -> Option<Opened> {
        let envelope = payload::from_text(value)?;
        if envelope.len() < HEADER_LEN + TAG_LEN || envelope.first() != Some(&VERSION) {
            tracing::debug!(
                engine = "signed_cookies",
                "cookie value has an unknown format"
            );
            return None;
        }
        let (signed, tag) = envelope.split_at(envelope.len() - TAG_LEN);
        let (header, body) = signed.split_at(HEADER_LEN);
        let deadline = payload::read_i64(header, 2)?;
        // The deadline is not secret, and an expired value is refused whether
        // or not its tag is good: no need to spend a MAC on it.
        if deadline <= cloakroom_core::record::millis(now) {
            tracing::debug!(
                engine = "signed_cookies",
                "cookie value is past its deadline"
            );
            return None;
        }

        let input = mac_input(header, cookie_name, body);
        // hmac::verify compares in constant time.
        let Some((stale_key, _)) = self
            .keys
            .all()
            .find(|(_, secret)| hmac::verify(secret.signing_key(), &input, tag).is_ok())
        else {
            tracing::debug!(
                engine = "signed_cookies",
                "cookie value has a bad signature"
            );
            return None;
        };
        let record = payload::decode(header[1], body, deadline)?;
        let issued_at = from_millis(payload::read_i64(header, 10)?).ok()?;
        Some(Opened {
            record,
            stale_key,
            issued_at,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use cloakroom_core::record::Data;
    use time::Duration;

    fn codec() -> SignedCookies {
        SignedCookies::new(&Secret::new("unit-test secret, thirty-two bytes long").unwrap())
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap()
    }

    #[test]
    fn the_payload_is_readable_without_the_key() {
        let mut data = Data::new();
        data.insert("user".into(), "ada".into());
        let record = Record::new(data, now() + Duration::hours(1));
        let value = codec()
            .with_compression(false)
            .seal("sessionid", &record, now())
            .unwrap();
        let envelope = URL_SAFE_NO_PAD.decode(&value).unwrap();
        assert_eq!(envelope[1], payload::FLAG_PLAIN);
        let json = &envelope[HEADER_LEN..envelope.len() - TAG_LEN];
        assert_eq!(Record::from_bytes(json).unwrap(), record);
    }

    #[test]
    fn a_correctly_signed_zip_bomb_is_still_refused() {
        use std::io::Write;
        let deadline = OffsetDateTime::from_unix_timestamp(4_102_444_800).unwrap();
        let mut data = Data::new();
        data.insert("x".into(), "z".repeat(8 * 1024 * 1024).into());
        let bytes = Record::new(data, deadline).to_bytes().unwrap();
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&bytes).unwrap();
        let body = e.finish().unwrap();
        let mut header = [0u8; HEADER_LEN];
        header[0] = VERSION;
        header[1] = payload::FLAG_DEFLATE;
        header[2..10].copy_from_slice(&millis(deadline).to_be_bytes());
        header[10..].copy_from_slice(&millis(now()).to_be_bytes());
        let c = codec();
        let tag = hmac::sign(
            c.keys.current().signing_key(),
            &mac_input(&header, "s", &body),
        );
        let value = URL_SAFE_NO_PAD.encode([&header[..], &body, tag.as_ref()].concat());
        assert!(value.len() < crate::MAX_VALUE_LEN);
        assert!(c.open("s", &value, now()).is_none());
    }

    #[test]
    fn debug_is_redacted() {
        let c = codec().with_fallback(&Secret::new([7u8; 40]).unwrap());
        let shown = format!("{c:?}");
        assert!(
            shown.contains("REDACTED (1 current key, 1 fallback keys)"),
            "{shown}"
        );
    }
}
