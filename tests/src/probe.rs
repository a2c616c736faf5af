//! [`Probe`]: a store wrapper that counts calls and fails on demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cloakroom::{Engine, ErrorKind, Record, SessionStore, StoreKey};
use cloakroom_core::{Call, Error};
use time::OffsetDateTime;

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

    fn enter(&self, counter: &AtomicUsize) -> Result<(), Error> {
        counter.fetch_add(1, Ordering::SeqCst);
        if self.counts.fail.load(Ordering::SeqCst) {
            Err(Error::new(
                ErrorKind::Backend,
                "probe: backend switched off",
            ))
        } else {
            Ok(())
        }
    }
}

/// Forwards each call as the wrapped store answers it (at once or not), so
/// the suite drives the same paths through the probe as without it.
impl SessionStore for Probe {
    fn engine(&self) -> &'static str {
        self.inner.engine()
    }

    fn load<'a>(&'a self, key: &'a StoreKey) -> Call<'a, Option<Record>> {
        match self.enter(&self.counts.load) {
            Ok(()) => self.inner.load(key),
            Err(err) => Call::ready(Err(err)),
        }
    }

    fn create<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        match self.enter(&self.counts.create) {
            Ok(()) => self.inner.create(key, record),
            Err(err) => Call::ready(Err(err)),
        }
    }

    fn update<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        match self.enter(&self.counts.update) {
            Ok(()) => self.inner.update(key, record),
            Err(err) => Call::ready(Err(err)),
        }
    }

    fn touch<'a>(&'a self, key: &'a StoreKey, expires_at: OffsetDateTime) -> Call<'a, bool> {
        match self.enter(&self.counts.touch) {
            Ok(()) => self.inner.touch(key, expires_at),
            Err(err) => Call::ready(Err(err)),
        }
    }

    fn delete<'a>(&'a self, key: &'a StoreKey) -> Call<'a, ()> {
        match self.enter(&self.counts.delete) {
            Ok(()) => self.inner.delete(key),
            Err(err) => Call::ready(Err(err)),
        }
    }
}
