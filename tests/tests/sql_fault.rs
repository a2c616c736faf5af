//! The `db` engine when its database fails: a private MariaDB that only this
//! file uses (`CLOAKROOM_MARIADB_FAULT_*`, started by
//! tests/servers/mariadb.sh), killed, restarted, hung and resumed while
//! requests flow. It must answer 503 within 2 s each time, never panic, and
//! serve again within 5 s of the database coming back, in the same process.
//! The background cleanup must outlive the outage too.
//!
//! One test function, because the steps share one server. It ends with the
//! outage drill every networked engine goes through
//! ([`cloakroom_tests::fault::drill`]: a clean stop, 503s, a restart, and
//! nothing acknowledged lost).

use std::time::{Duration, Instant};

use cloakroom::Engine;
use cloakroom_core::record::Data;
use cloakroom_core::{Id, Record, SessionStore};
use cloakroom_sql::SqlStore;
use cloakroom_tests::fault::{Restart, Server, all_unavailable, drill, flood, recovers_within};
use cloakroom_tests::required_env;
use http::StatusCode;
use time::OffsetDateTime;

fn expired_record() -> Record {
    Record::new(
        Data::new(),
        OffsetDateTime::now_utc() - Duration::from_secs(5),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopped_and_hung_mariadb_give_503_then_recover() {
    let url = required_env("CLOAKROOM_MARIADB_FAULT_URL");
    let store = SqlStore::builder(url.as_str())
        .with_table(format!("fault_{}", std::process::id()))
        .with_pool_size(4)
        .build()
        .expect("store");
    store.migrate().await.expect("migrate");
    let cleanup = store.spawn_cleanup(Duration::from_millis(200));
    let (mut client, _, _) = cloakroom_tests::cases::setup(Engine::store(store.clone()), |l| l);
    assert_eq!(client.get("/set/a/1").await.status, StatusCode::OK);
    assert_eq!(client.get("/get/a").await.body, "1");

    // Should an assertion fail while the server is down, the next test
    // binary still finds it up.
    let server = Server::from_env("MARIADB_FAULT");
    let restart = Restart(&server);

    // Requests are in flight when the server dies.
    let flooding = {
        let client = client.replay();
        tokio::spawn(async move { flood(&client, "/get/a", Duration::from_millis(1500)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill().await;
    flooding.await.expect("flood during the kill");
    // Now it is certainly down: every answer is a 503.
    all_unavailable(&flood(&client, "/get/a", Duration::from_millis(1500)).await);
    // The store itself says why, within its own bound.
    let started = Instant::now();
    let err = store
        .load(&Id::generate().expect("id").store_key())
        .await
        .expect_err("the database is down");
    assert!(err.is_unavailable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    let restarted = Instant::now();
    server.start();
    let limit = Duration::from_secs(5).saturating_sub(restarted.elapsed());
    recovers_within(&mut client, "/get/a", limit, Some("1")).await;
    assert_eq!(client.get("/set/a/again").await.status, StatusCode::OK);

    // The cleanup task kept going through the outage.
    for _ in 0..3 {
        let key = Id::generate().expect("id").store_key();
        assert!(store.create(&key, &expired_record()).await.expect("create"));
    }
    // The client's session is the one live row; the task must take the
    // three expired ones away.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let rows = count_rows(&url, store.table()).await;
        if rows == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cleanup task stopped after the outage ({rows} rows left)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(cleanup);

    // A server that hangs instead of refusing: only timeouts bound this.
    let paused = server.pause().await;
    all_unavailable(&flood(&client, "/get/a", Duration::from_millis(2500)).await);
    drop(paused);
    recovers_within(&mut client, "/get/a", Duration::from_secs(5), Some("again")).await;

    // And the common drill, with a clean shutdown this time.
    let report = drill(&mut client, &server, Duration::from_secs(2), true).await;
    assert!(report.requests > 0);
    drop(restart);
}

/// PostgreSQL through the common drill: stopped (fast shutdown) while
/// requests flow, every answer a 503 within 2 s, back within 5 s of the
/// restart, and the write acknowledged before the outage kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopped_postgres_gives_503_then_recovers() {
    let url = required_env("CLOAKROOM_POSTGRES_FAULT_URL");
    let store = SqlStore::builder(url.as_str())
        .with_table(format!("fault_{}", std::process::id()))
        .with_pool_size(4)
        .build()
        .expect("store");
    store.migrate().await.expect("migrate");
    let (mut client, _, _) = cloakroom_tests::cases::setup(Engine::store(store), |l| l);
    let server = Server::from_env("POSTGRES_FAULT");
    let report = drill(&mut client, &server, Duration::from_secs(3), true).await;
    assert!(report.requests > 0);
}

/// Rows in the table, counted over a connection of its own.
async fn count_rows(url: &str, table: &str) -> i64 {
    let pool = sqlx::MySqlPool::connect(url).await.expect("raw connection");
    let n = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&pool)
        .await
        .expect("count");
    pool.close().await;
    n
}
