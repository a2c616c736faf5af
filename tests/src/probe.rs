//! [`Probe`]: a store wrapper that counts calls and fails on demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cloakroom::{Engine, ErrorKind, Record, SessionStore, StoreKey};
use cloakroom_core::{Error, async_trait};
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

#[async_trait]
impl SessionStore for Probe {
    fn engine(&self) -> &'static str {
        self.inner.engine()
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        self.enter(&self.counts.load)?;
        self.inner.load(key).await
    }

    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, Error> {
        self.enter(&self.counts.create)?;
        self.inner.create(key, record).await
    }

    async fn update(&self, key: &StoreKey, record: &Record) -> Result<bool, Error> {
        self.enter(&self.counts.update)?;
        self.inner.update(key, record).await
    }

    async fn touch(&self, key: &StoreKey, expires_at: OffsetDateTime) -> Result<bool, Error> {
        self.enter(&self.counts.touch)?;
        self.inner.touch(key, expires_at).await
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), Error> {
        self.enter(&self.counts.delete)?;
        self.inner.delete(key).await
    }
}
