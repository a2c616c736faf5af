//! The `cached_db` engine: the SQL store on the private MariaDB behind the
//! moka write-through cache (`CachedStore`).
//!
//! * the conformance suite, and the store-level contract cases, also with
//!   the test probe in front of the cache and between it and the database;
//! * reads after the first one do not query the database;
//! * two "processes" (two layers, each with its own pool and cache) over one
//!   database: a logout through one reaches the other within the local TTL,
//!   never before the database has it;
//! * two real processes (this test binary started again as process B): a
//!   change made through one reaches the other within the local TTL even
//!   while the other keeps touching the session, and its touches never
//!   revert the change;
//! * the database down with a warm cache: reads are served from the cache,
//!   writes get 503, never a cached-only success; recovery after restart.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use cloakroom::memory::CachedStore;
use cloakroom::{Engine, SessionLayer, SessionStore};
use cloakroom_core::record::{Data, from_millis, millis};
use cloakroom_core::{Id, Record, StoreKey};
use cloakroom_sql::SqlStore;
use cloakroom_tests::app::Gate;
use cloakroom_tests::client::Client;
use cloakroom_tests::fault::{Restart, Server};
use cloakroom_tests::probe::Probe;
use cloakroom_tests::{contract, required_env};
use http::StatusCode;
use time::OffsetDateTime;

fn unique_table() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "cdb_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A migrated SQL store on its own table of the database at `var`'s URL.
async fn database(var: &str, table: &str) -> SqlStore {
    let url = required_env(var);
    let store = SqlStore::builder(&url)
        .with_table(table)
        .with_pool_size(4)
        .build()
        .expect("a SQL store");
    store.migrate().await.expect("migrate");
    store
}

fn cached(db: Arc<dyn SessionStore>, ttl: Duration) -> CachedStore {
    CachedStore::new(db, 10_000, ttl)
}

async fn engine() -> Engine {
    let db = database("CLOAKROOM_MARIADB_URL", &unique_table()).await;
    Engine::store(cached(Arc::new(db), Duration::from_secs(5)))
}

cloakroom_tests::conformance_suite!(engine);

/// The store-level contract on the cache over MariaDB. Whether a session is
/// held is asked of the database and of the cache: a delete racing an
/// update must leave it in neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_contract() {
    let db: Arc<dyn SessionStore> =
        Arc::new(database("CLOAKROOM_MARIADB_URL", &unique_table()).await);
    let store = cached(Arc::clone(&db), Duration::from_secs(60));
    contract::calls_stay_small(&store);
    contract::every_operation_written_through(&store, &*db).await;
    contract::create_never_overwrites(&store).await;
    let (db, cache) = (&db, &store);
    let held = |key| async move {
        db.load(&key).await.expect("load").is_some()
            || cache.load(&key).await.expect("load").is_some()
    };
    contract::deleted_sessions_stay_deleted(&store, held, 30).await;
}

/// The store-level contract with the probe on either side of the cache:
/// in front of it, the probe forwards every call; behind it, every call the
/// cache cannot answer from its copy reaches the database, as itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_contract_through_probe() {
    let db: Arc<dyn SessionStore> =
        Arc::new(database("CLOAKROOM_MARIADB_URL", &unique_table()).await);
    let store: Arc<dyn SessionStore> = Arc::new(cached(Arc::clone(&db), Duration::from_secs(60)));
    let (probe, counts) = Probe::over(Arc::clone(&store));
    contract::every_operation_written_through(&probe, &*db).await;
    contract::create_never_overwrites(&probe).await;
    let (db, cache) = (&db, &store);
    let held = |key| async move {
        db.load(&key).await.expect("load").is_some()
            || cache.load(&key).await.expect("load").is_some()
    };
    contract::deleted_sessions_stay_deleted(&probe, held, 10).await;
    contract::all_five_called(&counts);
    contract::each_call_reaches(&probe, &counts).await;

    let (probe, counts) = Probe::over(Arc::clone(db));
    let store = cached(Arc::new(probe), Duration::from_secs(60));
    contract::every_operation(&store).await;
    contract::create_never_overwrites(&store).await;
    contract::all_five_called(&counts);
    contract::each_call_reaches(&store, &counts).await;
}

fn client(engine: Engine) -> Client {
    Client::new(SessionLayer::new(engine), Arc::new(Gate::default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_the_first_do_not_query_the_database() {
    let table = unique_table();
    let (db, counts) = Probe::wrap(Engine::store(
        database("CLOAKROOM_MARIADB_URL", &table).await,
    ));
    let Engine::Store(db) = db else {
        unreachable!("a store")
    };
    let mut writer = client(Engine::store(cached(
        Arc::clone(&db),
        Duration::from_secs(60),
    )));
    assert_eq!(writer.get("/set/a/1").await.status, StatusCode::OK);
    // The write went through to the database and filled the cache.
    let before = counts.snapshot();
    assert_eq!(before.create, 1);
    for _ in 0..5 {
        assert_eq!(writer.get("/get/a").await.body, "1");
    }
    assert_eq!(
        counts.snapshot().load,
        before.load,
        "a cached read queried the database"
    );

    // A cold process reads from the database once, then from its cache.
    let mut cold = client(Engine::store(cached(db, Duration::from_secs(60))));
    cold.jar = writer.jar.clone();
    for _ in 0..5 {
        assert_eq!(cold.get("/get/a").await.body, "1");
    }
    assert_eq!(counts.snapshot().load, before.load + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_in_one_process_reaches_the_other_within_the_local_ttl() {
    let table = unique_table();
    let ttl = Duration::from_millis(1000);
    // Two processes: each its own pool and its own cache, one database.
    let a = database("CLOAKROOM_MARIADB_URL", &table).await;
    let b = database("CLOAKROOM_MARIADB_URL", &table).await;
    let mut one = client(Engine::store(cached(Arc::new(a), ttl)));
    let mut two = client(Engine::store(cached(Arc::new(b), ttl)));
    assert_eq!(one.get("/set/user/ada").await.status, StatusCode::OK);
    two.jar = one.jar.clone();
    // Process two has it cached now.
    assert_eq!(two.get("/get/user").await.body, "ada");

    let logout = one.get("/flush").await;
    assert_eq!(logout.status, StatusCode::OK);
    let logged_out = Instant::now();
    // Process one evicted at once.
    let mut replay = one.replay();
    replay.jar = two.jar.clone();
    assert_eq!(replay.get("/get/user").await.body, "none");
    // Process two may serve its copy until the local TTL ends, not longer.
    loop {
        let body = two.get("/get/user").await.body;
        if body == "none" {
            break;
        }
        assert_eq!(body, "ada");
        assert!(
            logged_out.elapsed() <= ttl + Duration::from_millis(300),
            "process two still served the session {:?} after the logout",
            logged_out.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_with_a_warm_cache() {
    let server = Server::from_env("MARIADB_FAULT");
    let db = database("CLOAKROOM_MARIADB_FAULT_URL", &unique_table()).await;
    let mut c = client(Engine::store(cached(Arc::new(db), Duration::from_secs(60))));
    assert_eq!(c.get("/set/user/ada").await.status, StatusCode::OK);
    assert_eq!(c.get("/get/user").await.body, "ada");

    let restart = Restart(&server);
    server.stop();
    // Documented: reads of sessions this process has cached keep working.
    let reply = c.get("/get/user").await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "ada"));
    // Writes never succeed in the cache alone.
    let sent = Instant::now();
    let reply = c.get("/set/user/mallory").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert!(
        sent.elapsed() <= Duration::from_secs(2),
        "took {:?}",
        sent.elapsed()
    );
    // The failed write evicted the copy: the session is not served as
    // "mallory", nor as a stale "ada" the database may no longer agree with.
    assert_eq!(
        c.get("/get/user").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let mut fresh = c.replay();
    fresh.jar.clear();
    assert_eq!(
        fresh.get("/set/x/1").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    drop(restart);
    let restarted = Instant::now();
    loop {
        let reply = c.get("/get/user").await;
        if reply.status == StatusCode::OK {
            assert_eq!(reply.body, "ada", "the database kept what it acknowledged");
            break;
        }
        assert!(
            restarted.elapsed() <= Duration::from_secs(5),
            "no recovery: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn chosen_by_settings() {
    let url = required_env("CLOAKROOM_MARIADB_URL");
    let settings = cloakroom_core::config::from_pairs([
        (
            "SESSION_ENGINE",
            "django.contrib.sessions.backends.cached_db",
        ),
        ("SESSION_DATABASE_URL", url.as_str()),
        ("SESSION_CACHED_DB_TTL_MS", "2500"),
    ]);
    let layer = SessionLayer::from_settings(&settings).expect("a cached_db layer");
    assert_eq!(layer.engine().name(), "cached_db");
    let bad = cloakroom_core::config::from_pairs([
        ("SESSION_ENGINE", "cached_db"),
        ("SESSION_DATABASE_URL", url.as_str()),
        ("SESSION_CACHED_DB_TTL_MS", "0"),
    ]);
    let err = SessionLayer::from_settings(&bad).expect_err("a zero TTL");
    assert!(
        err.to_string().contains("SESSION_CACHED_DB_TTL_MS"),
        "{err}"
    );
}

/// The variables that turn [`process_b`] into the second process of
/// [`a_change_in_one_process_reaches_another_that_keeps_touching`].
const CHILD_TABLE: &str = "CLOAKROOM_CACHED_DB_CHILD_TABLE";
const CHILD_TTL_MS: &str = "CLOAKROOM_CACHED_DB_CHILD_TTL_MS";
/// Marks the lines of process B's answers on its stdout, which it shares
/// with the test harness's own output.
const ANSWER: &str = "b> ";

/// Process B of the two-process test: does nothing (and passes) in a normal
/// run; started by that test as a child (this same test binary, `--exact
/// process_b`, with [`CHILD_TABLE`] set) it opens its own pool and its own
/// `CachedStore` on the MariaDB table and serves one command a line on stdin
/// until stdin closes: `load <key hex>` answers `b> some <value of "v">` or
/// `b> none`; `touch <key hex> <deadline ms>` touches the record its last
/// load of the key gave (as the layer touches the session as loaded) and
/// answers `b> true` or `b> false`; a failure answers `b> err <message>`.
#[test]
fn process_b() {
    let Ok(table) = std::env::var(CHILD_TABLE) else {
        return;
    };
    let ttl = Duration::from_millis(
        required_env(CHILD_TTL_MS)
            .parse()
            .expect("a TTL in milliseconds"),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let store = cached(
            Arc::new(database("CLOAKROOM_MARIADB_URL", &table).await),
            ttl,
        );
        let mut out = std::io::stdout();
        // The record each key's last load gave, for the touch after it.
        let mut loaded: HashMap<String, Record> = HashMap::new();
        for line in std::io::stdin().lines() {
            let line = line.expect("a command");
            let words: Vec<&str> = line.split_whitespace().collect();
            let key = |hex: &str| StoreKey::from_hex(hex).expect("a key in hex");
            let answer = match words.as_slice() {
                ["load", key_hex] => match store.load(&key(key_hex)).await {
                    Ok(Some(record)) => {
                        let answer = format!("some {}", record.data["v"]);
                        loaded.insert((*key_hex).to_owned(), record);
                        answer
                    }
                    Ok(None) => {
                        loaded.remove(*key_hex);
                        "none".to_owned()
                    }
                    Err(e) => format!("err {e}"),
                },
                ["touch", key_hex, ms] => {
                    let at = from_millis(ms.parse().expect("milliseconds")).expect("a deadline");
                    // Nothing loaded: a record of no data, which the
                    // database does not look at anyway.
                    let record = Record {
                        expires_at: at,
                        ..loaded
                            .get(*key_hex)
                            .cloned()
                            .unwrap_or_else(|| Record::new(Data::new(), at))
                    };
                    match store.touch(&key(key_hex), &record).await {
                        Ok(touched) => touched.to_string(),
                        Err(e) => format!("err {e}"),
                    }
                }
                _ => panic!("process B: unknown command {line:?}"),
            };
            writeln!(out, "{ANSWER}{answer}").expect("stdout");
            out.flush().expect("stdout");
        }
    });
}

/// Process B as the test sees it: a child process with its own pool and its
/// own cache, asked over its stdin; a thread passes on its answers. Killed
/// when dropped.
struct ProcessB {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
}

impl ProcessB {
    fn start(table: &str, ttl: Duration) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", "process_b", "--nocapture", "--test-threads", "1"])
            .env(CHILD_TABLE, table)
            .env(CHILD_TTL_MS, ttl.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("process B");
        let stdin = child.stdin.take().expect("B's stdin");
        let stdout = BufReader::new(child.stdout.take().expect("B's stdout"));
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                // The harness may have started the line ("test process_b ...").
                if let Some((_, answer)) = line.split_once(ANSWER)
                    && tx.send(answer.to_owned()).is_err()
                {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            answers,
        }
    }

    /// Sends one command and waits for its answer.
    fn ask(&mut self, command: &str) -> String {
        tokio::task::block_in_place(|| {
            writeln!(self.stdin, "{command}").expect("B's stdin");
            self.stdin.flush().expect("B's stdin");
            self.answers
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("process B did not answer {command:?}: {e}"))
        })
    }

    /// One request for the session in B, as a page whose idle timeout is
    /// refreshed makes: a load, then a touch to an hour from now. Returns
    /// what the load saw and what the touch answered.
    fn request(&mut self, key: &StoreKey) -> (String, String) {
        let loaded = self.ask(&format!("load {}", key.hex()));
        let deadline = millis(OffsetDateTime::now_utc() + time::Duration::hours(1));
        let touched = self.ask(&format!("touch {} {deadline}", key.hex()));
        (loaded, touched)
    }
}

impl Drop for ProcessB {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn session(v: &str) -> Record {
    let mut data = Data::new();
    data.insert("v".into(), serde_json::json!(v));
    Record::new(data, OffsetDateTime::now_utc() + time::Duration::hours(1))
}

/// Process A and process B (a second OS process: this test binary started
/// again as [`process_b`]) each hold their own pool and their own cache over
/// one MariaDB table. B keeps serving requests for the session, a load and a
/// touch every ~100 ms, far more often than its local TTL; A changes the
/// session (an update, then, for a second session, a delete = logout). B
/// must see the change within the local TTL of its last read from the
/// database (plus a margin for a loaded machine), however often it touches,
/// and its later touches must not bring the old session back, neither in
/// its cache nor in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_in_one_process_reaches_another_that_keeps_touching() {
    let table = unique_table();
    let ttl = Duration::from_millis(500);
    let bound = ttl + Duration::from_millis(300);
    let period = Duration::from_millis(100);
    let db = Arc::new(database("CLOAKROOM_MARIADB_URL", &table).await);
    let a = cached(Arc::clone(&db) as Arc<dyn SessionStore>, ttl);
    let mut b = ProcessB::start(&table, ttl);
    let in_db = |key: StoreKey| {
        let db = Arc::clone(&db);
        async move {
            db.load(&key)
                .await
                .expect("load")
                .map(|r| r.data["v"].to_string())
        }
    };

    // Round 1: A updates the session (a role dropped, a project switched).
    let key = Id::generate().expect("an id").store_key();
    assert!(a.create(&key, &session("ada")).await.expect("create"));
    // B has it cached now, and keeps it warm for a while.
    for _ in 0..3 {
        let request = b.request(&key);
        assert_eq!(request, ("some \"ada\"".into(), "true".into()));
        tokio::time::sleep(period).await;
    }
    let mut changed = session("grace");
    changed.expires_at = OffsetDateTime::now_utc() + time::Duration::hours(2);
    assert!(a.update(&key, &changed).await.expect("update"));
    let updated = Instant::now();
    loop {
        let (loaded, touched) = b.request(&key);
        assert_eq!(touched, "true");
        if loaded == "some \"grace\"" {
            break;
        }
        assert_eq!(loaded, "some \"ada\"");
        assert!(
            updated.elapsed() <= bound,
            "process B still served the old session {:?} after process A updated it \
             (local TTL {ttl:?})",
            updated.elapsed()
        );
        tokio::time::sleep(period).await;
    }
    // B's later requests neither revert the change nor serve the old copy.
    for _ in 0..(2 * ttl.as_millis() / period.as_millis()) {
        assert_eq!(b.request(&key), ("some \"grace\"".into(), "true".into()));
        assert_eq!(in_db(key).await.as_deref(), Some("\"grace\""));
        tokio::time::sleep(period).await;
    }

    // Round 2: A logs the session out.
    let key = Id::generate().expect("an id").store_key();
    assert!(a.create(&key, &session("ada")).await.expect("create"));
    for _ in 0..3 {
        assert_eq!(b.request(&key), ("some \"ada\"".into(), "true".into()));
        tokio::time::sleep(period).await;
    }
    a.delete(&key).await.expect("delete");
    let deleted = Instant::now();
    loop {
        let (loaded, _) = b.request(&key);
        if loaded == "none" {
            break;
        }
        assert_eq!(loaded, "some \"ada\"");
        assert!(
            deleted.elapsed() <= bound,
            "process B still served the session {:?} after process A logged it out \
             (local TTL {ttl:?})",
            deleted.elapsed()
        );
        tokio::time::sleep(period).await;
    }
    for _ in 0..(2 * ttl.as_millis() / period.as_millis()) {
        assert_eq!(b.request(&key), ("none".into(), "false".into()));
        assert_eq!(in_db(key).await, None, "a touch brought the session back");
        tokio::time::sleep(period).await;
    }
}
