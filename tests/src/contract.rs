//! Store-level cases of the [`SessionStore`] contract that every server-side
//! engine must pass, called directly on the store (the HTTP-level suite is
//! [`cases`](crate::cases)).
//!
//! [`every_operation`] drives all five operations and checks what the
//! contract promises of each; each engine's test file runs it on the store
//! itself and through every wrapper ([`Probe`](crate::probe::Probe), the
//! `cached_db` cache), so that a wrapper cannot drop behaviour unnoticed.
//! [`each_call_reaches`] then checks, through the probe's counters, that
//! every call went on to the store it wraps, as itself and once.
//!
//! Some cases take a `held` probe that asks the backend itself (a plain
//! client, not the store) whether it still holds anything under a key, so
//! that "nothing came back" is checked where it matters.

use std::future::Future;
use std::time::Duration;

use cloakroom_core::record::{DEADLINE_FIELD_LEN, Data, from_millis, millis};
use cloakroom_core::{Call, Expiry, Id, Record, SessionStore, StoreKey};
use serde_json::json;
use time::OffsetDateTime;

use crate::probe::{Counts, Snapshot};

/// A fresh key, never used before.
pub fn new_key() -> StoreKey {
    Id::generate().expect("OS randomness").store_key()
}

/// A record holding `value` under `"v"`, live for `ttl`.
pub fn record(value: &str, ttl: Duration) -> Record {
    let mut data = Data::new();
    data.insert("v".into(), json!(value));
    Record::new(data, OffsetDateTime::now_utc() + ttl)
}

const MINUTE: Duration = Duration::from_secs(60);

/// The most bytes a pending store call's future may take: the store boxes
/// one per call that waits, copying all of it, on every request that uses
/// the session.
pub const MAX_CALL_FUTURE_BYTES: usize = 4096;

/// Every store call's future stays small: a connection attempt or another
/// rare path kept inline once made each Redis call's 7.8 KB and each SQL
/// call's 18 KB.
pub fn calls_stay_small(store: &dyn SessionStore) {
    fn size<T>(call: &Call<'_, T>) -> usize {
        match call {
            Call::Ready(_) => 0,
            Call::Pending(work) => std::mem::size_of_val(&**work),
        }
    }
    let key = new_key();
    let record = record("v", MINUTE);
    let sizes = [
        ("load", size(&store.load(&key))),
        ("create", size(&store.create(&key, &record))),
        ("update", size(&store.update(&key, &record))),
        ("touch", size(&store.touch(&key, &record))),
        ("delete", size(&store.delete(&key))),
    ];
    for (call, size) in sizes {
        assert!(
            size <= MAX_CALL_FUTURE_BYTES,
            "{} {call}: {size} bytes",
            store.engine()
        );
    }
}

/// `create` never overwrites a live session.
pub async fn create_never_overwrites(store: &dyn SessionStore) {
    let key = new_key();
    assert!(
        store
            .create(&key, &record("first", MINUTE))
            .await
            .expect("create")
    );
    assert!(
        !store
            .create(&key, &record("second", MINUTE))
            .await
            .expect("create")
    );
    let kept = store.load(&key).await.expect("load").expect("the session");
    assert_eq!(kept.data["v"], json!("first"));
}

/// An update or touch of a session that is not there, or no longer there
/// (a logout in a concurrent request), and updates racing deletes over
/// `races` rounds, never bring a session back.
pub async fn deleted_sessions_stay_deleted<F, Fut>(store: &dyn SessionStore, held: F, races: usize)
where
    F: Fn(StoreKey) -> Fut,
    Fut: Future<Output = bool>,
{
    let key = new_key();
    assert!(
        !store
            .update(&key, &record("never", MINUTE))
            .await
            .expect("update")
    );
    let later = OffsetDateTime::now_utc() + MINUTE;
    let never = record("never", MINUTE);
    assert!(!store.touch(&key, &never).await.expect("touch"));
    assert!(!held(key).await, "an update or touch created a session");

    assert!(
        store
            .create(&key, &record("a", MINUTE))
            .await
            .expect("create")
    );
    let loaded = store.load(&key).await.expect("load").expect("the session");
    store.delete(&key).await.expect("delete");
    store.delete(&key).await.expect("deleting twice is fine");
    let mut changed = loaded.clone();
    changed.data.insert("v".into(), json!("b"));
    assert!(!store.update(&key, &changed).await.expect("update"));
    // A touch of the session as loaded, with the version of the load if the
    // store gave one, finds it gone too.
    let touched = Record {
        expires_at: later,
        ..loaded
    };
    assert!(!store.touch(&key, &touched).await.expect("touch"));
    assert!(store.load(&key).await.expect("load").is_none());
    assert!(!held(key).await, "the deleted session came back");

    for round in 0..races {
        let key = new_key();
        assert!(
            store
                .create(&key, &record("a", MINUTE))
                .await
                .expect("create")
        );
        let newer = record("b", MINUTE);
        let (updated, deleted) = tokio::join!(store.update(&key, &newer), store.delete(&key));
        updated.expect("update");
        deleted.expect("delete");
        // Whichever ran first, the delete leaves nothing behind.
        assert!(!held(key).await, "round {round}: recreated");
    }
}

/// `offset` from now, in whole milliseconds: every store keeps deadlines to
/// the millisecond, so only such a deadline can come back equal.
fn at(offset: time::Duration) -> OffsetDateTime {
    from_millis(millis(OffsetDateTime::now_utc() + offset)).expect("a deadline near now")
}

/// Values of every JSON kind, text that needs escaping included, tagged with
/// `tag` so that records made from it differ.
fn varied_data(tag: &str) -> Data {
    let mut data = Data::new();
    for (name, value) in [
        ("tag", json!(tag)),
        ("null", json!(null)),
        ("yes", json!(true)),
        ("big", json!(u64::MAX)),
        ("negative", json!(-42)),
        ("float", json!(0.1)),
        ("text", json!("ünïcødé \"quoted\" \\ \u{0} ☁")),
        (
            "nested",
            json!({"list": [1, "two", [3.5], null], "empty": {}}),
        ),
    ] {
        data.insert(name.into(), value);
    }
    data
}

/// A record of `data` with the expiry policy `expiry`, whose deadline is
/// `ttl` from now (to the millisecond).
fn full_record(data: Data, expiry: Option<Expiry>, ttl: time::Duration) -> Record {
    Record {
        data,
        expiry,
        expires_at: at(ttl),
        version: None,
        cycled: false,
    }
}

/// The record's bytes without its deadline field: what a touch must leave
/// exactly as it was.
fn without_deadline(record: &Record) -> Vec<u8> {
    let mut bytes = record.to_bytes().expect("a record encodes");
    bytes.truncate(bytes.len() - DEADLINE_FIELD_LEN);
    bytes
}

/// The values of `record`, for failure messages (`Data`'s `Debug` shows the
/// keys only).
fn shown(record: Option<&Record>) -> String {
    match record {
        None => "no session".to_owned(),
        Some(r) => format!(
            "{:?}, expiry {:?}, deadline {} ms",
            r.data.to_map(),
            r.expiry,
            r.expires_at_millis()
        ),
    }
}

/// The store under test, and the store it writes through to, if it is a
/// cache: every state is checked on both, so that a cache that kept a write
/// to itself is caught.
#[derive(Clone, Copy)]
struct Views<'a> {
    store: &'a dyn SessionStore,
    inner: Option<&'a dyn SessionStore>,
}

impl Views<'_> {
    /// `load` of `key` gives exactly `expected` (data, expiry policy and
    /// deadline to the millisecond), on the store and on what it writes to.
    async fn expect(&self, key: &StoreKey, expected: Option<&Record>, what: &str) {
        let engine = self.store.engine();
        let views = std::iter::once(("", self.store))
            .chain(self.inner.map(|inner| (" (the store written to)", inner)));
        for (which, store) in views {
            let loaded = store.load(key).await.expect("load");
            assert!(
                loaded.as_ref() == expected,
                "{engine}{which}: {what}: loaded {}, expected {}",
                shown(loaded.as_ref()),
                shown(expected)
            );
        }
    }

    /// `create` of `record` under `key` succeeds.
    async fn create(&self, key: &StoreKey, record: &Record, what: &str) {
        let created = self.store.create(key, record).await.expect("create");
        assert!(created, "{}: {what}: create refused", self.store.engine());
    }

    /// `update` of the live session under `key` to `record` succeeds, and
    /// `load` then gives `record`.
    async fn update(&self, key: &StoreKey, record: &Record, what: &str) {
        let updated = self.store.update(key, record).await.expect("update");
        assert!(
            updated,
            "{}: {what}: update found no session",
            self.store.engine()
        );
        self.expect(key, Some(record), what).await;
    }

    /// `touch` of the live session under `key`, as `loaded` (by this
    /// store's `load`), to `deadline` succeeds.
    async fn touch(&self, key: &StoreKey, loaded: &Record, deadline: OffsetDateTime, what: &str) {
        let record = Record {
            expires_at: deadline,
            ..loaded.clone()
        };
        let touched = self.store.touch(key, &record).await.expect("touch");
        assert!(
            touched,
            "{}: {what}: touch found no session",
            self.store.engine()
        );
    }

    /// There is no live session under `key`: `load` finds none, and an
    /// update or a touch finds none to change (and so brings none back).
    async fn expect_gone(&self, key: &StoreKey, what: &str) {
        let engine = self.store.engine();
        self.expect(key, None, what).await;
        let revived = full_record(varied_data("revived"), None, time::Duration::minutes(5));
        assert!(
            !self.store.update(key, &revived).await.expect("update"),
            "{engine}: {what}: an update found a session"
        );
        assert!(
            !self.store.touch(key, &revived).await.expect("touch"),
            "{engine}: {what}: a touch found a session"
        );
        self.expect(key, None, what).await;
    }
}

/// Every one of the five operations, checked against what the contract
/// (the docs of [`SessionStore`]) promises, strictly enough that a store or
/// wrapper with one operation wrong, dropped or sent to another fails:
///
/// * `load` of an unknown key is `None`, `update` and `touch` find nothing
///   there and leave nothing behind; after `create` `load` gives back
///   exactly the record created (data of every JSON kind, expiry policy,
///   deadline to the millisecond);
/// * `update` replaces all three, with a deadline moved earlier and one
///   moved later; an update from the record as `load` gave it (with any
///   version the store set) succeeds, and so does a second one from the same,
///   now stale, record: the last writer wins;
/// * `touch` of the session as loaded moves the deadline later and earlier
///   and leaves the data and expiry policy byte for byte; a touch of a
///   session that another write changed since the load keeps the newer
///   data; touched to now or to the past, the session is over;
/// * a record created past its deadline is never loaded, and does not hold
///   its key;
/// * `delete` ends a live session for `load`, `update` and `touch`, and
///   deleting a missing key is fine;
/// * none of this changes a second session.
pub async fn every_operation(store: &dyn SessionStore) {
    check_every_operation(Views { store, inner: None }).await;
}

/// [`every_operation`] on a cache in front of `inner` (`CachedStore`),
/// checking every state on `inner` too: a write the cache kept to itself
/// would pass through its own loads unseen.
pub async fn every_operation_written_through(store: &dyn SessionStore, inner: &dyn SessionStore) {
    check_every_operation(Views {
        store,
        inner: Some(inner),
    })
    .await;
}

async fn check_every_operation(views: Views<'_>) {
    let store = views.store;
    let (seconds, minutes, hours) = (
        time::Duration::seconds,
        time::Duration::minutes,
        time::Duration::hours,
    );
    // `Expiry::AtDateTime` is kept in whole seconds.
    let at_whole_second = |ttl| {
        OffsetDateTime::from_unix_timestamp(at(ttl).unix_timestamp()).expect("a time near now")
    };

    // A key nobody created: nothing to load, update or touch, and those
    // calls, which found nothing, leave nothing behind either: a session
    // created under the key afterwards is exactly the one created.
    let unknown = new_key();
    views.expect_gone(&unknown, "an unknown key").await;
    let fresh = full_record(
        varied_data("fresh"),
        Some(Expiry::OnInactivity(minutes(30))),
        minutes(30),
    );
    let what = "created after an update and a touch found nothing";
    views.create(&unknown, &fresh, what).await;
    views.expect(&unknown, Some(&fresh), what).await;
    store.delete(&unknown).await.expect("delete");
    store
        .delete(&new_key())
        .await
        .expect("deleting a missing key is not an error");

    // Two sessions; every change below is to `a`, and `b` must never show
    // any of them.
    let (a, b) = (new_key(), new_key());
    let created = full_record(
        varied_data("a1"),
        Some(Expiry::OnInactivity(minutes(90))),
        minutes(90),
    );
    let other = full_record(
        varied_data("b1"),
        Some(Expiry::AtDateTime(at_whole_second(minutes(45)))),
        minutes(45),
    );
    views.create(&a, &created, "created").await;
    views.create(&b, &other, "the other session, created").await;
    views.expect(&a, Some(&created), "created").await;
    views
        .expect(&b, Some(&other), "the other session, created")
        .await;
    let (b_key, b_record) = (&b, &other);
    let other_unchanged = move |after: &'static str| async move {
        views.expect(b_key, Some(b_record), after).await;
    };

    // Update replaces data (a value removed, one added, one changed), expiry
    // policy and deadline, moved earlier; then with a later deadline and no
    // expiry policy at all.
    let mut data = varied_data("a2");
    let removed = data.remove("nested").expect("a value set in memory");
    assert!(removed.is_some());
    data.insert("added".into(), json!(["x", 2]));
    let expiry = Some(Expiry::AtDateTime(at_whole_second(minutes(20))));
    let earlier = full_record(data, expiry, minutes(20));
    views
        .update(&a, &earlier, "updated, deadline earlier")
        .await;
    let later = full_record(varied_data("a3"), None, hours(3));
    views.update(&a, &later, "updated, deadline later").await;
    other_unchanged("after updates of another").await;

    // Touch moves the deadline, later and then earlier, and nothing else.
    for (deadline, what) in [
        (at(hours(5)), "touched later"),
        (at(minutes(10)), "touched earlier"),
    ] {
        let before = store.load(&a).await.expect("load").expect("the session");
        views.touch(&a, &before, deadline, what).await;
        let touched = Record {
            expires_at: deadline,
            ..later.clone()
        };
        views.expect(&a, Some(&touched), what).await;
        let after = store.load(&a).await.expect("load").expect("the session");
        assert!(
            without_deadline(&after) == without_deadline(&before),
            "{}: {what}: the data or expiry policy changed",
            store.engine()
        );
    }
    other_unchanged("after touches of another").await;

    // An update from the record as loaded (with whatever version the store
    // gave it) succeeds, and so does a second one from the same record, now
    // stale: the last writer wins, a version must not make it fail. The
    // same when a touch came between the load and the update.
    let loaded = store.load(&a).await.expect("load").expect("the session");
    let mut first = loaded.clone();
    first.data.insert("tag".into(), json!("first"));
    first.expiry = Some(Expiry::OnBrowserClose);
    first.expires_at = at(minutes(70));
    views.update(&a, &first, "updated as loaded").await;
    let mut second = loaded;
    second.data.insert("tag".into(), json!("second"));
    second.expires_at = at(minutes(80));
    views
        .update(&a, &second, "updated again from the same load")
        .await;
    let loaded = store.load(&a).await.expect("load").expect("the session");
    views
        .touch(&a, &loaded, at(hours(2)), "touched after a load")
        .await;
    let mut third = loaded;
    third.data.insert("tag".into(), json!("third"));
    third.expires_at = at(minutes(60));
    views
        .update(&a, &third, "updated from a load before a touch")
        .await;
    // A touch of the session as loaded before another request updated it
    // keeps the newer data: only the deadline moves.
    let loaded = store.load(&a).await.expect("load").expect("the session");
    let mut fourth = loaded.clone();
    fourth.data.insert("tag".into(), json!("fourth"));
    fourth.expires_at = at(minutes(50));
    views
        .update(&a, &fourth, "updated after another load")
        .await;
    let deadline = at(hours(4));
    views
        .touch(
            &a,
            &loaded,
            deadline,
            "touched from a load before an update",
        )
        .await;
    let kept = Record {
        expires_at: deadline,
        ..fourth
    };
    views
        .expect(&a, Some(&kept), "touched from a load before an update")
        .await;
    other_unchanged("after saves of another").await;

    // Delete ends the session for every operation; deleting again is fine.
    store.delete(&a).await.expect("delete");
    views.expect_gone(&a, "deleted").await;
    store
        .delete(&a)
        .await
        .expect("deleting twice is not an error");
    other_unchanged("after a delete of another").await;

    // A touch to now or to the past ends a live session: its deadline has
    // come, whatever the backend keeps until an expiry of its own.
    for (deadline, what) in [
        (at(seconds(0)), "touched to now"),
        (at(seconds(-5)), "touched to the past"),
    ] {
        let key = new_key();
        views.create(&key, &later, what).await;
        let loaded = store.load(&key).await.expect("load").expect("the session");
        views.touch(&key, &loaded, deadline, what).await;
        views.expect_gone(&key, what).await;
    }

    // A record created with its deadline come is never loaded, and does not
    // hold its key: only a live session makes create refuse.
    let mut expired = Vec::new();
    for (ttl, what) in [
        (seconds(0), "created with its deadline now"),
        (seconds(-1), "created a second past its deadline"),
        (hours(-1), "created an hour past its deadline"),
    ] {
        let key = new_key();
        let record = full_record(varied_data("expired"), None, ttl);
        views.create(&key, &record, what).await;
        views.expect_gone(&key, what).await;
        expired.push(key);
    }
    for key in &expired {
        views
            .create(key, &other, "created over an expired record")
            .await;
        views
            .expect(key, Some(&other), "created over an expired record")
            .await;
        store.delete(key).await.expect("delete");
    }

    other_unchanged("at the end").await;
    store.delete(&b).await.expect("delete");
    views.expect(&b, None, "the other session, deleted").await;
}

/// Every one of the five operations has been counted in `counts` at least
/// once: the cases run so far through the probe reached it with each.
pub fn all_five_called(counts: &Counts) {
    let seen = counts.snapshot();
    for (call, n) in [
        ("load", seen.load),
        ("create", seen.create),
        ("update", seen.update),
        ("touch", seen.touch),
        ("delete", seen.delete),
    ] {
        assert!(n > 0, "no {call} reached the probe: {seen:?}");
    }
}

/// Each call on `store` reaches the probe behind `counts` (`store` is the
/// probe, or a wrapper in front of it) as the same call, exactly once: a
/// wrapper that dropped a call, turned it into another or repeated it is
/// caught. The load is of a key `store` has never seen, which even a cache
/// has to ask for.
pub async fn each_call_reaches(store: &dyn SessionStore, counts: &Counts) {
    let engine = store.engine();
    let key = new_key();
    let record = record("counted", MINUTE);
    // The call's own counter, so each check names what it expects to move.
    type Counter = fn(&mut Snapshot) -> &mut usize;
    let once = |before: Snapshot, call: &str, counter: Counter| {
        let mut expected = before;
        *counter(&mut expected) += 1;
        assert_eq!(
            counts.snapshot(),
            expected,
            "{engine}: one {call} did not reach the probe as one {call}"
        );
    };
    let before = counts.snapshot();
    assert!(store.load(&key).await.expect("load").is_none());
    once(before, "load", |s| &mut s.load);
    let before = counts.snapshot();
    assert!(store.create(&key, &record).await.expect("create"));
    once(before, "create", |s| &mut s.create);
    let before = counts.snapshot();
    assert!(store.update(&key, &record).await.expect("update"));
    once(before, "update", |s| &mut s.update);
    let before = counts.snapshot();
    assert!(store.touch(&key, &record).await.expect("touch"));
    once(before, "touch", |s| &mut s.touch);
    let before = counts.snapshot();
    store.delete(&key).await.expect("delete");
    once(before, "delete", |s| &mut s.delete);
}
