//! The example dashboard: run it with `cargo run -p dashboard`, pick the
//! session engine with the `SESSION_*` environment variables.
//!
//! * `GET /` counts page views in the session.
//! * `GET /health` says whether the session backend answers (200 or 503).
//!
//! It listens on `DASHBOARD_ADDR` (default `127.0.0.1:8000`).

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;
use cloakroom::{Engine, Session, SessionLayer};

const DEFAULT_ADDR: &str = "127.0.0.1:8000";

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let layer = match SessionLayer::try_from_env() {
        Ok(layer) => layer,
        Err(err) => {
            eprintln!("dashboard: {err}");
            std::process::exit(2);
        }
    };
    let addr = std::env::var("DASHBOARD_ADDR").unwrap_or_else(|_| DEFAULT_ADDR.to_owned());
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("dashboard: cannot listen on DASHBOARD_ADDR={addr}: {err}");
            std::process::exit(2);
        }
    };
    tracing::info!(%addr, engine = layer.engine().name(), "dashboard listening");
    if let Err(err) = axum::serve(listener, app(layer)).await {
        eprintln!("dashboard: {err}");
        std::process::exit(1);
    }
}

/// The dashboard's routes behind `layer`.
fn app(layer: SessionLayer) -> Router {
    let engine = layer.engine().clone();
    Router::new()
        .route("/", get(overview))
        .route("/health", get(health))
        .layer(layer)
        .with_state(engine)
}

async fn overview(
    State(engine): State<Engine>,
    session: Session,
) -> Result<Html<String>, cloakroom::Error> {
    let views: u64 = session.get("views").await?.unwrap_or(0) + 1;
    session.insert("views", views).await?;
    Ok(Html(format!(
        "<!doctype html><title>Dashboard</title><h1>Dashboard</h1>\
         <p>Page views in this session: <strong id=views>{views}</strong></p>\
         <p>Session engine: {}</p>",
        engine.name()
    )))
}

async fn health(State(engine): State<Engine>) -> (StatusCode, String) {
    match engine.health_check(Duration::from_secs(2)).await {
        Ok(()) => (
            StatusCode::OK,
            format!("ok: session engine {} answers\n", engine.name()),
        ),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("session engine {} does not answer: {err}\n", engine.name()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(
        app: &Router,
        path: &str,
        cookie: Option<&str>,
    ) -> (StatusCode, Option<String>, String) {
        let mut request = Request::get(path);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let set_cookie = response
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            set_cookie,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn counts_views_per_session_and_reports_health() {
        let app = app(SessionLayer::new(Engine::store(
            cloakroom::memory::MemoryStore::new(100),
        )));
        let (status, cookie, body) = get(&app, "/", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("<strong id=views>1</strong>"));
        let cookie = cookie.expect("session cookie");
        let (_, _, body) = get(&app, "/", Some(&cookie)).await;
        assert!(body.contains("<strong id=views>2</strong>"));
        let (_, _, body) = get(&app, "/", None).await;
        assert!(body.contains("<strong id=views>1</strong>"));
        let (status, _, body) = get(&app, "/health", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("memory"));
    }
}
