//! The only place the layer calls a server-side store: every call runs
//! under the layer's timeout and a failure is logged with the engine and the
//! operation; [`save`] carries out the store half of a [`Plan`].

use cloakroom_core::{Call, Error, ErrorKind, Id, Record, SessionStore};
use time::OffsetDateTime;

use crate::config::SessionConfig;
use crate::plan::Plan;
use crate::session::Locked;

/// How many fresh ids `create` is tried with before giving up; a collision
/// of 256-bit random ids means a broken random source, not bad luck.
const CREATE_ATTEMPTS: usize = 3;

/// Waits for one store call under the layer's timeout; a failure is logged
/// with the engine and the operation. A call answered at once needs no
/// timer, and nothing here is allocated for it.
async fn call<T: Unpin>(
    store: &dyn SessionStore,
    config: &SessionConfig,
    operation: &'static str,
    call: Call<'_, T>,
) -> Result<T, Error> {
    let result = match call {
        Call::Ready(_) => call.await,
        // Boxed with its timer: this future stays small in every accessor's.
        Call::Pending(_) => Box::pin(tokio::time::timeout(config.backend_timeout, call))
            .await
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!("no answer within {} ms", config.backend_timeout.as_millis()),
                ))
            }),
    };
    if let Err(err) = &result {
        let engine = store.engine();
        tracing::error!(engine, operation, error = %err.with_causes(), "session store operation failed");
    }
    result
}

/// Loads the session `id` names.
pub(crate) async fn load(
    store: &dyn SessionStore,
    config: &SessionConfig,
    id: &Id,
) -> Result<Option<Record>, Error> {
    call(store, config, "load", store.load(&id.store_key())).await
}

/// Deletes the session `id` names.
pub(crate) async fn delete(
    store: &dyn SessionStore,
    config: &SessionConfig,
    id: &Id,
) -> Result<(), Error> {
    call(store, config, "delete", store.delete(&id.store_key())).await
}

/// The error of a save that found its session deleted by another request.
fn interrupted() -> Error {
    Error::new(
        ErrorKind::Interrupted,
        "the session was deleted by another request",
    )
}

/// How a write-back waits for the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Not at all. Only an update or a touch (one call) is tried so: if the
    /// store would wait, its call is dropped before its work starts
    /// ([`Stop::WouldWait`]) and the write-back is done again, waiting.
    /// The memory engine answers at once, and its saves then need no boxed
    /// future.
    Never,
    /// Each call under the layer's timeout.
    Bounded,
}

/// Why a write-back did not complete.
#[derive(Debug)]
pub(crate) enum Stop {
    /// A store call failed, or the session was deleted meanwhile.
    Failed(Error),
    /// The store would have to wait (only with [`Wait::Never`]); nothing
    /// was written.
    WouldWait,
}

impl From<Error> for Stop {
    fn from(err: Error) -> Self {
        Self::Failed(err)
    }
}

/// One call of a write-back: under the timeout, or not made at all if it
/// would wait and the write-back may not.
async fn step<T: Unpin>(
    store: &dyn SessionStore,
    config: &SessionConfig,
    operation: &'static str,
    pending: Call<'_, T>,
    wait: Wait,
) -> Result<T, Stop> {
    if wait == Wait::Never && matches!(pending, Call::Pending(_)) {
        return Err(Stop::WouldWait);
    }
    Ok(call(store, config, operation, pending).await?)
}

/// Carries out the store half of `plan` (delete, create, update, touch) at
/// `now`, and returns the id whose cookie the response gets, if any.
///
/// # Errors
/// A store failure, or [`ErrorKind::Interrupted`] when the session was
/// deleted meanwhile (a logout in another request): nothing of it is then
/// stored again. With [`Wait::Never`], [`Stop::WouldWait`] for any plan but
/// an update or a touch, and for those when the store would wait.
pub(crate) async fn save(
    store: &dyn SessionStore,
    config: &SessionConfig,
    session: &mut Locked<'_>,
    plan: Plan,
    now: OffsetDateTime,
    wait: Wait,
) -> Result<Option<Id>, Stop> {
    match plan {
        Plan::Update => {
            let id = session.live_id().cloned().ok_or_else(interrupted)?;
            let record = session.take_record(now)?;
            let key = id.store_key();
            let updated = step(store, config, "update", store.update(&key, &record), wait).await;
            session.restore(record);
            if updated? {
                Ok(Some(id))
            } else {
                Err(interrupted().into())
            }
        }
        Plan::Touch => {
            let id = session.live_id().cloned().ok_or_else(interrupted)?;
            // The session as loaded, with its new deadline: a versioned store
            // may write it over the version loaded, in one step.
            let record = session.take_record(now)?;
            let key = id.store_key();
            let touched = step(store, config, "touch", store.touch(&key, &record), wait).await;
            session.restore(record);
            if touched? {
                Ok(Some(id))
            } else {
                Err(interrupted().into())
            }
        }
        // Several calls: once one is made the rest must be too, so these
        // always wait.
        _ if wait == Wait::Never => Err(Stop::WouldWait),
        Plan::Delete => {
            for id in session.take_ids() {
                delete(store, config, &id).await?;
            }
            Ok(None)
        }
        // Boxed: its several calls would make every save's future larger,
        // and an update, the common save, is answered inline.
        Plan::Create => Box::pin(create_and_retire(store, config, session, now)).await,
        Plan::Nothing | Plan::RemoveCookie | Plan::Seal | Plan::Load => Ok(None),
    }
}

/// A new session stored under a fresh id, and the id that `cycle_id`
/// replaced, if any, retired.
async fn create_and_retire(
    store: &dyn SessionStore,
    config: &SessionConfig,
    session: &mut Locked<'_>,
    now: OffsetDateTime,
) -> Result<Option<Id>, Stop> {
    let mut record = session.take_record(now)?;
    let created = create(store, config, &record).await;
    // The old id is retired only once the new one is stored. Its
    // touch gets this record ending now, with the version loaded
    // under the old id; a deadline that has come ends the session,
    // so no store writes the data. The data goes back to the
    // session either way.
    let retired = match &created {
        Ok(_) => match session.take_retired() {
            Some(old) => {
                record.expires_at = now;
                Some(retire(store, config, &old, &record).await)
            }
            None => None,
        },
        Err(_) => None,
    };
    session.restore(record);
    let id = created?;
    if let Some(live) = retired
        && !live?
    {
        // The session was logged out after this request loaded it:
        // the copy under the new id must not outlive it.
        delete(store, config, &id).await?;
        return Err(interrupted().into());
    }
    session.set_id(id.clone());
    Ok(Some(id))
}

/// Stores a new session under a fresh id and returns the id.
async fn create(
    store: &dyn SessionStore,
    config: &SessionConfig,
    record: &Record,
) -> Result<Id, Error> {
    for _ in 0..CREATE_ATTEMPTS {
        let id = Id::generate()?;
        if call(
            store,
            config,
            "create",
            store.create(&id.store_key(), record),
        )
        .await?
        {
            return Ok(id);
        }
    }
    Err(Error::new(
        ErrorKind::Backend,
        "every fresh session id was already taken; is the random source broken?",
    ))
}

/// Ends the session `old` that `cycle_id` replaced; false when it was gone
/// already (logged out by another request). The check is a touch of
/// `record` (whose deadline is now), which every store does atomically and
/// which ends the session at once; the delete that follows only tidies up.
async fn retire(
    store: &dyn SessionStore,
    config: &SessionConfig,
    old: &Id,
    record: &Record,
) -> Result<bool, Error> {
    let live = call(
        store,
        config,
        "touch",
        store.touch(&old.store_key(), record),
    )
    .await?;
    delete(store, config, old).await?;
    Ok(live)
}
