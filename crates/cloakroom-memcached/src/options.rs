//! [`MemcachedOptions`]: the server list from `SESSION_CACHE_URL`, and the
//! tuning, read from the [`settings`](crate::settings) or set with `with_*`
//! methods.

use std::fmt;
use std::net::Ipv6Addr;
use std::time::Duration;

use cloakroom_core::config::{self, ConfigError, Settings};

use crate::MemcachedStore;
use crate::settings::{CACHE_URL, CONNECT_TIMEOUT_MS, KEY_PREFIX, POOL_SIZE, TIMEOUT_MS};

/// Default [`MemcachedOptions::with_key_prefix`].
pub const DEFAULT_KEY_PREFIX: &str = "cloakroom:session:";
/// Default [`MemcachedOptions::with_pool_size`] (connections per server).
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Default [`MemcachedOptions::with_connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Default [`MemcachedOptions::with_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);

/// memcached's longest key.
const MAX_KEY: usize = 250;
/// Length of a [`StoreKey`](cloakroom_core::StoreKey): 64 hex digits.
const STORE_KEY_LEN: usize = 64;
/// The longest prefix that still leaves room for the store key.
pub const MAX_KEY_PREFIX: usize = MAX_KEY - STORE_KEY_LEN;
/// Port used when the URL names none.
pub const DEFAULT_PORT: u16 = 11211;
const MAX_POOL_SIZE: usize = 1024;

const URL_ACCEPTED: &str = "memcached://host[:port][,host[:port]...] (port 11211 if omitted; \
     IPv6 as [addr]:port; no user, password, path or query: memcached's text protocol has no authentication)";

/// One server of the list: a host name or IP address and a port.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ServerAddr {
    /// Host name or address, without brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How to reach and use the memcached servers; [`MemcachedOptions::build`]
/// makes the store.
///
/// Each `with_*` method has a setting of the same meaning (in
/// [`settings`](crate::settings)), read by
/// [`from_settings`](MemcachedOptions::from_settings); a getter of the same
/// name without `with_` reads it back. Errors from
/// [`MemcachedOptions::build`] name the setting.
///
/// ```
/// use std::time::Duration;
/// use cloakroom_memcached::MemcachedOptions;
///
/// let options = MemcachedOptions::from_url("memcached://127.0.0.1:11211,127.0.0.1:11212")?
///     .with_key_prefix("myapp:session:")
///     .with_pool_size(8)
///     .with_connect_timeout(Duration::from_millis(300))
///     .with_timeout(Duration::from_millis(800));
/// assert_eq!(options.key_prefix(), "myapp:session:");
/// let store = options.build()?;
/// assert_eq!(store.servers().len(), 2);
/// # Ok::<(), cloakroom_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct MemcachedOptions {
    pub(crate) servers: Vec<ServerAddr>,
    pub(crate) key_prefix: String,
    pub(crate) pool_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) timeout: Duration,
}

impl MemcachedOptions {
    /// Options for the servers listed in a `memcached://` URL, with every
    /// other option at its default. There is no `Default`: the servers have
    /// none.
    ///
    /// # Errors
    /// When the URL is not of the form `memcached://host[:port][,...]`, lists
    /// a server twice, or carries a user, password, path or query. The error
    /// names [`CACHE_URL`]; a URL with credentials is not echoed.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            servers: parse_url(url)?,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Options from `url` and the `SESSION_MEMCACHED_*` settings.
    ///
    /// # Errors
    /// When the URL or a setting is invalid; the error names the setting.
    pub fn from_settings(url: &str, settings: &dyn Settings) -> Result<Self, ConfigError> {
        let mut options = Self::from_url(url)?;
        if let Some(prefix) = settings.get(KEY_PREFIX) {
            options.key_prefix = prefix;
        }
        options.pool_size = config::parse_or(
            settings,
            POOL_SIZE,
            DEFAULT_POOL_SIZE,
            "a whole number of connections per server, 1 to 1024",
        )?;
        options.connect_timeout =
            config::millis_or(settings, CONNECT_TIMEOUT_MS, DEFAULT_CONNECT_TIMEOUT)?;
        options.timeout = config::millis_or(settings, TIMEOUT_MS, DEFAULT_TIMEOUT)?;
        Ok(options)
    }

    /// Text put before each key (default [`DEFAULT_KEY_PREFIX`]), so that
    /// several applications can share servers. At most [`MAX_KEY_PREFIX`]
    /// bytes of printable ASCII without spaces, because a memcached key is at
    /// most 250 bytes and the hashed session id and a suffix take 66.
    ///
    /// ```
    /// # use cloakroom_memcached::MemcachedOptions;
    /// let options = MemcachedOptions::from_url("memcached://127.0.0.1")?.with_key_prefix("shop:");
    /// assert_eq!(options.key_prefix(), "shop:");
    /// # Ok::<(), cloakroom_core::ConfigError>(())
    /// ```
    #[must_use]
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Most connections kept open to each server (default
    /// [`DEFAULT_POOL_SIZE`]); requests beyond it wait for a free one, within
    /// the [`timeout`](Self::with_timeout).
    ///
    /// ```
    /// # use cloakroom_memcached::MemcachedOptions;
    /// let options = MemcachedOptions::from_url("memcached://127.0.0.1")?.with_pool_size(4);
    /// assert_eq!(options.pool_size(), 4);
    /// # Ok::<(), cloakroom_core::ConfigError>(())
    /// ```
    #[must_use]
    pub fn with_pool_size(mut self, connections: usize) -> Self {
        self.pool_size = connections;
        self
    }

    /// Longest wait for a new connection to open (default
    /// [`DEFAULT_CONNECT_TIMEOUT`]).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use cloakroom_memcached::MemcachedOptions;
    /// let options = MemcachedOptions::from_url("memcached://127.0.0.1")?
    ///     .with_connect_timeout(Duration::from_millis(200));
    /// assert_eq!(options.connect_timeout(), Duration::from_millis(200));
    /// # Ok::<(), cloakroom_core::ConfigError>(())
    /// ```
    #[must_use]
    pub fn with_connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = limit;
        self
    }

    /// Longest time one store operation may take in all: waiting for a
    /// pooled connection, connecting, and the command with its reply
    /// (default [`DEFAULT_TIMEOUT`]). Past it the operation fails with
    /// [`ErrorKind::Timeout`](cloakroom_core::ErrorKind::Timeout).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use cloakroom_memcached::MemcachedOptions;
    /// let options = MemcachedOptions::from_url("memcached://127.0.0.1")?
    ///     .with_timeout(Duration::from_millis(800));
    /// assert_eq!(options.timeout(), Duration::from_millis(800));
    /// # Ok::<(), cloakroom_core::ConfigError>(())
    /// ```
    #[must_use]
    pub fn with_timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// The servers, as `host:port` (`[addr]:port` for IPv6), in the order
    /// of the URL.
    pub fn servers(&self) -> Vec<String> {
        self.servers.iter().map(ToString::to_string).collect()
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// The most connections kept open to each server.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// The limit on opening a connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The limit on a whole store operation.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Checks the options and makes the store. Nothing is connected yet: the
    /// first operation on each server opens its first connection, so a server
    /// that is down now is not an error here.
    ///
    /// # Errors
    /// When an option is out of range; the error names the matching setting.
    pub fn build(self) -> Result<MemcachedStore, ConfigError> {
        self.validate()?;
        Ok(MemcachedStore::new(self))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let prefix = &self.key_prefix;
        if prefix.len() > MAX_KEY_PREFIX || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                KEY_PREFIX,
                prefix,
                format!("at most {MAX_KEY_PREFIX} bytes of printable ASCII without spaces"),
            ));
        }
        if !(1..=MAX_POOL_SIZE).contains(&self.pool_size) {
            return Err(ConfigError::new(
                POOL_SIZE,
                self.pool_size.to_string(),
                "a whole number of connections per server, 1 to 1024",
            ));
        }
        for (setting, limit) in [
            (CONNECT_TIMEOUT_MS, self.connect_timeout),
            (TIMEOUT_MS, self.timeout),
        ] {
            if limit.is_zero() {
                return Err(ConfigError::new(
                    setting,
                    "0",
                    "a whole number of milliseconds above 0",
                ));
            }
        }
        Ok(())
    }
}

fn parse_url(url: &str) -> Result<Vec<ServerAddr>, ConfigError> {
    // Redacted even here: `memcache://u:pw@h` fails the scheme check
    // before the `@` check below refuses credentials.
    let bad = || ConfigError::new(CACHE_URL, config::redact_url(url), URL_ACCEPTED);
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("memcached") {
        return Err(bad());
    }
    if rest.contains('@') {
        // Never echo what may be a password.
        return Err(ConfigError::secret(CACHE_URL, url.len(), URL_ACCEPTED));
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err(bad());
    }
    let mut servers: Vec<ServerAddr> = Vec::new();
    for part in rest.split(',') {
        let server = parse_server(part.trim()).ok_or_else(bad)?;
        if servers.contains(&server) {
            return Err(ConfigError::new(
                CACHE_URL,
                url,
                format!("each server once ({server} is listed twice)"),
            ));
        }
        servers.push(server);
    }
    Ok(servers)
}

fn parse_server(text: &str) -> Option<ServerAddr> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        addr.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (addr.to_ascii_lowercase(), port)
    } else {
        let (host, port) = match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        };
        let valid = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !valid {
            return None;
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0)?,
    };
    Some(ServerAddr { host, port })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn servers(url: &str) -> Vec<String> {
        parse_url(url)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn parses_server_lists() {
        assert_eq!(servers("memcached://127.0.0.1:11211"), ["127.0.0.1:11211"]);
        assert_eq!(servers("memcached://localhost"), ["localhost:11211"]);
        assert_eq!(
            servers("MEMCACHED://Cache-1.example:1, cache_2:2/"),
            ["cache-1.example:1", "cache_2:2"]
        );
        assert_eq!(
            servers("memcached://[::1]:11300,[::1]"),
            ["[::1]:11300", "[::1]:11211"]
        );
    }

    #[test]
    fn rejects_malformed_urls_naming_the_setting() {
        for url in [
            "",
            "memcached://",
            "memcached://,",
            "redis://127.0.0.1:6379",
            "127.0.0.1:11211",
            "memcached://host:0",
            "memcached://host:99999",
            "memcached://host:port",
            "memcached://host/1",
            "memcached://host?timeout=1",
            "memcached://[::1",
            "memcached://[nope]:1",
            "memcached://ho st:1",
            "memcached://a:1,a:1",
        ] {
            let err = parse_url(url).unwrap_err();
            assert_eq!(err.variable(), CACHE_URL, "{url}");
        }
    }

    #[test]
    fn credentials_are_refused_and_not_echoed() {
        let err = parse_url("memcached://user:hunter2@127.0.0.1:11211").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("hunter2"));
        for url in ["memcache://u:hunter2@h:11211", "redis://:hun/ter2@h"] {
            let err = parse_url(url).unwrap_err();
            assert!(!err.to_string().contains("hun"), "{err}");
        }
    }

    #[test]
    fn reads_settings() {
        let settings = config::from_pairs([
            (KEY_PREFIX, "app:"),
            (POOL_SIZE, "3"),
            (CONNECT_TIMEOUT_MS, "250"),
            (TIMEOUT_MS, "700"),
        ]);
        let options = MemcachedOptions::from_settings("memcached://127.0.0.1", &settings).unwrap();
        assert_eq!(options.key_prefix, "app:");
        assert_eq!(options.pool_size, 3);
        assert_eq!(options.connect_timeout, Duration::from_millis(250));
        assert_eq!(options.timeout, Duration::from_millis(700));

        let defaults =
            MemcachedOptions::from_settings("memcached://127.0.0.1", &config::from_pairs([]))
                .unwrap();
        assert_eq!(defaults.key_prefix, DEFAULT_KEY_PREFIX);
        assert_eq!(defaults.pool_size, DEFAULT_POOL_SIZE);
        assert_eq!(defaults.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn bad_settings_name_their_variable() {
        for (name, value) in [
            (POOL_SIZE, "many"),
            (POOL_SIZE, "0"),
            (POOL_SIZE, "5000"),
            (TIMEOUT_MS, "0"),
            (CONNECT_TIMEOUT_MS, "-1"),
            (KEY_PREFIX, "has space"),
            (KEY_PREFIX, "tab\t"),
            (KEY_PREFIX, "ünicode"),
        ] {
            let settings = config::from_pairs([(name, value)]);
            let err = MemcachedOptions::from_settings("memcached://127.0.0.1", &settings)
                .and_then(|o| o.validate().map(|()| o))
                .unwrap_err();
            assert_eq!(err.variable(), name, "{name}={value}");
        }
        let long = "p".repeat(MAX_KEY_PREFIX + 1);
        let err = MemcachedOptions::from_url("memcached://127.0.0.1")
            .unwrap()
            .with_key_prefix(long)
            .validate()
            .unwrap_err();
        assert_eq!(err.variable(), KEY_PREFIX);
        assert!(
            MemcachedOptions::from_url("memcached://127.0.0.1")
                .unwrap()
                .with_key_prefix("p".repeat(MAX_KEY_PREFIX))
                .validate()
                .is_ok()
        );
    }
}
