//! The routes the conformance cases drive. Each does one session operation
//! and answers with what it saw, so a case can check the result.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use cloakroom::{Expiry, Session, SessionLayer};
use tokio::sync::Notify;

/// Lets a case hold a request inside its handler while other requests run.
#[derive(Debug, Default)]
pub struct Gate {
    /// Signalled by the held handler once it has loaded the session.
    pub entered: Notify,
    /// Signalled by the case to let the held handler go on.
    pub release: Notify,
}

type Reply = Result<String, cloakroom::Error>;

/// The test application: these routes behind `layer`.
///
/// | route | does |
/// |---|---|
/// | `/noop` | nothing with the session |
/// | `/swallow` | reads `a` and ignores any error, answering 200 |
/// | `/handled` | reads `a`; on a store failure says it handled it and answers 200 `degraded` |
/// | `/own-502` | reads `a`; on a store failure answers 502 `handler's own` |
/// | `/get/{k}` | the value of `k`, or `none` |
/// | `/set/{k}/{v}` | inserts `k = v` |
/// | `/remove/{k}` | removes `k` |
/// | `/clear`, `/flush`, `/cycle` | those operations |
/// | `/expiry/idle/{secs}`, `/expiry/browser`, `/expiry/at/{unix}`, `/expiry/default` | `set_expiry` |
/// | `/age` | `expiry_age` in whole seconds |
/// | `/fail/{k}/{v}` | inserts, then answers 500 |
/// | `/held/{k}/{v}` | loads, waits for the [`Gate`], then inserts |
/// | `/held-cycle` | loads, waits for the [`Gate`], then calls `cycle_id` (a login) |
/// | `/flush-fail` | logs out, then answers 500 |
pub fn router(layer: SessionLayer, gate: Arc<Gate>) -> Router {
    Router::new()
        .route("/noop", get(|| async { "noop" }))
        .route("/swallow", get(swallow))
        .route("/handled", get(handled))
        .route("/own-502", get(own_502))
        .route("/get/{k}", get(get_value))
        .route("/set/{k}/{v}", get(set_value))
        .route("/remove/{k}", get(remove_value))
        .route(
            "/clear",
            get(|s: Session| async move { s.clear().await.map(|()| "cleared") }),
        )
        .route(
            "/flush",
            get(|s: Session| async move { s.flush().await.map(|()| "flushed") }),
        )
        .route(
            "/cycle",
            get(|s: Session| async move { s.cycle_id().await.map(|()| "cycled") }),
        )
        .route("/expiry/idle/{secs}", get(idle))
        .route(
            "/expiry/browser",
            get(|s: Session| expiry(s, Some(Expiry::OnBrowserClose))),
        )
        .route("/expiry/default", get(|s: Session| expiry(s, None)))
        .route("/expiry/at/{unix}", get(at))
        .route("/age", get(age))
        .route("/fail/{k}/{v}", get(fail))
        .route("/held/{k}/{v}", get(held))
        .route("/held-cycle", get(held_cycle))
        .route("/flush-fail", get(flush_fail))
        .layer(layer)
        .with_state(gate)
}

async fn swallow(s: Session) -> &'static str {
    // A careless handler: the layer must still not report success.
    let _ = s.get::<String>("a").await;
    "swallowed"
}

async fn handled(s: Session) -> Reply {
    match s.get::<String>("a").await {
        Ok(a) => Ok(a.unwrap_or_else(|| "none".to_owned())),
        Err(err) if err.is_unavailable() => {
            s.failure_handled();
            Ok("degraded".to_owned())
        }
        Err(err) => Err(err),
    }
}

async fn own_502(s: Session) -> Result<(StatusCode, String), cloakroom::Error> {
    match s.get::<String>("a").await {
        Ok(a) => Ok((StatusCode::OK, a.unwrap_or_else(|| "none".to_owned()))),
        Err(_) => Ok((StatusCode::BAD_GATEWAY, "handler's own".to_owned())),
    }
}

async fn get_value(s: Session, Path(k): Path<String>) -> Reply {
    Ok(s.get::<String>(&k)
        .await?
        .unwrap_or_else(|| "none".to_owned()))
}

async fn set_value(s: Session, Path((k, v)): Path<(String, String)>) -> Reply {
    s.insert(&k, &v).await?;
    Ok(v)
}

async fn remove_value(s: Session, Path(k): Path<String>) -> Reply {
    Ok(s.remove::<String>(&k)
        .await?
        .unwrap_or_else(|| "none".to_owned()))
}

async fn expiry(s: Session, e: Option<Expiry>) -> Reply {
    s.set_expiry(e).await?;
    Ok("expiry set".to_owned())
}

async fn idle(s: Session, Path(secs): Path<i64>) -> Reply {
    expiry(s, Some(Expiry::OnInactivity(time::Duration::seconds(secs)))).await
}

async fn at(s: Session, Path(unix): Path<i64>) -> Reply {
    let at =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    expiry(s, Some(Expiry::AtDateTime(at))).await
}

async fn age(s: Session) -> Reply {
    Ok(s.expiry_age().await?.as_secs().to_string())
}

async fn fail(
    s: Session,
    Path((k, v)): Path<(String, String)>,
) -> Result<(StatusCode, String), cloakroom::Error> {
    s.insert(&k, &v).await?;
    Ok((
        StatusCode::INTERNAL_SERVER_ERROR,
        "handler failed".to_owned(),
    ))
}

async fn held(
    State(gate): State<Arc<Gate>>,
    s: Session,
    Path((k, v)): Path<(String, String)>,
) -> Reply {
    // Load first, as a handler that reads before it writes does.
    let _ = s.get::<String>(&k).await?;
    gate.entered.notify_one();
    let _ = tokio::time::timeout(Duration::from_secs(10), gate.release.notified()).await;
    s.insert(&k, &v).await?;
    Ok(v)
}

async fn held_cycle(State(gate): State<Arc<Gate>>, s: Session) -> Reply {
    let _ = s.get::<String>("user").await?;
    gate.entered.notify_one();
    let _ = tokio::time::timeout(Duration::from_secs(10), gate.release.notified()).await;
    s.cycle_id().await?;
    Ok("cycled".to_owned())
}

async fn flush_fail(s: Session) -> Result<(StatusCode, String), cloakroom::Error> {
    s.flush().await?;
    Ok((
        StatusCode::INTERNAL_SERVER_ERROR,
        "handler failed after logout".to_owned(),
    ))
}
