//! The connection pool: deadpool over plain sqlx connections.
//!
//! sqlx's own pool pings every connection as it comes back and spawns a task
//! to do it, so each statement costs the database a second round trip and
//! the process a task; measured on MariaDB, that took about a third of the
//! engine's throughput. Here a connection goes back to the pool as it is,
//! when its statement completed: [`Lease`] drops one whose statement was cut
//! off (a timeout, a cancelled request) or whose connection failed, and a
//! connection that sat idle is pinged before it is handed out again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool::Runtime;
use deadpool::managed::{self, Metrics, Object, PoolError, RecycleError, RecycleResult};
use sqlx::{ConnectOptions, Connection};
use tokio::time::Instant;

use crate::SqlError;

/// A connection that has sat idle this long is pinged before it is handed
/// out; one used more recently is trusted, and should it have died anyway
/// (the server went away in between), its statement fails, the request gets
/// a 503 and the connection is dropped. One round trip on quiet pools
/// instead of one per statement.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Idle connections are closed after this, so a burst does not hold server
/// connections for ever.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Connections are replaced after this, so server-side session state and
/// memory do not grow without end.
const MAX_LIFETIME: Duration = Duration::from_secs(1800);

/// How often idle and old connections are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// What a driver does right after connecting.
pub(crate) trait Driver: Connection {
    /// Runs on every new connection.
    fn after_connect(
        &mut self,
        _max_packet: &AtomicU64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        async { Ok(()) }
    }
}

#[cfg(feature = "mysql")]
impl Driver for sqlx::MySqlConnection {
    /// Reads the server's `max_allowed_packet`, so that a record above it is
    /// refused before it is sent (the server would drop the connection).
    async fn after_connect(&mut self, max_packet: &AtomicU64) -> Result<(), sqlx::Error> {
        let max: i64 = sqlx::query_scalar("SELECT CAST(@@max_allowed_packet AS SIGNED)")
            .fetch_one(&mut *self)
            .await?;
        max_packet.store(max.unsigned_abs(), Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(feature = "postgres")]
impl Driver for sqlx::PgConnection {}

#[cfg(feature = "sqlite")]
impl Driver for sqlx::SqliteConnection {}

/// Opens connections and decides whether a pooled one may be handed out.
pub(crate) struct Manager<C: Connection> {
    options: C::Options,
    /// An in-memory SQLite database lives only as long as its connection:
    /// never closed for age or idleness.
    keep_forever: bool,
    max_packet: Arc<AtomicU64>,
}

impl<C: Driver> managed::Manager for Manager<C> {
    type Type = C;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<C, sqlx::Error> {
        let mut conn = self.options.connect().await?;
        conn.after_connect(&self.max_packet).await?;
        Ok(conn)
    }

    async fn recycle(&self, conn: &mut C, metrics: &Metrics) -> RecycleResult<sqlx::Error> {
        if !self.keep_forever && metrics.age() >= MAX_LIFETIME {
            return Err(RecycleError::message("past its lifetime"));
        }
        if metrics.last_used() >= PING_IF_IDLE_FOR {
            conn.ping().await?;
        }
        Ok(())
    }
}

/// The pool of one driver's connections.
pub(crate) type Pool<C> = managed::Pool<Manager<C>>;

/// A pool of at most `size` connections made from `options`; none is opened
/// until the first checkout. Waiting for a free connection, opening one and
/// pinging an idle one are each bounded by `timeout` (the store's request
/// bound), also for maintenance calls whose statements may run far longer.
/// Inside a Tokio runtime, a task that holds only a weak reference closes
/// idle and old connections now and then.
pub(crate) fn new<C: Driver + 'static>(
    options: C::Options,
    size: u32,
    keep_forever: bool,
    max_packet: Arc<AtomicU64>,
    timeout: Duration,
) -> Pool<C> {
    let manager = Manager {
        options,
        keep_forever,
        max_packet,
    };
    let size = usize::try_from(size).unwrap_or(usize::MAX).max(1);
    let built = Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build();
    let pool = match built {
        Ok(pool) => pool,
        // `build` fails only when a timeout is set without a runtime, and the
        // runtime is set above.
        Err(e) => unreachable!("deadpool refused a pool with a runtime: {e}"),
    };
    if !keep_forever && let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let weak = pool.weak();
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let Some(pool) = weak.upgrade() else { return };
                pool.retain(|_, m| m.last_used() < IDLE_TIMEOUT && m.age() < MAX_LIFETIME);
            }
        });
    }
    pool
}

/// A checked-out connection. It goes back to the pool only once
/// [`Lease::keep`] said its last statement completed and left it usable;
/// dropped otherwise (cut off by a timeout, a cancelled request, a broken
/// connection, or the end of `migrate`), it is closed, since a later request
/// would inherit whatever it was in the middle of.
pub(crate) struct Lease<C: Driver> {
    conn: Option<Object<Manager<C>>>,
    reusable: bool,
}

impl<C: Driver> Lease<C> {
    /// The connection.
    pub(crate) fn conn(&mut self) -> &mut C {
        self.reusable = false;
        match &mut self.conn {
            Some(conn) => conn,
            None => unreachable!("a lease holds its connection until dropped"),
        }
    }

    /// Lets the connection go back to the pool when `result` shows it is in
    /// a clean state: the statement succeeded, or the server answered it
    /// with an error (the protocol completed).
    pub(crate) fn keep_after<T>(&mut self, result: &Result<T, SqlError>) {
        self.reusable = match result {
            Ok(_) => true,
            Err(e) => e.leaves_connection_usable(),
        };
    }
}

impl<C: Driver> Drop for Lease<C> {
    fn drop(&mut self) {
        if !self.reusable
            && let Some(conn) = self.conn.take()
        {
            // Detached from the pool and dropped, which closes its socket;
            // the pool opens a new one when it needs it.
            drop(Object::take(conn));
        }
    }
}

/// Checks a connection out of `pool` by `deadline` (the bound of the whole
/// store call) and within the pool's own timeouts. Boxed: the checkout's future holds a whole connection
/// attempt, and kept inline it would make every store call's future
/// kilobytes bigger, each of them copied when the call starts.
pub(crate) async fn checkout<C: Driver>(
    pool: &Pool<C>,
    deadline: Instant,
    limit: Duration,
) -> Result<Lease<C>, SqlError> {
    match tokio::time::timeout_at(deadline, Box::pin(pool.get())).await {
        Ok(Ok(conn)) => Ok(Lease {
            conn: Some(conn),
            reusable: true,
        }),
        Ok(Err(PoolError::Backend(e))) => Err(SqlError::from_sqlx(e, limit)),
        Ok(Err(PoolError::Closed)) => Err(SqlError::Database(sqlx::Error::PoolClosed)),
        Ok(Err(PoolError::Timeout(_))) => Err(SqlError::PoolTimeout(
            pool.timeouts().wait.unwrap_or(limit).min(limit),
        )),
        Err(_) => Err(SqlError::PoolTimeout(limit)),
        Ok(Err(other)) => Err(SqlError::Database(sqlx::Error::Configuration(
            other.to_string().into(),
        ))),
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;

    /// A pool of in-memory SQLite connections, enough to watch connections
    /// come and go. sqlx opens `:memory:` as one shared-cache database that
    /// lives until its last connection has closed (on sqlx's worker thread,
    /// later than the drop), so the tests mark a connection with a TEMP
    /// table: those belong to the one connection that made them.
    fn sqlite_pool(size: u32) -> Pool<sqlx::SqliteConnection> {
        let options: sqlx::sqlite::SqliteConnectOptions = "sqlite::memory:".parse().expect("url");
        new(options, size, false, Arc::default(), Duration::from_secs(5))
    }

    async fn lease(pool: &Pool<sqlx::SqliteConnection>) -> Lease<sqlx::SqliteConnection> {
        let limit = Duration::from_secs(5);
        checkout(pool, Instant::now() + limit, limit)
            .await
            .expect("checkout")
    }

    async fn run(
        lease: &mut Lease<sqlx::SqliteConnection>,
        sql: &'static str,
    ) -> Result<(), SqlError> {
        sqlx::query(sql)
            .execute(lease.conn())
            .await
            .map(drop)
            .map_err(SqlError::Database)
    }

    #[tokio::test]
    async fn completed_statements_return_their_connection_and_others_close_it() {
        let pool = sqlite_pool(2);
        let mut first = lease(&pool).await;
        let ok = run(&mut first, "CREATE TEMP TABLE t (x INTEGER)").await;
        first.keep_after(&ok);
        drop(first);
        assert_eq!((pool.status().size, pool.status().available), (1, 1));

        // The same connection comes back: the table made on it is there.
        let mut again = lease(&pool).await;
        let refused = run(&mut again, "INSERT INTO t VALUES ('x', 'too many')").await;
        assert!(matches!(
            refused,
            Err(SqlError::Database(sqlx::Error::Database(_)))
        ));
        // The server answered: the connection is still good.
        again.keep_after(&refused);
        let found = run(&mut again, "INSERT INTO t VALUES (1)").await;
        again.keep_after(&found);
        assert!(found.is_ok(), "{found:?}");
        drop(again);
        assert_eq!(pool.status().size, 1);

        // Used and dropped without a verdict (a cancelled call): closed.
        let mut cut = lease(&pool).await;
        let _ = cut.conn();
        drop(cut);
        assert_eq!(pool.status().size, 0);

        // A timeout closes it too, and the next checkout opens a fresh one.
        let mut late = lease(&pool).await;
        let _ = late.conn();
        late.keep_after(&Err::<(), _>(SqlError::StatementTimeout(Duration::ZERO)));
        drop(late);
        assert_eq!(pool.status().size, 0);
        let mut fresh = lease(&pool).await;
        let gone = run(&mut fresh, "INSERT INTO t VALUES (1)").await;
        assert!(gone.is_err(), "a new connection has no TEMP table t");
    }

    #[tokio::test]
    async fn a_cancelled_call_does_not_return_its_connection() {
        let pool = sqlite_pool(1);
        let call = {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut lease = lease(&pool).await;
                let _ = lease.conn();
                std::future::pending::<()>().await;
            })
        };
        while pool.status().size == 0 {
            tokio::task::yield_now().await;
        }
        call.abort();
        let _ = call.await;
        assert_eq!(pool.status().size, 0);
    }

    #[tokio::test]
    async fn a_closed_pool_refuses_checkouts() {
        let pool = sqlite_pool(1);
        pool.close();
        let limit = Duration::from_secs(1);
        let err = checkout(&pool, Instant::now() + limit, limit)
            .await
            .err()
            .expect("closed");
        assert!(
            matches!(err, SqlError::Database(sqlx::Error::PoolClosed)),
            "{err:?}"
        );
    }
}
