//! The names of the settings this engine reads, as
//! [`RedisOptions::from_settings`](crate::RedisOptions::from_settings) and
//! [`RedisStore::from_settings`](crate::RedisStore::from_settings) look them
//! up. Each constant is the variable's name without `SESSION_` and without
//! this engine's `REDIS_`.

/// The server's URL (`redis://`, `rediss://`, `redis+cluster://`); shared
/// with the other cache engines, and read by the `cloakroom` crate to pick
/// one.
pub const CACHE_URL: &str = "SESSION_CACHE_URL";
/// Prefix of every session key
/// ([`RedisOptions::with_key_prefix`](crate::RedisOptions::with_key_prefix)).
pub const KEY_PREFIX: &str = "SESSION_REDIS_KEY_PREFIX";
/// Connections the store keeps open, each shared by all calls (default:
/// one per worker thread of the tokio runtime;
/// [`RedisOptions::with_pool_size`](crate::RedisOptions::with_pool_size)).
pub const POOL_SIZE: &str = "SESSION_REDIS_POOL_SIZE";
/// Limit on opening one connection, in milliseconds
/// ([`RedisOptions::with_connect_timeout`](crate::RedisOptions::with_connect_timeout)).
pub const CONNECT_TIMEOUT_MS: &str = "SESSION_REDIS_CONNECT_TIMEOUT_MS";
/// Limit on one command's answer, in milliseconds
/// ([`RedisOptions::with_command_timeout`](crate::RedisOptions::with_command_timeout)).
pub const COMMAND_TIMEOUT_MS: &str = "SESSION_REDIS_COMMAND_TIMEOUT_MS";
/// Limit on a whole store call, in milliseconds
/// ([`RedisOptions::with_timeout`](crate::RedisOptions::with_timeout)).
pub const TIMEOUT_MS: &str = "SESSION_REDIS_TIMEOUT_MS";
/// PEM file of the certificate authority that `rediss://` trusts
/// ([`RedisOptions::with_tls_ca_file`](crate::RedisOptions::with_tls_ca_file)).
pub const TLS_CA_FILE: &str = "SESSION_REDIS_TLS_CA_FILE";
/// The near cache: longest time, in milliseconds, a session read from
/// Redis may be served from process memory; 0 (the default) turns it off
/// ([`RedisOptions::with_near_cache`](crate::RedisOptions::with_near_cache)).
pub const NEAR_CACHE_MS: &str = "SESSION_REDIS_NEAR_CACHE_MS";
