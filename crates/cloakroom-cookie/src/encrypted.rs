//! `encrypted_cookies`: the session encrypted and authenticated with
//! AES-256-GCM.
//!
//! The value is unpadded base64url of this envelope:
//!
//! | bytes | content |
//! |---|---|
//! | 1 | format version, `0x03` |
//! | 8 | deadline, milliseconds since the Unix epoch, big-endian |
//! | 8 | issued at (first issue or last new id), milliseconds, big-endian |
//! | 32 | salt, fresh from the OS CSPRNG for every value |
//! | n | ciphertext of: payload flag (1 byte), payload |
//! | 16 | GCM tag |
//!
//! The associated data is the version, the deadline, the issue time and the
//! cookie name (length-prefixed): the tag fails if any of them differs. The deadline is
//! in the clear because the cookie's `Max-Age` shows it anyway, and so an
//! expired value is refused without decrypting it.
//!
//! Every value is encrypted under a key of its own: HKDF-SHA256 expands the
//! secret's encryption key with the value's 256-bit random salt. Each key
//! seals exactly one value, so the all-zero nonce is safe, and there is no
//! limit on how many values a secret seals (a random 96-bit nonce under one
//! key would risk a repeat, and with it forgeries, after about 2^32 values,
//! which a busy site re-sealing on every request reaches within days). Two
//! values share a key only if their salts collide: after 2^64 values the
//! chance is 2^-128.
//!
//! The length of the value still tells roughly how large the session is, and,
//! because compression comes first, how compressible it is. If an attacker
//! can put chosen text into a session that also holds a secret and watch the
//! cookie's length, turn compression off with
//! [`with_compression(false)`](EncryptedCookies::with_compression).

use std::fmt;

use cloakroom_core::record::{from_millis, millis};
use cloakroom_core::{ConfigError, CookieCodec, Error, Opened, Record, Settings};
use ring::aead::{Aad, NONCE_LEN, Nonce};
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;

use crate::CookieError;
use crate::keys::{KeyRing, Secret, Secrets};
use crate::payload;

/// Format version byte of an encrypted value. Values of `0x02` (one key
/// for every value, random nonces) were never released and are not read.
const VERSION: u8 = 0x03;
/// Bytes of a value's salt.
const SALT_LEN: usize = 32;
/// The nonce of every value: each key seals one value only.
const NONCE: [u8; NONCE_LEN] = [0; NONCE_LEN];
/// Version, deadline and issue time.
const HEADER_LEN: usize = 17;
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
/// let value = codec.seal("sessionid", &record, now)?;
/// // A fresh salt, so a fresh key, each time: sealing twice gives two
/// // different values.
/// assert_ne!(value, codec.seal("sessionid", &record, now)?);
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
    /// `SESSION_SECRET_KEY_FALLBACKS` (named in [`settings`](crate::settings)).
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

    /// Whether the payload is deflated when that makes it shorter.
    pub fn compression(&self) -> bool {
        self.compress
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

    fn seal(
        &self,
        cookie_name: &str,
        record: &Record,
        issued_at: OffsetDateTime,
    ) -> Result<String, Error> {
        let (flag, body) = payload::encode(record, self.compress)?;
        let mut header = [0u8; HEADER_LEN];
        header[0] = VERSION;
        header[1..9].copy_from_slice(&record.expires_at_millis().to_be_bytes());
        header[9..].copy_from_slice(&millis(issued_at).to_be_bytes());
        let mut salt = [0u8; SALT_LEN];
        self.rng.fill(&mut salt).map_err(|_| CookieError::Random)?;

        let mut envelope = Vec::with_capacity(HEADER_LEN + SALT_LEN + 1 + body.len() + TAG_LEN);
        envelope.extend_from_slice(&header);
        envelope.extend_from_slice(&salt);
        let mut in_out = Vec::with_capacity(1 + body.len() + TAG_LEN);
        in_out.push(flag);
        in_out.extend_from_slice(&body);
        self.keys
            .current()
            .value_key(&salt)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(NONCE),
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
        if envelope.len() < HEADER_LEN + SALT_LEN + 1 + TAG_LEN
            || envelope.first() != Some(&VERSION)
        {
            tracing::debug!(
                engine = "encrypted_cookies",
                "cookie value has an unknown format"
            );
            return None;
        }
        let (header, rest) = envelope.split_at(HEADER_LEN);
        let (salt, sealed) = rest.split_at(SALT_LEN);
        let deadline = payload::read_i64(header, 1)?;
        if deadline <= cloakroom_core::record::millis(now) {
            tracing::debug!(
                engine = "encrypted_cookies",
                "cookie value is past its deadline"
            );
            return None;
        }
        let ad = associated_data(header, cookie_name);

        for (stale_key, secret) in self.keys.all() {
            // open_in_place leaves the buffer unspecified on failure, so each
            // key gets a fresh copy. The tag check inside is constant-time.
            let mut buffer = sealed.to_vec();
            let Ok(key) = secret.value_key(salt) else {
                continue;
            };
            let Ok(plain) = key.open_in_place(
                Nonce::assume_unique_for_key(NONCE),
                Aad::from(&ad),
                &mut buffer,
            ) else {
                continue;
            };
            let (&flag, body) = plain.split_first()?;
            let record = payload::decode(flag, body, deadline)?;
            let issued_at = from_millis(payload::read_i64(header, 9)?).ok()?;
            return Some(Opened {
                record,
                stale_key,
                issued_at,
            });
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
        let e = enc.seal("s", &record, now()).unwrap();
        let s = sig.seal("s", &record, now()).unwrap();
        assert!(enc.open("s", &e, now()).is_some());
        assert!(sig.open("s", &s, now()).is_some());
        assert!(enc.open("s", &s, now()).is_none());
        assert!(sig.open("s", &e, now()).is_none());
    }

    /// Each value is sealed under a key of its own, from its own salt, so
    /// the number of values a secret seals has no limit.
    #[test]
    fn every_value_has_a_key_of_its_own() {
        let secret = Secret::new("a secret for many values, 32 bytes+").unwrap();
        let codec = EncryptedCookies::new(&secret).with_compression(false);
        let record = Record::new(Data::new(), now() + Duration::hours(1));
        let envelope = |value: &str| payload::from_text(value).unwrap();
        let a = envelope(&codec.seal("s", &record, now()).unwrap());
        let b = envelope(&codec.seal("s", &record, now()).unwrap());
        assert_eq!((a[0], b[0]), (VERSION, VERSION));
        let salt = HEADER_LEN..HEADER_LEN + SALT_LEN;
        assert_ne!(a[salt.clone()], b[salt.clone()]);
        // Same plaintext, same nonce, same header: the ciphertexts differ
        // because the keys do.
        assert_eq!(a.len(), b.len());
        assert_ne!(a[salt.end..], b[salt.end..]);
        // And a value's ciphertext opens only under its own salt's key.
        let mut swapped = b.clone();
        swapped[salt.clone()].copy_from_slice(&a[salt]);
        let text = |bytes: &[u8]| payload::to_text(bytes).unwrap();
        assert!(codec.open("s", &text(&b), now()).is_some());
        assert!(codec.open("s", &text(&swapped), now()).is_none());
        // Values of the unreleased one-key format are not read.
        let mut old = b;
        old[0] = 0x02;
        assert!(codec.open("s", &text(&old), now()).is_none());
        // Salts do not repeat.
        let salts: std::collections::HashSet<Vec<u8>> = (0..2000)
            .map(|_| {
                envelope(&codec.seal("s", &record, now()).unwrap())
                    [HEADER_LEN..HEADER_LEN + SALT_LEN]
                    .to_vec()
            })
            .collect();
        assert_eq!(salts.len(), 2000);
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
