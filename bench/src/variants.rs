//! Every variant the benchmark serves, and how to build its app from the
//! server URLs that `bench/run` exports (the same `CLOAKROOM_*_URL`
//! variables as the test command).

use axum::Router;
use cloakroom::SessionLayer;
use cloakroom_core::config::from_pairs;

use crate::apps;

/// One server configuration of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    /// Short name, used on the command line (`serve NAME`, `--only NAME`).
    pub name: &'static str,
    /// What the table calls it.
    pub label: &'static str,
    /// The variant on the same backend that ratios are taken against.
    pub rival: Option<&'static str>,
}

const fn variant(name: &'static str, label: &'static str, rival: Option<&'static str>) -> Variant {
    Variant { name, label, rival }
}

/// The baseline every ratio is taken against.
pub const PLAIN: &str = "plain";

/// Every variant, in the order they run and print: each cloakroom engine
/// right before what it is compared with.
pub const ALL: &[Variant] = &[
    variant(PLAIN, "plain axum (no session layer)", None),
    variant("memory", "cloakroom memory", Some("ts-memory")),
    variant("ts-memory", "tower-sessions MemoryStore", None),
    variant(
        "memory-by-hand",
        "hand-written HashMap lookup, no layer",
        None,
    ),
    variant(
        "moka-by-hand",
        "hand-written SHA-256 + moka, no layer",
        None,
    ),
    variant("redis", "cloakroom redis", Some("ts-redis")),
    variant(
        "redis+near",
        "cloakroom redis, near cache 2 s",
        Some("redis"),
    ),
    variant("ts-redis", "tower-sessions RedisStore (fred)", None),
    variant(
        "redis-by-hand",
        "hand-written GET (+SET EX), redis-rs",
        None,
    ),
    variant("memcached", "cloakroom memcached", None),
    variant("db-mariadb", "cloakroom db, MariaDB", Some("ts-mysql")),
    variant("ts-mysql", "tower-sessions MySqlStore, MariaDB", None),
    variant(
        "mariadb-by-hand",
        "hand-written SELECT (+UPDATE), sqlx, MariaDB",
        None,
    ),
    variant(
        "db-postgres",
        "cloakroom db, PostgreSQL",
        Some("ts-postgres"),
    ),
    variant("ts-postgres", "tower-sessions PostgresStore", None),
    variant("db-sqlite", "cloakroom db, SQLite", None),
    variant(
        "cached_db",
        "cloakroom cached_db, MariaDB",
        Some("ts-moka-mysql"),
    ),
    variant("ts-moka-mysql", "tower-sessions moka over MySqlStore", None),
    variant(
        "signed_cookies",
        "cloakroom signed_cookies",
        Some("jar-signed"),
    ),
    variant(
        "encrypted_cookies",
        "cloakroom encrypted_cookies",
        Some("jar-signed"),
    ),
    variant("jar-signed", "axum-extra SignedCookieJar", None),
];

/// The variant called `name`.
pub fn find(name: &str) -> Option<Variant> {
    ALL.iter().copied().find(|v| v.name == name)
}

/// The secret of the cookie variants (the benchmark's own, never a user's).
const SECRET: &str = "cloakroom-bench: a fixed secret for signed and encrypted cookies";

fn url(variable: &str) -> Result<String, String> {
    std::env::var(variable).map_err(|_| {
        format!(
            "{variable} is not set: run the benchmark with bash bench/run, which starts the servers"
        )
    })
}

fn sqlite_url() -> Result<String, String> {
    let dir = url("CLOAKROOM_TEST_DIR")?;
    Ok(format!("sqlite://{dir}/bench.sqlite3"))
}

fn layer(pairs: &[(&str, &str)]) -> Result<SessionLayer, String> {
    SessionLayer::from_settings(&from_pairs(pairs.iter().copied())).map_err(|e| e.to_string())
}

fn sql_layer(engine: &str, url: &str) -> Result<SessionLayer, String> {
    layer(&[
        ("SESSION_ENGINE", engine),
        ("SESSION_DATABASE_URL", url),
        ("SESSION_DATABASE_MIGRATE", "true"),
    ])
}

/// Builds the app of `variant`, connecting to its backend.
///
/// # Errors
/// When its server URL is not set or the backend cannot be reached.
pub async fn app(variant: &str) -> Result<Router, String> {
    use tower_sessions_sqlx_store::sqlx;
    let err = |e: &dyn std::fmt::Display| format!("{variant}: {e}");
    Ok(match variant {
        PLAIN => apps::plain(),
        "memory" => apps::cloakroom(layer(&[
            ("SESSION_ENGINE", "cache"),
            ("SESSION_CACHE_URL", "memory://"),
        ])?),
        "redis" => apps::cloakroom(layer(&[
            ("SESSION_ENGINE", "cache"),
            ("SESSION_CACHE_URL", &url("CLOAKROOM_REDIS_URL")?),
        ])?),
        // Its own key prefix: the near cache tracks the keys under it, and
        // hears nothing of another variant's writes.
        "redis+near" => apps::cloakroom(layer(&[
            ("SESSION_ENGINE", "cache"),
            ("SESSION_CACHE_URL", &url("CLOAKROOM_REDIS_URL")?),
            ("SESSION_REDIS_KEY_PREFIX", "cloakroom:near:"),
            ("SESSION_REDIS_NEAR_CACHE_MS", "2000"),
        ])?),
        "memcached" => apps::cloakroom(layer(&[
            ("SESSION_ENGINE", "cache"),
            ("SESSION_CACHE_URL", &url("CLOAKROOM_MEMCACHED_URL")?),
        ])?),
        "db-mariadb" => apps::cloakroom(sql_layer("db", &url("CLOAKROOM_MARIADB_URL")?)?),
        "db-postgres" => apps::cloakroom(sql_layer("db", &url("CLOAKROOM_POSTGRES_URL")?)?),
        "db-sqlite" => apps::cloakroom(sql_layer("db", &sqlite_url()?)?),
        "cached_db" => apps::cloakroom(sql_layer("cached_db", &url("CLOAKROOM_MARIADB_URL")?)?),
        "signed_cookies" | "encrypted_cookies" => apps::cloakroom(layer(&[
            ("SESSION_ENGINE", variant),
            ("SESSION_SECRET_KEY", SECRET),
        ])?),
        "ts-memory" => apps::tower_sessions(tower_sessions::MemoryStore::default()),
        "memory-by-hand" => apps::memory_by_hand(),
        "moka-by-hand" => apps::moka_by_hand(),
        "ts-redis" => {
            use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
            let config = Config::from_url(&url("CLOAKROOM_REDIS_URL")?).map_err(|e| err(&e))?;
            let pool = Pool::new(config, None, None, None, 8).map_err(|e| err(&e))?;
            let _task = pool.connect();
            pool.wait_for_connect().await.map_err(|e| err(&e))?;
            apps::tower_sessions(tower_sessions_redis_store::RedisStore::new(pool))
        }
        "redis-by-hand" => {
            let client = redis::Client::open(url("CLOAKROOM_REDIS_URL")?).map_err(|e| err(&e))?;
            let connection = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| err(&e))?;
            apps::redis_by_hand(connection)
        }
        "mariadb-by-hand" => {
            let mariadb = url("CLOAKROOM_MARIADB_URL")?;
            let setup = ::sqlx::MySqlPool::connect(&mariadb)
                .await
                .map_err(|e| err(&e))?;
            apps::mariadb_by_hand_table(&setup)
                .await
                .map_err(|e| err(&e))?;
            setup.close().await;
            let options = mariadb.parse().map_err(|e| err(&e))?;
            let size = usize::try_from(cloakroom::sql::options::DEFAULT_POOL_SIZE).unwrap_or(10);
            let pool =
                apps::mariadb_by_hand::Pool::builder(apps::mariadb_by_hand::Manager(options))
                    .max_size(size)
                    .build()
                    .map_err(|e| err(&e))?;
            apps::mariadb_by_hand::app(pool)
        }
        "ts-mysql" | "ts-moka-mysql" => {
            let pool = sqlx::MySqlPool::connect(&url("CLOAKROOM_MARIADB_URL")?)
                .await
                .map_err(|e| err(&e))?;
            // The test database, not tower-sessions' own schema (the
            // benchmark's user may not create databases).
            let store = tower_sessions_sqlx_store::MySqlStore::new(pool)
                .with_schema_name("cloakroom")
                .and_then(|s| s.with_table_name("tower_sessions"))
                .map_err(|e| err(&e))?;
            store.migrate().await.map_err(|e| err(&e))?;
            if variant == "ts-mysql" {
                apps::tower_sessions(store)
            } else {
                let cache = tower_sessions_moka_store::MokaStore::new(Some(apps::CACHE_ENTRIES));
                apps::tower_sessions(tower_sessions::CachingSessionStore::new(cache, store))
            }
        }
        "ts-postgres" => {
            let pool = sqlx::PgPool::connect(&url("CLOAKROOM_POSTGRES_URL")?)
                .await
                .map_err(|e| err(&e))?;
            let store = tower_sessions_sqlx_store::PostgresStore::new(pool);
            store.migrate().await.map_err(|e| err(&e))?;
            apps::tower_sessions(store)
        }
        "jar-signed" => {
            // The jar wants 64 bytes of key material.
            let key = axum_extra::extract::cookie::Key::try_from(SECRET.repeat(2).as_bytes())
                .map_err(|e| err(&e))?;
            apps::signed_cookie_jar(key)
        }
        other => return Err(format!("no variant called {other}")),
    })
}
