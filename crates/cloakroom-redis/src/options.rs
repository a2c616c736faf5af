//! Tuning of the Redis store ([`RedisOptions`]), read from the
//! `SESSION_REDIS_*` [`settings`] or set with `with_*` methods, and the
//! parsing of the URL.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cloakroom_core::ConfigError;
use cloakroom_core::config::{self, Settings};
use deadpool_redis::redis::{ConnectionInfo, IntoConnectionInfo};

use crate::RedisStoreError;
use crate::settings;

/// The key prefix when none is configured.
pub const DEFAULT_KEY_PREFIX: &str = "cloakroom:session:";

/// What [`RedisStore`](crate::RedisStore) is tuned with.
///
/// Each `with_*` method but [`with_near_cache_limits`](Self::with_near_cache_limits)
/// has a setting of the same meaning (in [`settings`]), read by
/// [`from_settings`](RedisOptions::from_settings); a getter of the same name
/// without `with_` reads it back.
///
/// The defaults keep a dead or hung Redis from holding a request for more
/// than a second: connecting and each command have their own limits, and
/// [`with_timeout`](Self::with_timeout) caps a whole store call, whatever the
/// steps add up to.
///
/// ```
/// use std::time::Duration;
/// use cloakroom_redis::RedisOptions;
///
/// let options = RedisOptions::new()
///     .with_key_prefix("myapp:session:")
///     .with_pool_size(64)
///     .with_timeout(Duration::from_millis(800));
/// assert_eq!(options.key_prefix(), "myapp:session:");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    key_prefix: String,
    /// `None`: one per worker thread of the runtime (see `pool_size`).
    pool_size: Option<usize>,
    connect_timeout: Duration,
    command_timeout: Duration,
    timeout: Duration,
    tls_ca_file: Option<PathBuf>,
    /// Zero: no near cache.
    near_cache: Duration,
    near_cache_entries: u64,
    near_cache_bytes: u64,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            pool_size: None,
            connect_timeout: Duration::from_millis(500),
            command_timeout: Duration::from_millis(500),
            timeout: Duration::from_millis(1000),
            tls_ca_file: None,
            near_cache: Duration::ZERO,
            near_cache_entries: 10_000,
            near_cache_bytes: 64 * 1024 * 1024,
        }
    }
}

impl RedisOptions {
    /// The defaults (see the crate README for the table).
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the `SESSION_REDIS_*` settings; unset ones keep their default.
    ///
    /// # Errors
    /// A set value that does not parse, naming the setting.
    pub fn from_settings(s: &dyn Settings) -> Result<Self, ConfigError> {
        let d = Self::default();
        let pool_size = match s.get(settings::POOL_SIZE) {
            None => None,
            Some(_) => Some(config::parse_or(
                s,
                settings::POOL_SIZE,
                0,
                "a whole number above 0",
            )?),
        };
        if pool_size == Some(0) {
            return Err(ConfigError::new(
                settings::POOL_SIZE,
                "0",
                "a whole number above 0",
            ));
        }
        Ok(Self {
            key_prefix: s.get(settings::KEY_PREFIX).unwrap_or(d.key_prefix),
            pool_size,
            connect_timeout: config::millis_or(s, settings::CONNECT_TIMEOUT_MS, d.connect_timeout)?,
            command_timeout: config::millis_or(s, settings::COMMAND_TIMEOUT_MS, d.command_timeout)?,
            timeout: config::millis_or(s, settings::TIMEOUT_MS, d.timeout)?,
            tls_ca_file: s.get(settings::TLS_CA_FILE).map(PathBuf::from),
            near_cache: Duration::from_millis(config::parse_or(
                s,
                settings::NEAR_CACHE_MS,
                0,
                "a whole number of milliseconds, 0 for no near cache",
            )?),
            ..d
        })
    }

    /// Prefix of every key the store writes (default `cloakroom:session:`),
    /// so that several applications, or tests, can share one Redis database.
    ///
    /// On a cluster, a prefix holding a `{hash tag}` would put every session
    /// in one slot, on one master; the default has none.
    ///
    /// ```
    /// # use cloakroom_redis::RedisOptions;
    /// let options = RedisOptions::new().with_key_prefix("horizon:");
    /// assert_eq!(options.key_prefix(), "horizon:");
    /// ```
    #[must_use]
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Connections the store keeps open (default: one per worker thread of
    /// the tokio runtime the store is built on, else one per CPU the process
    /// may run on). Each one pipelines the commands of any number of
    /// concurrent calls, and calls take turns over them, so this is not a cap
    /// on concurrency. A connection's reads and writes are one task, which
    /// runs on one worker at a time: more connections than workers only
    /// split the same commands into more, smaller batches, which cost more
    /// system calls and wake-ups (measured in the crate README). A value of
    /// 0 counts as 1.
    ///
    /// ```
    /// # use cloakroom_redis::RedisOptions;
    /// let options = RedisOptions::new().with_pool_size(8);
    /// assert_eq!(options.pool_size(), 8);
    /// ```
    #[must_use]
    pub fn with_pool_size(mut self, size: usize) -> Self {
        self.pool_size = Some(size.max(1));
        self
    }

    /// Limit on opening a connection, handshake included, and on waiting for
    /// the pool to hand one out (default 500 ms).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use cloakroom_redis::RedisOptions;
    /// let options = RedisOptions::new().with_connect_timeout(Duration::from_millis(200));
    /// assert_eq!(options.connect_timeout(), Duration::from_millis(200));
    /// ```
    #[must_use]
    pub fn with_connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = limit;
        self
    }

    /// Limit on waiting for the answer to one command or pipeline, and for
    /// the liveness check of a pooled connection before it is reused
    /// (default 500 ms). A connection that misses it is replaced.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use cloakroom_redis::RedisOptions;
    /// let options = RedisOptions::new().with_command_timeout(Duration::from_millis(200));
    /// assert_eq!(options.command_timeout(), Duration::from_millis(200));
    /// ```
    #[must_use]
    pub fn with_command_timeout(mut self, limit: Duration) -> Self {
        self.command_timeout = limit;
        self
    }

    /// Cap on a whole store call: connecting (if needed) and the command
    /// together (default 1000 ms), whatever the other limits add up to.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use cloakroom_redis::RedisOptions;
    /// let options = RedisOptions::new().with_timeout(Duration::from_millis(750));
    /// assert_eq!(options.timeout(), Duration::from_millis(750));
    /// ```
    #[must_use]
    pub fn with_timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// For `rediss://` on a single server: trust the certificate authority in
    /// this PEM file instead of the system's trust store (a private CA, a
    /// self-signed server certificate). Needs the `tls` feature.
    ///
    /// ```
    /// # use cloakroom_redis::RedisOptions;
    /// let options = RedisOptions::new().with_tls_ca_file("/etc/redis/ca.pem");
    /// assert!(options.tls_ca_file().is_some());
    /// ```
    #[must_use]
    pub fn with_tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }

    /// Turns on the near cache (default: off): sessions read from Redis are
    /// kept in this process and served from there, without a round trip,
    /// until Redis reports that their key changed (RESP3 client tracking,
    /// on a connection of its own per server or cluster master), and for at
    /// most `cap` after they were read, whatever Redis reports. Writes
    /// still go to Redis first. Whenever tracking stops (its connection
    /// drops, a heartbeat goes unanswered, Redis restarts), the cache is
    /// emptied and loads go to Redis until tracking is back. `Duration::ZERO`
    /// turns it off. See the crate README for what it promises.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use cloakroom_redis::RedisOptions;
    /// let options = RedisOptions::new().with_near_cache(Duration::from_secs(2));
    /// assert_eq!(options.near_cache(), Duration::from_secs(2));
    /// ```
    #[must_use]
    pub fn with_near_cache(mut self, cap: Duration) -> Self {
        self.near_cache = cap;
        self
    }

    /// Bounds on the near cache (default 10,000 sessions and 64 MiB): the
    /// sessions it holds, and their bytes as Redis sent them (each counted
    /// with a fixed overhead). Past either, the least used go first. A
    /// session bigger than an eighth of `max_bytes` is not kept.
    ///
    /// ```
    /// # use cloakroom_redis::RedisOptions;
    /// let options = RedisOptions::new().with_near_cache_limits(1_000, 8 << 20);
    /// assert_eq!(options.near_cache_limits(), (1_000, 8 << 20));
    /// ```
    #[must_use]
    pub fn with_near_cache_limits(mut self, max_entries: u64, max_bytes: u64) -> Self {
        self.near_cache_entries = max_entries.max(1);
        self.near_cache_bytes = max_bytes.max(1);
        self
    }

    /// The near cache's cap; zero when it is off.
    pub fn near_cache(&self) -> Duration {
        self.near_cache
    }

    /// The near cache's bounds: sessions, bytes.
    pub fn near_cache_limits(&self) -> (u64, u64) {
        (self.near_cache_entries, self.near_cache_bytes)
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// The pool size: the one set, or else the default for where it is
    /// asked (see [`with_pool_size`](Self::with_pool_size)).
    pub fn pool_size(&self) -> usize {
        self.pool_size.unwrap_or_else(default_pool_size)
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The command timeout.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// The overall timeout of a store call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The CA file for `rediss://`, if one is set.
    pub fn tls_ca_file(&self) -> Option<&Path> {
        self.tls_ca_file.as_deref()
    }
}

/// Where the store connects, as parsed from its URL.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Single(Box<ConnectionInfo>),
    Cluster(Vec<ConnectionInfo>),
}

/// What the URL may look like, for error messages.
pub(crate) const ACCEPTED_URLS: &str = "redis://[user:password@]host[:port][/db], \
rediss://... (TLS, needs the `tls` feature), or \
redis+cluster://[user:password@]host:port,host:port,... (also rediss+cluster://)";

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Self, RedisStoreError> {
        let bad = |reason: &str| RedisStoreError::InvalidUrl {
            url: redact(url),
            reason: reason.to_owned(),
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad("no scheme"));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "redis" | "rediss" | "redis+unix" | "unix" => {
                check_tls(scheme).map_err(|r| bad(&r))?;
                url.into_connection_info()
                    .map(|info| Self::Single(Box::new(info)))
                    .map_err(|e| bad(&e.to_string()))
            }
            "redis+cluster" | "rediss+cluster" => {
                let node_scheme = if scheme.len() == "rediss+cluster".len() {
                    "rediss"
                } else {
                    "redis"
                };
                check_tls(node_scheme).map_err(|r| bad(&r))?;
                // Everything up to the first `/` or `?` is the authority:
                // [userinfo@]host:port,host:port,...
                let end = rest.find(['/', '?']).unwrap_or(rest.len());
                let (authority, tail) = rest.split_at(end);
                if !matches!(tail, "" | "/" | "/0") {
                    return Err(bad(
                        "a cluster URL has no database or options (a cluster has database 0 only)",
                    ));
                }
                let (userinfo, hosts) = match authority.rsplit_once('@') {
                    Some((u, h)) => (Some(u), h),
                    None => (None, authority),
                };
                let mut nodes = Vec::new();
                for host in hosts.split(',') {
                    if host.is_empty() {
                        return Err(bad("empty host in the node list"));
                    }
                    let node = match userinfo {
                        Some(u) => format!("{node_scheme}://{u}@{host}"),
                        None => format!("{node_scheme}://{host}"),
                    };
                    let info = node
                        .as_str()
                        .into_connection_info()
                        .map_err(|e| bad(&e.to_string()))?;
                    nodes.push(info);
                }
                Ok(Self::Cluster(nodes))
            }
            _ => Err(bad("unknown scheme")),
        }
    }
}

fn check_tls(scheme: &str) -> Result<(), String> {
    if scheme.eq_ignore_ascii_case("rediss") && !cfg!(feature = "tls") {
        return Err(
            "TLS (rediss://) needs cloakroom-redis built with its `tls` feature".to_owned(),
        );
    }
    Ok(())
}

/// One connection per worker thread of the current tokio runtime; outside
/// one, per CPU this process may run on (what a tokio runtime would start).
fn default_pool_size() -> usize {
    tokio::runtime::Handle::try_current()
        .map(|runtime| runtime.metrics().num_workers())
        .unwrap_or_else(|_| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1)
}

/// The URL with any password masked, for errors and `Debug`. Query options
/// are dropped too, since they may carry credentials.
pub(crate) fn redact(url: &str) -> String {
    let mut shown = config::redact_url(url);
    if let Some(query) = shown.find('?') {
        shown.truncate(query);
    }
    shown
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use cloakroom_core::config::from_pairs;

    #[test]
    fn the_default_pool_has_a_connection_per_runtime_worker() {
        for workers in [1, 3] {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .build()
                .unwrap();
            let size = runtime.block_on(async { RedisOptions::new().pool_size() });
            assert_eq!(size, workers);
            let set = runtime.block_on(async { RedisOptions::new().with_pool_size(5).pool_size() });
            assert_eq!(set, 5);
        }
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(
            current.block_on(async { RedisOptions::new().pool_size() }),
            1
        );
    }

    #[test]
    fn settings_have_defaults_and_name_bad_values() {
        let o = RedisOptions::from_settings(&from_pairs([])).unwrap();
        assert_eq!(o, RedisOptions::default());
        // Unset, the pool size follows where it is asked: here, no runtime.
        assert_eq!(
            o.pool_size(),
            std::thread::available_parallelism().map_or(1, usize::from)
        );
        let o = RedisOptions::from_settings(&from_pairs([
            ("SESSION_REDIS_KEY_PREFIX", "x:"),
            ("SESSION_REDIS_POOL_SIZE", "4"),
            ("SESSION_REDIS_TIMEOUT_MS", "250"),
            ("SESSION_REDIS_NEAR_CACHE_MS", "2000"),
        ]))
        .unwrap();
        assert_eq!(o.near_cache(), Duration::from_secs(2));
        assert_eq!(RedisOptions::new().near_cache(), Duration::ZERO);
        let off = RedisOptions::from_settings(&from_pairs([("SESSION_REDIS_NEAR_CACHE_MS", "0")]));
        assert_eq!(off.unwrap().near_cache(), Duration::ZERO);
        assert_eq!(o.key_prefix(), "x:");
        assert_eq!(o.pool_size(), 4);
        assert_eq!(o.timeout(), Duration::from_millis(250));
        for (name, value) in [
            ("SESSION_REDIS_POOL_SIZE", "0"),
            ("SESSION_REDIS_POOL_SIZE", "many"),
            ("SESSION_REDIS_CONNECT_TIMEOUT_MS", "1s"),
            ("SESSION_REDIS_COMMAND_TIMEOUT_MS", "0"),
            ("SESSION_REDIS_TIMEOUT_MS", "-1"),
            ("SESSION_REDIS_NEAR_CACHE_MS", "2s"),
            ("SESSION_REDIS_NEAR_CACHE_MS", "-5"),
        ] {
            let err = RedisOptions::from_settings(&from_pairs([(name, value)])).unwrap_err();
            assert_eq!(err.variable(), name);
        }
    }

    #[test]
    fn parses_single_and_cluster_urls() {
        assert!(matches!(
            Target::parse("redis://127.0.0.1:6379/2"),
            Ok(Target::Single(_))
        ));
        assert!(matches!(
            Target::parse("redis://127.0.0.1"),
            Ok(Target::Single(_))
        ));
        match Target::parse("redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001/") {
            Ok(Target::Cluster(nodes)) => {
                assert_eq!(nodes.len(), 2);
                assert_eq!(nodes[1].redis_settings().password(), Some("pw"));
                assert_eq!(nodes[1].addr().to_string(), "127.0.0.1:7001");
            }
            other => panic!("expected a cluster, got {other:?}"),
        }
        for bad in [
            "127.0.0.1:6379",
            "memcached://127.0.0.1",
            "redis+cluster://127.0.0.1:7000,,127.0.0.1:7001",
            "redis+cluster://127.0.0.1:7000/3",
            "redis://127.0.0.1:notaport",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(redact("redis://:s3cret@h:1/0"), "redis://:****@h:1/0");
        assert_eq!(redact("redis://h:1/0?password=s3cret"), "redis://h:1/0");
        assert_eq!(
            redact("redis+cluster://:s3cret@a:1,b:2"),
            "redis+cluster://:****@a:1,b:2"
        );
        for bad in [
            "redis+cluster://:s3cret@a:1/9",
            "redis://:s3cret@h:port",
            "redis://:s3cret@h/x",
        ] {
            let err = Target::parse(bad).unwrap_err();
            assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
        }
    }
}
