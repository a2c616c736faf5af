//! `encrypted_cookies`: the session encrypted and authenticated with
//! AES-256-GCM.
//!
//! The value is unpadded base64url of this envelope:
//!
//! | bytes | content |
//! |---|---|
//! | 1 | format version, `0x02` |
//! | 8 | deadline, milliseconds since the Unix epoch, big-endian |
//! | 12 | nonce, fresh from the OS CSPRNG for every value |
//! | n | ciphertext of: payload flag (1 byte), payload |
//! | 16 | GCM tag |
//!
//! The associated data is the version, the deadline and the cookie name
//! (length-prefixed): the tag fails if any of them differs. The deadline is
//! in the clear because the cookie's `Max-Age` shows it anyway, and so an
//! expired value is refused without decrypting it.
//!
//! A random 96-bit nonce per value keeps the chance of a nonce repeating
//! under one key negligible for well over 2^32 values, far more than a
//! secret should seal before it is rotated.
//!
//! The length of the value still tells roughly how large the session is, and,
//! because compression comes first, how compressible it is. If an attacker
//! can put chosen text into a session that also holds a secret and watch the
//! cookie's length, turn compression off with
//! [`with_compression(false)`](EncryptedCookies::with_compression).

use std::fmt;

use cloakroom_core::{ConfigError, CookieCodec, Error, Opened, Record, Settings};
use ring::aead::{Aad, NONCE_LEN, Nonce};
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;

use crate::CookieError;
use crate::keys::{KeyRing, Secret, Secrets};
use crate::payload;

/// Format version byte of an encrypted value.
const VERSION: u8 = 0x02;
/// Version and deadline.
const HEADER_LEN: usize = 9;
/// AES-GCM tag length.
const TAG_LEN: usize = 16;

/// The `encrypted_cookies` engine: the client can neither change nor read the
/// session.
///
/// ```
/// use cloakroom_cookie::{EncryptedCookies, Secret};
/// use cloakroom_core::{CookieCodec, Record, record::Data};
/// use time::{Duration, OffsetDateTime};
///
/// let codec = EncryptedCookies::new(&Secret::new("a secret of at least thirty-two bytes")?);
/// let now = OffsetDateTime::now_utc();
/// let record = Record::new(Data::new(), now + Duration::minutes(5));
/// let value = codec.seal("sessionid", &record)?;
/// // A fresh nonce each time: sealing twice gives two different values.
/// assert_ne!(value, codec.seal("sessionid", &record)?);
/// let opened = codec.open("sessionid", &value, now).expect("a value it sealed");
/// assert_eq!(opened.record.data, record.data);
/// // The deadline travels in whole milliseconds.
/// assert_eq!(opened.record.expires_at_millis(), record.expires_at_millis());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct EncryptedCookies {
    keys: KeyRing,
    compress: bool,
    rng: SystemRandom,
}

impl EncryptedCookies {
    /// A codec that encrypts with `secret`, compressing when that is shorter.
    pub fn new(secret: &Secret) -> Self {
        Self {
            keys: KeyRing::new(secret),
            compress: true,
            rng: SystemRandom::new(),
        }
    }

    /// Builds the codec from `SESSION_SECRET_KEY` (else `SECRET_KEY`) and
    /// `SESSION_SECRET_KEY_FALLBACKS`.
    ///
    /// # Errors
    /// When no secret is set, or one is shorter than
    /// [`MIN_SECRET_LEN`](crate::MIN_SECRET_LEN) bytes; the error names the
    /// variable and not the value.
    pub fn from_settings(settings: &dyn Settings) -> Result<Self, ConfigError> {
        let secrets = Secrets::from_settings(settings, "encrypted_cookies")?;
        Ok(Self {
            keys: KeyRing::from_secrets(secrets),
            compress: true,
            rng: SystemRandom::new(),
        })
    }

    /// Also accepts values encrypted with `old`, a previous secret. They open
    /// with [`Opened::stale_key`] set, so the layer re-issues them under the
    /// current secret. Fallbacks are tried in the order they were added.
    #[must_use]
    pub fn with_fallback(mut self, old: &Secret) -> Self {
        self.keys.push_fallback(old);
        self
    }

    /// Whether to deflate the payload when that makes it shorter (default
    /// `true`). See the [module docs](self) for when to turn it off.
    #[must_use]
    pub fn with_compression(mut self, compress: bool) -> Self {
        self.compress = compress;
        self
    }
}

impl fmt::Debug for EncryptedCookies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedCookies")
            .field("keys", &self.keys)
            .field("compress", &self.compress)
            .finish()
    }
}

/// The associated data: header and cookie name.
fn associated_data(header: &[u8], cookie_name: &str) -> Vec<u8> {
    let mut ad = Vec::with_capacity(header.len() + 8 + cookie_name.len());
    ad.extend_from_slice(header);
    payload::push_name(&mut ad, cookie_name);
    ad
}

impl CookieCodec for EncryptedCookies {
    fn engine(&self) -> &'static str {
        "encrypted_cookies"
    }

    fn seal(&self, cookie_name: &str, record: &Record) -> Result<String, Error> {
        let (flag, body) = payload::encode(record, self.compress)?;
        let mut header = [0u8; HEADER_LEN];
        header[0] = VERSION;
        header[1..].copy_from_slice(&record.expires_at_millis().to_be_bytes());
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| CookieError::Random)?;

        // Encrypt in place in the envelope itself, after header and nonce.
        let mut envelope = Vec::with_capacity(HEADER_LEN + NONCE_LEN + 1 + body.len() + TAG_LEN);
        envelope.extend_from_slice(&header);
        envelope.extend_from_slice(&nonce);
        let mut in_out = Vec::with_capacity(1 + body.len() + TAG_LEN);
        in_out.push(flag);
        in_out.extend_from_slice(&body);
        self.keys
            .current()
            .encryption_key()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data(&header, cookie_name)),
                &mut in_out,
            )
            .map_err(|_| CookieError::Crypto("AES-GCM seal"))?;
        envelope.extend_from_slice(&in_out);
        Ok(payload::to_text(&envelope)?)
    }

    fn open(&self, cookie_name: &str, value: &str, now: OffsetDateTime) -> Option<Opened> {
        let envelope = payload::from_text(value)?;
        // At least one byte of plaintext: the flag.
        if envelope.len() < HEADER_LEN + NONCE_LEN + 1 + TAG_LEN
            || envelope.first() != Some(&VERSION)
        {
            tracing::debug!(
                engine = "encrypted_cookies",
                "cookie value has an unknown format"
            );
            return None;
        }
        let (header, rest) = envelope.split_at(HEADER_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let deadline = payload::read_i64(header, 1)?;
        if deadline <= cloakroom_core::record::millis(now) {
            tracing::debug!(
                engine = "encrypted_cookies",
                "cookie value is past its deadline"
            );
            return None;
        }
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let ad = associated_data(header, cookie_name);

        for (stale_key, secret) in self.keys.all() {
            // open_in_place leaves the buffer unspecified on failure, so each
            // key gets a fresh copy. The tag check inside is constant-time.
            let mut buffer = sealed.to_vec();
            let Ok(plain) = secret.encryption_key().open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&ad),
                &mut buffer,
            ) else {
                continue;
            };
            let (&flag, body) = plain.split_first()?;
            let record = payload::decode(flag, body, deadline)?;
            return Some(Opened { record, stale_key });
        }
        tracing::debug!(
            engine = "encrypted_cookies",
            "cookie value does not decrypt"
        );
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use cloakroom_core::record::Data;
    use time::Duration;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap()
    }

    #[test]
    fn signed_and_encrypted_values_do_not_open_in_each_other() {
        let secret = Secret::new("one secret for both engines, 32+ bytes").unwrap();
        let enc = EncryptedCookies::new(&secret);
        let sig = crate::SignedCookies::new(&secret);
        let record = Record::new(Data::new(), now() + Duration::hours(1));
        let e = enc.seal("s", &record).unwrap();
        let s = sig.seal("s", &record).unwrap();
        assert!(enc.open("s", &e, now()).is_some());
        assert!(sig.open("s", &s, now()).is_some());
        assert!(enc.open("s", &s, now()).is_none());
        assert!(sig.open("s", &e, now()).is_none());
    }

    #[test]
    fn debug_is_redacted() {
        let c = EncryptedCookies::new(&Secret::new([1u8; 32]).unwrap());
        let shown = format!("{c:?}");
        assert_eq!(
            shown,
            "EncryptedCookies { keys: REDACTED (1 current key, 0 fallback keys), compress: true }"
        );
    }
}
