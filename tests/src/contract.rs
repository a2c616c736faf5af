//! Store-level cases of the [`SessionStore`] contract that every server-side
//! engine must pass, called directly on the store (the HTTP-level suite is
//! [`cases`](crate::cases)).
//!
//! Each case takes the store and a `held` probe that asks the backend itself
//! (a plain client, not the store) whether it still holds anything under a
//! key, so that "nothing came back" is checked where it matters.

use std::future::Future;
use std::time::Duration;

use cloakroom_core::record::Data;
use cloakroom_core::{Call, Id, Record, SessionStore, StoreKey};
use serde_json::json;
use time::OffsetDateTime;

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

/// The most bytes a store call's future may take: the layer boxes one per
/// call, copying all of it, on every request that uses the session.
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
        ("touch", size(&store.touch(&key, record.expires_at))),
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
    assert!(!store.touch(&key, later).await.expect("touch"));
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
    assert!(!store.touch(&key, later).await.expect("touch"));
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
