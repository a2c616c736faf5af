//! The conformance suite on the in-process moka engine (the default).

use cloakroom::Engine;
use cloakroom::memory::MemoryStore;

async fn engine() -> Engine {
    Engine::store(MemoryStore::new(10_000))
}

cloakroom_tests::conformance_suite!(engine);
