//! The error type every engine reports through.

use std::fmt;

/// A boxed error, as kept in [`Error::source`](std::error::Error::source).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, in terms the layer can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The backend could not be reached or answered with an error: the layer
    /// answers 503.
    Backend,
    /// The backend did not answer within the configured time: the layer
    /// answers 503.
    Timeout,
    /// A value could not be (de)serialized.
    Serialization,
    /// The session is larger than the engine can store (memcached item limit,
    /// cookie size bound).
    TooLarge,
    /// The session was deleted by another request while this one ran; the
    /// layer does not write it back.
    Interrupted,
    /// The session layer is misconfigured or missing.
    Config,
    /// The application passed a value out of range (an expiry past
    /// [`MAX_AGE`](crate::record::MAX_AGE)).
    InvalidInput,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Backend => "session backend error",
            Self::Timeout => "session backend timed out",
            Self::Serialization => "session data could not be serialized",
            Self::TooLarge => "session data too large for the engine",
            Self::Interrupted => "session was deleted before the request completed",
            Self::Config => "session configuration error",
            Self::InvalidInput => "session value out of range",
        }
    }
}

/// The error of every session operation: a kind, a short message, and the
/// underlying error kept as [`source`](std::error::Error::source).
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<BoxError>,
}

impl Error {
    /// An error with a message and no underlying cause.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error caused by `source`.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// True for failures that mean "the backend is not available right now"
    /// (answered with 503), as opposed to a bug or bad data.
    pub fn is_unavailable(&self) -> bool {
        matches!(self.kind, ErrorKind::Backend | ErrorKind::Timeout)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(self.kind.describe())
        } else {
            write!(f, "{}: {}", self.kind.describe(), self.message)
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::with_source(ErrorKind::Serialization, "", e)
    }
}
