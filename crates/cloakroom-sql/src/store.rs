//! [`SqlStore`]: the [`SessionStore`] on a SQL table, plus `migrate` and
//! `clear_expired`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cloakroom_core::record::{from_millis, millis};
use cloakroom_core::{Call, ConfigError, Record, SessionStore, Settings, StoreKey};
use time::OffsetDateTime;

use crate::cleanup::{self, CleanupGuard};
use crate::options::{Connect, SqlOptions, redact_url};
use crate::pool::{self, Pool};
use crate::sql::{CLEAR_BATCH, Statements};
use crate::{Backend, SqlError};

/// Bound on each statement of `migrate` and `clear_expired`: they may
/// rewrite or scan a large table, so the request bound does not fit them,
/// but a hung server must not hang the command line for ever either.
const MAINTENANCE_TIMEOUT: Duration = Duration::from_secs(300);

/// Session storage in a SQL table: MySQL 8 / MariaDB, PostgreSQL or SQLite,
/// through sqlx connections in a deadpool pool.
///
/// Cheap to clone: clones share the pool. Build it with
/// [`SqlStore::from_settings`] (what `SessionLayer::from_env()` calls),
/// [`SqlStore::from_env`] or [`SqlOptions`]; none of them connect, the pool
/// connects on first use. Create the table with [`migrate`](Self::migrate)
/// (or the `cloakroom-admin migrate` command) before serving requests.
///
/// ```no_run
/// use cloakroom_sql::SqlStore;
///
/// # async fn run() -> Result<(), cloakroom_sql::SqlError> {
/// let store = SqlStore::new("mysql://dash:secret@127.0.0.1:3306/dash").expect("valid URL");
/// store.migrate().await?;
/// let removed = store.clear_expired().await?;
/// println!("{removed} expired sessions deleted");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqlStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    backend: Backend,
    connect: Connect,
    /// Built on first use: the pool spawns its maintenance on the Tokio
    /// runtime, and the constructors are sync and may run before one exists.
    pool: OnceLock<Pools>,
    table: String,
    sql: Statements,
    pool_size: u32,
    timeout: Duration,
    migrate_on_first_use: bool,
    migrated: tokio::sync::OnceCell<()>,
    cleanup_every: Option<Duration>,
    /// The cleanup task started by `cleanup_every`; dropped (and so stopped)
    /// with the last clone of the store.
    auto_cleanup: OnceLock<CleanupGuard>,
    redacted_url: String,
    /// MySQL: the server's `max_allowed_packet`, read by each new connection
    /// (0 until one has connected).
    max_packet: Arc<AtomicU64>,
}

/// One pool per driver; the store code is the same text for each (see
/// [`each_pool!`]), so the enum costs a branch, not a dynamic driver.
enum Pools {
    #[cfg(feature = "mysql")]
    MySql(Pool<sqlx::MySqlConnection>),
    #[cfg(feature = "postgres")]
    Postgres(Pool<sqlx::PgConnection>),
    #[cfg(feature = "sqlite")]
    Sqlite(Pool<sqlx::SqliteConnection>),
}

/// Runs `$body` with `$pool` bound to the typed pool of whichever driver
/// the store uses.
macro_rules! each_pool {
    ($pools:expr, $pool:ident => $body:expr) => {
        match $pools {
            #[cfg(feature = "mysql")]
            Pools::MySql($pool) => $body,
            #[cfg(feature = "postgres")]
            Pools::Postgres($pool) => $body,
            #[cfg(feature = "sqlite")]
            Pools::Sqlite($pool) => $body,
        }
    };
}

/// Checks out a connection and runs `$body` with `$conn: &mut Connection`,
/// all within `$limit` from the start of the checkout. A statement cut
/// off by the limit (or by the caller dropping the call) leaves its
/// connection mid-protocol, so that connection is closed instead of going
/// back to the pool, where a later request would inherit it; so is one whose
/// statement failed for any reason but the server's own answer.
///
/// A body that fails because the database chose it as a deadlock victim is
/// run again (a few times, within the same limit): each statement runs on
/// its own (autocommit), so the victim was rolled back whole and running it
/// again is exactly what the database asks for. InnoDB does pick victims
/// among single-row statements: seen in the tests, an `UPDATE` that reached
/// the row through the expiry index racing a `DELETE` that came through the
/// primary key, each holding one of the two locks the other needed.
macro_rules! bounded {
    ($pool:expr, $limit:expr, |$conn:ident| $body:expr) => {{
        let limit: Duration = $limit;
        let deadline = tokio::time::Instant::now() + limit;
        let mut lease = pool::checkout($pool, deadline, limit).await?;
        let outcome = tokio::time::timeout_at(deadline, async {
            let mut attempt = 0u32;
            loop {
                let $conn = lease.conn();
                let result = async { $body }.await;
                lease.keep_after(&result);
                match result {
                    Err(SqlError::Database(e)) if is_deadlock(&e) && attempt < DEADLOCK_RETRIES => {
                        attempt += 1;
                        tracing::debug!(
                            engine = "db",
                            attempt,
                            "deadlock victim; running the statement again"
                        );
                        tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 2)).await;
                    }
                    other => break other,
                }
            }
        })
        .await;
        match outcome {
            Ok(result) => result,
            // The lease, dropped here unfinished, closes the connection.
            Err(_) => Err(SqlError::StatementTimeout(limit)),
        }
    }};
}

fn db(e: sqlx::Error) -> SqlError {
    SqlError::Database(e)
}

fn is_duplicate(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// How often a deadlock victim is run again before the error is returned.
const DEADLOCK_RETRIES: u32 = 3;

/// SQLSTATE 40001 (MySQL's deadlock error 1213; PostgreSQL's serialization
/// failure) and 40P01 (PostgreSQL's deadlock): the statement was rolled back
/// and may simply run again.
fn is_deadlock(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d)
        if matches!(d.code().as_deref(), Some("40001" | "40P01")))
}

fn now_ms() -> i64 {
    millis(OffsetDateTime::now_utc())
}

impl SqlStore {
    /// The constructor `SessionLayer::from_env()` calls for
    /// `SESSION_ENGINE=db`: the store for `url`, tuned by the
    /// `SESSION_DATABASE_*` settings (see the crate README). Does not
    /// connect.
    ///
    /// ```
    /// use cloakroom_core::config::from_pairs;
    /// use cloakroom_sql::SqlStore;
    ///
    /// let settings = from_pairs([("SESSION_DATABASE_POOL_SIZE", "4")]);
    /// let store = SqlStore::from_settings("sqlite::memory:", &settings).expect("valid");
    /// assert_eq!(store.table(), "cloakroom_session");
    /// ```
    ///
    /// # Errors
    /// A [`ConfigError`] naming the bad setting (a URL that does not parse,
    /// a driver that is not compiled in, a bad number or table name).
    pub fn from_settings(url: &str, settings: &dyn Settings) -> Result<Self, ConfigError> {
        SqlOptions::from_settings(url, settings)?.build()
    }

    /// The store configured by the process environment, as the
    /// `cloakroom-admin` command reads it: `SESSION_DATABASE_URL` (or
    /// `DATABASE_URL`) and the `SESSION_DATABASE_*` settings.
    ///
    /// # Errors
    /// A [`ConfigError`] when no URL is set or a setting is bad.
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = cloakroom_core::Env;
        let url = database_url(&env).ok_or_else(|| {
            ConfigError::new(
                crate::settings::URL,
                "",
                "a database URL such as mysql://user:password@127.0.0.1:3306/db \
                 (DATABASE_URL is read when it is unset)",
            )
        })?;
        Self::from_settings(&url, &env)
    }

    /// The store for `url` with every default.
    ///
    /// # Errors
    /// A [`ConfigError`] for a URL that does not parse or whose driver is not
    /// compiled in.
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        SqlOptions::new(url).build()
    }

    /// Options for `url`, to change before [`SqlOptions::build`].
    pub fn builder(url: impl Into<String>) -> SqlOptions {
        SqlOptions::new(url)
    }

    pub(crate) fn from_options(options: SqlOptions) -> Result<Self, ConfigError> {
        options.check_table()?;
        let (backend, connect) = Connect::parse(&options)?;
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                connect,
                pool: OnceLock::new(),
                sql: Statements::new(backend, &options.table),
                table: options.table,
                pool_size: options.pool_size.unwrap_or(match backend {
                    Backend::Sqlite => crate::options::DEFAULT_SQLITE_POOL_SIZE,
                    Backend::MySql | Backend::Postgres => crate::options::DEFAULT_POOL_SIZE,
                }),
                timeout: options.timeout,
                migrate_on_first_use: options.migrate_on_first_use,
                migrated: tokio::sync::OnceCell::new(),
                cleanup_every: options.cleanup_every,
                auto_cleanup: OnceLock::new(),
                redacted_url: redact_url(&options.url),
                max_packet: Arc::new(AtomicU64::new(0)),
            }),
        })
    }

    /// The database kind the URL selected.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The session table's name.
    pub fn table(&self) -> &str {
        &self.inner.table
    }

    /// The database URL with its password masked, for logs and messages.
    pub fn redacted_url(&self) -> &str {
        &self.inner.redacted_url
    }

    /// The bound on each store call.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    fn pools(&self) -> &Pools {
        self.inner.pool.get_or_init(|| {
            let size = self.inner.pool_size;
            let timeout = self.inner.timeout;
            let max_packet = || Arc::clone(&self.inner.max_packet);
            match &self.inner.connect {
                #[cfg(feature = "mysql")]
                Connect::MySql(o) => {
                    Pools::MySql(pool::new(o.clone(), size, false, max_packet(), timeout))
                }
                #[cfg(feature = "postgres")]
                Connect::Postgres(o) => {
                    Pools::Postgres(pool::new(o.clone(), size, false, max_packet(), timeout))
                }
                #[cfg(feature = "sqlite")]
                Connect::Sqlite { options, in_memory } => {
                    // An in-memory database vanishes with its last
                    // connection: exactly one, kept open.
                    let size = if *in_memory { 1 } else { size };
                    Pools::Sqlite(pool::new(
                        options.clone(),
                        size,
                        *in_memory,
                        max_packet(),
                        timeout,
                    ))
                }
            }
        })
    }

    /// The pool, after the first-use work the options asked for
    /// (`migrate_on_first_use`, `cleanup_every`).
    async fn ready(&self) -> Result<&Pools, SqlError> {
        if self.inner.migrate_on_first_use {
            // Concurrent first requests wait for one migration; a failed one
            // leaves the cell empty so the next call tries again. Boxed: its
            // future is many kilobytes that every store call's would
            // otherwise carry and copy.
            self.inner
                .migrated
                .get_or_try_init(|| Box::pin(self.migrate()))
                .await?;
        }
        if let Some(every) = self.inner.cleanup_every {
            self.inner
                .auto_cleanup
                .get_or_init(|| cleanup::spawn(Arc::downgrade(&self.inner), every, None));
        }
        Ok(self.pools())
    }

    /// Creates the session table and its index, or upgrades an older one
    /// (the `cloakroom-admin migrate` command). Idempotent: run it at every
    /// deploy. Concurrent runs are serialized by a lock.
    ///
    /// # Errors
    /// When the database cannot be reached, the user lacks the `CREATE` /
    /// `ALTER` / `INDEX` privileges, or a table of that name exists with
    /// other columns.
    pub async fn migrate(&self) -> Result<(), SqlError> {
        let table = self.inner.table.as_str();
        match self.pools() {
            #[cfg(feature = "mysql")]
            Pools::MySql(pool) => {
                let deadline = tokio::time::Instant::now() + MAINTENANCE_TIMEOUT;
                // MySQL's named lock belongs to the connection. The lease is
                // never kept, so the connection closes when it is dropped,
                // which frees the lock even should this future be dropped
                // between GET_LOCK and RELEASE_LOCK (a request timing out
                // during a first-use migration); back in the pool it would
                // hold it for other processes' migrations.
                let mut lease = pool::checkout(pool, deadline, MAINTENANCE_TIMEOUT).await?;
                tokio::time::timeout_at(deadline, crate::schema::migrate_mysql(lease.conn(), table))
                    .await
                    .map_err(|_| SqlError::StatementTimeout(MAINTENANCE_TIMEOUT))?
            }
            #[cfg(feature = "postgres")]
            Pools::Postgres(pool) => bounded!(pool, MAINTENANCE_TIMEOUT, |conn| {
                crate::schema::migrate_postgres(conn, table).await
            }),
            #[cfg(feature = "sqlite")]
            Pools::Sqlite(pool) => bounded!(pool, MAINTENANCE_TIMEOUT, |conn| {
                crate::schema::migrate_sqlite(conn, table).await
            }),
        }
    }

    /// Deletes every row whose deadline has passed and returns how many (the
    /// `cloakroom-admin clearsessions` command). Works in batches, so a
    /// large backlog does not hold one long lock.
    ///
    /// # Errors
    /// When the database cannot be reached or refuses the statement.
    pub async fn clear_expired(&self) -> Result<u64, SqlError> {
        self.clear_expired_before(OffsetDateTime::now_utc()).await
    }

    /// Deletes every row whose deadline is at or before `cutoff`, and
    /// returns how many.
    ///
    /// # Errors
    /// As [`clear_expired`](Self::clear_expired).
    pub async fn clear_expired_before(&self, cutoff: OffsetDateTime) -> Result<u64, SqlError> {
        let cutoff = millis(cutoff);
        let sql = &self.inner.sql.clear_batch;
        let mut total = 0;
        loop {
            let n = each_pool!(self.pools(), pool => bounded!(pool, MAINTENANCE_TIMEOUT, |conn| {
                sqlx::query(sql.clone())
                    .bind(cutoff)
                    .execute(&mut *conn)
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(db)
            }))?;
            total += n;
            if n < CLEAR_BATCH {
                return Ok(total);
            }
        }
    }

    /// Runs [`clear_expired`](Self::clear_expired) now and then every
    /// `every` on the Tokio runtime, until the returned guard is dropped. A
    /// failed run (database down) is logged and the next one goes ahead as
    /// planned.
    ///
    /// ```no_run
    /// # async fn run(store: cloakroom_sql::SqlStore) {
    /// use std::time::Duration;
    /// let _cleanup = store.spawn_cleanup(Duration::from_secs(3600));
    /// // ... serve; dropping `_cleanup` stops the task.
    /// # }
    /// ```
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn spawn_cleanup(&self, every: Duration) -> CleanupGuard {
        cleanup::spawn(Arc::downgrade(&self.inner), every, Some(self.clone()))
    }

    /// Closes the pool's connections. Later calls fail with a
    /// [`Backend`](cloakroom_core::ErrorKind::Backend) error.
    pub async fn close(&self) {
        if let Some(pools) = self.inner.pool.get() {
            each_pool!(pools, pool => pool.close());
        }
    }

    async fn load_row(&self, key: &StoreKey) -> Result<Option<(Vec<u8>, i64)>, SqlError> {
        let sql = &self.inner.sql.load;
        let now = now_ms();
        each_pool!(self.ready().await?, pool => bounded!(pool, self.inner.timeout, |conn| {
            sqlx::query_as::<_, (Vec<u8>, i64)>(sql.clone())
                .bind(key.hex().as_str())
                .bind(now)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db)
        }))
    }

    /// MySQL: refuses a record that the server would refuse. Above
    /// `max_allowed_packet` the server answers by closing the connection,
    /// which would look like an outage (503) rather than a too-large
    /// session; and a `MEDIUMBLOB` holds 16 MiB.
    fn check_size(&self, size: usize) -> Result<(), SqlError> {
        if self.inner.backend != Backend::MySql {
            return Ok(());
        }
        // The statement around the data: the other parameters and headers.
        const OVERHEAD: u64 = 1024;
        const MEDIUMBLOB: u64 = (1 << 24) - 1;
        let limit = match self.inner.max_packet.load(Ordering::Relaxed) {
            0 => MEDIUMBLOB,
            packet => MEDIUMBLOB.min(packet.saturating_sub(OVERHEAD)),
        };
        if size as u64 > limit {
            return Err(SqlError::RecordTooLarge { size, limit });
        }
        Ok(())
    }

    async fn create_row(
        &self,
        key: &StoreKey,
        data: Vec<u8>,
        deadline: i64,
    ) -> Result<bool, SqlError> {
        let sql = &self.inner.sql;
        let mysql = self.inner.backend == Backend::MySql;
        let now = now_ms();
        let pools = self.ready().await?;
        self.check_size(data.len())?;
        each_pool!(pools, pool => bounded!(pool, self.inner.timeout, |conn| {
            if !mysql {
                // One statement: insert, or take over a row past its
                // deadline; a live holder makes it change nothing.
                let r = sqlx::query(sql.create.clone())
                    .bind(key.hex().as_str())
                    .bind(&data)
                    .bind(deadline)
                    .bind(now)
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?;
                return Ok(r.rows_affected() == 1);
            }
            // MySQL: the primary key makes the insert atomic. Only when it
            // collides do we look further: a holder past its deadline is
            // deleted (by a statement that cannot touch a live row) and the
            // insert tried once more. If another request wins the key in
            // between, its row is live and the second insert collides too,
            // which is the right answer.
            let insert = || {
                sqlx::query(sql.create.clone())
                    .bind(key.hex().as_str())
                    .bind(&data)
                    .bind(deadline)
            };
            match insert().execute(&mut *conn).await {
                Ok(_) => return Ok(true),
                Err(e) if is_duplicate(&e) => {}
                Err(e) => return Err(SqlError::from_sqlx(e, self.inner.timeout)),
            }
            let cleared = sqlx::query(sql.delete_expired_key.clone())
                .bind(key.hex().as_str())
                .bind(now)
                .execute(&mut *conn)
                .await
                .map_err(db)?
                .rows_affected();
            if cleared == 0 {
                return Ok(false);
            }
            match insert().execute(&mut *conn).await {
                Ok(_) => Ok(true),
                Err(e) if is_duplicate(&e) => Ok(false),
                Err(e) => Err(SqlError::from_sqlx(e, self.inner.timeout)),
            }
        }))
    }

    async fn update_row(
        &self,
        key: &StoreKey,
        data: Vec<u8>,
        deadline: i64,
    ) -> Result<bool, SqlError> {
        let sql = &self.inner.sql.update;
        let now = now_ms();
        let pools = self.ready().await?;
        self.check_size(data.len())?;
        each_pool!(pools, pool => bounded!(pool, self.inner.timeout, |conn| {
            // Never an upsert: a row deleted meanwhile (logout in another
            // request) or past its deadline matches nothing and stays gone.
            sqlx::query(sql.clone())
                .bind(&data)
                .bind(deadline)
                .bind(key.hex().as_str())
                .bind(now)
                .execute(&mut *conn)
                .await
                .map(|r| r.rows_affected() > 0)
                .map_err(|e| SqlError::from_sqlx(e, self.inner.timeout))
        }))
    }

    async fn touch_row(&self, key: &StoreKey, deadline: i64) -> Result<bool, SqlError> {
        let sql = &self.inner.sql.touch;
        let now = now_ms();
        each_pool!(self.ready().await?, pool => bounded!(pool, self.inner.timeout, |conn| {
            // The driver reports matched rows (MySQL's FOUND_ROWS), so a
            // touch to the same millisecond still counts as found.
            sqlx::query(sql.clone())
                .bind(deadline)
                .bind(key.hex().as_str())
                .bind(now)
                .execute(&mut *conn)
                .await
                .map(|r| r.rows_affected() > 0)
                .map_err(db)
        }))
    }

    async fn delete_row(&self, key: &StoreKey) -> Result<(), SqlError> {
        let sql = &self.inner.sql.delete;
        each_pool!(self.ready().await?, pool => bounded!(pool, self.inner.timeout, |conn| {
            sqlx::query(sql.clone())
                .bind(key.hex().as_str())
                .execute(&mut *conn)
                .await
                .map(drop)
                .map_err(db)
        }))
    }
}

/// The database URL from settings: `SESSION_DATABASE_URL`, else
/// `DATABASE_URL`, as `from_env()` and `cloakroom-admin` read it.
pub fn database_url(settings: &dyn Settings) -> Option<String> {
    settings
        .get(crate::settings::URL)
        .or_else(|| settings.get(crate::settings::FALLBACK_URL))
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.inner.backend)
            .field("url", &self.inner.redacted_url)
            .field("table", &self.inner.table)
            .field("pool_size", &self.inner.pool_size)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl SessionStore for SqlStore {
    fn engine(&self) -> &'static str {
        "db"
    }

    /// `mysql://` may be MySQL or MariaDB (one driver serves both); a
    /// `mariadb://` URL says which.
    fn backend(&self) -> Option<&'static str> {
        let scheme = self.inner.redacted_url.split_once(':').map(|(s, _)| s);
        Some(match self.inner.backend {
            Backend::MySql if scheme.is_some_and(|s| s.eq_ignore_ascii_case("mariadb")) => {
                "MariaDB"
            }
            Backend::MySql => "MySQL or MariaDB",
            Backend::Postgres => "PostgreSQL",
            Backend::Sqlite => "SQLite",
        })
    }

    fn load<'a>(&'a self, key: &'a StoreKey) -> Call<'a, Option<Record>> {
        Call::pending(async move {
            let Some((bytes, deadline)) = self.load_row(key).await? else {
                return Ok(None);
            };
            // As Django does with a row it cannot decode: treat the session as
            // absent (the user gets a fresh one) rather than fail every request
            // that carries this cookie.
            let record = Record::from_shared(bytes.into())
                .ok()
                .zip(from_millis(deadline).ok());
            match record {
                Some((mut record, expires_at)) => {
                    // The column, not the blob, holds the deadline: `touch`
                    // moves only the column.
                    record.expires_at = expires_at;
                    Ok(Some(record))
                }
                None => {
                    tracing::warn!(
                        engine = "db",
                        ?key,
                        "session row is not readable; ignoring it"
                    );
                    Ok(None)
                }
            }
        })
    }

    fn create<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        Call::pending(async move {
            let bytes = record.to_bytes()?;
            Ok(self
                .create_row(key, bytes, record.expires_at_millis())
                .await?)
        })
    }

    fn update<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        Call::pending(async move {
            let bytes = record.to_bytes()?;
            Ok(self
                .update_row(key, bytes, record.expires_at_millis())
                .await?)
        })
    }

    /// Moves the deadline column only; the data in `record` is not looked at.
    fn touch<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        Call::pending(async move { Ok(self.touch_row(key, record.expires_at_millis()).await?) })
    }

    fn delete<'a>(&'a self, key: &'a StoreKey) -> Call<'a, ()> {
        Call::pending(async move { Ok(self.delete_row(key).await?) })
    }
}
