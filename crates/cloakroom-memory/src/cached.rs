//! [`CachedStore`]: any store behind a moka write-through cache (the
//! `cached_db` engine).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloakroom_core::config::{ConfigError, Settings, millis_or};
use cloakroom_core::{Call, Error, Record, SessionStore, StoreKey};
use moka::ops::compute::Op;
use moka::sync::Cache;
use time::OffsetDateTime;

use crate::store::{Hasher, max_entries};

/// Default local time-to-live of a cached copy (`SESSION_CACHED_DB_TTL_MS`).
pub const DEFAULT_LOCAL_TTL: Duration = Duration::from_secs(5);

/// A local copy of a session, and until when it may be served.
#[derive(Debug)]
struct LocalCopy {
    record: Record,
    /// The local TTL counted from the start of the last call that told this
    /// process what the inner store holds: the read that fetched the copy,
    /// or the write (create or update) that the inner store accepted. A
    /// touch does not move it (see `CachedStore::touched`).
    fresh_until: Instant,
}

impl LocalCopy {
    /// Whether the copy may still be served: the session is live and the
    /// copy is fresh.
    fn is_live(&self) -> bool {
        Instant::now() < self.fresh_until && !self.record.is_expired()
    }
}

/// Lets every local copy live until its session's deadline or until it is
/// no longer fresh, whichever comes first.
struct UntilStale;

impl UntilStale {
    fn ttl(copy: &LocalCopy, now: Instant) -> Duration {
        let remaining = copy.record.remaining().unwrap_or(Duration::ZERO);
        remaining.min(copy.fresh_until.saturating_duration_since(now))
    }
}

impl moka::Expiry<StoreKey, Arc<LocalCopy>> for UntilStale {
    fn expire_after_create(
        &self,
        _: &StoreKey,
        value: &Arc<LocalCopy>,
        now: Instant,
    ) -> Option<Duration> {
        Some(Self::ttl(value, now))
    }

    fn expire_after_update(
        &self,
        _: &StoreKey,
        value: &Arc<LocalCopy>,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(Self::ttl(value, now))
    }
}

/// A store (the database, for `cached_db`) behind a write-through cache in
/// this process.
///
/// * **Reads** look in the cache first; on a miss they load from the inner
///   store and keep the result for the rest of its lifetime, but at most the
///   local TTL (see below).
/// * **Writes and deletes** go to the inner store first and reach the cache
///   only when the inner store took them: a write the database refused is
///   never served from the cache. A delete, a failed write, or an update that
///   finds the session gone evicts the local copy at once.
/// * The cache cannot fail a request: when it is full it evicts, and a miss
///   goes to the inner store.
///
/// # Staleness across processes
///
/// The cache lives in one process. When another process logs a session out
/// (or changes it), this process may go on serving its cached copy until
/// that copy's local TTL runs out; it never sees the change before the
/// database has it. Precisely: a copy is served at most the local TTL
/// (`SESSION_CACHED_DB_TTL_MS`, default 5 s) after the start of the last
/// call through which this process learnt what the database holds for the
/// session, which is
///
/// * the read that fetched the copy from the database, or
/// * a create or update from this process that the database accepted (it
///   wrote that very content).
///
/// A touch does not count, however often it comes: the database accepting
/// it says only that the row still exists, not that its data is still what
/// this process cached (another process may have updated it). A touch moves
/// the cached copy's deadline but keeps its local expiry, so a session that
/// this process serves on every request is still read from the database
/// again once per TTL, and a change made through another process is seen
/// within the TTL (a logout sooner, if a touch finds the row gone). The TTL
/// is that bound: lower it for tighter logout across processes, at the
/// cost of more database reads.
///
/// Within the bound a write from this process starts from the copy it
/// served: an update built on a stale copy replaces what another process
/// wrote meanwhile (the last writer wins, as with the `db` engine when two
/// requests race), and an update or touch of a session deleted meanwhile
/// finds no row and evicts the copy.
///
/// # When the inner store is down
///
/// Reads of sessions cached in this process keep working until their local
/// TTL ends; every write (save, touch, delete) fails, and the layer answers
/// 503. No write ever succeeds in the cache alone.
#[derive(Clone)]
pub struct CachedStore {
    inner: Arc<dyn SessionStore>,
    cache: Cache<StoreKey, Arc<LocalCopy>, Hasher>,
    /// Keys deleted in the last local TTL. A read that fetched a session
    /// from the inner store just before it was deleted must not put it back
    /// into the cache after the delete evicted it. (A read that took longer
    /// than the TTL puts back a copy that is already stale.)
    gone: Cache<StoreKey, (), Hasher>,
    ttl: Duration,
}

impl std::fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("inner", &self.inner)
            .field("local_ttl", &self.ttl)
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl CachedStore {
    /// Puts `inner` behind a cache of at most `max_entries` sessions, each
    /// kept at most `ttl`.
    pub fn new(inner: Arc<dyn SessionStore>, max_entries: u64, ttl: Duration) -> Self {
        Self {
            inner,
            cache: Cache::builder()
                .max_capacity(max_entries)
                .expire_after(UntilStale)
                .build_with_hasher(Hasher::default()),
            gone: Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .build_with_hasher(Hasher::default()),
            ttl,
        }
    }

    /// Builds the cache from `SESSION_CACHE_MAX_ENTRIES` and
    /// `SESSION_CACHED_DB_TTL_MS` (default [`DEFAULT_LOCAL_TTL`]).
    ///
    /// # Errors
    /// When a setting is not a whole number above zero.
    pub fn from_settings(
        inner: Arc<dyn SessionStore>,
        settings: &dyn Settings,
    ) -> Result<Self, ConfigError> {
        let ttl = millis_or(
            settings,
            crate::settings::CACHED_DB_TTL_MS,
            DEFAULT_LOCAL_TTL,
        )?;
        Ok(Self::new(inner, max_entries(settings)?, ttl))
    }

    /// The longest a cached copy is served without asking the inner store,
    /// counted from the start of the read or write that last told this
    /// process what the inner store holds (a touch does not count).
    pub fn local_ttl(&self) -> Duration {
        self.ttl
    }

    /// A copy of what the inner store held when a call that started at
    /// `started` read or wrote it.
    fn copy(&self, record: Record, started: Instant) -> Arc<LocalCopy> {
        Arc::new(LocalCopy {
            record,
            fresh_until: started + self.ttl,
        })
    }

    /// Caches what a write that started at `started` stored: the inner
    /// store took this very content, so the copy's local TTL starts again.
    fn keep(&self, key: &StoreKey, record: Record, started: Instant) {
        self.cache.insert(*key, self.copy(record, started));
        self.unless_gone(key);
    }

    /// Caches what a read that started at `started` fetched, unless
    /// something fresher got there first (a write that finished meanwhile).
    fn fill(&self, key: &StoreKey, record: Record, started: Instant) {
        let _ = self
            .cache
            .entry_by_ref(key)
            .or_insert(self.copy(record, started));
        self.unless_gone(key);
    }

    /// Moves the deadline of the cached copy after the inner store accepted
    /// a touch; `seen` is the copy that was cached when the touch started.
    ///
    /// The copy keeps its local expiry (`fresh_until`): the touch says the
    /// row still exists, not that its data is still what we cached, so it
    /// must not extend how long the copy is served. It is kept rather than
    /// dropped because the layer touches on every request of a session with
    /// `SESSION_SAVE_EVERY_REQUEST` or a refreshed idle timeout: dropping it
    /// would make each of those requests read the database, as the `db`
    /// engine does, where keeping it costs one read per local TTL and gives
    /// the same bound.
    ///
    /// If the copy is no longer the one `seen` (a write or read of this
    /// process replaced or filled it while the touch was in flight), which
    /// of the two reached the database last is unknown, so the copy is
    /// dropped and the next read asks the database. Without a copy there is
    /// nothing to move: the next read loads the touched record.
    fn touched(&self, key: &StoreKey, seen: Option<Arc<LocalCopy>>, expires_at: OffsetDateTime) {
        let _ = self
            .cache
            .entry_by_ref(key)
            .and_compute_with(|current| match (current, seen) {
                (Some(current), Some(seen)) if Arc::ptr_eq(current.value(), &seen) => {
                    Op::Put(Arc::new(LocalCopy {
                        record: Record {
                            expires_at,
                            ..seen.record.clone()
                        },
                        fresh_until: seen.fresh_until,
                    }))
                }
                (Some(_), _) => Op::Remove,
                (None, _) => Op::Nop,
            });
        self.unless_gone(key);
    }

    /// Drops what was just cached if the session was deleted meanwhile: a
    /// read or write that finished in the inner store before a delete may
    /// reach the cache after it. Checked after the insert: a delete marks the
    /// key before it evicts, so either its eviction comes after the insert,
    /// or this check sees the mark. Ids are never reused, so a marked key
    /// never holds a live session again.
    fn unless_gone(&self, key: &StoreKey) {
        if self.gone.contains_key(key) {
            self.cache.invalidate(key);
        }
    }

    /// Forgets the session here and stops reads in flight from caching it.
    fn forget(&self, key: &StoreKey) {
        self.gone.insert(*key, ());
        self.cache.invalidate(key);
    }

    /// Ends a write on the inner store: on `Ok(true)` runs `accepted` to
    /// bring the cache up to date, on anything else drops the local copy,
    /// since it may no longer match the database.
    fn write_through(
        &self,
        key: &StoreKey,
        result: Result<bool, Error>,
        accepted: impl FnOnce(),
    ) -> Result<bool, Error> {
        match &result {
            Ok(true) => accepted(),
            // The session is gone from the inner store.
            Ok(false) => self.forget(key),
            Err(_) => self.cache.invalidate(key),
        }
        result
    }
}

/// A copy of the session a cache lookup found, unless it expired or is no
/// longer fresh. (moka hides entries past their expiry too; this checks
/// against the clock as it is now.)
fn live_copy(found: Option<Arc<LocalCopy>>) -> Option<Record> {
    found
        .filter(|hit| hit.is_live())
        .map(|hit| hit.record.clone())
}

/// A load this process holds a copy of is answered at once; everything
/// else waits for the inner store.
impl SessionStore for CachedStore {
    fn engine(&self) -> &'static str {
        "cached_db"
    }

    fn backend(&self) -> Option<&'static str> {
        self.inner.backend()
    }

    fn load<'a>(&'a self, key: &'a StoreKey) -> Call<'a, Option<Record>> {
        if let Some(hit) = live_copy(self.cache.get(key)) {
            return Call::ready(Ok(Some(hit)));
        }
        Call::pending(async move {
            let started = Instant::now();
            let found = self.inner.load(key).await?;
            if let Some(record) = &found {
                self.fill(key, record.clone(), started);
            }
            Ok(found)
        })
    }

    fn create<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        Call::pending(async move {
            let started = Instant::now();
            let result = self.inner.create(key, record).await;
            // A key that was taken is somebody else's session: leave its copy.
            if matches!(result, Ok(false)) {
                return result;
            }
            self.write_through(key, result, || self.keep(key, record.clone(), started))
        })
    }

    fn update<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        Call::pending(async move {
            let started = Instant::now();
            let result = self.inner.update(key, record).await;
            self.write_through(key, result, || self.keep(key, record.clone(), started))
        })
    }

    fn touch<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        Call::pending(async move {
            let seen = self.cache.get(key);
            let result = self.inner.touch(key, record).await;
            // As in the database, only the deadline of the copy moves.
            let expires_at = record.expires_at;
            self.write_through(key, result, || self.touched(key, seen, expires_at))
        })
    }

    fn delete<'a>(&'a self, key: &'a StoreKey) -> Call<'a, ()> {
        Call::pending(async move {
            // Evict first: even if the database is down, this process stops
            // serving the session at once.
            self.forget(key);
            self.inner.delete(key).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use cloakroom_core::record::Data;
    use cloakroom_core::{ErrorKind, Id};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// The "database": a memory store that counts loads and can go down.
    #[derive(Debug)]
    struct Db {
        inner: MemoryStore,
        loads: AtomicUsize,
        down: AtomicBool,
    }

    impl Default for Db {
        fn default() -> Self {
            Self {
                inner: MemoryStore::new(100),
                loads: AtomicUsize::new(0),
                down: AtomicBool::new(false),
            }
        }
    }

    impl Db {
        fn check(&self) -> Result<(), Error> {
            if self.down.load(Ordering::SeqCst) {
                Err(Error::new(ErrorKind::Backend, "down"))
            } else {
                Ok(())
            }
        }
    }

    /// Always waits, as a database would.
    impl SessionStore for Db {
        fn engine(&self) -> &'static str {
            "db"
        }
        fn load<'a>(&'a self, key: &'a StoreKey) -> Call<'a, Option<Record>> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            Call::pending(async move {
                self.check()?;
                self.inner.load(key).await
            })
        }
        fn create<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
            Call::pending(async move {
                self.check()?;
                self.inner.create(key, record).await
            })
        }
        fn update<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
            Call::pending(async move {
                self.check()?;
                self.inner.update(key, record).await
            })
        }
        fn touch<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
            Call::pending(async move {
                self.check()?;
                self.inner.touch(key, record).await
            })
        }
        fn delete<'a>(&'a self, key: &'a StoreKey) -> Call<'a, ()> {
            Call::pending(async move {
                self.check()?;
                self.inner.delete(key).await
            })
        }
    }

    fn record(v: &str) -> Record {
        let mut data = Data::new();
        data.insert("v".into(), serde_json::json!(v));
        Record::new(data, OffsetDateTime::now_utc() + time::Duration::hours(1))
    }

    /// `loaded`, to be touched to `at`.
    fn touched(loaded: Record, at: OffsetDateTime) -> Record {
        Record {
            expires_at: at,
            ..loaded
        }
    }

    fn setup(ttl: Duration) -> (Arc<Db>, CachedStore, StoreKey) {
        let db = Arc::new(Db::default());
        let cached = CachedStore::new(db.clone(), 100, ttl);
        (db, cached, Id::generate().unwrap().store_key())
    }

    #[tokio::test]
    async fn reads_after_the_first_stay_local() {
        let (db, cached, key) = setup(Duration::from_secs(60));
        db.inner.create(&key, &record("a")).await.unwrap();
        assert!(cached.load(&key).await.unwrap().is_some());
        assert!(cached.load(&key).await.unwrap().is_some());
        assert_eq!(db.loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn failed_writes_never_reach_the_cache() {
        let (db, cached, key) = setup(Duration::from_secs(60));
        assert!(cached.create(&key, &record("a")).await.unwrap());
        db.down.store(true, Ordering::SeqCst);
        assert!(cached.update(&key, &record("b")).await.is_err());
        // The copy is gone rather than wrong; with the database down the
        // read fails instead of serving "b" or a stale "a".
        assert!(cached.load(&key).await.is_err());
        db.down.store(false, Ordering::SeqCst);
        assert_eq!(cached.load(&key).await.unwrap().unwrap().data["v"], "a");
    }

    #[tokio::test]
    async fn deletes_elsewhere_show_within_the_ttl() {
        let (db, cached, key) = setup(Duration::from_millis(200));
        assert!(cached.create(&key, &record("a")).await.unwrap());
        db.inner.delete(&key).await.unwrap();
        // Served from the cache until the local TTL ends...
        assert!(cached.load(&key).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(300)).await;
        // ...then the database answers.
        assert!(cached.load(&key).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn updates_of_deleted_sessions_evict() {
        let (db, cached, key) = setup(Duration::from_secs(60));
        assert!(cached.create(&key, &record("a")).await.unwrap());
        db.inner.delete(&key).await.unwrap();
        assert!(!cached.update(&key, &record("b")).await.unwrap());
        assert!(cached.load(&key).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn touch_refreshes_the_cached_deadline() {
        let (db, cached, key) = setup(Duration::from_secs(60));
        assert!(cached.create(&key, &record("a")).await.unwrap());
        let later = OffsetDateTime::now_utc() + time::Duration::hours(9);
        assert!(
            cached
                .touch(&key, &touched(record("a"), later))
                .await
                .unwrap()
        );
        assert_eq!(cached.load(&key).await.unwrap().unwrap().expires_at, later);
        assert_eq!(db.loads.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn touches_do_not_extend_the_local_ttl() {
        let (db, cached, key) = setup(Duration::from_millis(400));
        assert!(cached.create(&key, &record("a")).await.unwrap());
        // Another process changes the session; this one keeps touching it.
        assert!(db.inner.update(&key, &record("b")).await.unwrap());
        let later = OffsetDateTime::now_utc() + time::Duration::hours(9);
        let loaded = touched(record("a"), later);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(cached.touch(&key, &loaded).await.unwrap());
        assert_eq!(cached.load(&key).await.unwrap().unwrap().data["v"], "a");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(cached.touch(&key, &loaded).await.unwrap());
        // 500 ms after the create, past the TTL: the database answers.
        let seen = cached.load(&key).await.unwrap().unwrap();
        assert_eq!(seen.data["v"], "b");
        assert_eq!(db.loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn updates_restart_the_local_ttl() {
        let (db, cached, key) = setup(Duration::from_millis(1000));
        assert!(cached.create(&key, &record("a")).await.unwrap());
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(cached.update(&key, &record("b")).await.unwrap());
        tokio::time::sleep(Duration::from_millis(600)).await;
        // 1.2 s after the create, 0.6 s after the update: still local.
        assert_eq!(cached.load(&key).await.unwrap().unwrap().data["v"], "b");
        assert_eq!(db.loads.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_touch_racing_a_write_does_not_cache_the_old_data() {
        let (db, cached, key) = setup(Duration::from_secs(60));
        assert!(cached.create(&key, &record("a")).await.unwrap());
        // A touch saw the copy "a"; an update replaced it before the touch
        // reached the cache.
        let seen = cached.cache.get(&key);
        assert!(cached.update(&key, &record("b")).await.unwrap());
        // Whole seconds, which the store keeps as they are.
        let later = (OffsetDateTime::now_utc() + time::Duration::hours(9))
            .replace_nanosecond(0)
            .unwrap();
        assert!(
            db.inner
                .touch(&key, &touched(record("a"), later))
                .await
                .unwrap()
        );
        cached.touched(&key, seen, later);
        let found = cached.load(&key).await.unwrap().unwrap();
        assert_eq!(
            (found.data["v"].as_str(), found.expires_at),
            (Some("b"), later)
        );
    }

    #[tokio::test]
    async fn a_read_racing_a_delete_does_not_cache_the_session_again() {
        let (db, cached, key) = setup(Duration::from_secs(60));
        assert!(cached.create(&key, &record("a")).await.unwrap());
        // A read fetched the session from the database just before the
        // delete; it reaches the cache only after the delete is done.
        let fetched = db.inner.load(&key).await.unwrap().unwrap();
        cached.delete(&key).await.unwrap();
        cached.fill(&key, fetched, Instant::now());
        assert!(cached.load(&key).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_write_racing_a_delete_does_not_cache_the_session_again() {
        let (_db, cached, key) = setup(Duration::from_secs(60));
        assert!(cached.create(&key, &record("a")).await.unwrap());
        // An update that the database took just before the delete reaches
        // the cache only after the delete is done.
        cached.delete(&key).await.unwrap();
        cached.keep(&key, record("b"), Instant::now());
        assert!(cached.load(&key).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_read_does_not_overwrite_a_fresher_write() {
        let (db, cached, key) = setup(Duration::from_secs(60));
        assert!(cached.create(&key, &record("a")).await.unwrap());
        let stale = db.inner.load(&key).await.unwrap().unwrap();
        assert!(cached.update(&key, &record("b")).await.unwrap());
        cached.fill(&key, stale, Instant::now());
        assert_eq!(cached.load(&key).await.unwrap().unwrap().data["v"], "b");
    }

    #[tokio::test]
    async fn delete_evicts_even_when_the_database_fails() {
        let (db, cached, key) = setup(Duration::from_secs(60));
        assert!(cached.create(&key, &record("a")).await.unwrap());
        db.down.store(true, Ordering::SeqCst);
        assert!(cached.delete(&key).await.is_err());
        assert!(
            cached.load(&key).await.is_err(),
            "served a session after its delete"
        );
    }

    #[tokio::test]
    async fn warm_cache_serves_reads_while_the_database_is_down() {
        let (db, cached, key) = setup(Duration::from_secs(60));
        assert!(cached.create(&key, &record("a")).await.unwrap());
        db.down.store(true, Ordering::SeqCst);
        assert!(cached.load(&key).await.unwrap().is_some());
        assert!(
            cached
                .create(&Id::generate().unwrap().store_key(), &record("b"))
                .await
                .is_err()
        );
    }
}
