//! An application that builds its [`SessionLayer`] in code, with no
//! environment: the memory engine, an idle timeout, a typed [`User`] kept in
//! the session, and [`CurrentUser`], an extractor of its own that answers
//! 401 when nobody is logged in.
//!
//! | route | what it does |
//! |---|---|
//! | `GET /login` | a form asking for a name |
//! | `POST /login` | form `name=...`: logs in as that name (no password: a demo) and redirects to `/me` |
//! | `GET /me` | the logged-in user as JSON, or 401 |
//! | `POST /logout` | ends the session (the old cookie opens nothing afterwards) |
//!
//! The idle timeout is the session's own expiry, set at login with
//! [`Session::set_expiry`]`(Some(`[`Expiry::OnInactivity`]`(..)))`. The
//! layer's [`with_save_every_request`](SessionLayer::with_save_every_request)
//! renews it on every request that brings the cookie, so it counts from the
//! last request, not from the login; the server refuses the session once it
//! has passed, whatever the browser does with the cookie.

use std::time::Duration;

use axum::extract::{Form, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cloakroom::memory::MemoryStore;
use cloakroom::{Engine, Expiry, Session, SessionLayer};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The session key the user is kept under.
const USER_KEY: &str = "user";

/// The longest name accepted at login, in bytes.
const MAX_NAME_BYTES: usize = 64;

/// The logged-in user, as stored in the session (serde, so any engine can
/// keep it) and as `/me` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The name given at login.
    pub name: String,
    /// When the user logged in (Unix seconds in the session and in JSON).
    #[serde(with = "time::serde::timestamp")]
    pub logged_in_at: OffsetDateTime,
}

/// An extractor for the logged-in user: a handler that takes it runs only
/// for a logged-in request; any other is answered 401 before the handler.
///
/// It reads the [`Session`] the layer put in the request, so the route must
/// be behind a [`SessionLayer`] (without one the answer is a 500).
#[derive(Debug, Clone)]
pub struct CurrentUser(pub User);

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        match session.get::<User>(USER_KEY).await {
            Ok(Some(user)) => Ok(Self(user)),
            // Never logged in, logged out, or idle for too long: the layer
            // gives the handler an empty session in each case.
            Ok(None) => Err((
                StatusCode::UNAUTHORIZED,
                "not logged in: POST /login with a name first\n",
            )
                .into_response()),
            // The store failed: `cloakroom::Error` answers 503 itself.
            Err(err) => Err(err.into_response()),
        }
    }
}

/// What the handlers share: the idle timeout set on each session at login.
#[derive(Debug, Clone, Copy)]
struct Idle(time::Duration);

/// The session layer, built in code: the in-process memory engine (at most
/// `10_000` logged-in sessions), its own cookie name, and every request
/// that brings the cookie renewing the session's deadline (which is how the
/// idle timeout set at login keeps moving).
pub fn session_layer() -> SessionLayer {
    SessionLayer::new(Engine::store(MemoryStore::new(10_000)))
        .with_cookie_name("typed_user_session")
        .with_save_every_request(true)
}

/// The application: the routes behind [`session_layer`], with sessions that
/// end after `idle` without a request (in whole seconds).
///
/// # Panics
/// When `idle` is under a second or over 100 years.
pub fn app(idle: Duration) -> Router {
    let seconds = i64::try_from(idle.as_secs()).unwrap_or(i64::MAX);
    let idle = time::Duration::seconds(seconds);
    assert!(
        Expiry::OnInactivity(idle).is_within_bounds(),
        "idle timeout {seconds} s: it must be at least a second and at most 100 years"
    );
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/me", get(me))
        .route("/logout", post(logout))
        .with_state(Idle(idle))
        .layer(session_layer())
}

async fn login_form() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html><title>Log in</title>",
        "<form method=post action=/login>",
        "<label>Name <input name=name required maxlength=64 autofocus></label> ",
        "<button>Log in</button></form>",
    ))
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
struct LoginForm {
    name: String,
}

async fn login(
    State(Idle(idle)): State<Idle>,
    session: Session,
    Form(form): Form<LoginForm>,
) -> Result<Response, cloakroom::Error> {
    let name = form.name.trim();
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        let message = "a name is 1 to 64 bytes, without control characters\n";
        return Ok((StatusCode::BAD_REQUEST, message).into_response());
    }
    let user = User {
        name: name.to_owned(),
        logged_in_at: OffsetDateTime::now_utc(),
    };
    // A new id at login, so that an id planted before it is worthless.
    session.cycle_id().await?;
    session.set_expiry(Some(Expiry::OnInactivity(idle))).await?;
    session.insert(USER_KEY, &user).await?;
    Ok(Redirect::to("/me").into_response())
}

async fn me(CurrentUser(user): CurrentUser) -> Json<User> {
    Json(user)
}

async fn logout(session: Session) -> Result<&'static str, cloakroom::Error> {
    // Deletes the stored session at once and removes the cookie.
    session.flush().await?;
    Ok("logged out\n")
}
