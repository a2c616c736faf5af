//! The names of the settings this engine reads, as
//! [`SqlOptions::from_settings`](crate::SqlOptions::from_settings),
//! [`SqlStore::from_settings`](crate::SqlStore::from_settings) and
//! `cloakroom-admin` look them up. Each constant is the variable's name
//! without `SESSION_` and without this engine's `DATABASE_`; a variable
//! outside `SESSION_*` that is read when one inside is unset is named after
//! that one, with `FALLBACK_` before it.

/// The database's URL (`mysql://`, `mariadb://`, `postgres://`, `sqlite:`).
pub const URL: &str = "SESSION_DATABASE_URL";
/// The database's URL when [`URL`] is unset, as in Django projects that keep
/// one `DATABASE_URL`.
pub const FALLBACK_URL: &str = "DATABASE_URL";
/// The session table's name
/// ([`SqlOptions::with_table`](crate::SqlOptions::with_table)).
pub const TABLE: &str = "SESSION_DATABASE_TABLE";
/// The most connections the pool opens
/// ([`SqlOptions::with_pool_size`](crate::SqlOptions::with_pool_size)).
pub const POOL_SIZE: &str = "SESSION_DATABASE_POOL_SIZE";
/// The bound on each store call, in milliseconds
/// ([`SqlOptions::with_timeout`](crate::SqlOptions::with_timeout)).
pub const TIMEOUT_MS: &str = "SESSION_DATABASE_TIMEOUT_MS";
/// Whether the store runs `migrate` before its first statement
/// ([`SqlOptions::with_migrate_on_first_use`](crate::SqlOptions::with_migrate_on_first_use)).
pub const MIGRATE: &str = "SESSION_DATABASE_MIGRATE";
/// Seconds between background `clearsessions` runs; 0, the default, for
/// none ([`SqlOptions::with_cleanup_every`](crate::SqlOptions::with_cleanup_every)).
pub const CLEANUP_SECONDS: &str = "SESSION_DATABASE_CLEANUP_SECONDS";
