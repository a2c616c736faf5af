//! The optional background cleanup: `clearsessions` on a timer, stopped by
//! dropping its [`CleanupGuard`].

use std::fmt;
use std::sync::Weak;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::MissedTickBehavior;

use crate::store::{Inner, SqlStore};

/// Keeps a background cleanup task running; dropping it stops the task
/// (at its next wake-up, or at once if it is waiting).
///
/// Returned by [`SqlStore::spawn_cleanup`]. A cleanup started by
/// [`SqlOptions::with_cleanup_every`](crate::SqlOptions::with_cleanup_every) has its
/// guard inside the store instead, and stops when the last clone of the
/// store is dropped.
#[must_use = "the cleanup task stops when its guard is dropped"]
pub struct CleanupGuard {
    // Dropping the sender wakes the task's receiver with an error, which is
    // the stop signal; nothing is ever sent.
    _stop: oneshot::Sender<()>,
    every: Duration,
    // An explicit guard keeps the store alive so that the task has one to
    // clean; the automatic one must not (the store owns it: a cycle).
    _store: Option<SqlStore>,
}

impl fmt::Debug for CleanupGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CleanupGuard")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

/// Starts the task. It holds the store only weakly between runs, so it never
/// keeps a dropped store (and its pool) alive by itself.
pub(crate) fn spawn(store: Weak<Inner>, every: Duration, keep: Option<SqlStore>) -> CleanupGuard {
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let every = every.max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        // After a long failed run, wait a full interval rather than catch up.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                _ = ticks.tick() => {}
            }
            let Some(inner) = store.upgrade() else { break };
            let store = SqlStore { inner };
            tokio::select! {
                _ = &mut stop_rx => break,
                result = store.clear_expired() => match result {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(engine = "db", deleted = n, "expired sessions cleared"),
                    // A database that is down now may be back at the next
                    // tick: log and keep going.
                    Err(error) => tracing::warn!(
                        engine = "db",
                        %error,
                        "session cleanup failed; trying again in {every:?}"
                    ),
                },
            }
        }
    });
    CleanupGuard {
        _stop: stop_tx,
        every,
        _store: keep,
    }
}
