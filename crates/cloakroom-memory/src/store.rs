use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloakroom_core::config::{ConfigError, Settings, parse_or};
use cloakroom_core::record::{Origin, from_millis, millis, now_millis};
use cloakroom_core::{Error, Record, SessionStore, StoreKey, async_trait};
use futures_util::FutureExt as _;
use moka::future::Cache;
use time::OffsetDateTime;

/// The caches' hasher. Their keys are SHA-256 digests of ids this process
/// issued, so a fast hasher (seeded per process) is enough; the standard
/// SipHash cost more than the rest of a cache lookup.
pub(crate) type Hasher = foldhash::fast::RandomState;

/// Default bound on the number of sessions kept (`SESSION_CACHE_MAX_ENTRIES`).
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;

/// A session store in this process's memory, on a moka cache.
///
/// Each session is one cache entry keyed by the 32 bytes of its store key,
/// holding the record's bytes (MessagePack: compact, and quick to decode)
/// and its deadline. Updates and touches change an entry in place
/// and never insert one, and a delete removes the entry and empties it, so a
/// concurrent delete is never undone by an update.
///
/// A record it loads carries its entry as [`Record::origin`]; an update of
/// that record under the same key changes the entry without a second
/// lookup, unless the new deadline is past the one moka has for the entry
/// (a little past the session's). Every entry that leaves the cache is
/// emptied, so such an update cannot save into a session that is gone.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<[u8; 32], Arc<Slot>, Hasher>,
    max_entries: u64,
    /// Tells this store's [`Origin`] notes from another's.
    tag: u64,
}

/// Where the next store's tag comes from.
static TAGS: AtomicU64 = AtomicU64::new(0);

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_entries", &self.max_entries)
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

/// A session as the memory engine keeps it: the record's bytes
/// ([`Record::to_bytes`]) and its deadline, which a touch moves without
/// rewriting the bytes.
struct Stored {
    /// Shared with the records loaded from it, which decode values from
    /// these bytes on first use instead of copying them.
    bytes: Bytes,
    /// The deadline in milliseconds since the Unix epoch (the precision of
    /// every store; half the size of an `OffsetDateTime`, which matters a
    /// little when a hundred thousand sessions each hold one).
    deadline_ms: i64,
}

impl Stored {
    fn encode(record: &Record) -> Result<Self, Error> {
        Ok(Self {
            bytes: Bytes::from(record.to_bytes()?),
            deadline_ms: record.expires_at_millis(),
        })
    }

    fn decode(&self) -> Result<Record, Error> {
        let mut record = Record::from_shared(self.bytes.clone())?;
        // The bytes end with the deadline they were written with (see
        // `deadline_field`); only a touch since then makes it differ.
        if !self.bytes.ends_with(&self.deadline_ms.to_be_bytes()) {
            record.expires_at = from_millis(self.deadline_ms)?;
        }
        Ok(record)
    }

    fn is_live_at(&self, now_ms: i64) -> bool {
        now_ms < self.deadline_ms
    }
}

/// One cache entry: the session, or nothing once it was deleted or left the
/// cache (a request holding the entry since its load then finds it empty).
struct Slot {
    current: Mutex<Option<Stored>>,
    /// The deadline moka has for this entry, in whole seconds since the Unix
    /// epoch: never before the session's own, so moka never drops a live
    /// session, and it only ever moves later (see [`UntilSlotDeadline`]).
    moka_deadline: AtomicU32,
    /// Set when `moka_deadline` moved without moka seeing it, until moka has
    /// read it.
    moved: AtomicBool,
}

/// The most that moka's deadline for an entry runs ahead of the session's.
const HEADROOM_MS: i64 = 3_600_000;

/// The deadline to give moka for a session whose deadline becomes
/// `deadline_ms` at `now_ms`: later by an eighth of the time left, at most
/// an hour. The saves that follow each move the session's deadline a
/// little later, and while it stays within this one they need not tell moka
/// (which takes a second lookup); an expired session stays in memory at
/// most that much longer before moka drops it.
fn moka_deadline_for(deadline_ms: i64, now_ms: i64) -> u32 {
    let headroom = (deadline_ms.saturating_sub(now_ms) / 8).clamp(0, HEADROOM_MS);
    let ms = deadline_ms.saturating_add(headroom);
    // Rounded up to whole seconds, which fit in 32 bits until 2106; a
    // later deadline is told as that, and every save past it tells moka.
    u32::try_from(ms.saturating_add(999).div_euclid(1000).max(0)).unwrap_or(u32::MAX)
}

impl Slot {
    fn new(stored: Stored, now_ms: i64) -> Arc<Self> {
        Arc::new(Self {
            moka_deadline: AtomicU32::new(moka_deadline_for(stored.deadline_ms, now_ms)),
            current: Mutex::new(Some(stored)),
            moved: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Stored>> {
        // Nothing panics while holding the lock; if something did, the data
        // is still a whole value.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// moka's deadline for this entry, in milliseconds since the Unix epoch.
    fn moka_deadline_ms(&self) -> i64 {
        i64::from(self.moka_deadline.load(Ordering::Acquire)) * 1000
    }

    /// Moves moka's deadline to `secs` unless it is later already, and
    /// returns the time left until it.
    fn raise_moka_deadline(&self, secs: u32) -> Duration {
        self.moka_deadline.fetch_max(secs, Ordering::AcqRel);
        until(self.moka_deadline_ms())
    }
}

/// moka's per-entry expiry: each entry lives until the deadline in its
/// [`Slot::moka_deadline`], which is never before the session's.
///
/// A save whose new deadline is past it announces a later one in [`MOVING`]
/// before the cache lookup that finds the entry, so that this lookup
/// already gives moka the new expiry. If the announcement did not reach
/// moka (another task on this thread replaced it while the lookup waited),
/// the slot is marked `moved` and looked up once more, and that read gives
/// moka the slot's deadline. Other reads leave moka's figure as it is.
struct UntilSlotDeadline;

/// A deadline move announced to the expiry policy.
#[derive(Clone, Copy)]
struct Moving {
    digest: [u8; 32],
    /// The new [`Slot::moka_deadline`].
    moka_deadline: u32,
    /// Set by the policy once moka has the new deadline.
    taken: bool,
}

thread_local! {
    /// The deadline move this thread is about to make (see [`UntilSlotDeadline`]).
    static MOVING: Cell<Option<Moving>> = const { Cell::new(None) };
}

/// Time from now until the deadline `deadline_ms`, zero once passed.
fn until(deadline_ms: i64) -> Duration {
    let left = deadline_ms.saturating_sub(now_millis());
    Duration::from_millis(u64::try_from(left).unwrap_or(0))
}

impl moka::Expiry<[u8; 32], Arc<Slot>> for UntilSlotDeadline {
    fn expire_after_create(&self, _: &[u8; 32], slot: &Arc<Slot>, _: Instant) -> Option<Duration> {
        Some(until(slot.moka_deadline_ms()))
    }

    fn expire_after_read(
        &self,
        digest: &[u8; 32],
        slot: &Arc<Slot>,
        _: Instant,
        until_now: Option<Duration>,
        _: Instant,
    ) -> Option<Duration> {
        let announced = MOVING.get().filter(|m| m.digest == *digest);
        if let Some(moving) = announced {
            MOVING.set(Some(Moving {
                taken: true,
                ..moving
            }));
            return Some(slot.raise_moka_deadline(moving.moka_deadline));
        }
        if slot.moved.load(Ordering::Relaxed) && slot.moved.swap(false, Ordering::Relaxed) {
            Some(until(slot.moka_deadline_ms()))
        } else {
            until_now
        }
    }

    fn expire_after_update(
        &self,
        _: &[u8; 32],
        slot: &Arc<Slot>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(until(slot.moka_deadline_ms()))
    }
}

/// Reads `SESSION_CACHE_MAX_ENTRIES`.
pub(crate) fn max_entries(settings: &dyn Settings) -> Result<u64, ConfigError> {
    const NAME: &str = "SESSION_CACHE_MAX_ENTRIES";
    let max: u64 = parse_or(
        settings,
        NAME,
        DEFAULT_MAX_ENTRIES,
        "a whole number above 0",
    )?;
    if max == 0 {
        return Err(ConfigError::new(NAME, "0", "a whole number above 0"));
    }
    Ok(max)
}

impl MemoryStore {
    /// A store that keeps at most `max_entries` sessions.
    pub fn new(max_entries: u64) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(max_entries)
                // LRU, not moka's default TinyLFU admission: when full, the
                // session idle the longest goes, and a fresh login is always
                // kept (TinyLFU may refuse a new, not yet popular key).
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .expire_after(UntilSlotDeadline)
                // An entry that leaves the cache, whatever the cause, leaves
                // empty: a request still holding it from its load then finds
                // no session to save into.
                .eviction_listener(|_, slot: Arc<Slot>, _| *slot.lock() = None)
                .build_with_hasher(Hasher::default()),
            max_entries,
            tag: TAGS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Builds the store from `SESSION_CACHE_MAX_ENTRIES` (default
    /// [`DEFAULT_MAX_ENTRIES`]).
    ///
    /// # Errors
    /// When the setting is not a whole number above zero.
    pub fn from_settings(settings: &dyn Settings) -> Result<Self, ConfigError> {
        Ok(Self::new(max_entries(settings)?))
    }

    /// The bound on the number of sessions.
    pub fn max_entries(&self) -> u64 {
        self.max_entries
    }

    /// How many sessions the cache holds, as of its last bookkeeping (see
    /// [`MemoryStore::run_pending_tasks`]).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Does the cache's pending bookkeeping now (evictions, expiries, entry
    /// counts) instead of on later calls; for tests and measurements.
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// Changes the live session under `key` in place, its deadline becoming
    /// `deadline_ms`, after finding it in the cache; false when there is none
    /// (never stored, expired or deleted).
    async fn change_live(
        &self,
        key: &StoreKey,
        deadline_ms: i64,
        change: impl FnOnce(&mut Stored),
    ) -> bool {
        let digest = key.digest();
        let now = now_millis();
        let moka_deadline = moka_deadline_for(deadline_ms, now);
        MOVING.set(Some(Moving {
            digest,
            moka_deadline,
            taken: false,
        }));
        let found = self.cache.get(&digest).await;
        let told_moka = MOVING.take().is_some_and(|m| m.taken && m.digest == digest);
        let Some(slot) = found else {
            return false;
        };
        {
            let mut current = slot.lock();
            match current.as_mut() {
                Some(stored) if stored.is_live_at(now) => change(stored),
                // moka may have been told a later deadline for a session
                // that is gone: harmless, as loads check liveness and the
                // entry still goes when moka evicts or expires it.
                _ => return false,
            }
            if told_moka {
                return true;
            }
            slot.moka_deadline
                .fetch_max(moka_deadline, Ordering::AcqRel);
            slot.moved.store(true, Ordering::Relaxed);
        }
        // The announcement did not reach moka, which still has this entry's
        // earlier deadline; one more read makes it take the new one.
        let _ = self.cache.get(&digest).await;
        true
    }

    /// The cache entry that `record` was loaded from, if it came from this
    /// store under `key`.
    fn loaded_slot<'r>(&self, key: &StoreKey, record: &'r Record) -> Option<&'r Slot> {
        record.origin.as_ref()?.handle_for(self.tag, key)
    }

    /// The live record in the entry a lookup of `key` found, if any.
    fn record_in(&self, key: &StoreKey, found: Option<Arc<Slot>>) -> Result<Option<Record>, Error> {
        let Some(slot) = found else {
            return Ok(None);
        };
        let mut record = match slot.lock().as_ref() {
            Some(stored) if stored.is_live_at(now_millis()) => stored.decode()?,
            _ => return Ok(None),
        };
        record.origin = Some(Origin::new(self.tag, key, slot));
        Ok(Some(record))
    }

    /// Updates a record that the same request loaded from this store under
    /// `key`, in the entry it carries, without a cache lookup. `Err` hands
    /// `encoded` back when that cannot be done so: the record did not come
    /// from here, or its new deadline is past the one moka has, which a
    /// lookup must tell moka (see [`UntilSlotDeadline`]).
    fn update_loaded(
        &self,
        key: &StoreKey,
        record: &Record,
        encoded: Stored,
    ) -> Result<bool, Stored> {
        let Some(slot) = self.loaded_slot(key, record) else {
            return Err(encoded);
        };
        let mut current = slot.lock();
        match current.as_mut() {
            Some(stored) if stored.is_live_at(now_millis()) => {
                if encoded.deadline_ms <= slot.moka_deadline_ms() {
                    *stored = encoded;
                    Ok(true)
                } else {
                    Err(encoded)
                }
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn engine(&self) -> &'static str {
        "memory"
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        let found = self.cache.get(&key.digest()).await;
        self.record_in(key, found)
    }

    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, Error> {
        let digest = key.digest();
        let now = now_millis();
        let fresh = Slot::new(Stored::encode(record)?, now);
        let entry = self
            .cache
            .entry(digest)
            .or_insert_with(async { Arc::clone(&fresh) })
            .await;
        if entry.is_fresh() {
            return Ok(true);
        }
        let slot = entry.into_value();
        let emptied = {
            let mut current = slot.lock();
            match current.as_ref() {
                Some(stored) if stored.is_live_at(now) => return Ok(false),
                // An expired session moka has not dropped yet: take its place.
                Some(_) => {
                    *current = fresh.lock().take();
                    let moka_deadline = fresh.moka_deadline.load(Ordering::Acquire);
                    slot.moka_deadline
                        .fetch_max(moka_deadline, Ordering::AcqRel);
                    slot.moved.store(true, Ordering::Relaxed);
                    false
                }
                // Emptied by a delete that is removing it.
                None => true,
            }
        };
        if emptied {
            self.cache.insert(digest, fresh).await;
        } else {
            let _ = self.cache.get(&digest).await;
        }
        Ok(true)
    }

    async fn update(&self, key: &StoreKey, record: &Record) -> Result<bool, Error> {
        let encoded = match self.update_loaded(key, record, Stored::encode(record)?) {
            Ok(updated) => return Ok(updated),
            Err(encoded) => encoded,
        };
        let deadline_ms = encoded.deadline_ms;
        Ok(self
            .change_live(key, deadline_ms, |stored| *stored = encoded)
            .await)
    }

    async fn touch(&self, key: &StoreKey, expires_at: OffsetDateTime) -> Result<bool, Error> {
        let deadline_ms = millis(expires_at);
        Ok(self
            .change_live(key, deadline_ms, |stored| stored.deadline_ms = deadline_ms)
            .await)
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), Error> {
        if let Some(slot) = self.cache.remove(&key.digest()).await {
            *slot.lock() = None;
        }
        Ok(())
    }

    fn load_now(&self, key: &StoreKey) -> Option<Result<Option<Record>, Error>> {
        // moka's lookup waits only when its bookkeeping is contended; such a
        // load is left to `load` (moka's calls may be dropped half-way).
        let found = self.cache.get(&key.digest()).now_or_never()?;
        Some(self.record_in(key, found))
    }

    fn update_now(&self, key: &StoreKey, record: &Record) -> Option<Result<bool, Error>> {
        match Stored::encode(record) {
            Ok(encoded) => self.update_loaded(key, record, encoded).ok().map(Ok),
            Err(err) => Some(Err(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloakroom_core::record::Data;
    use cloakroom_core::{Expiry, Id};
    use serde_json::json;
    use time::Duration as TimeDuration;

    /// `secs` from now, in whole milliseconds as the store keeps deadlines.
    fn in_secs(secs: i64) -> OffsetDateTime {
        from_millis(millis(
            OffsetDateTime::now_utc() + TimeDuration::seconds(secs),
        ))
        .unwrap()
    }

    fn record(secs: i64) -> Record {
        let mut data = Data::new();
        data.insert("k".into(), json!("v"));
        Record::new(data, in_secs(secs))
    }

    fn key() -> StoreKey {
        Id::generate().unwrap().store_key()
    }

    #[tokio::test]
    async fn create_never_overwrites() {
        let store = MemoryStore::new(10);
        let k = key();
        assert!(store.create(&k, &record(60)).await.unwrap());
        let mut other = record(60);
        other.data.insert("k".into(), json!("other"));
        assert!(!store.create(&k, &other).await.unwrap());
        assert_eq!(store.load(&k).await.unwrap().unwrap().data["k"], json!("v"));
    }

    #[tokio::test]
    async fn update_does_not_resurrect() {
        let store = MemoryStore::new(10);
        let k = key();
        assert!(!store.update(&k, &record(60)).await.unwrap());
        assert!(store.create(&k, &record(60)).await.unwrap());
        store.delete(&k).await.unwrap();
        assert!(!store.update(&k, &record(60)).await.unwrap());
        assert!(store.load(&k).await.unwrap().is_none());
        assert!(!store.touch(&k, OffsetDateTime::now_utc()).await.unwrap());
    }

    #[tokio::test]
    async fn touch_moves_deadline_keeps_data() {
        let store = MemoryStore::new(10);
        let k = key();
        let r = record(60);
        store.create(&k, &r).await.unwrap();
        let later = in_secs(5 * 3600);
        assert!(store.touch(&k, later).await.unwrap());
        let back = store.load(&k).await.unwrap().unwrap();
        assert_eq!(back.expires_at, later);
        assert_eq!(back.data, r.data);
    }

    #[tokio::test]
    async fn expired_records_are_gone() {
        let store = MemoryStore::new(10);
        let k = key();
        let mut r = record(60);
        r.expires_at = OffsetDateTime::now_utc() + TimeDuration::milliseconds(50);
        store.create(&k, &r).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(store.load(&k).await.unwrap().is_none());
        // An expired record does not block a new one under the same key.
        assert!(store.create(&k, &record(60)).await.unwrap());
    }

    #[tokio::test]
    async fn updates_and_touches_move_the_cache_deadline() {
        let store = MemoryStore::new(10);
        let (a, b) = (key(), key());
        let mut short = record(60);
        short.expires_at = OffsetDateTime::now_utc() + TimeDuration::milliseconds(300);
        store.create(&a, &short).await.unwrap();
        store.create(&b, &short).await.unwrap();
        assert!(store.update(&a, &record(60)).await.unwrap());
        let later = OffsetDateTime::now_utc() + TimeDuration::minutes(1);
        assert!(store.touch(&b, later).await.unwrap());
        tokio::time::sleep(Duration::from_millis(500)).await;
        store.run_pending_tasks().await;
        // Still there after the first deadline: moka took the new one.
        assert!(store.load(&a).await.unwrap().is_some());
        assert!(store.load(&b).await.unwrap().is_some());
        assert_eq!(store.entry_count(), 2);
    }

    #[tokio::test]
    async fn a_deadline_move_reaches_moka_only_through_the_lookup_of_its_own_key() {
        let store = MemoryStore::new(10);
        let (a, b) = (key(), key());
        store.create(&a, &record(60)).await.unwrap();
        store.create(&b, &record(60)).await.unwrap();
        let deadline = OffsetDateTime::now_utc() + TimeDuration::minutes(5);
        MOVING.set(Some(Moving {
            digest: a.digest(),
            moka_deadline: moka_deadline_for(millis(deadline), now_millis()),
            taken: false,
        }));
        // Another key's lookup leaves the announcement alone, so a move it
        // did not reach falls back to the second lookup.
        let _ = store.cache.get(&b.digest()).await;
        assert!(MOVING.get().is_some_and(|m| !m.taken));
        let _ = store.cache.get(&a.digest()).await;
        assert!(MOVING.take().is_some_and(|m| m.taken));
        // Nor does a lookup without one disturb anything.
        let _ = store.cache.get(&a.digest()).await;
        assert!(MOVING.get().is_none());
    }

    #[tokio::test]
    async fn every_kind_of_value_comes_back_as_it_went_in() {
        let store = MemoryStore::new(10);
        let k = key();
        let mut r = record(60);
        r.expiry = Some(Expiry::OnInactivity(TimeDuration::seconds(90)));
        for (name, value) in [
            ("null", json!(null)),
            ("bool", json!(true)),
            ("big", json!(u64::MAX)),
            ("negative", json!(-42)),
            ("float", json!(0.1)),
            ("text", json!("ünïcødé \"quoted\"")),
            ("nested", json!({"list": [1, "two", [3.5]], "empty": {}})),
        ] {
            r.data.insert(name.into(), value);
        }
        store.create(&k, &r).await.unwrap();
        assert_eq!(store.load(&k).await.unwrap().unwrap(), r);
        r.expiry = Some(Expiry::AtDateTime(
            OffsetDateTime::from_unix_timestamp(2_000_000_000).unwrap(),
        ));
        store.update(&k, &r).await.unwrap();
        assert_eq!(store.load(&k).await.unwrap().unwrap(), r);
        r.expiry = Some(Expiry::OnBrowserClose);
        store.update(&k, &r).await.unwrap();
        assert_eq!(store.load(&k).await.unwrap().unwrap(), r);
    }

    #[tokio::test]
    async fn a_load_that_raced_a_delete_finds_nothing() {
        let store = MemoryStore::new(10);
        let k = key();
        store.create(&k, &record(60)).await.unwrap();
        let slot = store.cache.get(&k.digest()).await.unwrap();
        store.delete(&k).await.unwrap();
        assert!(slot.lock().is_none());
        assert!(!store.update(&k, &record(60)).await.unwrap());
        assert!(store.load(&k).await.unwrap().is_none());
    }

    /// The session's deadline and moka's for it, from the cache entry.
    async fn deadlines(store: &MemoryStore, k: &StoreKey) -> (i64, i64) {
        let slot = store.cache.get(&k.digest()).await.expect("in the cache");
        let session = slot.lock().as_ref().expect("not emptied").deadline_ms;
        (session, slot.moka_deadline_ms())
    }

    #[tokio::test]
    async fn saves_of_a_loaded_record_keep_moka_at_or_after_the_sessions_deadline() {
        let store = MemoryStore::new(10);
        let k = key();
        store.create(&k, &record(60)).await.unwrap();
        let (session, moka) = deadlines(&store, &k).await;
        assert!(moka > session, "{moka} {session}");
        // Later by a second (within moka's headroom), by an hour (past it),
        // earlier, and touched far ahead: moka is never behind the session.
        for (secs, touch) in [
            (61, false),
            (3600, false),
            (30, false),
            (7200, true),
            (90, false),
        ] {
            let mut loaded = store.load(&k).await.unwrap().unwrap();
            assert!(loaded.origin.is_some());
            loaded.data.insert("at".into(), json!(secs));
            let deadline = in_secs(secs);
            if touch {
                assert!(store.touch(&k, deadline).await.unwrap());
            } else {
                loaded.expires_at = deadline;
                assert!(store.update(&k, &loaded).await.unwrap());
                assert_eq!(store.load(&k).await.unwrap().unwrap(), loaded);
            }
            let (session, moka) = deadlines(&store, &k).await;
            assert_eq!(session, millis(deadline));
            assert!(moka >= session, "{secs}: {moka} < {session}");
        }
    }

    #[tokio::test]
    async fn a_loaded_record_saves_nothing_into_a_session_that_left() {
        let store = MemoryStore::new(1);
        let k = key();
        store.create(&k, &record(60)).await.unwrap();
        let loaded = store.load(&k).await.unwrap().unwrap();
        store.delete(&k).await.unwrap();
        assert!(!store.update(&k, &loaded).await.unwrap());
        assert!(store.load(&k).await.unwrap().is_none());

        // Evicted: the store holds one session, and a newer one came.
        let old = key();
        store.create(&old, &record(60)).await.unwrap();
        let loaded = store.load(&old).await.unwrap().unwrap();
        store.run_pending_tasks().await;
        store.create(&key(), &record(60)).await.unwrap();
        store.run_pending_tasks().await;
        assert!(store.load(&old).await.unwrap().is_none(), "not evicted");
        assert!(!store.update(&old, &loaded).await.unwrap());
        assert!(store.load(&old).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_loaded_record_is_tied_to_its_store_and_key() {
        let (one, two) = (MemoryStore::new(10), MemoryStore::new(10));
        let (k, other) = (key(), key());
        for (store, key) in [(&one, &k), (&two, &k), (&one, &other)] {
            store.create(key, &record(60)).await.unwrap();
        }
        let mut loaded = one.load(&k).await.unwrap().unwrap();
        loaded.data.insert("k".into(), json!("changed"));
        assert!(two.update(&k, &loaded).await.unwrap());
        assert!(one.update(&other, &loaded).await.unwrap());
        assert_eq!(one.load(&k).await.unwrap().unwrap().data["k"], json!("v"));
        assert_eq!(
            two.load(&k).await.unwrap().unwrap().data["k"],
            json!("changed")
        );
        assert_eq!(
            one.load(&other).await.unwrap().unwrap().data["k"],
            json!("changed")
        );
    }

    #[tokio::test]
    async fn answers_on_the_spot_match_the_async_ones() {
        let store = MemoryStore::new(10);
        let k = key();
        assert!(store.load_now(&k).unwrap().unwrap().is_none());
        store.create(&k, &record(60)).await.unwrap();
        let mut loaded = store.load_now(&k).unwrap().unwrap().unwrap();
        assert_eq!(loaded, store.load(&k).await.unwrap().unwrap());
        assert!(loaded.origin.is_some());

        // A record loaded here updates on the spot.
        loaded.data.insert("k".into(), json!("now"));
        loaded.expires_at = in_secs(61);
        assert!(store.update_now(&k, &loaded).unwrap().unwrap());
        assert_eq!(store.load(&k).await.unwrap().unwrap(), loaded);

        // One from elsewhere needs the lookup, and nothing changes until
        // `update` does it.
        let mut elsewhere = record(60);
        elsewhere.data.insert("k".into(), json!("elsewhere"));
        assert!(store.update_now(&k, &elsewhere).is_none());
        assert_eq!(store.load(&k).await.unwrap().unwrap(), loaded);
        assert!(store.update(&k, &elsewhere).await.unwrap());
        assert_eq!(
            store.load(&k).await.unwrap().unwrap().data["k"],
            json!("elsewhere")
        );

        // So does a deadline past moka's, which moka must be told.
        let mut later = store.load_now(&k).unwrap().unwrap().unwrap();
        later.expires_at = in_secs(5 * 3600);
        assert!(store.update_now(&k, &later).is_none());
        assert_eq!(
            store.load(&k).await.unwrap().unwrap().expires_at,
            elsewhere.expires_at
        );

        // A session deleted since the load stays deleted.
        store.delete(&k).await.unwrap();
        assert!(!store.update_now(&k, &later).unwrap().unwrap());
        assert!(store.load_now(&k).unwrap().unwrap().is_none());
    }

    #[test]
    fn an_entry_stays_within_a_cache_line() {
        assert!(
            std::mem::size_of::<Slot>() <= 64,
            "{}",
            std::mem::size_of::<Slot>()
        );
    }

    #[test]
    fn moka_is_told_an_eighth_more_at_most_an_hour() {
        let now = 1_800_000_000_000;
        assert_eq!(moka_deadline_for(now + 80_000, now), 1_800_000_090);
        assert_eq!(
            moka_deadline_for(now + 86_400_000, now),
            1_800_000_000 + 86_400 + 3_600
        );
        // Rounded up to the second; a deadline already passed gets none.
        assert_eq!(moka_deadline_for(now + 1, now), 1_800_000_001);
        assert_eq!(moka_deadline_for(now - 5_000, now), 1_799_999_995);
        assert_eq!(moka_deadline_for(i64::MAX, now), u32::MAX);
    }

    #[test]
    fn settings_are_checked() {
        let s = cloakroom_core::config::from_pairs([("SESSION_CACHE_MAX_ENTRIES", "0")]);
        assert!(MemoryStore::from_settings(&s).is_err());
        let s = cloakroom_core::config::from_pairs([("SESSION_CACHE_MAX_ENTRIES", "5")]);
        assert_eq!(MemoryStore::from_settings(&s).unwrap().max_entries(), 5);
    }
}
