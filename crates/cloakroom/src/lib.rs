//! cloakroom: Django-grade session storage for [axum](https://docs.rs/axum).
//!
//! One tower [`Layer`](tower::Layer), [`SessionLayer`], loads the session
//! before the handler runs and writes it back afterwards; handlers take a
//! [`Session`] extractor. The operator picks where sessions live with one
//! setting, `SESSION_ENGINE`, using Django's names.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use cloakroom::{Session, SessionLayer};
//!
//! async fn count(session: Session) -> Result<String, cloakroom::Error> {
//!     let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
//!     session.insert("n", n).await?;
//!     Ok(format!("visit {n}"))
//! }
//!
//! # async fn run() {
//! let app: Router = Router::new()
//!     .route("/", get(count))
//!     .layer(SessionLayer::from_env());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```
//!
//! # What lives where
//!
//! * [`layer`](SessionLayer) and [`service`](SessionService): the middleware
//!   (tower plumbing only).
//! * `plan.rs`: when a session is saved, and how: one pure function from
//!   the session's end state, the settings and the status to a plan, with
//!   Django's `SessionMiddleware` rules and ours written next to it.
//! * `finish.rs`: carries the plan out after the handler; `store.rs`: the
//!   only place that calls a store (timeout, logging, retries); `jar.rs`:
//!   the `Cookie` header and `Set-Cookie`.
//! * [`Session`]: the per-request handle and extractor; its state is
//!   private to it.
//! * [`SessionConfig`]: the cookie and saving settings.
//! * [`Engine`]: a server-side [`SessionStore`] or a client-side
//!   [`CookieCodec`]; engines come from their own crates, turned on by this
//!   crate's features (`redis`, `memcached`, `mysql`, `postgres`, `sqlite`,
//!   `cookie`, or `full`), and documented here as the modules `redis`,
//!   `memcached`, `sql` and `cookies` (build the docs with `--features
//!   full` to see them all). The in-process [`memory`] engine is always
//!   there and is the default. The engine crates' README examples are
//!   doc-tests of this crate, written as an application that depends on
//!   `cloakroom` alone writes them (`use cloakroom::redis::RedisStore`).
//!
//! # Settings read by `from_env()`
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SESSION_ENGINE` | `cache` | `cache`, `db`, `cached_db`, `signed_cookies`, `encrypted_cookies`; Django's dotted names are accepted |
//! | `SESSION_CACHE_URL` | `memory://` | for `cache`: `memory://`, `redis://`, `rediss://`, `redis+cluster://`, `memcached://` |
//! | `SESSION_DATABASE_URL` | `DATABASE_URL` | for `db` and `cached_db` |
//! | `SESSION_COOKIE_NAME` | `sessionid` | |
//! | `SESSION_COOKIE_AGE` | `1209600` | seconds (at most 100 years); cookie `Max-Age` and server-side deadline |
//! | `SESSION_COOKIE_ABSOLUTE_AGE` | `SESSION_COOKIE_AGE` | cookie engines: seconds a session lives from its issue or last `cycle_id`, however often renewed |
//! | `SESSION_COOKIE_DOMAIN` | unset | host-only cookie when unset |
//! | `SESSION_COOKIE_PATH` | `/` | |
//! | `SESSION_COOKIE_SECURE` | `false` | |
//! | `SESSION_COOKIE_HTTPONLY` | `true` | |
//! | `SESSION_COOKIE_SAMESITE` | `Lax` | `Lax`, `Strict`, `None` (needs Secure), `False` |
//! | `SESSION_SAVE_EVERY_REQUEST` | `false` | refresh every non-5xx response to a request with a live session cookie |
//! | `SESSION_TOUCH_AFTER_SECONDS` | 1 % of the session's age, at most 60 | skip a renewal of an unchanged session that would move its deadline by less than this; `0` renews every time |
//! | `SESSION_EXPIRE_AT_BROWSER_CLOSE` | `false` | |
//! | `SESSION_BACKEND_TIMEOUT_MS` | `1500` | longest wait for one store call before 503 |
//! | `SESSION_COOKIE_MAX_BYTES` | `7168` | cookie engines: bound on the session's cookies |
//! | `SESSION_CACHE_MAX_ENTRIES` | `100000` | memory engine: sessions stored by `cycle_id` (logins) kept before eviction |
//! | `SESSION_CACHE_MAX_ANONYMOUS_ENTRIES` | `SESSION_CACHE_MAX_ENTRIES` | memory engine: other sessions kept before eviction, so anonymous visitors cannot evict logged-in users |
//! | `SESSION_REDIS_NEAR_CACHE_MS` | `0` (off) | Redis engine: serve sessions from process memory until Redis reports a change (RESP3 client tracking), each for at most this many milliseconds after its read; see `cloakroom-redis` |
//!
//! A bad value is an error naming the variable, the value and what is
//! accepted; `from_env()` panics with it, `try_from_env()` returns it. The
//! names are constants in [`settings`] (the layer's own) and in each engine's
//! `settings` module (`memory::settings`, `redis::settings`, ...).
//!
//! # Timeouts
//!
//! Four limits bound how long a request waits for a store that is down or
//! hung. The cookie engines make no store calls and need none.
//!
//! | limit | set with | default | bounds |
//! |---|---|---|---|
//! | the layer's | `SESSION_BACKEND_TIMEOUT_MS`, [`SessionLayer::with_backend_timeout`] | 1500 ms | each store call the layer makes, on any engine |
//! | the store's total | `SESSION_REDIS_TIMEOUT_MS`, `SESSION_MEMCACHED_TIMEOUT_MS`, `SESSION_DATABASE_TIMEOUT_MS` (the engine options' `timeout`) | 1000 ms | one store call inside the engine, all of it: waiting for a pooled connection, connecting, the command and its reply, the engine's own retries |
//! | connect | `SESSION_REDIS_CONNECT_TIMEOUT_MS`, `SESSION_MEMCACHED_CONNECT_TIMEOUT_MS` | 500 ms | opening one connection (Redis: also the wait for the pool to hand one out) |
//! | command | `SESSION_REDIS_COMMAND_TIMEOUT_MS` | 500 ms | the answer to one Redis command or pipeline, and the check of a pooled connection before its reuse |
//!
//! How they combine:
//!
//! * A store call ends at the first limit that runs out, so it waits at most
//!   the smaller of the layer's timeout and the store's total. The connect
//!   and command timeouts are steps inside the total: a call that has to
//!   connect and then waits for its reply can reach the total first
//!   (500 + 500 ms is not less than 1000 ms), and the total wins.
//! * Keep the store's total below the layer's, as the defaults do
//!   (1000 < 1500 ms). The engine then ends a hung call itself: it replaces
//!   the connection (the SQL engine closes one stuck in a statement), and
//!   its error names the operation (`Redis load did not complete within
//!   1s`). The layer's timeout is the backstop, for an engine that does not
//!   end a call by itself (a store of your own); it drops the call, and its
//!   error only says `no answer within 1500 ms`.
//! * Either way the request is answered 503 ([`ErrorKind::Timeout`]) and
//!   an error event is logged with the engine and the operation.
//! * The limits are per call, and a request makes its calls one after the
//!   other: a load, then a save (an update or a touch); a login
//!   ([`Session::cycle_id`]) stores the new record, then retires the old
//!   one (a touch and a delete); a logout deletes. A request that reads and
//!   changes its session against a hung backend can so wait about twice
//!   the smaller limit (about 2 s with the defaults), a login about four
//!   times. A backend that refuses connections fails them at once.
//! * `cached_db`: a hit in the in-process cache makes no call; a miss or a
//!   write is a call to the database, under the SQL store's total and the
//!   layer's timeout.
//! * [`Engine::health_check`] takes a timeout of its own, for health
//!   endpoints.

mod config;
mod env;
mod error;
mod extract;
mod finish;
mod jar;
mod layer;
mod plan;
mod service;
mod session;
pub mod settings;
mod store;

use std::fmt;
use std::sync::Arc;

pub use cloakroom_core::{
    ConfigError, CookieCodec, ErrorKind, Expiry, Opened, Record, SessionStore, Settings, StoreKey,
};
pub use config::{SameSite, SessionConfig};
pub use error::Error;
pub use extract::MissingSessionLayer;
pub use layer::SessionLayer;
pub use service::{ResponseFuture, SessionService};
pub use session::Session;

// The engines, each its crate's docs in place (`#[doc(inline)]`), so that
// `cargo doc --features full` (and docs.rs, see Cargo.toml) shows them as
// modules of this crate, where applications use them.

/// The in-process engine (the `cloakroom-memory` crate).
#[doc(inline)]
pub use cloakroom_memory as memory;

/// The Redis engine (the `cloakroom-redis` crate; feature `redis`).
#[cfg(feature = "redis")]
#[doc(inline)]
pub use cloakroom_redis as redis;

/// The Memcached engine (the `cloakroom-memcached` crate; feature
/// `memcached`).
#[cfg(feature = "memcached")]
#[doc(inline)]
pub use cloakroom_memcached as memcached;

/// The SQL engine (the `cloakroom-sql` crate; features `mysql`,
/// `postgres`, `sqlite`).
#[cfg(any(feature = "mysql", feature = "postgres", feature = "sqlite"))]
#[doc(inline)]
pub use cloakroom_sql as sql;

/// The cookie engines (the `cloakroom-cookie` crate; feature `cookie`).
#[cfg(feature = "cookie")]
#[doc(inline)]
pub use cloakroom_cookie as cookies;

/// The README examples of this crate and of each engine crate, run as
/// doc-tests against this crate alone (`use cloakroom::redis::...`), as an
/// application that depends on `cloakroom` only writes them. `cargo test
/// --doc -p cloakroom --features full` runs them all.
#[cfg(doctest)]
mod readme_examples {
    #[doc = include_str!("../README.md")]
    mod cloakroom {}

    #[cfg(feature = "redis")]
    #[doc = include_str!("../../cloakroom-redis/README.md")]
    mod redis {}

    #[cfg(feature = "memcached")]
    #[doc = include_str!("../../cloakroom-memcached/README.md")]
    mod memcached {}

    #[cfg(any(feature = "mysql", feature = "postgres", feature = "sqlite"))]
    #[doc = include_str!("../../cloakroom-sql/README.md")]
    mod sql {}

    #[cfg(feature = "cookie")]
    #[doc = include_str!("../../cloakroom-cookie/README.md")]
    mod cookies {}
}

/// The [`time`](https://docs.rs/time) crate, whose `Duration` and
/// `OffsetDateTime` [`Expiry`] holds (`Expiry::OnInactivity(time::Duration)`,
/// `Expiry::AtDateTime(time::OffsetDateTime)`), and which
/// [`Session::expiry_date`] returns: no need to depend on it yourself.
/// Everything else takes `std::time::Duration`; [`Expiry::on_inactivity`]
/// takes one too.
pub use time;

/// The crate every engine is written against, for engine authors.
pub use cloakroom_core as core;

/// Where sessions live: a server-side store, or the cookie itself.
#[derive(Clone)]
pub enum Engine {
    /// A store keyed by the hash of the session id.
    Store(Arc<dyn SessionStore>),
    /// A codec that seals the whole session into the cookie.
    Cookie(Arc<dyn CookieCodec>),
}

impl Engine {
    /// Wraps a server-side store.
    pub fn store(store: impl SessionStore) -> Self {
        Self::Store(Arc::new(store))
    }

    /// Wraps a cookie codec.
    pub fn cookie(codec: impl CookieCodec) -> Self {
        Self::Cookie(Arc::new(codec))
    }

    /// The engine's short name (`memory`, `redis`, `signed_cookies`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Store(store) => store.engine(),
            Self::Cookie(codec) => codec.engine(),
        }
    }

    /// The database behind the `db` and `cached_db` engines (`"PostgreSQL"`,
    /// `"MySQL or MariaDB"`, `"MariaDB"` for a `mariadb://` URL,
    /// `"SQLite"`); `None` for the others, whose name says it all.
    ///
    /// ```
    /// # use cloakroom::{Engine, memory::MemoryStore};
    /// assert_eq!(Engine::store(MemoryStore::new(10)).backend(), None);
    /// ```
    pub fn backend(&self) -> Option<&'static str> {
        match self {
            Self::Store(store) => store.backend(),
            Self::Cookie(_) => None,
        }
    }

    /// Asks the backend whether it answers, by loading a key that no session
    /// has; cookie engines have no backend and always answer. For health
    /// endpoints.
    ///
    /// # Errors
    /// When the backend is down, or slower than `timeout`.
    pub async fn health_check(&self, timeout: std::time::Duration) -> Result<(), Error> {
        let Self::Store(store) = self else {
            return Ok(());
        };
        let key = cloakroom_core::Id::generate()?.store_key();
        match tokio::time::timeout(timeout, store.load(&key)).await {
            Ok(result) => result.map(|_| ()).map_err(Error::from),
            Err(_) => Err(Error::from(cloakroom_core::Error::new(
                ErrorKind::Timeout,
                format!("no answer within {} ms", timeout.as_millis()),
            ))),
        }
    }

    /// True for server-side engines, which can revoke a session at once.
    pub fn is_server_side(&self) -> bool {
        matches!(self, Self::Store(_))
    }
}

/// The default engine, as `from_env()` builds it with no settings: the
/// in-process [`memory`] store with its default bounds.
///
/// ```
/// assert_eq!(cloakroom::Engine::default().name(), "memory");
/// ```
impl Default for Engine {
    fn default() -> Self {
        Self::store(memory::MemoryStore::default())
    }
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Store(store) => f.debug_tuple("Engine::Store").field(store).finish(),
            Self::Cookie(codec) => f.debug_tuple("Engine::Cookie").field(codec).finish(),
        }
    }
}
