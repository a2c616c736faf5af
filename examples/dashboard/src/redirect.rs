//! Sending a request without a logged-in session to the login page, and
//! back to the page it asked for afterwards (the `next` parameter), as
//! Horizon does.
//!
//! `next` is taken only as a path on this site: one `/`, then anything but
//! a second `/` or a `\` (browsers read `//host` and `/\host` as another
//! host), visible ASCII only (a tab or a newline is dropped by browsers, so
//! `/<tab>/host` would become `//host`). Anything else is ignored: the user
//! lands on the overview, never on another site (an open redirect).

use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, SameSite};

/// Where the login page sends a user when `next` is missing or refused.
pub(crate) const HOME: &str = "/";

/// The longest `next` taken: far above the dashboard's paths, small enough
/// to keep a crafted one out of the headers.
const MAX_NEXT: usize = 2048;

/// The `reason` the login page is told of when the session was lost.
pub(crate) const EXPIRED: &str = "expired";

/// What the login page says for [`EXPIRED`].
pub(crate) const EXPIRED_MESSAGE: &str = "Your session has expired, please sign in again";

/// Where signing out leads: the login page, saying so.
pub(crate) const SIGNED_OUT_PAGE: &str = "/auth/login?reason=signed_out";

/// What the login page says for its `reason` parameter: a fixed sentence
/// for each known reason, never the parameter's own text.
pub(crate) fn reason_message(reason: &str) -> Option<&'static str> {
    match reason {
        EXPIRED => Some(EXPIRED_MESSAGE),
        "signed_out" => Some("You have signed out."),
        _ => None,
    }
}

/// `next` if it is a path on this site, else `None`.
pub(crate) fn local_path(next: &str) -> Option<&str> {
    let mut bytes = next.bytes();
    let local = next.len() <= MAX_NEXT
        && bytes.next() == Some(b'/')
        && !matches!(bytes.next(), Some(b'/' | b'\\'))
        && next.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    local.then_some(next)
}

/// Where to go after a login: `next` if local, else the overview.
pub(crate) fn after_login(next: &str) -> &str {
    local_path(next).unwrap_or(HOME)
}

/// A cookie that says "this browser signed in", set at login, without
/// `Max-Age` (it ends with the browser) and removed at sign-out. It holds
/// nothing secret and opens nothing: it only tells a session that expired
/// (whose cookie the browser may have dropped already, at its `Max-Age`)
/// from a first visit, so that only the former is told "Your session has
/// expired".
pub(crate) const SIGNED_IN_COOKIE: &str = "dashboard_signed_in";

/// The `Set-Cookie` value that sets (`on`) or removes [`SIGNED_IN_COOKIE`].
pub(crate) fn signed_in_cookie(on: bool, secure: bool) -> HeaderValue {
    let cookie = Cookie::build((SIGNED_IN_COOKIE, if on { "1" } else { "" }))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure);
    let cookie = if on {
        cookie.build()
    } else {
        cookie.removal().build()
    };
    // A fixed name and value: always a valid header.
    HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The login page, told to come back to `next` (when local, and not the
/// overview, which is where it goes anyway) and, when `expired`, to say the
/// session expired (once: the [`SIGNED_IN_COOKIE`] goes).
pub(crate) fn to_login(next: &str, expired: bool, secure: bool) -> Response {
    let mut response = login_redirect(next, expired);
    if expired {
        response
            .headers_mut()
            .append(SET_COOKIE, signed_in_cookie(false, secure));
    }
    response
}

fn login_redirect(next: &str, expired: bool) -> Response {
    let mut query: Vec<String> = Vec::new();
    if let Some(next) = local_path(next).filter(|n| *n != HOME) {
        query.push(format!("next={}", encode(next)));
    }
    if expired {
        query.push(format!("reason={EXPIRED}"));
    }
    if query.is_empty() {
        Redirect::to("/auth/login").into_response()
    } else {
        Redirect::to(&format!("/auth/login?{}", query.join("&"))).into_response()
    }
}

/// Whether the request came with a cookie called `name`: a browser that
/// had a session, which has expired or ended, if no one is logged in.
pub(crate) fn carries_cookie(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .any(|pair| pair.trim().split_once('=').is_some_and(|(n, _)| n == name))
}

/// Percent-encodes a query value: everything but unreserved characters
/// and `/`.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use axum::http::header::LOCATION;

    use super::*;

    #[test]
    fn only_local_paths_are_taken() {
        for ok in [
            "/",
            "/?tab=services",
            "/project/x",
            "/a%2F%2Fb",
            "/auth/login",
        ] {
            assert_eq!(local_path(ok), Some(ok), "{ok}");
        }
        for refused in [
            "",
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/a\\b",
            "http://evil.example/",
            "https:evil.example",
            "javascript:alert(1)",
            "evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /x",
            "/é",
        ] {
            assert_eq!(local_path(refused), None, "{refused:?}");
        }
        assert_eq!(local_path(&format!("/{}", "a".repeat(MAX_NEXT))), None);
        assert_eq!(after_login("//evil.example"), "/");
        assert_eq!(after_login("/?x=1"), "/?x=1");
    }

    fn location(response: &Response) -> &str {
        response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .expect("a Location")
    }

    #[test]
    fn the_login_page_is_told_where_to_come_back_to() {
        assert_eq!(location(&to_login("/", false, false)), "/auth/login");
        assert_eq!(
            location(&to_login("/", true, false)),
            "/auth/login?reason=expired"
        );
        assert_eq!(
            location(&to_login("/?tab=a b&c=d", true, false)),
            "/auth/login?reason=expired"
        );
        assert_eq!(
            location(&to_login("/?tab=x&c=d", false, false)),
            "/auth/login?next=/%3Ftab%3Dx%26c%3Dd"
        );
        assert_eq!(
            location(&to_login("//evil", true, false)),
            "/auth/login?reason=expired"
        );
    }

    #[test]
    fn the_session_cookie_is_found_by_its_whole_name() {
        let mut headers = HeaderMap::new();
        assert!(!carries_cookie(&headers, "sessionid"));
        headers.append(COOKIE, HeaderValue::from_static("a=1; xsessionid=2"));
        assert!(!carries_cookie(&headers, "sessionid"));
        headers.append(COOKIE, HeaderValue::from_static("b=3;sessionid=abc"));
        assert!(carries_cookie(&headers, "sessionid"));
    }
}

#[cfg(test)]
mod signed_in_tests {
    use axum::http::header::LOCATION;

    use super::*;

    #[test]
    fn the_signed_in_cookie_ends_with_the_browser_and_goes_on_expiry() {
        let on = signed_in_cookie(true, true);
        let on = on.to_str().expect("ASCII");
        assert!(on.starts_with("dashboard_signed_in=1"), "{on}");
        assert!(
            on.contains("HttpOnly") && on.contains("Secure") && on.contains("Path=/"),
            "{on}"
        );
        assert!(!on.contains("Max-Age") && !on.contains("Expires"), "{on}");
        let expired = to_login("/", true, false);
        let removal: Vec<&str> = expired
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(removal.len(), 1, "{removal:?}");
        assert!(removal[0].contains("Max-Age=0"), "{removal:?}");
        assert!(
            to_login("/", false, false)
                .headers()
                .get(SET_COOKIE)
                .is_none()
        );
        assert_eq!(
            expired
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok()),
            Some("/auth/login?reason=expired")
        );
    }
}
