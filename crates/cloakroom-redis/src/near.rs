//! The near cache: sessions read from Redis kept in process memory for as
//! long as Redis has not said they changed (server-assisted client-side
//! caching over RESP3, `CLIENT TRACKING ... BCAST`).
//!
//! # How it stays coherent
//!
//! A tracker thread holds one RESP3 connection per Redis node (every master
//! of a cluster) on which it asked for `CLIENT TRACKING ON BCAST PREFIX
//! <key prefix>`: Redis then pushes an `invalidate` message to it for every
//! write to a session key, whoever made it. The messages are handled inside
//! redis-rs's reader, as they are read ([`Invalidator`]), not through a
//! channel, so an invalidation is applied before any later reply on that
//! connection is seen. Sessions are read through the store's pooled,
//! untracked connections.
//!
//! On a single server the store also writes through the tracking connection
//! ([`NearCache::writer`]), which asked for `NOLOOP`: Redis then pushes
//! nothing back for this process's own writes, so a write costs no
//! invalidation message to parse, and the store keeps what it wrote
//! ([`NearCache::wrote`]): the next request for that session is a hit rather
//! than a `GET`. A cluster's writes go to the master of their slot, which
//! the pooled cluster connections know, so there the store writes through
//! them and its own writes come back as invalidations.
//!
//! The cache serves entries only while tracking is on. [`NearCache::epoch`]
//! is odd while every tracking connection is up and even otherwise; it moves
//! when a connection drops (redis-rs reports it as a `Disconnection` push,
//! from its reader, as soon as the socket closes), when a heartbeat `PING`
//! goes unanswered (a hung server, a silent network), when a cluster's
//! masters change, and when tracking is on again. Every move empties the
//! cache, and an entry is only served in the epoch it was stored in.
//!
//! A `GET` sent before a write and answered after it would store a stale
//! value if the invalidation were handled between the answer and the store.
//! So a load takes a [`Ticket`] before sending its `GET`: the epoch and a
//! counter of invalidations for keys that hash like its own (one of
//! [`STRIPES`]). It stores what it read only if neither moved, and checks
//! them again after storing, removing the entry if one moved meanwhile.
//! Whichever way the invalidation and the store interleave, the stale value
//! is not served.
//!
//! A write is the same with one more step. The store forgets the key (the
//! counter moves, so no load in flight keeps what it read), takes a ticket,
//! sends the write, and once it is acknowledged moves the counter again
//! (a load whose `GET` the write may have overtaken keeps nothing). It keeps
//! its own value only if that last move was the only one since its ticket:
//! any other move is an invalidation from another process or another write
//! of this one, and then the key is left uncached.
//!
//! Independently of all that, an entry is served for at most the configured
//! time after its `GET` was sent (the cap, a safety net should an
//! invalidation be lost), and never past the session's deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cloakroom_core::{Record, StoreKey};
use deadpool_redis::redis::aio::{AsyncPushSender, MultiplexedConnection, SendError};
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, ProtocolVersion, PushInfo,
    PushKind, Value,
};
use moka::sync::Cache;
use tokio::sync::Notify;

/// Counters of invalidations, by a hash of the key. More stripes make a
/// write to one session less likely to keep another's read from being
/// cached; 1024 is 8 KB.
const STRIPES: usize = 1024;

/// What every entry weighs besides its bytes: the key, the decoded record's
/// own fields, moka's bookkeeping.
const ENTRY_OVERHEAD: u32 = 256;

/// The name the tracking connections give themselves (`CLIENT LIST`).
pub(crate) const CLIENT_NAME: &str = "cloakroom-near-cache";

/// Counters of the near cache, for monitoring and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NearCacheStats {
    /// Sessions in the cache now.
    pub entries: u64,
    /// Their weight: their bytes plus a fixed overhead each.
    pub weight: u64,
    /// Loads answered from the cache.
    pub hits: u64,
    /// Loads that went to Redis while the cache was on.
    pub misses: u64,
    /// Times the cache was emptied because tracking stopped or restarted
    /// (a connection dropped, a heartbeat went unanswered, a cluster's
    /// masters changed, a `FLUSHALL`).
    pub resets: u64,
    /// True while every tracking connection is up, so that the cache serves.
    pub tracking: bool,
}

struct Entry {
    record: Record,
    /// When the `GET` that read it was sent.
    fetched: Instant,
    epoch: u64,
    /// The bytes Redis sent for it.
    size: u32,
}

/// Taken before a `GET`; see the module docs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    epoch: u64,
    stripe: usize,
    count: u64,
    sent: Instant,
}

pub(crate) struct NearCache {
    // Keys are SHA-256 digests: a fast hasher loses nothing against
    // flooding, and std's SipHash cost about 1,400 instructions a request.
    entries: Cache<StoreKey, Arc<Entry>, foldhash::fast::RandomState>,
    cap: Duration,
    /// Odd while tracking is on (see the module docs).
    epoch: AtomicU64,
    stripes: Box<[AtomicU64]>,
    largest: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    resets: AtomicU64,
    /// Wakes the tracker when a tracking connection reports its end.
    lost: Notify,
    /// The tracking connection of a single server while it tracks, for the
    /// store's writes (see the module docs).
    writer: Mutex<Option<MultiplexedConnection>>,
}

impl std::fmt::Debug for NearCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearCache")
            .field("cap", &self.cap)
            .field("epoch", &self.epoch.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn stripe_of(key: &StoreKey) -> usize {
    // The key is a SHA-256 digest: any of its bytes are evenly spread.
    let d = key.digest();
    usize::from(u16::from_le_bytes([d[0], d[1]])) % STRIPES
}

impl NearCache {
    /// A cache serving entries for at most `cap`, holding at most `max_entries`
    /// sessions and `max_bytes` of them.
    pub(crate) fn new(cap: Duration, max_entries: u64, max_bytes: u64) -> Self {
        let max_entries = max_entries.max(1);
        let max_bytes = max_bytes.max(u64::from(ENTRY_OVERHEAD));
        // Every entry weighs at least max_bytes / max_entries, so that the
        // one bound moka keeps (total weight) keeps both.
        let floor = u32::try_from(max_bytes / max_entries)
            .unwrap_or(u32::MAX)
            .max(ENTRY_OVERHEAD);
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(move |_: &StoreKey, e: &Arc<Entry>| {
                e.size.saturating_add(ENTRY_OVERHEAD).max(floor)
            })
            // moka refuses a time to live past 1,000 years; entries that old
            // are gone by then, and `get` checks the cap itself anyway.
            .time_to_live(cap.min(Duration::from_secs(100 * 365 * 86_400)))
            .build_with_hasher(foldhash::fast::RandomState::default());
        Self {
            entries,
            cap,
            epoch: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            // A session bigger than this would push out many others.
            largest: usize::try_from(max_bytes / 8).unwrap_or(usize::MAX),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            lost: Notify::new(),
            writer: Mutex::new(None),
        }
    }

    fn tracking(epoch: u64) -> bool {
        epoch % 2 == 1
    }

    /// The cached record under `key`, if it may be served now.
    pub(crate) fn get(&self, key: &StoreKey) -> Option<Record> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        if !Self::tracking(epoch) {
            return None;
        }
        let entry = self.entries.get(key)?;
        if entry.epoch != epoch || entry.fetched.elapsed() >= self.cap {
            return None;
        }
        // The deadline holds whatever Redis says: a session that ends while
        // cached is over here too, and Redis is asked again (a touch from
        // elsewhere would have invalidated the entry).
        if entry.record.is_expired() {
            self.entries.invalidate(key);
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(entry.record.clone())
    }

    /// Taken right before the `GET` of `key`; `None` while tracking is off,
    /// when nothing read may be kept.
    pub(crate) fn ticket(&self, key: &StoreKey) -> Option<Ticket> {
        let ticket = self.ticket_now(key)?;
        self.misses.fetch_add(1, Ordering::Relaxed);
        Some(ticket)
    }

    fn ticket_now(&self, key: &StoreKey) -> Option<Ticket> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        if !Self::tracking(epoch) {
            return None;
        }
        let stripe = stripe_of(key);
        Some(Ticket {
            epoch,
            stripe,
            count: self.stripes[stripe].load(Ordering::SeqCst),
            sent: Instant::now(),
        })
    }

    fn still_valid(&self, ticket: &Ticket) -> bool {
        self.epoch.load(Ordering::SeqCst) == ticket.epoch
            && self.stripes[ticket.stripe].load(Ordering::SeqCst) == ticket.count
    }

    /// Keeps `record`, read by a `GET` of `size` bytes sent under `ticket`,
    /// unless `key` may have changed since.
    pub(crate) fn put(&self, key: &StoreKey, ticket: Ticket, record: &Record, size: usize) {
        if size > self.largest || !self.still_valid(&ticket) {
            return;
        }
        let mut record = record.clone();
        record.version = None;
        self.insert(key, ticket, record, size);
    }

    fn insert(&self, key: &StoreKey, ticket: Ticket, record: Record, size: usize) {
        self.entries.insert(
            *key,
            Arc::new(Entry {
                record,
                fetched: ticket.sent,
                epoch: ticket.epoch,
                size: u32::try_from(size).unwrap_or(u32::MAX),
            }),
        );
        // An invalidation handled between the check above and the insert
        // found nothing to remove; it moved the counters, so remove it here.
        if !self.still_valid(&ticket) {
            self.entries.invalidate(key);
        }
    }

    /// The tracking connection to write `key` through, with the ticket to
    /// keep the written value under; `None` on a cluster or while tracking
    /// is off. The caller has just forgotten `key` and, after the write,
    /// calls [`wrote`](Self::wrote) or else [`forget`](Self::forget).
    pub(crate) fn writer(&self, key: &StoreKey) -> Option<(Ticket, MultiplexedConnection)> {
        let conn = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        Some((self.ticket_now(key)?, conn))
    }

    /// After an acknowledged write of `record` (`size` bytes) under `key`
    /// through [`writer`](Self::writer): keeps it, unless anything else
    /// moved the key's counter since `ticket`.
    pub(crate) fn wrote(&self, key: &StoreKey, mut ticket: Ticket, record: Record, size: usize) {
        let before = self.stripes[ticket.stripe].fetch_add(1, Ordering::SeqCst);
        if before != ticket.count || size > self.largest {
            self.entries.invalidate(key);
            return;
        }
        ticket.count += 1;
        self.insert(key, ticket, record, size);
    }

    /// Drops `key` and keeps any `GET` of it in flight from being kept.
    /// Called for Redis's invalidations, and around this process's own
    /// writes so that its next load reads them.
    pub(crate) fn forget(&self, key: &StoreKey) {
        self.stripes[stripe_of(key)].fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate(key);
    }

    /// Stops serving and empties the cache, if tracking is still in
    /// `epoch` (a report from a connection of an earlier round is ignored);
    /// true if it did.
    fn stop(&self, epoch: u64) -> bool {
        let stopped = self
            .epoch
            .compare_exchange(epoch, epoch + 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if stopped {
            *self.writer.lock().unwrap_or_else(PoisonError::into_inner) = None;
            self.resets.fetch_add(1, Ordering::Relaxed);
            self.entries.invalidate_all();
        }
        stopped
    }

    /// Tracking is on again, from an even epoch, with `writer` for the
    /// store's writes; returns the new epoch.
    fn start(&self, writer: Option<MultiplexedConnection>) -> u64 {
        self.entries.invalidate_all();
        *self.writer.lock().unwrap_or_else(PoisonError::into_inner) = writer;
        self.epoch.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Everything may have changed (`FLUSHALL`, `FLUSHDB`): a new epoch, still
    /// tracking. `None` if tracking was not in `epoch`.
    fn flush(&self, epoch: u64) -> Option<u64> {
        self.epoch
            .compare_exchange(epoch, epoch + 2, Ordering::SeqCst, Ordering::SeqCst)
            .ok()?;
        self.resets.fetch_add(1, Ordering::Relaxed);
        self.entries.invalidate_all();
        Some(epoch + 2)
    }

    pub(crate) fn stats(&self) -> NearCacheStats {
        self.entries.run_pending_tasks();
        NearCacheStats {
            entries: self.entries.entry_count(),
            weight: self.entries.weighted_size(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            resets: self.resets.load(Ordering::Relaxed),
            tracking: Self::tracking(self.epoch.load(Ordering::SeqCst)),
        }
    }
}

/// Receives the push messages of one tracking connection, in redis-rs's
/// reader.
struct Invalidator {
    near: Arc<NearCache>,
    prefix: String,
    /// The epoch its round of tracking runs in; a flush moves it.
    epoch: Arc<AtomicU64>,
}

impl AsyncPushSender for Invalidator {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        match info.kind {
            PushKind::Invalidate => match info.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        match key {
                            Value::BulkString(bytes) => self.invalidate(bytes),
                            Value::SimpleString(s) => self.invalidate(s.as_bytes()),
                            // Not a key: the safe reading is "anything changed".
                            _ => self.flush(),
                        }
                    }
                }
                // Redis sends nil after FLUSHALL / FLUSHDB.
                _ => self.flush(),
            },
            PushKind::Disconnection if self.near.stop(self.epoch.load(Ordering::SeqCst)) => {
                self.near.lost.notify_one();
            }
            _ => {}
        }
        Ok(())
    }
}

impl Invalidator {
    fn invalidate(&self, redis_key: &[u8]) {
        let hex = redis_key
            .strip_prefix(self.prefix.as_bytes())
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(StoreKey::from_hex);
        // A key under the prefix that is not one of ours has nothing of
        // ours cached under it.
        if let Some(key) = hex {
            self.near.forget(&key);
        }
    }

    fn flush(&self) {
        let epoch = self.epoch.load(Ordering::SeqCst);
        if let Some(next) = self.near.flush(epoch) {
            let _ = self
                .epoch
                .compare_exchange(epoch, next, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}

/// Where and how the tracker connects.
#[derive(Debug, Clone)]
pub(crate) struct TrackerConfig {
    /// The server, or a cluster's seed nodes.
    pub(crate) nodes: Vec<ConnectionInfo>,
    pub(crate) cluster: bool,
    pub(crate) prefix: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
}

/// The tracker of a store: a thread of its own, started with the first load
/// and ended when the store is dropped.
///
/// Not a task on the application's runtime: there, an invalidation would
/// wait for a worker behind the requests queued before it, while the hits
/// it should stop are answered at once; the busier the application, the
/// staler its reads. On its own thread (with a runtime of one thread for its
/// connections) the reader handles a push as soon as the operating system
/// runs it.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// Dropping it ends the thread.
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Tracker {
    /// Starts the thread if it is not running.
    pub(crate) fn ensure_started(&self, near: &Arc<NearCache>, config: &TrackerConfig) {
        let mut stop = self.stop.lock().unwrap_or_else(PoisonError::into_inner);
        if stop.as_ref().is_some_and(|s| !s.is_closed()) {
            return;
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let near = Arc::clone(near);
        let config = config.clone();
        let started = std::thread::Builder::new()
            .name("cloakroom-near-cache".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!(engine = "redis", error = %e, "near cache: no runtime for the tracker");
                        return;
                    }
                };
                runtime.block_on(async move {
                    tokio::select! {
                        () = track(near, config) => {}
                        _ = rx => {}
                    }
                });
            });
        match started {
            Ok(_) => *stop = Some(tx),
            // Without a tracker the cache never turns on: loads go to Redis.
            Err(e) => {
                tracing::error!(engine = "redis", error = %e, "near cache: cannot start the tracker");
            }
        }
    }
}

/// How often each tracking connection is asked for a `PING` (and a
/// cluster for its masters): a hung server or a silently dropped connection
/// is noticed within this plus the command timeout.
fn heartbeat(cap: Duration) -> Duration {
    (cap / 4).clamp(Duration::from_millis(20), Duration::from_millis(250))
}

/// The tracker: keeps tracking on, and the cache off whenever it is not.
async fn track(near: Arc<NearCache>, config: TrackerConfig) {
    let mut pause = Duration::from_millis(50);
    loop {
        let began = Instant::now();
        match round(&near, &config).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(
                engine = "redis",
                error = %e,
                "near cache: tracking stopped; serving from Redis until it is back"
            ),
        }
        // Whatever ended the round, nothing is served until the next one.
        let epoch = near.epoch.load(Ordering::SeqCst);
        if NearCache::tracking(epoch) {
            near.stop(epoch);
        }
        // A connection of the round may have reported its end after the
        // round had ended for another reason; that report is about the
        // round that is over.
        let _ = tokio::time::timeout(Duration::ZERO, near.lost.notified()).await;
        if began.elapsed() > Duration::from_secs(5) {
            pause = Duration::from_millis(50);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// One round of tracking: connects every node, turns tracking on, then
/// checks on it until it fails. Returns why it ended.
async fn round(near: &Arc<NearCache>, config: &TrackerConfig) -> Result<(), String> {
    let nodes = if config.cluster {
        masters(config).await?
    } else {
        config.nodes.clone()
    };
    // The epoch this round will run in once every connection is tracking;
    // reports from its connections before that find it even and do nothing.
    let starting = near.epoch.load(Ordering::SeqCst);
    if NearCache::tracking(starting) {
        return Err("tracking was still on".to_owned());
    }
    let epoch = Arc::new(AtomicU64::new(starting + 1));
    let mut conns = Vec::with_capacity(nodes.len());
    for node in &nodes {
        conns.push(open(near, config, node, &epoch).await?);
    }
    // A cluster's writes need routing by slot; they stay on the pool.
    let writer = (!config.cluster).then(|| conns[0].clone());
    let running = near.start(writer);
    if running != starting + 1 {
        return Err("the near cache moved while tracking started".to_owned());
    }
    let beat = heartbeat(near.cap);
    let masters_seen = addresses(&nodes);
    loop {
        tokio::select! {
            () = near.lost.notified() => return Err("a tracking connection dropped".to_owned()),
            () = tokio::time::sleep(beat) => {}
        }
        if !NearCache::tracking(near.epoch.load(Ordering::SeqCst)) {
            return Err("a tracking connection dropped".to_owned());
        }
        for conn in &mut conns {
            let pong: Result<String, String> = query(config, conn, &redis::cmd("PING")).await;
            pong?;
        }
        if config.cluster {
            let slots: Value = query(config, &mut conns[0], &cluster_slots()).await?;
            let now = addresses(&master_infos(&slots, &nodes[0])?);
            if now != masters_seen {
                return Err("the cluster's masters changed".to_owned());
            }
        }
    }
}

fn cluster_slots() -> redis::Cmd {
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("SLOTS");
    cmd
}

async fn query<T: redis::FromRedisValue>(
    config: &TrackerConfig,
    conn: &mut MultiplexedConnection,
    cmd: &redis::Cmd,
) -> Result<T, String> {
    match tokio::time::timeout(config.command_timeout, cmd.query_async(conn)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer within {:?} (a hung server?)",
            config.command_timeout
        )),
    }
}

/// A RESP3 connection to `node` that tracks every key under the prefix.
async fn open(
    near: &Arc<NearCache>,
    config: &TrackerConfig,
    node: &ConnectionInfo,
    epoch: &Arc<AtomicU64>,
) -> Result<MultiplexedConnection, String> {
    let settings = node
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let info = node.clone().set_redis_settings(settings);
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    let connection = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.command_timeout))
        .set_push_sender(Invalidator {
            near: Arc::clone(near),
            prefix: config.prefix.clone(),
            epoch: Arc::clone(epoch),
        });
    let connecting = client.get_multiplexed_async_connection_with_config(&connection);
    let mut conn = tokio::time::timeout(config.connect_timeout, connecting)
        .await
        .map_err(|_| format!("no connection within {:?}", config.connect_timeout))?
        .map_err(|e| e.to_string())?;
    let mut tracking = redis::cmd("CLIENT");
    // NOLOOP: the store's own writes through this connection are not
    // pushed back to it (see the module docs).
    tracking
        .arg("TRACKING")
        .arg("ON")
        .arg("BCAST")
        .arg("NOLOOP");
    if !config.prefix.is_empty() {
        tracking.arg("PREFIX").arg(&config.prefix);
    }
    let mut name = redis::cmd("CLIENT");
    name.arg("SETNAME").arg(CLIENT_NAME);
    let () = query(config, &mut conn, &name).await?;
    let () = query(config, &mut conn, &tracking).await?;
    Ok(conn)
}

/// The masters of the cluster, asked of the first seed node that answers.
async fn masters(config: &TrackerConfig) -> Result<Vec<ConnectionInfo>, String> {
    let mut last = "no seed node".to_owned();
    for seed in &config.nodes {
        let client = match redis::Client::open(seed.clone()) {
            Ok(c) => c,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let connection = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout));
        let connecting = client.get_multiplexed_async_connection_with_config(&connection);
        let mut conn = match tokio::time::timeout(config.connect_timeout, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                last = e.to_string();
                continue;
            }
            Err(_) => {
                last = "connect timeout".to_owned();
                continue;
            }
        };
        match query::<Value>(config, &mut conn, &cluster_slots()).await {
            Ok(slots) => return master_infos(&slots, seed),
            Err(e) => last = e,
        }
    }
    Err(format!("cannot ask the cluster for its masters: {last}"))
}

/// The masters in a `CLUSTER SLOTS` reply, as connection infos that keep the
/// seed's credentials and TLS settings.
fn master_infos(slots: &Value, seed: &ConnectionInfo) -> Result<Vec<ConnectionInfo>, String> {
    let bad = || format!("an unexpected CLUSTER SLOTS reply: {slots:?}");
    let Value::Array(ranges) = slots else {
        return Err(bad());
    };
    let mut seen: Vec<(String, u16)> = Vec::new();
    for range in ranges {
        let Value::Array(parts) = range else {
            return Err(bad());
        };
        let Some(Value::Array(master)) = parts.get(2) else {
            return Err(bad());
        };
        let host = match master.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => return Err(bad()),
        };
        let Some(Value::Int(port)) = master.get(1) else {
            return Err(bad());
        };
        let port = u16::try_from(*port).map_err(|_| bad())?;
        // An empty host means "the address you reached me at".
        let host = if host.is_empty() || host == "?" {
            match seed.addr() {
                ConnectionAddr::Tcp(h, _) => h.clone(),
                ConnectionAddr::TcpTls { host, .. } => host.clone(),
                _ => return Err(bad()),
            }
        } else {
            host
        };
        if !seen.contains(&(host.clone(), port)) {
            seen.push((host, port));
        }
    }
    let mut infos = Vec::with_capacity(seen.len());
    for (host, port) in seen {
        let addr = match seed.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        infos.push(seed.clone().set_addr(addr));
    }
    Ok(infos)
}

fn addresses(nodes: &[ConnectionInfo]) -> Vec<String> {
    let mut all: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
    all.sort();
    all
}

#[cfg(test)]
mod tests {
    //! The cache's rules, driven step by step without Redis: which read may
    //! be kept, when nothing is served, what the tracking connection's
    //! messages do. `tests/tests/redis_near.rs` drives them against real
    //! servers, where the interleavings these tests fix happen by chance.

    use super::*;
    use cloakroom_core::Id;
    use cloakroom_core::record::Data;
    use time::OffsetDateTime;

    const CAP: Duration = Duration::from_secs(10);

    fn key() -> StoreKey {
        Id::generate().unwrap().store_key()
    }

    /// A key whose invalidation counter is not `key`'s.
    fn key_elsewhere(key: &StoreKey) -> StoreKey {
        loop {
            let other = self::key();
            if stripe_of(&other) != stripe_of(key) {
                return other;
            }
        }
    }

    /// A record told apart from others by its deadline, `secs` from now.
    fn record(secs: i64) -> Record {
        Record::new(
            Data::new(),
            OffsetDateTime::now_utc() + time::Duration::seconds(secs),
        )
    }

    fn served(near: &NearCache, key: &StoreKey) -> Option<OffsetDateTime> {
        near.get(key).map(|r| r.expires_at)
    }

    /// A cache with tracking on.
    fn tracking_cache(max_entries: u64, max_bytes: u64) -> NearCache {
        let near = NearCache::new(CAP, max_entries, max_bytes);
        assert_eq!(near.start(None), 1);
        near
    }

    /// Reads `key` as a load does: a ticket, then the record kept.
    fn read(near: &NearCache, key: &StoreKey, record: &Record) {
        let ticket = near.ticket(key).expect("tracking is on");
        near.put(key, ticket, record, 100);
    }

    #[test]
    fn nothing_is_kept_or_served_while_tracking_is_off() {
        let near = NearCache::new(CAP, 100, 1 << 20);
        let key = key();
        assert!(near.ticket(&key).is_none(), "no ticket before tracking");
        assert!(!near.stats().tracking);

        assert_eq!(near.start(None), 1);
        let stored = record(3600);
        read(&near, &key, &stored);
        assert_eq!(served(&near, &key), Some(stored.expires_at));

        // The connection dropped: the cache is emptied and stops serving.
        assert!(near.stop(1));
        assert!(served(&near, &key).is_none());
        assert!(near.ticket(&key).is_none());
        let stats = near.stats();
        assert!(!stats.tracking);
        assert_eq!((stats.entries, stats.resets), (0, 1));
        // A late report from the same round changes nothing more.
        assert!(!near.stop(1));
        assert_eq!(near.stats().resets, 1);

        // Tracking again, from scratch: what the old round kept is gone.
        assert_eq!(near.start(None), 3);
        assert!(served(&near, &key).is_none());
        // A report from the round before cannot stop the new one.
        assert!(!near.stop(1));
        assert!(near.stats().tracking);
    }

    #[test]
    fn a_read_overtaken_by_an_invalidation_is_not_kept() {
        let near = tracking_cache(100, 1 << 20);
        let key = key();
        let ticket = near.ticket(&key).unwrap();
        // Redis reports a write to the key while the GET is on its way.
        near.forget(&key);
        near.put(&key, ticket, &record(3600), 100);
        assert!(served(&near, &key).is_none());

        // A write to a key counted elsewhere does not stop the read.
        let ticket = near.ticket(&key).unwrap();
        near.forget(&key_elsewhere(&key));
        let stored = record(3600);
        near.put(&key, ticket, &stored, 100);
        assert_eq!(served(&near, &key), Some(stored.expires_at));

        // And an invalidation of a cached key drops it.
        near.forget(&key);
        assert!(served(&near, &key).is_none());
    }

    #[test]
    fn a_read_across_a_reset_is_not_kept() {
        let near = tracking_cache(100, 1 << 20);
        let key = key();
        let ticket = near.ticket(&key).unwrap();
        // FLUSHALL while the GET is on its way: still tracking, a new epoch.
        assert_eq!(near.flush(1), Some(3));
        assert!(near.stats().tracking);
        near.put(&key, ticket, &record(3600), 100);
        assert!(served(&near, &key).is_none());
        // A flush reported for an epoch that is over changes nothing.
        assert_eq!(near.flush(1), None);

        let stored = record(3600);
        read(&near, &key, &stored);
        assert_eq!(served(&near, &key), Some(stored.expires_at));
        // A flush empties what was kept, and frees it.
        assert_eq!(near.flush(3), Some(5));
        assert!(served(&near, &key).is_none());
        let stats = near.stats();
        assert_eq!((stats.entries, stats.resets), (0, 2));
    }

    #[test]
    fn an_entry_is_served_only_in_the_epoch_it_was_read_in() {
        // An insert that lost a race with a reset: kept under the old epoch
        // after the cache was emptied. Only the epoch check stands between
        // it and a load.
        let near = tracking_cache(100, 1 << 20);
        let key = key();
        let ticket = near.ticket(&key).unwrap();
        assert_eq!(near.flush(1), Some(3));
        let stored = record(3600);
        near.entries.insert(
            key,
            Arc::new(Entry {
                record: stored.clone(),
                fetched: ticket.sent,
                epoch: ticket.epoch,
                size: 100,
            }),
        );
        assert!(served(&near, &key).is_none());
        read(&near, &key, &stored);
        assert_eq!(served(&near, &key), Some(stored.expires_at));
    }

    #[test]
    fn entries_are_served_within_the_cap_and_the_deadline_only() {
        let near = tracking_cache(100, 1 << 20);
        let key = key();
        // Read longer ago than the cap.
        let mut ticket = near.ticket(&key).unwrap();
        ticket.sent = Instant::now() - CAP - Duration::from_millis(1);
        near.put(&key, ticket, &record(3600), 100);
        assert!(served(&near, &key).is_none(), "served past the cap");
        // Just within it.
        let mut ticket = near.ticket(&key).unwrap();
        ticket.sent = Instant::now() - CAP + Duration::from_secs(1);
        near.put(&key, ticket, &record(3600), 100);
        assert!(served(&near, &key).is_some(), "not served within the cap");

        // A session whose deadline has come is over here too.
        let other = key_elsewhere(&key);
        read(&near, &other, &record(-1));
        assert!(served(&near, &other).is_none(), "served past its deadline");
        near.entries.run_pending_tasks();
        assert_eq!(near.entries.entry_count(), 1, "the expired entry stays");
    }

    #[test]
    fn the_version_is_not_kept_and_hits_and_misses_are_counted() {
        let near = tracking_cache(100, 1 << 20);
        let key = key();
        let mut stored = record(3600);
        stored.version = Some(7);
        read(&near, &key, &stored);
        assert_eq!(near.get(&key).unwrap().version, None);
        assert!(near.get(&key).is_some());
        let stats = near.stats();
        assert_eq!((stats.hits, stats.misses), (2, 1));
    }

    #[test]
    fn memory_is_bounded_by_entries_and_by_bytes() {
        // By entries: 10 sessions of 100 bytes in 1 MiB.
        let near = tracking_cache(10, 1 << 20);
        for _ in 0..200 {
            read(&near, &key(), &record(3600));
        }
        near.entries.run_pending_tasks();
        let stats = near.stats();
        assert!(stats.entries <= 10, "{stats:?}");
        assert!(stats.entries > 0, "{stats:?}");

        // By bytes: 100,000 allowed entries, but sessions of 4,000 bytes
        // in 64,000 bytes.
        let near = tracking_cache(100_000, 64_000);
        for _ in 0..200 {
            let key = key();
            let ticket = near.ticket(&key).unwrap();
            near.put(&key, ticket, &record(3600), 4_000);
        }
        let stats = near.stats();
        assert!(stats.weight <= 64_000, "{stats:?}");
        assert!(stats.entries > 0, "{stats:?}");

        // A session bigger than an eighth of the bytes is not kept at all.
        let key = key();
        let ticket = near.ticket(&key).unwrap();
        near.put(&key, ticket, &record(3600), 8_001);
        assert!(served(&near, &key).is_none());
        let ticket = near.ticket(&key).unwrap();
        near.put(&key, ticket, &record(3600), 8_000);
        assert!(served(&near, &key).is_some());
    }

    /// A write as the store makes it on the tracking connection: forget,
    /// ticket, (the write), then `wrote`; `meanwhile` runs while the write
    /// is on its way.
    fn write(near: &NearCache, key: &StoreKey, record: &Record, meanwhile: impl FnOnce()) {
        near.forget(key);
        let ticket = near.ticket_now(key).unwrap();
        meanwhile();
        near.wrote(key, ticket, record.clone(), 100);
    }

    #[test]
    fn an_own_write_is_kept_only_if_nothing_else_touched_the_key() {
        let near = tracking_cache(100, 1 << 20);
        let key = key();
        let written = record(3600);
        write(&near, &key, &written, || {});
        assert_eq!(served(&near, &key), Some(written.expires_at));
        // Not counted as a miss: no GET was sent.
        assert_eq!(near.stats().misses, 0);

        // Another process wrote the key while this write was on its way.
        write(&near, &key, &record(7200), || near.forget(&key));
        assert!(served(&near, &key).is_none());

        // Too big to keep.
        near.forget(&key);
        let ticket = near.ticket_now(&key).unwrap();
        near.wrote(&key, ticket, record(3600), 1 << 20);
        assert!(served(&near, &key).is_none());
    }

    #[test]
    fn a_read_sent_before_an_own_write_cannot_replace_it() {
        let near = tracking_cache(100, 1 << 20);
        let key = key();
        let before = record(60);
        // A load's GET goes out, then this process writes the key and keeps
        // the value; the GET's answer (the old value) arrives last.
        let ticket = near.ticket(&key).unwrap();
        let written = record(3600);
        write(&near, &key, &written, || {});
        near.put(&key, ticket, &before, 100);
        assert_eq!(served(&near, &key), Some(written.expires_at));

        // The same with the GET sent while the write was on its way.
        let key = self::key();
        let written = record(3600);
        let mut late = None;
        write(&near, &key, &written, || late = near.ticket(&key));
        near.put(&key, late.unwrap(), &before, 100);
        assert_eq!(served(&near, &key), Some(written.expires_at));
    }

    fn invalidator(near: &Arc<NearCache>, epoch: u64) -> Invalidator {
        Invalidator {
            near: Arc::clone(near),
            prefix: "app:s:".to_owned(),
            epoch: Arc::new(AtomicU64::new(epoch)),
        }
    }

    fn push(kind: PushKind, data: Vec<Value>) -> PushInfo {
        PushInfo { kind, data }
    }

    #[test]
    fn redis_invalidations_drop_only_the_keys_they_name() {
        let near = Arc::new(tracking_cache(100, 1 << 20));
        let inv = invalidator(&near, 1);
        let (ours, other) = (key(), key());
        for key in [&ours, &other] {
            read(&near, key, &record(3600));
        }
        let keys = |names: Vec<String>| {
            push(
                PushKind::Invalidate,
                vec![Value::Array(
                    names
                        .into_iter()
                        .map(|n| Value::BulkString(n.into_bytes()))
                        .collect(),
                )],
            )
        };
        // Under another prefix, or not a session key: nothing of ours.
        let foreign = vec![
            format!("other:{}", ours.hex()),
            "app:s:not-a-key".to_owned(),
        ];
        inv.send(keys(foreign)).unwrap();
        assert!(served(&near, &ours).is_some());
        inv.send(keys(vec![format!("app:s:{}", ours.hex())]))
            .unwrap();
        assert!(served(&near, &ours).is_none());
        assert!(served(&near, &other).is_some());
        // Keys may come as simple strings too.
        let simple = push(
            PushKind::Invalidate,
            vec![Value::Array(vec![Value::SimpleString(format!(
                "app:s:{}",
                other.hex()
            ))])],
        );
        inv.send(simple).unwrap();
        assert!(served(&near, &other).is_none());
        assert!(near.stats().tracking);
        assert_eq!(near.stats().resets, 0);
    }

    #[test]
    fn a_flush_or_an_unreadable_invalidation_empties_the_cache() {
        let near = Arc::new(tracking_cache(100, 1 << 20));
        let inv = invalidator(&near, 1);
        let key = key();
        read(&near, &key, &record(3600));
        // FLUSHALL: Redis sends nil.
        inv.send(push(PushKind::Invalidate, vec![Value::Nil]))
            .unwrap();
        assert!(served(&near, &key).is_none());
        assert!(near.stats().tracking);
        // The connection's round follows the cache to the new epoch, so its
        // next report still counts.
        assert_eq!(inv.epoch.load(Ordering::SeqCst), 3);
        read(&near, &key, &record(3600));
        let odd = push(
            PushKind::Invalidate,
            vec![Value::Array(vec![Value::Int(1)])],
        );
        inv.send(odd).unwrap();
        assert!(served(&near, &key).is_none());
        assert_eq!(near.stats().resets, 2);
    }

    #[test]
    fn a_dropped_connection_stops_the_cache_and_wakes_the_tracker() {
        let near = Arc::new(tracking_cache(100, 1 << 20));
        let key = key();
        read(&near, &key, &record(3600));
        // A connection of an earlier round reports its end: ignored.
        invalidator(&near, 7)
            .send(push(PushKind::Disconnection, vec![]))
            .unwrap();
        assert!(served(&near, &key).is_some());

        invalidator(&near, 1)
            .send(push(PushKind::Disconnection, vec![]))
            .unwrap();
        assert!(served(&near, &key).is_none());
        assert!(!near.stats().tracking);
        // The tracker was told: a permit is waiting.
        let woken = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                tokio::time::timeout(Duration::from_millis(10), near.lost.notified())
                    .await
                    .is_ok()
            });
        assert!(woken);
    }

    #[test]
    fn the_heartbeat_is_a_quarter_of_the_cap_within_bounds() {
        assert_eq!(
            heartbeat(Duration::from_secs(2)),
            Duration::from_millis(250)
        );
        assert_eq!(
            heartbeat(Duration::from_millis(400)),
            Duration::from_millis(100)
        );
        assert_eq!(
            heartbeat(Duration::from_millis(40)),
            Duration::from_millis(20)
        );
    }

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"0123abcd".to_vec()),
        ])
    }

    fn range(from: i64, to: i64, master: Value) -> Value {
        Value::Array(vec![
            Value::Int(from),
            Value::Int(to),
            master,
            node("10.0.0.9", 7100),
        ])
    }

    #[test]
    fn the_masters_are_read_from_cluster_slots() {
        let seed: ConnectionInfo = "redis://:pw@127.0.0.1:7000/".parse().unwrap();
        let slots = Value::Array(vec![
            range(0, 5000, node("127.0.0.2", 7001)),
            range(5001, 9000, node("", 7002)),
            range(9001, 16383, node("127.0.0.2", 7001)),
        ]);
        let masters = master_infos(&slots, &seed).unwrap();
        let shown: Vec<String> = masters.iter().map(|m| m.addr().to_string()).collect();
        // Each master once; an empty host is the seed's; replicas are not
        // masters.
        assert_eq!(shown, ["127.0.0.2:7001", "127.0.0.1:7002"]);
        for master in &masters {
            assert_eq!(master.redis_settings().password(), Some("pw"));
        }
        assert_eq!(
            addresses(&masters),
            ["127.0.0.1:7002", "127.0.0.2:7001"],
            "sorted, to compare rounds"
        );

        for bad in [
            Value::Nil,
            Value::Array(vec![Value::Nil]),
            Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(1)])]),
            Value::Array(vec![range(
                0,
                1,
                Value::Array(vec![Value::Nil, Value::Int(1)]),
            )]),
            Value::Array(vec![range(0, 1, node("h", 70_000))]),
        ] {
            assert!(master_infos(&bad, &seed).is_err(), "{bad:?}");
        }
    }
}
