//! The route handlers.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
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
use crate::templates;

type Page = Result<Response, Failure>;

/// `POST /auth/login`. Every field defaults to empty, so a form without a
/// CSRF token gets the 403 of a bad token rather than a 422.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct LoginForm {
    username: String,
    password: String,
    csrf_token: String,
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

/// `GET /auth/login`: the form, or the overview for a user already in.
pub(crate) async fn login_form(State(app): State<Arc<AppState>>, session: Session) -> Page {
    if auth::logged_in(&session).await?.is_some() {
        return Ok(Redirect::to("/").into_response());
    }
    let csrf_token = auth::csrf_token(&session).await?;
    auth::refresh_idle_timeout(&session, app.settings.session_timeout).await?;
    login_page(&app, StatusCode::OK, &csrf_token, "", None)
}

/// `POST /auth/login`.
pub(crate) async fn login(
    State(app): State<Arc<AppState>>,
    session: Session,
    Form(form): Form<LoginForm>,
) -> Page {
    auth::check_csrf(&session, &form.csrf_token).await?;
    let Some(user) = app.settings.authenticate(&form.username, &form.password) else {
        tracing::info!(username = %form.username, "failed login");
        // The session is left as it was: same id, same token.
        return login_page(
            &app,
            StatusCode::OK,
            &form.csrf_token,
            &form.username,
            Some("Invalid credentials. Check the user name and password."),
        );
    };
    let project = app.settings.projects.first().map_or("", String::as_str);
    auth::log_in(
        &session,
        user.name(),
        project,
        catalog::REGIONS[0],
        &app.catalog,
    )
    .await?;
    auth::refresh_idle_timeout(&session, app.settings.session_timeout).await?;
    // The layer saves the session after this; if that fails, it logs why
    // and the answer is an error, not this redirect.
    tracing::info!(username = user.name(), "credentials accepted");
    Ok(Redirect::to("/").into_response())
}

fn login_page(
    app: &AppState,
    status: StatusCode,
    csrf_token: &str,
    username: &str,
    error: Option<&str>,
) -> Page {
    templates::page(
        status,
        "login.html",
        context! {
            csrf_token,
            username,
            error,
            engine => app.engine.name(),
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
pub(crate) async fn overview(State(app): State<Arc<AppState>>, session: Session) -> Page {
    let Some(user) = auth::logged_in(&session).await? else {
        return Ok(Redirect::to("/auth/login").into_response());
    };
    auth::refresh_idle_timeout(&session, app.settings.session_timeout).await?;
    let csrf_token = auth::csrf_token(&session).await?;
    let services: Vec<Service> = session.get(keys::CATALOG).await?.unwrap_or_default();
    let rows: Vec<ServiceRow<'_>> = catalog::public_in(&services, &user.region)
        .map(|(s, e)| ServiceRow {
            kind: &s.kind,
            name: &s.name,
            url: &e.url,
        })
        .collect();
    // Whole seconds: the page is read by people.
    let expires = session.expiry_date().await?;
    let expires = expires.replace_nanosecond(0).unwrap_or(expires);
    let expires_in = (expires - OffsetDateTime::now_utc()).whole_seconds().max(0);
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
            engine => app.engine.name(),
            server_side => app.engine.is_server_side(),
            expires_at => expires.format(&Rfc3339).unwrap_or_default(),
            expires_in_minutes => (expires_in + 30) / 60,
            timeout_minutes => timeout.div_ceil(60),
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
    auth::check_csrf(&session, &form.csrf_token).await?;
    if auth::logged_in(&session).await?.is_none() {
        return Ok(Redirect::to("/auth/login").into_response());
    }
    if !app.settings.projects.contains(&form.project) {
        return Err(Failure::BadRequest("No such project."));
    }
    session.insert(keys::PROJECT, &form.project).await?;
    auth::refresh_idle_timeout(&session, app.settings.session_timeout).await?;
    Ok(Redirect::to("/").into_response())
}

/// `POST /auth/logout`: ends the session; on a server-side engine the old
/// cookie opens nothing afterwards.
pub(crate) async fn logout(session: Session, Form(form): Form<LogoutForm>) -> Page {
    auth::check_csrf(&session, &form.csrf_token).await?;
    session.flush().await?;
    Ok(Redirect::to("/auth/login").into_response())
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
            tracing::warn!(engine, error = %err, "health check failed");
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
