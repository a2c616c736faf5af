//! Resident memory per session of the in-process stores: cloakroom's memory
//! engine and tower-sessions' `MemoryStore`, each measured in a fresh
//! process (`cloakroom-bench memory ENGINE`).

use cloakroom_core::{Id, SessionStore as _};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::apps::token;

/// The stores this module can measure: cloakroom's memory engine,
/// tower-sessions' `MemoryStore`, a bare moka cache set up as the memory
/// engine sets up its own (per-entry expiry, LRU, 32-byte keys) holding
/// only each record's bytes, the floor of a moka-based memory engine; and
/// the same cache without per-entry expiry, moka's own floor.
pub const ENGINES: [&str; 4] = ["cloakroom", "tower-sessions", "moka", "moka-no-expiry"];

/// Per-entry expiry for the bare moka measurement.
struct Fixed;

impl moka::Expiry<[u8; 32], std::sync::Arc<Box<[u8]>>> for Fixed {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        _: &std::sync::Arc<Box<[u8]>>,
        _: std::time::Instant,
    ) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(3600))
    }
}

/// What one measurement found.
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    /// Sessions stored.
    pub sessions: usize,
    /// Bytes of one session's data as JSON (the token and the counter).
    pub data_bytes: usize,
    /// Growth of resident memory divided by the number of sessions.
    pub resident_per_session: f64,
}

impl Footprint {
    /// Resident bytes per session beyond its data.
    pub fn overhead(&self) -> f64 {
        self.resident_per_session - self.data_bytes as f64
    }

    /// The line the child prints and the parent reads back.
    pub fn to_line(&self) -> String {
        format!(
            "FOOTPRINT {} {} {:.1}",
            self.sessions, self.data_bytes, self.resident_per_session
        )
    }

    /// Reads a line written by [`Footprint::to_line`].
    pub fn from_line(line: &str) -> Option<Self> {
        let mut parts = line.strip_prefix("FOOTPRINT ")?.split_whitespace();
        Some(Self {
            sessions: parts.next()?.parse().ok()?,
            data_bytes: parts.next()?.parse().ok()?,
            resident_per_session: parts.next()?.parse().ok()?,
        })
    }
}

/// This process's resident memory in bytes.
fn resident() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| "no VmRSS in /proc/self/status".to_owned())
}

fn data() -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("token".into(), json!(token()));
    data.insert("n".into(), json!(0));
    data
}

/// Stores `sessions` sessions, each holding a fresh token, in `engine` and
/// reports how resident memory grew.
///
/// # Errors
/// For an unknown engine, or when a store call fails.
pub async fn measure(engine: &str, sessions: usize) -> Result<Footprint, String> {
    let expires = OffsetDateTime::now_utc() + time::Duration::days(14);
    let data_bytes = serde_json::to_vec(&data())
        .map_err(|e| e.to_string())?
        .len();
    let count = u64::try_from(sessions).map_err(|e| e.to_string())?;
    let before;
    let after;
    match engine {
        "cloakroom" => {
            let store = cloakroom::memory::MemoryStore::new(count * 2);
            before = resident()?;
            for _ in 0..sessions {
                let key = Id::generate().map_err(|e| e.to_string())?.store_key();
                let record = cloakroom_core::Record::new(data().into(), expires);
                store
                    .create(&key, &record)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            store.run_pending_tasks().await;
            after = resident()?;
            if store.entry_count() != count {
                return Err(format!(
                    "stored {} of {sessions} sessions",
                    store.entry_count()
                ));
            }
        }
        "tower-sessions" => {
            use tower_sessions::session_store::SessionStore as _;
            let store = tower_sessions::MemoryStore::default();
            before = resident()?;
            for _ in 0..sessions {
                let mut record = tower_sessions::session::Record {
                    id: tower_sessions::session::Id::default(),
                    data: data().into_iter().collect(),
                    expiry_date: expires,
                };
                store.create(&mut record).await.map_err(|e| e.to_string())?;
            }
            after = resident()?;
        }
        "moka" | "moka-no-expiry" => {
            let builder = moka::future::Cache::builder()
                .max_capacity(count * 2)
                .eviction_policy(moka::policy::EvictionPolicy::lru());
            let cache: moka::future::Cache<[u8; 32], std::sync::Arc<Box<[u8]>>> =
                if engine == "moka" {
                    builder.expire_after(Fixed).build()
                } else {
                    builder.build()
                };
            before = resident()?;
            for _ in 0..sessions {
                let key = Id::generate().map_err(|e| e.to_string())?.store_key();
                let record = cloakroom_core::Record::new(data().into(), expires);
                let bytes = record.to_bytes().map_err(|e| e.to_string())?;
                cache
                    .insert(key.digest(), std::sync::Arc::new(bytes.into_boxed_slice()))
                    .await;
            }
            cache.run_pending_tasks().await;
            after = resident()?;
        }
        other => return Err(format!("no in-process store called {other}")),
    }
    Ok(Footprint {
        sessions,
        data_bytes,
        resident_per_session: after.saturating_sub(before) as f64 / sessions as f64,
    })
}
