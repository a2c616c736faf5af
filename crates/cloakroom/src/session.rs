//! The per-request [`Session`] handle.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use cloakroom_core::record::Data;
use cloakroom_core::{ErrorKind, Expiry, Id, Record};

use crate::Error;
/// The error of store calls inside the crate.
type StoreError = cloakroom_core::Error;
use futures_util::lock::{Mutex, MutexGuard};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::Engine;
use crate::config::SessionConfig;
use crate::jar::{self, RequestCookies};
use http::HeaderValue;

/// What the request's cookie said, checked for form before any store is asked.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// No session cookie.
    Absent,
    /// A cookie that cannot be a session of this engine.
    Malformed,
    /// A well-formed id (server-side engines).
    Id(Id),
    /// A sealed value, chunks joined (cookie engines).
    Sealed(String),
}

/// The session of one request: an axum extractor, cheap to clone, loaded from
/// the store on first use and written back by the layer after the handler.
///
/// Every accessor is `async` because the first one loads the session (so a
/// handler that never touches it costs no I/O). They fail only when the
/// backend is unavailable; the error turns into a 503 response with `?`, and
/// the layer answers 503 for that request in any case.
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
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the id nor the data: both may be secrets.
        f.debug_struct("Session")
            .field("engine", &self.shared.engine.name())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) config: Arc<SessionConfig>,
    /// The request's `Cookie` headers, read only when the session is used
    /// (a handler that ignores the session costs no parsing).
    cookie_headers: CookieHeaders,
    parsed: OnceLock<Parsed>,
    /// Set by the first access of any kind, so that the layer can skip
    /// locking the state of a request that never used its session.
    used: AtomicBool,
    /// Held across store calls, so an async lock. futures-util's, because
    /// taking and releasing it uncontended is one atomic operation each,
    /// with nothing allocated; tokio's and async-lock's take an inner mutex
    /// on every release (async-lock's also allocates on the first).
    pub(crate) state: Mutex<State>,
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
            let headers = &self.cookie_headers;
            if let Engine::Store(_) = &self.engine {
                // Only the id matters: no chunks, nothing copied.
                let value = jar::first_value(
                    headers.first.iter().chain(&headers.rest),
                    &self.config.cookie_name,
                );
                return Parsed {
                    incoming: value.map_or(Incoming::Absent, |v| {
                        Id::parse(v).map_or(Incoming::Malformed, Incoming::Id)
                    }),
                    chunk_numbers: Vec::new(),
                };
            }
            let found = RequestCookies::read(
                headers.first.iter().chain(&headers.rest),
                &self.config.cookie_name,
            );
            let incoming = match (&self.engine, found.main.as_deref()) {
                (_, None) => Incoming::Absent,
                (Engine::Store(_), Some(value)) => {
                    Id::parse(value).map_or(Incoming::Malformed, Incoming::Id)
                }
                (Engine::Cookie(_), Some(_)) => {
                    found.joined().map_or(Incoming::Malformed, Incoming::Sealed)
                }
            };
            Parsed {
                incoming,
                chunk_numbers: found.chunk_numbers,
            }
        })
    }

    /// Whether anything touched the session (before that, nothing can need
    /// saving or a `Vary` header).
    pub(crate) fn used(&self) -> bool {
        self.used.load(Ordering::Acquire)
    }

    /// What the request's session cookie holds.
    pub(crate) fn incoming(&self) -> &Incoming {
        &self.parsed().incoming
    }

    /// Numbers of the `NAME.N` chunk cookies the request carried.
    pub(crate) fn chunk_numbers(&self) -> &[usize] {
        &self.parsed().chunk_numbers
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) loaded: bool,
    /// A store error this request hit; the response becomes an error.
    pub(crate) failure: Option<Failure>,
    /// Set on the first access: only then does the layer add `Vary: Cookie`
    /// and consider saving.
    pub(crate) accessed: bool,
    /// The data changed: the next save rewrites the record.
    pub(crate) modified: bool,
    /// Only the deadline must move: a touch is enough.
    pub(crate) touch: bool,
    /// The live id of a server-side session; `None` for a new one.
    pub(crate) id: Option<Id>,
    /// The id that `cycle_id` retired, deleted once the new one is saved.
    pub(crate) retired: Option<Id>,
    pub(crate) data: Data,
    pub(crate) expiry: Option<Expiry>,
    /// The store's version of the record it loaded, handed back on the save.
    pub(crate) version: Option<u64>,
}

/// A failed store operation, kept to shape the response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Failure {
    pub(crate) kind: ErrorKind,
}

impl Session {
    pub(crate) fn new(
        engine: Engine,
        config: Arc<SessionConfig>,
        cookie_headers: CookieHeaders,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                engine,
                config,
                cookie_headers,
                parsed: OnceLock::new(),
                used: AtomicBool::new(false),
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
            .map(|v| T::deserialize(v).map_err(|e| Error::from(StoreError::from(e))))
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
            Some(value) => Ok(Some(T::deserialize(value).map_err(StoreError::from)?)),
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
    /// makes the response remove the cookie. The old cookie then opens
    /// nothing on server-side engines (cookie engines cannot revoke a copy).
    ///
    /// # Errors
    /// When the backend is unavailable; the response is then a 503, never a
    /// success that left the session alive.
    pub async fn flush(&self) -> Result<(), Error> {
        let mut state = self.lock().await;
        state.accessed = true;
        state.loaded = true;
        state.data.clear();
        state.expiry = None;
        state.modified = true;
        state.touch = false;
        state.version = None;
        let mut doomed: Vec<Id> = state
            .id
            .take()
            .into_iter()
            .chain(state.retired.take())
            .collect();
        if let Incoming::Id(id) = self.shared.incoming()
            && !doomed.contains(id)
        {
            doomed.push(id.clone());
        }
        for id in doomed {
            self.delete_record(&mut state, &id).await?;
        }
        Ok(())
    }

    /// Gives the session a new id and keeps its data (call it at login, so a
    /// session id planted before login is worthless after). The old record
    /// is deleted once the new one is stored.
    ///
    /// # Errors
    /// When the backend is unavailable.
    pub async fn cycle_id(&self) -> Result<(), Error> {
        let mut state = self.loaded().await?;
        if let Some(old) = state.id.take() {
            state.retired.get_or_insert(old);
        }
        state.modified = true;
        Ok(())
    }

    /// Sets how this session expires; `None` goes back to the settings
    /// (`SESSION_COOKIE_AGE`, `SESSION_EXPIRE_AT_BROWSER_CLOSE`).
    ///
    /// Setting the same inactivity period again (an idle timeout refreshed on
    /// each request) only extends the deadline: the store gets a touch, not a
    /// rewrite of the data.
    ///
    /// # Errors
    /// When the backend is unavailable.
    pub async fn set_expiry(&self, expiry: Option<Expiry>) -> Result<(), Error> {
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

    /// The expiry set on this session, if any.
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
        let age = self.expiry_age().await?;
        Ok(OffsetDateTime::now_utc() + age)
    }

    /// True when the cookie has no `Max-Age` and so ends with the browser.
    ///
    /// # Errors
    /// When the backend is unavailable.
    pub async fn expire_at_browser_close(&self) -> Result<bool, Error> {
        let state = self.loaded().await?;
        Ok(browser_close(state.expiry, &self.shared.config))
    }

    pub(crate) async fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.used.store(true, Ordering::Release);
        self.shared.state.lock().await
    }

    /// The state, loaded from the store on first use.
    async fn loaded(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        let mut state = self.lock().await;
        state.accessed = true;
        if state.loaded {
            return Ok(state);
        }
        let now = OffsetDateTime::now_utc();
        match (self.shared.incoming(), &self.shared.engine) {
            (Incoming::Id(id), Engine::Store(store)) => {
                let key = id.store_key();
                let _ = store;
                let found = Box::pin(self.run(&mut state, "load", |store| async move {
                    store.load(&key).await
                }))
                .await?;
                // Defence in depth: a store that returned a dead record does
                // not revive it.
                if let Some(record) = found
                    && !record.is_expired_at(now)
                {
                    state.id = Some(id.clone());
                    state.adopt(record);
                }
            }
            (Incoming::Sealed(value), Engine::Cookie(codec)) => {
                if let Some(opened) = codec.open(&self.shared.config.cookie_name, value, now) {
                    // Re-issue under the current key at the end of this request.
                    state.modified |= opened.stale_key;
                    state.adopt(opened.record);
                }
            }
            _ => {}
        }
        state.loaded = true;
        Ok(state)
    }

    /// Deletes the record of `id` (a logout, a retired id, an emptied session).
    pub(crate) async fn delete_record(&self, state: &mut State, id: &Id) -> Result<(), StoreError> {
        let key = id.store_key();
        self.run(
            state,
            "delete",
            |store| async move { store.delete(&key).await },
        )
        .await
    }

    /// Runs one store operation under the layer's timeout; on failure logs it
    /// with the engine and operation, remembers it for the response, and
    /// returns it.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        state: &mut State,
        operation: &'static str,
        op: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(Arc<dyn cloakroom_core::SessionStore>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let Engine::Store(store) = &self.shared.engine else {
            return Err(StoreError::new(
                ErrorKind::Config,
                "not a server-side engine",
            ));
        };
        let mut pending = std::pin::pin!(op(Arc::clone(store)));
        // An operation that needs no I/O (the memory engine, a cached_db
        // hit) is done at its first poll: it needs no timer.
        let first = std::future::poll_fn(|cx| Poll::Ready(pending.as_mut().poll(cx))).await;
        let result = match first {
            Poll::Ready(result) => result,
            Poll::Pending => {
                let timeout = self.shared.config.backend_timeout;
                tokio::time::timeout(timeout, pending)
                    .await
                    .unwrap_or_else(|_| {
                        Err(StoreError::new(
                            ErrorKind::Timeout,
                            format!("no answer within {} ms", timeout.as_millis()),
                        ))
                    })
            }
        };
        self.checked(state, operation, result)
    }

    /// Passes on the result of a store operation; a failure is logged with
    /// the engine and operation, and remembered for the response.
    pub(crate) fn checked<T>(
        &self,
        state: &mut State,
        operation: &'static str,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Err(err) = &result {
            let engine = self.shared.engine.name();
            tracing::error!(engine, operation, error = %err, "session store operation failed");
            state.failure = Some(Failure { kind: err.kind() });
        }
        result
    }
}

/// The time to live of a session saved at `now` with this expiry policy.
pub(crate) fn expiry_age(
    expiry: Option<Expiry>,
    config: &SessionConfig,
    now: OffsetDateTime,
) -> Duration {
    match expiry {
        Some(Expiry::OnInactivity(age)) => age.try_into().unwrap_or(Duration::ZERO),
        Some(Expiry::AtDateTime(at)) => (at - now).try_into().unwrap_or(Duration::ZERO),
        Some(Expiry::OnBrowserClose) | None => config.cookie_age,
    }
}

/// Whether the cookie should outlive the browser.
pub(crate) fn browser_close(expiry: Option<Expiry>, config: &SessionConfig) -> bool {
    match expiry {
        Some(Expiry::OnBrowserClose) => true,
        Some(_) => false,
        None => config.expire_at_browser_close,
    }
}

impl State {
    /// Nothing worth keeping: no values and no expiry of its own (an expiry
    /// set on a fresh session is kept, as Django keeps it among the values).
    pub(crate) fn is_blank(&self) -> bool {
        self.data.is_empty() && self.expiry.is_none()
    }

    /// The record to store for a save at `now`. It takes the data out of
    /// the state (a save is the end of the request, and copying a 40 KB
    /// service catalog on every save would be waste); [`State::restore`]
    /// puts it back.
    pub(crate) fn take_record(&mut self, config: &SessionConfig, now: OffsetDateTime) -> Record {
        Record {
            data: std::mem::take(&mut self.data),
            expiry: self.expiry,
            expires_at: now + expiry_age(self.expiry, config, now),
            version: self.version.take(),
        }
    }

    /// Takes on the session that `record` holds.
    fn adopt(&mut self, record: Record) {
        self.data = record.data;
        self.expiry = record.expiry;
        self.version = record.version;
    }

    /// Puts back the data that [`State::take_record`] took out.
    pub(crate) fn restore(&mut self, record: Record) {
        self.data = record.data;
        self.version = record.version;
    }
}
