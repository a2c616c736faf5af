//! After the handler: the session's [`Outcome`](crate::plan::Outcome) goes
//! to [`plan::decide`], and the plan is carried out: store calls through
//! [`store`](crate::store), cookies through [`jar`], failures turned into
//! responses here.
//!
//! A plan that needs no store call (nothing, a removal cookie, a sealed
//! cookie) is carried out by [`now`], without a future; one that does is
//! carried out by [`later`], which the service boxes.

use axum::body::Body;
use cloakroom_core::{CookieCodec, Error, ErrorKind, Id};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, Entry, VARY};
use http::{HeaderValue, Response, StatusCode};
use time::OffsetDateTime;

use crate::Engine;
use crate::jar;
use crate::plan::{self, Decision, Plan};
use crate::session::Locked;
use crate::store;

/// What [`now`] did with the response.
pub(crate) enum Now {
    /// The plan is carried out: the final response.
    Done(Response<Body>),
    /// The plan needs store calls: the response for [`later`].
    Later(Response<Body>),
}

/// Carries out the plan for `session` if it needs no store call; gives the
/// response back otherwise, for [`later`].
pub(crate) fn now(session: &mut Locked<'_>, response: Response<Body>) -> Now {
    let decision = match decide(session, &response) {
        Ok(decision) => decision,
        Err(kind) => return Now::Done(error_response(session, kind)),
    };
    match (decision.plan, session.engine()) {
        (Plan::Nothing | Plan::RemoveCookie, _) => {
            Now::Done(respond(session, response, decision, Ok(None)))
        }
        (Plan::Seal, Engine::Cookie(codec)) => {
            let mut response = response;
            let sealed = seal(session, codec.as_ref(), &mut response);
            Now::Done(respond(session, response, decision, sealed.map(|()| None)))
        }
        _ => Now::Later(response),
    }
}

/// Carries out the plan for `session`, store calls included.
pub(crate) async fn later(session: &mut Locked<'_>, response: Response<Body>) -> Response<Body> {
    let mut decision = match decide(session, &response) {
        Ok(decision) => decision,
        Err(kind) => return error_response(session, kind),
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
    let mut response = response;
    let saved = match session.engine() {
        Engine::Store(store) => {
            let config = session.config();
            store::save(
                store.as_ref(),
                config,
                session,
                decision.plan,
                OffsetDateTime::now_utc(),
            )
            .await
        }
        Engine::Cookie(codec) if decision.plan == Plan::Seal => {
            seal(session, codec.as_ref(), &mut response).map(|()| None)
        }
        Engine::Cookie(_) => Ok(None),
    };
    respond(session, response, decision, saved)
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
) -> Response<Body> {
    let config = session.config();
    match saved {
        Err(err) => return error_response(session, err.kind()),
        Ok(Some(id)) => {
            let lifetime = session.lifetime(OffsetDateTime::now_utc());
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
) -> Result<(), Error> {
    let now = OffsetDateTime::now_utc();
    let record = session.take_record(now)?;
    let config = session.config();
    let name = &config.cookie_name;
    let sealed = codec.seal(name, &record);
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
    let lifetime = session.lifetime(now);
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

/// The response for a failed session: the error's status, and a removal
/// cookie when another request ended the session (so it is not brought
/// back, and the browser drops a dead cookie).
fn error_response(session: &Locked<'_>, kind: ErrorKind) -> Response<Body> {
    let mut response = failure(kind);
    if kind == ErrorKind::Interrupted {
        remove_cookies(session, &mut response);
    }
    response
}

/// The response for a session failure: a status and a short plain body.
pub(crate) fn failure(kind: ErrorKind) -> Response<Body> {
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
    use super::*;

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
