//! The names of the settings this crate reads, as
//! [`MemoryStore::from_settings`](crate::MemoryStore::from_settings) and
//! [`CachedStore::from_settings`](crate::CachedStore::from_settings) look
//! them up. Each constant is the variable's name without `SESSION_` (the
//! memory engine has no segment of its own: it is `SESSION_CACHE_URL=memory://`).

/// The most sessions stored by `cycle_id` (logins) the memory engine keeps;
/// also the bound of the `cached_db` engine's cache.
pub const CACHE_MAX_ENTRIES: &str = "SESSION_CACHE_MAX_ENTRIES";
/// The most sessions never cycled (anonymous visitors) the memory engine
/// keeps; by default [`CACHE_MAX_ENTRIES`].
pub const CACHE_MAX_ANONYMOUS_ENTRIES: &str = "SESSION_CACHE_MAX_ANONYMOUS_ENTRIES";
/// The longest, in milliseconds, the `cached_db` engine serves a copy
/// without asking the database.
pub const CACHED_DB_TTL_MS: &str = "SESSION_CACHED_DB_TTL_MS";
