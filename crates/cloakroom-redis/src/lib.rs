//! The Redis engine of [cloakroom](https://docs.rs/cloakroom): sessions in a
//! Redis server or a Redis Cluster, through a
//! [deadpool-redis](https://docs.rs/deadpool-redis) connection pool.
//!
//! Applications normally pick it with settings rather than code:
//! `SESSION_ENGINE=cache` and `SESSION_CACHE_URL=redis://host:6379/1`
//! (or `redis+cluster://h1:6379,h2:6379,h3:6379`), with the `redis` feature
//! of the `cloakroom` crate.
//!
//! * [`store`]: [`RedisStore`], the [`SessionStore`](cloakroom_core::SessionStore)
//!   implementation, and which Redis command serves which operation.
//! * [`options`]: [`RedisOptions`], the tuning (key prefix, pool size,
//!   timeouts, near cache), each with a `with_*` method and a getter.
//! * [`settings`]: the names of the settings it reads (`SESSION_CACHE_URL`,
//!   `SESSION_REDIS_*`).
//! * The near cache, off by default (`SESSION_REDIS_NEAR_CACHE_MS`,
//!   [`RedisOptions::with_near_cache`]): sessions read from Redis are
//!   served from process memory until Redis reports a write to their key
//!   (RESP3 client tracking, `BCAST` on the key prefix, one extra
//!   connection per server or cluster master), and for at most the
//!   setting's time after their read. Writes go to Redis first. When a
//!   tracking connection drops or stops answering, the cache is emptied
//!   before any further load is served from it. [`NearCacheStats`] counts
//!   its work. The crate README says what it promises, with measurements.
//! * [`error`]: [`RedisStoreError`] and how it maps onto the core error kinds.
//!
//! ```no_run
//! use cloakroom_core::{Id, Record, SessionStore, record::Data};
//! use cloakroom_redis::{RedisOptions, RedisStore};
//! use time::{Duration, OffsetDateTime};
//!
//! # async fn run() -> Result<(), cloakroom_core::Error> {
//! let store = RedisStore::new("redis://127.0.0.1:6379/0", RedisOptions::new())?;
//! let key = Id::generate()?.store_key();
//! let record = Record::new(Data::new(), OffsetDateTime::now_utc() + Duration::hours(1));
//! assert!(store.create(&key, &record).await?);
//! assert!(store.load(&key).await?.is_some());
//! store.delete(&key).await?;
//! # Ok(())
//! # }
//! ```

pub mod error;
mod near;
pub mod options;
pub mod settings;
pub mod store;

pub use error::RedisStoreError;
pub use near::NearCacheStats;
pub use options::RedisOptions;
pub use store::RedisStore;
