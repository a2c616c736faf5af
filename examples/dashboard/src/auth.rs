//! What a login puts in the session, the CSRF tokens, and the idle timeout.
//!
//! Two CSRF tokens: a logged-in user's lives in the session, made at login;
//! the login form's lives in a signed cookie of its own, so that opening the
//! login page stores nothing on the server (as Django keeps its CSRF token
//! in a cookie by default). An anonymous visitor therefore never takes a
//! place in an engine that evicts, and a flood of visits to the login page
//! cannot push logged-in users out.

use std::time::Duration;

use axum_extra::extract::cookie::{Cookie, SameSite, SignedCookieJar};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloakroom::{Expiry, Session};
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::catalog::Service;
use crate::error::Failure;

/// Session keys, named as Horizon names them where it has one.
pub(crate) mod keys {
    /// The user's Keystone-style id.
    pub(crate) const USER_ID: &str = "user_id";
    /// The login name.
    pub(crate) const USERNAME: &str = "username";
    /// The (demo) auth token: Horizon keeps the Keystone token here.
    pub(crate) const TOKEN: &str = "token";
    /// The project the user works in.
    pub(crate) const PROJECT: &str = "project";
    /// The region the user works in (Horizon's `services_region`).
    pub(crate) const REGION: &str = "services_region";
    /// The service catalog, as Keystone returned it with the token.
    pub(crate) const CATALOG: &str = "catalog";
    /// The CSRF token every form posts back.
    pub(crate) const CSRF: &str = "csrf_token";
    /// With `SESSION_EXPIRE_AT_BROWSER_CLOSE`: when the user was last
    /// active, in Unix milliseconds (Horizon's `last_activity`).
    pub(crate) const LAST_ACTIVITY: &str = "last_activity";
}

/// The logged-in user, as the session has it.
#[derive(Debug, Clone)]
pub(crate) struct LoggedIn {
    pub(crate) user_id: String,
    pub(crate) username: String,
    pub(crate) project: String,
    pub(crate) region: String,
}

/// The user the session belongs to, if someone logged in.
pub(crate) async fn logged_in(session: &Session) -> Result<Option<LoggedIn>, Failure> {
    let Some(user_id) = session.get::<String>(keys::USER_ID).await? else {
        return Ok(None);
    };
    Ok(Some(LoggedIn {
        user_id,
        username: session.get(keys::USERNAME).await?.unwrap_or_default(),
        project: session.get(keys::PROJECT).await?.unwrap_or_default(),
        region: session.get(keys::REGION).await?.unwrap_or_default(),
    }))
}

/// Fills a session that just logged in: a new id first (so an id planted
/// before the login is worth nothing after it), then what Horizon keeps.
pub(crate) async fn log_in(
    session: &Session,
    username: &str,
    project: &str,
    region: &str,
    catalog: &[Service],
) -> Result<(), Failure> {
    // Nothing of the anonymous session (or of another user logged in before
    // on this browser) carries over, as with Django's login().
    session.clear().await?;
    session.cycle_id().await?;
    session
        .insert(
            keys::USER_ID,
            crate::catalog::ident(&format!("user/{username}")),
        )
        .await?;
    session.insert(keys::USERNAME, username).await?;
    session
        .insert(keys::TOKEN, format!("gAAAAA{}", random_token(96)?))
        .await?;
    session.insert(keys::PROJECT, project).await?;
    session.insert(keys::REGION, region).await?;
    session.insert(keys::CATALOG, catalog).await?;
    // A fresh CSRF token too: one seen before the login is not trusted after.
    session.insert(keys::CSRF, random_token(32)?).await?;
    Ok(())
}

/// The session's CSRF token, made on first use.
pub(crate) async fn csrf_token(session: &Session) -> Result<String, Failure> {
    if let Some(token) = session.get::<String>(keys::CSRF).await? {
        return Ok(token);
    }
    let token = random_token(32)?;
    session.insert(keys::CSRF, &token).await?;
    Ok(token)
}

/// Checks a posted CSRF token against the session's.
///
/// # Errors
/// [`Failure::Csrf`] (403) when the form had none, the session has none, or
/// they differ.
pub(crate) async fn check_csrf(session: &Session, posted: &str) -> Result<(), Failure> {
    let expected = session.get::<String>(keys::CSRF).await?.unwrap_or_default();
    same_token(&expected, posted)
}

/// The cookie that carries the login form's CSRF token. Sent back only to
/// the login page's path.
pub(crate) const LOGIN_CSRF_COOKIE: &str = "dashboard_login_csrf";
const LOGIN_PATH: &str = "/auth/login";

/// The login form's CSRF token: the one the request's cookie carries when
/// its signature holds, else a new one, with the cookie that carries it
/// added to `jar` (HttpOnly, SameSite=Lax, `Secure` as the session cookie
/// is, gone when the browser closes).
pub(crate) fn login_csrf_token(
    jar: SignedCookieJar,
    secure: bool,
) -> Result<(SignedCookieJar, String), Failure> {
    if let Some(cookie) = jar.get(LOGIN_CSRF_COOKIE) {
        return Ok((jar, cookie.value().to_owned()));
    }
    let token = random_token(32)?;
    let cookie = Cookie::build((LOGIN_CSRF_COOKIE, token.clone()))
        .path(LOGIN_PATH)
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure);
    Ok((jar.add(cookie), token))
}

/// Checks a posted login form's CSRF token against its signed cookie, and
/// returns the cookie's (unmasked) token: the
/// signature shows this server made the token, and a form from another
/// site cannot read the cookie to copy the token into its fields.
///
/// # Errors
/// [`Failure::Csrf`] (403) when the form or the cookie had none, the
/// cookie's signature does not hold, or the tokens differ.
pub(crate) fn check_login_csrf(jar: &SignedCookieJar, posted: &str) -> Result<String, Failure> {
    let expected = jar
        .get(LOGIN_CSRF_COOKIE)
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    same_token(&expected, posted)?;
    Ok(expected)
}

/// `jar` without the login form's CSRF cookie: once logged in, the session
/// has its own token.
pub(crate) fn forget_login_csrf(jar: SignedCookieJar) -> SignedCookieJar {
    jar.remove(Cookie::build(LOGIN_CSRF_COOKIE).path(LOGIN_PATH))
}

/// `token` as a page shows it: a fresh random pad, then the token XOR the
/// pad, base64url. Every page shows the same token differently, so a page
/// that is compressed (and echoes what a user typed) does not let an
/// eavesdropper guess the token from compressed sizes (BREACH); Django
/// masks its CSRF token the same way.
pub(crate) fn mask(token: &str) -> Result<String, Failure> {
    let raw = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| Failure::Internal("a CSRF token that is not base64url".into()))?;
    let mut pad = vec![0u8; raw.len()];
    SystemRandom::new()
        .fill(&mut pad)
        .map_err(|_| Failure::Internal("the OS random number generator failed".into()))?;
    let masked: Vec<u8> = raw.iter().zip(&pad).map(|(t, p)| t ^ p).collect();
    pad.extend_from_slice(&masked);
    Ok(URL_SAFE_NO_PAD.encode(pad))
}

/// The token a masked one stands for, as raw bytes; `None` for anything
/// that is not a masked token.
fn unmask(posted: &str) -> Option<Vec<u8>> {
    let bytes = URL_SAFE_NO_PAD.decode(posted).ok()?;
    if bytes.is_empty() || bytes.len() % 2 != 0 {
        return None;
    }
    let (pad, masked) = bytes.split_at(bytes.len() / 2);
    Some(pad.iter().zip(masked).map(|(p, m)| p ^ m).collect())
}

/// `posted` (masked) stands for `expected`, a non-empty token; compared in
/// constant time.
fn same_token(expected: &str, posted: &str) -> Result<(), Failure> {
    let expected = URL_SAFE_NO_PAD.decode(expected).unwrap_or_default();
    let posted = unmask(posted).unwrap_or_default();
    let same: bool = expected.as_slice().ct_eq(posted.as_slice()).into();
    if expected.is_empty() || !same {
        return Err(Failure::Csrf);
    }
    Ok(())
}

/// The idle timeout (Horizon's `SESSION_TIMEOUT`), applied one of two ways.
///
/// * By default, as the session's expiry: `Expiry::OnInactivity`, which
///   the store enforces and the cookie's `Max-Age` mirrors. Setting the
///   same period again on each page costs the store a touch, not a
///   rewrite.
/// * With `SESSION_EXPIRE_AT_BROWSER_CLOSE=true`, as Horizon does: the
///   session gets `Expiry::OnBrowserClose` (a cookie without `Max-Age`,
///   gone when the browser closes; the store keeps its record for
///   `SESSION_COOKIE_AGE` from the last save), and the time of the last
///   activity is kept in the session. A page that finds it older than the
///   timeout ends the session (`flush`) and sends to the login page. So as
///   not to rewrite the session on every page, the time is updated only
///   once it is older than [`IdleTimeout::slack`] (1 % of the timeout, at
///   most a minute): a session may end that much before the timeout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdleTimeout {
    pub(crate) period: Duration,
    pub(crate) browser_session: bool,
}

impl IdleTimeout {
    /// How old the recorded last activity may get before a page updates it.
    pub(crate) fn slack(&self) -> Duration {
        (self.period / 100).min(Duration::from_secs(60))
    }

    /// The logged-in user, if any and (in browser-session mode) not idle
    /// for longer than the period; an idle session is ended here.
    pub(crate) async fn user(&self, session: &Session) -> Result<Option<LoggedIn>, Failure> {
        let Some(user) = logged_in(session).await? else {
            return Ok(None);
        };
        if self.browser_session {
            let last: Option<i64> = session.get(keys::LAST_ACTIVITY).await?;
            let idle_for = last.map(|last| now_ms().saturating_sub(last));
            let period = i64::try_from(self.period.as_millis()).unwrap_or(i64::MAX);
            if idle_for.is_none_or(|idle| idle > period) {
                session.flush().await?;
                return Ok(None);
            }
        }
        Ok(Some(user))
    }

    /// Starts the timeout for a session that just logged in.
    pub(crate) async fn start(&self, session: &Session) -> Result<(), Failure> {
        if self.browser_session {
            session.set_expiry(Some(Expiry::OnBrowserClose)).await?;
            session.insert(keys::LAST_ACTIVITY, now_ms()).await?;
            Ok(())
        } else {
            self.refresh(session).await
        }
    }

    /// Restarts the timeout: the user was active.
    pub(crate) async fn refresh(&self, session: &Session) -> Result<(), Failure> {
        if !self.browser_session {
            let idle = time::Duration::try_from(self.period).unwrap_or(time::Duration::MAX);
            session.set_expiry(Some(Expiry::OnInactivity(idle))).await?;
            return Ok(());
        }
        let now = now_ms();
        let last: i64 = session.get(keys::LAST_ACTIVITY).await?.unwrap_or(0);
        let slack = i64::try_from(self.slack().as_millis()).unwrap_or(i64::MAX);
        if now.saturating_sub(last) > slack {
            session.insert(keys::LAST_ACTIVITY, now).await?;
        }
        Ok(())
    }

    /// When the session ends if the user does nothing more.
    pub(crate) async fn expires_at(&self, session: &Session) -> Result<OffsetDateTime, Failure> {
        if !self.browser_session {
            return Ok(session.expiry_date().await?);
        }
        let last: i64 = session
            .get(keys::LAST_ACTIVITY)
            .await?
            .unwrap_or_else(now_ms);
        let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(last) * 1_000_000)
            .unwrap_or_else(|_| OffsetDateTime::now_utc());
        Ok(at + self.period)
    }
}

/// Now, in Unix milliseconds.
fn now_ms() -> i64 {
    let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    i64::try_from(now).unwrap_or(i64::MAX)
}

/// `bytes` bytes from the OS CSPRNG, base64url.
fn random_token(bytes: usize) -> Result<String, Failure> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| Failure::Internal("the OS random number generator failed".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slack_is_a_hundredth_of_the_timeout_up_to_a_minute() {
        let slack = |secs| {
            IdleTimeout {
                period: Duration::from_secs(secs),
                browser_session: true,
            }
            .slack()
        };
        assert_eq!(slack(2), Duration::from_millis(20));
        assert_eq!(slack(3600), Duration::from_secs(36));
        assert_eq!(slack(86_400), Duration::from_secs(60));
    }

    #[test]
    fn tokens_are_random_and_url_safe() {
        let a = random_token(32).expect("random");
        let b = random_token(32).expect("random");
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn masked_tokens_differ_each_time_and_stand_for_the_token() {
        let token = random_token(32).expect("random");
        let (one, two) = (mask(&token).expect("mask"), mask(&token).expect("mask"));
        assert_ne!(one, two);
        assert_eq!(one.len(), 86);
        assert!(same_token(&token, &one).is_ok());
        assert!(same_token(&token, &two).is_ok());
        // The token itself, unmasked, is not accepted; nor is another's.
        assert!(same_token(&token, &token).is_err());
        let other = mask(&random_token(32).expect("random")).expect("mask");
        assert!(same_token(&token, &other).is_err());
        assert!(same_token(&token, "").is_err());
        assert!(same_token(&token, "!!").is_err());
        assert!(same_token("", &one).is_err());
    }
}
