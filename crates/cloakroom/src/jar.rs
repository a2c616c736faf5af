//! Reading the session cookie from a request and writing `Set-Cookie`s,
//! including the split of long cookie-engine values over numbered cookies.
//!
//! A value that fits one cookie is sent as `NAME=value`. A longer one is sent
//! as `NAME=chunks-N` plus `NAME.1` … `NAME.N` holding the pieces in order
//! (the scheme ASP.NET Core uses), each piece at most [`CHUNK_BYTES`]. A
//! missing piece makes the whole value unreadable, so the session starts
//! fresh instead of being misread.

use std::time::Duration;

use cookie::{Cookie, SameSite};
use http::header::SET_COOKIE;
use http::{HeaderMap, HeaderValue};

use crate::config::SessionConfig;

/// The largest value put in one cookie: browsers keep name and value of one
/// cookie within 4096 bytes, and the name and `.N` suffix need room.
pub(crate) const CHUNK_BYTES: usize = 4000;
/// The most pieces a value is read from, whatever the header claims.
const MAX_CHUNKS: usize = 64;
const CHUNKS_PREFIX: &str = "chunks-";

/// The session cookies a request carried.
#[derive(Debug, Default)]
pub(crate) struct RequestCookies {
    /// The value of `NAME`, if present (the first one, if repeated).
    pub(crate) main: Option<String>,
    /// The numbers of the `NAME.N` cookies present, so stale ones can be removed.
    pub(crate) chunk_numbers: Vec<usize>,
    pieces: Vec<(usize, String)>,
}

impl RequestCookies {
    /// Collects `NAME` and `NAME.N` from `Cookie` header values. Values that
    /// are not visible ASCII and pairs without `=` are skipped, never an
    /// error.
    pub(crate) fn read<'a>(headers: impl IntoIterator<Item = &'a HeaderValue>, name: &str) -> Self {
        let mut found = Self::default();
        for header in headers {
            let Ok(text) = header.to_str() else { continue };
            for (cookie_name, value) in pairs(text) {
                if cookie_name == name {
                    found.main.get_or_insert_with(|| value.to_owned());
                } else if let Some(n) = cookie_name
                    .strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|n| (1..=MAX_CHUNKS).contains(n) && !found.chunk_numbers.contains(n))
                {
                    found.chunk_numbers.push(n);
                    found.pieces.push((n, value.to_owned()));
                }
            }
        }
        found
    }

    /// The whole value: `NAME` itself, or the pieces it announces joined.
    /// `None` when a piece is missing or the announcement is malformed.
    pub(crate) fn joined(&self) -> Option<String> {
        let main = self.main.as_deref()?;
        let Some(count) = main.strip_prefix(CHUNKS_PREFIX) else {
            return Some(main.to_owned());
        };
        let count: usize = count
            .parse()
            .ok()
            .filter(|n| (1..=MAX_CHUNKS).contains(n))?;
        let mut value = String::new();
        for n in 1..=count {
            let (_, piece) = self.pieces.iter().find(|(k, _)| *k == n)?;
            value.push_str(piece);
        }
        Some(value)
    }
}

/// The `name=value` pairs of one `Cookie` header (RFC 6265, section 5.4),
/// names and values trimmed and a value's surrounding double quotes removed.
fn pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        let name = name.trim();
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        (!name.is_empty()).then_some((name, value))
    })
}

/// Builds the `Set-Cookie` for `name` with the configured attributes.
/// `max_age` of `None` makes a browser-session cookie.
pub(crate) fn build<'c>(
    config: &'c SessionConfig,
    name: String,
    value: String,
    max_age: Option<Duration>,
) -> Cookie<'c> {
    let mut cookie = Cookie::build((name, value))
        .path(config.cookie_path.as_str())
        .http_only(config.cookie_http_only)
        .secure(config.cookie_secure);
    if let Some(domain) = &config.cookie_domain {
        cookie = cookie.domain(domain.as_str());
    }
    if let Some(same_site) = config.cookie_same_site {
        cookie = cookie.same_site(same_site);
    }
    if let Some(age) = max_age {
        let secs = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
        let age = time::Duration::seconds(secs);
        // Expires as well as Max-Age, as Django sends: old clients know only
        // Expires.
        cookie = cookie
            .max_age(age)
            .expires(time::OffsetDateTime::now_utc() + age);
    }
    cookie.build()
}

/// A cookie that makes the browser drop `name` (same path and domain).
pub(crate) fn removal(config: &SessionConfig, name: String) -> Cookie<'_> {
    let mut cookie = build(config, name, String::new(), None);
    cookie.make_removal();
    // `make_removal` keeps SameSite; a removal without it would be refused
    // by browsers for SameSite=None without Secure, so keep the attributes.
    if config.cookie_same_site == Some(SameSite::None) {
        cookie.set_secure(true);
    }
    cookie
}

/// Appends a `Set-Cookie` header.
pub(crate) fn append(headers: &mut HeaderMap, cookie: &Cookie<'_>) {
    // A cookie built from validated settings and base64url / id values is
    // always a valid header value; anything else is dropped, not a panic.
    if let Ok(value) = http::HeaderValue::from_str(&cookie.to_string()) {
        headers.append(SET_COOKIE, value);
    }
}

/// The `(name, value)` cookies that carry `value`, or `None` if they would
/// exceed `max_bytes` in a `Cookie` header.
pub(crate) fn split(name: &str, value: &str, max_bytes: usize) -> Option<Vec<(String, String)>> {
    let cookies = if value.len() <= CHUNK_BYTES {
        vec![(name.to_owned(), value.to_owned())]
    } else {
        // Values are ASCII (base64url), so byte chunks are character chunks.
        let pieces: Vec<&str> = value
            .as_bytes()
            .chunks(CHUNK_BYTES)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        if pieces.len() > MAX_CHUNKS {
            return None;
        }
        let mut cookies = vec![(name.to_owned(), format!("{CHUNKS_PREFIX}{}", pieces.len()))];
        cookies.extend(
            pieces
                .iter()
                .enumerate()
                .map(|(i, piece)| (format!("{name}.{}", i + 1), (*piece).to_owned())),
        );
        cookies
    };
    // In the Cookie header each is `name=value`, separated by "; ".
    let header_bytes: usize = cookies.iter().map(|(n, v)| n.len() + 1 + v.len() + 2).sum();
    (header_bytes <= max_bytes).then_some(cookies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::COOKIE;

    fn headers(cookies: &[(String, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        let line: Vec<String> = cookies.iter().map(|(n, v)| format!("{n}={v}")).collect();
        h.insert(COOKIE, HeaderValue::from_str(&line.join("; ")).unwrap());
        h
    }

    #[test]
    fn short_values_are_one_cookie() {
        let parts = split("s", "abc", 7168).unwrap();
        assert_eq!(parts, vec![("s".to_owned(), "abc".to_owned())]);
        assert_eq!(
            RequestCookies::read(headers(&parts).get_all(COOKIE), "s")
                .joined()
                .unwrap(),
            "abc"
        );
    }

    #[test]
    fn long_values_split_and_join() {
        let value: String = "x".repeat(CHUNK_BYTES * 2 + 17);
        let parts = split("s", &value, 100_000).unwrap();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0].1, "chunks-3");
        let read = RequestCookies::read(headers(&parts).get_all(COOKIE), "s");
        assert_eq!(read.joined().unwrap(), value);
        assert_eq!(read.chunk_numbers.len(), 3);
        // A missing piece makes the value unreadable.
        let mut missing = parts.clone();
        missing.remove(2);
        assert!(
            RequestCookies::read(headers(&missing).get_all(COOKIE), "s")
                .joined()
                .is_none()
        );
    }

    #[test]
    fn bound_is_enforced() {
        let value: String = "x".repeat(CHUNK_BYTES * 2);
        assert!(split("s", &value, 7168).is_none());
        assert!(split("s", &value, 9000).is_some());
    }

    #[test]
    fn bad_headers_are_skipped() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_bytes(b"s=\xff\xfe").unwrap());
        h.append(
            COOKIE,
            HeaderValue::from_static("other=1; s=good; s=second"),
        );
        let read = RequestCookies::read(h.get_all(COOKIE), "s");
        assert_eq!(read.main.as_deref(), Some("good"));
        let h = headers(&[("s".into(), "chunks-99999".into())]);
        assert!(
            RequestCookies::read(h.get_all(COOKIE), "s")
                .joined()
                .is_none()
        );
    }
}
