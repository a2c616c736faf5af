//! The statements of each dialect, written out once per table.
//!
//! The table name is pasted into the text (it cannot be a bind parameter);
//! [`SqlOptions`](crate::SqlOptions) only lets through names made of
//! `[a-z0-9_]`, so that is safe. Everything else is bound.

use std::sync::Arc;

use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

use crate::Backend;

/// Rows deleted per statement by `clear_expired`: small enough that one
/// batch holds its locks briefly on a busy table, large enough that a backlog
/// of millions clears in minutes.
pub(crate) const CLEAR_BATCH: u64 = 5_000;

/// The statements the store runs, with the table name filled in.
#[derive(Debug)]
pub(crate) struct Statements {
    /// `(key, now)` → `(data, deadline)` of a live row.
    pub(crate) load: SqlStr,
    /// `(key, data, deadline, now)` on PostgreSQL and SQLite: inserts, or
    /// takes over a row whose deadline has passed; 0 rows when a live row
    /// holds the key. `(key, data, deadline)` on MySQL: a plain insert.
    pub(crate) create: SqlStr,
    /// MySQL only, `(key, now)`: removes an expired row that blocks a create.
    pub(crate) delete_expired_key: SqlStr,
    /// `(data, deadline, key, now)`: rewrites a live row.
    pub(crate) update: SqlStr,
    /// `(deadline, key, now)`: moves a live row's deadline.
    pub(crate) touch: SqlStr,
    /// `(key)`.
    pub(crate) delete: SqlStr,
    /// `(now)`: deletes up to [`CLEAR_BATCH`] expired rows.
    pub(crate) clear_batch: SqlStr,
}

impl Statements {
    pub(crate) fn new(backend: Backend, table: &str) -> Self {
        // PostgreSQL numbers its parameters; MySQL and SQLite take them in
        // order.
        let p = |n: usize| match backend {
            Backend::Postgres => format!("${n}"),
            _ => "?".to_owned(),
        };
        let (p1, p2, p3, p4) = (p(1), p(2), p(3), p(4));
        let create = match backend {
            // ON DUPLICATE KEY UPDATE cannot tell "took over an expired row"
            // from "left a live row alone" through its row count (the driver
            // asks for found rows), so MySQL inserts and, on a duplicate
            // key, clears an expired holder and inserts again.
            Backend::MySql => format!(
                "INSERT INTO {table} (session_key, session_data, expires_at_ms) VALUES (?, ?, ?)"
            ),
            _ => format!(
                "INSERT INTO {table} (session_key, session_data, expires_at_ms) \
                 VALUES ({p1}, {p2}, {p3}) \
                 ON CONFLICT (session_key) DO UPDATE \
                 SET session_data = excluded.session_data, expires_at_ms = excluded.expires_at_ms \
                 WHERE {table}.expires_at_ms <= {p4}"
            ),
        };
        let clear_batch = match backend {
            // MySQL cannot select from the table it deletes from, but it has
            // DELETE ... LIMIT (ordered, so replicas delete the same rows).
            Backend::MySql => format!(
                "DELETE FROM {table} WHERE expires_at_ms <= ? ORDER BY expires_at_ms LIMIT {CLEAR_BATCH}"
            ),
            _ => format!(
                "DELETE FROM {table} WHERE session_key IN \
                 (SELECT session_key FROM {table} WHERE expires_at_ms <= {p1} LIMIT {CLEAR_BATCH})"
            ),
        };
        // Arc-backed, so handing a statement to sqlx per call is a refcount,
        // not a copy.
        let safe = |text: String| AssertSqlSafe(Arc::<str>::from(text)).into_sql_str();
        Self {
            load: safe(format!(
                "SELECT session_data, expires_at_ms FROM {table} \
                 WHERE session_key = {p1} AND expires_at_ms > {p2}"
            )),
            create: safe(create),
            delete_expired_key: safe(format!(
                "DELETE FROM {table} WHERE session_key = {p1} AND expires_at_ms <= {p2}"
            )),
            update: safe(format!(
                "UPDATE {table} SET session_data = {p1}, expires_at_ms = {p2} \
                 WHERE session_key = {p3} AND expires_at_ms > {p4}"
            )),
            touch: safe(format!(
                "UPDATE {table} SET expires_at_ms = {p1} \
                 WHERE session_key = {p2} AND expires_at_ms > {p3}"
            )),
            delete: safe(format!("DELETE FROM {table} WHERE session_key = {p1}")),
            clear_batch: safe(clear_batch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_dialect() {
        let pg = Statements::new(Backend::Postgres, "t");
        assert!(pg.update.as_str().contains("$4") && !pg.update.as_str().contains('?'));
        let my = Statements::new(Backend::MySql, "t");
        assert!(!my.update.as_str().contains('$'));
        assert!(!my.create.as_str().contains("ON CONFLICT"));
        let lite = Statements::new(Backend::Sqlite, "t");
        assert!(lite.create.as_str().contains("ON CONFLICT") && lite.create.as_str().contains('?'));
    }
}
