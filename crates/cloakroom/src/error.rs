//! [`Error`], what [`Session`](crate::Session) methods return.

use std::fmt;

use axum::response::{IntoResponse, Response};
use cloakroom_core::ErrorKind;

/// A session operation that failed. Returned with `?` from a handler it
/// becomes the same response the layer gives: 503 with a short plain body
/// when the backend is unavailable, 500 for a value that does not
/// (de)serialize.
///
/// It displays in one line with its causes, as
/// `session backend error: redis: Redis load failed: Connection refused
/// (os error 111)` (see
/// [`core::Error::with_causes`](cloakroom_core::Error::with_causes)); never
/// a stored value or a secret. [`source`](std::error::Error::source) is the
/// engine's own error (`cloakroom::redis::RedisStoreError`, ...), for
/// `downcast_ref`; a reporter that prints the sources too repeats them.
pub struct Error(cloakroom_core::Error);

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind()
    }

    /// True when the backend was down or too slow.
    pub fn is_unavailable(&self) -> bool {
        self.0.is_unavailable()
    }
}

impl From<cloakroom_core::Error> for Error {
    fn from(err: cloakroom_core::Error) -> Self {
        Self(err)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.with_causes(), f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The cause, not the core error: it would repeat the message.
        std::error::Error::source(&self.0)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        // The default body: the layer puts the application's own in place
        // of it (`SessionLayer::with_unavailable_response`).
        crate::finish::failure(self.kind(), &crate::SessionConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_in_the_line_and_not_repeated_below_it() {
        let refused = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        let err = Error::from(cloakroom_core::Error::with_source(
            ErrorKind::Backend,
            "redis",
            refused,
        ));
        assert_eq!(
            err.to_string(),
            "session backend error: redis: Connection refused (os error 111)"
        );
        let source = std::error::Error::source(&err).expect("the cause");
        assert_eq!(source.to_string(), "Connection refused (os error 111)");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
        let plain = Error::from(cloakroom_core::Error::new(ErrorKind::Timeout, "no answer"));
        assert_eq!(plain.to_string(), "session backend timed out: no answer");
        assert!(std::error::Error::source(&plain).is_none());
    }
}
