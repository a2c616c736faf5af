//! Fuzzes what the layer does with a request's `Cookie` header: splitting it,
//! finding the session cookie and its numbered pieces, checking the id's
//! form, and opening sealed values, on a server-side engine and on a cookie
//! engine. The handler reads the session. Whatever the bytes, the answer must
//! not be a 5xx and nothing may panic.

#![no_main]

use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use cloakroom::{Engine, Session, SessionLayer};
use http::{HeaderValue, Request};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Apps {
    runtime: tokio::runtime::Runtime,
    store: Router,
    cookie: Router,
}

fn app(engine: Engine) -> Router {
    async fn read(session: Session) -> Result<String, cloakroom::Error> {
        Ok(session.get::<String>("user").await?.unwrap_or_default())
    }
    Router::new().route("/", get(read)).layer(SessionLayer::new(engine))
}

fn apps() -> &'static Apps {
    static APPS: OnceLock<Apps> = OnceLock::new();
    APPS.get_or_init(|| {
        let secret = cloakroom_cookie::Secret::new("the fuzzing secret, thirty-two bytes or more")
            .expect("long enough");
        Apps {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a runtime"),
            store: app(Engine::store(cloakroom::memory::MemoryStore::new(1000))),
            cookie: app(Engine::cookie(cloakroom_cookie::SignedCookies::new(&secret))),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    // Only bytes a header value may hold reach a real server.
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let apps = apps();
    for router in [&apps.store, &apps.cookie] {
        let mut request = Request::get("/").body(Body::empty()).expect("a request");
        request.headers_mut().insert(http::header::COOKIE, value.clone());
        let response = apps
            .runtime
            .block_on(router.clone().oneshot(request))
            .expect("infallible");
        assert!(!response.status().is_server_error(), "{:?}", response.status());
    }
});
