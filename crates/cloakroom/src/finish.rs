//! After the handler: the session's [`Outcome`](crate::plan::Outcome) goes
//! to [`plan::decide`], and the plan is carried out: store calls through
//! [`store`](crate::store), cookies through [`jar`], failures turned into
//! responses here.
//!
//! [`now`] runs when the handler is done and the session is free: it
//! carries out every plan whose store calls are answered at once (the
//! memory engine's), without a future. [`later`] carries out the rest,
//! waiting under the layer's timeout; the service boxes it. Both run the
//! same [`write`].

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use axum::body::Body;
use cloakroom_core::{CookieCodec, Error, ErrorKind, Id};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, Entry, VARY};
use http::{HeaderValue, Response, StatusCode};
use time::OffsetDateTime;

use crate::Engine;
use crate::config::SessionConfig;
use crate::jar;
use crate::plan::{self, Decision, Plan};
use crate::session::{Locked, absolute_end};
use crate::store::{self, Stop, Wait};

/// What [`now`] did with the response.
pub(crate) enum Now {
    /// The plan is carried out: the final response.
    Done(Response<Body>),
    /// The plan needs store calls that wait: the response for [`later`].
    Later(Response<Body>),
}

/// Carries out the plan for `session` if nothing in it waits; gives the
/// response back otherwise, for [`later`].
pub(crate) fn now(session: &mut Locked<'_>, response: Response<Body>) -> Now {
    let decision = match decide(session, &response) {
        Ok(decision) => decision,
        Err(kind) => return Now::Done(failed(session, response, kind)),
    };
    let config = session.config();
    // With `Wait::Never` nothing in `write` waits: each store call is
    // answered at once or not made, so one poll finishes it.
    let mut writing = pin!(write(session, response, decision, Wait::Never));
    match writing
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(Ok(response)) => Now::Done(response),
        Poll::Ready(Err(response)) => Now::Later(response),
        Poll::Pending => {
            tracing::error!("a session write-back that may not wait did; answering 500");
            Now::Done(failure(ErrorKind::Backend, config))
        }
    }
}

/// Carries out the plan for `session`, waiting for the store as needed.
pub(crate) async fn later(session: &mut Locked<'_>, response: Response<Body>) -> Response<Body> {
    let mut decision = match decide(session, &response) {
        Ok(decision) => decision,
        Err(kind) => return failed(session, response, kind),
    };
    if decision.plan == Plan::Load {
        if let Err(err) = session.load().await {
            return error_response(session, err.kind());
        }
        decision = match decide(session, &response) {
            Ok(decision) => decision,
            Err(kind) => return error_response(session, kind),
        };
    }
    match write(session, response, decision, Wait::Bounded).await {
        Ok(response) | Err(response) => response,
    }
}

/// Carries out `decision` and shapes the response; `Err` gives the response
/// back untouched when the plan would wait and `wait` forbids it.
async fn write(
    session: &mut Locked<'_>,
    mut response: Response<Body>,
    decision: Decision,
    wait: Wait,
) -> Result<Response<Body>, Response<Body>> {
    let now = OffsetDateTime::now_utc();
    let saved = match (decision.plan, session.engine()) {
        (Plan::Nothing | Plan::RemoveCookie, _) => Ok(None),
        (Plan::Load, _) => return Err(response),
        (Plan::Seal, Engine::Cookie(codec)) => {
            seal(session, codec.as_ref(), &mut response, now).map(|()| None)
        }
        (_, Engine::Cookie(_)) => Ok(None),
        (plan, Engine::Store(store)) => {
            let config = session.config();
            match store::save(store.as_ref(), config, session, plan, now, wait).await {
                Ok(id) => Ok(id),
                Err(Stop::Failed(err)) => Err(err),
                Err(Stop::WouldWait) => return Err(response),
            }
        }
    };
    Ok(respond(session, response, decision, saved, now))
}

fn decide(session: &Locked<'_>, response: &Response<Body>) -> Result<Decision, ErrorKind> {
    let in_cookie = matches!(session.engine(), Engine::Cookie(_));
    Ok(plan::decide(
        session.outcome()?,
        session.config(),
        response.status(),
        in_cookie,
    ))
}

/// Shapes the response once the plan is carried out: `Vary`, the session
/// cookie set (to `saved`) or removed, or the error of a failed save.
fn respond(
    session: &Locked<'_>,
    mut response: Response<Body>,
    decision: Decision,
    saved: Result<Option<Id>, Error>,
    now: OffsetDateTime,
) -> Response<Body> {
    let config = session.config();
    match saved {
        Err(err) => return error_response(session, err.kind()),
        Ok(Some(id)) => {
            let lifetime = session.lifetime(now);
            jar::set(
                response.headers_mut(),
                config,
                &config.cookie_name,
                id.expose(),
                lifetime,
            );
        }
        Ok(None) => {
            if matches!(decision.plan, Plan::RemoveCookie | Plan::Delete)
                && session.outcome().is_ok_and(|o| o.had_cookie)
            {
                remove_cookies(session, &mut response);
            }
        }
    }
    if decision.vary {
        add_vary_cookie(&mut response);
    }
    response
}

/// Removes the session cookie and every chunk of it the request carried.
fn remove_cookies(session: &Locked<'_>, response: &mut Response<Body>) {
    let config = session.config();
    let name = &config.cookie_name;
    jar::remove(response.headers_mut(), config, name);
    for n in session.chunk_numbers() {
        jar::remove(response.headers_mut(), config, &format!("{name}.{n}"));
    }
}

/// Seals the session into the response's cookies.
fn seal(
    session: &mut Locked<'_>,
    codec: &dyn CookieCodec,
    response: &mut Response<Body>,
    now: OffsetDateTime,
) -> Result<(), Error> {
    let mut record = session.take_record(now)?;
    let config = session.config();
    let name = &config.cookie_name;
    let issued_at = session.issued_at(now);
    // Never a deadline past the session's absolute end: the cookie's
    // `Max-Age` follows the deadline sealed.
    let end = absolute_end(issued_at, config);
    record.expires_at = record.expires_at.min(end);
    let sealed = codec.seal(name, &record, issued_at);
    session.restore(record);
    let config = session.config();
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
    let lifetime = match session.lifetime(now) {
        jar::Lifetime::For(age, at) => {
            // In whole seconds, rounded up as the deadline is: a cookie
            // with time left never gets `Max-Age=0`.
            let left = end - now;
            let secs = left.whole_seconds() + i64::from(left.subsec_nanoseconds() > 0);
            let left = std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0));
            jar::Lifetime::For(age.min(left), at)
        }
        other => other,
    };
    let pieces = parts.len() - 1;
    let headers = response.headers_mut();
    for (cookie_name, cookie_value) in parts {
        jar::set(headers, config, &cookie_name, &cookie_value, lifetime);
    }
    // Pieces of an earlier, longer value would otherwise linger.
    for n in session.chunk_numbers().iter().filter(|n| **n > pieces) {
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

/// The response to a request whose handler hit a failed store call: the
/// handler's own when it said it dealt with it
/// ([`Session::failure_handled`](crate::Session::failure_handled)) or
/// answered a 5xx of its own, with `Vary: Cookie` since it read the
/// session; else the layer's. Nothing is written either way.
fn failed(session: &Locked<'_>, mut response: Response<Body>, kind: ErrorKind) -> Response<Body> {
    let own = response.extensions().get::<OwnResponse>().is_some();
    if !own && (session.failure_was_handled() || response.status().is_server_error()) {
        add_vary_cookie(&mut response);
        return response;
    }
    error_response(session, kind)
}

/// Marks a response that [`failure`] made (for a [`crate::Error`] returned
/// by a handler too), so that the layer knows it is its own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OwnResponse(pub(crate) ErrorKind);

/// The response for a failed session: the error's status, and a removal
/// cookie when another request ended the session (so it is not brought
/// back, and the browser drops a dead cookie).
fn error_response(session: &Locked<'_>, kind: ErrorKind) -> Response<Body> {
    let mut response = failure(kind, session.config());
    if kind == ErrorKind::Interrupted {
        remove_cookies(session, &mut response);
    }
    response
}

/// The response for a session failure: a status and a short plain body, or,
/// for a store that is unavailable, the body the application set
/// ([`SessionConfig::unavailable_response`]).
pub(crate) fn failure(kind: ErrorKind, config: &SessionConfig) -> Response<Body> {
    if let (ErrorKind::Backend | ErrorKind::Timeout, Some((content_type, body))) =
        (kind, &config.unavailable_response)
    {
        return failure_response(
            kind,
            StatusCode::SERVICE_UNAVAILABLE,
            content_type.clone(),
            Body::from(body.clone()),
        );
    }
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
    failure_response(
        kind,
        status,
        HeaderValue::from_static("text/plain; charset=utf-8"),
        Body::from(body),
    )
}

fn failure_response(
    kind: ErrorKind,
    status: StatusCode,
    content_type: HeaderValue,
    body: Body,
) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.extensions_mut().insert(OwnResponse(kind));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(VARY, HeaderValue::from_static("Cookie"));
    response
}

/// The response made of a [`crate::Error`] a handler returned, with the
/// body the application set for the layer's 503; any other response as it
/// is.
pub(crate) fn own_page(config: &SessionConfig, response: Response<Body>) -> Response<Body> {
    match response.extensions().get::<OwnResponse>() {
        Some(&OwnResponse(kind @ (ErrorKind::Backend | ErrorKind::Timeout)))
            if config.unavailable_response.is_some() =>
        {
            failure(kind, config)
        }
        _ => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::convert::Infallible;

    use axum::response::IntoResponse;
    use cloakroom_core::{Call, Record, SessionStore, StoreKey};
    use http::Request;
    use http::header::{COOKIE, SET_COOKIE};
    use http_body_util::BodyExt;
    use tower::{Layer as _, ServiceExt as _};

    use crate::{Session, SessionLayer};

    /// A store that is down.
    #[derive(Debug)]
    struct Down;

    fn down<'a, T>() -> Call<'a, T> {
        Call::ready(Err(Error::new(ErrorKind::Backend, "down")))
    }

    impl SessionStore for Down {
        fn engine(&self) -> &'static str {
            "down"
        }
        fn load<'a>(&'a self, _: &'a StoreKey) -> Call<'a, Option<Record>> {
            down()
        }
        fn create<'a>(&'a self, _: &'a StoreKey, _: &'a Record) -> Call<'a, bool> {
            down()
        }
        fn update<'a>(&'a self, _: &'a StoreKey, _: &'a Record) -> Call<'a, bool> {
            down()
        }
        fn touch<'a>(&'a self, _: &'a StoreKey, _: &'a Record) -> Call<'a, bool> {
            down()
        }
        fn delete<'a>(&'a self, _: &'a StoreKey) -> Call<'a, ()> {
            down()
        }
    }

    /// What the handler does once its session read failed.
    #[derive(Clone, Copy, Debug)]
    enum Handler {
        Ignores,
        Handles,
        Answers502,
        ReturnsTheError,
    }

    /// One request with a well-formed session cookie through a layer on a
    /// store that is down: the status, the content type and the body.
    async fn run(layer: SessionLayer, handler: Handler) -> (StatusCode, String, String) {
        let service = layer.layer(tower::service_fn(
            move |request: Request<Body>| async move {
                let session = request
                    .extensions()
                    .get::<Session>()
                    .cloned()
                    .expect("layer");
                let read = session.get::<String>("user").await;
                let response = match (handler, read) {
                    (_, Ok(_)) => "read".into_response(),
                    (Handler::Ignores, Err(_)) => "ignored".into_response(),
                    (Handler::Handles, Err(_)) => {
                        session.failure_handled();
                        "guest page".into_response()
                    }
                    (Handler::Answers502, Err(_)) => {
                        (StatusCode::BAD_GATEWAY, "my own 502").into_response()
                    }
                    (Handler::ReturnsTheError, Err(err)) => err.into_response(),
                };
                Ok::<_, Infallible>(response)
            },
        ));
        let id = Id::generate().expect("randomness");
        let request = Request::builder()
            .header(COOKIE, format!("sessionid={}", id.expose()))
            .body(Body::empty())
            .expect("request");
        let response = service.oneshot(request).await.expect("infallible");
        assert!(response.headers().get(SET_COOKIE).is_none(), "nothing set");
        assert_eq!(response.headers().get(VARY).unwrap(), "Cookie");
        let status = response.status();
        let content_type = response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[tokio::test]
    async fn a_handler_that_handles_a_failure_keeps_its_response() {
        let plain = "text/plain; charset=utf-8";
        let layer = SessionLayer::new(Engine::store(Down));
        let unavailable = "session store unavailable, try again\n";
        let cases = [
            (
                Handler::Ignores,
                StatusCode::SERVICE_UNAVAILABLE,
                unavailable,
            ),
            (Handler::Handles, StatusCode::OK, "guest page"),
            (Handler::Answers502, StatusCode::BAD_GATEWAY, "my own 502"),
            (
                Handler::ReturnsTheError,
                StatusCode::SERVICE_UNAVAILABLE,
                unavailable,
            ),
        ];
        for (handler, status, body) in cases {
            let got = run(layer.clone(), handler).await;
            assert_eq!((got.0, got.2.as_str()), (status, body), "{handler:?}");
            assert_eq!(got.1, plain, "{handler:?}");
        }

        let html = "text/html; charset=utf-8";
        let layer = layer.with_unavailable_response(html, "<p>back soon");
        for handler in [Handler::Ignores, Handler::ReturnsTheError] {
            let got = run(layer.clone(), handler).await;
            let expected = (
                StatusCode::SERVICE_UNAVAILABLE,
                html.to_owned(),
                "<p>back soon".to_owned(),
            );
            assert_eq!(got, expected, "{handler:?}");
        }
        let got = run(layer, Handler::Handles).await;
        assert_eq!((got.0, got.2.as_str()), (StatusCode::OK, "guest page"));
    }

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
}
