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

    /// The error and its causes in one line, each cause after a colon:
    /// `session backend error: redis: Redis load failed: Connection refused
    /// (os error 111)`. A cause whose text is already there (an engine that
    /// repeats its cause in its message) is left out, and line breaks
    /// become spaces. For logs and error pages; `Display` alone gives the
    /// first part, and [`source`](std::error::Error::source) the causes.
    ///
    /// Causes are only what engines keep as one, and no engine keeps a
    /// stored value or a secret there: a value that does not deserialize
    /// has no cause, and URLs have their passwords masked.
    ///
    /// ```
    /// use cloakroom_core::{Error, ErrorKind};
    ///
    /// let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
    /// let err = Error::with_source(ErrorKind::Backend, "redis", refused);
    /// assert_eq!(err.to_string(), "session backend error: redis");
    /// assert_eq!(
    ///     err.with_causes().to_string(),
    ///     "session backend error: redis: Connection refused"
    /// );
    /// ```
    pub fn with_causes(&self) -> impl fmt::Display + '_ {
        WithCauses(self)
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

/// See [`Error::with_causes`].
struct WithCauses<'a>(&'a Error);

impl fmt::Display for WithCauses<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = one_line(&self.0.to_string());
        let mut next = std::error::Error::source(self.0);
        while let Some(cause) = next {
            let text = one_line(&cause.to_string());
            if !text.is_empty() && !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            next = cause.source();
        }
        f.write_str(&line)
    }
}

/// `text` with each run of whitespace that holds a line break made one space.
fn one_line(text: &str) -> String {
    if !text.contains(['\n', '\r']) {
        return text.trim().to_owned();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An error whose message is its cause's, as a wrapper may write it.
    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "connect to 127.0.0.1:1 failed: {}", self.0)
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn refused() -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        )
    }

    #[test]
    fn causes_are_shown_once_in_one_line() {
        let err = Error::with_source(ErrorKind::Backend, "memcached", Wrapper(refused()));
        assert_eq!(
            err.with_causes().to_string(),
            "session backend error: memcached: connect to 127.0.0.1:1 failed: \
             Connection refused (os error 111)"
        );
        // The message repeats the cause (memcached's engine does that).
        let wrapper = Wrapper(refused());
        let err = Error::with_source(ErrorKind::Backend, wrapper.to_string(), wrapper);
        assert_eq!(
            err.with_causes().to_string(),
            "session backend error: connect to 127.0.0.1:1 failed: Connection refused (os error 111)"
        );
        let multiline = std::io::Error::other("ERROR: relation missing\n  HINT:  run migrate\n");
        let err = Error::with_source(ErrorKind::Backend, "db", multiline);
        assert_eq!(
            err.with_causes().to_string(),
            "session backend error: db: ERROR: relation missing HINT: run migrate"
        );
        let bare = Error::new(ErrorKind::Timeout, "");
        assert_eq!(bare.with_causes().to_string(), "session backend timed out");
    }

    #[test]
    fn a_value_that_does_not_deserialize_shows_no_value() {
        let secret = serde_json::json!("s3cr3t-token");
        let err = crate::record::Data::value_as::<u64>("token", &secret).unwrap_err();
        let shown = err.with_causes().to_string();
        assert!(
            shown.contains("\"token\"") && !shown.contains("s3cr3t"),
            "{shown}"
        );
    }
}
