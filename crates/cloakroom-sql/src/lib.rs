//! The `db` engine of [cloakroom](https://docs.rs/cloakroom): sessions in a
//! SQL table, on MySQL 8 / MariaDB, PostgreSQL or SQLite through
//! [sqlx](https://docs.rs/sqlx) (Tokio runtime), each driver behind the cargo
//! feature of the same name (`mysql`, `postgres`, `sqlite`).
//!
//! * [`store`]: [`SqlStore`], the [`SessionStore`](cloakroom_core::SessionStore),
//!   and the library forms of the two commands, [`SqlStore::migrate`] and
//!   [`SqlStore::clear_expired`].
//! * [`options`]: [`SqlOptions`], the builder: the URL and the tuning, each
//!   with a `with_*` method and a getter.
//! * [`settings`]: the names of the settings it reads
//!   (`SESSION_DATABASE_*`, `DATABASE_URL`).
//! * [`cleanup`]: the optional background cleanup and its [`CleanupGuard`].
//! * [`error`]: [`SqlError`], and its mapping onto the layer's error kinds.
//! * `sql` and `schema` (private): the statements and the migration steps of
//!   each dialect.
//! * `src/bin/cloakroom-admin.rs`: the `cloakroom-admin migrate` and
//!   `cloakroom-admin clearsessions` commands.
//!
//! # The table
//!
//! | column | MySQL / MariaDB | PostgreSQL | SQLite |
//! |---|---|---|---|
//! | `session_key`, primary key: SHA-256 hex of the session id | `CHAR(64) ascii_bin` | `VARCHAR(64)` | `TEXT` |
//! | `session_data`: the record ([`Record::to_bytes`](cloakroom_core::Record::to_bytes)) | `MEDIUMBLOB` (16 MiB) | `BYTEA` | `BLOB` |
//! | `expires_at_ms`: the deadline, ms since the Unix epoch, indexed | `BIGINT` | `BIGINT` | `INTEGER` |
//!
//! The raw session id never reaches the table, so a dump of it lets no one
//! log in. The deadline is compared with the application's clock (as Django
//! compares `expire_date` with `timezone.now()`), so app servers need
//! synchronized clocks, not the database.
//!
//! # How each call maps to SQL
//!
//! * `load`: `SELECT ... WHERE session_key = ? AND expires_at_ms > now`. A row
//!   past its deadline is invisible even before `clearsessions` removes it;
//!   the returned deadline is the column's, so it reflects the last `touch`.
//! * `create`: an `INSERT` on the primary key, never check-then-write. A key
//!   held by a row past its deadline does not block it (PostgreSQL and
//!   SQLite: `ON CONFLICT DO UPDATE ... WHERE expires_at_ms <= now` in the
//!   same statement; MySQL: on a duplicate key, delete the key's row only if
//!   expired and insert again). A live holder gives `Ok(false)` and the layer
//!   retries with a new id.
//! * `update`: `UPDATE ... WHERE session_key = ? AND expires_at_ms > now`;
//!   no row means the session was deleted (or expired) meanwhile and it stays
//!   deleted.
//! * `touch`: the same `UPDATE` of `expires_at_ms` only.
//!
//! # Why one store type with a pool per driver
//!
//! sqlx's `Any` driver would give one pool type, but the dialects differ in
//! exactly what matters here (placeholders, upsert syntax, `DELETE ...
//! LIMIT`, error codes, the schema), so the statements would be per backend
//! anyway, and `Any` adds a translation layer and a global driver registry
//! on every call. Instead [`SqlStore`] holds a typed pool for the one driver
//! its URL picked, and the store code is written once and instantiated per
//! driver by a macro.
//!
//! # Bounded waits
//!
//! Every store call (checkout of a pooled connection, opening one if needed,
//! and the statement) finishes within [`SqlOptions::with_timeout`] (1 s by
//! default): a database that is down or hung gives an error of kind
//! [`Timeout`](cloakroom_core::ErrorKind::Timeout) or
//! [`Backend`](cloakroom_core::ErrorKind::Backend), answered 503 by the
//! layer. A connection cut off mid-statement, or whose statement failed
//! other than by the server's answer, is closed, not reused; idle
//! connections are pinged before reuse, so when the database comes back the
//! next calls reconnect without a restart. Connections are pooled by
//! deadpool, not by sqlx's pool, which pings every connection it gets back
//! (a second round trip per statement; the crate README has the figures).
//!
//! # Example
//!
//! ```
//! use cloakroom_core::{Id, Record, SessionStore, record::Data};
//! use cloakroom_sql::SqlStore;
//! use time::{Duration, OffsetDateTime};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqlStore::new("sqlite::memory:")?;
//! store.migrate().await?;
//!
//! let key = Id::generate()?.store_key();
//! let record = Record::new(Data::new(), OffsetDateTime::now_utc() + Duration::hours(1));
//! assert!(store.create(&key, &record).await?);
//! assert!(!store.create(&key, &record).await?, "a live key is never overwritten");
//! assert!(store.load(&key).await?.is_some());
//!
//! store.delete(&key).await?;
//! assert!(!store.update(&key, &record).await?, "a deleted session stays deleted");
//! assert_eq!(store.clear_expired().await?, 0);
//! # Ok(()) }
//! ```

#[cfg(not(any(feature = "mysql", feature = "postgres", feature = "sqlite")))]
compile_error!(
    "cloakroom-sql needs at least one driver: enable the `mysql`, `postgres` or `sqlite` feature"
);

pub mod cleanup;
pub mod error;
pub mod options;
mod pool;
mod schema;
pub mod settings;
mod sql;
pub mod store;

pub use cleanup::CleanupGuard;
pub use error::SqlError;
pub use options::{Backend, SqlOptions, redact_url};
pub use store::{SqlStore, database_url};
