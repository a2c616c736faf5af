//! The Redis engine against real servers that `tests/run` starts
//! (tests/servers/redis.sh):
//!
//! * `single`: the conformance suite and the engine's own cases on one
//!   redis-server (`CLOAKROOM_REDIS_URL`);
//! * `cluster`: the same on a three-master Redis Cluster
//!   (`CLOAKROOM_REDIS_CLUSTER_URL`), and that sessions spread over masters;
//! * `password`: the main server requires one; a wrong one is refused;
//! * `tls`: the suite over `rediss://` with a private CA
//!   (`CLOAKROOM_REDIS_TLS_URL`, `CLOAKROOM_REDIS_TLS_CA`);
//! * `fault`: stopping, hanging and restarting a redis-server of its own
//!   (`CLOAKROOM_REDIS_FAULT_*`) while requests flow, and stopping and
//!   restarting one master of a Redis Cluster of its own
//!   (`CLOAKROOM_REDIS_CLUSTER_FAULT_*`).
//!
//! Every engine gets a key prefix of its own, so the cases run in parallel
//! on the shared servers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cloakroom::Engine;
use cloakroom_core::record::{
    DEADLINE_FIELD_LEN, Data, deadline_field, has_deadline_field, millis,
};
use cloakroom_core::{Id, Record, SessionStore, StoreKey};
use cloakroom_redis::{RedisOptions, RedisStore};
use cloakroom_tests::probe::Probe;
use cloakroom_tests::{contract, required_env};
use deadpool_redis::redis::{self, FromRedisValue, aio::MultiplexedConnection};
use serde_json::json;
use time::OffsetDateTime;

/// A key prefix no other engine in this run uses.
fn unique_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "cloakroom-test:{}:{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn store_at(url: &str) -> RedisStore {
    RedisStore::new(url, options_for(url).with_key_prefix(unique_prefix()))
        .unwrap_or_else(|e| panic!("a store for {url}: {e}"))
}

/// The test TLS server's certificate comes from a CA that tests/run makes.
fn options_for(url: &str) -> RedisOptions {
    if url.starts_with("rediss://") {
        RedisOptions::new().with_tls_ca_file(required_env("CLOAKROOM_REDIS_TLS_CA"))
    } else {
        RedisOptions::new()
    }
}

/// The prefix of every Redis key `store` writes.
fn key_prefix(store: &RedisStore) -> String {
    let zero = StoreKey::from_hex(&"0".repeat(64)).expect("hex");
    let key = store.redis_key(&zero);
    key[..key.len() - 64].to_owned()
}

fn new_key() -> StoreKey {
    Id::generate().expect("OS randomness").store_key()
}

fn record(value: &str, ttl: Duration) -> Record {
    let mut data = Data::new();
    data.insert("v".into(), json!(value));
    Record::new(data, OffsetDateTime::now_utc() + ttl)
}

/// Plain connections for looking at what the store wrote: one routed
/// connection for single-key commands, and one per node for `SCAN`.
struct Raw {
    routed: Routed,
    nodes: Vec<MultiplexedConnection>,
}

#[derive(Clone)]
enum Routed {
    Single(MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Raw {
    async fn open(url: &str) -> Self {
        match url.strip_prefix("redis+cluster://") {
            Some(rest) => {
                let (auth, hosts) = match rest.rsplit_once('@') {
                    Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
                    None => (String::new(), rest),
                };
                let urls: Vec<String> = hosts
                    .split(',')
                    .map(|h| format!("redis://{auth}{h}"))
                    .collect();
                let client =
                    redis::cluster::ClusterClient::new(urls.clone()).expect("cluster client");
                let routed = client
                    .get_async_connection()
                    .await
                    .expect("cluster connection");
                let mut nodes = Vec::new();
                for u in &urls {
                    nodes.push(single(u).await);
                }
                Self {
                    routed: Routed::Cluster(routed),
                    nodes,
                }
            }
            None => {
                let conn = single(url).await;
                Self {
                    routed: Routed::Single(conn.clone()),
                    nodes: vec![conn],
                }
            }
        }
    }

    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let result = match self.routed.clone() {
            Routed::Single(mut c) => cmd.query_async(&mut c).await,
            Routed::Cluster(mut c) => cmd.query_async(&mut c).await,
        };
        result.expect("raw redis command")
    }

    async fn pttl(&self, key: &str) -> i64 {
        self.query(redis::cmd("PTTL").arg(key)).await
    }

    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    async fn exists(&self, key: &str) -> bool {
        self.query::<i64>(redis::cmd("EXISTS").arg(key)).await == 1
    }

    /// Every key matching `pattern`, per node.
    /// How many keys match `pattern` on each node.
    async fn count(&self, pattern: &str) -> Vec<usize> {
        self.scan(pattern).await.iter().map(Vec::len).collect()
    }

    async fn scan(&self, pattern: &str) -> Vec<Vec<String>> {
        let mut per_node = Vec::new();
        for node in &self.nodes {
            let mut conn = node.clone();
            let mut cursor = 0u64;
            let mut keys = Vec::new();
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .expect("SCAN");
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            per_node.push(keys);
        }
        per_node
    }
}

async fn single(url: &str) -> MultiplexedConnection {
    let client = if url.starts_with("rediss://") {
        let ca = std::fs::read(required_env("CLOAKROOM_REDIS_TLS_CA")).expect("the test CA");
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca),
        };
        redis::Client::build_with_tls(url, certificates).expect("redis URL")
    } else {
        redis::Client::open(url).expect("redis URL")
    };
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// The engine's own cases, written once for the single server and the cluster.
mod cases {
    use super::*;

    /// The Redis TTL is the session deadline, and load reports it.
    pub(crate) async fn ttl_matches_expiry(url: &str) {
        let store = store_at(url);
        let raw = Raw::open(url).await;
        let key = new_key();
        let rec = record("a", Duration::from_secs(100));
        assert!(store.create(&key, &rec).await.expect("create"));
        let pttl = raw.pttl(&store.redis_key(&key)).await;
        assert!((98_000..=100_000).contains(&pttl), "PTTL {pttl}");
        let loaded = store
            .load(&key)
            .await
            .expect("load")
            .expect("a live record");
        assert_eq!(loaded.data, rec.data);
        let drift = (loaded.expires_at - rec.expires_at).abs();
        assert!(
            drift < time::Duration::seconds(1),
            "deadline off by {drift}"
        );

        // The same after an update with a new deadline.
        let rec = record("b", Duration::from_secs(300));
        assert!(store.update(&key, &rec).await.expect("update"));
        let pttl = raw.pttl(&store.redis_key(&key)).await;
        assert!((298_000..=300_000).contains(&pttl), "PTTL {pttl}");
    }

    /// A record past its deadline is gone, from Redis and from load.
    pub(crate) async fn expired_records_are_gone(url: &str) {
        let store = store_at(url);
        let raw = Raw::open(url).await;
        let key = new_key();
        assert!(
            store
                .create(&key, &record("a", Duration::from_millis(300)))
                .await
                .expect("create")
        );
        assert!(store.load(&key).await.expect("load").is_some());
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert!(store.load(&key).await.expect("load").is_none());
        assert!(!raw.exists(&store.redis_key(&key)).await);
        assert!(
            !store
                .touch(&key, &record("a", Duration::from_secs(60)))
                .await
                .expect("touch")
        );
        assert!(
            !store
                .update(&key, &record("b", Duration::from_secs(60)))
                .await
                .expect("update")
        );
    }

    /// Something that is not a session record under the prefix counts as no
    /// session (a fresh one is issued), not as an error on every request.
    pub(crate) async fn unreadable_record_is_no_session(url: &str) {
        let store = store_at(url);
        let raw = Raw::open(url).await;
        let key = new_key();
        let _: () = raw
            .query(
                redis::cmd("SET")
                    .arg(store.redis_key(&key))
                    .arg("not json")
                    .arg("EX")
                    .arg(60),
            )
            .await;
        assert!(store.load(&key).await.expect("load").is_none());
    }

    /// `create` never overwrites.
    pub(crate) async fn create_does_not_overwrite(url: &str) {
        let store = store_at(url);
        contract::calls_stay_small(&store);
        contract::create_never_overwrites(&store).await;
    }

    /// Every operation does what the contract says.
    pub(crate) async fn store_contract(url: &str) {
        contract::every_operation(&store_at(url)).await;
    }

    /// The contract cases through the test probe, which must forward every
    /// call, as itself.
    pub(crate) async fn store_contract_through_probe(url: &str) {
        let store = Arc::new(store_at(url));
        let (probe, counts) = Probe::over(Arc::clone(&store) as Arc<dyn SessionStore>);
        contract::every_operation(&probe).await;
        contract::create_never_overwrites(&probe).await;
        let raw = &Raw::open(url).await;
        let held = |key| {
            let redis_key = store.redis_key(&key);
            async move { raw.exists(&redis_key).await }
        };
        contract::deleted_sessions_stay_deleted(&probe, held, 10).await;
        contract::all_five_called(&counts);
        contract::each_call_reaches(&probe, &counts).await;
    }

    /// Updates and touches after a delete, and updates racing deletes, never
    /// bring a session back.
    pub(crate) async fn update_after_delete_does_not_recreate(url: &str) {
        let store = store_at(url);
        let raw = &Raw::open(url).await;
        let held = |key| {
            let redis_key = store.redis_key(&key);
            async move { raw.exists(&redis_key).await }
        };
        contract::deleted_sessions_stay_deleted(&store, held, 50).await;
    }

    /// `touch` moves the TTL and rewrites only the deadline at the end of the
    /// stored bytes; a single `GET` then reports the new deadline.
    pub(crate) async fn touch_moves_ttl_and_deadline_field(url: &str) {
        let store = store_at(url);
        let raw = Raw::open(url).await;
        let key = new_key();
        let redis_key = store.redis_key(&key);
        assert!(
            store
                .create(&key, &record("a", Duration::from_secs(60)))
                .await
                .expect("create")
        );
        let before = raw.get(&redis_key).await.expect("stored bytes");
        assert!(has_deadline_field(&before));

        let later = OffsetDateTime::now_utc() + Duration::from_secs(500);
        let touched = Record {
            expires_at: later,
            ..store.load(&key).await.expect("load").expect("record")
        };
        assert!(store.touch(&key, &touched).await.expect("touch"));
        let after = raw.get(&redis_key).await.expect("stored bytes");
        let (data, field) = after.split_at(after.len() - DEADLINE_FIELD_LEN);
        assert_eq!(data, &before[..before.len() - DEADLINE_FIELD_LEN]);
        assert_eq!(field, deadline_field(later));
        let pttl = raw.pttl(&redis_key).await;
        assert!((498_000..=500_000).contains(&pttl), "PTTL {pttl}");
        let loaded = store.load(&key).await.expect("load").expect("record");
        assert_eq!(loaded.expires_at_millis(), millis(later));
        assert_eq!(loaded.data["v"], json!("a"));

        // Touching a session that is not there creates nothing.
        let missing = new_key();
        assert!(!store.touch(&missing, &touched).await.expect("touch"));
        assert!(!raw.exists(&store.redis_key(&missing)).await);
    }

    /// Sessions that earlier versions wrote or touched keep working. A
    /// record with its deadline in MessagePack's unsigned integer form: load
    /// takes its deadline from the TTL, and touch moves the TTL without
    /// touching the bytes.
    pub(crate) async fn records_of_earlier_versions_follow_their_ttl(url: &str) {
        let store = store_at(url);
        let raw = Raw::open(url).await;
        let key = new_key();
        let redis_key = store.redis_key(&key);
        // What earlier versions wrote: the same record, its deadline (here
        // 10 s away) as an unsigned integer, and a TTL moved by touch since.
        let mut old = record("a", Duration::from_secs(10))
            .to_bytes()
            .expect("encodes");
        let at = old.len() - DEADLINE_FIELD_LEN;
        old[at] = 0xcf;
        assert!(!has_deadline_field(&old));
        let set = |ttl_ms: u64| {
            redis::cmd("SET")
                .arg(&redis_key)
                .arg(&old)
                .arg("PX")
                .arg(ttl_ms)
                .clone()
        };
        let _: () = raw.query(&set(60_000)).await;
        let loaded = store.load(&key).await.expect("load").expect("record");
        assert_eq!(loaded.data["v"], json!("a"));
        let left = loaded.expires_at - OffsetDateTime::now_utc();
        assert!(
            left > time::Duration::seconds(58) && left <= time::Duration::seconds(60),
            "deadline in {left}"
        );

        let later = OffsetDateTime::now_utc() + Duration::from_secs(500);
        let touched = Record {
            expires_at: later,
            ..loaded
        };
        assert!(store.touch(&key, &touched).await.expect("touch"));
        assert_eq!(raw.get(&redis_key).await.expect("stored bytes"), old);
        let loaded = store.load(&key).await.expect("load").expect("record");
        assert!((loaded.expires_at - later).abs() < time::Duration::seconds(1));

        // Past its TTL it is gone, whatever the bytes say.
        let _: () = raw.query(&set(1)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(store.load(&key).await.expect("load").is_none());

        // A current record that an earlier version touched during an
        // upgrade: the deadline in the value has passed, the TTL (moved by
        // that touch) has not. The TTL decides.
        let mut current = record("a", Duration::from_secs(60))
            .to_bytes()
            .expect("encodes");
        let at = current.len() - DEADLINE_FIELD_LEN;
        current[at..].copy_from_slice(&deadline_field(
            OffsetDateTime::now_utc() - Duration::from_secs(5),
        ));
        let _: () = raw
            .query(
                redis::cmd("SET")
                    .arg(&redis_key)
                    .arg(&current)
                    .arg("PX")
                    .arg(30_000),
            )
            .await;
        let loaded = store.load(&key).await.expect("load").expect("record");
        let left = loaded.expires_at - OffsetDateTime::now_utc();
        assert!(
            left > time::Duration::seconds(28) && left <= time::Duration::seconds(30),
            "deadline in {left}"
        );
    }

    /// Keys are the prefix and the SHA-256 of the id; the raw id is in none.
    pub(crate) async fn keys_hold_the_hash_not_the_id(url: &str) {
        let store = store_at(url);
        let raw = Raw::open(url).await;
        let id = Id::generate().expect("OS randomness");
        let key = id.store_key();
        assert!(
            store
                .create(&key, &record("a", Duration::from_secs(60)))
                .await
                .expect("create")
        );
        let all: Vec<String> = raw.scan("*").await.into_iter().flatten().collect();
        assert!(all.contains(&store.redis_key(&key)));
        assert!(store.redis_key(&key).ends_with(key.hex().as_str()));
        assert!(
            all.iter().all(|k| !k.contains(id.expose())),
            "the raw id is in a key"
        );
    }

    /// Over HTTP: the cookie value (the raw id) is in no key, in no value, and
    /// the session lives under the hash of it.
    pub(crate) async fn cookie_value_is_in_no_key(url: &str) {
        let store = store_at(url);
        let prefix = store.redis_key(&StoreKey::from_hex(&"0".repeat(64)).expect("hex"));
        let prefix = prefix.trim_end_matches('0').to_owned();
        let raw = Raw::open(url).await;
        let (mut client, _, _) = cloakroom_tests::cases::setup(Engine::store(store), |l| l);
        let reply = client.get("/set/user/ada").await;
        assert_eq!(reply.status, http::StatusCode::OK);
        let cookie = reply
            .cookie("sessionid")
            .expect("a session cookie")
            .value
            .clone();
        let id = Id::parse(&cookie).expect("the cookie holds an id");

        let all: Vec<String> = raw.scan("*").await.into_iter().flatten().collect();
        assert!(
            all.iter().all(|k| !k.contains(&cookie)),
            "the cookie value is in a key"
        );
        let ours: Vec<&String> = all.iter().filter(|k| k.starts_with(&prefix)).collect();
        assert_eq!(ours, vec![&format!("{prefix}{}", id.store_key().hex())]);
        let value = raw.get(ours[0]).await.expect("the record");
        assert!(
            !String::from_utf8_lossy(&value).contains(&cookie),
            "the cookie value is in the record"
        );
    }

    /// `SessionLayer::from_settings` picks this engine for a redis URL and
    /// reads the `SESSION_REDIS_*` tuning.
    pub(crate) async fn chosen_by_settings(url: &str) {
        let prefix = unique_prefix();
        let mut settings = cloakroom_core::config::from_pairs([
            ("SESSION_ENGINE", "django.contrib.sessions.backends.cache"),
            ("SESSION_CACHE_URL", url),
            ("SESSION_REDIS_KEY_PREFIX", prefix.as_str()),
            ("SESSION_REDIS_POOL_SIZE", "4"),
        ]);
        if let Some(ca) = options_for(url).tls_ca_file() {
            settings.insert("SESSION_REDIS_TLS_CA_FILE".into(), ca.display().to_string());
        }
        let layer = cloakroom::SessionLayer::from_settings(&settings).expect("valid settings");
        let mut client = cloakroom_tests::client::Client::new(layer, Default::default());
        assert_eq!(client.get("/set/a/1").await.status, http::StatusCode::OK);
        assert_eq!(client.get("/get/a").await.body, "1");
        let raw = Raw::open(url).await;
        let ours: usize = raw
            .scan(&format!("{prefix}*"))
            .await
            .iter()
            .map(Vec::len)
            .sum();
        assert_eq!(ours, 1);
    }
}

/// One `#[tokio::test]` per engine case, on the server in `$var`.
macro_rules! redis_cases {
    ($var:literal; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                crate::cases::$case(&cloakroom_tests::required_env($var)).await;
            }
        )*
    };
}

mod single {
    use super::*;

    async fn engine() -> Engine {
        Engine::store(store_at(&required_env("CLOAKROOM_REDIS_URL")))
    }

    cloakroom_tests::conformance_suite!(engine);

    redis_cases!("CLOAKROOM_REDIS_URL";
        ttl_matches_expiry,
        expired_records_are_gone,
        unreadable_record_is_no_session,
        store_contract,
        store_contract_through_probe,
        create_does_not_overwrite,
        update_after_delete_does_not_recreate,
        touch_moves_ttl_and_deadline_field,
        records_of_earlier_versions_follow_their_ttl,
        keys_hold_the_hash_not_the_id,
        cookie_value_is_in_no_key,
        chosen_by_settings,
    );
}

/// The password and the `host:port` of the main server's URL, which
/// `tests/run` gives a password.
fn password_and_host(url: &str) -> (&str, &str) {
    let (userinfo, host) = url
        .strip_prefix("redis://")
        .and_then(|rest| rest.split_once('@'))
        .expect("tests/run gives the main server a password");
    (userinfo.trim_start_matches(':'), host)
}

mod password {
    use super::*;

    /// The main server needs the password in its URL (every case in
    /// `single` uses it); a wrong one is a quick backend error, and the
    /// password shows neither in `Debug` nor in the error.
    #[tokio::test]
    async fn wrong_password_is_a_backend_error_that_hides_it() {
        let url = required_env("CLOAKROOM_REDIS_URL");
        let (password, host) = password_and_host(&url);
        let good = store_at(&url);
        assert!(!format!("{good:?}").contains(password), "{good:?}");

        let wrong = format!("redis://:not-{password}@{host}");
        let store = store_at(&wrong);
        let started = std::time::Instant::now();
        let err = store.load(&new_key()).await.expect_err("a wrong password");
        assert!(started.elapsed() < Duration::from_millis(1500));
        assert!(err.is_unavailable(), "{err:?}");
        let shown = format!("{err} {err:?} {store:?}");
        assert!(!shown.contains(password), "{shown}");

        let nopass = store_at(&format!("redis://{host}"));
        assert!(
            nopass
                .load(&new_key())
                .await
                .expect_err("no password")
                .is_unavailable()
        );
    }
}

/// `cloakroom::Error` shows its cause in one line (the authentication
/// failure, the refused connection), without the password, and its first
/// `source()` does not repeat the message.
#[tokio::test]
async fn errors_show_their_cause_in_one_line() {
    let url = required_env("CLOAKROOM_REDIS_URL");
    let (password, host) = password_and_host(&url);
    let wrong = store_at(&format!("redis://:not-{password}@{host}"));
    let err = wrong.load(&new_key()).await.expect_err("a wrong password");
    let err = cloakroom::Error::from(err);
    let line = err.to_string();
    assert!(line.starts_with("session backend error: redis: "), "{line}");
    assert!(line.to_ascii_lowercase().contains("pass"), "{line}");
    assert!(!line.contains('\n') && !line.contains(password), "{line}");
    let first = std::error::Error::source(&err)
        .expect("a cause")
        .to_string();
    assert!(!first.contains("session backend error"), "{first}");

    // Port 1 on loopback: nothing listens there.
    let closed = store_at("redis://127.0.0.1:1/0");
    let err = closed.load(&new_key()).await.expect_err("nothing listens");
    let line = cloakroom::Error::from(err).to_string();
    assert!(line.starts_with("session backend error: redis: "), "{line}");
    assert!(line.contains("refused"), "{line}");
}

mod tls {
    use super::*;

    async fn engine() -> Engine {
        Engine::store(store_at(&required_env("CLOAKROOM_REDIS_TLS_URL")))
    }

    cloakroom_tests::conformance_suite!(engine);

    redis_cases!("CLOAKROOM_REDIS_TLS_URL";
        store_contract,
        ttl_matches_expiry,
        touch_moves_ttl_and_deadline_field,
        records_of_earlier_versions_follow_their_ttl,
        update_after_delete_does_not_recreate,
        chosen_by_settings,
    );

    /// Without the CA, the server's certificate is not trusted.
    #[tokio::test]
    async fn an_unknown_ca_is_refused() {
        let url = required_env("CLOAKROOM_REDIS_TLS_URL");
        let store = RedisStore::new(&url, RedisOptions::new()).expect("a store");
        assert!(
            store
                .load(&new_key())
                .await
                .expect_err("untrusted")
                .is_unavailable()
        );
    }
}

mod cluster {
    use super::*;

    async fn engine() -> Engine {
        Engine::store(store_at(&required_env("CLOAKROOM_REDIS_CLUSTER_URL")))
    }

    cloakroom_tests::conformance_suite!(engine);

    redis_cases!("CLOAKROOM_REDIS_CLUSTER_URL";
        ttl_matches_expiry,
        expired_records_are_gone,
        unreadable_record_is_no_session,
        store_contract,
        store_contract_through_probe,
        create_does_not_overwrite,
        update_after_delete_does_not_recreate,
        touch_moves_ttl_and_deadline_field,
        records_of_earlier_versions_follow_their_ttl,
        keys_hold_the_hash_not_the_id,
        cookie_value_is_in_no_key,
        chosen_by_settings,
    );

    /// Sessions land on more than one master.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_spread_over_masters() {
        let url = required_env("CLOAKROOM_REDIS_CLUSTER_URL");
        let store = store_at(&url);
        assert!(store.is_cluster());
        let raw = Raw::open(&url).await;
        assert_eq!(raw.nodes.len(), 3);
        for _ in 0..60 {
            assert!(
                store
                    .create(&new_key(), &record("a", Duration::from_secs(60)))
                    .await
                    .expect("create")
            );
        }
        let prefix = key_prefix(&store);
        let per_node = raw.count(&format!("{prefix}*")).await;
        assert_eq!(per_node.iter().sum::<usize>(), 60, "{per_node:?}");
        let used = per_node.iter().filter(|n| **n > 0).count();
        assert!(used >= 2, "all sessions on one master: {per_node:?}");
    }
}

mod fault {
    use super::*;
    use std::time::Instant;

    use cloakroom_tests::fault::{all_unavailable, flood, recovers_within};
    use http::StatusCode;

    /// One test, because all of it stops the same server:
    ///
    /// 0. a server that is down when the store is built;
    /// 1. the project's outage drill (clean stop, 503s within 2 s, back
    ///    within 5 s of the restart, and nothing acknowledged is lost: the
    ///    fault server fsyncs its append-only file on every write);
    /// 2. a server killed (SIGKILL) while several clients send requests:
    ///    every answer within 2 s, all 503 once it is gone, service again
    ///    within 5 s of the restart, in the same process;
    /// 3. a server that hangs (SIGSTOP) instead of refusing: the same, where
    ///    only the store's timeouts bound the answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn stopped_killed_and_hung_redis_give_503_then_recover() {
        let url = required_env("CLOAKROOM_REDIS_FAULT_URL");
        let server = cloakroom_tests::fault::Server::from_env("REDIS_FAULT");
        let _restart = cloakroom_tests::fault::Restart(&server);

        // 0. Down when the app starts: not a config error, 503s, then service
        //    once Redis is up, without rebuilding anything.
        server.stop();
        let store = store_at(&url);
        let (mut client, _, _) = cloakroom_tests::cases::setup(Engine::store(store), |l| l);
        let reply = client.get("/set/a/early").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
        server.start();
        assert_eq!(client.get("/set/a/early").await.status, StatusCode::OK);
        assert_eq!(client.get("/get/a").await.body, "early");

        let store = store_at(&url);
        let (mut client, _, _) = cloakroom_tests::cases::setup(Engine::store(store), |l| l);

        let outage =
            cloakroom_tests::fault::drill(&mut client, &server, Duration::from_secs(3), true).await;
        assert!(outage.requests > 0);

        assert_eq!(client.get("/set/a/1").await.status, StatusCode::OK);
        assert_eq!(client.get("/get/a").await.body, "1");

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

        let restarted = Instant::now();
        server.start();
        // SIGKILL after an fsync'ed write: the session is still there.
        let limit = Duration::from_secs(5).saturating_sub(restarted.elapsed());
        recovers_within(&mut client, "/get/a", limit, Some("1")).await;
        assert_eq!(client.get("/set/a/again").await.status, StatusCode::OK);

        // A server that hangs instead of refusing: only timeouts bound this.
        let paused = server.pause().await;
        all_unavailable(&flood(&client, "/get/a", Duration::from_millis(2500)).await);
        drop(paused);
        recovers_within(&mut client, "/get/a", Duration::from_secs(5), Some("again")).await;
    }

    /// The outage drill on a Redis Cluster: the master that holds the
    /// session is stopped (every request for it answers 503 within 2 s),
    /// restarted, and the same process serves the session again within 5 s,
    /// with nothing acknowledged lost (the fault cluster's nodes fsync their
    /// append-only files on every write).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_stopped_cluster_master_gives_503_then_recovers() {
        let url = required_env("CLOAKROOM_REDIS_CLUSTER_FAULT_URL");
        let store = store_at(&url);
        assert!(store.is_cluster());
        let prefix = key_prefix(&store);
        let (mut client, _, _) = cloakroom_tests::cases::setup(Engine::store(store), |l| l);
        assert_eq!(client.get("/set/k/first").await.status, StatusCode::OK);

        // The master that holds this session (the URL lists the nodes in
        // the order of their numbers).
        let held = Raw::open(&url).await.count(&format!("{prefix}*")).await;
        assert_eq!(held.iter().sum::<usize>(), 1, "{held:?}");
        let holder = held.iter().position(|n| *n == 1).expect("one master");
        let server = cloakroom_tests::fault::Server::from_env(&format!(
            "REDIS_CLUSTER_FAULT_{}",
            holder + 1
        ));

        let outage =
            cloakroom_tests::fault::drill(&mut client, &server, Duration::from_secs(3), true).await;
        assert!(outage.requests > 0);
        assert_eq!(client.get("/set/k/after").await.status, StatusCode::OK);
        assert_eq!(client.get("/get/k").await.body, "after");
    }
}
