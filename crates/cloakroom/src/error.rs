//! [`Error`], what [`Session`](crate::Session) methods return.

use std::fmt;

use axum::response::{IntoResponse, Response};
use cloakroom_core::ErrorKind;

/// A session operation that failed. Returned with `?` from a handler it
/// becomes the same response the layer gives: 503 with a short plain body
/// when the backend is unavailable, 500 for a value that does not
/// (de)serialize.
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
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        // The default body: the layer puts the application's own in place
        // of it (`SessionLayer::with_unavailable_response`).
        crate::finish::failure(self.kind(), &crate::SessionConfig::default())
    }
}
