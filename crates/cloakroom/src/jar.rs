//! Reading the session cookie from a request and writing `Set-Cookie`s,
//! including the split of long cookie-engine values over numbered cookies.
//!
//! A value that fits one cookie is sent as `NAME=value`. A longer one is sent
//! as `NAME=chunks-N` plus `NAME.1` … `NAME.N` holding the pieces in order
//! (the scheme ASP.NET Core uses), each piece at most [`CHUNK_BYTES`]. A
//! missing piece makes the whole value unreadable, so the session starts
//! fresh instead of being misread.

use std::cell::RefCell;
use std::time::Duration;

use cookie::SameSite;
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

/// The value of the first cookie called `name` in these `Cookie` header
/// values, as [`RequestCookies::read`] would find it.
pub(crate) fn first_value<'a>(
    headers: impl IntoIterator<Item = &'a HeaderValue>,
    name: &str,
) -> Option<&'a str> {
    headers
        .into_iter()
        .filter_map(|h| h.to_str().ok())
        .find_map(|h| value_in(h, name))
}

/// The value of the first pair called `name` in one `Cookie` header, as
/// [`pairs`] would give it. Every request that uses its session passes
/// here, so the other pairs are only looked at as far as their names.
fn value_in<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    if name.is_empty() {
        return None;
    }
    let mut rest = Some(header);
    while let Some(left) = rest {
        let (pair, next) = match left.split_once(';') {
            Some((pair, next)) => (pair, Some(next)),
            None => (left, None),
        };
        rest = next;
        let value = pair
            .trim_ascii_start()
            .strip_prefix(name)
            .and_then(|after| after.trim_ascii_start().strip_prefix('='));
        if let Some(value) = value {
            let value = value.trim_ascii();
            return Some(
                value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value),
            );
        }
    }
    None
}

/// The `name=value` pairs of one `Cookie` header (RFC 6265, section 5.4),
/// names and values trimmed and a value's surrounding double quotes removed.
fn pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        let name = name.trim_ascii();
        let value = value.trim_ascii();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        (!name.is_empty()).then_some((name, value))
    })
}

/// How long a cookie lasts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Lifetime {
    /// Until the browser closes (no `Max-Age`).
    BrowserSession,
    /// This long from the given moment (the time of the save).
    For(Duration, time::OffsetDateTime),
    /// Already over: the browser drops the cookie.
    Removed,
}

/// The latest moment an `Expires` attribute can name (the end of year 9999).
const LAST_EXPIRES: u64 = 253_402_300_799;

/// Appends `Set-Cookie: name=value` with the configured attributes.
///
/// The header is written directly rather than through a cookie builder:
/// it is on the path of every request that saves, and the attributes come
/// from validated settings and the values are base64url or ids.
pub(crate) fn set(
    headers: &mut HeaderMap,
    config: &SessionConfig,
    name: &str,
    value: &str,
    lifetime: Lifetime,
) {
    let mut line = String::with_capacity(name.len() + value.len() + 120);
    line.push_str(name);
    line.push('=');
    line.push_str(value);
    if config.cookie_http_only {
        line.push_str("; HttpOnly");
    }
    match config.cookie_same_site {
        Some(SameSite::Strict) => line.push_str("; SameSite=Strict"),
        Some(SameSite::Lax) => line.push_str("; SameSite=Lax"),
        Some(SameSite::None) => line.push_str("; SameSite=None"),
        None => {}
    }
    // A removal keeps Secure for SameSite=None: browsers refuse such a
    // cookie without it, the removal included.
    if config.cookie_secure || config.cookie_same_site == Some(SameSite::None) {
        line.push_str("; Secure");
    }
    line.push_str("; Path=");
    line.push_str(&config.cookie_path);
    if let Some(domain) = &config.cookie_domain {
        line.push_str("; Domain=");
        line.push_str(domain);
    }
    // Expires as well as Max-Age, as Django sends: old clients know only
    // Expires.
    match lifetime {
        Lifetime::BrowserSession => {}
        Lifetime::For(age, now) => {
            let since_epoch = u64::try_from(now.unix_timestamp()).unwrap_or(0);
            push_lifetime(&mut line, age.as_secs(), since_epoch);
        }
        Lifetime::Removed => line.push_str("; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"),
    }
    // Always a valid header value when the settings were validated; anything
    // else is dropped, not a panic.
    if let Ok(value) = HeaderValue::try_from(line) {
        headers.append(SET_COOKIE, value);
    }
}

/// Appends `; Max-Age=AGE; Expires=DATE` for a cookie lasting `age` seconds
/// from `now` (seconds since the Unix epoch).
///
/// Formatting the date costs more than the rest of the header, and every
/// save within one second writes the same text, so each thread keeps the
/// last one it wrote.
fn push_lifetime(line: &mut String, age: u64, now: u64) {
    use std::fmt::Write as _;
    thread_local! {
        /// The `(age, now)` of the text, and the text.
        static LAST: RefCell<((u64, u64), String)> = const { RefCell::new(((0, 0), String::new())) };
    }
    LAST.with_borrow_mut(|(written_for, text)| {
        if *written_for != (age, now) || text.is_empty() {
            let expires = now.saturating_add(age).min(LAST_EXPIRES);
            let expires = std::time::UNIX_EPOCH + Duration::from_secs(expires);
            text.clear();
            let _ = write!(
                text,
                "; Max-Age={age}; Expires={}",
                httpdate::HttpDate::from(expires)
            );
            *written_for = (age, now);
        }
        line.push_str(text);
    });
}

/// Appends the `Set-Cookie` that makes the browser drop `name`.
pub(crate) fn remove(headers: &mut HeaderMap, config: &SessionConfig, name: &str) {
    set(headers, config, name, "", Lifetime::Removed);
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
        assert_eq!(first_value(h.get_all(COOKIE), "s"), Some("good"));
        assert_eq!(first_value(h.get_all(COOKIE), "missing"), None);
        let h = headers(&[("s".into(), "chunks-99999".into())]);
        assert!(
            RequestCookies::read(h.get_all(COOKIE), "s")
                .joined()
                .is_none()
        );
    }

    /// `first_value` finds what a full split of the header into pairs
    /// finds, on headers built from the characters that matter to the
    /// split (a fixed pseudo-random sequence, the same on every run).
    #[test]
    fn the_quick_lookup_agrees_with_the_full_split() {
        const PIECES: &[&str] = &[
            "s", "s", "=", "=", ";", " ", "\t", "\"", "v", "x", "s.1", "ss", "a",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % below as u64).unwrap_or(0)
        };
        let mut found = 0;
        for _ in 0..20_000 {
            let header: String = (0..next(12)).map(|_| PIECES[next(PIECES.len())]).collect();
            let full = pairs(&header).find_map(|(n, v)| (n == "s").then_some(v));
            assert_eq!(value_in(&header, "s"), full, "{header:?}");
            found += usize::from(full.is_some());
        }
        // Both outcomes were tried, many times.
        assert!((500..19_500).contains(&found), "{found}");
        assert_eq!(value_in(" s = \"v\" ; s=w", "s"), Some("v"));
        assert_eq!(value_in("ss=1; s", "s"), None);
        assert_eq!(value_in("s=1", ""), None);
    }

    fn set_cookie(config: &SessionConfig, value: &str, lifetime: Lifetime) -> String {
        let mut h = HeaderMap::new();
        set(&mut h, config, "sid", value, lifetime);
        h.get(SET_COOKIE).unwrap().to_str().unwrap().to_owned()
    }

    #[test]
    fn set_cookie_carries_the_configured_attributes() {
        let config = SessionConfig::default();
        let line = set_cookie(
            &config,
            "v",
            Lifetime::For(Duration::from_secs(60), time::OffsetDateTime::now_utc()),
        );
        let parsed = cookie::Cookie::parse(line.clone()).unwrap();
        assert_eq!((parsed.name(), parsed.value()), ("sid", "v"));
        assert_eq!(parsed.http_only(), Some(true));
        assert_eq!(parsed.same_site(), Some(SameSite::Lax));
        assert_eq!(parsed.secure(), None);
        assert_eq!(parsed.path(), Some("/"));
        assert_eq!(parsed.max_age(), Some(time::Duration::seconds(60)));
        let expires = parsed.expires_datetime().unwrap();
        let off = (expires - time::OffsetDateTime::now_utc()).whole_seconds();
        assert!((58..=61).contains(&off), "{line}");

        let config = SessionConfig {
            cookie_domain: Some("example.com".into()),
            cookie_path: "/app".into(),
            cookie_secure: true,
            cookie_http_only: false,
            cookie_same_site: Some(SameSite::Strict),
            ..SessionConfig::default()
        };
        let line = set_cookie(&config, "v", Lifetime::BrowserSession);
        assert_eq!(
            line,
            "sid=v; SameSite=Strict; Secure; Path=/app; Domain=example.com"
        );
    }

    #[test]
    fn removal_is_already_expired_and_keeps_secure_for_same_site_none() {
        let config = SessionConfig {
            cookie_same_site: Some(SameSite::None),
            cookie_secure: true,
            ..SessionConfig::default()
        };
        let mut h = HeaderMap::new();
        remove(&mut h, &config, "sid");
        let parsed = cookie::Cookie::parse(h.get(SET_COOKIE).unwrap().to_str().unwrap()).unwrap();
        assert_eq!(parsed.value(), "");
        assert_eq!(parsed.max_age(), Some(time::Duration::ZERO));
        assert_eq!(parsed.expires_datetime().unwrap().unix_timestamp(), 0);
        assert_eq!(parsed.secure(), Some(true));
    }

    #[test]
    fn a_far_deadline_is_capped_not_a_panic() {
        let line = set_cookie(
            &SessionConfig::default(),
            "v",
            Lifetime::For(
                Duration::from_secs(u64::MAX / 2),
                time::OffsetDateTime::now_utc(),
            ),
        );
        assert!(
            line.ends_with("Expires=Fri, 31 Dec 9999 23:59:59 GMT"),
            "{line}"
        );
    }

    #[test]
    fn each_lifetime_gets_its_own_dates_when_they_alternate() {
        let config = SessionConfig::default();
        let at = |secs| time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
        let cases = [
            (
                60,
                1_800_000_000,
                "Max-Age=60; Expires=Fri, 15 Jan 2027 08:01:00 GMT",
            ),
            (
                60,
                1_800_000_001,
                "Max-Age=60; Expires=Fri, 15 Jan 2027 08:01:01 GMT",
            ),
            (
                3600,
                1_800_000_001,
                "Max-Age=3600; Expires=Fri, 15 Jan 2027 09:00:01 GMT",
            ),
        ];
        for _ in 0..2 {
            for (age, now, expected) in cases {
                let line = set_cookie(
                    &config,
                    "v",
                    Lifetime::For(Duration::from_secs(age), at(now)),
                );
                assert!(line.ends_with(expected), "{line} for {age} s from {now}");
            }
        }
    }
}
