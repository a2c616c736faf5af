//! The memcached engine's own cases, against real servers that `tests/run`
//! starts (tests/servers/memcached.sh), all with memcached's default 1 MiB
//! item size limit:
//!
//! * store-level cases on one server (`CLOAKROOM_MEMCACHED_URL`): every
//!   operation as the contract has it, on the store and through the test
//!   probe; a session over the item limit is an error, not a silent loss; a
//!   40-day expiry is sent as an absolute time and honoured; a past deadline
//!   never becomes "never expires"; updates and touches never bring back a
//!   deleted session; touched deadlines are exact; a touch of a session
//!   loaded in the request is one `cas` (counted by memcached's `stats
//!   detail`), and one that meets a newer version keeps the newer data;
//! * `sessions_land_on_both_servers` on two (`CLOAKROOM_MEMCACHED_PAIR_URL`);
//! * `one_server_down_fails_only_its_sessions`: two servers of its own
//!   (`CLOAKROOM_MEMCACHED_FAULT_*`), one of which it stops, hangs and
//!   restarts while the other keeps serving.
//!
//! What the store wrote is checked with plain text-protocol requests
//! (`get`, `lru_crawler metadump all`, `stats detail dump`) on a connection
//! of the test's own.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cloakroom::{Engine, ErrorKind, Session};
use cloakroom_core::record::{Data, from_millis, millis};
use cloakroom_core::{Id, Record, SessionStore, StoreKey};
use cloakroom_memcached::{MemcachedError, MemcachedOptions, MemcachedStore};
use cloakroom_tests::client::Client;
use cloakroom_tests::probe::Probe;
use cloakroom_tests::{contract, required_env};
use http::StatusCode;
use serde_json::json;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A key prefix that no other test in this run uses.
fn unique_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "engine:{}:{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn store(url: &str, prefix: &str) -> MemcachedStore {
    MemcachedOptions::from_url(url)
        .and_then(|o| o.with_key_prefix(prefix).build())
        .unwrap_or_else(|e| panic!("a store for {url}: {e}"))
}

/// A store on the main server with a prefix of its own.
fn single() -> MemcachedStore {
    store(&required_env("CLOAKROOM_MEMCACHED_URL"), &unique_prefix())
}

/// `host:port` of the first server in a `memcached://` URL.
fn first_server(url: &str) -> String {
    url.trim_start_matches("memcached://")
        .split(',')
        .next()
        .expect("a server")
        .to_owned()
}

fn new_key() -> StoreKey {
    Id::generate().expect("OS randomness").store_key()
}

fn record(value: &str, ttl: time::Duration) -> Record {
    let mut data = Data::new();
    data.insert("v".into(), json!(value));
    Record::new(data, OffsetDateTime::now_utc() + ttl)
}

fn value_of(record: &Record) -> &serde_json::Value {
    &record.data["v"]
}

/// `offset` from now, in whole milliseconds, as the store keeps deadlines.
fn in_ms(offset: time::Duration) -> OffsetDateTime {
    from_millis(millis(OffsetDateTime::now_utc() + offset)).expect("a deadline near now")
}

/// `loaded` as a touch gets it: the data and version of the load, the new
/// deadline `at`.
fn deadline_of(loaded: Record, at: OffsetDateTime) -> Record {
    Record {
        expires_at: at,
        ..loaded
    }
}

/// Sends one text-protocol command on a fresh connection and reads the reply
/// up to and including the line `last` (or a line starting with `ERROR` or
/// `CLIENT_ERROR`).
async fn raw(server: &str, command: &str, last: &str) -> String {
    let mut conn = TcpStream::connect(server)
        .await
        .unwrap_or_else(|e| panic!("connect to {server}: {e}"));
    conn.write_all(command.as_bytes()).await.expect("send");
    let mut reply = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = tokio::time::timeout_at(deadline.into(), conn.read(&mut buf))
            .await
            .expect("a reply within 10 s")
            .expect("read");
        assert!(n > 0, "{server} closed the connection");
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        let done = text.ends_with(&format!("{last}\r\n"))
            || text.starts_with("ERROR")
            || text.starts_with("CLIENT_ERROR")
            || text.starts_with("BUSY");
        if done {
            return text.into_owned();
        }
    }
}

/// Whether `server` holds an item under `key`.
async fn holds(server: &str, key: &str) -> bool {
    let reply = raw(server, &format!("get {key}\r\n"), "END").await;
    reply.starts_with("VALUE ")
}

/// The exptime (absolute Unix time, -1 for never) of every item on `server`
/// whose key starts with `prefix`, from `lru_crawler metadump all`.
async fn exptimes(server: &str, prefix: &str) -> Vec<(String, i64)> {
    let reply = loop {
        let reply = raw(server, "lru_crawler metadump all\r\n", "END").await;
        // Another metadump (a parallel test) is still running.
        if !reply.starts_with("BUSY") {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut found = Vec::new();
    for line in reply.lines() {
        let mut key = None;
        let mut exp = None;
        for field in line.split(' ') {
            if let Some(k) = field.strip_prefix("key=") {
                key = Some(percent_decode(k));
            } else if let Some(e) = field.strip_prefix("exp=") {
                exp = e.parse::<i64>().ok();
            }
        }
        if let (Some(key), Some(exp)) = (key, exp)
            && key.starts_with(prefix)
        {
            found.push((key, exp));
        }
    }
    found
}

/// metadump writes keys URL-encoded (`:` as `%3A`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn kind(err: &cloakroom_core::Error) -> ErrorKind {
    err.kind()
}

/// A 2 MiB session on a server with the default 1 MiB item limit: `create`
/// and `update` both fail with `TooLarge` (the server's refusal is read, not
/// assumed away), nothing is half stored, the old session survives, and the
/// store keeps working. Over HTTP the save is a 500, and no cookie is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_over_the_item_limit_is_an_error_not_a_silent_loss() {
    let store = single();
    let big = "x".repeat(2 * 1024 * 1024);
    let hour = time::Duration::hours(1);

    let key = new_key();
    let err = store
        .create(&key, &record(&big, hour))
        .await
        .expect_err("a 2 MiB session must not be reported stored");
    assert_eq!(kind(&err), ErrorKind::TooLarge, "{err}");
    let source = std::error::Error::source(&err).expect("a source");
    assert!(
        matches!(
            source.downcast_ref::<MemcachedError>(),
            Some(MemcachedError::TooLarge { size, .. }) if *size > 2 * 1024 * 1024
        ),
        "{source}"
    );
    assert!(store.load(&key).await.expect("load").is_none());

    // The same pool keeps working after the refused value.
    assert!(
        store
            .create(&key, &record("small", hour))
            .await
            .expect("create")
    );
    let err = store
        .update(&key, &record(&big, hour))
        .await
        .expect_err("a 2 MiB update must not be reported stored");
    assert_eq!(kind(&err), ErrorKind::TooLarge, "{err}");
    let kept = store
        .load(&key)
        .await
        .expect("load")
        .expect("the old session");
    assert_eq!(value_of(&kept), "small");
    assert!(
        store
            .update(&key, &record("still", hour))
            .await
            .expect("update")
    );
    let kept = store.load(&key).await.expect("load").expect("the session");
    assert_eq!(value_of(&kept), "still");

    // Over HTTP.
    let app = axum::Router::new()
        .route(
            "/big",
            axum::routing::get(|s: Session| async move {
                s.insert("blob", "x".repeat(2 * 1024 * 1024))
                    .await
                    .map(|()| "stored")
            }),
        )
        .layer(cloakroom::SessionLayer::new(Engine::store(single())));
    let mut client = Client::of(app);
    let reply = client.get("/big").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{reply:?}");
    assert!(reply.body.contains("too large"), "{reply:?}");
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
}

/// An expiry of 40 days is past memcached's 30-day limit for relative times:
/// it must be sent as an absolute Unix time (else memcached reads it as a
/// date in 1970 and drops the session at once). The item's exptime is checked
/// on the server, and the session is still there with its exact deadline. A
/// touch to 45 days moves both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forty_day_expiry_is_set_and_honoured() {
    let url = required_env("CLOAKROOM_MEMCACHED_URL");
    let server = first_server(&url);
    let prefix = unique_prefix();
    let store = store(&url, &prefix);
    let key = new_key();
    let session = record("long", time::Duration::days(40));
    assert!(store.create(&key, &session).await.expect("create"));

    let loaded = store.load(&key).await.expect("load").expect("the session");
    assert_eq!(loaded.expires_at_millis(), session.expires_at_millis());
    let dump = exptimes(&server, &prefix).await;
    let memcached_key = store.memcached_key(&key);
    let exp = dump
        .iter()
        .find(|(k, _)| *k == memcached_key)
        .map(|&(_, e)| e)
        .unwrap_or_else(|| panic!("{memcached_key} not in the metadump: {dump:?}"));
    let deadline = session.expires_at.unix_timestamp();
    assert!(
        (deadline..=deadline + 2).contains(&exp),
        "exptime {exp}, deadline {deadline}"
    );

    let later = OffsetDateTime::now_utc() + time::Duration::days(45);
    assert!(
        store
            .touch(&key, &deadline_of(loaded, later))
            .await
            .expect("touch")
    );
    let loaded = store.load(&key).await.expect("load").expect("the session");
    assert_eq!(
        loaded.expires_at_millis(),
        Record::new(Data::new(), later).expires_at_millis()
    );
    assert_eq!(value_of(&loaded), "long");
    let dump = exptimes(&server, &prefix).await;
    let target = later.unix_timestamp();
    for (k, exp) in &dump {
        assert!(
            (target..=target + 2).contains(exp),
            "{k}: exptime {exp}, touched to {target}"
        );
    }
    assert_eq!(
        dump.len(),
        1,
        "the session alone, its deadline inside it: {dump:?}"
    );
}

/// A deadline that has already passed never reaches memcached as 0 ("never
/// expires"): creating such a session stores nothing, and updating or
/// touching a session to it ends the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_past_deadline_never_becomes_never_expiring() {
    let url = required_env("CLOAKROOM_MEMCACHED_URL");
    let server = first_server(&url);
    let prefix = unique_prefix();
    let store = store(&url, &prefix);
    let past = time::Duration::seconds(-5);

    let key = new_key();
    assert!(
        store
            .create(&key, &record("gone", past))
            .await
            .expect("create")
    );
    assert!(!holds(&server, &store.memcached_key(&key)).await);

    let key = new_key();
    let hour = time::Duration::hours(1);
    assert!(
        store
            .create(&key, &record("live", hour))
            .await
            .expect("create")
    );
    assert!(
        store
            .update(&key, &record("ended", past))
            .await
            .expect("update")
    );
    assert!(store.load(&key).await.expect("load").is_none());
    assert!(!holds(&server, &store.memcached_key(&key)).await);

    let key = new_key();
    assert!(
        store
            .create(&key, &record("live", hour))
            .await
            .expect("create")
    );
    let loaded = store.load(&key).await.expect("load").expect("the session");
    let then = OffsetDateTime::now_utc() - time::Duration::seconds(1);
    assert!(
        store
            .touch(&key, &deadline_of(loaded, then))
            .await
            .expect("touch")
    );
    assert!(store.load(&key).await.expect("load").is_none());
    assert!(
        exptimes(&server, &prefix).await.is_empty(),
        "an item is left"
    );
}

/// Every operation does what the contract says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_contract() {
    contract::every_operation(&single()).await;
}

/// The contract cases through the test probe, which must forward every
/// call, as itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_contract_through_probe() {
    let url = required_env("CLOAKROOM_MEMCACHED_URL");
    let server = &first_server(&url);
    let store = Arc::new(store(&url, &unique_prefix()));
    let (probe, counts) = Probe::over(Arc::clone(&store) as Arc<dyn SessionStore>);
    contract::every_operation(&probe).await;
    contract::create_never_overwrites(&probe).await;
    let held = |key| {
        let item = store.memcached_key(&key);
        async move { holds(server, &item).await }
    };
    contract::deleted_sessions_stay_deleted(&probe, held, 10).await;
    contract::all_five_called(&counts);
    contract::each_call_reaches(&probe, &counts).await;
}

/// `create` never overwrites; a logout between a request's load and its
/// save is not undone by the save, whether it is an update or a touch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_after_a_concurrent_delete_does_not_recreate() {
    let url = required_env("CLOAKROOM_MEMCACHED_URL");
    let server = &first_server(&url);
    let store = store(&url, &unique_prefix());
    contract::calls_stay_small(&store);
    contract::create_never_overwrites(&store).await;
    let held = |key| {
        let item = store.memcached_key(&key);
        async move { holds(server, &item).await }
    };
    contract::deleted_sessions_stay_deleted(&store, held, 30).await;
}

/// `touch` moves the deadline to the millisecond without rewriting the
/// data; a short touched deadline is enforced on time; an update brings back
/// the deadline in its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touched_deadlines_are_exact_and_enforced() {
    let store = single();
    let key = new_key();
    assert!(
        store
            .create(&key, &record("data", time::Duration::seconds(60)))
            .await
            .expect("create")
    );

    let loaded = store.load(&key).await.expect("load").expect("the session");
    let moved = OffsetDateTime::now_utc() + time::Duration::milliseconds(7_200_123);
    assert!(
        store
            .touch(&key, &deadline_of(loaded, moved))
            .await
            .expect("touch")
    );
    let loaded = store.load(&key).await.expect("load").expect("the session");
    assert_eq!(
        loaded.expires_at_millis(),
        Record::new(Data::new(), moved).expires_at_millis()
    );
    assert_eq!(value_of(&loaded), "data");

    let rewritten = record("new", time::Duration::minutes(30));
    assert!(store.update(&key, &rewritten).await.expect("update"));
    let loaded = store.load(&key).await.expect("load").expect("the session");
    assert_eq!(loaded.expires_at_millis(), rewritten.expires_at_millis());

    let soon = OffsetDateTime::now_utc() + time::Duration::milliseconds(1200);
    assert!(
        store
            .touch(&key, &deadline_of(loaded, soon))
            .await
            .expect("touch")
    );
    assert!(store.load(&key).await.expect("load").is_some());
    tokio::time::sleep(Duration::from_millis(1400)).await;
    assert!(
        store.load(&key).await.expect("load").is_none(),
        "alive past its touched deadline"
    );
}

/// A key prefix that no other test uses and that is whole up to its first
/// `:`, where memcached ends the prefix it counts commands by (`stats
/// detail`), returned with that prefix's name.
fn counted_prefix() -> (String, String) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "counted{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    (format!("{name}:"), name)
}

/// The commands memcached has counted for the key prefix `name` since
/// `stats detail on`: reads (`get` and `gets`) and writes (`set`, `add`,
/// `cas`, whatever their answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Commands {
    reads: u64,
    writes: u64,
}

/// What `stats detail dump` on `server` reports for the prefix `name`
/// (nothing yet if it has never been used).
async fn commands(server: &str, name: &str) -> Commands {
    let dump = raw(server, "stats detail dump\r\n", "END").await;
    let mut counted = Commands::default();
    for line in dump.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(..2) != Some(&["PREFIX", name][..]) {
            continue;
        }
        let count = |label: &str| {
            fields
                .windows(2)
                .find(|pair| pair[0] == label)
                .and_then(|pair| pair[1].parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {label} count in {line:?}"))
        };
        counted = Commands {
            reads: count("get"),
            writes: count("set"),
        };
    }
    counted
}

/// A store on the main server whose commands memcached counts, with the
/// server and the prefix's name.
async fn counted_store() -> (MemcachedStore, String, String) {
    let url = required_env("CLOAKROOM_MEMCACHED_URL");
    let server = first_server(&url);
    // Per-prefix counters; turning them on again is harmless.
    assert_eq!(raw(&server, "stats detail on\r\n", "OK").await, "OK\r\n");
    let (prefix, name) = counted_prefix();
    (store(&url, &prefix), server, name)
}

/// The commands `work` sent for the prefix `name` on `server`.
async fn counted<T>(server: &str, name: &str, work: impl Future<Output = T>) -> (T, Commands) {
    let before = commands(server, name).await;
    let answer = work.await;
    let after = commands(server, name).await;
    let sent = Commands {
        reads: after.reads - before.reads,
        writes: after.writes - before.writes,
    };
    (answer, sent)
}

/// A touch of a session loaded in this request is one round trip: one
/// `cas` over the version of the load, no `gets`, as memcached itself
/// counts the commands. The deadline moves to the millisecond, data and
/// expiry policy stay. A record without a version is touched by `gets` and
/// `cas`, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touch_of_a_loaded_session_is_one_cas() {
    let (store, server, name) = counted_store().await;
    let key = new_key();
    let mut session = record("kept", time::Duration::minutes(5));
    session.expiry = Some(cloakroom_core::Expiry::OnInactivity(
        time::Duration::minutes(5),
    ));
    assert!(store.create(&key, &session).await.expect("create"));
    let loaded = store.load(&key).await.expect("load").expect("the session");
    assert!(loaded.version.is_some(), "load gave no version");

    let later = in_ms(time::Duration::milliseconds(3_600_321));
    let touch = deadline_of(loaded, later);
    let (touched, sent) = counted(&server, &name, store.touch(&key, &touch)).await;
    assert!(touched.expect("touch"));
    assert_eq!(
        sent,
        Commands {
            reads: 0,
            writes: 1
        },
        "a touch of a loaded session"
    );
    let after = store.load(&key).await.expect("load").expect("the session");
    assert_eq!(after, deadline_of(session.clone(), later));
    assert_eq!(after.expires_at_millis(), touch.expires_at_millis());

    // Without a version: `gets`, then `cas`.
    let unversioned = Record {
        version: None,
        ..deadline_of(after, later + time::Duration::minutes(1))
    };
    let (touched, sent) = counted(&server, &name, store.touch(&key, &unversioned)).await;
    assert!(touched.expect("touch"));
    assert_eq!(
        sent,
        Commands {
            reads: 1,
            writes: 1
        },
        "a touch without a version"
    );
    let after = store.load(&key).await.expect("load").expect("the session");
    assert_eq!(after, unversioned);
    store.delete(&key).await.expect("delete");
}

/// Through the layer: a request that only renews a session (saved on
/// every request, no touch threshold) costs memcached one `gets` to load it
/// and one `cas` to touch it, the version of the load carried to the touch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewing_request_is_one_gets_and_one_cas() {
    let (store, server, name) = counted_store().await;
    let (mut browser, counts, _) = cloakroom_tests::cases::setup(Engine::store(store), |l| {
        l.with_save_every_request(true)
            .with_touch_after(Duration::ZERO)
    });
    assert_eq!(browser.get("/set/a/1").await.status, StatusCode::OK);
    let before = counts.snapshot();
    let (reply, sent) = counted(&server, &name, browser.get("/get/a")).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "1"));
    let after = counts.snapshot();
    assert_eq!(
        (after.load, after.touch, after.update),
        (before.load + 1, before.touch + 1, before.update),
        "not a load and a touch"
    );
    assert_eq!(
        sent,
        Commands {
            reads: 1,
            writes: 1
        },
        "a renewing request"
    );
    assert_eq!(browser.get("/get/a").await.body, "1");
}

/// A touch of a session that another request updated after this one
/// loaded it keeps the newer data: the `cas` over the old version meets
/// `EXISTS`, and the newer version is read and written back with only its
/// deadline moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touch_after_a_concurrent_update_keeps_the_newer_data() {
    let (store, server, name) = counted_store().await;
    let key = new_key();
    let hour = time::Duration::hours(1);
    assert!(
        store
            .create(&key, &record("old", hour))
            .await
            .expect("create")
    );
    let mine = store.load(&key).await.expect("load").expect("the session");

    // Another request loads the session and changes it.
    let mut theirs = store.load(&key).await.expect("load").expect("the session");
    theirs.data.insert("v".into(), json!("newer"));
    theirs.expiry = Some(cloakroom_core::Expiry::OnBrowserClose);
    assert!(store.update(&key, &theirs).await.expect("update"));

    let touch = deadline_of(mine, in_ms(time::Duration::hours(2)));
    let (touched, sent) = counted(&server, &name, store.touch(&key, &touch)).await;
    assert!(touched.expect("touch"));
    // The `cas` over the loaded version, then `gets` and `cas` of the newer.
    assert_eq!(
        sent,
        Commands {
            reads: 1,
            writes: 2
        },
        "a touch that met a newer version"
    );
    let after = store.load(&key).await.expect("load").expect("the session");
    assert_eq!(value_of(&after), "newer", "the touch brought back old data");
    assert_eq!(after, deadline_of(theirs, touch.expires_at));
    assert_eq!(after.expires_at_millis(), touch.expires_at_millis());
    store.delete(&key).await.expect("delete");
}

/// A touch of a session that another request deleted (a logout) after this
/// one loaded it finds nothing and brings nothing back: the `cas` over the
/// loaded version meets `NOT_FOUND`, and nothing more is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touch_after_a_concurrent_delete_brings_nothing_back() {
    let (store, server, name) = counted_store().await;
    let key = new_key();
    let hour = time::Duration::hours(1);
    assert!(
        store
            .create(&key, &record("a", hour))
            .await
            .expect("create")
    );
    let loaded = store.load(&key).await.expect("load").expect("the session");
    store.delete(&key).await.expect("delete");

    let touch = deadline_of(loaded, in_ms(hour));
    let (touched, sent) = counted(&server, &name, store.touch(&key, &touch)).await;
    assert!(!touched.expect("touch"), "a touch found a deleted session");
    assert_eq!(
        sent,
        Commands {
            reads: 0,
            writes: 1
        },
        "a touch of a deleted session"
    );
    assert!(store.load(&key).await.expect("load").is_none());
    assert!(
        !holds(&server, &store.memcached_key(&key)).await,
        "the deleted session came back"
    );
}

/// The keys hold the prefix and the hash of the id, never the id itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_hold_the_hash_not_the_id() {
    let url = required_env("CLOAKROOM_MEMCACHED_URL");
    let server = first_server(&url);
    let prefix = unique_prefix();
    let store = store(&url, &prefix);
    let id = Id::generate().expect("OS randomness");
    let key = id.store_key();
    assert!(
        store
            .create(&key, &record("x", time::Duration::minutes(5)))
            .await
            .expect("create")
    );
    let dump = exptimes(&server, &prefix).await;
    let keys: Vec<&String> = dump.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [&format!("{prefix}{}", key.hex())]);
    assert!(!keys[0].contains(id.expose()));
}

/// An unreadable record (garbage written under the session's key by
/// something else, or a damaged item) is no session, as in Redis and SQL:
/// `load` is `Ok(None)`, and a request with that cookie gets a fresh
/// session, not a 500 on every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_is_no_session_not_an_error() {
    let url = required_env("CLOAKROOM_MEMCACHED_URL");
    let server = first_server(&url);
    let prefix = unique_prefix();
    let store = store(&url, &prefix);
    let (mut browser, _, _) = cloakroom_tests::cases::setup(Engine::store(store.clone()), |l| l);
    assert_eq!(browser.get("/set/a/1").await.status, StatusCode::OK);
    let cookie = browser.jar.get("sessionid").expect("a cookie").clone();
    let key = Id::parse(&cookie).expect("an id").store_key();
    assert!(store.load(&key).await.expect("load").is_some());

    for garbage in ["not a session record", "\u{94}\u{2}", "{\"a\":\"1\"}"] {
        let name = format!("{prefix}{}", key.hex());
        let reply = raw(
            &server,
            &format!("set {name} 0 300 {}\r\n{garbage}\r\n", garbage.len()),
            "STORED",
        )
        .await;
        assert_eq!(reply, "STORED\r\n", "{garbage:?}");
        assert!(
            store.load(&key).await.expect("no error").is_none(),
            "{garbage:?}"
        );

        let mut again = browser.replay();
        let reply = again.get("/get/a").await;
        assert_eq!(reply.status, StatusCode::OK, "{garbage:?}: {reply:?}");
        assert_eq!(reply.body, "none", "{garbage:?}: {reply:?}");
        let reply = again.get("/set/a/2").await;
        assert_eq!(reply.status, StatusCode::OK, "{garbage:?}: {reply:?}");
        let fresh = again.jar.get("sessionid").expect("a new cookie");
        assert_ne!(fresh, &cookie, "the unreadable session's id was adopted");
        assert_eq!(again.get("/get/a").await.body, "2");
    }
}

/// With two servers, sessions land on both, each on the server the ring
/// names and only there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_land_on_both_servers() {
    let url = required_env("CLOAKROOM_MEMCACHED_PAIR_URL");
    let prefix = unique_prefix();
    let pair = store(&url, &prefix);
    let servers = pair.servers();
    assert_eq!(servers.len(), 2);
    // A store per server with the same prefix sees what is on that server.
    let alone: Vec<MemcachedStore> = servers
        .iter()
        .map(|s| store(&format!("memcached://{s}"), &prefix))
        .collect();
    let mut counts = [0usize; 2];
    for i in 0..60 {
        let key = new_key();
        let value = format!("s{i}");
        assert!(
            pair.create(&key, &record(&value, time::Duration::minutes(5)))
                .await
                .expect("create")
        );
        let home = servers
            .iter()
            .position(|s| s == pair.server_for(&key))
            .expect("a listed server");
        counts[home] += 1;
        let there = alone[home].load(&key).await.expect("load");
        assert_eq!(there.as_ref().map(value_of), Some(&json!(value)));
        assert!(
            alone[1 - home].load(&key).await.expect("load").is_none(),
            "a session on both servers"
        );
        assert!(pair.load(&key).await.expect("load").is_some());
    }
    // 60 keys over two servers with about equal shares.
    assert!(counts.iter().all(|&c| c >= 10), "{counts:?}");
}

mod fault {
    use super::*;

    use cloakroom_tests::fault::{Restart, Server, drill};

    /// A fresh browser whose new session lives on `server` (or, with
    /// `on: false`, anywhere else).
    async fn browser_on(
        template: &Client,
        store: &MemcachedStore,
        server: &str,
        on: bool,
    ) -> Client {
        for _ in 0..200 {
            let mut client = template.replay();
            client.jar.clear();
            let reply = client.get("/set/a/1").await;
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            let cookie = client.jar.get("sessionid").expect("a cookie");
            let key = Id::parse(cookie).expect("an id").store_key();
            if (store.server_for(&key) == server) == on {
                return client;
            }
        }
        panic!(
            "no session landed {} {server}",
            if on { "on" } else { "off" }
        );
    }

    /// Asks `/get/a` and returns the reply and how long it took.
    async fn timed_get(client: &mut Client) -> (cloakroom_tests::client::Reply, Duration) {
        let started = Instant::now();
        let reply = client.get("/get/a").await;
        (reply, started.elapsed())
    }

    /// The victim's sessions fail fast with 503 while the survivor's keep
    /// working and stay fast.
    async fn only_the_victims_share_fails(victim: &mut Client, survivor: &mut Client, what: &str) {
        for _ in 0..3 {
            let (reply, took) = timed_get(victim).await;
            assert_eq!(
                reply.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{what}: {reply:?}"
            );
            assert!(took < Duration::from_secs(2), "{what}: a 503 took {took:?}");
            let (reply, took) = timed_get(survivor).await;
            assert_eq!(reply.status, StatusCode::OK, "{what}: {reply:?}");
            assert_eq!(reply.body, "1", "{what}");
            assert!(
                took < Duration::from_millis(500),
                "{what}: the other server's session took {took:?}"
            );
        }
        let reply = survivor.get("/set/b/2").await;
        assert_eq!(reply.status, StatusCode::OK, "{what}: {reply:?}");
    }

    /// Polls the victim's browser until it is served again, within `limit`.
    async fn recovers_within(victim: &mut Client, limit: Duration, what: &str) {
        let started = Instant::now();
        loop {
            let (reply, took) = timed_get(victim).await;
            assert!(
                took < Duration::from_secs(2),
                "{what}: an answer took {took:?}"
            );
            if reply.status == StatusCode::OK {
                break;
            }
            assert_eq!(
                reply.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{what}: {reply:?}"
            );
            assert!(
                started.elapsed() < limit,
                "{what}: no recovery within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("{what}: recovered after {:?}", started.elapsed());
        let reply = victim.get("/set/a/again").await;
        assert_eq!(reply.status, StatusCode::OK, "{what}: {reply:?}");
        assert_eq!(victim.get("/get/a").await.body, "again", "{what}");
    }

    /// One of two servers is stopped and restarted (twice: once here, once in
    /// the common outage drill), then hung (SIGSTOP) and resumed. Each time
    /// the sessions on the other server keep working, the victim's answer
    /// 503 within 2 s, and the same process serves them again within 5 s of
    /// the server's return.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_server_down_fails_only_its_sessions() {
        let url = required_env("CLOAKROOM_MEMCACHED_FAULT_URL");
        let victim_server = required_env("CLOAKROOM_MEMCACHED_FAULT_VICTIM");
        let store = store(&url, &unique_prefix());
        assert!(
            store.servers().contains(&victim_server),
            "{victim_server} not in {url}"
        );
        let (template, _, _) = cloakroom_tests::cases::setup(Engine::store(store.clone()), |l| l);
        let mut victim = browser_on(&template, &store, &victim_server, true).await;
        let mut survivor = browser_on(&template, &store, &victim_server, false).await;
        assert_eq!(victim.get("/get/a").await.body, "1");
        assert_eq!(survivor.get("/get/a").await.body, "1");

        // Stopped: connections are refused.
        let server = Server::from_env("MEMCACHED_FAULT");
        let restart = Restart(&server);
        server.stop();
        only_the_victims_share_fails(&mut victim, &mut survivor, "stopped").await;
        // New sessions: those whose fresh id lands on the dead server fail
        // (fast), the others are made.
        let (mut made, mut refused) = (0, 0);
        for _ in 0..24 {
            let mut client = template.replay();
            client.jar.clear();
            let started = Instant::now();
            let reply = client.get("/set/a/1").await;
            assert!(started.elapsed() < Duration::from_secs(2), "{reply:?}");
            match reply.status {
                StatusCode::OK => {
                    let cookie = client.jar.get("sessionid").expect("a cookie");
                    let key = Id::parse(cookie).expect("an id").store_key();
                    assert_ne!(store.server_for(&key), victim_server);
                    made += 1;
                }
                StatusCode::SERVICE_UNAVAILABLE => refused += 1,
                other => panic!("{other}: {reply:?}"),
            }
        }
        assert!(made > 0 && refused > 0, "{made} made, {refused} refused");

        let restarted = Instant::now();
        server.start();
        drop(restart);
        // memcached kept nothing, so the old session is gone: a 200 that
        // starts afresh is the recovery.
        recovers_within(
            &mut victim,
            Duration::from_secs(5).saturating_sub(restarted.elapsed()),
            "restarted",
        )
        .await;

        // The restart lost the victim's session, so the write above made a
        // new one, wherever its new id landed; writes to the victim work
        // again when a new browser's session lands there.
        let mut victim = browser_on(&template, &store, &victim_server, true).await;

        // The drill every networked engine goes through, on a session on the
        // victim; memcached cannot keep data over a restart.
        let outage = drill(&mut victim, &server, Duration::from_millis(1500), false).await;
        assert!(outage.requests > 0, "{outage:?}");
        assert_eq!(survivor.get("/get/a").await.body, "1");

        let mut victim = browser_on(&template, &store, &victim_server, true).await;

        // Hung: connections open (the kernel accepts them) but nothing
        // answers; only the store's own timeouts bound the wait.
        let paused = server.pause().await;
        only_the_victims_share_fails(&mut victim, &mut survivor, "hung").await;
        drop(paused);
        recovers_within(&mut victim, Duration::from_secs(5), "resumed").await;
    }
}
