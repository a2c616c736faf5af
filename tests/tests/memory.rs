//! The in-process moka engine (the default): the conformance suite, and the
//! store-level contract cases on the store itself.

use cloakroom::Engine;
use cloakroom::memory::MemoryStore;
use cloakroom_core::SessionStore;
use cloakroom_tests::contract;

async fn engine() -> Engine {
    Engine::store(MemoryStore::new(10_000))
}

cloakroom_tests::conformance_suite!(engine);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_contract() {
    let store = MemoryStore::new(10_000);
    contract::calls_stay_small(&store);
    contract::create_never_overwrites(&store).await;
    // In process, the store is the backend: what it loads is what it holds.
    let store = &store;
    let held = |key| async move { store.load(&key).await.expect("load").is_some() };
    contract::deleted_sessions_stay_deleted(store, held, 50).await;
}
