//! The layer's settings: the cookie and when sessions are written.

use std::time::Duration;

use cloakroom_core::Expiry;
pub use cookie::SameSite;

/// How the session cookie looks and when sessions are saved. Defaults are
/// Django's; [`SessionLayer`](crate::SessionLayer) has a `with_*` method for
/// each field, and `from_env()` reads the `SESSION_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionConfig {
    /// `SESSION_COOKIE_NAME`, default `sessionid`.
    pub cookie_name: String,
    /// `SESSION_COOKIE_AGE`, default two weeks: the cookie's `Max-Age` and the
    /// server-side deadline of a session with no expiry of its own, when
    /// [`expiry`](Self::expiry) is not set either.
    pub cookie_age: Duration,
    /// The expiry of every session that has none of its own (set with
    /// [`SessionLayer::with_expiry`](crate::SessionLayer::with_expiry); no
    /// setting reads it). `None` (the default) is Django's rule:
    /// `cookie_age`, and `expire_at_browser_close`.
    pub expiry: Option<Expiry>,
    /// `SESSION_COOKIE_DOMAIN`, default unset (a host-only cookie).
    pub cookie_domain: Option<String>,
    /// `SESSION_COOKIE_PATH`, default `/`.
    pub cookie_path: String,
    /// `SESSION_COOKIE_SECURE`, default false.
    pub cookie_secure: bool,
    /// `SESSION_COOKIE_HTTPONLY`, default true.
    pub cookie_http_only: bool,
    /// `SESSION_COOKIE_SAMESITE`, default `Lax`; `None` here means no
    /// attribute (Django's `False`).
    pub cookie_same_site: Option<SameSite>,
    /// `SESSION_COOKIE_ABSOLUTE_AGE`, cookie engines only; `None` (the
    /// default) means `cookie_age`. The longest a cookie-engine session
    /// lives from its issue or its last `cycle_id`, however often it is
    /// renewed: a value sealed longer ago is refused, and no cookie is given
    /// a deadline past it. This is what ends a stolen copy of a cookie that
    /// keeps being renewed.
    pub cookie_absolute_age: Option<Duration>,
    /// `SESSION_SAVE_EVERY_REQUEST`, default false: when true, every request
    /// that reads the session extends its expiry (a touch, not a rewrite,
    /// when the data did not change).
    pub save_every_request: bool,
    /// `SESSION_TOUCH_AFTER_SECONDS`: a renewal that would move a live,
    /// unchanged session's deadline by less than this is skipped (no touch,
    /// no cookie), so that pages renewing an idle timeout stay reads.
    /// `None` (the default): 1 % of the session's age, at most a minute;
    /// zero renews every time.
    pub touch_after: Option<Duration>,
    /// `SESSION_EXPIRE_AT_BROWSER_CLOSE`, default false: when true, cookies
    /// get no `Max-Age`, unless the session sets its own expiry. The
    /// server-side deadline is still `cookie_age`, or the idle timeout of an
    /// [`Expiry::OnInactivity`] in [`expiry`](Self::expiry) (Horizon's
    /// setup: a browser-session cookie, an idle timeout on the server).
    pub expire_at_browser_close: bool,
    /// `SESSION_BACKEND_TIMEOUT_MS`, default 1500: the longest the layer waits
    /// for one store operation before answering 503.
    pub backend_timeout: Duration,
    /// `SESSION_COOKIE_MAX_BYTES`, default 7168: for the cookie engines, the
    /// most bytes the session's cookies may add to a `Cookie` header, split
    /// over numbered cookies of at most 4000 bytes each. Keeps the header
    /// under the 8 KB that common proxies accept, with room for other cookies.
    pub cookie_max_bytes: usize,
    /// The content type and body of the layer's own 503 (a store that is
    /// down or too slow), set with
    /// [`SessionLayer::with_unavailable_response`](crate::SessionLayer::with_unavailable_response).
    /// `None` (the default): `text/plain`, "session store unavailable, try
    /// again".
    pub unavailable_response: Option<(http::HeaderValue, bytes::Bytes)>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cookie_name: "sessionid".to_owned(),
            cookie_age: Duration::from_secs(1_209_600),
            expiry: None,
            cookie_absolute_age: None,
            cookie_domain: None,
            cookie_path: "/".to_owned(),
            cookie_secure: false,
            cookie_http_only: true,
            cookie_same_site: Some(SameSite::Lax),
            save_every_request: false,
            touch_after: None,
            expire_at_browser_close: false,
            backend_timeout: Duration::from_millis(1500),
            cookie_max_bytes: 7168,
            unavailable_response: None,
        }
    }
}

impl SessionConfig {
    /// How far a renewal must move the deadline of a session whose age is
    /// `age` to be written (see [`SessionConfig::touch_after`]).
    pub(crate) fn touch_threshold(&self, age: Duration) -> Duration {
        self.touch_after
            .unwrap_or_else(|| (age / 100).min(DEFAULT_TOUCH_AFTER_MAX))
    }
}

/// The most the default touch threshold skips: a deadline renewed on every
/// page is at most this much earlier than it would be if each were written.
const DEFAULT_TOUCH_AFTER_MAX: Duration = Duration::from_secs(60);
