//! The names of the settings this engine reads, as
//! [`MemcachedOptions::from_settings`](crate::MemcachedOptions::from_settings)
//! and [`MemcachedStore::from_settings`](crate::MemcachedStore::from_settings)
//! look them up. Each constant is the variable's name without `SESSION_` and
//! without this engine's `MEMCACHED_`.

/// The server list, `memcached://host[:port][,host[:port]...]`; shared with
/// the other cache engines, and read by the `cloakroom` crate to pick one.
pub const CACHE_URL: &str = "SESSION_CACHE_URL";
/// Text put before each key
/// ([`MemcachedOptions::with_key_prefix`](crate::MemcachedOptions::with_key_prefix)).
pub const KEY_PREFIX: &str = "SESSION_MEMCACHED_KEY_PREFIX";
/// Connections kept open to each server
/// ([`MemcachedOptions::with_pool_size`](crate::MemcachedOptions::with_pool_size)).
pub const POOL_SIZE: &str = "SESSION_MEMCACHED_POOL_SIZE";
/// Limit on opening a connection, in milliseconds
/// ([`MemcachedOptions::with_connect_timeout`](crate::MemcachedOptions::with_connect_timeout)).
pub const CONNECT_TIMEOUT_MS: &str = "SESSION_MEMCACHED_CONNECT_TIMEOUT_MS";
/// Limit on a whole store operation, in milliseconds
/// ([`MemcachedOptions::with_timeout`](crate::MemcachedOptions::with_timeout)).
pub const TIMEOUT_MS: &str = "SESSION_MEMCACHED_TIMEOUT_MS";
