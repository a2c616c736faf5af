//! [`SqlOptions`]: the builder behind [`SqlStore`], and how it reads the
//! `SESSION_DATABASE_*` [`settings`](crate::settings).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use cloakroom_core::ConfigError;
use cloakroom_core::config::{self, Settings};

use crate::SqlStore;
use crate::settings::{CLEANUP_SECONDS, FALLBACK_URL, MIGRATE, POOL_SIZE, TABLE, TIMEOUT_MS, URL};

/// The table name used when none is configured.
pub const DEFAULT_TABLE: &str = "cloakroom_session";
/// Connections in the pool when none is configured (MySQL, PostgreSQL).
pub const DEFAULT_POOL_SIZE: u32 = 10;
/// Connections in the pool when none is configured, for SQLite. SQLite lets
/// one connection write at a time; other writers wait for its lock by
/// sleeping and retrying, which under concurrent saves stretches some of
/// them past the store timeout. With one connection, calls queue in order
/// for it instead, and in-process queries are short enough for that.
pub const DEFAULT_SQLITE_POOL_SIZE: u32 = 1;
/// The bound on each store call when none is configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);

/// The SQL dialect a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// MySQL 8 or MariaDB: `mysql://` or `mariadb://`.
    MySql,
    /// PostgreSQL: `postgres://` or `postgresql://`.
    Postgres,
    /// SQLite: `sqlite://path`, `sqlite:path` or `sqlite::memory:`.
    Sqlite,
}

impl Backend {
    /// Reads the backend from a URL's scheme; `None` for other schemes.
    pub fn from_url(url: &str) -> Option<Self> {
        let scheme = url.split_once(':')?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "mysql" | "mariadb" => Some(Self::MySql),
            "postgres" | "postgresql" => Some(Self::Postgres),
            "sqlite" => Some(Self::Sqlite),
            _ => None,
        }
    }

    /// The cargo feature of this crate (and of `cloakroom`) that compiles the
    /// driver in.
    pub fn feature(self) -> &'static str {
        match self {
            Self::MySql => "mysql",
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }

    /// True when this build has the driver.
    pub fn is_compiled_in(self) -> bool {
        match self {
            Self::MySql => cfg!(feature = "mysql"),
            Self::Postgres => cfg!(feature = "postgres"),
            Self::Sqlite => cfg!(feature = "sqlite"),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.feature())
    }
}

/// How to build a [`SqlStore`]: the database URL plus tuning, each with the
/// default that `from_env()` uses.
///
/// Each `with_*` method has a setting of the same meaning (in
/// [`settings`](crate::settings)), read by
/// [`from_settings`](SqlOptions::from_settings); a getter of the same name
/// without `with_` reads it back. The URL has no getter, as it may hold a
/// password (`Debug` shows it with the password masked). There is no
/// `Default`: the URL has none.
///
/// ```
/// use std::time::Duration;
/// use cloakroom_sql::SqlOptions;
///
/// let options = SqlOptions::new("sqlite::memory:")
///     .with_table("web_sessions")
///     .with_timeout(Duration::from_millis(500))
///     .with_migrate_on_first_use(true);
/// assert_eq!(options.table(), "web_sessions");
/// let store = options.build().expect("valid options");
/// assert_eq!(store.table(), "web_sessions");
/// ```
#[derive(Clone)]
pub struct SqlOptions {
    pub(crate) url: String,
    /// Which setting the URL came from, for error messages.
    pub(crate) url_variable: &'static str,
    pub(crate) table: String,
    /// `None`: the backend's default.
    pub(crate) pool_size: Option<u32>,
    pub(crate) timeout: Duration,
    pub(crate) migrate_on_first_use: bool,
    pub(crate) cleanup_every: Option<Duration>,
}

impl SqlOptions {
    /// Options for the database at `url` (`mysql://user:pass@host:3306/db`,
    /// `postgres://...`, `sqlite://path`) with every default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            url_variable: URL,
            table: DEFAULT_TABLE.to_owned(),
            pool_size: None,
            timeout: DEFAULT_TIMEOUT,
            migrate_on_first_use: false,
            cleanup_every: None,
        }
    }

    /// Options for `url` with the tuning read from `settings` (see the crate
    /// README for the table of settings).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the setting whose value is not accepted.
    pub fn from_settings(url: &str, settings: &dyn Settings) -> Result<Self, ConfigError> {
        let mut options = Self::new(url);
        // The facade resolves SESSION_DATABASE_URL → DATABASE_URL; naming the
        // one that was actually set makes a bad-URL message point at the
        // right line of the operator's configuration.
        if settings.get(URL).is_none() && settings.get(FALLBACK_URL).is_some() {
            options.url_variable = FALLBACK_URL;
        }
        if let Some(table) = settings.get(TABLE) {
            options.table = table.trim().to_owned();
        }
        if settings.get(POOL_SIZE).is_some() {
            let size = config::parse_or(
                settings,
                POOL_SIZE,
                DEFAULT_POOL_SIZE,
                "a whole number of connections from 1 to 1000",
            )?;
            if !(1..=1000).contains(&size) {
                return Err(ConfigError::new(
                    POOL_SIZE,
                    size.to_string(),
                    "a whole number of connections from 1 to 1000",
                ));
            }
            options.pool_size = Some(size);
        }
        options.timeout = config::millis_or(settings, TIMEOUT_MS, DEFAULT_TIMEOUT)?;
        options.migrate_on_first_use = config::bool_or(settings, MIGRATE, false)?;
        let every: u64 = config::parse_or(
            settings,
            CLEANUP_SECONDS,
            0,
            "a whole number of seconds (0 turns the background cleanup off)",
        )?;
        options.cleanup_every = (every > 0).then(|| Duration::from_secs(every));
        Ok(options)
    }

    /// The table that holds the sessions (default `cloakroom_session`):
    /// lowercase ASCII letters, digits and `_`, starting with a letter or
    /// `_`, at most 48 characters. Checked by [`build`](Self::build).
    ///
    /// ```
    /// # use cloakroom_sql::SqlOptions;
    /// let options = SqlOptions::new("sqlite::memory:").with_table("sessions");
    /// assert_eq!(options.table(), "sessions");
    /// ```
    #[must_use]
    pub fn with_table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// The most connections the pool keeps open (default
    /// [`DEFAULT_POOL_SIZE`], or [`DEFAULT_SQLITE_POOL_SIZE`] for SQLite). A
    /// value of 0 counts as 1.
    ///
    /// ```
    /// # use cloakroom_sql::SqlOptions;
    /// let options = SqlOptions::new("sqlite::memory:").with_pool_size(32);
    /// assert_eq!(options.pool_size(), 32);
    /// ```
    #[must_use]
    pub fn with_pool_size(mut self, connections: u32) -> Self {
        self.pool_size = Some(connections.max(1));
        self
    }

    /// The bound on each store call (default 1 s): waiting for a pooled
    /// connection (including opening one) plus running the statement. Past
    /// it the call fails with a [`Timeout`](cloakroom_core::ErrorKind::Timeout)
    /// error and a connection stuck in a statement is closed. Zero counts
    /// as 1 ms.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use cloakroom_sql::SqlOptions;
    /// let options = SqlOptions::new("sqlite::memory:").with_timeout(Duration::from_millis(300));
    /// assert_eq!(options.timeout(), Duration::from_millis(300));
    /// ```
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Runs [`SqlStore::migrate`] before the store's first statement (default
    /// off, as Django leaves `migrate` to the operator). The first requests
    /// wait for it; if it fails they get the error and the next call tries
    /// again.
    ///
    /// ```
    /// # use cloakroom_sql::SqlOptions;
    /// let options = SqlOptions::new("sqlite::memory:").with_migrate_on_first_use(true);
    /// assert!(options.migrate_on_first_use());
    /// ```
    #[must_use]
    pub fn with_migrate_on_first_use(mut self, migrate: bool) -> Self {
        self.migrate_on_first_use = migrate;
        self
    }

    /// Runs [`SqlStore::clear_expired`] in the background at this interval
    /// (default `None`: leave it to `cloakroom-admin clearsessions` from cron,
    /// as Django does; a zero interval counts as `None`). The task starts
    /// with the store's first call (it needs the Tokio runtime) and stops
    /// when the last clone of the store is dropped. For a task with a handle
    /// of its own, see [`SqlStore::spawn_cleanup`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use cloakroom_sql::SqlOptions;
    /// let hourly = Some(Duration::from_secs(3600));
    /// let options = SqlOptions::new("sqlite::memory:").with_cleanup_every(hourly);
    /// assert_eq!(options.cleanup_every(), hourly);
    /// ```
    #[must_use]
    pub fn with_cleanup_every(mut self, interval: Option<Duration>) -> Self {
        self.cleanup_every = interval.filter(|d| !d.is_zero());
        self
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The pool size: the one set, or else the default for the URL's
    /// database (see [`with_pool_size`](Self::with_pool_size)).
    pub fn pool_size(&self) -> u32 {
        self.pool_size
            .unwrap_or(match Backend::from_url(self.url.trim()) {
                Some(Backend::Sqlite) => DEFAULT_SQLITE_POOL_SIZE,
                _ => DEFAULT_POOL_SIZE,
            })
    }

    /// The bound on each store call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether the store runs [`SqlStore::migrate`] before its first
    /// statement.
    pub fn migrate_on_first_use(&self) -> bool {
        self.migrate_on_first_use
    }

    /// The interval of the background cleanup; `None` when it is off.
    pub fn cleanup_every(&self) -> Option<Duration> {
        self.cleanup_every
    }

    /// Checks the options and builds the store. Nothing connects yet: the
    /// pool opens connections on first use, so a database that is down at
    /// startup is not an error here.
    ///
    /// # Errors
    /// A [`ConfigError`] for a URL that does not parse or names a driver
    /// that is not compiled in, or a bad table name.
    pub fn build(self) -> Result<SqlStore, ConfigError> {
        SqlStore::from_options(self)
    }

    /// Rejects table names that could not be pasted into SQL safely or that
    /// the databases would fold or truncate.
    pub(crate) fn check_table(&self) -> Result<(), ConfigError> {
        let t = self.table.as_bytes();
        let ok = !t.is_empty()
            && t.len() <= 48
            && (t[0].is_ascii_lowercase() || t[0] == b'_')
            && t.iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(())
        } else {
            Err(ConfigError::new(
                TABLE,
                self.table.clone(),
                "a table name of lowercase ASCII letters, digits and _ \
                 (starting with a letter or _), at most 48 characters",
            ))
        }
    }

    /// The error for a URL that cannot be used.
    pub(crate) fn bad_url(&self, why: &str) -> ConfigError {
        ConfigError::new(self.url_variable, redact_url(&self.url), why)
    }
}

impl fmt::Debug for SqlOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlOptions")
            .field("url", &redact_url(&self.url))
            .field("table", &self.table)
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .field("migrate_on_first_use", &self.migrate_on_first_use)
            .field("cleanup_every", &self.cleanup_every)
            .finish()
    }
}

/// The URL with its credentials replaced by `****`, for logs, `Debug` and
/// error messages: [`cloakroom_core::config::redact_url`], the one redactor
/// of every engine, re-exported here. It masks the password whatever
/// characters it holds (`/`, `?`, `#`, `@`, `:`) and the `password=` query
/// parameter that PostgreSQL URLs may carry.
///
/// ```
/// assert_eq!(
///     cloakroom_sql::redact_url("mysql://dash:s3cret@127.0.0.1:3306/dash"),
///     "mysql://dash:****@127.0.0.1:3306/dash",
/// );
/// assert_eq!(
///     cloakroom_sql::redact_url("postgres://app:pa/ss@db/app"),
///     "postgres://app:****@db/app",
/// );
/// assert_eq!(
///     cloakroom_sql::redact_url("postgres://h/db?user=u&password=s3cret"),
///     "postgres://h/db?user=u&password=****",
/// );
/// ```
pub use cloakroom_core::config::redact_url;

/// A parsed URL, ready for the driver that will use it.
pub(crate) enum Connect {
    #[cfg(feature = "mysql")]
    MySql(sqlx::mysql::MySqlConnectOptions),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::postgres::PgConnectOptions),
    #[cfg(feature = "sqlite")]
    Sqlite {
        options: sqlx::sqlite::SqliteConnectOptions,
        /// An in-memory database lives only as long as a connection to it,
        /// so the pool must keep exactly one open.
        in_memory: bool,
    },
}

impl Connect {
    pub(crate) fn parse(options: &SqlOptions) -> Result<(Backend, Self), ConfigError> {
        let url = options.url.trim();
        let backend = Backend::from_url(url).ok_or_else(|| {
            options.bad_url("a URL starting with mysql://, mariadb://, postgres:// or sqlite:")
        })?;
        if !backend.is_compiled_in() {
            return Err(options.bad_url(&format!(
                "a database whose driver is compiled in; `{backend}` is not: \
                 turn on the `{backend}` feature of cloakroom"
            )));
        }
        let invalid = |e: sqlx::Error| {
            options.bad_url(&format!(
                "a valid {backend} URL ({})",
                redact_url(&e.to_string())
            ))
        };
        let connect = match backend {
            #[cfg(feature = "mysql")]
            Backend::MySql => {
                // sqlx reads any scheme as MySQL once it is asked to; the
                // `mariadb://` spelling only picks the backend above.
                let o = sqlx::mysql::MySqlConnectOptions::from_str(url).map_err(invalid)?;
                Self::MySql(o.charset("utf8mb4"))
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres => {
                let o = sqlx::postgres::PgConnectOptions::from_str(url).map_err(invalid)?;
                Self::Postgres(o.application_name("cloakroom"))
            }
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                let mut o = sqlx::sqlite::SqliteConnectOptions::from_str(url).map_err(invalid)?;
                let in_memory = url.contains(":memory:") || url.contains("mode=memory");
                if !url.contains("mode=") {
                    o = o.create_if_missing(true);
                }
                if !in_memory {
                    // WAL lets readers run while a request writes.
                    o = o.journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
                }
                // A writer waits for a lock at most as long as a store call
                // may take in all.
                o = o.busy_timeout(options.timeout);
                Self::Sqlite {
                    options: o,
                    in_memory,
                }
            }
            #[allow(unreachable_patterns)]
            _ => return Err(options.bad_url("a database whose driver is compiled in")),
        };
        Ok((backend, connect))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloakroom_core::config::from_pairs;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgres://u:p%40ss@h:5432/db?sslmode=require&password=x"),
            "postgres://u:****@h:5432/db?sslmode=require&password=****"
        );
        assert_eq!(redact_url("mysql://u@h/db"), "mysql://****@h/db");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
        let o = SqlOptions::new("mysql://u:hunter2@h/db");
        assert!(!format!("{o:?}").contains("hunter2"));
        // A password with the characters that used to end the user-info.
        for url in [
            "postgres://app:pa/ss@db/app",
            "mysql://u:pa?w#d@h/db",
            "mysql://u:pa@ss@h/db",
        ] {
            let o = SqlOptions::new(url);
            let shown = format!("{o:?} {}", o.bad_url("x"));
            assert!(
                !shown.contains("pa/") && !shown.contains("pa?") && !shown.contains("pa@"),
                "{shown}"
            );
            assert!(!shown.contains("ss@") && !shown.contains("#d"), "{shown}");
        }
    }

    #[test]
    fn settings_are_read_and_checked() {
        let s = from_pairs([
            (TABLE, "web_sessions"),
            (POOL_SIZE, "3"),
            (TIMEOUT_MS, "250"),
            (MIGRATE, "yes"),
            (CLEANUP_SECONDS, "60"),
        ]);
        let o = SqlOptions::from_settings("sqlite::memory:", &s).unwrap();
        assert_eq!(o.table, "web_sessions");
        assert_eq!(o.pool_size, Some(3));
        assert_eq!(
            SqlOptions::from_settings("sqlite::memory:", &from_pairs([]))
                .unwrap()
                .pool_size,
            None
        );
        assert_eq!(o.timeout, Duration::from_millis(250));
        assert!(o.migrate_on_first_use);
        assert_eq!(o.cleanup_every, Some(Duration::from_secs(60)));

        let defaults = SqlOptions::from_settings("sqlite::memory:", &from_pairs([])).unwrap();
        assert_eq!(defaults.table, DEFAULT_TABLE);
        assert!(!defaults.migrate_on_first_use);
        assert_eq!(defaults.cleanup_every, None);

        for (name, value) in [
            (POOL_SIZE, "0"),
            (POOL_SIZE, "many"),
            (TIMEOUT_MS, "0"),
            (MIGRATE, "sometimes"),
            (CLEANUP_SECONDS, "-1"),
        ] {
            let err = SqlOptions::from_settings("sqlite::memory:", &from_pairs([(name, value)]))
                .unwrap_err();
            assert_eq!(err.variable(), name);
        }
        for bad in ["", "Sessions", "s;drop", "1abc", &"x".repeat(49)] {
            let err = SqlOptions::new("sqlite::memory:")
                .with_table(bad)
                .build()
                .unwrap_err();
            assert_eq!(err.variable(), TABLE, "{bad}");
        }
    }

    #[test]
    fn urls_pick_the_backend() {
        assert_eq!(Backend::from_url("mariadb://h/db"), Some(Backend::MySql));
        assert_eq!(Backend::from_url("MYSQL://h/db"), Some(Backend::MySql));
        assert_eq!(
            Backend::from_url("postgresql://h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::from_url("sqlite::memory:"), Some(Backend::Sqlite));
        assert_eq!(Backend::from_url("redis://h"), None);
        // What the store says it runs on (the dashboard shows it).
        let backend = |url| {
            let store = crate::SqlStore::new(url).expect("a valid URL");
            cloakroom_core::SessionStore::backend(&store)
        };
        assert_eq!(backend("MariaDB://u:pw@h/db"), Some("MariaDB"));
        assert_eq!(backend("mysql://h/db"), Some("MySQL or MariaDB"));
        assert_eq!(backend("postgres://h/db"), Some("PostgreSQL"));
        assert_eq!(backend("sqlite::memory:"), Some("SQLite"));
        let err = SqlOptions::new("redis://u:pw@h/0").build().unwrap_err();
        assert_eq!(err.variable(), URL);
        assert!(!err.to_string().contains("pw@"));
        let fallback = SqlOptions::from_settings("oops", &from_pairs([(FALLBACK_URL, "oops")]))
            .unwrap()
            .build()
            .unwrap_err();
        assert_eq!(fallback.variable(), FALLBACK_URL);
    }
}
