//! The minijinja templates (compiled into the binary from `templates/`) and
//! the headers every page gets beyond those of `layers.rs`.
//!
//! Template names end in `.html`, so minijinja escapes every value for HTML
//! unless a template marks it safe, which none does.

use std::sync::LazyLock;

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use minijinja::{Environment, Value, context};

use crate::error::Failure;

const TEMPLATES: [(&str, &str); 4] = [
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("overview.html", include_str!("../templates/overview.html")),
    ("error.html", include_str!("../templates/error.html")),
];

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in TEMPLATES {
        // The sources are part of the binary; the tests render every one of
        // them, so a syntax error cannot reach a user.
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("template {name} does not parse: {e:#}"));
    }
    env
});

/// The one inline script the pages carry (in `base.html`), as the CSP's
/// `script-src` names it: `'sha256-...'` of its exact text.
pub(crate) fn script_source() -> String {
    let base = include_str!("../templates/base.html");
    let script = base
        .split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map_or("", |(script, _)| script);
    let hash = ring::digest::digest(&ring::digest::SHA256, script.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(hash.as_ref())
    )
}

/// Renders `name` with `ctx` into a page with `status`.
pub(crate) fn page(status: StatusCode, name: &str, ctx: Value) -> Result<Response, Failure> {
    let html = ENV.get_template(name)?.render(ctx)?;
    Ok(with_headers(status, html))
}

/// An error page; plain text if even that cannot be rendered.
pub(crate) fn error_page(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    match ENV
        .get_template("error.html")
        .and_then(|t| t.render(context! { status => status.as_u16(), title, message }))
    {
        Ok(html) => with_headers(status, html),
        Err(err) => {
            tracing::error!(
                error = err.to_string().as_str(),
                "error page does not render"
            );
            (status, message.to_owned()).into_response()
        }
    }
}

fn with_headers(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Pages show session data: no cache may keep them, and the back button
    // after a logout asks the server again instead of showing a stored copy.
    // The security headers (CSP, X-Frame-Options, ...) are added to every
    // answer by the layers in `layers.rs`.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_escapes() {
        for (name, _) in TEMPLATES {
            assert!(ENV.get_template(name).is_ok(), "{name}");
        }
        let html = ENV
            .get_template("error.html")
            .and_then(|t| {
                t.render(context! { status => 400, title => "Bad", message => "<script>&" })
            })
            .expect("renders");
        assert!(html.contains("&lt;script&gt;&amp;"), "{html}");
        // The page's own script only, whose hash the CSP carries.
        assert_eq!(html.matches("<script>").count(), 1, "{html}");
        let rendered = html
            .split_once("<script>")
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map(|(script, _)| script)
            .expect("the script");
        let hash = ring::digest::digest(&ring::digest::SHA256, rendered.as_bytes());
        assert_eq!(
            script_source(),
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(hash.as_ref())
            ),
            "the script renders as written"
        );
    }
}
