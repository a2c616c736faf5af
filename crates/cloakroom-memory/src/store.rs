use std::sync::Arc;
use std::time::{Duration, Instant};

use cloakroom_core::config::{ConfigError, Settings, parse_or};
use cloakroom_core::{Error, Record, SessionStore, StoreKey, async_trait};
use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
use time::OffsetDateTime;

/// Default bound on the number of sessions kept (`SESSION_CACHE_MAX_ENTRIES`).
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;

/// A session store in this process's memory, on a moka cache.
///
/// Created, updated and touched atomically per key (moka's entry API), so a
/// concurrent delete is never undone by an update.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<StoreKey, Arc<Record>>,
    max_entries: u64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_entries", &self.max_entries)
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

/// Lets every entry live until its own session deadline, or for at most
/// `cap` when one is given (the cached_db local TTL).
pub(crate) struct UntilDeadline {
    pub(crate) cap: Option<Duration>,
}

impl UntilDeadline {
    fn ttl(&self, record: &Record) -> Duration {
        let left = record.remaining().unwrap_or(Duration::ZERO);
        self.cap.map_or(left, |cap| left.min(cap))
    }
}

impl moka::Expiry<StoreKey, Arc<Record>> for UntilDeadline {
    fn expire_after_create(
        &self,
        _key: &StoreKey,
        value: &Arc<Record>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(self.ttl(value))
    }

    fn expire_after_update(
        &self,
        _key: &StoreKey,
        value: &Arc<Record>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.ttl(value))
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
                .expire_after(UntilDeadline { cap: None })
                .build(),
            max_entries,
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

    /// Replaces the live record under `key` with `make(old)`, atomically;
    /// false when there is no live record.
    async fn replace_live(
        &self,
        key: &StoreKey,
        make: impl FnOnce(&Record) -> Record + Send,
    ) -> bool {
        let result = self
            .cache
            .entry_by_ref(key)
            .and_compute_with(|current| {
                let op = match current {
                    Some(entry) if !entry.value().is_expired() => {
                        Op::Put(Arc::new(make(entry.value())))
                    }
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        matches!(result, CompResult::ReplacedWith(_))
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn engine(&self) -> &'static str {
        "memory"
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        Ok(self
            .cache
            .get(key)
            .await
            .filter(|r| !r.is_expired())
            .map(|r| Record::clone(&r)))
    }

    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, Error> {
        let result = self
            .cache
            .entry_by_ref(key)
            .and_compute_with(|current| {
                let op = match current {
                    Some(entry) if !entry.value().is_expired() => Op::Nop,
                    _ => Op::Put(Arc::new(record.clone())),
                };
                std::future::ready(op)
            })
            .await;
        Ok(matches!(
            result,
            CompResult::Inserted(_) | CompResult::ReplacedWith(_)
        ))
    }

    async fn update(&self, key: &StoreKey, record: &Record) -> Result<bool, Error> {
        Ok(self.replace_live(key, |_| record.clone()).await)
    }

    async fn touch(&self, key: &StoreKey, expires_at: OffsetDateTime) -> Result<bool, Error> {
        Ok(self
            .replace_live(key, |old| Record {
                expires_at,
                ..old.clone()
            })
            .await)
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), Error> {
        self.cache.invalidate(key).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloakroom_core::Id;
    use cloakroom_core::record::Data;
    use serde_json::json;
    use time::Duration as TimeDuration;

    fn record(secs: i64) -> Record {
        let mut data = Data::new();
        data.insert("k".into(), json!("v"));
        Record::new(
            data,
            OffsetDateTime::now_utc() + TimeDuration::seconds(secs),
        )
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
        let later = OffsetDateTime::now_utc() + TimeDuration::hours(5);
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

    #[test]
    fn settings_are_checked() {
        let s = cloakroom_core::config::from_pairs([("SESSION_CACHE_MAX_ENTRIES", "0")]);
        assert!(MemoryStore::from_settings(&s).is_err());
        let s = cloakroom_core::config::from_pairs([("SESSION_CACHE_MAX_ENTRIES", "5")]);
        assert_eq!(MemoryStore::from_settings(&s).unwrap().max_entries(), 5);
    }
}
