//! The in-process engine of cloakroom (`SESSION_CACHE_URL=memory://`, the
//! default): sessions live in a [moka](https://docs.rs/moka) cache inside the
//! application process.
//!
//! * [`MemoryStore`]: the [`SessionStore`](cloakroom_core::SessionStore)
//!   implementation. Each entry expires at its own session deadline (moka's
//!   per-entry expiry), and the cache is bounded by a number of entries.
//! * [`CachedStore`]: a write-through moka cache in front of any other store;
//!   in front of the SQL store it is the `cached_db` engine. Its docs state
//!   how stale a copy can be across processes.
//! * [`settings`]: the names of the settings they read.
//!
//! It is a cache, not a database: when it is full, moka evicts the session
//! that was used the longest ago (LRU), which logs that user out, and a
//! restart of the process loses every session. Sessions are not shared
//! between processes, so it suits one process, development and tests.
//!
//! ```
//! use cloakroom_memory::MemoryStore;
//!
//! let store = MemoryStore::new(10_000);
//! assert_eq!(store.max_entries(), 10_000);
//! ```

mod cached;
pub mod settings;
mod store;

pub use cached::{CachedStore, DEFAULT_LOCAL_TTL};
pub use store::{DEFAULT_MAX_ENTRIES, MemoryStore};
