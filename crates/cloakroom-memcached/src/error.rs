//! What can go wrong talking to memcached, and how the layer sees it.

use std::io;
use std::time::Duration;

use cloakroom_core::ErrorKind;

/// A failure of one store operation on one memcached server.
///
/// Converts into [`cloakroom_core::Error`] with the kind the layer acts on:
/// unreachable or failing servers are [`ErrorKind::Backend`], slow ones
/// [`ErrorKind::Timeout`] (both answered with 503), and a session above the
/// server's item size limit is [`ErrorKind::TooLarge`]. The converted error
/// keeps this one as its [`source`](std::error::Error::source), so callers
/// can downcast to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemcachedError {
    /// No connection to the server could be opened.
    #[error("cannot connect to memcached server {server}")]
    Connect {
        /// The server, as `host:port`.
        server: String,
        /// Why the connection failed.
        #[source]
        source: io::Error,
    },
    /// The connection failed while a command was under way.
    #[error("connection to memcached server {server} failed")]
    Io {
        /// The server, as `host:port`.
        server: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The operation (waiting for a pooled connection, connecting, and the
    /// command itself) did not finish in time.
    #[error("memcached server {server} did not answer within {limit:?} ({waiting_for})")]
    Timeout {
        /// The server, as `host:port`.
        server: String,
        /// The time limit that was exceeded.
        limit: Duration,
        /// What was being waited for: a connection or a reply.
        waiting_for: &'static str,
    },
    /// The server refused to store the session because it is larger than its
    /// item size limit (memcached's `-I`, 1 MiB by default).
    #[error(
        "session of {size} bytes is larger than memcached server {server} stores (it replied {reply:?})"
    )]
    TooLarge {
        /// The server, as `host:port`.
        server: String,
        /// The size of the serialized session.
        size: usize,
        /// The server's reply.
        reply: String,
    },
    /// The server answered with an error (`ERROR`, `CLIENT_ERROR ...`,
    /// `SERVER_ERROR ...`), for instance when it is out of memory.
    #[error("memcached server {server} replied {reply:?}")]
    Server {
        /// The server, as `host:port`.
        server: String,
        /// The server's reply.
        reply: String,
    },
    /// The server's reply did not fit the command: it is probably not
    /// memcached.
    #[error("unexpected reply from memcached server {server}: {reply:?}")]
    Protocol {
        /// The server, as `host:port`.
        server: String,
        /// What was received.
        reply: String,
    },
    /// The session changed under every attempt of an update or a touch
    /// (each `cas` answered `EXISTS`): many requests of one session were
    /// saving it at once.
    #[error("session kept changing on memcached server {server} ({attempts} attempts to write it)")]
    Contended {
        /// The server, as `host:port`.
        server: String,
        /// How many times the write was tried.
        attempts: u32,
    },
    /// The connection pool was closed; only happens while shutting down.
    #[error("the connection pool for memcached server {server} is closed")]
    PoolClosed {
        /// The server, as `host:port`.
        server: String,
    },
}

impl MemcachedError {
    /// The kind of [`cloakroom_core::Error`] this becomes.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::TooLarge { .. } => ErrorKind::TooLarge,
            Self::Connect { .. }
            | Self::Io { .. }
            | Self::Server { .. }
            | Self::Protocol { .. }
            | Self::Contended { .. }
            | Self::PoolClosed { .. } => ErrorKind::Backend,
        }
    }
}

impl From<MemcachedError> for cloakroom_core::Error {
    fn from(e: MemcachedError) -> Self {
        cloakroom_core::Error::with_source(e.kind(), e.to_string(), e)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_what_the_layer_answers() {
        let server = || "127.0.0.1:1".to_owned();
        let io = || io::Error::from(io::ErrorKind::ConnectionRefused);
        let cases = [
            (
                MemcachedError::Connect {
                    server: server(),
                    source: io(),
                },
                ErrorKind::Backend,
            ),
            (
                MemcachedError::Timeout {
                    server: server(),
                    limit: Duration::from_secs(1),
                    waiting_for: "a reply",
                },
                ErrorKind::Timeout,
            ),
            (
                MemcachedError::TooLarge {
                    server: server(),
                    size: 2 << 20,
                    reply: "SERVER_ERROR object too large for cache".into(),
                },
                ErrorKind::TooLarge,
            ),
        ];
        for (e, kind) in cases {
            let text = e.to_string();
            assert!(text.contains("127.0.0.1:1"), "{text}");
            let core: cloakroom_core::Error = e.into();
            assert_eq!(core.kind(), kind);
            let source = std::error::Error::source(&core).expect("keeps the source");
            assert!(source.downcast_ref::<MemcachedError>().is_some());
        }
    }
}
