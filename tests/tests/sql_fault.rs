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

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cloakroom::Engine;
use cloakroom_core::record::Data;
use cloakroom_core::{Id, Record, SessionStore};
use cloakroom_sql::SqlStore;
use cloakroom_tests::client::Client;
use cloakroom_tests::fault::{Restart, Server, drill};
use cloakroom_tests::required_env;
use http::StatusCode;
use time::OffsetDateTime;

fn pid() -> String {
    let file = required_env("CLOAKROOM_MARIADB_FAULT_PIDFILE");
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("read {file}: {e}"))
        .trim()
        .to_owned()
}

fn signal(sig: &str, pid: &str) -> bool {
    Command::new("kill")
        .args([sig, pid])
        .status()
        .expect("run kill")
        .success()
}

/// Waits until every thread of `pid` is stopped: SIGSTOP reaches the threads
/// of a multi-threaded server one by one, and one still running can answer a
/// request or two after `kill` returns.
async fn wait_stopped(pid: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("list the threads");
        let all_stopped = tasks.filter_map(Result::ok).all(|t| {
            std::fs::read_to_string(t.path().join("stat"))
                // The state follows the parenthesized command name.
                .map(|stat| {
                    stat.rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('T'))
                })
                .unwrap_or(true)
        });
        if all_stopped {
            return;
        }
        assert!(Instant::now() < deadline, "mariadbd {pid} did not stop");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Resumes a stopped (SIGSTOP) server even when the test fails, so the run's
/// cleanup can stop it.
struct Continue(String);
impl Drop for Continue {
    fn drop(&mut self) {
        signal("-CONT", &self.0);
    }
}

/// Sends `/get/a` from several clients at once for `for_how_long`; every
/// answer must come within 2 s. Returns the statuses seen.
async fn flood(client: &Client, for_how_long: Duration) -> Vec<StatusCode> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut client = client.replay();
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let reply = client.get("/get/a").await;
                let took = started.elapsed();
                assert!(
                    took < Duration::from_secs(2),
                    "an answer took {took:?}: {reply:?}"
                );
                seen.push(reply.status);
            }
            seen
        }));
    }
    tokio::time::sleep(for_how_long).await;
    stop.store(true, Ordering::SeqCst);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("a flooding client panicked"));
    }
    all
}

/// Waits until `/get/a` answers 200 again, at most `limit`, then checks that
/// writes work too.
async fn recovers_within(client: &mut Client, limit: Duration) {
    let started = Instant::now();
    loop {
        let reply = client.get("/get/a").await;
        if reply.status == StatusCode::OK {
            break;
        }
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
        assert!(started.elapsed() < limit, "no recovery within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client.get("/set/a/again").await.status, StatusCode::OK);
    assert_eq!(client.get("/get/a").await.body, "again");
}

fn expired_record() -> Record {
    Record::new(
        Data::new(),
        OffsetDateTime::now_utc() - Duration::from_secs(5),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopped_and_hung_mariadb_give_503_then_recover() {
    let url = required_env("CLOAKROOM_MARIADB_FAULT_URL");
    let start = required_env("CLOAKROOM_MARIADB_FAULT_START");
    let store = SqlStore::builder(url.as_str())
        .table(format!("fault_{}", std::process::id()))
        .pool_size(4)
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
    let before = pid();
    let flooding = {
        let client = client.replay();
        tokio::spawn(async move { flood(&client, Duration::from_millis(1500)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(signal("-KILL", &before), "kill mariadbd {before}");
    while signal("-0", &before) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    flooding.await.expect("flood during the kill");
    // Now it is certainly down: every answer is a 503.
    let statuses = flood(&client, Duration::from_millis(1500)).await;
    assert!(!statuses.is_empty());
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
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
    let ok = Command::new(&start).status().expect("run the start script");
    assert!(ok.success(), "{start} failed");
    recovers_within(
        &mut client,
        Duration::from_secs(5).saturating_sub(restarted.elapsed()),
    )
    .await;

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
    let hung = pid();
    assert!(signal("-STOP", &hung));
    let guard = Continue(hung.clone());
    wait_stopped(&hung).await;
    let statuses = flood(&client, Duration::from_millis(2500)).await;
    assert!(!statuses.is_empty());
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    drop(guard);
    recovers_within(&mut client, Duration::from_secs(5)).await;

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
        .table(format!("fault_{}", std::process::id()))
        .pool_size(4)
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
