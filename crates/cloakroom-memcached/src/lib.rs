//! Memcached session store for [cloakroom](https://docs.rs/cloakroom):
//! `SESSION_ENGINE=cache` with `SESSION_CACHE_URL=memcached://h1:11211,h2:11211`.
//!
//! * [`store`]: [`MemcachedStore`], the [`SessionStore`](cloakroom_core::SessionStore).
//!   Every call waits for the server's answer and every write is
//!   conditional (`add`, `gets` and `cas`, an answered `delete`), so nothing
//!   reports success that the server did not store, and a session deleted
//!   meanwhile is never written back; the record keeps its deadline to the
//!   millisecond.
//! * [`options`]: [`MemcachedOptions`], the server list from the URL and
//!   the tuning, each with a `with_*` method and a getter.
//! * [`settings`]: the names of the settings it reads
//!   (`SESSION_CACHE_URL`, `SESSION_MEMCACHED_*`).
//! * [`error`]: [`MemcachedError`], converting into
//!   [`cloakroom_core::Error`] (`Backend`, `Timeout`, `TooLarge`).
//! * `client` (private): the adapter over `memcache-async`, which speaks the
//!   protocol: the answers the store acts on, including the `cas` reply the
//!   crate misreads.
//! * `pool` (private): one deadpool pool of connections per server.
//! * `ring` (private): the consistent-hash ring that picks a key's server.
//! * `expiry` (private): deadlines to memcached exptimes (30-day rule,
//!   absolute times, never 0 for a past deadline).
//!
//! Keys are the key prefix followed by the SHA-256 of the session id (64 hex
//! digits), so a dump of the servers holds no usable session id. A server
//! that is down fails only the sessions that live on it, within the
//! operation timeout; the others keep working, and the pool reconnects by
//! itself when the server is back. Sessions are not moved to another server
//! meanwhile: that would hand out stale copies when the server returns.
//!
//! ```
//! use cloakroom_core::config::from_pairs;
//! use cloakroom_memcached::MemcachedStore;
//!
//! let settings = from_pairs([("SESSION_MEMCACHED_KEY_PREFIX", "dashboard:")]);
//! let store = MemcachedStore::from_settings(
//!     "memcached://127.0.0.1:11211,127.0.0.1:11212",
//!     &settings,
//! )?;
//! assert_eq!(store.servers(), ["127.0.0.1:11211", "127.0.0.1:11212"]);
//! # Ok::<(), cloakroom_core::ConfigError>(())
//! ```
//!
//! What memcached cannot promise (no engine built on it can): it evicts
//! items when it runs out of memory, and a restart empties it, so sessions
//! can end before their deadline. See the README.

pub mod error;
pub mod options;
pub mod settings;
pub mod store;

mod client;
mod expiry;
mod pool;
mod ring;

pub use error::MemcachedError;
pub use options::MemcachedOptions;
pub use store::MemcachedStore;
