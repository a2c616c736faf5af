//! Login throttling: failed logins counted per user name and per client
//! address over a fixed window, in memory.
//!
//! An attempt is counted when it starts, not when it fails, so a burst of
//! parallel guesses cannot all pass the check before any of them is counted;
//! a successful login then gives its attempt back (and clears the user
//! name's count altogether).
//!
//! Each table holds at most [`CAPACITY`] entries, so a flood of made-up user
//! names or addresses costs a bounded amount of memory. Entries leave in the
//! order they were made (which is also the order their windows end): when
//! their window is over, or, in a full table, the oldest first. The
//! alternative, refusing to count new names in a full table, would let a
//! flood switch throttling off; evicting the oldest at worst forgets a count
//! early, and filling the table takes more attempts than the address limit
//! allows one client.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ring::digest::{SHA256, digest};

use crate::DashboardSettings;

/// Entries per table: under 10 MB each when full, far more user names and
/// addresses than a real dashboard sees in one window.
const CAPACITY: usize = 50_000;

/// A user name's key: its SHA-256, so a megabyte-long user name takes as
/// much room in the table as any other.
type UserKey = [u8; 32];

/// A fixed window: the first counted attempt starts it.
#[derive(Debug)]
struct Window {
    /// Which entry of the table's `order` made this one.
    id: u64,
    start: Instant,
    count: u32,
}

/// One table of windows, with the order they were made in.
#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, Window>,
    /// Keys with the id of the window they made, oldest first. An entry
    /// removed early (a success) leaves its record here until it reaches
    /// the front; the id tells a stale record from the key's newer window.
    order: VecDeque<(K, u64)>,
    next_id: u64,
}

impl<K: Hash + Eq + Copy> Table<K> {
    fn new() -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_id: 0,
        }
    }

    /// Counts one attempt for `key` against `limit`, or says how long until
    /// its window ends.
    fn take(&mut self, key: K, limit: u32, window: Duration, now: Instant) -> Result<(), Duration> {
        self.drop_expired(window, now);
        if let Some(w) = self.entries.get_mut(&key) {
            let end = w.start + window;
            // `now` may be a hair older than the last one seen (requests take
            // it before they wait for the lock), so an expired window can
            // still be here.
            if now < end && w.count >= limit {
                return Err(end - now);
            }
            w.count += 1;
            return Ok(());
        }
        if self.entries.len() >= CAPACITY {
            self.drop_oldest();
        }
        if self.order.len() >= 2 * CAPACITY {
            // Stale records piled up behind a long-lived one.
            let entries = &self.entries;
            self.order
                .retain(|(k, id)| entries.get(k).is_some_and(|w| w.id == *id));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(
            key,
            Window {
                id,
                start: now,
                count: 1,
            },
        );
        self.order.push_back((key, id));
        Ok(())
    }

    fn give_back(&mut self, key: K) {
        if let Some(w) = self.entries.get_mut(&key) {
            w.count = w.count.saturating_sub(1);
        }
    }

    fn remove(&mut self, key: K) {
        self.entries.remove(&key);
    }

    fn drop_expired(&mut self, window: Duration, now: Instant) {
        while let Some((key, id)) = self.order.front().copied() {
            if let Some(w) = self.entries.get(&key).filter(|w| w.id == id) {
                if now < w.start + window {
                    return;
                }
                self.entries.remove(&key);
            }
            self.order.pop_front();
        }
    }

    fn drop_oldest(&mut self) {
        while let Some((key, id)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|w| w.id == id) {
                self.entries.remove(&key);
                return;
            }
        }
    }
}

/// The counters, shared by every request.
#[derive(Debug)]
pub(crate) struct LoginThrottle {
    per_user: u32,
    per_address: u32,
    window: Duration,
    // Two locks, taken one after the other and never together, so no order
    // between them can deadlock; each is held for a few map operations.
    users: Mutex<Table<UserKey>>,
    addresses: Mutex<Table<IpAddr>>,
}

/// An attempt that passed the check and was counted; hand it back to
/// [`LoginThrottle::succeeded`] when the password was right.
#[derive(Debug)]
#[must_use]
pub(crate) struct Attempt {
    user: UserKey,
    address: Option<IpAddr>,
}

/// A table whose lock a panicking thread left poisoned still holds
/// meaningful counts (no code panics halfway through changing one), so it
/// is used as it is.
fn lock<K>(table: &Mutex<Table<K>>) -> std::sync::MutexGuard<'_, Table<K>> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LoginThrottle {
    /// The limits of `settings`.
    pub(crate) fn new(settings: &DashboardSettings) -> Self {
        Self {
            per_user: settings.login_failures_per_user,
            per_address: settings.login_failures_per_address,
            window: settings.login_window,
            users: Mutex::new(Table::new()),
            addresses: Mutex::new(Table::new()),
        }
    }

    /// Counts an attempt by `username` from `address` (`None` when the
    /// server does not know it: only the user name's limit applies then,
    /// rather than one shared count that would lock everyone out).
    ///
    /// # Errors
    /// How long until the window that is full ends, when either is.
    pub(crate) fn begin(
        &self,
        username: &str,
        address: Option<IpAddr>,
        now: Instant,
    ) -> Result<Attempt, Duration> {
        let user = user_key(username);
        let address = address.map(address_key);
        lock(&self.users).take(user, self.per_user, self.window, now)?;
        if let Some(address) = address {
            let counted = lock(&self.addresses).take(address, self.per_address, self.window, now);
            if let Err(wait) = counted {
                // This attempt does not happen: the user name gets it back.
                lock(&self.users).give_back(user);
                return Err(wait);
            }
        }
        Ok(Attempt { user, address })
    }

    /// The attempt logged in: the user name starts afresh, and the address
    /// gets the attempt back (but keeps its failures, or one account the
    /// attacker owns would reset an address's count).
    pub(crate) fn succeeded(&self, attempt: Attempt) {
        lock(&self.users).remove(attempt.user);
        if let Some(address) = attempt.address {
            lock(&self.addresses).give_back(address);
        }
    }
}

fn user_key(username: &str) -> UserKey {
    let mut key = [0u8; 32];
    key.copy_from_slice(digest(&SHA256, username.as_bytes()).as_ref());
    key
}

/// IPv4 as it is; IPv6 by its /64, as one host usually has a whole /64 to
/// pick addresses from.
fn address_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

/// Whole seconds for a `Retry-After` header: rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(per_user: u32, per_address: u32, window_secs: u64) -> LoginThrottle {
        LoginThrottle::new(&DashboardSettings {
            login_failures_per_user: per_user,
            login_failures_per_address: per_address,
            login_window: Duration::from_secs(window_secs),
            ..DashboardSettings::default()
        })
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("an address"))
    }

    #[test]
    fn a_user_name_is_stopped_after_its_limit_until_the_window_ends() {
        let t = throttle(3, 100, 300);
        let t0 = Instant::now();
        for i in 0..3 {
            let _failed = t
                .begin("ada", ip("192.0.2.1"), t0 + Duration::from_secs(i))
                .expect("under the limit");
        }
        // From any address, with any password: the name is stopped.
        let wait = t
            .begin("ada", ip("198.51.100.9"), t0 + Duration::from_secs(10))
            .expect_err("over the limit");
        assert_eq!(wait, Duration::from_secs(290));
        assert_eq!(retry_after_secs(wait), 290);
        // Another name is not.
        let _other = t
            .begin("bob", ip("192.0.2.1"), t0 + Duration::from_secs(10))
            .expect("another name");
        // The window is counted from the first failure, and refused
        // attempts do not extend it.
        let _again = t
            .begin("ada", None, t0 + Duration::from_secs(300))
            .expect("a new window");
    }

    #[test]
    fn an_address_is_stopped_after_its_limit_whatever_the_name() {
        let t = throttle(100, 2, 60);
        let t0 = Instant::now();
        let _a = t.begin("a", ip("192.0.2.1"), t0).expect("first");
        let _b = t.begin("b", ip("192.0.2.1"), t0).expect("second");
        let wait = t
            .begin("c", ip("192.0.2.1"), t0 + Duration::from_millis(500))
            .expect_err("third from the address");
        assert_eq!(retry_after_secs(wait), 60);
        // The refused attempt was not counted against "c".
        let _c = t.begin("c", ip("192.0.2.2"), t0).expect("another address");
        // An unknown address has no count of its own.
        for _ in 0..5 {
            let _unknown = t.begin("d", None, t0).expect("no address limit");
        }
        // IPv6 is counted by /64, and an IPv4-mapped address as IPv4.
        let _v6 = t.begin("e", ip("2001:db8::1"), t0).expect("first");
        let _v6 = t.begin("e", ip("2001:db8::2"), t0).expect("second");
        t.begin("e", ip("2001:db8::ffff:3"), t0)
            .expect_err("same /64");
        t.begin("f", ip("::ffff:192.0.2.1"), t0)
            .expect_err("mapped IPv4");
    }

    #[test]
    fn a_success_clears_the_name_and_gives_the_address_its_attempt_back() {
        let t = throttle(2, 3, 60);
        let t0 = Instant::now();
        let _failed = t.begin("ada", ip("192.0.2.1"), t0).expect("first");
        let ok = t.begin("ada", ip("192.0.2.1"), t0).expect("second");
        t.succeeded(ok);
        // The name starts afresh: two more before it is stopped.
        let _failed = t.begin("ada", ip("192.0.2.2"), t0).expect("fresh");
        let _failed = t.begin("ada", ip("192.0.2.2"), t0).expect("fresh");
        t.begin("ada", ip("192.0.2.2"), t0).expect_err("limit");
        // The address kept its one failure: two more attempts, not three.
        let _failed = t.begin("x", ip("192.0.2.1"), t0).expect("second");
        let _failed = t.begin("y", ip("192.0.2.1"), t0).expect("third");
        t.begin("z", ip("192.0.2.1"), t0)
            .expect_err("address limit");
    }

    #[test]
    fn a_full_table_forgets_its_oldest_entry_and_stays_full() {
        let t = throttle(1, 1_000_000, 60);
        let t0 = Instant::now();
        let _first = t.begin("first", None, t0).expect("first");
        for i in 0..CAPACITY {
            let _failed = t
                .begin(&format!("flood{i}"), None, t0 + Duration::from_millis(1))
                .expect("a new name");
        }
        let users = lock(&t.users);
        assert_eq!(users.entries.len(), CAPACITY);
        assert!(users.order.len() <= 2 * CAPACITY);
        drop(users);
        // The oldest went; the newest are still counted.
        let _again = t.begin("first", None, t0).expect("forgotten");
        t.begin("flood9999", None, t0).expect_err("still counted");
        // After the window, everything expires.
        let _later = t
            .begin("x", None, t0 + Duration::from_secs(61))
            .expect("new window");
        assert_eq!(lock(&t.users).entries.len(), 1);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(5)), 5);
    }
}
