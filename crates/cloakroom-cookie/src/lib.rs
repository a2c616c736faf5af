//! Cookie session engines for [cloakroom](https://docs.rs/cloakroom): the
//! whole session travels in the cookie, so no server keeps any state.
//!
//! * [`SignedCookies`] (`SESSION_ENGINE=signed_cookies`): HMAC-SHA256. The
//!   client cannot change the session, but can read it (base64url of JSON),
//!   like Django's `signed_cookies` engine.
//! * [`EncryptedCookies`] (`SESSION_ENGINE=encrypted_cookies`): AES-256-GCM
//!   with a fresh random nonce per value. The client can neither change nor
//!   read the session.
//!
//! Both implement [`cloakroom_core::CookieCodec`]: the layer hands them a
//! [`Record`](cloakroom_core::Record) to [`seal`](cloakroom_core::CookieCodec::seal) into one
//! cookie value, and a value to [`open`](cloakroom_core::CookieCodec::open) again. The layer,
//! not the codec, splits long values over numbered cookies.
//!
//! Where things live:
//!
//! * [`keys`]: [`Secret`], reading `SESSION_SECRET_KEY` (or `SECRET_KEY`) and
//!   `SESSION_SECRET_KEY_FALLBACKS`, and deriving one key per purpose with
//!   HKDF-SHA256.
//! * [`settings`]: the names of the settings they read.
//! * `payload` (private): the bytes inside the seal (JSON, deflated when that
//!   is shorter) and the bounded decoder for them.
//! * [`signed`] and [`encrypted`]: the two envelopes.
//! * [`CookieError`]: what can fail when building a codec or sealing.
//!
//! # What is bound into every value
//!
//! The MAC (signed) or the AEAD tag (encrypted) covers a format version, the
//! cookie name and the session's deadline besides the data. A value copied
//! into another cookie name does not open, and neither does a value whose
//! deadline has passed: the deadline is checked on every read, so
//! `set_expiry` holds even against a client that keeps an old cookie.
//!
//! What a cookie engine cannot do is revoke a session before its deadline: a
//! copy of an old cookie (taken before a logout, say) keeps working until it
//! expires. Choose a server-side engine when that matters; the README says
//! more.
//!
//! # Example
//!
//! ```
//! use cloakroom_cookie::{EncryptedCookies, Secret};
//! use cloakroom_core::{CookieCodec, Record, record::Data};
//! use time::{Duration, OffsetDateTime};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let current = Secret::new("a secret of at least thirty-two bytes, new")?;
//! let previous = Secret::new("a secret of at least thirty-two bytes, old")?;
//! let codec = EncryptedCookies::new(&current).with_fallback(&previous);
//!
//! let now = OffsetDateTime::now_utc();
//! let mut data = Data::new();
//! data.insert("user".into(), "ada".into());
//! let record = Record::new(data, now + Duration::hours(1));
//!
//! let value = codec.seal("sessionid", &record, now)?;
//! assert!(!value.contains("ada"));
//! let opened = codec.open("sessionid", &value, now).expect("a value it sealed");
//! assert_eq!(opened.record.data, record.data);
//! assert!(!opened.stale_key);
//!
//! // Bound to the cookie name and to the deadline.
//! assert!(codec.open("othername", &value, now).is_none());
//! assert!(codec.open("sessionid", &value, now + Duration::hours(2)).is_none());
//! # Ok(())
//! # }
//! ```

pub mod encrypted;
mod error;
pub mod keys;
mod payload;
pub mod settings;
pub mod signed;
#[cfg(test)]
mod test_rng;

pub use encrypted::EncryptedCookies;
pub use error::CookieError;
pub use keys::{MIN_SECRET_LEN, Secret};
pub use payload::{COMPRESS_ABOVE, MAX_PLAINTEXT_LEN, MAX_VALUE_LEN};
pub use signed::SignedCookies;

/// The post-authentication decoder, for the cargo-fuzz target in `fuzz/`
/// only: `open` rejects anything without a valid MAC before it gets here, so
/// a fuzzer could not reach it otherwise. Not a stable API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    /// Decodes an authenticated payload (a flag byte, then JSON or deflated
    /// JSON) into a record whose deadline must be `deadline_ms`; `None` for
    /// anything else. Must never panic and must bound its work.
    pub fn decode_payload(
        flag: u8,
        body: &[u8],
        deadline_ms: i64,
    ) -> Option<cloakroom_core::Record> {
        crate::payload::decode(flag, body, deadline_ms)
    }
}
