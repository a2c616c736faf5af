//! A Horizon-like dashboard on [cloakroom](https://docs.rs/cloakroom)
//! sessions: the app an OpenStack operator would run, with its sessions in
//! whichever engine `SESSION_ENGINE` picks.
//!
//! A login stores what Horizon keeps in a session (user id and name, an
//! auth token, the current project and region, and a service catalog of
//! `DASHBOARD_CATALOG_BYTES` of JSON), under a new session id. Every form
//! carries a CSRF token, every page of a logged-in user refreshes an idle
//! timeout, and logging out deletes the session. The login page stores
//! nothing on the server: its CSRF token is in a signed cookie of its own,
//! so anonymous visitors make no sessions.
//!
//! | route | does |
//! |---|---|
//! | `GET /auth/login` | the login form (the overview if already logged in) |
//! | `POST /auth/login` | fields `username`, `password`, `csrf_token`, `next`; 303 to `next` (a local path) or `/` on success, the form again with an error otherwise; 429 with `Retry-After` after too many failures for the user name or the client address |
//! | `GET /` | the overview: user, project, region, engine, session expiry, the region's services; 303 to `/auth/login` (with `next`, and `reason=expired` when a session cookie came) when not logged in |
//! | `POST /project` | fields `project`, `csrf_token`: switches the current project |
//! | `POST /auth/logout` | field `csrf_token`: flushes the session, 303 to `/auth/login` |
//! | `GET /health` | 200 `{"status":"ok",...}` when the session backend answers, 503 when not |
//!
//! A form posted without a logged-in session (it expired while the page was
//! open), or a login form whose CSRF cookie is gone, is sent to the login
//! page with "Your session has expired, please sign in again". A POST to a
//! live session without its CSRF token gets 403.
//!
//! Serve it with `into_make_service_with_connect_info::<SocketAddr>()`, as
//! the binary does, so failed logins are also counted per client address;
//! without that, only the per-user-name limit applies.
//!
//! # What lives where
//!
//! * [`app`] (here): the router.
//! * `layers` (private): the tower-http layers around it: tracing, security
//!   headers, compression, error pages, panics and the request timeout.
//! * [`settings`]: [`DashboardSettings`], the `DASHBOARD_*` variables.
//! * [`logging`]: the log's format (`DASHBOARD_LOG_FORMAT`), colour and
//!   field style.
//! * [`catalog`]: the Keystone-shaped service catalog of a configurable size.
//! * `auth` (private): the session keys, login, CSRF tokens, the idle timeout.
//! * `throttle` (private): failed logins counted per user name and address.
//! * `redirect` (private): to the login page and back (`next`), refusing
//!   any `next` that is not a path on this site.
//! * `flash` (private): messages kept in the session for the next page.
//! * `when` (private): expiry times as people read them.
//! * `pages` (private): the handlers. `templates` (private): the minijinja
//!   templates from `templates/`, compiled in, HTML-escaped.
//!
//! ```
//! use cloakroom::{Engine, SessionLayer, memory::MemoryStore};
//! use dashboard::{DashboardSettings, app};
//!
//! let layer = SessionLayer::new(Engine::store(MemoryStore::new(10_000)));
//! let router: axum::Router = app(layer, DashboardSettings::default());
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use cloakroom::{Engine, SessionLayer};

mod auth;
pub mod catalog;
mod error;
mod flash;
mod layers;
pub mod logging;
mod pages;
mod redirect;
pub mod settings;
mod templates;
mod throttle;
mod when;

pub use settings::{DashboardSettings, DemoUser};

/// What every handler shares.
#[derive(Debug)]
struct AppState {
    settings: DashboardSettings,
    engine: Engine,
    /// The engine as pages show it: `db (PostgreSQL)`, `memory`, ...
    engine_label: String,
    /// The same for every login, so built once.
    catalog: Vec<catalog::Service>,
    /// How long `/health` waits for the backend: the layer's own bound.
    health_timeout: Duration,
    /// Failed logins by user name and by client address.
    throttle: throttle::LoginThrottle,
    /// The login form's CSRF cookie is `Secure` when the session cookie is.
    secure_cookies: bool,
    /// The idle timeout, and how it is applied.
    idle: auth::IdleTimeout,
    /// The session cookie's name: a request that brings one without a
    /// logged-in session had a session that expired.
    cookie_name: String,
}

/// The dashboard's routes behind `layer`, inside the tower-http layers
/// (tracing, security headers, compression, error pages, panics caught,
/// `DASHBOARD_REQUEST_TIMEOUT`).
pub fn app(layer: SessionLayer, settings: DashboardSettings) -> Router {
    app_with_routes(layer, settings, Router::new())
}

/// [`app`] with `extra` routes of an embedding application, served behind
/// the same session layer and tower-http layers as the dashboard's own (the
/// tests add a handler that panics, and one that is too slow). A route of
/// `extra` that the dashboard also has is a panic at startup, as in
/// [`Router::merge`].
pub fn app_with_routes(layer: SessionLayer, settings: DashboardSettings, extra: Router) -> Router {
    let request_timeout = settings.request_timeout;
    let state = Arc::new(AppState {
        engine: layer.engine().clone(),
        engine_label: engine_label(layer.engine()),
        catalog: catalog::build(settings.catalog_bytes),
        health_timeout: layer.config().backend_timeout,
        throttle: throttle::LoginThrottle::new(&settings),
        secure_cookies: layer.config().cookie_secure,
        cookie_name: layer.config().cookie_name.clone(),
        idle: auth::IdleTimeout {
            period: settings.session_timeout,
            browser_session: layer.config().expire_at_browser_close,
        },
        settings,
    });
    let routes = Router::new()
        .route("/", get(pages::overview))
        .route("/auth/login", get(pages::login_form).post(pages::login))
        .route("/auth/logout", post(pages::logout))
        .route("/project", post(pages::switch_project))
        .route("/health", get(pages::health))
        .with_state(state)
        .merge(extra)
        .layer(layer);
    layers::wrap(routes, request_timeout)
}

/// The engine's name, and for the SQL engines the database behind it:
/// `db (PostgreSQL)`, `cached_db (MySQL or MariaDB)`, `db (SQLite)`.
pub fn engine_label(engine: &Engine) -> String {
    match engine.backend() {
        Some(backend) => format!("{} ({backend})", engine.name()),
        None => engine.name().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use cloakroom::core::config::from_pairs;

    use super::*;

    #[tokio::test]
    async fn engines_are_shown_with_their_database() {
        let layer = |pairs: &[(&str, &str)]| {
            SessionLayer::from_settings(&from_pairs(pairs.iter().copied())).expect("settings")
        };
        assert_eq!(engine_label(layer(&[]).engine()), "memory");
        let sqlite = [
            ("SESSION_ENGINE", "db"),
            ("SESSION_DATABASE_URL", "sqlite::memory:"),
        ];
        assert_eq!(engine_label(layer(&sqlite).engine()), "db (SQLite)");
        let cached = [
            ("SESSION_ENGINE", "cached_db"),
            ("SESSION_DATABASE_URL", "sqlite::memory:"),
        ];
        assert_eq!(engine_label(layer(&cached).engine()), "cached_db (SQLite)");
    }
}
