//! The `db` engine (cloakroom-sql) against real databases:
//!
//! * `mariadb`: the private MariaDB that `tests/run` starts
//!   (tests/servers/mariadb.sh, `CLOAKROOM_MARIADB_URL`);
//! * `postgres`: the private PostgreSQL cluster (tests/servers/postgres.sh,
//!   `CLOAKROOM_POSTGRES_URL`);
//! * `sqlite`: a fresh database file per engine.
//!
//! Each gets the conformance suite and the engine's own cases. Every engine
//! made here has a table of its own, so the cases run in parallel on the
//! shared servers. The fault test, which stops its server, is in
//! `sql_fault.rs` and has a MariaDB of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cloakroom::Engine;
use cloakroom_core::record::Data;
use cloakroom_core::{ErrorKind, Id, Record, SessionStore, StoreKey};
use cloakroom_sql::{Backend, SqlStore};
use cloakroom_tests::probe::Probe;
use cloakroom_tests::{contract, required_env};
use serde_json::json;
use sqlx::AssertSqlSafe;
use time::OffsetDateTime;

/// A table name no other engine in this run uses.
fn unique_table() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "sess_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where SQLite files go: the run's directory (removed by `tests/run`), or
/// the system's temporary directory when run by hand.
fn sqlite_url() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::var_os("CLOAKROOM_TEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let file = dir.join(format!(
        "cloakroom-sql-{}-{}.db",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    format!("sqlite://{}", file.display())
}

/// A store on `url` with its own, migrated, table.
async fn store_at(url: &str) -> SqlStore {
    let store = SqlStore::builder(url)
        .with_table(unique_table())
        .with_pool_size(4)
        .build()
        .unwrap_or_else(|e| panic!("a store for {url}: {e}"));
    store.migrate().await.expect("migrate");
    store
}

fn new_key() -> StoreKey {
    Id::generate().expect("OS randomness").store_key()
}

fn record(value: &str, ttl: Duration) -> Record {
    let mut data = Data::new();
    data.insert("v".into(), json!(value));
    Record::new(data, OffsetDateTime::now_utc() + ttl)
}

/// A record whose deadline passed `ago` ago.
fn expired(value: &str, ago: Duration) -> Record {
    let mut data = Data::new();
    data.insert("v".into(), json!(value));
    Record::new(data, OffsetDateTime::now_utc() - ago)
}

/// A plain sqlx pool, to look at the table behind the store's back.
enum Raw {
    My(sqlx::MySqlPool),
    Pg(sqlx::PgPool),
    Lite(sqlx::SqlitePool),
}

/// One row as stored: key, data, deadline.
type Row = (String, Vec<u8>, i64);

impl Raw {
    async fn open(url: &str) -> Self {
        match Backend::from_url(url).expect("a database URL") {
            Backend::MySql => Self::My(
                sqlx::MySqlPool::connect(url)
                    .await
                    .unwrap_or_else(|e| panic!("raw connection to {url}: {e}")),
            ),
            Backend::Postgres => Self::Pg(
                sqlx::PgPool::connect(url)
                    .await
                    .unwrap_or_else(|e| panic!("raw connection to {url}: {e}")),
            ),
            _ => Self::Lite(
                sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
                    .await
                    .unwrap_or_else(|e| panic!("raw connection to {url}: {e}")),
            ),
        }
    }

    async fn exec(&self, sql: String) {
        let result = match self {
            Self::My(p) => sqlx::query(AssertSqlSafe(sql.clone()))
                .execute(p)
                .await
                .map(drop),
            Self::Pg(p) => sqlx::query(AssertSqlSafe(sql.clone()))
                .execute(p)
                .await
                .map(drop),
            Self::Lite(p) => sqlx::query(AssertSqlSafe(sql.clone()))
                .execute(p)
                .await
                .map(drop),
        };
        result.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn rows(&self, table: &str) -> Vec<Row> {
        let sql = format!(
            "SELECT session_key, session_data, expires_at_ms FROM {table} ORDER BY session_key"
        );
        let result = match self {
            Self::My(p) => sqlx::query_as(AssertSqlSafe(sql)).fetch_all(p).await,
            Self::Pg(p) => sqlx::query_as(AssertSqlSafe(sql)).fetch_all(p).await,
            Self::Lite(p) => sqlx::query_as(AssertSqlSafe(sql)).fetch_all(p).await,
        };
        result.expect("read the table")
    }

    async fn row(&self, table: &str, key: &StoreKey) -> Option<Row> {
        self.rows(table)
            .await
            .into_iter()
            .find(|(k, _, _)| k.as_str() == key.hex().as_str())
    }

    /// The names of the indexes whose first column is `expires_at_ms`, asked
    /// the way an operator would (`SHOW INDEX`, `pg_indexes`, SQLite's
    /// `pragma_index_info`).
    async fn expiry_indexes(&self, table: &str) -> Vec<String> {
        let result = match self {
            Self::My(p) => show_index(p, table).await,
            Self::Pg(p) => {
                sqlx::query_scalar(
                    "SELECT indexname::text FROM pg_indexes \
                 WHERE schemaname = current_schema() AND tablename = $1 \
                   AND indexdef LIKE '%(expires_at_ms)%'",
                )
                .bind(table)
                .fetch_all(p)
                .await
            }
            Self::Lite(p) => {
                sqlx::query_scalar(
                    "SELECT l.name FROM pragma_index_list(?1) AS l \
                 JOIN pragma_index_info(l.name) AS i \
                 WHERE i.seqno = 0 AND i.name = 'expires_at_ms'",
                )
                .bind(table)
                .fetch_all(p)
                .await
            }
        };
        result.expect("list indexes")
    }

    /// A SQL literal of the bytes `{}`.
    fn empty_json_literal(&self) -> &'static str {
        match self {
            Self::Pg(_) => "'\\x7b7d'::bytea",
            _ => "X'7b7d'",
        }
    }

    /// MySQL: the type of the data column.
    async fn data_type(&self, table: &str) -> String {
        let Self::My(p) = self else {
            panic!("only asked of MySQL")
        };
        sqlx::query_scalar(
            "SELECT CAST(DATA_TYPE AS CHAR) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = 'session_data'",
        )
        .bind(table)
        .fetch_one(p)
        .await
        .expect("column type")
    }
}

/// `SHOW INDEX FROM table`, read column by column.
async fn show_index(p: &sqlx::MySqlPool, table: &str) -> Result<Vec<String>, sqlx::Error> {
    use sqlx::Row as _;
    let rows = sqlx::query(AssertSqlSafe(format!("SHOW INDEX FROM {table}")))
        .fetch_all(p)
        .await?;
    let mut names = Vec::new();
    for row in rows {
        let column: String = row.try_get("Column_name")?;
        // MySQL and MariaDB disagree on the integer type of this column.
        let seq: u64 = row
            .try_get::<u64, _>("Seq_in_index")
            .or_else(|_| row.try_get::<u32, _>("Seq_in_index").map(u64::from))
            .or_else(|_| {
                row.try_get::<i64, _>("Seq_in_index")
                    .map(|s| s.unsigned_abs())
            })?;
        if column == "expires_at_ms" && seq == 1 {
            names.push(row.try_get("Key_name")?);
        }
    }
    Ok(names)
}

/// The engine's own cases, written once and run on each database.
mod cases {
    use super::*;
    use cloakroom_tests::client::Client;
    use http::StatusCode;

    /// `migrate` makes the table and its expiry index, and running it again
    /// (with rows in the table) changes nothing.
    pub(crate) async fn migrate_twice_is_harmless(url: &str) {
        let store = store_at(url).await;
        let raw = Raw::open(url).await;
        let key = new_key();
        assert!(
            store
                .create(&key, &record("kept", Duration::from_secs(60)))
                .await
                .expect("create")
        );
        store.migrate().await.expect("second migrate");
        store.migrate().await.expect("third migrate");
        assert_eq!(raw.rows(store.table()).await.len(), 1);
        let loaded = store
            .load(&key)
            .await
            .expect("load")
            .expect("the row survived");
        assert_eq!(loaded.data["v"], json!("kept"));
        let indexes = raw.expiry_indexes(store.table()).await;
        assert_eq!(indexes.len(), 1, "one index on expires_at_ms: {indexes:?}");
        // Two migrations at once: the lock serializes them.
        let other = SqlStore::builder(url)
            .with_table(store.table())
            .build()
            .expect("store");
        let (a, b) = tokio::join!(store.migrate(), other.migrate());
        a.expect("concurrent migrate");
        b.expect("concurrent migrate");
        assert_eq!(raw.expiry_indexes(store.table()).await.len(), 1);
    }

    /// A table made by hand or by an older version (no index; on MySQL a
    /// 64 KiB BLOB) is brought up to date.
    pub(crate) async fn migrate_upgrades_an_old_table(url: &str) {
        let raw = Raw::open(url).await;
        let table = unique_table();
        let data_type = match raw {
            Raw::My(_) => "BLOB",
            Raw::Pg(_) => "BYTEA",
            Raw::Lite(_) => "BLOB",
        };
        raw.exec(format!(
            "CREATE TABLE {table} (session_key VARCHAR(64) NOT NULL PRIMARY KEY, \
             session_data {data_type} NOT NULL, expires_at_ms BIGINT NOT NULL)"
        ))
        .await;
        assert!(raw.expiry_indexes(&table).await.is_empty());
        let store = SqlStore::builder(url)
            .with_table(table.as_str())
            .build()
            .expect("store");
        store.migrate().await.expect("migrate");
        assert_eq!(raw.expiry_indexes(&table).await.len(), 1);
        if matches!(raw, Raw::My(_)) {
            assert_eq!(raw.data_type(&table).await, "mediumblob");
        }
        let key = new_key();
        let big = big_record(256 * 1024);
        assert!(
            store
                .create(&key, &big)
                .await
                .expect("a 256 KiB session fits now")
        );

        // A table of that name with other columns is refused, not altered.
        let odd = unique_table();
        raw.exec(format!("CREATE TABLE {odd} (id INTEGER PRIMARY KEY)"))
            .await;
        let err = SqlStore::builder(url)
            .with_table(odd.as_str())
            .build()
            .expect("store")
            .migrate()
            .await
            .expect_err("a foreign table");
        assert!(err.to_string().contains("session_data"), "{err}");
    }

    /// create, load, update, touch, delete, with the deadline from the column.
    pub(crate) async fn round_trip(url: &str) {
        let store = store_at(url).await;
        let raw = Raw::open(url).await;
        let key = new_key();
        let rec = record("a", Duration::from_secs(100));
        assert!(store.create(&key, &rec).await.expect("create"));
        assert!(
            !store
                .create(&key, &record("b", Duration::from_secs(100)))
                .await
                .expect("create")
        );
        let loaded = store.load(&key).await.expect("load").expect("record");
        assert_eq!(loaded.data["v"], json!("a"));
        assert_eq!(loaded.expires_at_millis(), rec.expires_at_millis());

        let rec = record("c", Duration::from_secs(300));
        assert!(store.update(&key, &rec).await.expect("update"));
        let (_, stored, deadline) = raw.row(store.table(), &key).await.expect("row");
        assert_eq!(deadline, rec.expires_at_millis());

        // touch moves the column only; load reports the new deadline.
        let later = OffsetDateTime::now_utc() + Duration::from_secs(900);
        let touched = Record {
            expires_at: later,
            ..store.load(&key).await.expect("load").expect("record")
        };
        assert!(store.touch(&key, &touched).await.expect("touch"));
        // Touching to the same millisecond still finds the row.
        assert!(store.touch(&key, &touched).await.expect("touch again"));
        let (_, after, deadline) = raw.row(store.table(), &key).await.expect("row");
        assert_eq!(after, stored, "touch rewrote the data");
        assert_eq!(deadline, cloakroom_core::record::millis(later));
        let loaded = store.load(&key).await.expect("load").expect("record");
        assert_eq!(
            loaded.expires_at_millis(),
            cloakroom_core::record::millis(later)
        );
        assert_eq!(loaded.data["v"], json!("c"));

        store.delete(&key).await.expect("delete");
        store.delete(&key).await.expect("deleting twice is fine");
        assert!(store.load(&key).await.expect("load").is_none());
        assert!(!store.touch(&key, &touched).await.expect("touch"));
        assert!(raw.row(store.table(), &key).await.is_none());
    }

    /// A row past its deadline is invisible to load, update and touch, and
    /// does not block a create of the same key.
    pub(crate) async fn expired_rows_are_ignored(url: &str) {
        let store = store_at(url).await;
        let raw = Raw::open(url).await;
        let key = new_key();
        assert!(
            store
                .create(&key, &record("short", Duration::from_millis(300)))
                .await
                .expect("create")
        );
        assert!(store.load(&key).await.expect("load").is_some());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(store.load(&key).await.expect("load").is_none());
        assert!(
            !store
                .update(&key, &record("b", Duration::from_secs(60)))
                .await
                .expect("update")
        );
        let later = record("b", Duration::from_secs(60));
        assert!(!store.touch(&key, &later).await.expect("touch"));
        let (_, data, _) = raw
            .row(store.table(), &key)
            .await
            .expect("still in the table");
        assert!(
            String::from_utf8_lossy(&data).contains("short"),
            "update wrote an expired row"
        );

        // The expired row gives way to a new session under the same key.
        assert!(
            store
                .create(&key, &record("fresh", Duration::from_secs(60)))
                .await
                .expect("create")
        );
        let loaded = store.load(&key).await.expect("load").expect("record");
        assert_eq!(loaded.data["v"], json!("fresh"));
        assert_eq!(raw.rows(store.table()).await.len(), 1);
        // ... but a live one does not.
        assert!(
            !store
                .create(&key, &record("other", Duration::from_secs(60)))
                .await
                .expect("create")
        );
    }

    /// `clear_expired` deletes exactly the rows past their deadline.
    pub(crate) async fn clear_expired_removes_exactly_the_expired(url: &str) {
        let store = store_at(url).await;
        let raw = Raw::open(url).await;
        let mut live = Vec::new();
        for i in 0..5 {
            let key = new_key();
            let ago = Duration::from_secs(1 + i * 1000);
            assert!(
                store
                    .create(&key, &expired("old", ago))
                    .await
                    .expect("create")
            );
        }
        for _ in 0..3 {
            let key = new_key();
            assert!(
                store
                    .create(&key, &record("live", Duration::from_secs(60)))
                    .await
                    .expect("create")
            );
            live.push(key.hex().to_string());
        }
        assert_eq!(raw.rows(store.table()).await.len(), 8);
        assert_eq!(store.clear_expired().await.expect("clear"), 5);
        let mut left: Vec<String> = raw
            .rows(store.table())
            .await
            .into_iter()
            .map(|r| r.0)
            .collect();
        left.sort();
        live.sort();
        assert_eq!(left, live);
        assert_eq!(store.clear_expired().await.expect("clear"), 0);
    }

    /// More expired rows than one delete batch holds.
    pub(crate) async fn clear_expired_works_in_batches(url: &str) {
        let store = store_at(url).await;
        let raw = Raw::open(url).await;
        let past = OffsetDateTime::now_utc() - Duration::from_secs(10);
        let past = cloakroom_core::record::millis(past);
        // 12 000 rows in a few statements (the batch is 5 000).
        let blob = raw.empty_json_literal();
        for chunk in 0..12 {
            let values: Vec<String> = (0..1000)
                .map(|i| format!("('{:064x}', {blob}, {past})", chunk * 1000 + i))
                .collect();
            raw.exec(format!(
                "INSERT INTO {} (session_key, session_data, expires_at_ms) VALUES {}",
                store.table(),
                values.join(", ")
            ))
            .await;
        }
        let key = new_key();
        assert!(
            store
                .create(&key, &record("live", Duration::from_secs(60)))
                .await
                .expect("create")
        );
        assert_eq!(store.clear_expired().await.expect("clear"), 12_000);
        assert_eq!(raw.rows(store.table()).await.len(), 1);
    }

    /// Every operation does what the contract says.
    pub(crate) async fn store_contract(url: &str) {
        contract::every_operation(&store_at(url).await).await;
    }

    /// The contract cases through the test probe, which must forward every
    /// call, as itself.
    pub(crate) async fn store_contract_through_probe(url: &str) {
        let store = Arc::new(store_at(url).await);
        let (probe, counts) = Probe::over(Arc::clone(&store) as Arc<dyn SessionStore>);
        contract::every_operation(&probe).await;
        contract::create_never_overwrites(&probe).await;
        let raw = &Raw::open(url).await;
        let table = store.table();
        let held = |key| async move { raw.row(table, &key).await.is_some() };
        contract::deleted_sessions_stay_deleted(&probe, held, 10).await;
        contract::all_five_called(&counts);
        contract::each_call_reaches(&probe, &counts).await;
    }

    /// `create` never overwrites; an update or touch after a delete, and
    /// updates racing deletes, never bring a session back.
    pub(crate) async fn update_after_delete_does_not_recreate(url: &str) {
        let store = store_at(url).await;
        contract::calls_stay_small(&store);
        contract::create_never_overwrites(&store).await;
        let raw = &Raw::open(url).await;
        let table = store.table();
        let held = |key| async move { raw.row(table, &key).await.is_some() };
        contract::deleted_sessions_stay_deleted(&store, held, 30).await;
    }

    fn big_record(bytes: usize) -> Record {
        let mut data = Data::new();
        // JSON-escaped and non-ASCII content, to see that nothing is
        // re-encoded on the way.
        let chunk = "catalog \"endpoint\" ☁ ";
        let text: String = chunk.repeat(bytes / chunk.len() + 1);
        data.insert("catalog".into(), json!(text));
        Record::new(data, OffsetDateTime::now_utc() + Duration::from_secs(60))
    }

    /// A 1 MiB session (and a 3 MiB one) goes in and comes back intact.
    pub(crate) async fn one_mib_session_round_trips(url: &str) {
        let store = store_at(url).await;
        let key = new_key();
        let big = big_record(1024 * 1024);
        assert!(big.to_bytes().expect("bytes").len() > 1024 * 1024);
        assert!(store.create(&key, &big).await.expect("create 1 MiB"));
        let loaded = store.load(&key).await.expect("load").expect("record");
        assert_eq!(loaded.data, big.data);
        let bigger = big_record(3 * 1024 * 1024);
        assert!(store.update(&key, &bigger).await.expect("update 3 MiB"));
        assert_eq!(
            store.load(&key).await.expect("load").expect("record").data,
            bigger.data
        );
    }

    /// MySQL: a record larger than the server accepts is a `TooLarge` error,
    /// and the store goes on working.
    pub(crate) async fn oversized_session_is_too_large(url: &str) {
        let store = store_at(url).await;
        let key = new_key();
        let huge = big_record(17 * 1024 * 1024);
        let err = store
            .create(&key, &huge)
            .await
            .expect_err("17 MiB is over the limit");
        assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
        assert!(
            store
                .create(&key, &record("small", Duration::from_secs(60)))
                .await
                .expect("create")
        );
    }

    /// Over HTTP: the cookie value (the raw id) is in no row, neither key nor
    /// data; the row is keyed by its SHA-256.
    pub(crate) async fn cookie_value_is_in_no_row(url: &str) {
        let store = store_at(url).await;
        let table = store.table().to_owned();
        let raw = Raw::open(url).await;
        let (mut client, _, _) = cloakroom_tests::cases::setup(Engine::store(store), |l| l);
        let reply = client.get("/set/user/ada").await;
        assert_eq!(reply.status, StatusCode::OK);
        let cookie = reply
            .cookie("sessionid")
            .expect("a session cookie")
            .value
            .clone();
        let id = Id::parse(&cookie).expect("the cookie holds an id");
        let rows = raw.rows(&table).await;
        assert_eq!(rows.len(), 1);
        let (key, data, _) = &rows[0];
        assert_eq!(key.as_str(), id.store_key().hex().as_str());
        assert!(!key.contains(&cookie));
        let data = String::from_utf8_lossy(data);
        assert!(data.contains("ada"));
        assert!(!data.contains(&cookie), "the cookie value is in the row");
    }

    /// `SessionLayer::from_settings` picks this engine for `SESSION_ENGINE=db`
    /// (Django's dotted name too), reads `DATABASE_URL` when
    /// `SESSION_DATABASE_URL` is unset, and with `SESSION_DATABASE_MIGRATE`
    /// creates the table on first use.
    pub(crate) async fn chosen_by_settings(url: &str) {
        for url_variable in ["SESSION_DATABASE_URL", "DATABASE_URL"] {
            let table = unique_table();
            let settings = cloakroom_core::config::from_pairs([
                ("SESSION_ENGINE", "django.contrib.sessions.backends.db"),
                (url_variable, url),
                ("SESSION_DATABASE_TABLE", table.as_str()),
                ("SESSION_DATABASE_MIGRATE", "true"),
                ("SESSION_DATABASE_POOL_SIZE", "2"),
            ]);
            let layer = cloakroom::SessionLayer::from_settings(&settings).expect("valid settings");
            let mut client = Client::new(layer, Default::default());
            assert_eq!(client.get("/set/a/1").await.status, StatusCode::OK);
            assert_eq!(client.get("/get/a").await.body, "1");
            let raw = Raw::open(url).await;
            assert_eq!(raw.rows(&table).await.len(), 1);
            assert_eq!(raw.expiry_indexes(&table).await.len(), 1);
        }
        // Without SESSION_DATABASE_MIGRATE nothing creates the table: the
        // operator runs `cloakroom-admin migrate`, as with Django.
        let settings = cloakroom_core::config::from_pairs([
            ("SESSION_ENGINE", "db"),
            ("SESSION_DATABASE_URL", url),
            ("SESSION_DATABASE_TABLE", "no_such_table_here"),
        ]);
        let layer = cloakroom::SessionLayer::from_settings(&settings).expect("valid settings");
        let mut client = Client::new(layer, Default::default());
        assert_eq!(
            client.get("/set/a/1").await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    /// Everything an error shows: `Display`, `Debug`, and the same for each
    /// `source()` down the chain.
    fn error_text(err: &dyn std::error::Error) -> String {
        let mut text = format!("{err} | {err:?}");
        let mut next = err.source();
        while let Some(e) = next {
            text.push_str(&format!(" | {e} | {e:?}"));
            next = e.source();
        }
        text
    }

    /// A value read back as the wrong type gives an error that names the
    /// key and the type asked for, and nowhere (message, `Debug`, sources)
    /// the stored value: serde's own message quotes it, and the error of a
    /// handler ends up in logs.
    pub(crate) async fn a_type_mismatch_never_shows_the_value(url: &str) {
        use axum::Router;
        use axum::routing::get;
        use cloakroom::{Session, SessionLayer};

        const SECRET: &str = "gAAAAB-keystone-token-d41d8cd98f00b204";
        async fn put(s: Session) -> Result<&'static str, cloakroom::Error> {
            s.insert("auth_token", SECRET).await?;
            Ok("stored")
        }
        async fn read(s: Session) -> String {
            match s.get::<u64>("auth_token").await {
                Ok(v) => format!("read {v:?}"),
                Err(e) => error_text(&e),
            }
        }
        async fn take(s: Session) -> String {
            match s.remove::<u64>("auth_token").await {
                Ok(v) => format!("removed {v:?}"),
                Err(e) => error_text(&e),
            }
        }
        let app = Router::new()
            .route("/put", get(put))
            .route("/read", get(read))
            .route("/take", get(take))
            .layer(SessionLayer::new(Engine::store(store_at(url).await)));
        let mut client = Client::of(app);
        assert_eq!(client.get("/put").await.body, "stored");
        // Read from the database, not from this request's memory.
        for path in ["/read", "/take"] {
            let reply = client.get(path).await;
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            let text = reply.body;
            assert!(text.contains("auth_token"), "{path}: {text}");
            assert!(text.contains("u64"), "{path}: {text}");
            assert!(!text.contains("keystone-token"), "{path}: {text}");
            assert!(!text.contains("gAAAAB"), "{path}: {text}");
        }
    }

    /// A database password with the characters that used to end the
    /// user-info (`/`, `?`, `#`, `@`) never shows in the store's `Debug`,
    /// its URL for logs, or a startup error.
    pub(crate) async fn a_password_never_shows(url: &str) {
        let Some((scheme, rest)) = url.split_once("://").filter(|_| !url.starts_with("sqlite"))
        else {
            return; // SQLite has no credentials.
        };
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        for password in ["s3cr/et", "s3cr?et", "s3cr#et", "s3cr@et", "s3cr:et/x@y"] {
            let with = format!("{scheme}://dash:{password}@{host}");
            let shown = match SqlStore::builder(&with).build() {
                Ok(store) => format!("{store:?} {}", store.redacted_url()),
                Err(e) => error_text(&e),
            };
            assert!(!shown.contains("s3cr"), "{with} -> {shown}");
            let settings = cloakroom_core::config::from_pairs([
                ("SESSION_ENGINE", "db"),
                ("SESSION_DATABASE_URL", with.as_str()),
                ("SESSION_DATABASE_TABLE", "Not A Valid Table"),
            ]);
            let Err(err) = cloakroom::SessionLayer::from_settings(&settings) else {
                panic!("a bad table name accepted");
            };
            assert!(!error_text(&err).contains("s3cr"), "{err}");
        }
    }

    /// The background cleanup deletes expired rows on its own and stops when
    /// its guard is dropped.
    pub(crate) async fn background_cleanup_runs_until_dropped(url: &str) {
        let store = store_at(url).await;
        let raw = Raw::open(url).await;
        let guard = store.spawn_cleanup(Duration::from_millis(100));
        for _ in 0..3 {
            assert!(
                store
                    .create(&new_key(), &expired("old", Duration::from_secs(5)))
                    .await
                    .expect("create")
            );
        }
        let live = new_key();
        assert!(
            store
                .create(&live, &record("live", Duration::from_secs(60)))
                .await
                .expect("create")
        );
        let mut left = usize::MAX;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            left = raw.rows(store.table()).await.len();
            if left == 1 {
                break;
            }
        }
        assert_eq!(left, 1, "the cleanup task did not clear the expired rows");
        drop(guard);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            store
                .create(&new_key(), &expired("old", Duration::from_secs(5)))
                .await
                .expect("create")
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            raw.rows(store.table()).await.len(),
            2,
            "the task ran after its guard was dropped"
        );

        // The cleanup that the settings start lives as long as the store.
        let auto = SqlStore::builder(url)
            .with_table(store.table())
            .with_cleanup_every(Some(Duration::from_millis(100)))
            .build()
            .expect("store");
        // It starts with the store's first call.
        assert!(auto.load(&live).await.expect("load").is_some());
        let mut left = usize::MAX;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            left = raw.rows(store.table()).await.len();
            if left == 1 {
                break;
            }
        }
        assert_eq!(left, 1, "the automatic cleanup did not run");
        drop(auto);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            store
                .create(&new_key(), &expired("old", Duration::from_secs(5)))
                .await
                .expect("create")
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            raw.rows(store.table()).await.len(),
            2,
            "the task outlived its store"
        );
    }
}

/// One `#[tokio::test]` per engine case, on the database `$url()` names.
macro_rules! sql_cases {
    ($url:ident; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                crate::cases::$case(&$url()).await;
            }
        )*
    };
}

mod mariadb {
    use super::*;

    fn url() -> String {
        required_env("CLOAKROOM_MARIADB_URL")
    }

    async fn engine() -> Engine {
        Engine::store(store_at(&url()).await)
    }

    cloakroom_tests::conformance_suite!(engine);

    sql_cases!(url;
        migrate_twice_is_harmless,
        migrate_upgrades_an_old_table,
        round_trip,
        expired_rows_are_ignored,
        clear_expired_removes_exactly_the_expired,
        clear_expired_works_in_batches,
        store_contract,
        store_contract_through_probe,
        update_after_delete_does_not_recreate,
        one_mib_session_round_trips,
        oversized_session_is_too_large,
        cookie_value_is_in_no_row,
        chosen_by_settings,
        background_cleanup_runs_until_dropped,
        a_type_mismatch_never_shows_the_value,
        a_password_never_shows,
    );

    /// The table is utf8mb4 and its key column binary ASCII.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn table_is_utf8mb4_with_a_binary_key() {
        let store = store_at(&url()).await;
        let Raw::My(pool) = Raw::open(&url()).await else {
            unreachable!()
        };
        let (charset, key_collation): (String, String) = sqlx::query_as(
            "SELECT CAST(t.TABLE_COLLATION AS CHAR), CAST(c.COLLATION_NAME AS CHAR) \
             FROM information_schema.TABLES t JOIN information_schema.COLUMNS c \
               ON c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME \
             WHERE t.TABLE_SCHEMA = DATABASE() AND t.TABLE_NAME = ? \
               AND c.COLUMN_NAME = 'session_key'",
        )
        .bind(store.table())
        .fetch_one(&pool)
        .await
        .expect("collations");
        assert!(charset.starts_with("utf8mb4"), "{charset}");
        assert_eq!(key_collation, "ascii_bin");
    }
}

mod postgres {
    use super::*;

    fn url() -> String {
        required_env("CLOAKROOM_POSTGRES_URL")
    }

    async fn engine() -> Engine {
        Engine::store(store_at(&url()).await)
    }

    cloakroom_tests::conformance_suite!(engine);

    sql_cases!(url;
        migrate_twice_is_harmless,
        migrate_upgrades_an_old_table,
        round_trip,
        expired_rows_are_ignored,
        clear_expired_removes_exactly_the_expired,
        clear_expired_works_in_batches,
        store_contract,
        store_contract_through_probe,
        update_after_delete_does_not_recreate,
        one_mib_session_round_trips,
        cookie_value_is_in_no_row,
        chosen_by_settings,
        background_cleanup_runs_until_dropped,
        a_type_mismatch_never_shows_the_value,
        a_password_never_shows,
    );
}

mod sqlite {
    use super::*;

    fn url() -> String {
        sqlite_url()
    }

    async fn engine() -> Engine {
        Engine::store(store_at(&url()).await)
    }

    cloakroom_tests::conformance_suite!(engine);

    sql_cases!(url;
        migrate_twice_is_harmless,
        migrate_upgrades_an_old_table,
        round_trip,
        expired_rows_are_ignored,
        clear_expired_removes_exactly_the_expired,
        clear_expired_works_in_batches,
        store_contract,
        store_contract_through_probe,
        update_after_delete_does_not_recreate,
        one_mib_session_round_trips,
        cookie_value_is_in_no_row,
        chosen_by_settings,
        background_cleanup_runs_until_dropped,
        a_type_mismatch_never_shows_the_value,
        a_password_never_shows,
    );

    /// `sqlite::memory:` works (one connection keeps the database alive).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_memory_database() {
        let store = SqlStore::builder("sqlite::memory:")
            .with_migrate_on_first_use(true)
            .build()
            .expect("store");
        let key = new_key();
        assert!(
            store
                .create(&key, &record("a", Duration::from_secs(60)))
                .await
                .expect("create")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(store.load(&key).await.expect("load").is_some());
    }
}
