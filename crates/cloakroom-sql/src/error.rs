//! [`SqlError`], what this crate's own calls return, and how it maps onto
//! [`cloakroom_core::Error`] for the layer.

use std::time::Duration;

use cloakroom_core::ErrorKind;

/// A failure of the SQL engine: of a store call, of [`migrate`] or of
/// [`clear_expired`].
///
/// It converts into [`cloakroom_core::Error`] with the kind the layer acts on:
/// a database that cannot be reached, refuses a statement or is closed is
/// [`Backend`](ErrorKind::Backend); one that does not answer in time is
/// [`Timeout`](ErrorKind::Timeout) (both answered with 503); a session larger
/// than the column or the server's packet limit is
/// [`TooLarge`](ErrorKind::TooLarge).
///
/// [`migrate`]: crate::SqlStore::migrate
/// [`clear_expired`]: crate::SqlStore::clear_expired
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// No pooled connection became free, or no new one could be opened,
    /// within the configured timeout.
    #[error("no database connection within {0:?}")]
    PoolTimeout(Duration),
    /// A statement did not complete within the configured timeout; its
    /// connection is closed rather than reused.
    #[error("the database did not answer within {0:?}")]
    StatementTimeout(Duration),
    /// The session does not fit: the database refused it as larger than
    /// its column or its packet limit.
    #[error("the session record is too large for the database ({0})")]
    TooLarge(#[source] sqlx::Error),
    /// The session is larger than the database accepts, found before
    /// sending it: MySQL's `MEDIUMBLOB` holds 16 MiB, and its server closes
    /// the connection on a packet above `max_allowed_packet`.
    #[error("the session record has {size} bytes; this database accepts at most {limit}")]
    RecordTooLarge {
        /// Bytes in the record.
        size: usize,
        /// The most the database accepts.
        limit: u64,
    },
    /// The database reported an error, or the connection to it failed.
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// A row holds data that is not a session record written by this crate.
    #[error("the row is not a readable session record")]
    Corrupt(#[source] cloakroom_core::Error),
    /// The schema is not in a state `migrate` can work with (for example a
    /// table of that name with other columns).
    #[error("cannot migrate the session table: {0}")]
    Schema(String),
}

impl SqlError {
    /// Sorts a driver error: size limits become [`SqlError::TooLarge`], pool
    /// timeouts [`SqlError::PoolTimeout`], everything else
    /// [`SqlError::Database`].
    pub(crate) fn from_sqlx(e: sqlx::Error, timeout: Duration) -> Self {
        if matches!(e, sqlx::Error::PoolTimedOut) {
            return Self::PoolTimeout(timeout);
        }
        if is_too_large(&e) {
            return Self::TooLarge(e);
        }
        Self::Database(e)
    }

    /// True when the connection that returned this error can serve the
    /// next statement: the server answered (a refused statement, an
    /// unreadable row, a schema it cannot migrate) or nothing was sent.
    /// After anything else (a broken connection, a timeout, a packet the
    /// server may have dropped the connection over) it is closed.
    pub(crate) fn leaves_connection_usable(&self) -> bool {
        matches!(
            self,
            Self::Database(sqlx::Error::Database(_))
                | Self::RecordTooLarge { .. }
                | Self::Corrupt(_)
                | Self::Schema(_)
        )
    }

    /// The [`ErrorKind`] the layer sees.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::PoolTimeout(_) | Self::StatementTimeout(_) => ErrorKind::Timeout,
            Self::TooLarge(_) | Self::RecordTooLarge { .. } => ErrorKind::TooLarge,
            Self::Corrupt(_) => ErrorKind::Serialization,
            Self::Database(_) | Self::Schema(_) => ErrorKind::Backend,
        }
    }
}

/// True for "the value does not fit" errors: SQLSTATE 22001 (string or
/// binary data right truncation: MySQL in strict mode, PostgreSQL), and
/// MySQL's 1153 (`max_allowed_packet` exceeded), 1406 (data too long) and
/// 1301 (result larger than `max_allowed_packet`).
fn is_too_large(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    if db.code().as_deref() == Some("22001") {
        return true;
    }
    #[cfg(feature = "mysql")]
    if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return matches!(my.number(), 1153 | 1301 | 1406);
    }
    false
}

impl From<SqlError> for cloakroom_core::Error {
    fn from(e: SqlError) -> Self {
        let kind = e.kind();
        match e {
            // Keep the record's own error as the cause, not a wrapper of it.
            SqlError::Corrupt(inner) => {
                cloakroom_core::Error::with_source(kind, "db: unreadable session row", inner)
            }
            other => cloakroom_core::Error::with_source(kind, "db", other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_what_the_layer_answers() {
        let t = Duration::from_millis(10);
        assert_eq!(
            SqlError::from_sqlx(sqlx::Error::PoolTimedOut, t).kind(),
            ErrorKind::Timeout
        );
        assert_eq!(SqlError::StatementTimeout(t).kind(), ErrorKind::Timeout);
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = SqlError::from_sqlx(sqlx::Error::Io(io), t);
        assert_eq!(e.kind(), ErrorKind::Backend);
        let core: cloakroom_core::Error = e.into();
        assert!(core.is_unavailable());
        assert!(std::error::Error::source(&core).is_some());
    }
}
