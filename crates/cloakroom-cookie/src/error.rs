//! What can fail in this crate, and how it maps onto the layer's error kinds.

use cloakroom_core::{Error, ErrorKind};

/// A failure while building a cookie codec or sealing a session.
///
/// Opening never fails with an error: a value that does not open is `None`,
/// and the layer starts a fresh session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CookieError {
    /// The secret is shorter than [`MIN_SECRET_LEN`](crate::MIN_SECRET_LEN)
    /// bytes. The secret itself is not shown.
    #[error("the session secret is {len} bytes long; at least {min} bytes are required")]
    SecretTooShort {
        /// Length of the rejected secret, in bytes.
        len: usize,
        /// The minimum length.
        min: usize,
    },
    /// The operating system's random number generator failed (no nonce).
    #[error("the OS random number generator failed")]
    Random,
    /// ring refused an operation that cannot fail with the sizes used here.
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
    /// The record could not be serialized.
    #[error("the session could not be serialized")]
    Serialize(#[source] Error),
    /// The sealed value (or the record inside it) exceeds what
    /// [`open`](cloakroom_core::CookieCodec::open) accepts, so sealing it
    /// would make a cookie that could never be read back.
    #[error("the sealed session is {len} bytes; at most {max} bytes can be read back")]
    TooLarge {
        /// The size that was reached.
        len: usize,
        /// The limit it exceeds.
        max: usize,
    },
}

impl From<CookieError> for Error {
    fn from(e: CookieError) -> Self {
        let kind = match &e {
            CookieError::SecretTooShort { .. } => ErrorKind::Config,
            // Without randomness no value can be sealed right now: the same
            // "unavailable" answer (503) as a backend that is down.
            CookieError::Random | CookieError::Crypto(_) => ErrorKind::Backend,
            CookieError::Serialize(_) => ErrorKind::Serialization,
            CookieError::TooLarge { .. } => ErrorKind::TooLarge,
        };
        match e {
            // Keep the core error as it is rather than wrapping it twice.
            CookieError::Serialize(inner) => inner,
            other => Error::with_source(kind, "cookie session", other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let e: Error = CookieError::TooLarge { len: 9, max: 8 }.into();
        assert_eq!(e.kind(), ErrorKind::TooLarge);
        let e: Error = CookieError::Random.into();
        assert!(e.is_unavailable());
        let e: Error = CookieError::Serialize(Error::new(ErrorKind::Serialization, "x")).into();
        assert_eq!(e.kind(), ErrorKind::Serialization);
        let e: Error = CookieError::SecretTooShort { len: 3, min: 32 }.into();
        assert_eq!(e.kind(), ErrorKind::Config);
    }
}
