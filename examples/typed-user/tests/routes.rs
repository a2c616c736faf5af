//! The example's routes driven in process with `tower::ServiceExt::oneshot`
//! (no network): login, `/me` with and without the cookie, logout, and the
//! idle timeout ending a session.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use tower::ServiceExt;
use typed_user_example::{User, app};

/// The idle timeout of the application under test, and the margins the
/// timing tests keep around it (generous: the host may be busy).
const IDLE: Duration = Duration::from_secs(3);
const WELL_WITHIN: Duration = Duration::from_secs(1);
const WELL_PAST: Duration = Duration::from_millis(4_500);

async fn send(app: &Router, request: Request<Body>) -> Response {
    app.clone()
        .oneshot(request)
        .await
        .expect("the router answers")
}

/// Logs in as `name` and returns the `name=value` pair of the session
/// cookie it set.
async fn login(app: &Router, name: &str) -> String {
    let request = Request::post("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("name={name}")))
        .unwrap();
    let response = send(app, request).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[header::LOCATION], "/me");
    session_cookie(&response).expect("login sets the session cookie")
}

/// The `name=value` of the session cookie a response sets, if it sets one.
fn session_cookie(response: &Response) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("typed_user_session="))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

fn get_me(cookie: Option<&str>) -> Request<Body> {
    let mut request = Request::get("/me");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.body(Body::empty()).unwrap()
}

async fn me(app: &Router, cookie: &str) -> StatusCode {
    send(app, get_me(Some(cookie))).await.status()
}

#[tokio::test]
async fn login_sets_a_cookie_that_me_reads_back_as_the_user() {
    let app = app(IDLE);
    let cookie = login(&app, "ada").await;
    assert!(cookie.len() > "typed_user_session=".len(), "{cookie}");

    let response = send(&app, get_me(Some(&cookie))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap();
    let user: User = serde_json::from_slice(&body).unwrap();
    assert_eq!(user.name, "ada");
    let age = time::OffsetDateTime::now_utc() - user.logged_in_at;
    assert!(
        age >= time::Duration::ZERO && age < time::Duration::minutes(1),
        "{age}"
    );
}

#[tokio::test]
async fn me_without_a_session_is_401() {
    let app = app(IDLE);
    let response = send(&app, get_me(None)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Asking stores nothing: no cookie for an anonymous visitor.
    assert_eq!(session_cookie(&response), None);
    // A cookie the server never issued opens nothing either.
    let forged = format!("typed_user_session={}", "a".repeat(43));
    assert_eq!(me(&app, &forged).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn login_rejects_a_bad_name() {
    let app = app(IDLE);
    for name in ["", "%20%20", &"x".repeat(65), "a%0Ab"] {
        let request = Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("name={name}")))
            .unwrap();
        let response = send(&app, request).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "name={name}");
        assert_eq!(session_cookie(&response), None, "name={name}");
    }
}

#[tokio::test]
async fn each_login_gets_a_new_session() {
    let app = app(IDLE);
    let first = login(&app, "ada").await;
    let second = login(&app, "grace").await;
    assert_ne!(first, second);
    assert_eq!(me(&app, &first).await, StatusCode::OK);
    assert_eq!(me(&app, &second).await, StatusCode::OK);
}

#[tokio::test]
async fn after_logout_the_old_cookie_gives_401() {
    let app = app(IDLE);
    let cookie = login(&app, "ada").await;
    assert_eq!(me(&app, &cookie).await, StatusCode::OK);

    let request = Request::post("/logout")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    let response = send(&app, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    // The browser is told to drop the cookie...
    let removal = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("typed_user_session="))
        .expect("logout removes the cookie");
    assert!(removal.contains("Max-Age=0"), "{removal}");
    // ...and a copy kept anyway opens nothing on the server.
    assert_eq!(me(&app, &cookie).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_idle_timeout_ends_the_session() {
    let app = app(IDLE);
    let cookie = login(&app, "ada").await;
    assert_eq!(me(&app, &cookie).await, StatusCode::OK);
    tokio::time::sleep(WELL_PAST).await;
    assert_eq!(me(&app, &cookie).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn each_request_restarts_the_idle_timeout() {
    let app = app(IDLE);
    let cookie = login(&app, "ada").await;
    // Requests a second apart for well over the timeout keep it alive.
    for _ in 0..5 {
        tokio::time::sleep(WELL_WITHIN).await;
        assert_eq!(me(&app, &cookie).await, StatusCode::OK);
    }
    tokio::time::sleep(WELL_PAST).await;
    assert_eq!(me(&app, &cookie).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_login_cookie_carries_the_idle_timeout() {
    let app = app(IDLE);
    let request = Request::post("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("name=ada"))
        .unwrap();
    let response = send(&app, request).await;
    let set_cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    let attributes: Vec<&str> = set_cookie.split(';').map(str::trim).collect();
    assert!(attributes.contains(&"Max-Age=3"), "{set_cookie}");
    assert!(attributes.contains(&"HttpOnly"), "{set_cookie}");
}

#[tokio::test]
#[should_panic(expected = "at least a second")]
async fn an_idle_timeout_under_a_second_is_refused() {
    let _ = app(Duration::from_millis(500));
}
