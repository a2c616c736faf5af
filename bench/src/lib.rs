//! The throughput benchmark behind `cargo bench -p cloakroom-bench`.
//!
//! Every scenario is the same axum handler shape behind a different session
//! layer: `plain` (no sessions at all), cloakroom, and tower-sessions on the
//! same kind of store. Requests go through the real `Router` in process
//! (`tower::ServiceExt::oneshot`), so the figures compare what the session
//! layers cost, not the HTTP stack. Each of `USERS` concurrent users holds its
//! own session cookie and sends requests for the measured time.
//!
//! Two workloads: `read` (the handler reads a value, nothing is written
//! back) and `write` (the handler increments a counter, so every request
//! saves).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::Request;
use http::header::{COOKIE, SET_COOKIE};
use tower::ServiceExt;

/// What a handler does with the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Reads one value.
    Read,
    /// Increments a counter (a save per request).
    Write,
}

/// The cloakroom app for a workload: `/` per the workload, `/init` writes.
pub fn cloakroom_app(layer: cloakroom::SessionLayer, workload: Workload) -> Router {
    async fn read(s: cloakroom::Session) -> Result<String, cloakroom::Error> {
        Ok(s.get::<u64>("n").await?.unwrap_or(0).to_string())
    }
    async fn write(s: cloakroom::Session) -> Result<String, cloakroom::Error> {
        let n = s.get::<u64>("n").await?.unwrap_or(0) + 1;
        s.insert("n", n).await?;
        Ok(n.to_string())
    }
    let main = match workload {
        Workload::Read => get(read),
        Workload::Write => get(write),
    };
    Router::new()
        .route("/", main)
        .route("/init", get(write))
        .layer(layer)
}

/// The same app on tower-sessions.
pub fn tower_sessions_app<S>(store: S, workload: Workload) -> Router
where
    S: tower_sessions::SessionStore + Clone,
{
    async fn read(s: tower_sessions::Session) -> String {
        s.get::<u64>("n")
            .await
            .ok()
            .flatten()
            .unwrap_or(0)
            .to_string()
    }
    async fn write(s: tower_sessions::Session) -> String {
        let n = s.get::<u64>("n").await.ok().flatten().unwrap_or(0) + 1;
        let _ = s.insert("n", n).await;
        n.to_string()
    }
    let main = match workload {
        Workload::Read => get(read),
        Workload::Write => get(write),
    };
    let layer = tower_sessions::SessionManagerLayer::new(store).with_secure(false);
    Router::new()
        .route("/", main)
        .route("/init", get(write))
        .layer(layer)
}

/// The baseline: the same route with no session layer.
pub fn plain_app() -> Router {
    Router::new()
        .route("/", get(|| async { "0" }))
        .route("/init", get(|| async { "0" }))
}

/// Requests per second that `users` concurrent users get from `app` over
/// `duration`, after each fetched its cookie from `/init`.
pub async fn throughput(app: Router, users: usize, duration: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(users);
    for _ in 0..users {
        let app = app.clone();
        let cookie = init(&app).await;
        let (done, stop) = (Arc::clone(&done), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut request = Request::get("/");
                if let Some(cookie) = &cookie {
                    request = request.header(COOKIE, cookie.as_str());
                }
                let Ok(request) = request.body(Body::empty()) else {
                    break;
                };
                match app.clone().oneshot(request).await {
                    Ok(response) if response.status().is_success() => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => break,
                }
                // An in-process request can complete without ever waiting;
                // yield so the timer and the other users get their turn.
                tokio::task::yield_now().await;
            }
        }));
    }
    let started = Instant::now();
    let at_start = done.load(Ordering::Relaxed);
    tokio::time::sleep(duration).await;
    let counted = done.load(Ordering::Relaxed) - at_start;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    counted as f64 / elapsed.as_secs_f64()
}

async fn init(app: &Router) -> Option<String> {
    let request = Request::get("/init").body(Body::empty()).ok()?;
    let response = app.clone().oneshot(request).await.ok()?;
    let set = response.headers().get(SET_COOKIE)?.to_str().ok()?;
    set.split(';').next().map(str::to_owned)
}
