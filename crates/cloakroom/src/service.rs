//! The [`SessionService`]: builds the request's [`Session`], runs the inner
//! service, then writes the session back (Django's `SessionMiddleware`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use cloakroom_core::BoxError;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::Service;

use crate::Engine;
use crate::config::SessionConfig;
use crate::finish;
use crate::layer::Check;
use crate::session::{CookieHeaders, Session};

/// The middleware made by [`SessionLayer`](crate::SessionLayer).
#[derive(Clone)]
pub struct SessionService<S> {
    pub(crate) inner: S,
    pub(crate) engine: Engine,
    pub(crate) config: Arc<SessionConfig>,
    pub(crate) check: Option<Check>,
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
            self.check.clone(),
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
        if let Some(finishing) = this.finishing.as_mut() {
            return finishing.as_mut().poll(cx).map(Ok);
        }
        let response = std::task::ready!(this.inner.as_mut().poll(cx))?.map(Body::new);
        let Some(session) = this.session.take() else {
            // Only reached if polled after completion, which futures need
            // not support; pass the response on untouched.
            return Poll::Ready(Ok(response));
        };
        // A `cloakroom::Error` the handler returned gets the application's
        // own 503 body, if it set one (checked first: most set none, and
        // the response is then not moved twice).
        let mut response = response;
        if session.config().unavailable_response.is_some() {
            response = finish::own_page(session.config(), response);
        }
        // A session nobody used needs nothing, unless every request with a
        // session cookie is to refresh it.
        if !session.used() && !session.saves_every_request() {
            return Poll::Ready(Ok(response));
        }
        // Uncontended (the handler is done with the session) unless it
        // handed the session to a task that still runs.
        let response = match session.try_lock() {
            Some(mut locked) => match finish::now(&mut locked, response) {
                finish::Now::Done(response) => return Poll::Ready(Ok(response)),
                finish::Now::Later(response) => response,
            },
            None => response,
        };
        let finishing = this.finishing.insert(Box::pin(async move {
            let mut locked = session.lock_for_save().await;
            finish::later(&mut locked, response).await
        }));
        finishing.as_mut().poll(cx).map(Ok)
    }
}
