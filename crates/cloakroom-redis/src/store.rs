//! [`RedisStore`]: the [`SessionStore`] on a Redis server or a Redis Cluster.
//!
//! # How connections are held
//!
//! Both kinds of connection that deadpool-redis pools (a single server's
//! `MultiplexedConnection`, a cluster's `ClusterConnection`) pipeline any
//! number of concurrent commands over one socket and are cheap to clone. So
//! the store does not check a connection out of the pool for every call,
//! which costs a liveness round trip (`UNWATCH` + `PING`) each time: it keeps
//! a few pooled connections checked out ("lanes"), and every call clones the
//! connection of the next lane. Measured on a shared two-core machine (32
//! concurrent `load`s of a 20 KB session against one local redis-server),
//! that served 1.2 to 1.8 times the calls per second of a checkout per call,
//! and about as many as one bare multiplexed connection.
//!
//! The pool still does what it is good at: opening connections within the
//! connect timeout and checking a connection's liveness before it is reused.
//! When a call fails in a way that means the connection is broken (I/O
//! error, dropped connection, timeout), its lane gives the connection back to
//! the pool and the next call on that lane checks out another; one call per
//! lane reconnects while the others wait for it, so a failure does not turn
//! into a burst of connection attempts. That is how the store recovers,
//! without a restart, once Redis is back.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cloakroom_core::config::Settings;
use cloakroom_core::record::{deadline_field, from_millis, has_deadline_field, millis, now_millis};
use cloakroom_core::{Call, ConfigError, Error, Record, SessionStore, StoreKey};
use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::cluster_async::ClusterConnection;
use deadpool_redis::redis::{self, FromRedisValue, Pipeline, RedisError, Value};
use deadpool_redis::{PoolConfig, PoolError, Runtime, Timeouts};
use time::OffsetDateTime;
use tokio::time::{Instant, timeout_at};

use crate::near::{NearCache, NearCacheStats, Ticket, Tracker, TrackerConfig};
use crate::options::{ACCEPTED_URLS, Target, redact};
use crate::{RedisOptions, RedisStoreError};

/// A session store on Redis (`redis://`, `rediss://`) or Redis Cluster
/// (`redis+cluster://`), on deadpool-redis connections.
///
/// Sessions live under `key_prefix + StoreKey` (the SHA-256 of the id in hex)
/// and their keys expire exactly when the sessions end, so Redis itself drops
/// expired sessions and a key that is there holds a live session. Every
/// contract operation is one round trip:
///
/// | operation | Redis |
/// |---|---|
/// | `load` | `GET key` |
/// | `create` | `SET key value NX PXAT expiry` |
/// | `update` | `SET key value XX PXAT expiry` (never recreates a deleted session) |
/// | `touch` | a short Lua script (`EVAL`): if the key exists, `PEXPIREAT` it and overwrite the deadline at the end of the value (`SETRANGE`) |
/// | `delete` | `DEL key` |
///
/// The expiry is absolute: the session's last millisecond, one before its
/// deadline (a session is over once the clock reaches its deadline, while
/// Redis keeps a key until its clock passes the expiry). A write whose
/// deadline has already come leaves no key: `create` then stores nothing
/// (and answers `true`, the key staying free), while `update` and `touch` end
/// the session with a `DEL` and answer whether there was one. So no key
/// outlives its session, and no `SET ... XX` or touch brings an ended session
/// back. This holds as far as Redis's clock agrees with the application's:
/// keep them in step (NTP). A Redis clock that runs ahead ends sessions that
/// much early; one that lags keeps their keys that much longer, which `load`
/// still refuses (it checks the deadline in the value), but which an update
/// or a touch in that time would find.
///
/// The value is the record's bytes ([`Record::to_bytes`]), which end with its
/// deadline in a fixed nine-byte form ([`deadline_field`]). Because `touch`
/// rewrites those bytes on the server, `load` learns the latest deadline from
/// the value itself and needs one command, not a `GET` and a `PTTL`.
///
/// A value written by an earlier version, whose deadline is not in that form,
/// is still read: `load` then asks for its key's expiry (`PEXPIRETIME`) in a
/// second round trip, and `touch` only moves that expiry. `load` asks the
/// same of a value whose deadline has passed while its key lives on, and the
/// key's expiry decides only if it is later than that deadline, which is what
/// a touch by an instance of an earlier version leaves during an upgrade.
///
/// Needs Redis 7.0 or later (`PXAT` came in 6.2, `PEXPIRETIME` in 7.0).
///
/// Building the store does not connect: a Redis that is down at startup is
/// reported by the first request that needs a session, and the store
/// reconnects on its own once Redis is back (see the [module docs](self)).
///
/// ```no_run
/// use cloakroom_redis::{RedisOptions, RedisStore};
///
/// let store = RedisStore::new("redis://127.0.0.1:6379/0", RedisOptions::new())?;
/// let cluster = RedisStore::new(
///     "redis+cluster://10.0.0.1:6379,10.0.0.2:6379,10.0.0.3:6379",
///     RedisOptions::new().with_key_prefix("horizon:session:"),
/// )?;
/// # Ok::<(), cloakroom_redis::RedisStoreError>(())
/// ```
pub struct RedisStore {
    backend: Backend,
    /// The near cache and its tracker, when it is on.
    near: Option<Near>,
    key_prefix: String,
    timeout: Duration,
    /// The URL with its password redacted, for `Debug` and logs.
    shown_url: String,
}

struct Near {
    cache: Arc<NearCache>,
    tracker: Tracker,
    config: TrackerConfig,
}

enum Backend {
    Single(Lanes<deadpool_redis::Pool>),
    Cluster(Lanes<deadpool_redis::cluster::Pool>),
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (lanes, status) = match &self.backend {
            Backend::Single(l) => (l.slots.len(), l.pool.status()),
            Backend::Cluster(l) => (l.slots.len(), l.pool.status()),
        };
        f.debug_struct("RedisStore")
            .field("url", &self.shown_url)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("connections", &lanes)
            .field("pool_size", &status.size)
            .field("near_cache", &self.near.as_ref().map(|n| n.cache.stats()))
            .finish()
    }
}

/// A deadpool-redis pool of either kind, seen as a source of shareable
/// connections.
trait Source: Send + Sync + 'static {
    /// What the pool hands out; giving it back means dropping it.
    type Object: Send + 'static;
    /// The shareable connection inside it.
    type Conn: ConnectionLike + Clone + Send + Sync + 'static;
    fn checkout(&self) -> impl Future<Output = Result<Self::Object, PoolError>> + Send;
    fn conn(object: &Self::Object) -> Self::Conn;
}

impl Source for deadpool_redis::Pool {
    type Object = deadpool_redis::Connection;
    type Conn = MultiplexedConnection;
    fn checkout(&self) -> impl Future<Output = Result<Self::Object, PoolError>> + Send {
        self.get()
    }
    fn conn(object: &Self::Object) -> Self::Conn {
        MultiplexedConnection::clone(object)
    }
}

impl Source for deadpool_redis::cluster::Pool {
    type Object = deadpool_redis::cluster::Connection;
    type Conn = ClusterConnection;
    fn checkout(&self) -> impl Future<Output = Result<Self::Object, PoolError>> + Send {
        self.get()
    }
    fn conn(object: &Self::Object) -> Self::Conn {
        ClusterConnection::clone(object)
    }
}

/// A few pooled connections kept checked out and shared by all calls.
struct Lanes<S: Source> {
    pool: S,
    slots: Box<[Lane<S>]>,
    next_lane: AtomicUsize,
    next_id: AtomicU64,
}

struct Lane<S: Source> {
    /// The connection in use (with an id, so that a failure report about an
    /// older connection does not drop its replacement) and the pooled object
    /// that owns it. A std mutex: it is held only to clone or swap.
    held: Mutex<Option<Held<S>>>,
    /// Taken while (re)connecting, so one call per lane does it.
    connecting: tokio::sync::Mutex<()>,
}

struct Held<S: Source> {
    id: u64,
    conn: S::Conn,
    _object: S::Object,
}

impl<S: Source> Lane<S> {
    fn current(&self) -> Option<(u64, S::Conn)> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.as_ref().map(|h| (h.id, h.conn.clone()))
    }

    /// Gives connection `id` back to the pool, if the lane still holds it.
    fn discard(&self, id: u64) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.as_ref().is_some_and(|h| h.id == id) {
            *held = None;
        }
    }
}

impl<S: Source> Lanes<S> {
    fn new(pool: S, count: usize) -> Self {
        let slots = (0..count.max(1))
            .map(|_| Lane {
                held: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            })
            .collect();
        Self {
            pool,
            slots,
            next_lane: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
        }
    }

    /// The connection of `lane`, checking one out of the pool if it has none.
    async fn connection(&self, lane: &Lane<S>) -> Result<(u64, S::Conn), PoolError> {
        if let Some(current) = lane.current() {
            return Ok(current);
        }
        let _connecting = lane.connecting.lock().await;
        // Another call may have connected while this one waited.
        if let Some(current) = lane.current() {
            return Ok(current);
        }
        // Boxed: connecting is rare, and its future is several kilobytes
        // that every query's future would otherwise carry and copy.
        let object = Box::pin(self.pool.checkout()).await?;
        let conn = S::conn(&object);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        *lane.held.lock().unwrap_or_else(PoisonError::into_inner) = Some(Held {
            id,
            conn: conn.clone(),
            _object: object,
        });
        Ok((id, conn))
    }

    /// Runs `pipe` on the next lane's connection before `deadline`.
    async fn query<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
        deadline: Instant,
        limit: Duration,
    ) -> Result<T, RedisStoreError> {
        let index = self.next_lane.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let lane = &self.slots[index];
        let timed_out = RedisStoreError::Timeout { op, limit };
        let (id, mut conn) = match timeout_at(deadline, self.connection(lane)).await {
            Err(_) => return Err(timed_out),
            Ok(Err(source)) => return Err(RedisStoreError::Pool { op, source }),
            Ok(Ok(held)) => held,
        };
        match timeout_at(deadline, pipe.query_async(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => {
                if breaks_connection(&source) {
                    lane.discard(id);
                }
                Err(RedisStoreError::Command { op, source })
            }
            Err(_) => {
                // No answer in time: whether the server hangs or the network
                // dropped the connection silently, this one is not to be
                // trusted again.
                lane.discard(id);
                Err(timed_out)
            }
        }
    }
}

/// Makes a `rediss://` connection trust the CA in `ca_file`, if one is given.
fn with_tls_roots(
    info: redis::ConnectionInfo,
    ca_file: Option<&std::path::Path>,
) -> Result<redis::ConnectionInfo, RedisStoreError> {
    #[cfg(feature = "tls")]
    {
        // rustls needs a process-wide crypto provider; install ring's unless
        // the application already chose one (the error then only says so).
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let Some(ca_file) = ca_file else {
        return Ok(info);
    };
    let tls_error = |reason: String| RedisStoreError::Tls { reason };
    if !matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
        return Err(tls_error(
            "a CA file is set but the URL is not rediss://".to_owned(),
        ));
    }
    #[cfg(feature = "tls")]
    {
        let pem =
            std::fs::read(ca_file).map_err(|e| tls_error(format!("{}: {e}", ca_file.display())))?;
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        };
        let client = redis::Client::build_with_tls(info, certificates)
            .map_err(|e| tls_error(format!("{}: {e}", ca_file.display())))?;
        Ok(client.get_connection_info().clone())
    }
    #[cfg(not(feature = "tls"))]
    {
        // Not reached: Target::parse already refused rediss:// without TLS.
        Err(tls_error(format!(
            "{}: TLS is not compiled in",
            ca_file.display()
        )))
    }
}

/// True for errors after which the connection itself is suspect, as opposed
/// to an error reply that Redis sent over a healthy connection.
fn breaks_connection(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

impl RedisStore {
    /// A store for the Redis at `url`, tuned by `options`. Does not connect.
    ///
    /// # Errors
    /// [`RedisStoreError::InvalidUrl`] when the URL is not one of
    /// `redis://[user:password@]host[:port][/db]`, `rediss://...` (with the
    /// `tls` feature), or `redis+cluster://[user:password@]host:port,host:port,...`.
    pub fn new(url: &str, options: RedisOptions) -> Result<Self, RedisStoreError> {
        let lanes = options.pool_size();
        let pool_config = PoolConfig {
            // A lane gives its connection back before it takes another, so
            // the pool never needs more than one per lane.
            max_size: lanes,
            timeouts: Timeouts {
                wait: Some(options.connect_timeout()),
                create: Some(options.connect_timeout()),
                recycle: Some(options.command_timeout()),
            },
            ..PoolConfig::default()
        };
        let invalid = |e: RedisError| RedisStoreError::InvalidUrl {
            url: redact(url),
            reason: e.to_string(),
        };
        let mut tracked = Vec::new();
        let backend = match Target::parse(url)? {
            Target::Single(info) => {
                let info = with_tls_roots(*info, options.tls_ca_file())?;
                tracked.push(info.clone());
                let connection = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(options.connect_timeout()))
                    .set_response_timeout(Some(options.command_timeout()));
                let manager =
                    deadpool_redis::Manager::new_with_config(info, connection).map_err(invalid)?;
                let pool = deadpool_redis::Pool::builder(manager)
                    .config(pool_config)
                    .runtime(Runtime::Tokio1)
                    .build()
                    .map_err(RedisStoreError::Build)?;
                Backend::Single(Lanes::new(pool, lanes))
            }
            Target::Cluster(_) if options.tls_ca_file().is_some() => {
                return Err(RedisStoreError::Tls {
                    reason: "a CA file is supported for a single server only; a cluster over \
                             rediss+cluster:// trusts the system's certificate authorities"
                        .to_owned(),
                });
            }
            Target::Cluster(nodes) => {
                // deadpool-redis builds the cluster client itself and takes no
                // connection settings for it; the pool's create and recycle
                // timeouts and this store's deadline on every call are what
                // bound a cluster call.
                tracked.clone_from(&nodes);
                let manager =
                    deadpool_redis::cluster::Manager::new(nodes, false).map_err(invalid)?;
                let pool = deadpool_redis::cluster::Pool::builder(manager)
                    .config(pool_config)
                    .runtime(Runtime::Tokio1)
                    .build()
                    .map_err(RedisStoreError::Build)?;
                Backend::Cluster(Lanes::new(pool, lanes))
            }
        };
        let near = (!options.near_cache().is_zero()).then(|| {
            let (entries, bytes) = options.near_cache_limits();
            Near {
                cache: Arc::new(NearCache::new(options.near_cache(), entries, bytes)),
                tracker: Tracker::default(),
                config: TrackerConfig {
                    nodes: tracked,
                    cluster: matches!(backend, Backend::Cluster(_)),
                    prefix: options.key_prefix().to_owned(),
                    connect_timeout: options.connect_timeout(),
                    command_timeout: options.command_timeout(),
                },
            }
        });
        Ok(Self {
            backend,
            near,
            key_prefix: options.key_prefix().to_owned(),
            timeout: options.timeout(),
            shown_url: redact(url),
        })
    }

    /// The store the facade builds for `SESSION_CACHE_URL=url`, tuned by the
    /// `SESSION_REDIS_*` settings (see [`RedisOptions::from_settings`]).
    ///
    /// # Errors
    /// A malformed URL (named as `SESSION_CACHE_URL`, password redacted) or a
    /// bad tuning value.
    pub fn from_settings(url: &str, settings: &dyn Settings) -> Result<Self, ConfigError> {
        let options = RedisOptions::from_settings(settings)?;
        Self::new(url, options).map_err(|e| match e {
            RedisStoreError::InvalidUrl { url, reason } => ConfigError::new(
                crate::settings::CACHE_URL,
                url,
                format!("{ACCEPTED_URLS} ({reason})"),
            ),
            RedisStoreError::Tls { reason } => ConfigError::new(
                crate::settings::TLS_CA_FILE,
                settings
                    .get(crate::settings::TLS_CA_FILE)
                    .unwrap_or_default(),
                format!("a readable PEM file, with a rediss:// URL of a single server ({reason})"),
            ),
            other => ConfigError::new(crate::settings::CACHE_URL, redact(url), other.to_string()),
        })
    }

    /// The Redis key a session is kept under: the prefix and the store key.
    pub fn redis_key(&self, key: &StoreKey) -> String {
        let mut k = String::with_capacity(self.key_prefix.len() + 64);
        k.push_str(&self.key_prefix);
        k.push_str(&key.hex());
        k
    }

    /// True for a store on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster(_))
    }

    /// The near cache's counters, or `None` when it is off (see
    /// [`RedisOptions::with_near_cache`]).
    pub fn near_cache_stats(&self) -> Option<NearCacheStats> {
        self.near.as_ref().map(|n| n.cache.stats())
    }

    /// Around a write of `key`: this process's next load of it goes to
    /// Redis, and a load in flight does not keep what it read.
    fn forget(&self, key: &StoreKey) {
        if let Some(near) = &self.near {
            near.cache.forget(key);
        }
    }

    /// Starts a write of `key`: forgets it, and takes the near cache's
    /// tracking connection to send the write on, if there is one.
    fn begin_write<'a>(&'a self, key: &'a StoreKey) -> Write<'a> {
        let tracked = self.near.as_ref().and_then(|near| {
            near.cache.forget(key);
            near.cache.writer(key)
        });
        Write {
            store: self,
            key,
            tracked,
            forget: true,
        }
    }

    /// Runs `pipe`, connecting first if need be, all within the store's
    /// overall timeout.
    async fn query<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
    ) -> Result<T, RedisStoreError> {
        self.query_via(None, op, pipe).await
    }

    /// [`query`](Self::query) on `tracked`, the near cache's connection, if
    /// given, else on the pool's.
    async fn query_via<T: FromRedisValue>(
        &self,
        tracked: Option<&mut MultiplexedConnection>,
        op: &'static str,
        pipe: &Pipeline,
    ) -> Result<T, RedisStoreError> {
        let deadline = Instant::now() + self.timeout;
        let result = match (tracked, &self.backend) {
            // A broken tracking connection is the tracker's to replace: its
            // end or a missed heartbeat stops the cache, and with it these
            // writes, which go to the pool until tracking is back.
            (Some(conn), _) => match timeout_at(deadline, pipe.query_async(conn)).await {
                Ok(result) => result.map_err(|source| RedisStoreError::Command { op, source }),
                Err(_) => Err(RedisStoreError::Timeout {
                    op,
                    limit: self.timeout,
                }),
            },
            (None, Backend::Single(lanes)) => lanes.query(op, pipe, deadline, self.timeout).await,
            (None, Backend::Cluster(lanes)) => lanes.query(op, pipe, deadline, self.timeout).await,
        };
        if let Err(e) = &result {
            tracing::error!(
                engine = "redis",
                url = %self.shown_url,
                op,
                error = %e,
                source = ?std::error::Error::source(e),
                "session backend failed"
            );
        }
        result
    }
}

/// The expiry to give the key of a session whose deadline is `deadline`,
/// in milliseconds since the Unix epoch (`PXAT`, `PEXPIREAT`), or `None` if
/// the session is already over at `now_ms`.
///
/// A session is over once the clock reaches its deadline, to the
/// millisecond that the record stores ([`millis`]); Redis keeps a key while
/// its clock, in whole milliseconds, has not passed the key's expiry. So the
/// expiry is the last millisecond of the session, one before its deadline:
/// the key is gone exactly when the session ends, and no `SET ... XX` or
/// touch can find it afterwards. A session that is already over gets no
/// expiry: the store writes nothing for it (or deletes its key) rather than
/// leave a key for Redis to drop later.
fn key_expiry(deadline: OffsetDateTime, now_ms: i64) -> Option<i64> {
    let deadline = millis(deadline);
    (deadline > now_ms).then(|| deadline - 1)
}

/// The deadline, in milliseconds since the Unix epoch, of a record that its
/// value alone does not settle, from the expiry of its key (the reply to
/// `PEXPIRETIME`); `None` when there is no session.
///
/// Two kinds of value reach here. One without a deadline field (`current`
/// false), written by an earlier version: its key's expiry is its deadline.
/// And one whose deadline field (`stored`) has passed while its key is still
/// there. A key this version wrote expires a millisecond before the field,
/// with the session, so it is over; only a key that outlives the field has
/// had its expiry moved later by an instance of an earlier version touching
/// it (which moved the TTL, not the field) during an upgrade, and that expiry
/// decides. Either way the deadline taken from an expiry is the key's last
/// millisecond: early by at most a millisecond, never late.
fn deadline_from_expiry(stored: i64, current: bool, expire_time: i64) -> Option<i64> {
    match expire_time {
        // Deleted or expired since the `GET` (or a reply Redis never gives).
        ..=-2 => None,
        // No expiry: only someone else's `PERSIST` does that; the record's
        // own deadline still holds.
        -1 => Some(stored),
        at if current => Some(at.max(stored)),
        at => Some(at),
    }
}

/// `SET` replies `OK` when it wrote and nil when its `NX`/`XX` condition
/// failed.
fn set_outcome(op: &'static str, reply: Value) -> Result<bool, RedisStoreError> {
    match reply {
        Value::Okay => Ok(true),
        Value::SimpleString(s) if s == "OK" => Ok(true),
        Value::Nil => Ok(false),
        other => Err(RedisStoreError::Reply {
            op,
            detail: format!("{other:?}"),
        }),
    }
}

/// `touch` on the server, atomically: if the key exists, give it the new
/// expiry (`ARGV[1]`, milliseconds since the Unix epoch, see [`key_expiry`])
/// and, when its value ends with a deadline field (the field's first byte,
/// its marker, is where the new field's is), write the new field (`ARGV[2]`)
/// over it. Replies 1 if the key existed, else 0. Only sent for a deadline
/// still to come; a touch to one that has come is a `DEL`.
/// Sent with `EVAL`, which Redis answers from its script cache after the
/// first time; no `SCRIPT LOAD` to lose when a server restarts or fails over.
const TOUCH_SCRIPT: &str = r"
local n = redis.call('STRLEN', KEYS[1])
if n == 0 then return 0 end
local at = n - string.len(ARGV[2])
if at > 0 and redis.call('GETRANGE', KEYS[1], at, at) == string.sub(ARGV[2], 1, 1) then
  redis.call('SETRANGE', KEYS[1], at, ARGV[2])
end
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
";

impl RedisStore {
    /// The expiry of `redis_key`, as `PEXPIRETIME` gives it: milliseconds
    /// since the Unix epoch, -1 for a key without one, -2 for no key.
    async fn expire_time(&self, redis_key: &str) -> Result<i64, Error> {
        let mut pipe = redis::pipe();
        pipe.cmd("PEXPIRETIME").arg(redis_key);
        let (at,): (i64,) = self.query("load", &pipe).await?;
        Ok(at)
    }
}

/// A write of one session in progress (see [`RedisStore::begin_write`]).
///
/// Dropped without [`keep`](Self::keep), whether the write completed, failed
/// or was abandoned midway (when Redis may or may not have applied it), it
/// forgets its key: a load of that key in this process goes to Redis, even
/// if the invalidation Redis sends for it is still on its way.
struct Write<'a> {
    store: &'a RedisStore,
    key: &'a StoreKey,
    /// The near cache's tracking connection and the ticket to keep the
    /// written value under, when the write goes that way.
    tracked: Option<(Ticket, MultiplexedConnection)>,
    /// Cleared once the near cache has taken the key in hand.
    forget: bool,
}

impl Write<'_> {
    async fn query<T: FromRedisValue>(
        &mut self,
        op: &'static str,
        pipe: &Pipeline,
    ) -> Result<T, RedisStoreError> {
        let conn = self.tracked.as_mut().map(|(_, conn)| conn);
        self.store.query_via(conn, op, pipe).await
    }

    /// `SET` of `record` with `condition` (`NX` or `XX`) and the key's
    /// expiry `expire_at` (see [`key_expiry`]). What a `SET` on the tracking
    /// connection wrote is kept in the near cache: Redis sends no
    /// invalidation for it (`NOLOOP`), and the next load is a hit.
    async fn set(
        mut self,
        op: &'static str,
        record: &Record,
        condition: &str,
        expire_at: i64,
    ) -> Result<bool, Error> {
        let value = record.to_bytes()?;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.store.redis_key(self.key))
            .arg(&value[..])
            .arg(condition)
            .arg("PXAT")
            .arg(expire_at);
        let (reply,): (Value,) = self.query(op, &pipe).await?;
        let written = set_outcome(op, reply)?;
        if written {
            self.keep(value);
        }
        Ok(written)
    }

    /// `DEL` of the key; true if it was there. This is how a session ends,
    /// whether deleted or moved to a deadline that has come.
    async fn remove(mut self, op: &'static str) -> Result<bool, Error> {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(self.store.redis_key(self.key));
        let (removed,): (i64,) = self.query(op, &pipe).await?;
        Ok(removed > 0)
    }

    /// Keeps `value`, just written, in the near cache, if the write went
    /// through the tracking connection.
    fn keep(mut self, value: Vec<u8>) {
        let (Some(near), Some((ticket, _))) = (&self.store.near, self.tracked.take()) else {
            return;
        };
        let size = value.len();
        // The record as a load would read it back; the bytes were just
        // encoded, so this does not fail.
        if let Ok(record) = Record::from_shared(value.into()) {
            // `wrote` moves the key's counter itself.
            near.cache.wrote(self.key, ticket, record, size);
            self.forget = false;
        }
    }
}

impl Drop for Write<'_> {
    fn drop(&mut self) {
        if self.forget {
            self.store.forget(self.key);
        }
    }
}

impl SessionStore for RedisStore {
    fn engine(&self) -> &'static str {
        "redis"
    }

    fn load<'a>(&'a self, key: &'a StoreKey) -> Call<'a, Option<Record>> {
        if let Some(record) = self.near.as_ref().and_then(|near| near.cache.get(key)) {
            return Call::ready(Ok(Some(record)));
        }
        Call::pending(async move {
            let ticket = self.near.as_ref().and_then(|near| {
                near.tracker.ensure_started(&near.cache, &near.config);
                near.cache.ticket(key)
            });
            let redis_key = self.redis_key(key);
            let mut pipe = redis::pipe();
            pipe.cmd("GET").arg(&redis_key);
            let (value,): (Option<Vec<u8>>,) = self.query("load", &pipe).await?;
            let Some(bytes) = value else {
                return Ok(None);
            };
            let size = bytes.len();
            let current = has_deadline_field(&bytes);
            let mut record = match Record::from_shared(bytes.into()) {
                Ok(record) => record,
                Err(e) => {
                    // Something else wrote under our prefix, or a future format:
                    // treat it as no session (the layer issues a new id) rather
                    // than failing every request that carries this cookie.
                    tracing::warn!(engine = "redis", ?key, error = %e, "unreadable session record ignored");
                    return Ok(None);
                }
            };
            // The usual load is the `GET` alone: the value ends with the
            // latest deadline, which every write and touch of this version
            // puts there, and its key expires with it.
            if current && !record.is_expired() {
                if let (Some(near), Some(ticket)) = (&self.near, ticket) {
                    near.cache.put(key, ticket, &record, size);
                }
                return Ok(Some(record));
            }
            // Rare: a value without a deadline field, written by an earlier
            // version, or one whose deadline has passed while its key lives
            // on; the key's expiry settles it (see `deadline_from_expiry`).
            // Boxed: its future would otherwise make every load's bigger.
            let expire_time = Box::pin(self.expire_time(&redis_key)).await?;
            let Some(deadline) =
                deadline_from_expiry(record.expires_at_millis(), current, expire_time)
            else {
                return Ok(None);
            };
            record.expires_at = from_millis(deadline)?;
            Ok((!record.is_expired()).then_some(record))
        })
    }

    fn create<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        Call::pending(async move {
            let write = self.begin_write(key);
            match key_expiry(record.expires_at, now_millis()) {
                Some(expire_at) => write.set("create", record, "NX", expire_at).await,
                // Already over: there is nothing to store, and the key stays
                // free for a live session (as with memcached).
                None => Ok(true),
            }
        })
    }

    fn update<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        Call::pending(async move {
            let write = self.begin_write(key);
            match key_expiry(record.expires_at, now_millis()) {
                Some(expire_at) => write.set("update", record, "XX", expire_at).await,
                // Updated to a deadline that has come: the session ends now,
                // and the answer is whether there was one to end.
                None => write.remove("update").await,
            }
        })
    }

    /// Moves the deadline only (TTL and deadline field); Redis keeps no
    /// versions, so the data in `record` is not looked at.
    fn touch<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        let expires_at = record.expires_at;
        Call::pending(async move {
            // Not kept in the near cache: the touch moves the deadline of
            // whatever data Redis holds, which may not be `record`'s.
            let mut write = self.begin_write(key);
            let Some(expire_at) = key_expiry(expires_at, now_millis()) else {
                // Touched to now or to the past: the session ends now (the
                // layer retires an old id this way), and the answer is
                // whether there was one to end.
                return write.remove("touch").await;
            };
            let mut pipe = redis::pipe();
            pipe.cmd("EVAL")
                .arg(TOUCH_SCRIPT)
                .arg(1)
                .arg(self.redis_key(key))
                .arg(expire_at)
                .arg(&deadline_field(expires_at)[..]);
            let (set,): (i64,) = write.query("touch", &pipe).await?;
            Ok(set == 1)
        })
    }

    fn delete<'a>(&'a self, key: &'a StoreKey) -> Call<'a, ()> {
        Call::pending(async move {
            self.begin_write(key).remove("delete").await?;
            Ok(())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use std::sync::Arc;

    use super::*;
    use cloakroom_core::config::from_pairs;

    #[test]
    fn building_does_not_connect_and_debug_hides_the_password() {
        // Port 1 on loopback: nothing listens, and building must not care.
        let store = RedisStore::new("redis://:s3cret@127.0.0.1:1/0", RedisOptions::new()).unwrap();
        let shown = format!("{store:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("127.0.0.1:1"), "{shown}");
        assert!(!store.is_cluster());
        let cluster = RedisStore::new(
            "redis+cluster://127.0.0.1:1,127.0.0.1:2",
            RedisOptions::new(),
        )
        .unwrap();
        assert!(cluster.is_cluster());
    }

    #[test]
    fn any_near_cache_setting_builds() {
        for ms in ["1", "2000", &u64::MAX.to_string()] {
            let settings = from_pairs([("SESSION_REDIS_NEAR_CACHE_MS", ms)]);
            let store = RedisStore::from_settings("redis://127.0.0.1:1", &settings).unwrap();
            assert!(store.near_cache_stats().is_some());
        }
        let off = from_pairs([("SESSION_REDIS_NEAR_CACHE_MS", "0")]);
        let store = RedisStore::from_settings("redis://127.0.0.1:1", &off).unwrap();
        assert!(store.near_cache_stats().is_none());
    }

    #[test]
    fn from_settings_names_the_variable() {
        let err = RedisStore::from_settings("redis://:s3cret@h:x/0", &from_pairs([])).unwrap_err();
        assert_eq!(err.variable(), "SESSION_CACHE_URL");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let err =
            RedisStore::from_settings("redis://h", &from_pairs([("SESSION_REDIS_POOL_SIZE", "x")]))
                .unwrap_err();
        assert_eq!(err.variable(), "SESSION_REDIS_POOL_SIZE");
    }

    #[test]
    fn a_ca_file_needs_a_tls_url_of_one_server() {
        let with_ca = || RedisOptions::new().with_tls_ca_file("/nonexistent/ca.pem");
        for url in [
            "redis://127.0.0.1:1",
            "redis+cluster://127.0.0.1:1,127.0.0.1:2",
        ] {
            match RedisStore::new(url, with_ca()) {
                Err(RedisStoreError::Tls { .. }) => {}
                other => panic!("{url}: expected a TLS error, got {other:?}"),
            }
        }
        let settings = from_pairs([("SESSION_REDIS_TLS_CA_FILE", "/nonexistent/ca.pem")]);
        let err = RedisStore::from_settings("redis://127.0.0.1:1", &settings).unwrap_err();
        assert_eq!(err.variable(), "SESSION_REDIS_TLS_CA_FILE");
        #[cfg(feature = "tls")]
        {
            let err = RedisStore::from_settings("rediss://127.0.0.1:1", &settings).unwrap_err();
            assert_eq!(err.variable(), "SESSION_REDIS_TLS_CA_FILE");
            assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        }
        #[cfg(not(feature = "tls"))]
        {
            let err =
                RedisStore::from_settings("rediss://127.0.0.1:1", &from_pairs([])).unwrap_err();
            assert!(err.to_string().contains("`tls` feature"), "{err}");
        }
    }

    #[test]
    fn keys_are_prefix_and_hash() {
        let store = RedisStore::new(
            "redis://127.0.0.1:1",
            RedisOptions::new().with_key_prefix("p:"),
        )
        .unwrap();
        let key = cloakroom_core::Id::generate().unwrap().store_key();
        assert_eq!(store.redis_key(&key), format!("p:{}", key.hex()));
    }

    fn at_millis(ms: i64) -> OffsetDateTime {
        from_millis(ms).unwrap()
    }

    #[test]
    fn keys_expire_with_their_session_and_dead_sessions_get_no_key() {
        let now: i64 = 1_800_000_000_000;
        // The key's last millisecond is the session's last one.
        assert_eq!(key_expiry(at_millis(now + 60_000), now), Some(now + 59_999));
        assert_eq!(key_expiry(at_millis(now + 1), now), Some(now));
        // Within a millisecond of the deadline the record stores, the
        // session is over too.
        let sub_millisecond = at_millis(now) + time::Duration::microseconds(700);
        assert_eq!(key_expiry(sub_millisecond, now), None);
        assert_eq!(key_expiry(at_millis(now), now), None);
        assert_eq!(key_expiry(at_millis(now - 3_600_000), now), None);
    }

    #[test]
    fn a_key_expiry_decides_only_what_the_value_cannot() {
        let field: i64 = 1_800_000_000_000;
        // Gone since the GET.
        assert_eq!(deadline_from_expiry(field, true, -2), None);
        assert_eq!(deadline_from_expiry(field, false, -2), None);
        // A key without an expiry: the record's own deadline.
        assert_eq!(deadline_from_expiry(field, true, -1), Some(field));
        assert_eq!(deadline_from_expiry(field, false, -1), Some(field));
        // A key this version wrote expires with the field: the field holds,
        // so a passed field is a passed session, whatever the key's expiry.
        assert_eq!(deadline_from_expiry(field, true, field - 1), Some(field));
        assert_eq!(deadline_from_expiry(field, true, field - 5), Some(field));
        // A key that outlives the field was touched by an earlier version:
        // its expiry decides.
        assert_eq!(
            deadline_from_expiry(field, true, field + 30_000),
            Some(field + 30_000)
        );
        // A value without the field: its key's expiry, earlier or later.
        assert_eq!(
            deadline_from_expiry(field, false, field - 5_000),
            Some(field - 5_000)
        );
        assert_eq!(
            deadline_from_expiry(field, false, field + 5_000),
            Some(field + 5_000)
        );
    }

    /// A stand-in for Redis on a loopback port: it answers every command
    /// with `answer(command)` (raw RESP) and records the store's commands
    /// (not the client's connection set-up) with their arguments as text.
    async fn fake_redis(
        answer: fn(&[String]) -> &'static str,
    ) -> (String, Arc<Mutex<Vec<Vec<String>>>>) {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    let mut line = String::new();
                    loop {
                        // `*<n>`, then n times `$<len>` and the bytes.
                        line.clear();
                        if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let n: usize = line.trim_end()[1..].parse().unwrap();
                        let mut command = Vec::with_capacity(n);
                        for _ in 0..n {
                            line.clear();
                            read.read_line(&mut line).await.unwrap();
                            let len: usize = line.trim_end()[1..].parse().unwrap();
                            let mut arg = vec![0; len + 2];
                            read.read_exact(&mut arg).await.unwrap();
                            arg.truncate(len);
                            command.push(String::from_utf8_lossy(&arg).into_owned());
                        }
                        let reply = match command[0].to_ascii_uppercase().as_str() {
                            "CLIENT" | "SELECT" => "+OK\r\n",
                            "PING" => "+PONG\r\n",
                            _ => {
                                let reply = answer(&command);
                                log.lock().unwrap().push(command);
                                reply
                            }
                        };
                        if write.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, seen)
    }

    /// Writes whose deadline has come store nothing and leave no key: a
    /// create sends nothing at all, an update or a touch deletes the key and
    /// answers whether a session was there. Live writes give the key the
    /// session's last millisecond as its expiry.
    #[tokio::test]
    async fn writes_past_their_deadline_leave_no_key() {
        // `DEL` finds a key under the prefix `live:`, none under `gone:`.
        let (url, seen) = fake_redis(|command| match command[0].as_str() {
            "DEL" if command[1].starts_with("live:") => ":1\r\n",
            "DEL" => ":0\r\n",
            "SET" => "+OK\r\n",
            "EVAL" => ":1\r\n",
            _ => "-ERR unexpected\r\n",
        })
        .await;
        let live = RedisStore::new(&url, RedisOptions::new().with_key_prefix("live:")).unwrap();
        let gone = RedisStore::new(&url, RedisOptions::new().with_key_prefix("gone:")).unwrap();
        let key = cloakroom_core::Id::generate().unwrap().store_key();
        let data = cloakroom_core::record::Data::new;
        let now = OffsetDateTime::now_utc();
        let taken = || std::mem::take(&mut *seen.lock().unwrap());

        for deadline in [now, now - time::Duration::hours(1)] {
            let over = Record::new(data(), deadline);
            assert!(live.create(&key, &over).await.unwrap());
            assert_eq!(taken(), Vec::<Vec<String>>::new(), "a create wrote");
            for store in [&live, &gone] {
                let was_there = store.redis_key(&key).starts_with("live:");
                let del = vec!["DEL".to_owned(), store.redis_key(&key)];
                assert_eq!(store.update(&key, &over).await.unwrap(), was_there);
                assert_eq!(taken(), std::slice::from_ref(&del));
                assert_eq!(store.touch(&key, &over).await.unwrap(), was_there);
                assert_eq!(taken(), [del]);
            }
        }

        let deadline = now + time::Duration::minutes(5);
        let expire_at = (millis(deadline) - 1).to_string();
        let record = Record::new(data(), deadline);
        assert!(live.create(&key, &record).await.unwrap());
        assert!(live.update(&key, &record).await.unwrap());
        assert!(live.touch(&key, &record).await.unwrap());
        let sent = taken();
        let shape: Vec<Vec<&str>> = sent
            .iter()
            .map(|c| match c[0].as_str() {
                "SET" => vec![c[0].as_str(), &c[3], &c[4], &c[5]],
                _ => vec![c[0].as_str(), &c[4]],
            })
            .collect();
        assert_eq!(
            shape,
            [
                vec!["SET", "NX", "PXAT", expire_at.as_str()],
                vec!["SET", "XX", "PXAT", &expire_at],
                vec!["EVAL", &expire_at],
            ]
        );
    }

    #[tokio::test]
    async fn a_dead_server_is_a_bounded_backend_error() {
        let store = RedisStore::new("redis://127.0.0.1:1", RedisOptions::new()).unwrap();
        let key = cloakroom_core::Id::generate().unwrap().store_key();
        let started = std::time::Instant::now();
        let err = store.load(&key).await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(started.elapsed() < Duration::from_millis(1500));
    }
}
