//! A client that carries cookies between requests, as a browser does, and
//! sends them through a real `Router` and `SessionLayer`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::header::{COOKIE, SET_COOKIE, VARY};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::app::{Gate, router};
use cloakroom::SessionLayer;

/// One `Set-Cookie`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCookie {
    /// Cookie name.
    pub name: String,
    /// Cookie value.
    pub value: String,
    /// Attributes by lower-case name (`max-age`, `path`, `httponly`, ...);
    /// flags have an empty value.
    pub attributes: BTreeMap<String, String>,
}

impl SetCookie {
    fn parse(header: &str) -> Self {
        let mut parts = header.split(';').map(str::trim);
        let (name, value) = parts
            .next()
            .and_then(|nv| nv.split_once('='))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .unwrap_or_default();
        let attributes = parts
            .map(|a| match a.split_once('=') {
                Some((k, v)) => (k.to_ascii_lowercase(), v.to_owned()),
                None => (a.to_ascii_lowercase(), String::new()),
            })
            .collect();
        Self {
            name,
            value,
            attributes,
        }
    }

    /// True for a cookie that tells the browser to drop it.
    pub fn is_removal(&self) -> bool {
        self.attributes.get("max-age").is_some_and(|a| a == "0")
    }

    /// The `Max-Age` in seconds, if any.
    pub fn max_age(&self) -> Option<i64> {
        self.attributes.get("max-age").and_then(|a| a.parse().ok())
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body as text.
    pub body: String,
    /// The `Set-Cookie` headers, parsed.
    pub set_cookies: Vec<SetCookie>,
}

impl Reply {
    /// The `Set-Cookie` for `name`, if any.
    pub fn cookie(&self, name: &str) -> Option<&SetCookie> {
        self.set_cookies.iter().find(|c| c.name == name)
    }

    /// True if `Vary` names `Cookie`.
    pub fn varies_on_cookie(&self) -> bool {
        self.headers
            .get_all(VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("cookie"))
            })
    }
}

/// A browser stand-in: a cookie jar and an app.
#[derive(Debug, Clone)]
pub struct Client {
    app: Router,
    /// The cookies the client holds, by name.
    pub jar: BTreeMap<String, String>,
}

impl Client {
    /// A client of the test app behind `layer`.
    pub fn new(layer: SessionLayer, gate: Arc<Gate>) -> Self {
        Self::of(router(layer, gate))
    }

    /// A client of any router.
    pub fn of(app: Router) -> Self {
        Self {
            app,
            jar: BTreeMap::new(),
        }
    }

    /// A second browser with a copy of this one's cookies (to replay them).
    pub fn replay(&self) -> Self {
        self.clone()
    }

    /// Sends `GET path` with the jar's cookies and keeps what the response sets.
    pub async fn get(&mut self, path: &str) -> Reply {
        let mut request = Request::get(path);
        if !self.jar.is_empty() {
            let line: Vec<String> = self.jar.iter().map(|(n, v)| format!("{n}={v}")).collect();
            request = request.header(COOKIE, line.join("; "));
        }
        let reply = self
            .send(request.body(Body::empty()).expect("valid request"))
            .await;
        for c in &reply.set_cookies {
            if c.is_removal() {
                self.jar.remove(&c.name);
            } else {
                self.jar.insert(c.name.clone(), c.value.clone());
            }
        }
        reply
    }

    /// Sends `GET path` with a raw `Cookie` header (which may be invalid
    /// UTF-8) and nothing from the jar.
    pub async fn get_with_raw_cookie(&self, path: &str, cookie: &[u8]) -> Reply {
        let mut request = Request::get(path)
            .body(Body::empty())
            .expect("valid request");
        request.headers_mut().insert(
            COOKIE,
            HeaderValue::from_bytes(cookie).expect("a header value"),
        );
        self.send(request).await
    }

    /// Sends any request and reads the response.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .expect("infallible router");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        let set_cookies = parts
            .headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(SetCookie::parse)
            .collect();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            set_cookies,
        }
    }
}
