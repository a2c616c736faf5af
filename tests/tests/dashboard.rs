//! The example dashboard (examples/dashboard) over HTTP, in-process, on every
//! engine, each built the way the dashboard's operator builds it: from
//! `SESSION_*` settings, against the servers `tests/run` starts.
//!
//! * `flow::*`: the whole user journey on each engine: login page, CSRF
//!   refusals, a wrong password, login under a new id, overview, project
//!   switch, logout, and replays of old cookies (refused on server-side
//!   engines; cookie engines cannot revoke a copy, and the test pins that
//!   documented limit down).
//! * `large_catalog::*`: a 40 KB service catalog (the top of Horizon's range)
//!   on the server-side engines.
//! * on Redis: page views after a login write nothing until the touch
//!   threshold has passed.
//! * the rest on the memory engine: HTML escaping, the idle timeout, login
//!   throttling per user name and per client address, and `/health` for a
//!   backend that answers and one that does not.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloakroom::SessionLayer;
use cloakroom_tests::client::{Client, Reply, SetCookie};
use cloakroom_tests::probe::Probe;
use cloakroom_tests::required_env;
use dashboard::{DashboardSettings, DemoUser};
use http::header::{CONTENT_TYPE, COOKIE, LOCATION, RETRY_AFTER};
use http::{Request, StatusCode};

const COOKIE_NAME: &str = "sessionid";
/// The dashboard's cookie for the login form's CSRF token.
const LOGIN_CSRF_COOKIE: &str = "dashboard_login_csrf";
const SECRET: &str = "dashboard test secret key, at least 32 bytes long";
/// Where a request whose session expired is sent.
const EXPIRED: &str = "/auth/login?reason=expired";
/// Where signing out leads.
const SIGNED_OUT: &str = "/auth/login?reason=signed_out";

/// A name no other test in this run uses (key prefix, table).
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The layer `SessionLayer::from_settings` makes of these settings.
fn layer(pairs: &[(&str, String)]) -> SessionLayer {
    let settings: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    SessionLayer::from_settings(&settings).unwrap_or_else(|e| panic!("settings {pairs:?}: {e}"))
}

/// The engines, as `SESSION_*` settings.
mod engines {
    use super::*;

    pub(super) fn memory() -> SessionLayer {
        layer(&[])
    }

    fn cache(url_var: &str, prefix_setting: &'static str) -> SessionLayer {
        layer(&[
            ("SESSION_ENGINE", "cache".into()),
            ("SESSION_CACHE_URL", required_env(url_var)),
            (prefix_setting, format!("{}:", unique("dashboard"))),
        ])
    }

    pub(super) fn redis() -> SessionLayer {
        cache("CLOAKROOM_REDIS_URL", "SESSION_REDIS_KEY_PREFIX")
    }

    pub(super) fn redis_cluster() -> SessionLayer {
        cache("CLOAKROOM_REDIS_CLUSTER_URL", "SESSION_REDIS_KEY_PREFIX")
    }

    pub(super) fn memcached() -> SessionLayer {
        cache(
            "CLOAKROOM_MEMCACHED_PAIR_URL",
            "SESSION_MEMCACHED_KEY_PREFIX",
        )
    }

    /// `db` or `cached_db` on its own table, created on first use.
    fn sql(engine: &str, url: String) -> SessionLayer {
        layer(&[
            ("SESSION_ENGINE", engine.into()),
            ("SESSION_DATABASE_URL", url),
            ("SESSION_DATABASE_TABLE", unique("dash")),
            ("SESSION_DATABASE_MIGRATE", "true".into()),
        ])
    }

    pub(super) fn mariadb() -> SessionLayer {
        sql("db", required_env("CLOAKROOM_MARIADB_URL"))
    }

    pub(super) fn postgres() -> SessionLayer {
        sql("db", required_env("CLOAKROOM_POSTGRES_URL"))
    }

    pub(super) fn sqlite() -> SessionLayer {
        let dir = std::env::var_os("CLOAKROOM_TEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let file = dir.join(format!("{}.db", unique("dashboard")));
        sql("db", format!("sqlite://{}", file.display()))
    }

    pub(super) fn cached_db() -> SessionLayer {
        sql(
            "django.contrib.sessions.backends.cached_db",
            required_env("CLOAKROOM_MARIADB_URL"),
        )
    }

    fn cookies(engine: &str) -> SessionLayer {
        layer(&[
            ("SESSION_ENGINE", engine.into()),
            ("SESSION_SECRET_KEY", SECRET.into()),
        ])
    }

    /// A cookie engine allowed `max_bytes` of cookies (`SESSION_COOKIE_MAX_BYTES`).
    pub(super) fn cookies_up_to(engine: &str, max_bytes: usize) -> SessionLayer {
        layer(&[
            ("SESSION_ENGINE", engine.into()),
            ("SESSION_SECRET_KEY", SECRET.into()),
            ("SESSION_COOKIE_MAX_BYTES", max_bytes.to_string()),
        ])
    }

    pub(super) fn signed_cookies() -> SessionLayer {
        cookies("signed_cookies")
    }

    pub(super) fn encrypted_cookies() -> SessionLayer {
        cookies("encrypted_cookies")
    }
}

/// The dashboard's settings in these tests: two users, three projects.
fn settings(catalog_bytes: usize) -> DashboardSettings {
    DashboardSettings {
        users: vec![
            DemoUser::new("admin", "s3cret-admin"),
            DemoUser::new("demo", "demo"),
        ],
        projects: vec!["admin".into(), "demo".into(), "alt_demo".into()],
        catalog_bytes,
        ..DashboardSettings::default()
    }
}

/// A browser stand-in for the dashboard: the suite's cookie-carrying client,
/// plus form posts.
#[derive(Clone)]
struct Browser {
    client: Client,
}

impl Browser {
    fn new(layer: SessionLayer, settings: DashboardSettings) -> Self {
        Self {
            client: Client::of(dashboard::app(layer, settings)),
        }
    }

    /// A browser on `app` that connects from `ip`, as the server's
    /// `ConnectInfo` would report it.
    fn from_address(app: &Router, ip: &str) -> Self {
        let addr = SocketAddr::new(ip.parse().expect("an IP address"), 40_000);
        Self {
            client: Client::of(app.clone().layer(MockConnectInfo(addr))),
        }
    }

    async fn get(&mut self, path: &str) -> Reply {
        self.client.get(path).await
    }

    /// Posts `fields` as an HTML form does, with the jar's cookies, and
    /// keeps the cookies the response sets.
    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect();
        let mut request =
            Request::post(path).header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        if !self.client.jar.is_empty() {
            let line: Vec<String> = self
                .client
                .jar
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            request = request.header(COOKIE, line.join("; "));
        }
        let reply = self
            .client
            .send(request.body(Body::from(body.join("&"))).expect("a request"))
            .await;
        for c in &reply.set_cookies {
            if c.is_removal() {
                self.client.jar.remove(&c.name);
            } else {
                self.client.jar.insert(c.name.clone(), c.value.clone());
            }
        }
        reply
    }

    /// The session cookie this browser holds.
    fn session_cookie(&self) -> Option<String> {
        self.client.jar.get(COOKIE_NAME).cloned()
    }

    /// `GET /auth/login`, returning the form's CSRF token.
    async fn login_page(&mut self) -> String {
        let reply = self.get("/auth/login").await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert!(reply.body.contains("id=\"login-form\""), "{}", reply.body);
        csrf(&reply)
    }

    /// Logs in as `user`, checks the redirect to the overview, and returns
    /// the overview.
    async fn log_in(&mut self, user: &str, password: &str) -> Reply {
        let token = self.login_page().await;
        let reply = self
            .post(
                "/auth/login",
                &[
                    ("username", user),
                    ("password", password),
                    ("csrf_token", &token),
                ],
            )
            .await;
        assert_redirect(&reply, "/");
        let overview = self.get("/").await;
        assert_eq!(overview.status, StatusCode::OK, "{overview:?}");
        overview
    }
}

/// application/x-www-form-urlencoded for one name or value.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn assert_redirect(reply: &Reply, to: &str) {
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{reply:?}");
    assert_eq!(
        reply.headers.get(LOCATION).and_then(|v| v.to_str().ok()),
        Some(to),
        "{reply:?}"
    );
}

/// The value of the first `csrf_token` field in a page.
fn csrf(reply: &Reply) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = reply
        .body
        .find(marker)
        .unwrap_or_else(|| panic!("no CSRF field in {}", reply.body))
        + marker.len();
    let len = reply.body[start..].find('"').expect("a closing quote");
    reply.body[start..start + len].to_owned()
}

/// The token a page's masked CSRF token stands for, base64url as the
/// dashboard keeps it: the second half of the bytes XOR the first.
fn unmasked(masked: &str) -> String {
    let bytes = URL_SAFE_NO_PAD.decode(masked).expect("base64url");
    let (pad, xored) = bytes.split_at(bytes.len() / 2);
    let raw: Vec<u8> = pad.iter().zip(xored).map(|(p, x)| p ^ x).collect();
    URL_SAFE_NO_PAD.encode(raw)
}

/// The text of the element with this id (no nested tags).
fn text_of(reply: &Reply, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let start = reply
        .body
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in {}", reply.body));
    let rest = &reply.body[start..];
    let open = rest.find('>').expect("end of tag") + 1;
    let close = rest[open..].find('<').expect("a closing tag");
    rest[open..open + close].to_owned()
}

/// The whole journey on one engine.
async fn flow(layer: SessionLayer, label: &str) {
    let engine = layer.engine().name();
    let server_side = layer.engine().is_server_side();
    let mut browser = Browser::new(layer, settings(dashboard::settings::DEFAULT_CATALOG_BYTES));

    // Not logged in: the overview sends to the login page, without a session.
    let reply = browser.get("/").await;
    assert_redirect(&reply, "/auth/login");
    assert!(reply.set_cookies.is_empty(), "{reply:?}");

    // The login page makes no session: its CSRF token travels in a signed
    // cookie of its own, sent back only to the login page.
    let reply = browser.get("/auth/login").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(text_of(&reply, "login-button"), "Sign in");
    assert!(reply.cookie(COOKIE_NAME).is_none(), "{reply:?}");
    let csrf_cookie = reply.cookie(LOGIN_CSRF_COOKIE).expect("a CSRF cookie");
    for (attribute, value) in [
        ("httponly", ""),
        ("samesite", "Lax"),
        ("path", "/auth/login"),
    ] {
        assert_eq!(
            csrf_cookie.attributes.get(attribute).map(String::as_str),
            Some(value),
            "{csrf_cookie:?}"
        );
    }
    assert_eq!(csrf_cookie.max_age(), None, "gone when the browser closes");
    assert_eq!(
        reply
            .headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let login_token = csrf(&reply);
    // Masked: a 32-byte pad and the token XOR the pad.
    assert_eq!(login_token.len(), 86);
    assert!(
        csrf_cookie.value.contains(&unmasked(&login_token)),
        "{csrf_cookie:?}"
    );
    assert_eq!(
        browser.session_cookie(),
        None,
        "a session for the login form"
    );
    // Reloading it keeps the token, masked differently.
    let again = browser.login_page().await;
    assert_ne!(again, login_token);
    assert_eq!(unmasked(&again), unmasked(&login_token));
    // Someone holding the pre-login cookie (a planted id) gains nothing later.
    let mut planted = browser.clone();

    // CSRF: a missing and a wrong token are refused, whatever the password:
    // back to a fresh login form that says why (the form had expired),
    // never logged in.
    let good = [("username", "admin"), ("password", "s3cret-admin")];
    let reply = browser.post("/auth/login", &good).await;
    assert_redirect(&reply, EXPIRED);
    let wrong = "A".repeat(86);
    let reply = browser
        .post("/auth/login", &[good[0], good[1], ("csrf_token", &wrong)])
        .await;
    assert_redirect(&reply, EXPIRED);
    let reply = browser
        .post("/auth/login", &[good[0], good[1], ("csrf_token", "")])
        .await;
    assert_redirect(&reply, EXPIRED);
    assert!(reply.cookie(COOKIE_NAME).is_none(), "{reply:?}");
    assert_redirect(&browser.get("/").await, "/auth/login");
    // The token must come with the cookie this server signed: a copy of the
    // token in a cookie of the attacker's making, or another browser's
    // token, is refused.
    let mut forger = browser.clone();
    forger
        .client
        .jar
        .insert(LOGIN_CSRF_COOKIE.into(), login_token.clone());
    let reply = forger
        .post(
            "/auth/login",
            &[good[0], good[1], ("csrf_token", &login_token)],
        )
        .await;
    assert_redirect(&reply, EXPIRED);
    let mut stranger = browser.clone();
    stranger.client.jar.clear();
    let theirs = stranger.login_page().await;
    assert_ne!(unmasked(&theirs), unmasked(&login_token));
    let reply = browser
        .post("/auth/login", &[good[0], good[1], ("csrf_token", &theirs)])
        .await;
    assert_redirect(&reply, EXPIRED);
    assert_redirect(&browser.get("/").await, "/auth/login");

    // A wrong password: the form again with an error, still no session.
    let reply = browser
        .post(
            "/auth/login",
            &[
                ("username", "admin"),
                ("password", "s3cret-admiN"),
                ("csrf_token", &login_token),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert!(text_of(&reply, "login-error").starts_with("Invalid credentials"));
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    assert_eq!(browser.session_cookie(), None);
    assert_eq!(
        unmasked(&browser.login_page().await),
        unmasked(&login_token)
    );
    let reply = browser
        .post(
            "/auth/login",
            &[
                ("username", "nobody"),
                ("password", "demo"),
                ("csrf_token", &login_token),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert!(reply.body.contains("id=\"login-error\""));

    // Login: a new session id (no fixation), then the overview.
    let reply = browser
        .post(
            "/auth/login",
            &[
                ("username", "admin"),
                ("password", "s3cret-admin"),
                ("csrf_token", &login_token),
            ],
        )
        .await;
    assert_redirect(&reply, "/");
    let cookie = reply
        .cookie(COOKIE_NAME)
        .expect("a session cookie at login");
    assert_eq!(cookie.max_age(), Some(3600), "the idle timeout: {cookie:?}");
    // The session has its own CSRF token now: the login form's cookie goes.
    assert!(
        reply
            .cookie(LOGIN_CSRF_COOKIE)
            .is_some_and(SetCookie::is_removal),
        "{reply:?}"
    );
    let overview = browser.get("/").await;
    assert_eq!(overview.status, StatusCode::OK, "{overview:?}");
    assert_eq!(text_of(&overview, "user"), "admin");
    assert_eq!(text_of(&overview, "project"), "admin");
    assert_eq!(text_of(&overview, "region"), "RegionOne");
    // The engine with its database: `db (PostgreSQL)`, ...
    assert_eq!(text_of(&overview, "engine"), label);
    assert_eq!(text_of(&overview, "user-id").len(), 32);
    assert_eq!(text_of(&overview, "flash-1"), "Signed in as admin.");
    // "in 60 minutes, at 14:05 UTC", with the instant in `datetime`.
    let expires = text_of(&overview, "expires");
    assert!(
        (expires.starts_with("in 60 minutes, at ") || expires.starts_with("in 59 minutes, at "))
            && expires.ends_with(" UTC"),
        "{expires}"
    );
    assert!(
        overview.body.contains("datetime=\"20")
            && (overview.body.contains("Z\" data-until=\"in 60 minutes\"")
                || overview.body.contains("Z\" data-until=\"in 59 minutes\"")),
        "{}",
        overview.body
    );
    let catalog: usize = text_of(&overview, "catalog-bytes").parse().expect("a size");
    assert!(
        (9_800..=10_240).contains(&catalog),
        "catalog of {catalog} bytes"
    );
    // (minijinja escapes `/` too, so only the host and port are looked for.)
    assert!(overview.body.contains("regionone.cloud.example.test:8774"));
    // The message is shown once: the next page has none. Each page
    // restarts the idle timeout, but one right after the login would move
    // the deadline by less than the touch threshold (1 % of the hour):
    // nothing is written, and the cookie keeps the login's deadline.
    let overview = browser.get("/").await;
    assert!(!overview.body.contains("flash-1"), "{}", overview.body);
    assert!(overview.cookie(COOKIE_NAME).is_none(), "{overview:?}");
    // The CSRF token changed at login.
    let token = csrf(&overview);
    assert_ne!(unmasked(&token), unmasked(&login_token));
    // The planted pre-login cookie is not logged in.
    assert_redirect(&planted.get("/").await, "/auth/login");

    // Switching project: refused without the token, or with the old one.
    let reply = browser.post("/project", &[("project", "demo")]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{reply:?}");
    let reply = browser
        .post(
            "/project",
            &[("project", "demo"), ("csrf_token", &login_token)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{reply:?}");
    assert_eq!(text_of(&browser.get("/").await, "project"), "admin");
    let reply = browser
        .post("/project", &[("project", "nope"), ("csrf_token", &token)])
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
    let reply = browser
        .post("/project", &[("project", "demo"), ("csrf_token", &token)])
        .await;
    assert_redirect(&reply, "/");
    let overview = browser.get("/").await;
    assert_eq!(text_of(&overview, "project"), "demo");
    assert_eq!(text_of(&overview, "user"), "admin");
    assert_eq!(text_of(&overview, "flash-1"), "Switched to project demo.");
    assert_eq!(
        unmasked(&csrf(&overview)),
        unmasked(&token),
        "the token lives as long as the login"
    );

    // Logout: refused without the token; then the session ends.
    let mut thief = browser.clone();
    let reply = browser.post("/auth/logout", &[]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{reply:?}");
    assert_eq!(
        browser.get("/").await.status,
        StatusCode::OK,
        "still logged in"
    );
    let reply = browser
        .post("/auth/logout", &[("csrf_token", &token)])
        .await;
    assert_redirect(&reply, SIGNED_OUT);
    assert!(
        reply.cookie(COOKIE_NAME).is_some_and(|c| c.is_removal()),
        "{reply:?}"
    );
    assert_eq!(browser.session_cookie(), None);
    assert_eq!(
        text_of(&browser.get(SIGNED_OUT).await, "login-info"),
        "You have signed out."
    );
    assert_redirect(&browser.get("/").await, "/auth/login");

    // A copy of the logged-in cookie, replayed after the logout.
    let replay = thief.get("/").await;
    let posted = thief
        .post(
            "/project",
            &[("project", "alt_demo"), ("csrf_token", &token)],
        )
        .await;
    if server_side {
        // The copy brings a session cookie: the session is said to have
        // expired, and the form is not taken.
        assert_redirect(&replay, EXPIRED);
        assert_redirect(&posted, EXPIRED);
    } else {
        // The documented limit of cookie sessions: a copy stays valid until
        // its deadline.
        assert_eq!(replay.status, StatusCode::OK, "{replay:?}");
        assert_eq!(text_of(&replay, "user"), "admin");
    }

    // The same browser can log in again, as the other user.
    let overview = browser.log_in("demo", "demo").await;
    assert_eq!(text_of(&overview, "user"), "demo");
    assert_eq!(text_of(&overview, "project"), "admin");

    // And the backend answers.
    let health = browser.get("/health").await;
    assert_eq!(health.status, StatusCode::OK, "{health:?}");
    assert_eq!(
        health.body,
        format!("{{\"status\":\"ok\",\"engine\":\"{engine}\"}}")
    );
}

mod flow {
    use super::*;

    macro_rules! on {
        ($($engine:ident: $label:literal),* $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $engine() {
                flow(engines::$engine(), $label).await;
            }
        )*};
    }

    // The labels the overview shows. The MariaDB server is reached with a
    // `mysql://` URL, which MySQL would answer as well.
    on!(
        memory: "memory",
        redis: "redis",
        redis_cluster: "redis",
        memcached: "memcached",
        mariadb: "db (MySQL or MariaDB)",
        postgres: "db (PostgreSQL)",
        sqlite: "db (SQLite)",
        cached_db: "cached_db (MySQL or MariaDB)",
        signed_cookies: "signed_cookies",
        encrypted_cookies: "encrypted_cookies",
    );
}

/// A 40 KB catalog: logged in, shown, and gone after logout.
async fn large_catalog(layer: SessionLayer) {
    let mut browser = Browser::new(layer, settings(40 * 1024));
    let overview = browser.log_in("admin", "s3cret-admin").await;
    let catalog: usize = text_of(&overview, "catalog-bytes").parse().expect("a size");
    assert!(
        (40_000..=40_960).contains(&catalog),
        "catalog of {catalog} bytes"
    );
    let mut thief = browser.clone();
    let token = csrf(&overview);
    assert_redirect(
        &browser
            .post("/auth/logout", &[("csrf_token", &token)])
            .await,
        SIGNED_OUT,
    );
    assert_redirect(&thief.get("/").await, EXPIRED);
}

mod large_catalog {
    use super::*;

    macro_rules! on {
        ($($engine:ident),* $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $engine() {
                large_catalog(engines::$engine()).await;
            }
        )*};
    }

    on!(
        memory,
        redis,
        redis_cluster,
        memcached,
        mariadb,
        postgres,
        sqlite,
        cached_db,
    );

    /// The cookie engines carry it when `SESSION_COOKIE_MAX_BYTES` allows
    /// (it compresses to about 10 KB, over three numbered cookies). Only the
    /// login and the overview are checked: a copy of a cookie session stays
    /// valid after logout, as `flow` shows.
    #[tokio::test]
    async fn cookie_engines_with_room_for_it() {
        for engine in ["signed_cookies", "encrypted_cookies"] {
            let layer = engines::cookies_up_to(engine, 16_384);
            let mut browser = Browser::new(layer, settings(40 * 1024));
            let overview = browser.log_in("admin", "s3cret-admin").await;
            let catalog: usize = text_of(&overview, "catalog-bytes").parse().expect("a size");
            assert!(
                (40_000..=40_960).contains(&catalog),
                "{engine}: {catalog} bytes"
            );
            let cookies = browser
                .client
                .jar
                .keys()
                .filter(|name| name.starts_with(COOKIE_NAME))
                .count();
            assert!(cookies > 1, "{engine}: one cookie?");
        }
    }

    /// With the default `SESSION_COOKIE_MAX_BYTES` (7168) it does not fit:
    /// the login is answered with the layer's clear error, never a cookie
    /// the browser would drop, and the browser stays logged out.
    #[tokio::test]
    async fn cookie_engines_refuse_it_by_default() {
        for engine in ["signed_cookies", "encrypted_cookies"] {
            let layer = engines::cookies_up_to(engine, 7168);
            let mut browser = Browser::new(layer, settings(40 * 1024));
            let token = browser.login_page().await;
            let reply = browser
                .post(
                    "/auth/login",
                    &[
                        ("username", "admin"),
                        ("password", "s3cret-admin"),
                        ("csrf_token", &token),
                    ],
                )
                .await;
            assert_eq!(
                reply.status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "{engine}: {reply:?}"
            );
            assert!(reply.body.contains("too large"), "{engine}: {}", reply.body);
            assert_redirect(&browser.get("/").await, "/auth/login");
        }
    }
}

/// Everything a user or the settings put in a page is escaped.
#[tokio::test]
async fn pages_escape_what_users_and_settings_supply() {
    let settings = DashboardSettings {
        users: vec![DemoUser::new("<b>eve</b>", "pw")],
        projects: vec!["<i>p</i>&\"q\"".into(), "plain".into()],
        ..DashboardSettings::default()
    };
    let mut browser = Browser::new(engines::memory(), settings);
    let token = browser.login_page().await;
    // A failed login echoes the user name back into the form.
    let reply = browser
        .post(
            "/auth/login",
            &[
                ("username", "<script>x</script>"),
                ("password", "no"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert!(
        reply.body.contains("value=\"&lt;script&gt;x&lt;"),
        "{}",
        reply.body
    );
    assert!(!reply.body.contains("<script>x"));
    let overview = browser.log_in("<b>eve</b>", "pw").await;
    assert_eq!(text_of(&overview, "user"), "&lt;b&gt;eve&lt;&#x2f;b&gt;");
    assert!(!overview.body.contains("<b>eve"));
    assert!(
        overview
            .body
            .contains("&lt;i&gt;p&lt;&#x2f;i&gt;&amp;&quot;q&quot;")
    );
    assert!(!overview.body.contains("<i>p"));
    // The escaped value still posts back as the real project name.
    let token = csrf(&overview);
    let reply = browser
        .post("/project", &[("project", "plain"), ("csrf_token", &token)])
        .await;
    assert_redirect(&reply, "/");
    let reply = browser
        .post(
            "/project",
            &[("project", "<i>p</i>&\"q\""), ("csrf_token", &token)],
        )
        .await;
    assert_redirect(&reply, "/");
}

/// On Redis, page views after the login write nothing (each renews the
/// idle timeout by less than the touch threshold, 1 % of 100 s) until the
/// threshold has passed; then one touch, not a rewrite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_views_stay_reads_until_the_touch_threshold() {
    let (engine, counts) = Probe::wrap(engines::redis().engine().clone());
    let settings = DashboardSettings {
        session_timeout: Duration::from_secs(100),
        ..settings(1024)
    };
    let mut browser = Browser::new(SessionLayer::new(engine), settings);
    browser.log_in("demo", "demo").await;
    let before = counts.snapshot();
    for _ in 0..5 {
        let reply = browser.get("/").await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert!(reply.cookie(COOKIE_NAME).is_none(), "{reply:?}");
    }
    let after = counts.snapshot();
    assert_eq!((after.touch, after.update), (before.touch, before.update));
    assert_eq!(after.load, before.load + 5, "{before:?} -> {after:?}");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = browser.get("/").await;
    assert_eq!(
        reply.cookie(COOKIE_NAME).and_then(|c| c.max_age()),
        Some(100),
        "{reply:?}"
    );
    let last = counts.snapshot();
    assert_eq!((last.touch, last.update), (after.touch + 1, after.update));
}

/// The idle timeout ends a session that is left alone, and every page
/// pushes it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_is_refreshed_by_each_page_and_ends_idle_sessions() {
    let settings = DashboardSettings {
        session_timeout: Duration::from_secs(2),
        ..settings(1024)
    };
    let mut browser = Browser::new(engines::memory(), settings);
    browser.log_in("demo", "demo").await;
    // 3 s of activity, one page a second: past the first deadline. Each
    // moves the deadline by a second, past the touch threshold (1 % of the
    // timeout), so each is written and the cookie says so.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let reply = browser.get("/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.cookie(COOKIE_NAME).and_then(|c| c.max_age()),
            Some(2),
            "{reply:?}"
        );
    }
    // Then 3 s idle: the session is over, and the login page says so.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_redirect(&browser.get("/").await, EXPIRED);
}

/// A login attempt from a fresh login page: the reply to the form.
async fn attempt(browser: &mut Browser, user: &str, password: &str) -> Reply {
    let token = browser.login_page().await;
    browser
        .post(
            "/auth/login",
            &[
                ("username", user),
                ("password", password),
                ("csrf_token", &token),
            ],
        )
        .await
}

/// A 429 with a `Retry-After` of 1 to `window` seconds, that logged no one in.
async fn assert_throttled(browser: &mut Browser, reply: &Reply, window: u64) {
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{reply:?}");
    let retry: u64 = reply
        .headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in seconds: {reply:?}"));
    assert!((1..=window).contains(&retry), "{retry}");
    assert!(
        text_of(reply, "login-error").contains("Too many"),
        "{reply:?}"
    );
    assert_redirect(&browser.get("/").await, "/auth/login");
}

/// Failed logins are throttled per user name and per client address; a
/// successful login clears the name's count.
#[tokio::test]
async fn failed_logins_are_throttled_per_user_and_per_address() {
    let settings = DashboardSettings {
        login_failures_per_user: 5,
        login_failures_per_address: 12,
        ..settings(1024)
    };
    let app = dashboard::app(engines::memory(), settings);
    let here = "192.0.2.1";
    let elsewhere = "198.51.100.7";

    // Four failures, then the right password: in, and the name's count is
    // cleared (the address keeps its four).
    let mut browser = Browser::from_address(&app, here);
    for _ in 0..4 {
        let reply = attempt(&mut browser, "demo", "wrong").await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert!(text_of(&reply, "login-error").contains("Invalid"));
    }
    assert_redirect(&attempt(&mut browser, "demo", "demo").await, "/");

    // So five more failures are allowed before the name is stopped; then
    // even the right password gets 429, from any address.
    let mut browser = Browser::from_address(&app, here);
    for _ in 0..5 {
        let reply = attempt(&mut browser, "demo", "wrong").await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    }
    let reply = attempt(&mut browser, "demo", "demo").await;
    assert_throttled(&mut browser, &reply, 300).await;
    let mut other = Browser::from_address(&app, elsewhere);
    let reply = attempt(&mut other, "demo", "demo").await;
    assert_throttled(&mut other, &reply, 300).await;

    // The address has nine failures: three more with another name, and then
    // that name is stopped from here too, though it has only three.
    for _ in 0..3 {
        let reply = attempt(&mut browser, "admin", "wrong").await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    }
    let reply = attempt(&mut browser, "admin", "s3cret-admin").await;
    assert_throttled(&mut browser, &reply, 300).await;
    // From elsewhere the same name and password work.
    assert_redirect(&attempt(&mut other, "admin", "s3cret-admin").await, "/");
}

/// Throttling ends when the window does (`DASHBOARD_LOGIN_WINDOW`).
#[tokio::test]
async fn login_throttling_ends_with_its_window() {
    let settings = DashboardSettings {
        login_failures_per_user: 1,
        login_window: Duration::from_secs(1),
        ..settings(1024)
    };
    let app = dashboard::app(engines::memory(), settings);
    let mut browser = Browser::from_address(&app, "192.0.2.1");
    assert_eq!(
        attempt(&mut browser, "demo", "wrong").await.status,
        StatusCode::OK
    );
    let reply = attempt(&mut browser, "demo", "demo").await;
    assert_throttled(&mut browser, &reply, 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_redirect(&attempt(&mut browser, "demo", "demo").await, "/");
}

/// `/health` answers 503 quickly when the session backend is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_a_dead_backend() {
    // A loopback port that nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let layer = layer(&[("SESSION_CACHE_URL", format!("redis://127.0.0.1:{port}"))]);
    let mut browser = Browser::new(layer, settings(1024));
    let started = Instant::now();
    let reply = browser.get("/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let body: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["engine"], "redis");
    // The login page needs no session, so it still answers; signing in
    // needs one, and that is a 503, not a 500.
    let reply = attempt(&mut browser, "demo", "demo").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
}

/// The tower-http layers around the dashboard (examples/dashboard/src/layers.rs).
mod layers {
    use axum::routing::get;
    use cloakroom_tests::client::Client;
    use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING};

    use super::*;

    fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
        reply
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} in {reply:?}"))
    }

    /// Pages, redirects, JSON and error pages all carry them.
    #[tokio::test]
    async fn every_answer_has_the_security_headers() {
        let mut browser = Browser::new(engines::memory(), settings(1024));
        let login = browser.get("/auth/login").await;
        let redirect = browser.get("/").await;
        let health = browser.get("/health").await;
        let missing = browser.get("/nope").await;
        let overview = browser.log_in("demo", "demo").await;
        for reply in [&login, &redirect, &health, &missing, &overview] {
            assert_eq!(header(reply, "x-frame-options"), "DENY");
            assert_eq!(header(reply, "x-content-type-options"), "nosniff");
            assert_eq!(header(reply, "referrer-policy"), "same-origin");
            let csp = header(reply, "content-security-policy");
            assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
            assert!(csp.contains("default-src 'none'"), "{csp}");
            // The pages' one inline script, by its hash; nothing else.
            assert!(csp.contains("script-src 'sha256-"), "{csp}");
            assert!(!csp.contains("unsafe-eval"), "{csp}");
        }
        assert_eq!(header(&overview, "cache-control"), "no-store");
    }

    async fn boom() -> &'static str {
        panic!("a handler that panics, on purpose")
    }

    /// A handler that panics is answered with the 500 page, not a dropped
    /// connection, and the app goes on serving.
    #[tokio::test]
    async fn a_panicking_handler_gets_the_500_page() {
        let extra = Router::new().route("/boom", get(boom));
        let mut client = Client::of(dashboard::app_with_routes(
            engines::memory(),
            settings(1024),
            extra,
        ));
        let reply = client.get("/boom").await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{reply:?}");
        assert!(
            header(&reply, "content-type").starts_with("text/html"),
            "{reply:?}"
        );
        assert!(
            text_of(&reply, "error-message").contains("Something went wrong"),
            "{}",
            reply.body
        );
        assert!(!reply.body.contains("on purpose"), "{}", reply.body);
        assert_eq!(header(&reply, "x-frame-options"), "DENY");
        assert_eq!(client.get("/auth/login").await.status, StatusCode::OK);
    }

    async fn slow() -> &'static str {
        tokio::time::sleep(Duration::from_secs(120)).await;
        "too late"
    }

    /// A request slower than `DASHBOARD_REQUEST_TIMEOUT` is answered 503
    /// with a page, at about the timeout; faster ones are not touched.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_handler_times_out_with_a_page() {
        let settings = DashboardSettings {
            request_timeout: Duration::from_millis(500),
            ..settings(1024)
        };
        let extra = Router::new().route("/slow", get(slow));
        let mut client = Client::of(dashboard::app_with_routes(
            engines::memory(),
            settings,
            extra,
        ));
        let started = Instant::now();
        let reply = client.get("/slow").await;
        let took = started.elapsed();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
        // Generous: the host is shared, but 120 s is far off.
        assert!(
            (Duration::from_millis(450)..Duration::from_secs(30)).contains(&took),
            "{took:?}"
        );
        assert!(
            text_of(&reply, "error-message").contains("took too long"),
            "{}",
            reply.body
        );
        assert_eq!(client.get("/auth/login").await.status, StatusCode::OK);
    }

    /// Pages are gzipped for a browser that asks, and only then.
    #[tokio::test]
    async fn pages_are_compressed_when_asked() {
        let client = Client::of(dashboard::app(engines::memory(), settings(1024)));
        let plain = client
            .send(
                Request::get("/auth/login")
                    .body(Body::empty())
                    .expect("a request"),
            )
            .await;
        assert!(plain.headers.get(CONTENT_ENCODING).is_none(), "{plain:?}");
        assert!(plain.body.starts_with("<!doctype html>"));
        let gzipped = client
            .send(
                Request::get("/auth/login")
                    .header(ACCEPT_ENCODING, "gzip")
                    .body(Body::empty())
                    .expect("a request"),
            )
            .await;
        assert_eq!(gzipped.status, StatusCode::OK);
        assert_eq!(header(&gzipped, "content-encoding"), "gzip");
        // gzip's magic number, not the page's text.
        assert!(gzipped.body.starts_with('\u{1f}'), "{gzipped:?}");
        let vary: Vec<String> = gzipped
            .headers
            .get_all("vary")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .collect();
        assert!(
            vary.iter().any(|v| v.contains("accept-encoding")),
            "{vary:?}"
        );
    }
}

/// A page that does not exist, and a route asked with the wrong method, are
/// answered with the dashboard's own error page, not an empty body.
#[tokio::test]
async fn not_found_and_method_not_allowed_have_pages() {
    let mut browser = Browser::new(engines::memory(), settings(1024));
    for path in ["/nope", "/auth/nope?x=1"] {
        let reply = browser.get(path).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
        assert!(
            reply.headers[CONTENT_TYPE]
                .to_str()
                .is_ok_and(|v| v.starts_with("text/html")),
            "{reply:?}"
        );
        assert!(reply.body.contains("Cloakroom Dashboard"), "{}", reply.body);
        assert!(reply.body.contains("404 Not Found"), "{}", reply.body);
        assert_eq!(
            text_of(&reply, "error-message"),
            "There is no page at this address."
        );
    }
    let reply = browser.post("/nope", &[("a", "b")]).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
    assert!(
        reply.body.contains("id=\"error-message\""),
        "{}",
        reply.body
    );

    // Signing out is a form's POST; a GET of it is a 405 page, with `Allow`.
    let reply = browser.get("/auth/logout").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{reply:?}");
    assert_eq!(
        reply.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some("POST"),
        "{reply:?}"
    );
    assert!(
        reply.body.contains("405 Method Not Allowed"),
        "{}",
        reply.body
    );
    assert!(
        text_of(&reply, "error-message").contains("does not take that kind of request"),
        "{}",
        reply.body
    );
    let reply = browser.get("/project").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{reply:?}");
    assert!(
        reply.body.contains("id=\"error-message\""),
        "{}",
        reply.body
    );
    // Neither made a session.
    assert_eq!(browser.session_cookie(), None);
}

/// Logs in from the login page at `path`, posting `next`, and returns the
/// reply to the form.
async fn log_in_from(browser: &mut Browser, path: &str, next: &str) -> Reply {
    let page = browser.get(path).await;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    let token = csrf(&page);
    browser
        .post(
            "/auth/login",
            &[
                ("username", "demo"),
                ("password", "demo"),
                ("csrf_token", &token),
                ("next", next),
            ],
        )
        .await
}

/// An expired session, on a page or a form, leads to the login page with a
/// message, and from there back to the page asked for; a form posted after
/// the session is gone is not answered with a CSRF 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_leads_to_the_login_page_and_back() {
    let settings = DashboardSettings {
        session_timeout: Duration::from_secs(1),
        ..settings(1024)
    };
    let app = dashboard::app(engines::memory(), settings);
    let mut browser = Browser {
        client: Client::of(app.clone()),
    };
    let overview = browser.log_in("demo", "demo").await;
    let token = csrf(&overview);
    // Generous: the deadline is 1 s after the last page.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // A page: to the login page, which says why and where it goes after.
    let reply = browser.get("/?tab=services").await;
    let to = "/auth/login?next=/%3Ftab%3Dservices&reason=expired";
    assert_redirect(&reply, to);
    let login = browser.get(to).await;
    assert_eq!(login.status, StatusCode::OK, "{login:?}");
    assert_eq!(
        text_of(&login, "login-info"),
        "Your session has expired, please sign in again"
    );
    // (minijinja escapes `/` as `&#x2f;`.)
    assert!(
        login
            .body
            .contains("name=\"next\" value=\"&#x2f;?tab=services\""),
        "{}",
        login.body
    );
    let reply = log_in_from(&mut browser, to, "/?tab=services").await;
    assert_redirect(&reply, "/?tab=services");
    assert_eq!(
        reply
            .cookie("dashboard_signed_in")
            .and_then(|c| c.max_age()),
        None,
        "a browser-session marker: {reply:?}"
    );
    assert_eq!(browser.get("/?tab=services").await.status, StatusCode::OK);

    // A browser drops the session cookie at its Max-Age, when the session
    // expires; the "signed in" marker, which lasts as long as the browser,
    // still tells the dashboard that this is an expiry, not a first visit.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    browser.client.jar.remove(COOKIE_NAME);
    assert!(browser.client.jar.contains_key("dashboard_signed_in"));
    let reply = browser.get("/").await;
    assert_redirect(&reply, EXPIRED);
    // Said once: the marker goes with that answer.
    assert!(
        reply
            .cookie("dashboard_signed_in")
            .is_some_and(SetCookie::is_removal),
        "{reply:?}"
    );
    assert_redirect(&browser.get("/").await, "/auth/login");

    // Forms posted with the expired session's cookie and its token: the
    // login page with the message, not "CSRF verification failed".
    let mut stale = Browser {
        client: Client::of(app.clone()),
    };
    stale.log_in("demo", "demo").await;
    let token_before = csrf(&stale.get("/").await);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for (path, fields) in [
        (
            "/project",
            vec![
                ("project", "alt_demo"),
                ("csrf_token", token_before.as_str()),
            ],
        ),
        ("/auth/logout", vec![("csrf_token", token_before.as_str())]),
    ] {
        let reply = stale.post(path, &fields).await;
        assert_redirect(&reply, EXPIRED);
        assert!(!reply.body.contains("CSRF"), "{}", reply.body);
    }
    // And with no session at all (cookies cleared, or another browser).
    let mut fresh = Browser {
        client: Client::of(app.clone()),
    };
    let reply = fresh
        .post("/project", &[("project", "demo"), ("csrf_token", &token)])
        .await;
    assert_redirect(&reply, EXPIRED);
    assert_eq!(fresh.session_cookie(), None);

    // A first visit is sent to the login page without the message.
    let reply = fresh.get("/").await;
    assert_redirect(&reply, "/auth/login");
    let login = fresh.get("/auth/login").await;
    assert!(!login.body.contains("login-info"), "{}", login.body);

    // A login page left open until its CSRF cookie is gone (a restart with
    // a random key, cookies cleared): a fresh form with the message.
    let mut left_open = Browser {
        client: Client::of(app.clone()),
    };
    let token = left_open.login_page().await;
    left_open.client.jar.clear();
    let reply = left_open
        .post(
            "/auth/login",
            &[
                ("username", "demo"),
                ("password", "demo"),
                ("csrf_token", &token),
                ("next", "/?tab=x"),
            ],
        )
        .await;
    assert_redirect(&reply, "/auth/login?next=/%3Ftab%3Dx&reason=expired");
    let reply = log_in_from(
        &mut left_open,
        "/auth/login?next=/%3Ftab%3Dx&reason=expired",
        "/?tab=x",
    )
    .await;
    assert_redirect(&reply, "/?tab=x");
}

/// `next` leads only to a path on this site: other hosts, schemes and
/// tricks that browsers read as another host are ignored, and the login
/// goes to the overview.
#[tokio::test]
async fn next_is_followed_only_to_this_site() {
    let app = dashboard::app(engines::memory(), settings(1024));
    for evil in [
        "//evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "http://evil.example/",
        "https:evil.example",
        "javascript:alert(1)",
        "evil.example",
    ] {
        let mut browser = Browser {
            client: Client::of(app.clone()),
        };
        let page = browser
            .get(&format!("/auth/login?next={}", form_encode(evil)))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{evil:?}: {page:?}");
        assert!(
            !page.body.contains("name=\"next\""),
            "{evil:?}: {}",
            page.body
        );
        let path = format!("/auth/login?next={}", form_encode(evil));
        let reply = log_in_from(&mut browser, &path, evil).await;
        assert_redirect(&reply, "/");
        // Logged in, the login page sends home, not to `next`.
        assert_redirect(&browser.get(&path).await, "/");
    }
}

/// Each user starts in their own default project (`DASHBOARD_USER_PROJECTS`),
/// others in the first one.
#[tokio::test]
async fn users_start_in_their_own_project() {
    let settings = DashboardSettings {
        users: vec![
            DemoUser::new("admin", "s3cret-admin"),
            DemoUser::new("demo", "demo").with_project("alt_demo"),
        ],
        ..settings(1024)
    };
    let app = dashboard::app(engines::memory(), settings);
    let mut browser = Browser {
        client: Client::of(app.clone()),
    };
    let overview = browser.log_in("demo", "demo").await;
    assert_eq!(text_of(&overview, "project"), "alt_demo");
    let mut other = Browser {
        client: Client::of(app),
    };
    let overview = other.log_in("admin", "s3cret-admin").await;
    assert_eq!(text_of(&overview, "project"), "admin");
}

/// With `SESSION_EXPIRE_AT_BROWSER_CLOSE=true`, as Horizon runs: the session
/// cookie is a browser-session cookie (no `Max-Age`, no `Expires`), and the
/// idle timeout is still enforced on the server from the last activity,
/// also against a copy of the cookie.
async fn browser_session_with_idle_timeout(layer: SessionLayer) {
    let engine = layer.engine().name();
    let settings = DashboardSettings {
        session_timeout: Duration::from_secs(3),
        ..settings(1024)
    };
    let mut browser = Browser::new(layer, settings);
    let token = browser.login_page().await;
    let reply = browser
        .post(
            "/auth/login",
            &[
                ("username", "demo"),
                ("password", "demo"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_redirect(&reply, "/");
    let browser_session_cookie = |reply: &Reply| {
        for cookie in reply.set_cookies.iter().filter(|c| c.name == COOKIE_NAME) {
            assert!(
                !cookie.attributes.contains_key("max-age")
                    && !cookie.attributes.contains_key("expires"),
                "{engine}: {cookie:?}"
            );
        }
    };
    assert!(reply.cookie(COOKIE_NAME).is_some(), "{engine}: {reply:?}");
    browser_session_cookie(&reply);
    let overview = browser.get("/").await;
    assert_eq!(overview.status, StatusCode::OK, "{engine}: {overview:?}");
    assert!(
        text_of(&overview, "expiry-note").contains("the cookie ends when the browser closes"),
        "{engine}: {}",
        overview.body
    );
    // 4 s of activity, a page a second: past the first 3 s deadline, with
    // 2 s to spare for a slow host at each step. Each page moves the last
    // activity on (its slack is 30 ms).
    let mut copy = browser.clone();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let reply = browser.get("/").await;
        assert_eq!(reply.status, StatusCode::OK, "{engine}: {reply:?}");
        browser_session_cookie(&reply);
        copy = browser.clone();
    }
    // Then 4.5 s idle: the next page ends the session and says why.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let reply = browser.get("/").await;
    assert_redirect(&reply, EXPIRED);
    assert!(
        reply.cookie(COOKIE_NAME).is_some_and(SetCookie::is_removal),
        "{engine}: {reply:?}"
    );
    // A copy of the last cookie is as idle: refused too, on every engine
    // (the time of the last activity is inside the session).
    assert_redirect(&copy.get("/").await, EXPIRED);
    let reply = copy
        .post("/project", &[("project", "admin"), ("csrf_token", "x")])
        .await;
    assert_redirect(&reply, EXPIRED);
}

mod expire_at_browser_close {
    use super::*;

    fn with_browser_close(mut pairs: Vec<(&'static str, String)>) -> SessionLayer {
        pairs.push(("SESSION_EXPIRE_AT_BROWSER_CLOSE", "true".into()));
        layer(&pairs)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory() {
        browser_session_with_idle_timeout(with_browser_close(vec![])).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis() {
        browser_session_with_idle_timeout(with_browser_close(vec![
            ("SESSION_ENGINE", "cache".into()),
            ("SESSION_CACHE_URL", required_env("CLOAKROOM_REDIS_URL")),
            (
                "SESSION_REDIS_KEY_PREFIX",
                format!("{}:", unique("dashboard")),
            ),
        ]))
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn signed_cookies() {
        browser_session_with_idle_timeout(with_browser_close(vec![
            ("SESSION_ENGINE", "signed_cookies".into()),
            ("SESSION_SECRET_KEY", SECRET.into()),
        ]))
        .await;
    }
}
