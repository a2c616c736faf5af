//! The names of the settings the layer reads itself
//! ([`SessionLayer::from_env`](crate::SessionLayer::from_env)): the cookie,
//! when to save, and which engine. Each constant is the variable's name
//! without `SESSION_`; a variable outside `SESSION_*` that is read when one
//! inside is unset is named after that one, with `FALLBACK_` before it. The
//! engines' own settings are named in each engine's `settings` module
//! (`cloakroom::memory::settings`, `cloakroom::redis::settings`, ...); the
//! crate docs list them all with their defaults.

/// Which engine keeps sessions: `cache`, `db`, `cached_db`,
/// `signed_cookies` or `encrypted_cookies`.
pub const ENGINE: &str = "SESSION_ENGINE";
/// For `cache`: `memory://`, or a Redis or Memcached URL.
pub const CACHE_URL: &str = "SESSION_CACHE_URL";
/// For `db` and `cached_db`: the database's URL.
pub const DATABASE_URL: &str = "SESSION_DATABASE_URL";
/// The database's URL when [`DATABASE_URL`] is unset.
pub const FALLBACK_DATABASE_URL: &str = "DATABASE_URL";
/// The cookie's name ([`SessionLayer::with_cookie_name`](crate::SessionLayer::with_cookie_name)).
pub const COOKIE_NAME: &str = "SESSION_COOKIE_NAME";
/// The session's lifetime, in seconds
/// ([`SessionLayer::with_cookie_age`](crate::SessionLayer::with_cookie_age)).
pub const COOKIE_AGE: &str = "SESSION_COOKIE_AGE";
/// Cookie engines: the longest a session lives, in seconds, however often
/// it is renewed
/// ([`SessionLayer::with_cookie_absolute_age`](crate::SessionLayer::with_cookie_absolute_age)).
pub const COOKIE_ABSOLUTE_AGE: &str = "SESSION_COOKIE_ABSOLUTE_AGE";
/// The cookie's `Domain` ([`SessionLayer::with_domain`](crate::SessionLayer::with_domain)).
pub const COOKIE_DOMAIN: &str = "SESSION_COOKIE_DOMAIN";
/// The cookie's `Path` ([`SessionLayer::with_path`](crate::SessionLayer::with_path)).
pub const COOKIE_PATH: &str = "SESSION_COOKIE_PATH";
/// Whether the cookie is `Secure` ([`SessionLayer::with_secure`](crate::SessionLayer::with_secure)).
pub const COOKIE_SECURE: &str = "SESSION_COOKIE_SECURE";
/// Whether the cookie is `HttpOnly`
/// ([`SessionLayer::with_http_only`](crate::SessionLayer::with_http_only)).
pub const COOKIE_HTTPONLY: &str = "SESSION_COOKIE_HTTPONLY";
/// The cookie's `SameSite`
/// ([`SessionLayer::with_same_site`](crate::SessionLayer::with_same_site)).
pub const COOKIE_SAMESITE: &str = "SESSION_COOKIE_SAMESITE";
/// Cookie engines: the bound on the session's cookies, in bytes
/// ([`SessionLayer::with_cookie_max_bytes`](crate::SessionLayer::with_cookie_max_bytes)).
pub const COOKIE_MAX_BYTES: &str = "SESSION_COOKIE_MAX_BYTES";
/// Whether every response renews a live session
/// ([`SessionLayer::with_save_every_request`](crate::SessionLayer::with_save_every_request)).
pub const SAVE_EVERY_REQUEST: &str = "SESSION_SAVE_EVERY_REQUEST";
/// The smallest move of an unchanged session's deadline that is written,
/// in seconds ([`SessionLayer::with_touch_after`](crate::SessionLayer::with_touch_after)).
pub const TOUCH_AFTER_SECONDS: &str = "SESSION_TOUCH_AFTER_SECONDS";
/// Whether the cookie ends with the browser session
/// ([`SessionLayer::with_expire_at_browser_close`](crate::SessionLayer::with_expire_at_browser_close)).
pub const EXPIRE_AT_BROWSER_CLOSE: &str = "SESSION_EXPIRE_AT_BROWSER_CLOSE";
/// The longest wait for one store call, in milliseconds
/// ([`SessionLayer::with_backend_timeout`](crate::SessionLayer::with_backend_timeout)).
pub const BACKEND_TIMEOUT_MS: &str = "SESSION_BACKEND_TIMEOUT_MS";
