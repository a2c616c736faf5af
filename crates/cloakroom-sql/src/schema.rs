//! `migrate`: creates the session table, or brings an older one up to date.
//!
//! There is no migration history table: every step checks the schema it
//! would change and does nothing when it is already right, so running
//! `migrate` again (or from two processes at once, which a lock serializes)
//! is harmless, and a table made by hand or by an older version is upgraded
//! in place. The steps, per dialect:
//!
//! 1. create the table if it is missing;
//! 2. check that it has the three columns the store uses;
//! 3. MySQL only: widen a data column that cannot hold 1 MiB (`BLOB` keeps
//!    64 KiB) to `MEDIUMBLOB` (16 MiB);
//! 4. create the index on the deadline column if no index starts with it.

#[cfg(any(feature = "mysql", feature = "postgres", feature = "sqlite"))]
use crate::SqlError;

/// The columns the store reads and writes; a table without them is refused.
#[cfg(any(feature = "mysql", feature = "postgres", feature = "sqlite"))]
const COLUMNS: [&str; 3] = ["session_key", "session_data", "expires_at_ms"];

/// Statement text with the table name pasted in. The name is checked to be
/// `[a-z_][a-z0-9_]*` when the store is built (`SqlOptions::check_table`),
/// so it cannot carry SQL of its own.
#[cfg(any(feature = "mysql", feature = "postgres", feature = "sqlite"))]
fn ddl(text: String) -> sqlx::SqlStr {
    use sqlx::SqlSafeStr as _;
    sqlx::AssertSqlSafe(text).into_sql_str()
}

/// Name of the lock that serializes concurrent migrations of one table.
#[cfg(any(feature = "mysql", feature = "postgres"))]
fn lock_name(table: &str) -> String {
    format!("cloakroom:{table}")
}

#[cfg(any(feature = "mysql", feature = "postgres", feature = "sqlite"))]
fn check_columns(table: &str, found: &[String]) -> Result<(), SqlError> {
    let missing: Vec<&str> = COLUMNS
        .iter()
        .copied()
        .filter(|c| !found.iter().any(|f| f.eq_ignore_ascii_case(c)))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SqlError::Schema(format!(
            "table `{table}` exists but lacks column(s) {}; \
             pick another SESSION_DATABASE_TABLE or drop it",
            missing.join(", ")
        )))
    }
}

/// MySQL and MariaDB.
#[cfg(feature = "mysql")]
pub(crate) async fn migrate_mysql(
    conn: &mut sqlx::MySqlConnection,
    table: &str,
) -> Result<(), SqlError> {
    let db = |e| SqlError::Database(e);
    // GET_LOCK is per server and per connection: a second migrate waits here
    // (up to 30 s) instead of racing to add the same index twice.
    let lock = lock_name(table);
    let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 30)")
        .bind(&lock)
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    if got != Some(1) {
        return Err(SqlError::Schema(format!(
            "another migrate of `{table}` held the lock for 30 s"
        )));
    }
    let result = migrate_mysql_locked(conn, table).await;
    // Released even when a step failed; if this fails the connection is
    // broken, and the server drops the lock with it.
    let _ = sqlx::query("SELECT RELEASE_LOCK(?)")
        .bind(&lock)
        .execute(&mut *conn)
        .await;
    result
}

#[cfg(feature = "mysql")]
async fn migrate_mysql_locked(
    conn: &mut sqlx::MySqlConnection,
    table: &str,
) -> Result<(), SqlError> {
    let db = |e| SqlError::Database(e);
    // The key is hex, so an ASCII binary column: 64 bytes, compared byte for
    // byte. The data is a byte blob, so the table charset (utf8mb4) only
    // matters to anyone who adds text columns.
    sqlx::query(ddl(format!(
        "CREATE TABLE IF NOT EXISTS {table} (\
           session_key CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, \
           session_data MEDIUMBLOB NOT NULL, \
           expires_at_ms BIGINT NOT NULL, \
           PRIMARY KEY (session_key), \
           INDEX {table}_expires_idx (expires_at_ms)\
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
    )))
    .execute(&mut *conn)
    .await
    .map_err(db)?;

    // information_schema types differ between MySQL 8 and MariaDB; CAST
    // makes both plain strings.
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR) \
         FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let names: Vec<String> = columns.iter().map(|(n, _)| n.clone()).collect();
    check_columns(table, &names)?;

    let data_type = columns
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("session_data"))
        .map(|(_, t)| t.to_ascii_lowercase())
        .unwrap_or_default();
    if matches!(
        data_type.as_str(),
        "tinyblob" | "blob" | "binary" | "varbinary"
    ) {
        tracing::info!(table, from = %data_type, "widening session_data to MEDIUMBLOB");
        sqlx::query(ddl(format!(
            "ALTER TABLE {table} MODIFY session_data MEDIUMBLOB NOT NULL"
        )))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }

    let indexed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
           AND COLUMN_NAME = 'expires_at_ms' AND SEQ_IN_INDEX = 1",
    )
    .bind(table)
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    if indexed == 0 {
        tracing::info!(table, "adding the index on expires_at_ms");
        sqlx::query(ddl(format!(
            "CREATE INDEX {table}_expires_idx ON {table} (expires_at_ms)"
        )))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// PostgreSQL: DDL is transactional, so the whole migration is one
/// transaction, serialized by an advisory lock held until it ends.
#[cfg(feature = "postgres")]
pub(crate) async fn migrate_postgres(
    conn: &mut sqlx::PgConnection,
    table: &str,
) -> Result<(), SqlError> {
    use sqlx::Connection as _;
    let db = |e| SqlError::Database(e);
    let mut tx = conn.begin().await.map_err(db)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(lock_name(table))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    sqlx::query(ddl(format!(
        "CREATE TABLE IF NOT EXISTS {table} (\
           session_key VARCHAR(64) PRIMARY KEY, \
           session_data BYTEA NOT NULL, \
           expires_at_ms BIGINT NOT NULL)"
    )))
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1",
    )
    .bind(table)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    check_columns(table, &names)?;
    sqlx::query(ddl(format!(
        "CREATE INDEX IF NOT EXISTS {table}_expires_idx ON {table} (expires_at_ms)"
    )))
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)
}

/// SQLite: one transaction; SQLite's own write lock serializes migrations.
#[cfg(feature = "sqlite")]
pub(crate) async fn migrate_sqlite(
    conn: &mut sqlx::SqliteConnection,
    table: &str,
) -> Result<(), SqlError> {
    use sqlx::Connection as _;
    let db = |e| SqlError::Database(e);
    let mut tx = conn.begin().await.map_err(db)?;
    sqlx::query(ddl(format!(
        "CREATE TABLE IF NOT EXISTS {table} (\
           session_key TEXT NOT NULL PRIMARY KEY, \
           session_data BLOB NOT NULL, \
           expires_at_ms INTEGER NOT NULL)"
    )))
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?)")
        .bind(table)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
    check_columns(table, &names)?;
    sqlx::query(ddl(format!(
        "CREATE INDEX IF NOT EXISTS {table}_expires_idx ON {table} (expires_at_ms)"
    )))
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)
}
