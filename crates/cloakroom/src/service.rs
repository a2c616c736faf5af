//! The [`SessionService`]: builds the request's [`Session`], runs the inner
//! service, then writes the session back (Django's `SessionMiddleware`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use cloakroom_core::{BoxError, Error, ErrorKind, Id};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, Entry, VARY};
use http::{HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use time::OffsetDateTime;
use tower::Service;

use crate::Engine;
use crate::config::SessionConfig;
use crate::jar::{self, Lifetime};
use crate::session::{CookieHeaders, Incoming, Session, State, browser_close, expiry_age};

/// How many fresh ids `create` is tried with before giving up; a collision
/// of 256-bit random ids means a broken random source, not bad luck.
const CREATE_ATTEMPTS: usize = 3;

/// The middleware made by [`SessionLayer`](crate::SessionLayer).
#[derive(Clone)]
pub struct SessionService<S> {
    pub(crate) inner: S,
    pub(crate) engine: Engine,
    pub(crate) config: Arc<SessionConfig>,
}

impl<S> fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("engine", &self.engine)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let session = Session::new(
            self.engine.clone(),
            Arc::clone(&self.config),
            CookieHeaders::from_headers(request.headers()),
        );
        request.extensions_mut().insert(session.clone());
        ResponseFuture {
            inner: self.inner.call(request),
            session: Some(session),
            finishing: None,
        }
    }
}

pin_project! {
    /// The future of [`SessionService`]: the inner service's response, then
    /// the session written back. A request whose handler never used the
    /// session gets its response as it is, with nothing allocated for it.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        session: Option<Session>,
        finishing: Option<Pin<Box<dyn Future<Output = Response<Body>> + Send>>>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("finishing", &self.finishing.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            if let Some(finishing) = this.finishing.as_mut() {
                return finishing.as_mut().poll(cx).map(Ok);
            }
            let response = std::task::ready!(this.inner.as_mut().poll(cx))?.map(Body::new);
            let Some(session) = this.session.take() else {
                // Only reached if polled after completion, which futures
                // need not support; pass the response on untouched.
                return Poll::Ready(Ok(response));
            };
            if !session.shared.used() {
                return Poll::Ready(Ok(response));
            }
            // Uncontended (the handler is done with the session) unless it
            // handed the session to a task that still runs.
            let Some(mut state) = session.shared.state.try_lock() else {
                *this.finishing = Some(Box::pin(async move { finish(&session, response).await }));
                continue;
            };
            match finish_now(&session, &mut state, response) {
                Finish::Done(response) => return Poll::Ready(Ok(response)),
                Finish::Save(response) => {
                    drop(state);
                    *this.finishing = Some(Box::pin(async move {
                        let mut state = session.lock().await;
                        save(&session, &mut state, response).await
                    }));
                }
            }
        }
    }
}

/// Where writing the session back stands after the part that needs no
/// store I/O.
enum Finish {
    /// The response is final.
    Done(Response<Body>),
    /// The store must be written (or touched, or the session deleted).
    Save(Response<Body>),
}

/// Writes the session back as far as that needs no store I/O: errors,
/// `Vary`, the 5xx rule, cookie engines entirely, and server-side sessions
/// that were only read.
fn finish_now(session: &Session, state: &mut State, mut response: Response<Body>) -> Finish {
    if let Some(failure) = state.failure {
        return Finish::Done(error_response(failure.kind));
    }
    if !state.accessed {
        return Finish::Done(response);
    }
    add_vary_cookie(&mut response);
    // Django's rule: a failed request does not save what it half did.
    if response.status().is_server_error() {
        return Finish::Done(response);
    }
    let config = &session.shared.config;
    match &session.shared.engine {
        Engine::Cookie(codec) => {
            let result = save_to_cookie(session, codec.as_ref(), state, &mut response);
            Finish::Done(respond(session, result, response))
        }
        Engine::Store(_)
            if state.is_blank()
                || state.modified
                || state.id.is_none()
                || state.touch
                || config.save_every_request =>
        {
            Finish::Save(response)
        }
        Engine::Store(_) => Finish::Done(response),
    }
}

/// Writes the session back after the handler and shapes the response, when
/// that could not be done without waiting (see [`ResponseFuture`]).
async fn finish(session: &Session, response: Response<Body>) -> Response<Body> {
    let mut state = session.lock().await;
    match finish_now(session, &mut state, response) {
        Finish::Done(response) => response,
        Finish::Save(response) => save(session, &mut state, response).await,
    }
}

/// The store half of writing back: the save, touch or delete, then the
/// response for its outcome.
async fn save(
    session: &Session,
    state: &mut State,
    mut response: Response<Body>,
) -> Response<Body> {
    let result = save_to_store(session, state, &mut response).await;
    respond(session, result, response)
}

/// The response for the outcome of a save.
fn respond(
    session: &Session,
    result: Result<(), Error>,
    response: Response<Body>,
) -> Response<Body> {
    match result {
        Ok(()) => response,
        Err(err) => {
            if err.kind() == ErrorKind::Interrupted {
                // Another request logged this session out: do not bring it
                // back, and tell the browser to drop the cookie.
                let mut response = error_response(err.kind());
                let config = &session.shared.config;
                jar::remove(response.headers_mut(), config, &config.cookie_name);
                response
            } else {
                error_response(err.kind())
            }
        }
    }
}

async fn save_to_store(
    session: &Session,
    state: &mut State,
    response: &mut Response<Body>,
) -> Result<(), Error> {
    let config = &session.shared.config;
    let had_cookie = !matches!(session.shared.incoming(), Incoming::Absent);
    if state.is_blank() {
        // An emptied session is gone: its record (and one retired by
        // cycle_id) is deleted and the cookie removed.
        let doomed: Vec<Id> = state
            .id
            .take()
            .into_iter()
            .chain(state.retired.take())
            .collect();
        for id in doomed {
            session.delete_record(state, &id).await?;
        }
        if had_cookie {
            jar::remove(response.headers_mut(), config, &config.cookie_name);
        }
        return Ok(());
    }

    let now = OffsetDateTime::now_utc();
    let id = if state.modified || state.id.is_none() {
        let record = state.take_record(config, now);
        let written = write(session, state, &record).await;
        state.restore(record);
        let id = written?;
        if let Some(old) = state.retired.take() {
            session.delete_record(state, &old).await?;
        }
        id
    } else if config.save_every_request || state.touch {
        let Some(id) = state.id.clone() else {
            return Ok(());
        };
        let key = id.store_key();
        let deadline = now + expiry_age(state.expiry, config, now);
        let touched = session
            .run(state, "touch", |store| async move {
                store.touch(&key, deadline).await
            })
            .await?;
        if !touched {
            return Err(Error::new(ErrorKind::Interrupted, ""));
        }
        id
    } else {
        return Ok(());
    };
    set_id_cookie(session, state, response, &id, now);
    Ok(())
}

/// `Set-Cookie` for the session `id`, saved at `now`.
fn set_id_cookie(
    session: &Session,
    state: &State,
    response: &mut Response<Body>,
    id: &Id,
    now: OffsetDateTime,
) {
    let config = &session.shared.config;
    let lifetime = if browser_close(state.expiry, config) {
        Lifetime::BrowserSession
    } else {
        Lifetime::For(expiry_age(state.expiry, config, now), now)
    };
    jar::set(
        response.headers_mut(),
        config,
        &config.cookie_name,
        id.expose(),
        lifetime,
    );
}

/// Writes the record: an update of the live session, or a new session.
async fn write(
    session: &Session,
    state: &mut State,
    record: &cloakroom_core::Record,
) -> Result<Id, Error> {
    let Some(id) = state.id.clone() else {
        return create(session, state, record).await;
    };
    let key = id.store_key();
    let updated = session
        .run(state, "update", |store| async move {
            store.update(&key, record).await
        })
        .await?;
    if updated {
        Ok(id)
    } else {
        Err(Error::new(ErrorKind::Interrupted, ""))
    }
}

/// Stores a new session under a fresh id and returns the id.
async fn create(
    session: &Session,
    state: &mut State,
    record: &cloakroom_core::Record,
) -> Result<Id, Error> {
    for _ in 0..CREATE_ATTEMPTS {
        let id = Id::generate()?;
        let key = id.store_key();
        let created = session
            .run(state, "create", |store| async move {
                store.create(&key, record).await
            })
            .await?;
        if created {
            state.id = Some(id.clone());
            return Ok(id);
        }
    }
    Err(Error::new(
        ErrorKind::Backend,
        "every fresh session id was already taken; is the random source broken?",
    ))
}

fn save_to_cookie(
    session: &Session,
    codec: &dyn cloakroom_core::CookieCodec,
    state: &mut State,
    response: &mut Response<Body>,
) -> Result<(), Error> {
    let shared = &session.shared;
    let config = &shared.config;
    let name = &config.cookie_name;
    let headers = response.headers_mut();
    if state.is_blank() {
        if !matches!(shared.incoming(), Incoming::Absent) {
            jar::remove(headers, config, name);
        }
        for n in shared.chunk_numbers() {
            jar::remove(headers, config, &format!("{name}.{n}"));
        }
        return Ok(());
    }
    if !(state.modified || state.touch || config.save_every_request) {
        return Ok(());
    }
    let now = OffsetDateTime::now_utc();
    let record = state.take_record(config, now);
    let sealed = codec.seal(name, &record);
    state.restore(record);
    let value = sealed.inspect_err(|err| {
        tracing::error!(engine = codec.engine(), operation = "seal", error = %err, "session cookie not written");
    })?;
    let Some(parts) = jar::split(name, &value, config.cookie_max_bytes) else {
        let err = Error::new(
            ErrorKind::TooLarge,
            format!(
                "the sealed session is {} bytes, more than SESSION_COOKIE_MAX_BYTES={} allows; \
                 the previous cookie is left as it was",
                value.len(),
                config.cookie_max_bytes
            ),
        );
        tracing::error!(engine = codec.engine(), operation = "save", error = %err, "session cookie not written");
        return Err(err);
    };
    let lifetime = if browser_close(state.expiry, config) {
        Lifetime::BrowserSession
    } else {
        Lifetime::For(expiry_age(state.expiry, config, now), now)
    };
    let pieces = parts.len() - 1;
    for (cookie_name, cookie_value) in parts {
        jar::set(headers, config, &cookie_name, &cookie_value, lifetime);
    }
    // Pieces of an earlier, longer value would otherwise linger.
    for n in shared.chunk_numbers().iter().filter(|n| **n > pieces) {
        jar::remove(headers, config, &format!("{name}.{n}"));
    }
    Ok(())
}

fn add_vary_cookie(response: &mut Response<Body>) {
    // One lookup in the usual case, a response with no `Vary` yet.
    match response.headers_mut().entry(VARY) {
        Entry::Vacant(vacant) => {
            vacant.insert(HeaderValue::from_static("Cookie"));
        }
        Entry::Occupied(mut occupied) => {
            let already = occupied
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|v| {
                    let v = v.trim();
                    v == "*" || v.eq_ignore_ascii_case("cookie")
                });
            if !already {
                occupied.append(HeaderValue::from_static("Cookie"));
            }
        }
    }
}

/// The response for a session failure: a status and a short plain body.
pub(crate) fn error_response(kind: ErrorKind) -> Response<Body> {
    let (status, body) = match kind {
        ErrorKind::Backend | ErrorKind::Timeout => (
            StatusCode::SERVICE_UNAVAILABLE,
            "session store unavailable, try again\n",
        ),
        ErrorKind::Interrupted => (
            StatusCode::BAD_REQUEST,
            "the session was ended by another request before this one completed\n",
        ),
        ErrorKind::TooLarge => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "session data too large to store\n",
        ),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "session error\n"),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(VARY, HeaderValue::from_static("Cookie"));
    response
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use http::header::SET_COOKIE;
    use tower::{Layer as _, ServiceExt as _};

    use super::*;
    use crate::memory::MemoryStore;
    use crate::{Engine, SessionLayer};

    #[test]
    fn vary_names_cookie_once_and_keeps_what_was_there() {
        let vary = |existing: &[&'static str]| {
            let mut response = Response::new(Body::empty());
            for value in existing {
                response
                    .headers_mut()
                    .append(VARY, HeaderValue::from_static(value));
            }
            add_vary_cookie(&mut response);
            response
                .headers()
                .get_all(VARY)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(vary(&[]), ["Cookie"]);
        assert_eq!(vary(&["Accept-Encoding"]), ["Accept-Encoding", "Cookie"]);
        assert_eq!(
            vary(&["Accept-Encoding, COOKIE"]),
            ["Accept-Encoding, COOKIE"]
        );
        assert_eq!(vary(&["Origin", " cookie "]), ["Origin", " cookie "]);
        assert_eq!(vary(&["*"]), ["*"]);
    }

    /// A handler that hands its session to a task which still holds the
    /// session's lock when the response is ready: the layer must wait for
    /// it, then save what the task wrote.
    #[tokio::test]
    async fn a_session_still_in_use_after_the_handler_is_saved_once_released() {
        let service = SessionLayer::new(Engine::store(MemoryStore::new(10))).layer(
            tower::service_fn(|request: Request<Body>| async move {
                let session = request
                    .extensions()
                    .get::<Session>()
                    .cloned()
                    .expect("the layer's session");
                let (held, holding) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let mut state = session.lock().await;
                    state.accessed = true;
                    state.loaded = true;
                    state.data.insert("late".into(), serde_json::json!(1));
                    state.modified = true;
                    let _ = held.send(());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                });
                let _ = holding.await;
                Ok::<_, Infallible>(Response::new(Body::empty()))
            }),
        );
        let response = service
            .oneshot(Request::new(Body::empty()))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers().get(VARY).unwrap(), "Cookie");
        let cookie = response.headers().get(SET_COOKIE).expect("saved");
        assert!(cookie.to_str().unwrap().starts_with("sessionid="));
    }
}
