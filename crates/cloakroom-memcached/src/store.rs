//! [`MemcachedStore`]: the [`SessionStore`] over one or more servers.

use std::fmt;
use std::sync::Arc;

use cloakroom_core::config::{ConfigError, Settings};
use cloakroom_core::{Call, Record, SessionStore, StoreKey};
use deadpool::managed::{Object, PoolError, TimeoutType};
use time::OffsetDateTime;

use crate::error::MemcachedError;
use crate::expiry;
use crate::options::{Options, TOUCHED_SUFFIX};
use crate::pool::{self, Pool};
use crate::protocol::{Command, ProtoError, Reply};
use crate::ring::Ring;

/// Sessions in memcached, spread over one or more servers by consistent
/// hashing.
///
/// Every write waits for the server's answer: `create` is memcached's `add`
/// (stores only a new key; see below for the `delete` that goes with it),
/// `update` is `replace` (stores only over an
/// existing key, so a session deleted by a concurrent logout stays deleted),
/// `touch` is `touch`, `delete` is `delete`, `load` is `get`.
///
/// # The touched deadline
///
/// memcached's `touch` moves an item's expiry in whole seconds and cannot
/// say later where it moved it to with more precision than its one-second
/// clock, which is not enough to enforce a short idle timeout. So `touch`
/// also writes a small companion item (the session's key followed by
/// [`TOUCHED_SUFFIX`]) holding the new deadline in milliseconds, in the same
/// round trip; `load` fetches both with one `get`, and `update` and `delete`
/// remove the companion with the session. memcached cannot make the
/// companion's `set` depend on the session being there, so a touch that finds
/// no session still leaves one; `create` removes any companion in the same
/// round trip as its `add`, so a session never starts with a deadline that a
/// touch meant for an earlier one (or for none) left behind. A companion
/// whose session is gone is never read, and expires on its own.
///
/// The one cost: a `create` refused because its key holds a live session
/// (which takes a collision of 256-bit random ids) still removes that
/// session's companion, so that session falls back to the deadline in its
/// record, the one its last save wrote.
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
    options: Options,
}

struct Server {
    name: String,
    pool: Pool,
}

impl MemcachedStore {
    /// A store for the servers in `url` with default options; see
    /// [`Options`] to change them.
    ///
    /// # Errors
    /// When the URL is malformed (see [`Options::from_url`]).
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        Options::from_url(url)?.build()
    }

    /// A store for the servers in `url` (the value of `SESSION_CACHE_URL`)
    /// with the `SESSION_MEMCACHED_*` tuning settings from `settings`. Does no
    /// I/O: a server that is down now is reported by the requests that need
    /// it, not here.
    ///
    /// # Errors
    /// When the URL or a setting is invalid; the error names the variable.
    pub fn from_settings(url: &str, settings: &dyn Settings) -> Result<Self, ConfigError> {
        Options::from_settings(url, settings)?.build()
    }

    pub(crate) fn new(options: Options) -> Self {
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
        let mut full = String::with_capacity(prefix.len() + key.hex().len() + TOUCHED_SUFFIX.len());
        full.push_str(prefix);
        full.push_str(&key.hex());
        full
    }

    /// The key of the session and of its touched deadline.
    fn keys(&self, key: &StoreKey) -> (String, String) {
        let session = self.memcached_key(key);
        let touched = format!("{session}{TOUCHED_SUFFIX}");
        (session, touched)
    }

    fn server(&self, key: &StoreKey) -> &Server {
        let servers = &self.inner.servers;
        // `Options` always holds at least one server, and the ring only
        // returns indexes of servers it was built from.
        &servers[self.inner.ring.server_for(key).min(servers.len() - 1)]
    }

    /// Runs `commands` (one round trip) on the server that holds `key`,
    /// within the operation timeout, and returns the reply to the first.
    async fn execute(
        &self,
        key: &StoreKey,
        commands: &[Command<'_>],
    ) -> Result<Reply, MemcachedError> {
        let server = self.server(key);
        let limit = self.inner.options.timeout;
        match tokio::time::timeout(limit, self.attempt(server, commands)).await {
            Ok(result) => result,
            // The timed-out attempt dropped its connection half way; the
            // pool will not hand it out again (see `Connection::is_clean`).
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
        commands: &[Command<'_>],
    ) -> Result<Reply, MemcachedError> {
        let mut retried = false;
        loop {
            let mut conn = server
                .pool
                .get()
                .await
                .map_err(|e| self.pool_error(server, e))?;
            let reused = Object::metrics(&conn).recycle_count > 0;
            match conn.execute(commands).await {
                Ok(replies) => {
                    return replies
                        .into_iter()
                        .next()
                        .ok_or_else(|| MemcachedError::Protocol {
                            server: server.name.clone(),
                            reply: "no reply".into(),
                        });
                }
                Err(e) => {
                    // Out of step with the server: never back into the pool.
                    drop(Object::take(conn));
                    // A pooled connection that the server closed while it sat
                    // idle (a restart) fails on first use. Every command here
                    // is safe to repeat (`add` then answers NOT_STORED and the
                    // layer picks a new id), so try once on a fresh one
                    // instead of failing a request to a server that is up.
                    if reused && !retried && e.is_closed_connection() {
                        retried = true;
                        continue;
                    }
                    return Err(Self::command_error(server, commands, e));
                }
            }
        }
    }

    fn pool_error(&self, server: &Server, e: PoolError<std::io::Error>) -> MemcachedError {
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

    fn command_error(server: &Server, commands: &[Command<'_>], e: ProtoError) -> MemcachedError {
        let name = server.name.clone();
        if e.is_too_large() {
            let size = commands
                .iter()
                .filter_map(Command::value_len)
                .max()
                .unwrap_or(0);
            let reply = e.to_string();
            return MemcachedError::TooLarge {
                server: name,
                size,
                reply,
            };
        }
        match e {
            ProtoError::Io(source) => MemcachedError::Io {
                server: name,
                source,
            },
            ProtoError::Server(reply) => MemcachedError::Server {
                server: name,
                reply,
            },
            ProtoError::Unexpected(reply) => MemcachedError::Protocol {
                server: name,
                reply,
            },
        }
    }

    /// Deletes the session and its touched deadline, reporting whether the
    /// session was there.
    async fn remove(&self, key: &StoreKey) -> Result<bool, MemcachedError> {
        let (session, touched) = self.keys(key);
        let commands = [
            Command::Delete { key: &session },
            Command::Delete { key: &touched },
        ];
        match self.execute(key, &commands).await? {
            Reply::Deleted(found) => Ok(found),
            other => Err(self.mismatch(key, &other)),
        }
    }

    fn mismatch(&self, key: &StoreKey, reply: &Reply) -> MemcachedError {
        MemcachedError::Protocol {
            server: self.server(key).name.clone(),
            reply: format!("{reply:?}"),
        }
    }
}

impl SessionStore for MemcachedStore {
    fn engine(&self) -> &'static str {
        "memcached"
    }

    fn load<'a>(&'a self, key: &'a StoreKey) -> Call<'a, Option<Record>> {
        Call::pending(async move {
            let (session, touched) = self.keys(key);
            let names = [session.as_str(), touched.as_str()];
            let mut values = match self.execute(key, &[Command::Get { keys: &names }]).await? {
                Reply::Values(values) => values,
                other => return Err(self.mismatch(key, &other).into()),
            };
            let mut take = |name: &str| {
                values
                    .iter()
                    .position(|(k, _)| k == name)
                    .map(|at| values.swap_remove(at).1)
            };
            let Some(bytes) = take(&session) else {
                return Ok(None);
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
            if let Some(deadline) = take(&touched).and_then(|v| expiry::decode_deadline(&v)) {
                record.expires_at = deadline;
            }
            // memcached keeps an item up to a grace second past its deadline; the
            // deadline itself is enforced here.
            Ok((!record.is_expired_at(OffsetDateTime::now_utc())).then_some(record))
        })
    }

    fn create<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        Call::pending(async move {
            let value = record.to_bytes()?;
            let Some(exptime) = expiry::exptime(record.expires_at, OffsetDateTime::now_utc())
            else {
                // Already past its deadline: there is nothing to store (and an
                // exptime of 0 would mean "forever"). The key stays free.
                return Ok(true);
            };
            let (session, touched) = self.keys(key);
            // A touch that found no session under this key may have left a
            // companion (see `touch`); it belongs to no record, so it goes
            // in the same round trip, before any load can see the session.
            let commands = [
                Command::Add {
                    key: &session,
                    exptime,
                    value: &value,
                },
                Command::Delete { key: &touched },
            ];
            match self.execute(key, &commands).await? {
                Reply::Stored(stored) => Ok(stored),
                other => Err(self.mismatch(key, &other).into()),
            }
        })
    }

    fn update<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        Call::pending(async move {
            let value = record.to_bytes()?;
            let Some(exptime) = expiry::exptime(record.expires_at, OffsetDateTime::now_utc())
            else {
                // Updated to a deadline that has passed: the session ends now.
                return Ok(self.remove(key).await?);
            };
            let (session, touched) = self.keys(key);
            // `replace` stores only over a live item: a session deleted meanwhile
            // stays deleted. The record carries its own deadline, so an earlier
            // touch's companion goes.
            let commands = [
                Command::Replace {
                    key: &session,
                    exptime,
                    value: &value,
                },
                Command::Delete { key: &touched },
            ];
            match self.execute(key, &commands).await? {
                Reply::Stored(stored) => Ok(stored),
                other => Err(self.mismatch(key, &other).into()),
            }
        })
    }

    fn touch<'a>(&'a self, key: &'a StoreKey, expires_at: OffsetDateTime) -> Call<'a, bool> {
        Call::pending(async move {
            let Some(exptime) = expiry::exptime(expires_at, OffsetDateTime::now_utc()) else {
                return Ok(self.remove(key).await?);
            };
            let (session, touched) = self.keys(key);
            let deadline = expiry::encode_deadline(expires_at);
            // One round trip. If the session is gone, the companion written here
            // is never read: load needs the session, and a session created
            // under this key later removes it (see `create`). It expires with
            // its own exptime otherwise.
            let commands = [
                Command::Touch {
                    key: &session,
                    exptime,
                },
                Command::Set {
                    key: &touched,
                    exptime,
                    value: deadline.as_bytes(),
                },
            ];
            match self.execute(key, &commands).await? {
                Reply::Touched(found) => Ok(found),
                other => Err(self.mismatch(key, &other).into()),
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a StoreKey) -> Call<'a, ()> {
        Call::pending(async move {
            self.remove(key).await?;
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

    use cloakroom_core::{ErrorKind, Id};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;

    /// A stand-in for memcached on a loopback port that answers each command
    /// line with `NOT_FOUND` and, if `lines_per_connection` is set, closes a
    /// connection after that many lines, as a restarted server leaves pooled
    /// connections closed. With `silent`, it reads and never answers.
    async fn fake_server(lines_per_connection: Option<usize>, silent: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let mut served = 0;
                    while let Ok(Some(_)) = lines.next_line().await {
                        if silent {
                            continue;
                        }
                        if write.write_all(b"NOT_FOUND\r\n").await.is_err() {
                            return;
                        }
                        served += 1;
                        if Some(served) == lines_per_connection {
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

    /// A stand-in for memcached that holds no items: it answers what
    /// memcached answers then (`add` and `set` store, `touch` and `delete`
    /// find nothing, `get` returns nothing) and records each command line,
    /// without the data blocks, in the order received.
    async fn recording_server() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    let mut line = String::new();
                    while read.read_line(&mut line).await.unwrap_or(0) > 0 {
                        let words: Vec<&str> = line.split_whitespace().collect();
                        let reply: &[u8] = match words[0] {
                            "add" | "set" | "replace" => {
                                let len: usize = words[4].parse().unwrap();
                                let mut data = vec![0; len + 2];
                                read.read_exact(&mut data).await.unwrap();
                                if words[0] == "replace" {
                                    b"NOT_STORED\r\n"
                                } else {
                                    b"STORED\r\n"
                                }
                            }
                            "get" => b"END\r\n",
                            _ => b"NOT_FOUND\r\n",
                        };
                        log.lock().unwrap().push(line.trim_end().to_owned());
                        line.clear();
                        if write.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (format!("memcached://{addr}"), seen)
    }

    /// A touch that finds no session answers false, but memcached cannot
    /// make its companion's `set` depend on that: so a `create` under the
    /// key removes any companion, in the same round trip as its `add`, and a
    /// new session never takes a deadline a touch left for no session.
    #[tokio::test]
    async fn create_removes_a_companion_a_missed_touch_left() {
        let (url, seen) = recording_server().await;
        let store = Options::from_url(&url)
            .unwrap()
            .key_prefix("p:")
            .build()
            .unwrap();
        let key = key();
        let (session, touched) = store.keys(&key);
        let soon = OffsetDateTime::now_utc() + time::Duration::minutes(5);
        assert!(!store.touch(&key, soon).await.unwrap());
        let record = Record::new(cloakroom_core::record::Data::new(), soon);
        assert!(store.create(&key, &record).await.unwrap());
        let sent = std::mem::take(&mut *seen.lock().unwrap());
        let verbs: Vec<(&str, &str)> = sent
            .iter()
            .map(|line| {
                let mut words = line.split(' ');
                (words.next().unwrap(), words.next().unwrap())
            })
            .collect();
        assert_eq!(
            verbs,
            [
                ("touch", session.as_str()),
                ("set", &touched),
                ("add", &session),
                ("delete", &touched),
            ]
        );
    }

    #[tokio::test]
    async fn connections_closed_by_the_server_are_not_errors() {
        // `delete` sends two commands; the server closes after answering them.
        let url = fake_server(Some(2), false).await;
        let store = Options::from_url(&url)
            .unwrap()
            .pool_size(2)
            .build()
            .unwrap();
        for round in 0..20 {
            store.delete(&key()).await.unwrap();
            if round % 2 == 0 {
                // Let the close arrive, so the pool notices it on checkout;
                // otherwise the command meets it and is retried.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    #[tokio::test]
    async fn a_server_that_does_not_answer_times_out() {
        let url = fake_server(None, true).await;
        let store = Options::from_url(&url)
            .unwrap()
            .timeout(Duration::from_millis(300))
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
        let store = Options::from_url("memcached://127.0.0.1:1")
            .unwrap()
            .key_prefix("app:")
            .build()
            .unwrap();
        let key = key();
        let (session, touched) = store.keys(&key);
        assert_eq!(session, format!("app:{}", key.hex()));
        assert_eq!(touched, format!("{session}{TOUCHED_SUFFIX}"));
        assert!(touched.len() <= 250);
        assert_eq!(store.memcached_key(&key), session);
        assert_eq!(store.server_for(&key), "127.0.0.1:1");
        let debug = format!("{store:?}");
        assert!(
            debug.contains("127.0.0.1:1") && debug.contains("app:"),
            "{debug}"
        );
    }
}
