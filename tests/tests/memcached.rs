//! The conformance suite on the memcached engine, against real servers that
//! `tests/run` starts (tests/servers/memcached.sh):
//!
//! * `single`: on one memcached (`CLOAKROOM_MEMCACHED_URL`);
//! * `pair`: on two, sessions spread by consistent hashing
//!   (`CLOAKROOM_MEMCACHED_PAIR_URL`);
//! * `chosen_by_settings`: `SESSION_ENGINE=cache` with a `memcached://` URL
//!   picks this engine and reads its `SESSION_MEMCACHED_*` settings.
//!
//! The engine's own cases (item size limit, long expiries, several servers,
//! a server that dies) are in memcached_engine.rs.

use std::sync::atomic::{AtomicU64, Ordering};

use cloakroom::Engine;
use cloakroom_memcached::{MemcachedOptions, MemcachedStore};
use cloakroom_tests::required_env;

/// A key prefix that no other engine in this run uses, so the cases can share
/// the servers and run in parallel.
fn unique_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "conformance:{}:{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn engine_at(variable: &str) -> Engine {
    let url = required_env(variable);
    let store: MemcachedStore = MemcachedOptions::from_url(&url)
        .and_then(|o| o.with_key_prefix(unique_prefix()).build())
        .unwrap_or_else(|e| panic!("a store for {url}: {e}"));
    Engine::store(store)
}

mod single {
    use super::*;

    async fn engine() -> Engine {
        engine_at("CLOAKROOM_MEMCACHED_URL")
    }

    cloakroom_tests::conformance_suite!(engine);
}

mod pair {
    use super::*;

    async fn engine() -> Engine {
        engine_at("CLOAKROOM_MEMCACHED_PAIR_URL")
    }

    cloakroom_tests::conformance_suite!(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chosen_by_settings() {
    use cloakroom_core::{Id, SessionStore};

    let url = required_env("CLOAKROOM_MEMCACHED_PAIR_URL");
    let prefix = unique_prefix();
    let settings = cloakroom_core::config::from_pairs([
        ("SESSION_ENGINE", "django.contrib.sessions.backends.cache"),
        ("SESSION_CACHE_URL", url.as_str()),
        ("SESSION_MEMCACHED_KEY_PREFIX", prefix.as_str()),
        ("SESSION_MEMCACHED_POOL_SIZE", "2"),
        ("SESSION_MEMCACHED_TIMEOUT_MS", "800"),
    ]);
    let layer = cloakroom::SessionLayer::from_settings(&settings).expect("valid settings");
    assert_eq!(layer.engine().name(), "memcached");
    let mut client = cloakroom_tests::client::Client::new(layer, Default::default());
    assert_eq!(client.get("/set/a/1").await.status, http::StatusCode::OK);
    assert_eq!(client.get("/get/a").await.body, "1");

    // The session is where a store with the same prefix looks for it.
    let cookie = client.jar.get("sessionid").expect("a session cookie");
    let key = Id::parse(cookie).expect("a session id").store_key();
    let same = MemcachedOptions::from_url(&url)
        .and_then(|o| o.with_key_prefix(prefix).build())
        .expect("a store");
    let record = same.load(&key).await.expect("load").expect("the session");
    assert_eq!(
        record.data.get("a").expect("decodes"),
        Some(&serde_json::json!("1"))
    );

    // A bad tuning value is a startup error naming the variable.
    let bad = cloakroom_core::config::from_pairs([
        ("SESSION_CACHE_URL", url.as_str()),
        ("SESSION_MEMCACHED_POOL_SIZE", "lots"),
    ]);
    let err = cloakroom::SessionLayer::from_settings(&bad).expect_err("a bad pool size");
    assert!(
        err.to_string().contains("SESSION_MEMCACHED_POOL_SIZE"),
        "{err}"
    );
}
