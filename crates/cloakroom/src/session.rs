//! The per-request [`Session`] handle: its API, and the state behind it,
//! which no other module touches except through the methods at the end.
//!
//! The handle records what the handler did (read, changed, emptied, logged
//! out, cycled the id, moved the deadline); once the handler is done, the
//! layer asks for the [`Outcome`] and [`plan::decide`](crate::plan::decide)
//! says what to write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cloakroom_core::record::{Data, MAX_AGE};
use cloakroom_core::{ErrorKind, Expiry, Id, Record};
use futures_util::lock::{Mutex, MutexGuard};
use http::HeaderValue;
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::config::SessionConfig;
use crate::jar::{self, RequestCookies};
use crate::layer::Check;
use crate::plan::{End, Outcome};
use crate::{Engine, Error, store};

/// The error of store calls inside the crate.
type StoreError = cloakroom_core::Error;

/// The session of one request: an axum extractor, cheap to clone, loaded from
/// the store on first use and written back by the layer after the handler.
///
/// Every accessor is `async` because the first one loads the session (so a
/// handler that never touches it costs no I/O). They fail only when the
/// backend is unavailable or a value does not (de)serialize; the error turns
/// into a 503 (or 500) response with `?`, and the layer answers 503 for a
/// request whose store call failed in any case, unless the handler dealt
/// with it itself ([`Session::failure_handled`], or a 5xx of its own).
///
/// ```
/// use cloakroom::Session;
///
/// async fn counter(session: Session) -> Result<String, cloakroom::Error> {
///     let views: u64 = session.get("views").await?.unwrap_or(0);
///     session.insert("views", views + 1).await?;
///     Ok(format!("{} views", views + 1))
/// }
/// ```
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the id nor the data: both may be secrets.
        f.debug_struct("Session")
            .field("engine", &self.shared.engine.name())
            .finish_non_exhaustive()
    }
}

struct Shared {
    engine: Engine,
    config: Arc<SessionConfig>,
    /// The application's test of a loaded session, if it gave one.
    check: Option<Check>,
    /// The request's `Cookie` headers, read only when the session is used
    /// (a handler that ignores the session costs no parsing).
    cookie_headers: CookieHeaders,
    parsed: OnceLock<Parsed>,
    /// Set by the first access of any kind, so that the layer can skip
    /// locking the state of a request that never used its session.
    used: AtomicBool,
    /// The handler said it dealt with a failed store call itself
    /// ([`Session::failure_handled`]).
    handled: AtomicBool,
    /// Held across store calls, so an async lock. futures-util's, because
    /// taking and releasing it uncontended is one atomic operation each,
    /// with nothing allocated; tokio's and async-lock's take an inner mutex
    /// on every release (async-lock's also allocates on the first).
    state: Mutex<State>,
}

/// The `Cookie` header values of a request; one is the common case and
/// needs no allocation.
#[derive(Debug, Default)]
pub(crate) struct CookieHeaders {
    first: Option<HeaderValue>,
    rest: Vec<HeaderValue>,
}

impl CookieHeaders {
    /// Takes the values of every `Cookie` header.
    pub(crate) fn from_headers(headers: &http::HeaderMap) -> Self {
        let mut values = headers.get_all(http::header::COOKIE).iter();
        Self {
            first: values.next().cloned(),
            rest: values.cloned().collect(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &HeaderValue> {
        self.first.iter().chain(&self.rest)
    }
}

/// What the request's cookie said, checked for form before any store is asked.
#[derive(Debug)]
enum Incoming {
    /// No session cookie.
    Absent,
    /// A cookie that cannot be a session of this engine.
    Malformed,
    /// A well-formed id (server-side engines).
    Id(Id),
    /// A sealed value, chunks joined (cookie engines).
    Sealed(String),
}

/// What the cookies said, worked out on first use.
struct Parsed {
    incoming: Incoming,
    /// Numbers of the `NAME.N` chunk cookies the request carried.
    chunk_numbers: Vec<usize>,
}

impl Shared {
    fn parsed(&self) -> &Parsed {
        self.parsed.get_or_init(|| {
            let name = &self.config.cookie_name;
            let Engine::Cookie(_) = &self.engine else {
                // Only the id matters: no chunks, nothing copied.
                let value = jar::first_value(self.cookie_headers.iter(), name);
                return Parsed {
                    incoming: value.map_or(Incoming::Absent, |v| {
                        Id::parse(v).map_or(Incoming::Malformed, Incoming::Id)
                    }),
                    chunk_numbers: Vec::new(),
                };
            };
            let found = RequestCookies::read(self.cookie_headers.iter(), name);
            let incoming = match found.main {
                None => Incoming::Absent,
                Some(_) => found.joined().map_or(Incoming::Malformed, Incoming::Sealed),
            };
            Parsed {
                incoming,
                chunk_numbers: found.chunk_numbers,
            }
        })
    }
}

/// What the handler did with the session. Private to this module: others
/// read it through [`Session::outcome`] and the save methods below.
#[derive(Default)]
struct State {
    /// The store (or the cookie) was asked; what it said is below.
    loaded: bool,
    /// The handler used an accessor.
    accessed: bool,
    /// The cookie opened a session that was live when loaded.
    live: bool,
    /// Data or expiry policy changed: the next save writes the record.
    modified: bool,
    /// Only the deadline must move: a touch is enough.
    touch: bool,
    /// `flush` ran (and deleted the records).
    flushed: bool,
    /// The live id of a server-side session; `None` for a new one.
    id: Option<Id>,
    /// The id that `cycle_id` retired, retired once the new one is stored.
    retired: Option<Id>,
    /// `cycle_id` ran (also on a session new in this request): the record
    /// is stored as a cycled one (see [`Record::cycled`]).
    cycled: bool,
    data: Data,
    expiry: Option<Expiry>,
    /// The store's version of the record it loaded, handed back on save.
    version: Option<u64>,
    /// The deadline the loaded record had: a renewal must move it by the
    /// touch threshold to be written.
    loaded_deadline: Option<OffsetDateTime>,
    /// Cookie engines: when the session was issued or last given a new id,
    /// as its cookie said; `None` for a session issued by this request.
    issued_at: Option<OffsetDateTime>,
    /// A store call of this request failed: the response says so.
    failure: Option<ErrorKind>,
}

impl State {
    /// Nothing worth keeping: no values and no expiry of its own (an expiry
    /// set on a fresh session is kept, as Django keeps it among the values).
    fn is_blank(&self) -> bool {
        self.data.is_empty() && self.expiry.is_none()
    }
}

/// The lock on a session's state, held by the layer while it writes the
/// session back.
pub(crate) struct Locked<'a> {
    session: &'a Session,
    state: MutexGuard<'a, State>,
}

impl Session {
    pub(crate) fn new(
        engine: Engine,
        config: Arc<SessionConfig>,
        check: Option<Check>,
        cookie_headers: CookieHeaders,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                engine,
                config,
                check,
                cookie_headers,
                parsed: OnceLock::new(),
                used: AtomicBool::new(false),
                handled: AtomicBool::new(false),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The value under `key`, deserialized as `T`; `None` if absent. Only
    /// this value is decoded, not the rest of the session.
    ///
    /// # Errors
    /// When the backend is unavailable, or the stored value is not a `T`
    /// (or was damaged in the store).
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        let state = self.loaded().await?;
        state
            .data
            .get(key)?
            // Not serde's error: its text quotes the stored value.
            .map(|v| Data::value_as::<T>(key, v).map_err(Error::from))
            .transpose()
    }

    /// Stores `value` under `key`.
    ///
    /// # Errors
    /// When the backend is unavailable or `value` cannot be serialized.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), Error> {
        let value = serde_json::to_value(value).map_err(StoreError::from)?;
        let mut state = self.loaded().await?;
        if state.data.set(key, value) {
            state.modified = true;
        }
        Ok(())
    }

    /// Removes `key` and returns its value deserialized as `T`.
    ///
    /// # Errors
    /// When the backend is unavailable, or the value was not a `T` (it is
    /// removed all the same).
    pub async fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        let mut state = self.loaded().await?;
        let removed = state.data.remove(key);
        if !matches!(removed, Ok(None)) {
            state.modified = true;
        }
        match removed? {
            Some(value) => Ok(Some(Data::value_as::<T>(key, &value)?)),
            None => Ok(None),
        }
    }

    /// True if the session holds no values.
    ///
    /// # Errors
    /// When the backend is unavailable.
    pub async fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.loaded().await?.data.is_empty())
    }

    /// Removes every value and any expiry set on the session, as Django's
    /// `clear()` does. A session left empty at the end of the request is
    /// deleted and its cookie removed.
    ///
    /// # Errors
    /// When the backend is unavailable.
    pub async fn clear(&self) -> Result<(), Error> {
        let mut state = self.loaded().await?;
        if !state.is_blank() {
            state.data.clear();
            state.expiry = None;
            state.modified = true;
        }
        Ok(())
    }

    /// Logs out: removes every value, deletes the stored session at once and
    /// makes the response remove the cookie, whatever its status. The old
    /// cookie then opens nothing on server-side engines (cookie engines
    /// cannot revoke a copy).
    ///
    /// # Errors
    /// When the backend is unavailable; the response is then a 503, never a
    /// success that left the session alive.
    pub async fn flush(&self) -> Result<(), Error> {
        let mut state = self.lock().await;
        state.accessed = true;
        state.loaded = true;
        state.flushed = true;
        state.live = false;
        state.data.clear();
        state.expiry = None;
        state.modified = false;
        state.touch = false;
        state.version = None;
        state.loaded_deadline = None;
        state.cycled = false;
        state.issued_at = None;
        let mut doomed: Vec<Id> = state
            .id
            .take()
            .into_iter()
            .chain(state.retired.take())
            .collect();
        if let Incoming::Id(id) = &self.shared.parsed().incoming
            && !doomed.contains(id)
        {
            doomed.push(id.clone());
        }
        if let Engine::Store(store) = &self.shared.engine {
            for id in doomed {
                let result = store::delete(store.as_ref(), &self.shared.config, &id).await;
                note_failure(&mut state, result)?;
            }
        }
        Ok(())
    }

    /// Gives the session a new id and keeps its data (call it at login, so a
    /// session id planted before login is worthless after). The new record
    /// is stored and the old one retired at the end of the request; if
    /// another request logged the session out meanwhile, nothing is stored
    /// and the response is a 400 that removes the cookie.
    ///
    /// # Errors
    /// When the backend is unavailable.
    pub async fn cycle_id(&self) -> Result<(), Error> {
        let mut state = self.loaded().await?;
        if let Some(old) = state.id.take() {
            state.retired.get_or_insert(old);
        }
        state.cycled = true;
        // A new id is a new issue: the absolute age counts from here.
        state.issued_at = None;
        state.live = false;
        state.modified = true;
        Ok(())
    }

    /// Sets how this session expires; `None` goes back to the layer's
    /// default ([`SessionLayer::with_expiry`](crate::SessionLayer::with_expiry),
    /// else `SESSION_COOKIE_AGE` and `SESSION_EXPIRE_AT_BROWSER_CLOSE`).
    ///
    /// Setting the same inactivity period again (an idle timeout refreshed on
    /// each request) only extends the deadline: the store gets a touch, not a
    /// rewrite of the data.
    ///
    /// # Errors
    /// When the backend is unavailable, or an inactivity period is not
    /// above zero and at most [`MAX_AGE`](cloakroom_core::record::MAX_AGE)
    /// (the session is then left as it was).
    pub async fn set_expiry(&self, expiry: Option<Expiry>) -> Result<(), Error> {
        if let Some(bad) = expiry.filter(|e| !e.is_within_bounds()) {
            return Err(StoreError::new(
                ErrorKind::InvalidInput,
                format!(
                    "set_expiry({bad:?}): an inactivity period must be above zero and at most {} seconds",
                    MAX_AGE.as_secs()
                ),
            )
            .into());
        }
        let mut state = self.loaded().await?;
        if state.expiry == expiry {
            if matches!(expiry, Some(Expiry::OnInactivity(_))) {
                state.touch = true;
            }
        } else {
            state.expiry = expiry;
            state.modified = true;
        }
        Ok(())
    }

    /// The expiry set on this session, if any; not the layer's default
    /// (which [`expiry_age`](Self::expiry_age) and
    /// [`expiry_date`](Self::expiry_date) do take into account).
    ///
    /// # Errors
    /// When the backend is unavailable.
    pub async fn expiry(&self) -> Result<Option<Expiry>, Error> {
        Ok(self.loaded().await?.expiry)
    }

    /// How long from now until the session expires if saved now.
    ///
    /// # Errors
    /// When the backend is unavailable.
    pub async fn expiry_age(&self) -> Result<Duration, Error> {
        let state = self.loaded().await?;
        Ok(expiry_age(
            state.expiry,
            &self.shared.config,
            OffsetDateTime::now_utc(),
        ))
    }

    /// The moment the session expires if saved now.
    ///
    /// # Errors
    /// When the backend is unavailable.
    pub async fn expiry_date(&self) -> Result<OffsetDateTime, Error> {
        let state = self.loaded().await?;
        Ok(deadline(
            state.expiry,
            &self.shared.config,
            OffsetDateTime::now_utc(),
        )?)
    }

    /// True when the cookie has no `Max-Age` and so ends with the browser.
    ///
    /// # Errors
    /// When the backend is unavailable.
    pub async fn expire_at_browser_close(&self) -> Result<bool, Error> {
        let state = self.loaded().await?;
        Ok(browser_close(state.expiry, &self.shared.config))
    }

    /// Tells the layer that the handler dealt with a failed store call
    /// itself: its response goes out as it is (with `Vary: Cookie`), where
    /// the layer would otherwise answer with its own 503. Nothing of the
    /// session is written, and no cookie is set or removed.
    ///
    /// A handler that answers a 5xx of its own needs no call: the layer
    /// never replaces a 5xx that it did not make. One that answers with
    /// `?` (a [`cloakroom::Error`](crate::Error)) gets the layer's response,
    /// whose body [`SessionLayer::with_unavailable_response`](crate::SessionLayer::with_unavailable_response)
    /// sets. A store call that fails after the handler (the save) is
    /// answered by the layer in any case.
    ///
    /// ```
    /// use axum::response::{Html, IntoResponse, Response};
    /// use cloakroom::Session;
    ///
    /// async fn home(session: Session) -> Response {
    ///     match session.get::<String>("user").await {
    ///         Ok(user) => Html(format!("hello {}", user.unwrap_or_default())).into_response(),
    ///         // The store is down: show the public page instead of a 503.
    ///         Err(err) if err.is_unavailable() => {
    ///             session.failure_handled();
    ///             Html("hello, guest (sign-in is unavailable right now)").into_response()
    ///         }
    ///         Err(err) => err.into_response(),
    ///     }
    /// }
    /// ```
    pub fn failure_handled(&self) {
        self.shared.handled.store(true, Ordering::Release);
    }

    async fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.used.store(true, Ordering::Release);
        self.shared.state.lock().await
    }

    /// The state, loaded from the store on first use by the handler.
    async fn loaded(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        let mut state = self.lock().await;
        state.accessed = true;
        if !state.loaded {
            self.load_into(&mut state).await?;
        }
        Ok(state)
    }

    /// Reads the session the cookie names into `state`.
    async fn load_into(&self, state: &mut State) -> Result<(), StoreError> {
        let now = OffsetDateTime::now_utc();
        let shared = &self.shared;
        let found = match (&shared.parsed().incoming, &shared.engine) {
            (Incoming::Id(id), Engine::Store(store)) => {
                let loaded = store::load(store.as_ref(), &shared.config, id).await;
                note_failure(state, loaded)?.map(|record| (Some(id.clone()), record))
            }
            (Incoming::Sealed(value), Engine::Cookie(codec)) => codec
                .open(&shared.config.cookie_name, value, now)
                // However often it was renewed, a session past its absolute
                // age is over: so is a stolen copy that kept being used.
                .filter(|opened| now < absolute_end(opened.issued_at, &shared.config))
                .map(|opened| {
                    // Re-issued under the current key at the end of this request.
                    state.modified |= opened.stale_key;
                    state.issued_at = Some(opened.issued_at);
                    (None, opened.record)
                }),
            _ => None,
        };
        state.loaded = true;
        // Defence in depth: a store that returned a dead record does not
        // revive it, and a policy out of bounds is a damaged record.
        // The application may refuse it too (a "log out everywhere").
        let Some((id, record)) = found.filter(|(_, r)| {
            !r.is_expired_at(now)
                && r.expiry.is_none_or(|e| e.is_within_bounds())
                && shared.check.as_ref().is_none_or(|check| check.accepts(r))
        }) else {
            return Ok(());
        };
        state.id = id;
        state.live = true;
        state.data = record.data;
        state.expiry = record.expiry;
        state.version = record.version;
        state.loaded_deadline = Some(record.expires_at);
        Ok(())
    }

    /// Whether the handler said it dealt with a failed store call itself.
    pub(crate) fn failure_was_handled(&self) -> bool {
        self.shared.handled.load(Ordering::Acquire)
    }

    /// The layer's settings.
    pub(crate) fn config(&self) -> &SessionConfig {
        &self.shared.config
    }

    /// Whether anything touched the session (before that, nothing can need
    /// saving or a `Vary` header).
    pub(crate) fn used(&self) -> bool {
        self.shared.used.load(Ordering::Acquire)
    }

    /// Whether every request with a session cookie refreshes it.
    pub(crate) fn saves_every_request(&self) -> bool {
        self.shared.config.save_every_request
    }

    /// The state, locked for the layer's write-back, if free now (the
    /// handler is done with the session unless it handed it to a task that
    /// still runs).
    pub(crate) fn try_lock(&self) -> Option<Locked<'_>> {
        Some(Locked {
            session: self,
            state: self.shared.state.try_lock()?,
        })
    }

    /// The state, locked for the layer's write-back.
    pub(crate) async fn lock_for_save(&self) -> Locked<'_> {
        Locked {
            session: self,
            state: self.shared.state.lock().await,
        }
    }
}

/// Notes a failed store call in `state`, so the response reports it even if
/// the handler ignored the error, and passes the result on.
fn note_failure<T>(state: &mut State, result: Result<T, StoreError>) -> Result<T, StoreError> {
    if let Err(err) = &result {
        state.failure = Some(err.kind());
    }
    result
}

/// What the layer's write-back may read and change of a locked session.
impl<'a> Locked<'a> {
    pub(crate) fn engine(&self) -> &'a Engine {
        &self.session.shared.engine
    }

    pub(crate) fn config(&self) -> &'a SessionConfig {
        &self.session.shared.config
    }

    /// Whether the handler said it dealt with a failed store call itself.
    pub(crate) fn failure_was_handled(&self) -> bool {
        self.session.failure_was_handled()
    }

    /// Where the session stands, or the kind of the store failure that the
    /// request hit (its response is then that error).
    pub(crate) fn outcome(&self) -> Result<Outcome, ErrorKind> {
        let state = &self.state;
        if let Some(kind) = state.failure {
            return Err(kind);
        }
        let end = if !state.loaded {
            End::Untouched
        } else if state.is_blank() && state.flushed {
            End::Flushed
        } else if state.is_blank() {
            End::Emptied {
                stored: state.id.is_some() || state.retired.is_some(),
            }
        } else if state.retired.is_some() {
            End::Cycled
        } else if state.modified || !state.live {
            End::Modified { live: state.live }
        } else if state.touch || slides(state.expiry, self.config()) {
            End::ExpiryMoved
        } else {
            End::Read
        };
        let renewal_due = match end {
            End::ExpiryMoved => self.renewal_due(),
            End::Read if self.config().save_every_request => self.renewal_due(),
            _ => true,
        };
        Ok(Outcome {
            end,
            had_cookie: !matches!(self.session.shared.parsed().incoming, Incoming::Absent),
            accessed: state.accessed,
            renewal_due,
        })
    }

    /// Whether renewing the session now would move its deadline by at least
    /// the touch threshold (or earlier at all).
    fn renewal_due(&self) -> bool {
        let (state, config) = (&self.state, self.config());
        let Some(stored) = state.loaded_deadline else {
            return true;
        };
        let now = OffsetDateTime::now_utc();
        // A deadline out of reach fails the save, which says why.
        let Ok(next) = deadline(state.expiry, config, now) else {
            return true;
        };
        let threshold = config.touch_threshold(expiry_age(state.expiry, config, now));
        let moved = next - stored;
        moved.is_negative() || moved >= threshold
    }

    /// Reads the session for the write-back (the handler never did).
    pub(crate) async fn load(&mut self) -> Result<(), StoreError> {
        self.session.load_into(&mut self.state).await
    }

    /// The record to store (or to touch: the data as loaded, with the new
    /// deadline and the version loaded) for a save at `now`. It takes the data out of
    /// the state (a save is the end of the request, and copying a 40 KB
    /// service catalog on every save would be waste); [`Locked::restore`]
    /// puts it back.
    ///
    /// # Errors
    /// When the deadline is past what the calendar holds (a builder age
    /// beyond [`MAX_AGE`]).
    pub(crate) fn take_record(&mut self, now: OffsetDateTime) -> Result<Record, StoreError> {
        let state = &mut *self.state;
        let expires_at = deadline(state.expiry, &self.session.shared.config, now)?;
        Ok(Record {
            data: std::mem::take(&mut state.data),
            expiry: state.expiry,
            expires_at,
            version: state.version,
            cycled: state.cycled,
        })
    }

    /// Puts back the data that [`Locked::take_record`] took out.
    pub(crate) fn restore(&mut self, record: Record) {
        self.state.data = record.data;
    }

    /// The cookie's lifetime for a save at `now`.
    pub(crate) fn lifetime(&self, now: OffsetDateTime) -> jar::Lifetime {
        let config = &self.session.shared.config;
        if browser_close(self.state.expiry, config) {
            jar::Lifetime::BrowserSession
        } else {
            jar::Lifetime::For(expiry_age(self.state.expiry, config, now), now)
        }
    }

    /// Cookie engines: when the session was issued or last given a new id;
    /// `now` for one issued by this request.
    pub(crate) fn issued_at(&self, now: OffsetDateTime) -> OffsetDateTime {
        self.state.issued_at.unwrap_or(now)
    }

    /// The live id (to update or touch), if the cookie opened one.
    pub(crate) fn live_id(&self) -> Option<&Id> {
        self.state.id.as_ref()
    }

    /// The id that `cycle_id` retired, taken: it is retired once.
    pub(crate) fn take_retired(&mut self) -> Option<Id> {
        self.state.retired.take()
    }

    /// The session's records to delete when it ends empty.
    pub(crate) fn take_ids(&mut self) -> Vec<Id> {
        let state = &mut *self.state;
        state
            .id
            .take()
            .into_iter()
            .chain(state.retired.take())
            .collect()
    }

    /// The session now lives under `id` (a fresh one, just stored).
    pub(crate) fn set_id(&mut self, id: Id) {
        self.state.id = Some(id);
    }

    /// Numbers of the `NAME.N` chunk cookies the request carried.
    pub(crate) fn chunk_numbers(&self) -> &[usize] {
        &self.session.shared.parsed().chunk_numbers
    }
}

/// The time to live of a session saved at `now` with this expiry policy (or,
/// without one, the layer's default).
fn expiry_age(expiry: Option<Expiry>, config: &SessionConfig, now: OffsetDateTime) -> Duration {
    match expiry.or(config.expiry) {
        Some(Expiry::OnInactivity(age)) => age.try_into().unwrap_or(Duration::ZERO),
        Some(Expiry::AtDateTime(at)) => (at - now).try_into().unwrap_or(Duration::ZERO),
        Some(Expiry::OnBrowserClose) | None => config.cookie_age,
    }
}

/// The deadline of a session saved at `now` with this expiry policy,
/// computed with checked arithmetic: ages are bounded where they are set,
/// and one that is not (a builder's) is an error, not a panic.
fn deadline(
    expiry: Option<Expiry>,
    config: &SessionConfig,
    now: OffsetDateTime,
) -> Result<OffsetDateTime, StoreError> {
    if let Some(Expiry::AtDateTime(at)) = expiry.or(config.expiry) {
        return Ok(at.max(now));
    }
    time::Duration::try_from(expiry_age(expiry, config, now))
        .ok()
        .and_then(|age| now.checked_add(age))
        .ok_or_else(|| {
            StoreError::new(
                ErrorKind::Config,
                format!(
                    "the session's age is past what a deadline can hold (at most {} seconds)",
                    MAX_AGE.as_secs()
                ),
            )
        })
}

/// Cookie engines: the moment a session issued at `issued_at` ends
/// whatever its deadline (`SESSION_COOKIE_ABSOLUTE_AGE`, else the cookie
/// age); the far future if that is past what the calendar holds.
pub(crate) fn absolute_end(issued_at: OffsetDateTime, config: &SessionConfig) -> OffsetDateTime {
    let age = config.cookie_absolute_age.unwrap_or(config.cookie_age);
    time::Duration::try_from(age)
        .ok()
        .and_then(|age| issued_at.checked_add(age))
        .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc())
}

/// Whether an unchanged session read by the request renews its deadline:
/// its expiry (its own, or the layer's default) is an inactivity period, and
/// the layer's default is one, so idle timeouts slide on reads as
/// tower-sessions' do. Without such a default, Django's rule: only a save
/// (or the same period set again) moves the deadline.
fn slides(expiry: Option<Expiry>, config: &SessionConfig) -> bool {
    matches!(config.expiry, Some(Expiry::OnInactivity(_)))
        && matches!(expiry.or(config.expiry), Some(Expiry::OnInactivity(_)))
}

/// Whether the cookie should outlive the browser.
fn browser_close(expiry: Option<Expiry>, config: &SessionConfig) -> bool {
    match expiry {
        Some(Expiry::OnBrowserClose) => true,
        Some(_) => false,
        None => config.expire_at_browser_close || config.expiry == Some(Expiry::OnBrowserClose),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_never_overflow() {
        let now = OffsetDateTime::now_utc();
        let huge = SessionConfig {
            cookie_age: Duration::from_secs(315_360_000_000),
            ..SessionConfig::default()
        };
        let err = deadline(None, &huge, now).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(deadline(Some(Expiry::OnBrowserClose), &huge, now).is_err());
        let max = SessionConfig {
            cookie_age: MAX_AGE,
            ..SessionConfig::default()
        };
        assert!(deadline(None, &max, now).unwrap() > now);
        let corrupt = Expiry::OnInactivity(time::Duration::MAX);
        assert!(!corrupt.is_within_bounds());
        assert!(deadline(Some(corrupt), &max, now).is_err());
        let far = Expiry::AtDateTime(now + time::Duration::days(365 * 500));
        assert!(deadline(Some(far), &huge, now).is_ok());
    }

    #[test]
    fn the_layers_default_expiry_applies_to_sessions_without_their_own() {
        let now = OffsetDateTime::now_utc();
        let idle = Expiry::OnInactivity(time::Duration::minutes(30));
        let own = Expiry::OnInactivity(time::Duration::days(30));
        let config = SessionConfig {
            expiry: Some(idle),
            ..SessionConfig::default()
        };
        assert_eq!(expiry_age(None, &config, now), Duration::from_secs(1800));
        assert_eq!(
            deadline(None, &config, now).unwrap(),
            now + time::Duration::minutes(30)
        );
        assert_eq!(
            expiry_age(Some(own), &config, now),
            Duration::from_secs(30 * 86_400),
            "the session's own expiry wins"
        );
        assert!(!browser_close(None, &config));
        // Idle timeouts slide on reads, the session's own ones too; fixed
        // moments and browser-close sessions do not.
        assert!(slides(None, &config));
        assert!(slides(Some(own), &config));
        assert!(!slides(Some(Expiry::AtDateTime(now)), &config));
        assert!(!slides(Some(Expiry::OnBrowserClose), &config));
        // Without the default: Django's rule, only a save moves it.
        let django = SessionConfig::default();
        assert!(!slides(None, &django));
        assert!(!slides(Some(own), &django));
        assert_eq!(expiry_age(None, &django, now), django.cookie_age);

        // Horizon's setup: a browser-session cookie, an idle deadline.
        let horizon = SessionConfig {
            expire_at_browser_close: true,
            ..config.clone()
        };
        assert!(browser_close(None, &horizon));
        assert_eq!(expiry_age(None, &horizon, now), Duration::from_secs(1800));
        let closing = SessionConfig {
            expiry: Some(Expiry::OnBrowserClose),
            ..SessionConfig::default()
        };
        assert!(browser_close(None, &closing));
        assert_eq!(expiry_age(None, &closing, now), closing.cookie_age);
        let until = now + time::Duration::hours(1);
        let fixed = SessionConfig {
            expiry: Some(Expiry::AtDateTime(until)),
            ..SessionConfig::default()
        };
        assert_eq!(deadline(None, &fixed, now).unwrap(), until);
        assert!(!browser_close(None, &fixed));
    }

    #[test]
    fn a_read_under_a_default_idle_timeout_moves_the_deadline() {
        let read = |config: SessionConfig, expiry: Option<Expiry>| {
            let session = Session::new(
                Engine::store(crate::memory::MemoryStore::new(1)),
                Arc::new(config),
                None,
                CookieHeaders::default(),
            );
            let mut locked = session.try_lock().expect("free");
            let state = &mut locked.state;
            state.loaded = true;
            state.live = true;
            state.data.insert("k".into(), serde_json::json!(1));
            state.expiry = expiry;
            locked.outcome().expect("no failure").end
        };
        let idle = SessionConfig {
            expiry: Some(Expiry::OnInactivity(time::Duration::minutes(5))),
            ..SessionConfig::default()
        };
        assert_eq!(read(idle.clone(), None), End::ExpiryMoved);
        let at = Expiry::AtDateTime(OffsetDateTime::now_utc() + time::Duration::hours(1));
        assert_eq!(read(idle, Some(at)), End::Read);
        assert_eq!(read(SessionConfig::default(), None), End::Read);
    }

    /// A request's session loaded by hand: `State` fields set as a handler
    /// would leave them, and the end state read back.
    fn end(edit: impl FnOnce(&mut State)) -> End {
        let session = Session::new(
            Engine::store(crate::memory::MemoryStore::new(1)),
            Arc::new(SessionConfig::default()),
            None,
            CookieHeaders::default(),
        );
        let mut locked = session.try_lock().expect("free");
        locked.state.loaded = true;
        edit(&mut locked.state);
        locked.outcome().expect("no failure").end
    }

    #[test]
    fn the_end_state_is_read_off_what_the_handler_did() {
        let id = || Id::generate().unwrap();
        let value = |s: &mut State| {
            s.data.insert("k".into(), serde_json::json!(1));
        };
        assert_eq!(end(|_| {}), End::Emptied { stored: false });
        assert_eq!(
            end(|s| s.id = Some(id())),
            End::Emptied { stored: true },
            "a stored record left empty is deleted"
        );
        assert_eq!(
            end(|s| s.retired = Some(id())),
            End::Emptied { stored: true }
        );
        assert_eq!(
            end(|s| {
                value(s);
                s.live = true;
            }),
            End::Read
        );
        assert_eq!(
            end(|s| {
                value(s);
                s.live = true;
                s.touch = true;
            }),
            End::ExpiryMoved
        );
        assert_eq!(
            end(|s| {
                value(s);
                s.live = true;
                s.touch = true;
                s.modified = true;
            }),
            End::Modified { live: true }
        );
        assert_eq!(
            end(|s| {
                value(s);
                s.modified = true;
            }),
            End::Modified { live: false }
        );
        assert_eq!(
            end(|s| {
                value(s);
                s.retired = Some(id());
                s.modified = true;
            }),
            End::Cycled
        );
        assert_eq!(end(|s| s.flushed = true), End::Flushed);
        assert_eq!(
            end(|s| {
                s.flushed = true;
                value(s);
                s.modified = true;
            }),
            End::Modified { live: false },
            "a value set after a logout is a new session"
        );
        assert_eq!(
            end(|s| {
                s.loaded = false;
            }),
            End::Untouched
        );
    }

    /// A handler that hands its session to a task which still holds it
    /// when the response is ready: the layer waits for it, then saves what
    /// the task wrote.
    #[tokio::test]
    async fn a_session_still_in_use_after_the_handler_is_saved_once_released() {
        use http::header::{SET_COOKIE, VARY};
        use http::{Request, Response, StatusCode};
        use tower::{Layer as _, ServiceExt as _};

        let layer = crate::SessionLayer::new(Engine::store(crate::memory::MemoryStore::new(10)));
        let service = layer.layer(tower::service_fn(
            |request: Request<axum::body::Body>| async move {
                let session = request
                    .extensions()
                    .get::<Session>()
                    .cloned()
                    .expect("the layer's session");
                let (held, holding) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let mut state = session.lock().await;
                    state.accessed = true;
                    state.loaded = true;
                    state.data.insert("late".into(), serde_json::json!(1));
                    state.modified = true;
                    let _ = held.send(());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                });
                let _ = holding.await;
                Ok::<_, std::convert::Infallible>(Response::new(axum::body::Body::empty()))
            },
        ));
        let response = service
            .oneshot(Request::new(axum::body::Body::empty()))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers().get(VARY).unwrap(), "Cookie");
        let cookie = response.headers().get(SET_COOKIE).expect("saved");
        assert!(cookie.to_str().unwrap().starts_with("sessionid="));
    }
}
