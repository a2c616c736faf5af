//! What can go wrong talking to Redis, and how it maps onto
//! [`cloakroom_core::Error`].

use std::time::Duration;

use cloakroom_core::ErrorKind;
use deadpool_redis::redis::RedisError;

/// An error of the Redis engine.
///
/// It converts into [`cloakroom_core::Error`], which is what the layer sees:
/// every variant that means "Redis is not usable right now" becomes kind
/// [`Backend`](ErrorKind::Backend) or [`Timeout`](ErrorKind::Timeout), which
/// the layer answers with 503.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisStoreError {
    /// The URL is not one this engine accepts. The URL shown has its password
    /// masked.
    #[error("invalid Redis URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS could not be set up as configured (the CA file is unreadable or
    /// not PEM, or it was given for a URL it cannot apply to).
    #[error("Redis TLS setup failed: {reason}")]
    Tls {
        /// What went wrong.
        reason: String,
    },
    /// The connection pool could not be built.
    #[error("could not build the Redis connection pool")]
    Build(#[source] deadpool_redis::BuildError),
    /// No connection could be taken from the pool: none was free within the
    /// wait timeout, or a new one could not be opened.
    #[error("no Redis connection available for {op}")]
    Pool {
        /// The store operation (`load`, `create`, ...).
        op: &'static str,
        /// What the pool reported.
        #[source]
        source: PoolError,
    },
    /// Redis answered with an error, or the connection failed mid-command.
    #[error("Redis {op} failed")]
    Command {
        /// The store operation (`load`, `create`, ...).
        op: &'static str,
        /// What the client reported.
        #[source]
        source: RedisError,
    },
    /// The whole operation (pool checkout plus command) took longer than the
    /// store's overall timeout.
    #[error("Redis {op} did not complete within {limit:?}")]
    Timeout {
        /// The store operation (`load`, `create`, ...).
        op: &'static str,
        /// The overall timeout that ran out.
        limit: Duration,
    },
    /// Redis answered with something that is not what the command returns.
    #[error("unexpected Redis reply to {op}: {detail}")]
    Reply {
        /// The store operation (`load`, `create`, ...).
        op: &'static str,
        /// What was odd about it.
        detail: String,
    },
    /// The session record could not be serialized.
    #[error("session record could not be serialized")]
    Record(#[source] cloakroom_core::Error),
}

/// What the pool reported. deadpool-redis uses one type for both pool kinds
/// (single server and cluster).
pub use deadpool_redis::PoolError;

fn pool_timed_out(e: &PoolError) -> bool {
    match e {
        PoolError::Timeout(_) => true,
        PoolError::Backend(e) => e.is_timeout(),
        _ => false,
    }
}

impl RedisStoreError {
    /// The [`ErrorKind`] the layer acts on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidUrl { .. } | Self::Tls { .. } | Self::Build(_) => ErrorKind::Config,
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::Pool { source, .. } if pool_timed_out(source) => ErrorKind::Timeout,
            Self::Command { source, .. } if source.is_timeout() => ErrorKind::Timeout,
            Self::Pool { .. } | Self::Command { .. } | Self::Reply { .. } => ErrorKind::Backend,
            Self::Record(e) => e.kind(),
        }
    }
}

impl From<RedisStoreError> for cloakroom_core::Error {
    fn from(e: RedisStoreError) -> Self {
        match e {
            // Already the core error: keep it as it is rather than nest it.
            RedisStoreError::Record(inner) => inner,
            other => {
                let kind = other.kind();
                cloakroom_core::Error::with_source(kind, "redis", other)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_what_the_layer_answers_503_for() {
        let timeout = RedisStoreError::Timeout {
            op: "load",
            limit: Duration::from_millis(5),
        };
        assert_eq!(timeout.kind(), ErrorKind::Timeout);
        let core: cloakroom_core::Error = timeout.into();
        assert!(core.is_unavailable());
        assert!(core.to_string().contains("redis"));

        let pool = RedisStoreError::Pool {
            op: "create",
            source: PoolError::Timeout(deadpool_redis::TimeoutType::Wait),
        };
        assert_eq!(pool.kind(), ErrorKind::Timeout);

        let refused = RedisStoreError::Command {
            op: "update",
            source: RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        };
        assert_eq!(refused.kind(), ErrorKind::Backend);
        let core: cloakroom_core::Error = refused.into();
        assert!(core.is_unavailable());
        assert!(std::error::Error::source(&core).is_some());
    }
}
