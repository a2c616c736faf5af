//! [`MemcachedStore`]: the [`SessionStore`] over one or more servers.

use std::fmt;
use std::io;
use std::sync::Arc;

use cloakroom_core::config::{ConfigError, Settings};
use cloakroom_core::record::{DEADLINE_FIELD_LEN, deadline_field, has_deadline_field, now_millis};
use cloakroom_core::{Call, Record, SessionStore, StoreKey};
use deadpool::managed::{Object, PoolError, TimeoutType};
use time::OffsetDateTime;

use crate::client::{self, Cas, Connection};
use crate::error::MemcachedError;
use crate::expiry;
use crate::options::MemcachedOptions;
use crate::pool::{self, Pool};
use crate::ring::Ring;

/// How many times an update or a touch that finds the session changed since
/// it read it (`EXISTS`) reads it again and retries. One retry settles an
/// update racing one other request; the rest cover a burst of requests of
/// the same session, past which the call fails rather than spin.
const CAS_RETRIES: u32 = 3;

/// Sessions in memcached, spread over one or more servers by consistent
/// hashing, spoken to through memcache-async.
///
/// Every call waits for the server's answer, and the writes are conditional:
///
/// * `load` is `gets`: the record, and its CAS unique, which the record
///   carries as its [`version`](Record::version) to the save;
/// * `create` is `add` (stores only a new key);
/// * `update` is `cas` over the version `load` gave, so a session deleted
///   meanwhile (a concurrent logout) stays deleted; when the session was
///   changed meanwhile (`EXISTS`), it reads the new version with `gets` and
///   writes over that, so the last writer wins. A record without a version
///   is written the same way, `gets` then `cas`;
/// * `touch` rewrites the session with its new deadline (memcache-async has
///   no `touch`, and memcached's could not keep a deadline finer than its
///   one-second clock anyway). A session loaded in this request is written
///   back, with the new deadline, by one `cas` over the version `load` gave:
///   one round trip, and the data is the data stored at that version. If
///   the session was deleted meanwhile it stays deleted (`NOT_FOUND`); if it
///   was changed meanwhile (`EXISTS`), or the record has no version, `gets`
///   reads the current version and `cas` writes it back with only the
///   deadline field at the end of the record changed, so the newer data
///   stays byte for byte;
/// * `delete` is `delete`, followed by `version` on the same connection so
///   that it returns only once memcached processed it.
///
/// The record holds its deadline to the millisecond, so `load` needs nothing
/// beside it.
///
/// Cloning is cheap and shares the connection pools.
///
/// ```no_run
/// use cloakroom_core::{Id, Record, SessionStore, record::Data};
/// use cloakroom_memcached::MemcachedStore;
/// use time::{Duration, OffsetDateTime};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemcachedStore::from_url("memcached://127.0.0.1:11211")?;
/// let key = Id::generate()?.store_key();
/// let record = Record::new(Data::new(), OffsetDateTime::now_utc() + Duration::hours(1));
/// assert!(store.create(&key, &record).await?);
/// assert!(store.load(&key).await?.is_some());
/// store.delete(&key).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemcachedStore {
    inner: Arc<Inner>,
}

struct Inner {
    servers: Vec<Server>,
    ring: Ring,
    options: MemcachedOptions,
}

struct Server {
    name: String,
    pool: Pool,
}

/// One store operation, carried out on one connection.
enum Op<'a> {
    Load,
    Create {
        value: &'a [u8],
        exptime: u32,
    },
    Update {
        value: &'a [u8],
        exptime: u32,
        version: Option<u64>,
    },
    Touch {
        /// The session as loaded, serialized with its new deadline, and the
        /// version it was loaded at: written over that version in one `cas`.
        loaded: Option<(&'a [u8], u64)>,
        deadline: OffsetDateTime,
        exptime: u32,
    },
    /// Ends the session now (an update or a touch to a deadline that has
    /// passed), answering whether it was live.
    End,
    Delete,
}

impl Op<'_> {
    /// The size of the value the operation stores, for a refusal's error.
    fn value_len(&self) -> usize {
        match self {
            Op::Create { value, .. } | Op::Update { value, .. } => value.len(),
            Op::Touch {
                loaded: Some((value, _)),
                ..
            } => value.len(),
            Op::Load | Op::Touch { .. } | Op::End | Op::Delete => 0,
        }
    }
}

/// What an [`Op`] found.
#[derive(Debug)]
enum Outcome {
    /// To `Load`: the stored bytes and their CAS unique, if any.
    Found(Option<(Vec<u8>, u64)>),
    /// To the others: whether there was a (live) session to act on.
    Answer(bool),
    /// The session kept changing under an update or a touch.
    Contended,
}

impl MemcachedStore {
    /// A store for the servers in `url` with default options; see
    /// [`MemcachedOptions`] to change them.
    ///
    /// # Errors
    /// When the URL is malformed (see [`MemcachedOptions::from_url`]).
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        MemcachedOptions::from_url(url)?.build()
    }

    /// A store for the servers in `url` (the value of `SESSION_CACHE_URL`)
    /// with the `SESSION_MEMCACHED_*` tuning settings from `settings`. Does no
    /// I/O: a server that is down now is reported by the requests that need
    /// it, not here.
    ///
    /// # Errors
    /// When the URL or a setting is invalid; the error names the variable.
    pub fn from_settings(url: &str, settings: &dyn Settings) -> Result<Self, ConfigError> {
        MemcachedOptions::from_settings(url, settings)?.build()
    }

    pub(crate) fn new(options: MemcachedOptions) -> Self {
        let servers: Vec<Server> = options
            .servers
            .iter()
            .map(|addr| Server {
                name: addr.to_string(),
                pool: pool::new(
                    addr.clone(),
                    options.pool_size,
                    options.connect_timeout,
                    options.timeout,
                ),
            })
            .collect();
        let names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
        let ring = Ring::new(&names);
        Self {
            inner: Arc::new(Inner {
                servers,
                ring,
                options,
            }),
        }
    }

    /// The servers, as `host:port`, in the order of the URL.
    pub fn servers(&self) -> Vec<String> {
        self.inner.servers.iter().map(|s| s.name.clone()).collect()
    }

    /// The server (`host:port`) that holds `key`.
    pub fn server_for(&self, key: &StoreKey) -> &str {
        &self.server(key).name
    }

    /// The memcached key under which `key` is stored: the key prefix followed
    /// by the 64 hex digits of the store key.
    pub fn memcached_key(&self, key: &StoreKey) -> String {
        let prefix = &self.inner.options.key_prefix;
        let hex = key.hex();
        let mut full = String::with_capacity(prefix.len() + hex.len());
        full.push_str(prefix);
        full.push_str(&hex);
        full
    }

    fn server(&self, key: &StoreKey) -> &Server {
        let servers = &self.inner.servers;
        // The options always hold at least one server, and the ring only
        // returns indexes of servers it was built from.
        &servers[self.inner.ring.server_for(key).min(servers.len() - 1)]
    }

    /// Carries out `op` on the server that holds `key`, within the operation
    /// timeout.
    async fn execute(&self, key: &StoreKey, op: Op<'_>) -> Result<Outcome, MemcachedError> {
        let server = self.server(key);
        let name = self.memcached_key(key);
        let limit = self.inner.options.timeout;
        match tokio::time::timeout(limit, self.attempt(server, &name, &op)).await {
            Ok(Ok(Outcome::Contended)) => Err(MemcachedError::Contended {
                server: server.name.clone(),
                attempts: CAS_RETRIES + 1,
            }),
            Ok(result) => result,
            // The timed-out attempt dropped its connection half way; the
            // pool will not hand it out again (see `Connection::is_settled`).
            Err(_) => Err(MemcachedError::Timeout {
                server: server.name.clone(),
                limit,
                waiting_for: "a connection and a reply",
            }),
        }
    }

    async fn attempt(
        &self,
        server: &Server,
        name: &str,
        op: &Op<'_>,
    ) -> Result<Outcome, MemcachedError> {
        let mut retried = false;
        loop {
            let mut conn = server
                .pool
                .get()
                .await
                .map_err(|e| self.pool_error(server, e))?;
            let reused = Object::metrics(&conn).recycle_count > 0;
            match run(&mut conn, name, op).await {
                Ok(outcome) => return Ok(outcome),
                Err(e) => {
                    // Out of step with the server: never back into the pool.
                    drop(Object::take(conn));
                    // A pooled connection that the server closed while it sat
                    // idle (a restart) fails on first use, and so will the
                    // others that sat beside it: drop them all and try once
                    // on a fresh connection instead of failing a request to a
                    // server that is up. Every operation is safe to repeat
                    // (a repeated `add` answers NOT_STORED and the layer
                    // picks a new id; a repeated `cas` meets EXISTS and reads
                    // the session again).
                    if reused && !retried && client::is_closed_connection(&e) {
                        server.pool.retain(|_, _| false);
                        retried = true;
                        continue;
                    }
                    return Err(command_error(server, op.value_len(), e));
                }
            }
        }
    }

    fn pool_error(&self, server: &Server, e: PoolError<io::Error>) -> MemcachedError {
        let name = server.name.clone();
        match e {
            PoolError::Backend(source) => MemcachedError::Connect {
                server: name,
                source,
            },
            PoolError::Timeout(TimeoutType::Create) => MemcachedError::Timeout {
                server: name,
                limit: self.inner.options.connect_timeout,
                waiting_for: "a new connection",
            },
            PoolError::Timeout(_) => MemcachedError::Timeout {
                server: name,
                limit: self.inner.options.timeout,
                waiting_for: "a free pooled connection",
            },
            PoolError::Closed | PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
                MemcachedError::PoolClosed { server: name }
            }
        }
    }

    /// The yes or no of an operation other than a load.
    async fn answer(&self, key: &StoreKey, op: Op<'_>) -> Result<bool, MemcachedError> {
        match self.execute(key, op).await? {
            Outcome::Answer(yes) => Ok(yes),
            other => Err(self.mismatch(key, &other)),
        }
    }

    fn mismatch(&self, key: &StoreKey, outcome: &Outcome) -> MemcachedError {
        MemcachedError::Protocol {
            server: self.server(key).name.clone(),
            reply: format!("{outcome:?}"),
        }
    }
}

/// The memcached exptime for `deadline`, or `None` when it has passed.
fn exptime(deadline: OffsetDateTime) -> Option<u32> {
    // `expiry::exptime` keeps within 1..=i32::MAX, which a u32 holds.
    expiry::exptime(deadline, OffsetDateTime::now_utc()).and_then(|e| u32::try_from(e).ok())
}

/// Carries out `op` under the memcached key `name` on `conn`.
async fn run(conn: &mut Connection, name: &str, op: &Op<'_>) -> io::Result<Outcome> {
    Ok(match *op {
        Op::Load => Outcome::Found(conn.gets(name).await?),
        Op::Create { value, exptime } => Outcome::Answer(conn.add(name, value, exptime).await?),
        Op::Update {
            value,
            exptime,
            version,
        } => update(conn, name, value, exptime, version).await?,
        Op::Touch {
            loaded,
            deadline,
            exptime,
        } => touch(conn, name, loaded, deadline, exptime).await?,
        Op::End => {
            let live = match conn.gets(name).await? {
                Some((bytes, _)) => is_live(&bytes),
                None => return Ok(Outcome::Answer(false)),
            };
            conn.delete(name).await?;
            Outcome::Answer(live)
        }
        Op::Delete => {
            conn.delete(name).await?;
            Outcome::Answer(true)
        }
    })
}

/// Writes `value` over the live session `name`, over `version` if the caller
/// loaded one, else over what `gets` finds.
async fn update(
    conn: &mut Connection,
    name: &str,
    value: &[u8],
    exptime: u32,
    version: Option<u64>,
) -> io::Result<Outcome> {
    let mut version = match version {
        Some(version) => version,
        None => match live_version(conn, name).await? {
            Some(version) => version,
            None => return Ok(Outcome::Answer(false)),
        },
    };
    let mut retries = 0;
    loop {
        match conn.cas(name, value, version, exptime).await? {
            Cas::Stored => return Ok(Outcome::Answer(true)),
            Cas::NotFound => return Ok(Outcome::Answer(false)),
            Cas::Exists if retries == CAS_RETRIES => return Ok(Outcome::Contended),
            Cas::Exists => {
                retries += 1;
                version = match live_version(conn, name).await? {
                    Some(version) => version,
                    None => return Ok(Outcome::Answer(false)),
                };
            }
        }
    }
}

/// The CAS unique of the session `name` if it is live.
async fn live_version(conn: &mut Connection, name: &str) -> io::Result<Option<u64>> {
    Ok(match conn.gets(name).await? {
        Some((bytes, version)) if is_live(&bytes) => Some(version),
        _ => None,
    })
}

/// Rewrites the live session `name` with the deadline `deadline`.
///
/// With `loaded` (the session as this request loaded it, already carrying
/// the new deadline, and the CAS unique of that load), one `cas` writes it
/// over that version: one round trip, and the stored data does not change,
/// since it is still the version loaded. `NOT_FOUND` means the session was
/// deleted meanwhile, and it stays so. `EXISTS` means it was changed
/// meanwhile: then, as without `loaded`, `gets` reads the newer version and
/// `cas` writes it back with only its deadline moved, keeping its data.
async fn touch(
    conn: &mut Connection,
    name: &str,
    loaded: Option<(&[u8], u64)>,
    deadline: OffsetDateTime,
    exptime: u32,
) -> io::Result<Outcome> {
    if let Some((value, version)) = loaded {
        match conn.cas(name, value, version, exptime).await? {
            Cas::Stored => return Ok(Outcome::Answer(true)),
            Cas::NotFound => return Ok(Outcome::Answer(false)),
            Cas::Exists => {}
        }
    }
    for _ in 0..=CAS_RETRIES {
        let Some((mut bytes, version)) = conn.gets(name).await? else {
            return Ok(Outcome::Answer(false));
        };
        if !move_deadline(&mut bytes, deadline) {
            return Ok(Outcome::Answer(false));
        }
        match conn.cas(name, &bytes, version, exptime).await? {
            Cas::Stored => return Ok(Outcome::Answer(true)),
            Cas::NotFound => return Ok(Outcome::Answer(false)),
            // Changed since the `gets` (an update of this session): touch
            // the new version, keeping its data.
            Cas::Exists => {}
        }
    }
    Ok(Outcome::Contended)
}

/// The deadline, in milliseconds since the Unix epoch, of the record in
/// `bytes`; `None` if they are not a record.
fn stored_deadline(bytes: &[u8]) -> Option<i64> {
    if has_deadline_field(bytes) {
        let field: [u8; 8] = bytes[bytes.len() - (DEADLINE_FIELD_LEN - 1)..]
            .try_into()
            .ok()?;
        Some(i64::from_be_bytes(field))
    } else {
        Record::from_bytes(bytes)
            .ok()
            .map(|r| r.expires_at_millis())
    }
}

/// True if `bytes` are a record whose deadline has not passed. memcached
/// keeps an item up to a grace second past its deadline (see `expiry`); such
/// a session is over all the same.
fn is_live(bytes: &[u8]) -> bool {
    stored_deadline(bytes).is_some_and(|deadline| deadline > now_millis())
}

/// Moves the deadline of the live record in `bytes` to `deadline`; false if
/// they are not a live record.
fn move_deadline(bytes: &mut Vec<u8>, deadline: OffsetDateTime) -> bool {
    if !is_live(bytes) {
        return false;
    }
    if has_deadline_field(bytes) {
        // Every record `Record::to_bytes` writes ends with its deadline in a
        // fixed form: only those bytes change, the data stays as it was.
        let at = bytes.len() - DEADLINE_FIELD_LEN;
        bytes[at..].copy_from_slice(&deadline_field(deadline));
        return true;
    }
    // A record written some other way: rewrite it whole.
    let Ok(mut record) = Record::from_bytes(bytes) else {
        return false;
    };
    record.expires_at = deadline;
    match record.to_bytes() {
        Ok(rewritten) => {
            *bytes = rewritten;
            true
        }
        Err(_) => false,
    }
}

/// The error for a failed operation on `server`; `size` is the value it was
/// storing, if any.
fn command_error(server: &Server, size: usize, e: io::Error) -> MemcachedError {
    let name = server.name.clone();
    match client::reply_line(&e) {
        Some(reply) if reply.contains("too large") => MemcachedError::TooLarge {
            server: name,
            size,
            reply,
        },
        Some(reply)
            if reply.starts_with("ERROR")
                || reply.starts_with("CLIENT_ERROR")
                || reply.starts_with("SERVER_ERROR") =>
        {
            MemcachedError::Server {
                server: name,
                reply,
            }
        }
        Some(reply) => MemcachedError::Protocol {
            server: name,
            reply,
        },
        None if e.kind() == io::ErrorKind::InvalidData => MemcachedError::Protocol {
            server: name,
            reply: e.to_string(),
        },
        None => MemcachedError::Io {
            server: name,
            source: e,
        },
    }
}

impl SessionStore for MemcachedStore {
    fn engine(&self) -> &'static str {
        "memcached"
    }

    fn load<'a>(&'a self, key: &'a StoreKey) -> Call<'a, Option<Record>> {
        Call::pending(async move {
            let (bytes, version) = match self.execute(key, Op::Load).await? {
                Outcome::Found(Some(found)) => found,
                Outcome::Found(None) => return Ok(None),
                other => return Err(self.mismatch(key, &other).into()),
            };
            let mut record = match Record::from_shared(bytes.into()) {
                Ok(record) => record,
                Err(e) => {
                    // Something else wrote under our prefix, a damaged item,
                    // or a future format: no session (the layer issues a new
                    // id), as the Redis and SQL engines do, rather than a 500
                    // on every request that carries this cookie. The key is
                    // logged by its `Debug` (the hash, shortened), never the
                    // stored bytes.
                    tracing::warn!(engine = "memcached", ?key, error = %e, "unreadable session record ignored");
                    return Ok(None);
                }
            };
            record.version = Some(version);
            // memcached keeps an item up to a grace second past its deadline;
            // the deadline itself is enforced here.
            Ok((!record.is_expired_at(OffsetDateTime::now_utc())).then_some(record))
        })
    }

    fn create<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        Call::pending(async move {
            let value = record.to_bytes()?;
            let Some(exptime) = exptime(record.expires_at) else {
                // Already past its deadline: there is nothing to store (and an
                // exptime of 0 would mean "forever"). The key stays free.
                return Ok(true);
            };
            let op = Op::Create {
                value: &value,
                exptime,
            };
            Ok(self.answer(key, op).await?)
        })
    }

    fn update<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        Call::pending(async move {
            let value = record.to_bytes()?;
            let Some(exptime) = exptime(record.expires_at) else {
                // Updated to a deadline that has passed: the session ends now.
                return Ok(self.answer(key, Op::End).await?);
            };
            let op = Op::Update {
                value: &value,
                exptime,
                version: record.version,
            };
            Ok(self.answer(key, op).await?)
        })
    }

    fn touch<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        Call::pending(async move {
            let expires_at = record.expires_at;
            let Some(exptime) = exptime(expires_at) else {
                // Touched to a deadline that has passed: the session ends now
                // (the layer retires an old id this way).
                return Ok(self.answer(key, Op::End).await?);
            };
            // The record as loaded, in the bytes `update` writes: its deadline
            // field is the new deadline. A record that does not encode (it
            // did when it was stored) is touched by `gets` and `cas` alone,
            // which need none of its data.
            let value = match record.version {
                Some(version) => record.to_bytes().ok().map(|value| (value, version)),
                None => None,
            };
            let op = Op::Touch {
                loaded: value
                    .as_ref()
                    .map(|(value, version)| (&value[..], *version)),
                deadline: expires_at,
                exptime,
            };
            Ok(self.answer(key, op).await?)
        })
    }

    fn delete<'a>(&'a self, key: &'a StoreKey) -> Call<'a, ()> {
        Call::pending(async move {
            self.answer(key, Op::Delete).await?;
            Ok(())
        })
    }
}

impl fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options = &self.inner.options;
        f.debug_struct("MemcachedStore")
            .field("servers", &options.servers)
            .field("key_prefix", &options.key_prefix)
            .field("pool_size", &options.pool_size)
            .field("connect_timeout", &options.connect_timeout)
            .field("timeout", &options.timeout)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use std::time::{Duration, Instant};

    use cloakroom_core::record::Data;
    use cloakroom_core::{ErrorKind, Id};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;

    /// A stand-in for memcached on a loopback port that reads command
    /// lines, answers `version` (the only command the store sends that
    /// answers without a key) and, if `answers_per_connection` is set,
    /// closes a connection after that many answers, as a restarted server
    /// leaves pooled connections closed. With `silent`, it never answers.
    async fn fake_server(answers_per_connection: Option<usize>, silent: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let mut answered = 0;
                    while let Ok(Some(line)) = lines.next_line().await {
                        if silent || line != "version" {
                            continue;
                        }
                        if write.write_all(b"VERSION 1.6.0\r\n").await.is_err() {
                            return;
                        }
                        answered += 1;
                        if Some(answered) == answers_per_connection {
                            return;
                        }
                    }
                });
            }
        });
        format!("memcached://{addr}")
    }

    fn key() -> StoreKey {
        Id::generate().unwrap().store_key()
    }

    /// A store on the real memcached the test command starts.
    fn real() -> MemcachedStore {
        let url = std::env::var("CLOAKROOM_MEMCACHED_URL")
            .expect("CLOAKROOM_MEMCACHED_URL (run the tests with tests/run)");
        MemcachedOptions::from_url(&url)
            .unwrap()
            .with_key_prefix("cloakroom-store-test:")
            .build()
            .unwrap()
    }

    fn record(value: &str, ttl: time::Duration) -> Record {
        let mut data = Data::new();
        data.insert("v".into(), serde_json::json!(value));
        Record::new(data, OffsetDateTime::now_utc() + ttl)
    }

    /// The bytes stored under `key`, read beside the store.
    async fn stored(store: &MemcachedStore, key: &StoreKey) -> Option<(Vec<u8>, u64)> {
        let server = store.server(key);
        let mut conn = server.pool.get().await.unwrap();
        conn.gets(&store.memcached_key(key)).await.unwrap()
    }

    /// `load` hands the CAS unique to the record; an update with it writes
    /// over that version and gives the session a new one.
    #[tokio::test]
    async fn loads_carry_the_version_that_updates_write_over() {
        let store = real();
        let key = key();
        let hour = time::Duration::hours(1);
        assert!(store.create(&key, &record("a", hour)).await.unwrap());
        let loaded = store.load(&key).await.unwrap().unwrap();
        let (_, version) = stored(&store, &key).await.unwrap();
        assert_eq!(loaded.version, Some(version));

        let mut changed = loaded.clone();
        changed.data.insert("v".into(), serde_json::json!("b"));
        assert!(store.update(&key, &changed).await.unwrap());
        let (_, after) = stored(&store, &key).await.unwrap();
        assert_ne!(after, version);
        // The same, now stale, version: memcached answers EXISTS, and the
        // write goes over the newer version (the last writer wins).
        changed.data.insert("v".into(), serde_json::json!("c"));
        assert!(store.update(&key, &changed).await.unwrap());
        let reloaded = store.load(&key).await.unwrap().unwrap();
        assert_eq!(
            reloaded.data.get("v").unwrap(),
            Some(&serde_json::json!("c"))
        );

        // Deleted after the load: the version's `cas` finds nothing.
        store.delete(&key).await.unwrap();
        assert!(!store.update(&key, &reloaded).await.unwrap());
        assert!(stored(&store, &key).await.is_none());
    }

    /// A touch rewrites the session's deadline field only, with the
    /// deadline to the millisecond, and gives memcached the new exptime.
    #[tokio::test]
    async fn a_touch_rewrites_only_the_deadline() {
        let store = real();
        let key = key();
        let session = record("kept", time::Duration::minutes(5));
        assert!(store.create(&key, &session).await.unwrap());
        let (before, _) = stored(&store, &key).await.unwrap();
        let later = OffsetDateTime::now_utc() + time::Duration::milliseconds(3_600_321);
        // No version: `gets`, then `cas` of the deadline field alone.
        let touched = Record {
            expires_at: later,
            ..session
        };
        assert!(store.touch(&key, &touched).await.unwrap());
        let (after, _) = stored(&store, &key).await.unwrap();
        let at = before.len() - DEADLINE_FIELD_LEN;
        assert_eq!(after[..at], before[..at]);
        assert_eq!(after[at..], deadline_field(later));
        let loaded = store.load(&key).await.unwrap().unwrap();
        assert_eq!(loaded.expires_at_millis(), millis_of(later));
        store.delete(&key).await.unwrap();
        assert!(!store.touch(&key, &touched).await.unwrap());
        assert!(stored(&store, &key).await.is_none());
    }

    fn millis_of(t: OffsetDateTime) -> i64 {
        cloakroom_core::record::millis(t)
    }

    /// A session past its deadline that memcached still holds (its grace
    /// second) is no session for an update or a touch either.
    #[tokio::test]
    async fn a_held_but_expired_session_is_not_written_back() {
        let store = real();
        let key = key();
        let session = record("short", time::Duration::milliseconds(300));
        assert!(store.create(&key, &session).await.unwrap());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(stored(&store, &key).await.is_some(), "memcached's grace");
        assert!(store.load(&key).await.unwrap().is_none());
        let mut stale = session.clone();
        stale.expires_at = OffsetDateTime::now_utc() + time::Duration::minutes(5);
        assert!(!store.update(&key, &stale).await.unwrap());
        assert!(!store.touch(&key, &stale).await.unwrap());
        assert!(store.load(&key).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn connections_closed_by_the_server_are_not_errors() {
        // `delete` is answered by its `version`; the server closes after
        // that answer.
        let url = fake_server(Some(1), false).await;
        let store = MemcachedOptions::from_url(&url)
            .unwrap()
            .with_pool_size(2)
            .build()
            .unwrap();
        for _ in 0..20 {
            store.delete(&key()).await.unwrap();
        }
    }

    /// A `delete` is sent with `noreply`, and a connection that breaks
    /// before the `version` behind it is answered fails the call: a logout
    /// never reports success without memcached having processed it.
    #[tokio::test]
    async fn a_delete_on_a_broken_connection_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let mut lines = BufReader::new(stream).lines();
                // Reads the delete, then goes away.
                let _ = lines.next_line().await;
            }
        });
        let store = MemcachedStore::from_url(&format!("memcached://{addr}")).unwrap();
        let err = store.delete(&key()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    }

    #[tokio::test]
    async fn a_server_that_does_not_answer_times_out() {
        let url = fake_server(None, true).await;
        let store = MemcachedOptions::from_url(&url)
            .unwrap()
            .with_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        for _ in 0..3 {
            let started = Instant::now();
            let err = store.load(&key()).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
            assert!(started.elapsed() < Duration::from_millis(900));
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_backend_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let store = MemcachedStore::from_url(&format!("memcached://{addr}")).unwrap();
        let started = Instant::now();
        let err = store.delete(&key()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn keys_are_the_prefix_and_the_store_key() {
        let store = MemcachedOptions::from_url("memcached://127.0.0.1:1")
            .unwrap()
            .with_key_prefix("app:")
            .build()
            .unwrap();
        let key = key();
        let name = store.memcached_key(&key);
        assert_eq!(name, format!("app:{}", key.hex()));
        assert_eq!(store.server_for(&key), "127.0.0.1:1");
        let debug = format!("{store:?}");
        assert!(
            debug.contains("127.0.0.1:1") && debug.contains("app:"),
            "{debug}"
        );
    }

    #[test]
    fn deadlines_are_read_from_the_record() {
        let soon = OffsetDateTime::now_utc() + time::Duration::seconds(30);
        let bytes = record("x", time::Duration::seconds(30)).to_bytes().unwrap();
        assert!(is_live(&bytes));
        let mut moved = bytes.clone();
        assert!(move_deadline(&mut moved, soon));
        assert_eq!(stored_deadline(&moved), Some(millis_of(soon)));
        let past = record("x", time::Duration::seconds(-1)).to_bytes().unwrap();
        assert!(!is_live(&past));
        assert!(!move_deadline(&mut past.clone(), soon));
        for garbage in [&b"not a session record"[..], b"", b"\xd3"] {
            assert!(!is_live(garbage));
            assert!(!move_deadline(&mut garbage.to_vec(), soon));
        }
    }
}
