//! The route handlers.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::header::{RETRY_AFTER, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use axum_extra::extract::cookie::SignedCookieJar;
use cloakroom::Session;
use minijinja::value::Serde;
use minijinja::{Value, context};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::AppState;
use crate::auth::{self, keys};
use crate::catalog::{self, Service};
use crate::error::Failure;
use crate::{flash, redirect, templates, when};

type Page = Result<Response, Failure>;

/// `POST /auth/login`. Every field defaults to empty, so a form without a
/// CSRF token gets the 403 of a bad token rather than a 422.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct LoginForm {
    username: String,
    password: String,
    csrf_token: String,
    /// Where to go after the login (see `redirect`).
    next: String,
}

/// `GET /auth/login`'s query: where to go after the login, and why the
/// user was sent here (`reason=expired`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct LoginQuery {
    next: String,
    reason: String,
}

/// `POST /project`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ProjectForm {
    project: String,
    csrf_token: String,
}

/// `POST /auth/logout`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct LogoutForm {
    csrf_token: String,
}

/// The most characters of a user name a log line shows.
const LOGGED_NAME_CHARS: usize = 64;

/// A user name as typed, fit for a log line: at most [`LOGGED_NAME_CHARS`]
/// characters. Logged as a string field, so control characters are escaped
/// (a newline or an escape code in it would otherwise forge log lines or
/// repaint a terminal), see `logging`.
fn loggable(username: &str) -> &str {
    username
        .char_indices()
        .nth(LOGGED_NAME_CHARS)
        .map_or(username, |(end, _)| &username[..end])
}

/// The client's address for a log line; `unknown` without one.
fn client_text(client: Option<IpAddr>) -> String {
    client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
}

/// The client's address, when the server was started with
/// `into_make_service_with_connect_info`; `None` otherwise (a test or an
/// embedding that does not), which is no reason to refuse a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let info = ConnectInfo::<SocketAddr>::from_request_parts(parts, state).await;
        Ok(Self(info.ok().map(|ConnectInfo(addr)| addr.ip())))
    }
}

/// The request's cookies as a jar that checks the login form's signed one.
fn signed_jar(app: &AppState, headers: &HeaderMap) -> SignedCookieJar {
    SignedCookieJar::from_headers(headers, app.settings.csrf_key.0.clone())
}

/// `GET /auth/login`: the form, or the overview for a user already in. It
/// stores nothing in the session: its CSRF token travels in a signed cookie.
pub(crate) async fn login_form(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<LoginQuery>, QueryRejection>,
    session: Session,
) -> Page {
    // A query that does not parse is no reason to refuse the form.
    let Query(query) = query.unwrap_or_default();
    if app.idle.user(&session).await?.is_some() {
        return Ok(Redirect::to(redirect::after_login(&query.next)).into_response());
    }
    let info = redirect::reason_message(&query.reason);
    let (jar, csrf_token) = auth::login_csrf_token(signed_jar(&app, &headers), app.secure_cookies)?;
    let form = LoginPage {
        csrf_token: &csrf_token,
        next: &query.next,
        info,
        ..LoginPage::default()
    };
    Ok((jar, login_page(&app, StatusCode::OK, form)?).into_response())
}

/// `POST /auth/login`.
pub(crate) async fn login(
    State(app): State<Arc<AppState>>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    session: Session,
    Form(form): Form<LoginForm>,
) -> Page {
    let jar = signed_jar(&app, &headers);
    // A login page left open past a restart, or whose cookie is gone, gets
    // a fresh form with a word of why, instead of a 403 that reloading
    // (which re-sends the POST) cannot cure.
    let Ok(csrf_token) = auth::check_login_csrf(&jar, &form.csrf_token) else {
        return Ok(redirect::to_login(&form.next, true, app.secure_cookies));
    };
    let page = LoginPage {
        csrf_token: &csrf_token,
        username: &form.username,
        next: &form.next,
        ..LoginPage::default()
    };
    let attempt = match app.throttle.begin(&form.username, client, Instant::now()) {
        Ok(attempt) => attempt,
        Err(wait) => {
            // The password is not looked at: a right one would tell the
            // guesser it is right.
            let secs = crate::throttle::retry_after_secs(wait);
            tracing::warn!(
                username = loggable(&form.username),
                client = client_text(client).as_str(),
                retry_after = secs,
                "login throttled"
            );
            let error = format!(
                "Too many failed logins for this user or from this address. \
                 Try again in {} minute(s).",
                secs.div_ceil(60)
            );
            let mut page = login_page(
                &app,
                StatusCode::TOO_MANY_REQUESTS,
                LoginPage {
                    error: Some(&error),
                    ..page
                },
            )?;
            page.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
            return Ok(page);
        }
    };
    let Some(user) = app.settings.authenticate(&form.username, &form.password) else {
        tracing::info!(
            username = loggable(&form.username),
            client = client_text(client).as_str(),
            "failed login"
        );
        // The session is left as it was: same id, same token.
        return login_page(
            &app,
            StatusCode::OK,
            LoginPage {
                error: Some("Invalid credentials. Check the user name and password."),
                ..page
            },
        );
    };
    app.throttle.succeeded(attempt);
    let project = user
        .project()
        .or_else(|| app.settings.projects.first().map(String::as_str))
        .unwrap_or("");
    auth::log_in(
        &session,
        user.name(),
        project,
        catalog::REGIONS[0],
        &app.catalog,
    )
    .await?;
    flash::success(&session, format!("Signed in as {}.", user.name())).await?;
    app.idle.start(&session).await?;
    // The layer saves the session after this; if that fails, it logs why
    // and the answer is an error, not this redirect.
    tracing::info!(
        username = loggable(user.name()),
        client = client_text(client).as_str(),
        "credentials accepted"
    );
    let next = redirect::after_login(&form.next);
    let mut response = (auth::forget_login_csrf(jar), Redirect::to(next)).into_response();
    response.headers_mut().append(
        SET_COOKIE,
        redirect::signed_in_cookie(true, app.secure_cookies),
    );
    Ok(response)
}

/// What the login form shows.
#[derive(Debug, Default, Clone, Copy)]
struct LoginPage<'a> {
    /// The cookie's token; shown masked.
    csrf_token: &'a str,
    /// The user name typed, after a failure.
    username: &'a str,
    /// Where to go after the login; kept only if local.
    next: &'a str,
    /// Why the login failed.
    error: Option<&'a str>,
    /// Why the user is here (the session expired).
    info: Option<&'a str>,
}

fn login_page(app: &AppState, status: StatusCode, form: LoginPage<'_>) -> Page {
    templates::page(
        status,
        "login.html",
        context! {
            csrf_token => auth::mask(form.csrf_token)?,
            username => form.username,
            next => redirect::local_path(form.next).unwrap_or(""),
            error => form.error,
            info => form.info,
            engine => &app.engine_label,
        },
    )
}

/// One row of the overview's service table.
#[derive(Debug, Serialize)]
struct ServiceRow<'a> {
    kind: &'a str,
    name: &'a str,
    url: &'a str,
}

/// `GET /`: the overview; the login page for anyone not logged in.
pub(crate) async fn overview(
    State(app): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    session: Session,
) -> Page {
    let Some(user) = app.idle.user(&session).await? else {
        // A browser that brought a session cookie had a session that has
        // expired or ended: it is told so; a first visit is not.
        let next = uri.path_and_query().map_or("/", |p| p.as_str());
        let expired = redirect::carries_cookie(&headers, &app.cookie_name)
            || redirect::carries_cookie(&headers, redirect::SIGNED_IN_COOKIE);
        return Ok(redirect::to_login(next, expired, app.secure_cookies));
    };
    app.idle.refresh(&session).await?;
    let csrf_token = auth::mask(&auth::csrf_token(&session).await?)?;
    let services: Vec<Service> = session.get(keys::CATALOG).await?.unwrap_or_default();
    let rows: Vec<ServiceRow<'_>> = catalog::public_in(&services, &user.region)
        .map(|(s, e)| ServiceRow {
            kind: &s.kind,
            name: &s.name,
            url: &e.url,
        })
        .collect();
    let messages = flash::take(&session).await?;
    // Whole seconds: the page is read by people.
    let expires = app.idle.expires_at(&session).await?;
    let now = OffsetDateTime::now_utc();
    let expires = expires.replace_nanosecond(0).unwrap_or(expires);
    let timeout = app.settings.session_timeout.as_secs();
    templates::page(
        StatusCode::OK,
        "overview.html",
        context! {
            username => user.username,
            user_id => user.user_id,
            project => user.project,
            projects => app.settings.projects.clone(),
            region => &user.region,
            engine => &app.engine_label,
            server_side => app.engine.is_server_side(),
            expires_at => expires.format(&Rfc3339).unwrap_or_default(),
            expires_human => when::human(expires, now),
            expires_until => when::until(expires, now),
            messages => Value::from(Serde(&messages)),
            timeout_minutes => timeout.div_ceil(60),
            browser_session => app.idle.browser_session,
            catalog_bytes => catalog::json_len(&services),
            service_count => services.len(),
            services => Value::from(Serde(&rows)),
            csrf_token,
        },
    )
}

/// `POST /project`: switches the current project.
pub(crate) async fn switch_project(
    State(app): State<Arc<AppState>>,
    session: Session,
    Form(form): Form<ProjectForm>,
) -> Page {
    // No one logged in: the session expired (or ended) while the page was
    // open. The login page says so, rather than a CSRF 403; a live session
    // with a wrong token is still a 403.
    if app.idle.user(&session).await?.is_none() {
        return Ok(redirect::to_login(redirect::HOME, true, app.secure_cookies));
    }
    auth::check_csrf(&session, &form.csrf_token).await?;
    if !app.settings.projects.contains(&form.project) {
        return Err(Failure::BadRequest("No such project."));
    }
    session.insert(keys::PROJECT, &form.project).await?;
    flash::success(&session, format!("Switched to project {}.", form.project)).await?;
    app.idle.refresh(&session).await?;
    Ok(Redirect::to("/").into_response())
}

/// `POST /auth/logout`: ends the session; on a server-side engine the old
/// cookie opens nothing afterwards.
pub(crate) async fn logout(
    State(app): State<Arc<AppState>>,
    session: Session,
    Form(form): Form<LogoutForm>,
) -> Page {
    if app.idle.user(&session).await?.is_none() {
        return Ok(redirect::to_login(redirect::HOME, true, app.secure_cookies));
    }
    auth::check_csrf(&session, &form.csrf_token).await?;
    session.flush().await?;
    // The message travels in the address: no session is left to keep it.
    let mut response = Redirect::to(redirect::SIGNED_OUT_PAGE).into_response();
    response.headers_mut().append(
        SET_COOKIE,
        redirect::signed_in_cookie(false, app.secure_cookies),
    );
    Ok(response)
}

/// What `GET /health` answers, as JSON.
#[derive(Debug, Serialize)]
struct Health<'a> {
    status: &'a str,
    engine: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `GET /health`: 200 when the session backend answers, 503 when not.
pub(crate) async fn health(State(app): State<Arc<AppState>>) -> Response {
    let engine = app.engine.name();
    match app.engine.health_check(app.health_timeout).await {
        Ok(()) => Json(Health {
            status: "ok",
            engine,
            error: None,
        })
        .into_response(),
        Err(err) => {
            tracing::warn!(
                engine,
                error = err.to_string().as_str(),
                "health check failed"
            );
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "unavailable",
                    engine,
                    // The kind only: the detail may name hosts, and this
                    // answer is public. The log has the whole error.
                    error: Some(format!("{:?}", err.kind())),
                }),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {

    use axum::body::Body;
    use axum::http::Request;
    use axum::http::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
    use cloakroom::memory::MemoryStore;
    use cloakroom::{Engine, SessionLayer};
    use tower::ServiceExt;

    use super::*;
    use crate::DashboardSettings;
    use crate::logging::Captured;

    async fn body_text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn loggable_names_are_cut_at_a_character_boundary() {
        assert_eq!(loggable("ada"), "ada");
        let long = "é".repeat(100);
        assert_eq!(loggable(&long).chars().count(), LOGGED_NAME_CHARS);
    }

    /// A user name that tries to forge log lines reaches the log escaped,
    /// on one line, and cut short.
    #[tokio::test]
    async fn failed_login_logs_the_user_name_escaped_and_short() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        // The test runtime is single-threaded: the handlers log on this thread.
        let _guard = tracing::subscriber::set_default(subscriber);

        let layer = SessionLayer::new(Engine::store(MemoryStore::new(100)));
        let app = crate::app(layer, DashboardSettings::default());
        let form = app
            .clone()
            .oneshot(
                Request::get("/auth/login")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        let cookie = form
            .headers()
            .get(SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("a session cookie")
            .to_owned();
        let html = body_text(form).await;
        let marker = "name=\"csrf_token\" value=\"";
        let start = html.find(marker).expect("a CSRF field") + marker.len();
        let token = &html[start..start + html[start..].find('"').expect("a quote")];

        // %0A newline, %0D carriage return, %1B escape.
        let forged = "ad%0A2026-01-01 FORGED%0D%1B%5B31mRED";
        let long = "x".repeat(500);
        for username in [forged, long.as_str()] {
            let reply = app
                .clone()
                .oneshot(
                    Request::post("/auth/login")
                        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .header(COOKIE, &cookie)
                        .body(Body::from(format!(
                            "username={username}&password=wrong&csrf_token={token}"
                        )))
                        .expect("request"),
                )
                .await
                .expect("infallible");
            assert_eq!(reply.status(), StatusCode::OK);
        }

        let log = captured.text();
        assert!(!log.contains('\r') && !log.contains('\u{1b}'), "{log:?}");
        let failed: Vec<&str> = log.lines().filter(|l| l.contains("failed login")).collect();
        assert_eq!(failed.len(), 2, "{log}");
        assert!(
            failed[0].contains(r#"username="ad\n2026-01-01 FORGED\r\u{1b}[31mRED""#),
            "{}",
            failed[0]
        );
        // No line but the real ones: the forged one stayed inside the first.
        assert!(!log.lines().any(|l| l.starts_with("2026-01-01")), "{log}");
        assert!(
            failed[1].contains(&format!("username=\"{}\"", "x".repeat(64))),
            "{}",
            failed[1]
        );
        assert!(!failed[1].contains(&"x".repeat(65)), "{}", failed[1]);
    }
}
