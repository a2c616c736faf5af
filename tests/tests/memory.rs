//! The in-process moka engine (the default): the conformance suite, and the
//! store-level contract cases on the store itself, through the test probe,
//! and through the `cached_db` cache (`CachedStore`) in front of it.

use std::sync::Arc;
use std::time::Duration;

use cloakroom::memory::{CachedStore, MemoryStore};
use cloakroom::{Engine, SessionLayer};
use cloakroom_core::SessionStore;
use cloakroom_tests::app::Gate;
use cloakroom_tests::cases::setup;
use cloakroom_tests::client::Client;
use cloakroom_tests::contract;
use cloakroom_tests::probe::Probe;
use http::StatusCode;

async fn engine() -> Engine {
    Engine::store(MemoryStore::new(10_000))
}

cloakroom_tests::conformance_suite!(engine);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_contract() {
    let store = MemoryStore::new(10_000);
    contract::calls_stay_small(&store);
    contract::every_operation(&store).await;
    contract::create_never_overwrites(&store).await;
    // In process, the store is the backend: what it loads is what it holds.
    let store = &store;
    let held = |key| async move { store.load(&key).await.expect("load").is_some() };
    contract::deleted_sessions_stay_deleted(store, held, 50).await;
}

/// The contract through the probe: it must forward every call, as itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_contract_through_probe() {
    let store = Arc::new(MemoryStore::new(10_000));
    let (probe, counts) = Probe::over(Arc::clone(&store) as Arc<dyn SessionStore>);
    contract::every_operation(&probe).await;
    contract::create_never_overwrites(&probe).await;
    let store = &store;
    let held = |key| async move { store.load(&key).await.expect("load").is_some() };
    contract::deleted_sessions_stay_deleted(&probe, held, 10).await;
    contract::all_five_called(&counts);
    contract::each_call_reaches(&probe, &counts).await;
}

/// The contract through the `cached_db` cache in front of the memory
/// store, each state checked on the memory store too; and, with the probe
/// between them, every call the cache cannot answer reaches the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_contract_through_cache() {
    let inner = Arc::new(MemoryStore::new(10_000));
    let cache = CachedStore::new(
        Arc::clone(&inner) as Arc<dyn SessionStore>,
        10_000,
        Duration::from_secs(60),
    );
    contract::calls_stay_small(&cache);
    contract::every_operation_written_through(&cache, &*inner).await;
    contract::create_never_overwrites(&cache).await;
    let (inner, cached) = (&inner, &cache);
    let held = |key| async move {
        inner.load(&key).await.expect("load").is_some()
            || cached.load(&key).await.expect("load").is_some()
    };
    contract::deleted_sessions_stay_deleted(&cache, held, 30).await;

    let (probe, counts) = Probe::over(Arc::new(MemoryStore::new(10_000)));
    let cache = CachedStore::new(Arc::new(probe), 10_000, Duration::from_secs(60));
    contract::every_operation(&cache).await;
    contract::all_five_called(&counts);
    contract::each_call_reaches(&cache, &counts).await;
}

/// Sessions stored by `cycle_id` (a login) have a budget of their own: a
/// flood of anonymous sessions, thirty times what the store holds, pushes
/// out anonymous sessions only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_sessions_cannot_evict_logged_in_ones() {
    let store = MemoryStore::with_budgets(10, 10);
    let layer = SessionLayer::new(Engine::store(store.clone()));
    let gate = Arc::new(Gate::default());
    let mut ada = Client::new(layer.clone(), Arc::clone(&gate));
    assert_eq!(ada.get("/set/user/ada").await.status, StatusCode::OK);
    assert_eq!(ada.get("/cycle").await.status, StatusCode::OK);
    let mut early = Client::new(layer.clone(), Arc::clone(&gate));
    assert_eq!(early.get("/set/user/early").await.status, StatusCode::OK);

    for i in 0..300 {
        let mut stranger = Client::new(layer.clone(), Arc::clone(&gate));
        let reply = stranger.get(&format!("/set/visit/{i}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    }
    store.run_pending_tasks().await;

    assert_eq!(
        ada.get("/get/user").await.body,
        "ada",
        "logged out by strangers"
    );
    assert_eq!(
        early.get("/get/user").await.body,
        "none",
        "anonymous sessions are bounded"
    );
    assert_eq!(store.entry_count(), 11);
}

/// A handler that deals with a store failure itself gets its response
/// through (`Session::failure_handled`, or a 5xx of its own), and the
/// layer writes nothing; one that ignores the failure, or returns the
/// error, gets the layer's 503, with the body the application set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failures_handled_by_the_handler_and_the_applications_503() {
    let page = "<!doctype html><p>Sign-in is down for a moment.";
    let (mut client, counts, _) = setup(Engine::store(MemoryStore::new(100)), |l| {
        l.with_unavailable_response("text/html; charset=utf-8", page)
    });
    assert_eq!(client.get("/set/a/1").await.status, StatusCode::OK);
    counts.set_failing(true);
    let before = counts.snapshot();

    let reply = client.get("/handled").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "degraded")
    );
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    assert!(reply.varies_on_cookie());
    let reply = client.get("/own-502").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::BAD_GATEWAY, "handler's own")
    );
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    assert_eq!(counts.snapshot().writes(), before.writes());

    for path in ["/swallow", "/get/a", "/set/a/2"] {
        let reply = client.get(path).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(reply.body, page, "{path}");
        let content_type = reply.headers.get(http::header::CONTENT_TYPE).unwrap();
        assert_eq!(content_type, "text/html; charset=utf-8");
        assert_eq!(
            reply.headers.get(http::header::CACHE_CONTROL).unwrap(),
            "no-store"
        );
    }
    counts.set_failing(false);
    assert_eq!(client.get("/handled").await.body, "1");
    assert_eq!(client.get("/own-502").await.status, StatusCode::OK);
}
