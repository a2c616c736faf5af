//! [`Probe`]: a store wrapper that counts calls and fails on demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cloakroom::{Engine, ErrorKind, Record, SessionStore, StoreKey};
use cloakroom_core::{Call, Error};

/// Call counters, shared between the probe and the test.
#[derive(Debug, Default)]
pub struct Counts {
    /// `load` calls.
    pub load: AtomicUsize,
    /// `create` calls.
    pub create: AtomicUsize,
    /// `update` calls.
    pub update: AtomicUsize,
    /// `touch` calls.
    pub touch: AtomicUsize,
    /// `delete` calls.
    pub delete: AtomicUsize,
    /// When true, every call fails as an unavailable backend would.
    pub fail: AtomicBool,
}

/// A snapshot of [`Counts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// `load` calls.
    pub load: usize,
    /// `create` calls.
    pub create: usize,
    /// `update` calls.
    pub update: usize,
    /// `touch` calls.
    pub touch: usize,
    /// `delete` calls.
    pub delete: usize,
}

impl Snapshot {
    /// Calls that write (create, update, touch, delete).
    pub fn writes(&self) -> usize {
        self.create + self.update + self.touch + self.delete
    }

    /// All calls.
    pub fn total(&self) -> usize {
        self.load + self.writes()
    }
}

impl Counts {
    /// The counts now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            load: self.load.load(Ordering::SeqCst),
            create: self.create.load(Ordering::SeqCst),
            update: self.update.load(Ordering::SeqCst),
            touch: self.touch.load(Ordering::SeqCst),
            delete: self.delete.load(Ordering::SeqCst),
        }
    }

    /// Makes every later call fail (or succeed again).
    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }
}

/// Wraps a store, counting each call into [`Counts`].
#[derive(Debug)]
pub struct Probe {
    inner: Arc<dyn SessionStore>,
    counts: Arc<Counts>,
}

impl Probe {
    /// Wraps a store engine; a cookie engine is returned as it is, with
    /// counters that stay at zero.
    pub fn wrap(engine: Engine) -> (Engine, Arc<Counts>) {
        let counts = Arc::new(Counts::default());
        let engine = match engine {
            Engine::Store(inner) => Engine::store(Probe {
                inner,
                counts: Arc::clone(&counts),
            }),
            cookie @ Engine::Cookie(_) => cookie,
        };
        (engine, counts)
    }

    /// Wraps a store directly, for store-level cases: the probe, and the
    /// counters it counts into.
    pub fn over(inner: Arc<dyn SessionStore>) -> (Self, Arc<Counts>) {
        let counts = Arc::new(Counts::default());
        let probe = Probe {
            inner,
            counts: Arc::clone(&counts),
        };
        (probe, counts)
    }

    /// Makes the wrapped store's call, counted into `counter`; while the
    /// probe is failing, the call is counted and answered with an error
    /// without reaching the store (a backend that is down takes nothing).
    fn forward<'a, T: Send + 'a>(
        &'a self,
        counter: &'a AtomicUsize,
        call: impl FnOnce() -> Call<'a, T>,
    ) -> Call<'a, T> {
        if self.counts.fail.load(Ordering::SeqCst) {
            counter.fetch_add(1, Ordering::SeqCst);
            return Call::ready(Err(Error::new(
                ErrorKind::Backend,
                "probe: backend switched off",
            )));
        }
        match call() {
            Call::Pending(work) => Call::pending(async move {
                counter.fetch_add(1, Ordering::SeqCst);
                work.await
            }),
            ready => {
                counter.fetch_add(1, Ordering::SeqCst);
                ready
            }
        }
    }
}

/// Forwards each call as the wrapped store answers it (at once or not), so
/// the suite drives the same paths through the probe as without it. A call
/// is counted when its work runs: at once for an answer that is there, on
/// the first poll for one to wait for (the layer may drop a pending call it
/// has not polled, and make it again).
impl SessionStore for Probe {
    fn engine(&self) -> &'static str {
        self.inner.engine()
    }

    fn load<'a>(&'a self, key: &'a StoreKey) -> Call<'a, Option<Record>> {
        self.forward(&self.counts.load, || self.inner.load(key))
    }

    fn create<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        self.forward(&self.counts.create, || self.inner.create(key, record))
    }

    fn update<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        self.forward(&self.counts.update, || self.inner.update(key, record))
    }

    fn touch<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        self.forward(&self.counts.touch, || self.inner.touch(key, record))
    }

    fn delete<'a>(&'a self, key: &'a StoreKey) -> Call<'a, ()> {
        self.forward(&self.counts.delete, || self.inner.delete(key))
    }
}
