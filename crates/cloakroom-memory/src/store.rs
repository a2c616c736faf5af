use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloakroom_core::config::{ConfigError, Settings, parse_or};
use cloakroom_core::record::{from_millis, millis, now_millis};
use cloakroom_core::{Call, Error, Record, SessionStore, StoreKey};
use moka::sync::Cache;

use crate::settings::{CACHE_MAX_ANONYMOUS_ENTRIES, CACHE_MAX_ENTRIES};

/// The caches' hasher. Their keys are SHA-256 digests of ids this process
/// issued, so a fast hasher (seeded per process) is enough; the standard
/// SipHash cost more than the rest of a cache lookup.
pub(crate) type Hasher = foldhash::fast::RandomState;

/// Default bound on the number of sessions kept (`SESSION_CACHE_MAX_ENTRIES`).
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;

/// One of the store's two caches.
type Sessions = Cache<[u8; 32], Arc<Slot>, Hasher>;

/// A session store in this process's memory, on a moka cache.
///
/// Each session is one cache entry keyed by the 32 bytes of its store key,
/// holding the record's bytes (MessagePack: compact, and quick to decode)
/// and its deadline. Updates and touches change an entry in place
/// and never insert one, and a delete removes the entry and empties it, so a
/// concurrent delete is never undone by an update.
///
/// moka's deadline for an entry runs a little ahead of the session's, so
/// that most saves (each moves the session's deadline a little later) find
/// the entry with one lookup and need not tell moka anything. Every entry
/// that leaves the cache is emptied, so a save holding an entry found just
/// before it left saves into nothing.
///
/// Sessions that [`cycle_id`](Record::cycled) stored (logins) and the others
/// (anonymous visitors) live in two caches with a bound each, so that however
/// many anonymous sessions strangers make, they push out only each other,
/// never a logged-in user. Lookups try the cycled sessions first.
#[derive(Clone)]
pub struct MemoryStore {
    cycled: Sessions,
    anonymous: Sessions,
    max_entries: u64,
    max_anonymous: u64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_entries", &self.max_entries)
            .field("max_anonymous", &self.max_anonymous)
            .field("cycled", &self.cycled.entry_count())
            .field("anonymous", &self.anonymous.entry_count())
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
}

/// moka's per-entry expiry: each entry lives until the deadline in its
/// [`Slot::moka_deadline`], which is never before the session's.
///
/// A save whose new deadline is past it raises the slot's deadline and
/// marks the slot `moved`, then looks the entry up once more: that read
/// gives moka the slot's deadline. Other reads leave moka's figure as it is.
struct UntilSlotDeadline;

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
        _: &[u8; 32],
        slot: &Arc<Slot>,
        _: Instant,
        until_now: Option<Duration>,
        _: Instant,
    ) -> Option<Duration> {
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
    count_above_zero(settings, CACHE_MAX_ENTRIES, DEFAULT_MAX_ENTRIES)
}

fn count_above_zero(settings: &dyn Settings, name: &str, default: u64) -> Result<u64, ConfigError> {
    const WANTED: &str = "a whole number above 0";
    let max: u64 = parse_or(settings, name, default, WANTED)?;
    if max == 0 {
        return Err(ConfigError::new(name, "0", WANTED));
    }
    Ok(max)
}

/// A cache of at most `max` sessions, each expiring at its deadline.
fn sessions(max: u64) -> Sessions {
    Cache::builder()
        .max_capacity(max)
        // LRU, not moka's default TinyLFU admission: when full, the
        // session idle the longest goes, and a fresh login is always
        // kept (TinyLFU may refuse a new, not yet popular key).
        .eviction_policy(moka::policy::EvictionPolicy::lru())
        .expire_after(UntilSlotDeadline)
        // An entry that leaves the cache, whatever the cause, leaves
        // empty: a request still holding it from its load then finds
        // no session to save into.
        .eviction_listener(|_, slot: Arc<Slot>, _| *slot.lock() = None)
        .build_with_hasher(Hasher::default())
}

/// A store with the defaults of `from_env()`: [`DEFAULT_MAX_ENTRIES`]
/// sessions stored by `cycle_id` and as many others.
///
/// ```
/// use cloakroom_memory::{DEFAULT_MAX_ENTRIES, MemoryStore};
///
/// assert_eq!(MemoryStore::default().max_entries(), DEFAULT_MAX_ENTRIES);
/// ```
impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_ENTRIES)
    }
}

impl MemoryStore {
    /// A store that keeps at most `max_entries` sessions stored by
    /// `cycle_id` and as many others.
    pub fn new(max_entries: u64) -> Self {
        Self::with_budgets(max_entries, max_entries)
    }

    /// A store that keeps at most `max_entries` sessions stored by
    /// `cycle_id` (logins) and at most `max_anonymous` that never were
    /// cycled: when either is full, its least recently used session goes.
    pub fn with_budgets(max_entries: u64, max_anonymous: u64) -> Self {
        Self {
            cycled: sessions(max_entries),
            anonymous: sessions(max_anonymous),
            max_entries,
            max_anonymous,
        }
    }

    /// Builds the store from `SESSION_CACHE_MAX_ENTRIES` (default
    /// [`DEFAULT_MAX_ENTRIES`]) and `SESSION_CACHE_MAX_ANONYMOUS_ENTRIES`
    /// (default: the same number).
    ///
    /// # Errors
    /// When a setting is not a whole number above zero.
    pub fn from_settings(settings: &dyn Settings) -> Result<Self, ConfigError> {
        let max_entries = max_entries(settings)?;
        let max_anonymous = count_above_zero(settings, CACHE_MAX_ANONYMOUS_ENTRIES, max_entries)?;
        Ok(Self::with_budgets(max_entries, max_anonymous))
    }

    /// The bound on the number of sessions stored by `cycle_id`.
    pub fn max_entries(&self) -> u64 {
        self.max_entries
    }

    /// The bound on the number of sessions never cycled.
    pub fn max_anonymous(&self) -> u64 {
        self.max_anonymous
    }

    /// How many sessions the caches hold, as of their last bookkeeping (see
    /// [`MemoryStore::run_pending_tasks`]).
    pub fn entry_count(&self) -> u64 {
        self.cycled.entry_count() + self.anonymous.entry_count()
    }

    /// Does the caches' pending bookkeeping now (evictions, expiries, entry
    /// counts) instead of on later calls; for tests and measurements.
    pub async fn run_pending_tasks(&self) {
        self.cycled.run_pending_tasks();
        self.anonymous.run_pending_tasks();
    }

    /// The entry under `digest` and the cache holding it.
    fn find(&self, digest: &[u8; 32]) -> Option<(&Sessions, Arc<Slot>)> {
        [&self.cycled, &self.anonymous]
            .into_iter()
            .find_map(|cache| cache.get(digest).map(|slot| (cache, slot)))
    }

    /// Changes the live session under `key` in place, its deadline becoming
    /// `deadline_ms`, after finding it in the cache; false when there is none
    /// (never stored, expired or deleted).
    fn change_live(
        &self,
        key: &StoreKey,
        deadline_ms: i64,
        change: impl FnOnce(&mut Stored),
    ) -> bool {
        let digest = key.digest();
        let now = now_millis();
        let moka_deadline = moka_deadline_for(deadline_ms, now);
        let Some((cache, slot)) = self.find(&digest) else {
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
            // Within moka's deadline (the usual save): nothing to tell it.
            if i64::from(moka_deadline) * 1000 <= slot.moka_deadline_ms() {
                return true;
            }
            slot.moka_deadline
                .fetch_max(moka_deadline, Ordering::AcqRel);
            slot.moved.store(true, Ordering::Relaxed);
        }
        // moka still has this entry's earlier deadline; one more read makes
        // it take the new one.
        let _ = cache.get(&digest);
        true
    }

    /// Stores a new session unless `key` holds a live one.
    fn create_now(&self, key: &StoreKey, record: &Record) -> Result<bool, Error> {
        let digest = key.digest();
        let now = now_millis();
        let (cache, other) = if record.cycled {
            (&self.cycled, &self.anonymous)
        } else {
            (&self.anonymous, &self.cycled)
        };
        if let Some(slot) = other.get(&digest) {
            if slot.lock().as_ref().is_some_and(|s| s.is_live_at(now)) {
                return Ok(false);
            }
            // Expired there, and lookups try that cache first: it must not
            // hide the new session.
            other.invalidate(&digest);
        }
        let fresh = Slot::new(Stored::encode(record)?, now);
        let entry = cache.entry(digest).or_insert_with(|| Arc::clone(&fresh));
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
            cache.insert(digest, fresh);
        } else {
            let _ = cache.get(&digest);
        }
        Ok(true)
    }

    /// The live record in the entry a lookup of `key` found, if any.
    fn record_in(found: Option<Arc<Slot>>) -> Result<Option<Record>, Error> {
        let Some(slot) = found else {
            return Ok(None);
        };
        match slot.lock().as_ref() {
            Some(stored) if stored.is_live_at(now_millis()) => stored.decode().map(Some),
            _ => Ok(None),
        }
    }
}

/// Every call is answered at once: the sessions are in this process, and
/// moka's synchronous cache does its bookkeeping within the call.
impl SessionStore for MemoryStore {
    fn engine(&self) -> &'static str {
        "memory"
    }

    fn load<'a>(&'a self, key: &'a StoreKey) -> Call<'a, Option<Record>> {
        Call::ready(Self::record_in(
            self.find(&key.digest()).map(|(_, slot)| slot),
        ))
    }

    fn create<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        Call::ready(self.create_now(key, record))
    }

    fn update<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        Call::ready(Stored::encode(record).map(|encoded| {
            let deadline_ms = encoded.deadline_ms;
            self.change_live(key, deadline_ms, |stored| *stored = encoded)
        }))
    }

    /// Moves the deadline only: the data in `record` is not looked at.
    fn touch<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool> {
        let deadline_ms = millis(record.expires_at);
        Call::ready(Ok(self.change_live(key, deadline_ms, |stored| {
            stored.deadline_ms = deadline_ms;
        })))
    }

    fn delete<'a>(&'a self, key: &'a StoreKey) -> Call<'a, ()> {
        let digest = key.digest();
        for cache in [&self.cycled, &self.anonymous] {
            if let Some(slot) = cache.remove(&digest) {
                *slot.lock() = None;
            }
        }
        Call::ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloakroom_core::record::Data;
    use cloakroom_core::{Expiry, Id};
    use serde_json::json;
    use time::{Duration as TimeDuration, OffsetDateTime};

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

    /// `loaded`, to be touched to `at`.
    fn touched(loaded: Record, at: OffsetDateTime) -> Record {
        Record {
            expires_at: at,
            ..loaded
        }
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
        let now = touched(record(60), OffsetDateTime::now_utc());
        assert!(!store.touch(&k, &now).await.unwrap());
    }

    #[tokio::test]
    async fn touch_moves_deadline_keeps_data() {
        let store = MemoryStore::new(10);
        let k = key();
        let r = record(60);
        store.create(&k, &r).await.unwrap();
        let later = in_secs(5 * 3600);
        // The store moves the deadline alone, whatever data the record holds.
        let mut stale = touched(r.clone(), later);
        stale.data.insert("k".into(), json!("not stored"));
        assert!(store.touch(&k, &stale).await.unwrap());
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
        assert!(store.touch(&b, &touched(short, later)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(500)).await;
        store.run_pending_tasks().await;
        // Still there after the first deadline: moka took the new one.
        assert!(store.load(&a).await.unwrap().is_some());
        assert!(store.load(&b).await.unwrap().is_some());
        assert_eq!(store.entry_count(), 2);
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
        let slot = store.find(&k.digest()).map(|(_, slot)| slot).unwrap();
        store.delete(&k).await.unwrap();
        assert!(slot.lock().is_none());
        assert!(!store.update(&k, &record(60)).await.unwrap());
        assert!(store.load(&k).await.unwrap().is_none());
    }

    /// The session's deadline and moka's for it, from the cache entry.
    async fn deadlines(store: &MemoryStore, k: &StoreKey) -> (i64, i64) {
        let slot = store
            .find(&k.digest())
            .map(|(_, slot)| slot)
            .expect("in the cache");
        let session = slot.lock().as_ref().expect("not emptied").deadline_ms;
        (session, slot.moka_deadline_ms())
    }

    #[tokio::test]
    async fn saves_keep_moka_at_or_after_the_sessions_deadline() {
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
            let deadline = in_secs(secs);
            loaded.expires_at = deadline;
            if touch {
                assert!(store.touch(&k, &loaded).await.unwrap());
            } else {
                loaded.data.insert("at".into(), json!(secs));
                assert!(store.update(&k, &loaded).await.unwrap());
                assert_eq!(store.load(&k).await.unwrap().unwrap(), loaded);
            }
            let (session, moka) = deadlines(&store, &k).await;
            assert_eq!(session, millis(deadline));
            assert!(moka >= session, "{secs}: {moka} < {session}");
        }
    }

    #[tokio::test]
    async fn a_save_after_the_session_left_saves_nothing() {
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
        use cloakroom_core::config::from_pairs;
        for bad in [
            [("SESSION_CACHE_MAX_ENTRIES", "0"), ("", "")],
            [("SESSION_CACHE_MAX_ANONYMOUS_ENTRIES", "0"), ("", "")],
            [("SESSION_CACHE_MAX_ANONYMOUS_ENTRIES", "many"), ("", "")],
        ] {
            assert!(
                MemoryStore::from_settings(&from_pairs(bad)).is_err(),
                "{bad:?}"
            );
        }
        let store = MemoryStore::from_settings(&from_pairs([("SESSION_CACHE_MAX_ENTRIES", "5")]));
        let store = store.unwrap();
        assert_eq!((store.max_entries(), store.max_anonymous()), (5, 5));
        let store = MemoryStore::from_settings(&from_pairs([
            ("SESSION_CACHE_MAX_ENTRIES", "5"),
            ("SESSION_CACHE_MAX_ANONYMOUS_ENTRIES", "3"),
        ]));
        let store = store.unwrap();
        assert_eq!((store.max_entries(), store.max_anonymous()), (5, 3));
    }

    fn cycled(secs: i64) -> Record {
        Record {
            cycled: true,
            ..record(secs)
        }
    }

    #[tokio::test]
    async fn anonymous_sessions_cannot_push_out_cycled_ones() {
        let store = MemoryStore::with_budgets(4, 10);
        let logged_in = key();
        assert!(store.create(&logged_in, &cycled(60)).await.unwrap());
        let first = key();
        store.create(&first, &record(60)).await.unwrap();
        for _ in 0..1_000 {
            store.create(&key(), &record(60)).await.unwrap();
        }
        store.run_pending_tasks().await;
        assert!(
            store.load(&logged_in).await.unwrap().is_some(),
            "pushed out"
        );
        assert!(store.load(&first).await.unwrap().is_none(), "not bounded");
        assert_eq!(store.entry_count(), 11);

        // The cycled budget is a bound too, on cycled sessions alone.
        for _ in 0..4 {
            store.create(&key(), &cycled(60)).await.unwrap();
        }
        store.run_pending_tasks().await;
        assert!(
            store.load(&logged_in).await.unwrap().is_none(),
            "not bounded"
        );
        assert_eq!(store.entry_count(), 14);
    }

    #[tokio::test]
    async fn cycled_sessions_are_saved_and_deleted_like_the_others() {
        let store = MemoryStore::new(10);
        let k = key();
        assert!(store.create(&k, &cycled(60)).await.unwrap());
        // One key, one session, whichever cache it went to.
        assert!(!store.create(&k, &record(60)).await.unwrap());
        assert!(!store.create(&k, &cycled(60)).await.unwrap());
        let mut changed = store.load(&k).await.unwrap().unwrap();
        assert!(!changed.cycled, "stores do not keep the mark");
        changed.data.insert("k".into(), json!("changed"));
        assert!(store.update(&k, &changed).await.unwrap());
        let later = in_secs(600);
        let changed = touched(changed, later);
        assert!(store.touch(&k, &changed).await.unwrap());
        let loaded = store.load(&k).await.unwrap().unwrap();
        assert_eq!(
            (loaded.data["k"].clone(), loaded.expires_at),
            (json!("changed"), later)
        );
        store.delete(&k).await.unwrap();
        assert!(store.load(&k).await.unwrap().is_none());
        assert!(!store.touch(&k, &changed).await.unwrap());

        let anonymous = key();
        assert!(store.create(&anonymous, &record(60)).await.unwrap());
        assert!(!store.create(&anonymous, &cycled(60)).await.unwrap());
    }

    #[tokio::test]
    async fn an_expired_session_in_the_other_cache_does_not_hide_a_new_one() {
        let store = MemoryStore::new(10);
        let k = key();
        assert!(store.create(&k, &cycled(60)).await.unwrap());
        let ended = touched(cycled(60), in_secs(-1));
        assert!(store.touch(&k, &ended).await.is_ok());
        assert!(store.load(&k).await.unwrap().is_none());
        assert!(store.create(&k, &record(60)).await.unwrap());
        assert_eq!(store.load(&k).await.unwrap().unwrap(), record(60));
    }
}
