//! [`SessionLayer`], the tower layer applications add to their router.

use std::sync::Arc;
use std::time::Duration;

use cookie::SameSite;
use tower::Layer;

use crate::config::SessionConfig;
use crate::service::SessionService;
use crate::{Engine, Expiry, Record, env};

/// Loads the session before the handler runs and writes it back afterwards.
///
/// ```
/// use axum::{Router, routing::get};
/// use cloakroom::{Engine, SessionLayer, memory::MemoryStore};
///
/// let layer = SessionLayer::new(Engine::store(MemoryStore::new(10_000)))
///     .with_cookie_name("dashboard_session")
///     .with_secure(true);
/// let app: Router = Router::new().route("/", get(|| async { "hi" })).layer(layer);
/// ```
///
/// Or, with the engine and every setting taken from the environment:
///
/// ```no_run
/// # use axum::{Router, routing::get};
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hi" }))
///     .layer(cloakroom::SessionLayer::from_env());
/// ```
#[derive(Debug, Clone)]
pub struct SessionLayer {
    engine: Engine,
    config: Arc<SessionConfig>,
    check: Option<Check>,
}

/// The application's own test of a loaded session (see
/// [`SessionLayer::with_session_check`]).
#[derive(Clone)]
pub(crate) struct Check(Arc<dyn Fn(&Record) -> bool + Send + Sync>);

impl Check {
    /// Whether the application accepts `record`.
    pub(crate) fn accepts(&self, record: &Record) -> bool {
        (self.0)(record)
    }
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Check")
    }
}

impl SessionLayer {
    /// A layer on `engine` with Django's default settings.
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            config: Arc::new(SessionConfig::default()),
            check: None,
        }
    }

    /// A layer on `engine` with the given settings.
    pub fn with_config(engine: Engine, config: SessionConfig) -> Self {
        Self {
            engine,
            config: Arc::new(config),
            check: None,
        }
    }

    /// Adds the application's own test of every session the layer loads,
    /// on every engine: a session it refuses is treated as absent (the
    /// request starts a fresh one, under a new id). It runs on each request
    /// that uses its session, so it must be quick and must not block.
    ///
    /// This is how "log out everywhere" works on the cookie engines, which
    /// keep no server state: keep a generation number per user (in the
    /// application's database, cached in memory), store it in the session
    /// at login, raise it to log every session of that user out, and
    /// refuse sessions whose number is behind.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use std::sync::{Arc, RwLock};
    /// use cloakroom::{Engine, Record, SessionLayer, memory::MemoryStore};
    ///
    /// // user id -> current generation, kept by the application.
    /// let generations: Arc<RwLock<HashMap<String, u64>>> = Arc::default();
    /// let current = Arc::clone(&generations);
    /// let layer = SessionLayer::new(Engine::store(MemoryStore::new(10)))
    ///     .with_session_check(move |record: &Record| {
    ///         let field = |key| record.data.get(key).ok().flatten().cloned();
    ///         match (field("user"), field("generation")) {
    ///             (Some(user), Some(generation)) => {
    ///                 let user = user.as_str().unwrap_or_default().to_owned();
    ///                 let now = current.read().map(|g| g.get(&user).copied().unwrap_or(0));
    ///                 now.is_ok_and(|now| generation.as_u64() == Some(now))
    ///             }
    ///             // Not logged in: nothing to revoke.
    ///             _ => true,
    ///         }
    ///     });
    /// # let _ = layer;
    /// ```
    pub fn with_session_check(
        mut self,
        check: impl Fn(&Record) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.check = Some(Check(Arc::new(check)));
        self
    }

    /// Reads `SESSION_ENGINE` and every other `SESSION_*` setting from the
    /// environment (see the crate docs for the table).
    ///
    /// # Panics
    /// On a bad setting, with a message that names the variable, the value
    /// and what is accepted. Use [`try_from_env`](Self::try_from_env) to get
    /// the error instead.
    pub fn from_env() -> Self {
        match Self::try_from_env() {
            Ok(layer) => layer,
            Err(err) => panic!("cloakroom: {err}"),
        }
    }

    /// Like [`from_env`](Self::from_env), returning a bad setting as an error.
    ///
    /// # Errors
    /// When a setting has a value that is not accepted.
    pub fn try_from_env() -> Result<Self, crate::ConfigError> {
        Self::from_settings(&cloakroom_core::Env)
    }

    /// Like [`try_from_env`](Self::try_from_env), reading from any
    /// [`Settings`](crate::Settings) source (a map, in tests).
    ///
    /// # Errors
    /// When a setting has a value that is not accepted.
    pub fn from_settings(settings: &dyn crate::Settings) -> Result<Self, crate::ConfigError> {
        let config = env::config(settings)?;
        let engine = env::engine(settings)?;
        Ok(Self::with_config(engine, config))
    }

    /// The engine in use.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The settings in use.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    fn edit(mut self, f: impl FnOnce(&mut SessionConfig)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// Sets the cookie name (`SESSION_COOKIE_NAME`).
    ///
    /// ```
    /// # use cloakroom::{Engine, SessionLayer, memory::MemoryStore};
    /// let layer = SessionLayer::new(Engine::store(MemoryStore::new(10))).with_cookie_name("sid");
    /// assert_eq!(layer.config().cookie_name, "sid");
    /// ```
    pub fn with_cookie_name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.edit(|c| c.cookie_name = name)
    }

    /// Sets the session lifetime (`SESSION_COOKIE_AGE`): the cookie's
    /// `Max-Age` and the server-side deadline of every session with no
    /// expiry of its own, unless [`with_expiry`](Self::with_expiry) sets
    /// another default. It is renewed only when the session is saved (see
    /// [`with_save_every_request`](Self::with_save_every_request)). An age past
    /// [`MAX_AGE`](crate::core::record::MAX_AGE) (100 years) is taken as
    /// that.
    ///
    /// ```
    /// # use cloakroom::{Engine, SessionLayer, memory::MemoryStore};
    /// # use std::time::Duration;
    /// let layer = SessionLayer::new(Engine::store(MemoryStore::new(10)))
    ///     .with_cookie_age(Duration::from_secs(3600));
    /// assert_eq!(layer.config().cookie_age.as_secs(), 3600);
    /// ```
    pub fn with_cookie_age(self, age: Duration) -> Self {
        self.edit(|c| c.cookie_age = age.min(cloakroom_core::record::MAX_AGE))
    }

    /// Sets the expiry of every session that has none of its own (one set
    /// with [`Session::set_expiry`](crate::Session::set_expiry) wins), as
    /// tower-sessions' `with_expiry` does. By default there is none, and
    /// Django's settings apply: [`with_cookie_age`](Self::with_cookie_age)
    /// (`SESSION_COOKIE_AGE`) as both the cookie's `Max-Age` and the
    /// server-side deadline, and
    /// [`with_expire_at_browser_close`](Self::with_expire_at_browser_close).
    ///
    /// * [`Expiry::OnInactivity`]: an idle timeout. The deadline and the
    ///   cookie's `Max-Age` are the period, and they slide on every request
    ///   that reads the session, not only on the ones that change it: such
    ///   a read renews the session (a touch, or a reseal on the cookie
    ///   engines, never a rewrite of the data) once that moves its deadline
    ///   by at least [`with_touch_after`](Self::with_touch_after)
    ///   (`SESSION_TOUCH_AFTER_SECONDS`); below that the request stays a
    ///   read and writes nothing. This also holds for sessions whose own
    ///   expiry is an inactivity period (a "remember me" of 30 days, say).
    ///   A request that never reads its session does not renew it; with
    ///   [`with_save_every_request`](Self::with_save_every_request)
    ///   (`SESSION_SAVE_EVERY_REQUEST`) every request with a live session
    ///   cookie does, read or not. `cookie_age` then only bounds
    ///   [`Expiry::OnBrowserClose`] sessions. With
    ///   `with_expire_at_browser_close(true)` the cookie has no `Max-Age`
    ///   while the server still ends the session after the idle period
    ///   (what Horizon does).
    /// * [`Expiry::OnBrowserClose`]: as `with_expire_at_browser_close(true)`.
    /// * [`Expiry::AtDateTime`]: every session ends at that moment.
    ///
    /// Periods are [`time::Duration`](crate::time::Duration) (re-exported as
    /// `cloakroom::time`), or use [`Expiry::on_inactivity`] with a
    /// `std::time::Duration`. A period past
    /// [`MAX_AGE`](crate::core::record::MAX_AGE) is taken as that.
    ///
    /// ```
    /// # use cloakroom::{Engine, Expiry, SessionLayer, memory::MemoryStore};
    /// # use std::time::Duration;
    /// // Logged out after 30 minutes without a request that reads the session.
    /// let layer = SessionLayer::new(Engine::store(MemoryStore::new(10)))
    ///     .with_expiry(Expiry::on_inactivity(Duration::from_secs(30 * 60)));
    /// assert_eq!(
    ///     layer.config().expiry,
    ///     Some(Expiry::OnInactivity(cloakroom::time::Duration::minutes(30)))
    /// );
    /// ```
    ///
    /// # Panics
    /// When an inactivity period is zero or negative.
    pub fn with_expiry(self, expiry: Expiry) -> Self {
        let expiry = match expiry {
            Expiry::OnInactivity(age) => {
                assert!(
                    age.is_positive(),
                    "cloakroom: with_expiry(Expiry::OnInactivity({age})): the period must be above zero"
                );
                let max = time::Duration::try_from(cloakroom_core::record::MAX_AGE)
                    .unwrap_or(time::Duration::MAX);
                Expiry::OnInactivity(age.min(max))
            }
            other => other,
        };
        self.edit(|c| c.expiry = Some(expiry))
    }

    /// Sets the longest a cookie-engine session lives from its issue or last
    /// `cycle_id`, however often it is renewed
    /// (`SESSION_COOKIE_ABSOLUTE_AGE`; by default the cookie age). An age
    /// past [`MAX_AGE`](crate::core::record::MAX_AGE) is taken as that.
    ///
    /// ```
    /// # use cloakroom::{Engine, SessionLayer, memory::MemoryStore};
    /// # use std::time::Duration;
    /// let layer = SessionLayer::new(Engine::store(MemoryStore::new(10)))
    ///     .with_cookie_absolute_age(Duration::from_secs(8 * 3600));
    /// assert_eq!(layer.config().cookie_absolute_age, Some(Duration::from_secs(8 * 3600)));
    /// ```
    pub fn with_cookie_absolute_age(self, age: Duration) -> Self {
        self.edit(|c| c.cookie_absolute_age = Some(age.min(cloakroom_core::record::MAX_AGE)))
    }

    /// Sets the cookie's `Domain` (`SESSION_COOKIE_DOMAIN`).
    ///
    /// ```
    /// # use cloakroom::{Engine, SessionLayer, memory::MemoryStore};
    /// let layer = SessionLayer::new(Engine::store(MemoryStore::new(10)))
    ///     .with_domain("example.com");
    /// assert_eq!(layer.config().cookie_domain.as_deref(), Some("example.com"));
    /// ```
    pub fn with_domain(self, domain: impl Into<String>) -> Self {
        let domain = domain.into();
        self.edit(|c| c.cookie_domain = Some(domain))
    }

    /// Sets the cookie's `Path` (`SESSION_COOKIE_PATH`).
    ///
    /// ```
    /// # use cloakroom::{Engine, SessionLayer, memory::MemoryStore};
    /// let layer = SessionLayer::new(Engine::store(MemoryStore::new(10))).with_path("/app");
    /// assert_eq!(layer.config().cookie_path, "/app");
    /// ```
    pub fn with_path(self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.edit(|c| c.cookie_path = path)
    }

    /// Marks the cookie `Secure` (`SESSION_COOKIE_SECURE`).
    ///
    /// ```
    /// # use cloakroom::{Engine, SessionLayer, memory::MemoryStore};
    /// let layer = SessionLayer::new(Engine::store(MemoryStore::new(10))).with_secure(true);
    /// assert!(layer.config().cookie_secure);
    /// ```
    pub fn with_secure(self, secure: bool) -> Self {
        self.edit(|c| c.cookie_secure = secure)
    }

    /// Sets `HttpOnly` (`SESSION_COOKIE_HTTPONLY`; on by default, and best left so).
    ///
    /// ```
    /// # use cloakroom::{Engine, SessionLayer, memory::MemoryStore};
    /// let layer = SessionLayer::new(Engine::store(MemoryStore::new(10))).with_http_only(true);
    /// assert!(layer.config().cookie_http_only);
    /// ```
    pub fn with_http_only(self, http_only: bool) -> Self {
        self.edit(|c| c.cookie_http_only = http_only)
    }

    /// Sets `SameSite` (`SESSION_COOKIE_SAMESITE`); `None` sends no attribute.
    /// Browsers refuse `SameSite=None` without `Secure`, so set both.
    ///
    /// ```
    /// # use cloakroom::{Engine, SessionLayer, SameSite, memory::MemoryStore};
    /// let layer = SessionLayer::new(Engine::store(MemoryStore::new(10)))
    ///     .with_same_site(Some(SameSite::Strict));
    /// assert_eq!(layer.config().cookie_same_site, Some(SameSite::Strict));
    /// ```
    pub fn with_same_site(self, same_site: Option<SameSite>) -> Self {
        self.edit(|c| c.cookie_same_site = same_site)
    }

    /// Saves (or touches) the session on every non-5xx response to a
    /// request with a live session cookie, whether the handler read the
    /// session or not (`SESSION_SAVE_EVERY_REQUEST`, Django's rule). For an
    /// idle timeout that slides on reads only, use
    /// [`with_expiry`](Self::with_expiry) with [`Expiry::OnInactivity`].
    ///
    /// ```
    /// # use cloakroom::{Engine, SessionLayer, memory::MemoryStore};
    /// let layer = SessionLayer::new(Engine::store(MemoryStore::new(10)))
    ///     .with_save_every_request(true);
    /// assert!(layer.config().save_every_request);
    /// ```
    pub fn with_save_every_request(self, every: bool) -> Self {
        self.edit(|c| c.save_every_request = every)
    }

    /// Skips renewals (an idle timeout set again, `SESSION_SAVE_EVERY_REQUEST`)
    /// that would move an unchanged session's deadline by less than `after`
    /// (`SESSION_TOUCH_AFTER_SECONDS`; by default 1 % of the session's age,
    /// at most a minute). Such a request writes nothing, and the cookie
    /// keeps the deadline the store has. Zero renews every time.
    ///
    /// ```
    /// # use cloakroom::{Engine, SessionLayer, memory::MemoryStore};
    /// # use std::time::Duration;
    /// let layer = SessionLayer::new(Engine::store(MemoryStore::new(10)))
    ///     .with_touch_after(Duration::ZERO);
    /// assert_eq!(layer.config().touch_after, Some(Duration::ZERO));
    /// ```
    pub fn with_touch_after(self, after: Duration) -> Self {
        self.edit(|c| c.touch_after = Some(after.min(cloakroom_core::record::MAX_AGE)))
    }

    /// Makes cookies last until the browser closes, unless a session sets its
    /// own expiry (`SESSION_EXPIRE_AT_BROWSER_CLOSE`).
    ///
    /// ```
    /// # use cloakroom::{Engine, SessionLayer, memory::MemoryStore};
    /// let layer = SessionLayer::new(Engine::store(MemoryStore::new(10)))
    ///     .with_expire_at_browser_close(true);
    /// assert!(layer.config().expire_at_browser_close);
    /// ```
    pub fn with_expire_at_browser_close(self, yes: bool) -> Self {
        self.edit(|c| c.expire_at_browser_close = yes)
    }

    /// Sets the longest wait for one store operation before a 503
    /// (`SESSION_BACKEND_TIMEOUT_MS`).
    ///
    /// ```
    /// # use cloakroom::{Engine, SessionLayer, memory::MemoryStore};
    /// # use std::time::Duration;
    /// let layer = SessionLayer::new(Engine::store(MemoryStore::new(10)))
    ///     .with_backend_timeout(Duration::from_millis(500));
    /// assert_eq!(layer.config().backend_timeout.as_millis(), 500);
    /// ```
    pub fn with_backend_timeout(self, timeout: Duration) -> Self {
        self.edit(|c| c.backend_timeout = timeout)
    }

    /// Sets the body and content type of the layer's own 503, the answer
    /// to a request that needed its session while the store was down or
    /// slower than [`with_backend_timeout`](Self::with_backend_timeout);
    /// also the body of a [`cloakroom::Error`](crate::Error) that a
    /// handler returns (with `?`) for such a failure. The status stays 503,
    /// with `Cache-Control: no-store` and `Vary: Cookie`. By default the
    /// body is the plain-text line "session store unavailable, try again".
    ///
    /// A handler can also answer by itself: see
    /// [`Session::failure_handled`](crate::Session::failure_handled).
    ///
    /// ```
    /// # use cloakroom::{Engine, SessionLayer, memory::MemoryStore};
    /// let layer = SessionLayer::new(Engine::store(MemoryStore::new(10)))
    ///     .with_unavailable_response(
    ///         "text/html; charset=utf-8",
    ///         "<!doctype html><title>Try again</title><p>Sign-in is down for a moment.",
    ///     );
    /// # let _ = layer;
    /// ```
    ///
    /// # Panics
    /// When `content_type` is not a valid header value.
    pub fn with_unavailable_response(
        self,
        content_type: &'static str,
        body: impl Into<bytes::Bytes>,
    ) -> Self {
        let page = (http::HeaderValue::from_static(content_type), body.into());
        self.edit(|c| c.unavailable_response = Some(page))
    }

    /// Sets how many bytes the cookie engines may put in the `Cookie` header
    /// (`SESSION_COOKIE_MAX_BYTES`).
    ///
    /// ```
    /// # use cloakroom::{Engine, SessionLayer, memory::MemoryStore};
    /// let layer = SessionLayer::new(Engine::store(MemoryStore::new(10)))
    ///     .with_cookie_max_bytes(16_000);
    /// assert_eq!(layer.config().cookie_max_bytes, 16_000);
    /// ```
    pub fn with_cookie_max_bytes(self, bytes: usize) -> Self {
        self.edit(|c| c.cookie_max_bytes = bytes)
    }
}

/// A layer on the default [`Engine`] (the in-process memory store) with
/// Django's default settings: what `from_env()` gives with no `SESSION_*`
/// variable set, without reading the environment.
///
/// ```
/// let layer = cloakroom::SessionLayer::default();
/// assert_eq!(layer.engine().name(), "memory");
/// assert_eq!(layer.config(), &cloakroom::SessionConfig::default());
/// ```
impl Default for SessionLayer {
    fn default() -> Self {
        Self::new(Engine::default())
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            engine: self.engine.clone(),
            config: Arc::clone(&self.config),
            check: self.check.clone(),
        }
    }
}
