//! The tower-http layers around every route: request tracing, security
//! headers, compression, error pages for error answers that come without a
//! body, a panic turned into a 500 page, and a request timeout.
//!
//! From the outside in, as a request meets them:
//!
//! 1. `TraceLayer`: one span per request (method, URI) and one event per
//!    answer with its status and latency, so the log shows what the user
//!    saw, error pages and timeouts included.
//! 2. The security headers, on every answer (pages, redirects, `/health`,
//!    error pages): CSP with `frame-ancestors 'none'`, `X-Frame-Options:
//!    DENY` for browsers without CSP, `X-Content-Type-Options: nosniff`,
//!    `Referrer-Policy: same-origin`.
//! 3. Compression (gzip), when the browser asks for it. Pages carry CSRF
//!    tokens and echo what users type, so each page gets its tokens masked
//!    afresh (see `auth::mask`): compressed sizes then tell an eavesdropper
//!    nothing about the token (the BREACH attack).
//! 4. Error pages: a 4xx or 5xx answer that has no body of its own (axum's
//!    404 and 405, the timeout's 503) gets the dashboard's error page, with
//!    its headers (`Allow`, ...) kept.
//! 5. `CatchPanicLayer`: a handler that panics is answered with the 500
//!    page, logged, instead of a dropped connection.
//! 6. `TimeoutLayer`: a request not answered within
//!    `DASHBOARD_REQUEST_TIMEOUT` is answered 503 (the error page says to
//!    try again). Its session is not saved.

use std::any::Any;
use std::time::Duration;

use axum::Router;
use axum::http::header::{
    CONTENT_LENGTH, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, Request, Response, StatusCode};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::templates;

/// Every answer's Content-Security-Policy: nothing but the page's own
/// inline styles and its one script (by its hash), forms that post only
/// here, and no framing.
fn content_security() -> HeaderValue {
    let policy = format!(
        "default-src 'none'; script-src {}; style-src 'unsafe-inline'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        templates::script_source()
    );
    HeaderValue::from_str(&policy).unwrap_or_else(|_| {
        // Base64 and ASCII only: cannot happen. Without the script's hash,
        // pages keep their times in UTC.
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        )
    })
}

/// `router` inside the layers above, outermost last.
pub(crate) fn wrap(router: Router, request_timeout: Duration) -> Router {
    router
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            request_timeout,
        ))
        .layer(CatchPanicLayer::custom(panic_page))
        .layer(axum::middleware::map_response(error_page_for_bare_errors))
        .layer(CompressionLayer::new())
        .layer(SetResponseHeaderLayer::overriding(
            CONTENT_SECURITY_POLICY,
            content_security(),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(log_answer)
                // `log_answer` logs a 5xx as a warning already.
                .on_failure(()),
        )
}

/// The span each request's events are logged in: its method and URI, as
/// strings (see `logging`).
fn request_span<B>(request: &Request<B>) -> Span {
    tracing::info_span!(
        "request",
        method = request.method().as_str(),
        uri = request.uri().to_string().as_str(),
    )
}

/// One event per answer: its status and how long it took, in microseconds;
/// a warning for a 5xx.
fn log_answer<B>(response: &Response<B>, latency: Duration, _span: &Span) {
    let status = response.status().as_u16();
    let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    if response.status().is_server_error() {
        tracing::warn!(status, latency_us, "answered");
    } else {
        tracing::info!(status, latency_us, "answered");
    }
}

/// The 500 page for a handler that panicked; the panic's message goes to
/// the log, not to the user.
fn panic_page(panic: Box<dyn Any + Send + 'static>) -> axum::response::Response {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)");
    tracing::error!(panic = message, "handler panicked");
    templates::error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong on our side.",
    )
}

/// What the error page says for an error answer that came without a body.
fn bare_error_message(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "There is no page at this address.",
        StatusCode::METHOD_NOT_ALLOWED => {
            "This address does not take that kind of request. Use the dashboard's \
             links and buttons."
        }
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => {
            "The dashboard took too long to answer. Try again in a moment."
        }
        s if s.is_server_error() => "Something went wrong on our side.",
        _ => "The request could not be served.",
    }
}

/// The error page in place of an empty 4xx or 5xx body; its headers kept.
async fn error_page_for_bare_errors(
    response: axum::response::Response,
) -> axum::response::Response {
    let status = response.status();
    let bare = (status.is_client_error() || status.is_server_error())
        && !response.headers().contains_key(CONTENT_TYPE);
    if !bare {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let (page, body) = templates::error_page(status, bare_error_message(status)).into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.extend(page.headers);
    axum::response::Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {

    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;
    use crate::logging::Captured;

    /// Each answer is logged with its status and latency, inside a span that
    /// names the request.
    #[tokio::test]
    async fn answers_are_logged_with_status_and_latency() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let app = wrap(
            Router::new().route("/here", get(|| async { "hi" })),
            Duration::from_secs(30),
        );
        for path in ["/here", "/nope"] {
            app.clone()
                .oneshot(Request::get(path).body(Body::empty()).expect("request"))
                .await
                .expect("infallible");
        }
        let log = captured.text();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 2, "{log}");
        for (line, (path, status)) in lines.iter().zip([("/here", 200), ("/nope", 404)]) {
            assert!(
                line.contains(&format!("request{{method=\"GET\" uri=\"{path}\"}}")),
                "{line}"
            );
            assert!(
                line.contains(&format!("status={status} latency_us=")),
                "{line}"
            );
            assert!(line.contains("answered"), "{line}");
        }
    }

    #[test]
    fn every_bare_error_has_a_message() {
        for code in [400, 404, 405, 408, 413, 500, 502, 503] {
            let status = StatusCode::from_u16(code).expect("a status");
            assert!(!bare_error_message(status).is_empty(), "{code}");
        }
    }
}
