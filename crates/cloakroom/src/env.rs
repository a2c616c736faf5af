//! `from_env()`: the `SESSION_*` settings, with Django's names and defaults.

use std::time::Duration;

use cloakroom_core::config::{ConfigError, Settings, bool_or, millis_or, parse_or, redact_url};
use cloakroom_core::record::MAX_AGE;
use cookie::SameSite;

use crate::config::SessionConfig;
use crate::{Engine, settings};

const ENGINES: &str = "one of cache, db, cached_db, signed_cookies, encrypted_cookies \
     (or Django's django.contrib.sessions.backends.<name>)";

/// Reads the layer's settings.
pub(crate) fn config(s: &dyn Settings) -> Result<SessionConfig, ConfigError> {
    let defaults = SessionConfig::default();
    let cookie_name = match s.get(settings::COOKIE_NAME) {
        None => defaults.cookie_name,
        Some(name) if is_token(&name) => name,
        Some(name) => {
            return Err(ConfigError::new(
                settings::COOKIE_NAME,
                name,
                "a cookie name: letters, digits and !#$%&'*+-.^_`|~",
            ));
        }
    };
    let age_accepted = format!(
        "a whole number of seconds above 0 and at most {} (100 years)",
        MAX_AGE.as_secs()
    );
    let age: u64 = parse_or(s, settings::COOKIE_AGE, 1_209_600, &age_accepted)?;
    if age == 0 || age > MAX_AGE.as_secs() {
        return Err(ConfigError::new(
            settings::COOKIE_AGE,
            age.to_string(),
            age_accepted,
        ));
    }
    let cookie_absolute_age = match s.get(settings::COOKIE_ABSOLUTE_AGE) {
        None => None,
        Some(value) => match value.trim().parse::<u64>() {
            Ok(secs) if secs > 0 && secs <= MAX_AGE.as_secs() => Some(Duration::from_secs(secs)),
            _ => {
                return Err(ConfigError::new(
                    settings::COOKIE_ABSOLUTE_AGE,
                    value,
                    age_accepted,
                ));
            }
        },
    };
    let cookie_domain = match s.get(settings::COOKIE_DOMAIN) {
        Some(d) if !is_attribute_value(&d) || d.contains(' ') => {
            return Err(ConfigError::new(
                settings::COOKIE_DOMAIN,
                d,
                "a domain name such as example.com",
            ));
        }
        d => d,
    };
    let cookie_path = match s.get(settings::COOKIE_PATH) {
        None => defaults.cookie_path,
        Some(p) if p.starts_with('/') && is_attribute_value(&p) => p,
        Some(p) => {
            return Err(ConfigError::new(
                settings::COOKIE_PATH,
                p,
                "a path starting with /",
            ));
        }
    };
    let cookie_secure = bool_or(s, settings::COOKIE_SECURE, false)?;
    let cookie_same_site = match s.get(settings::COOKIE_SAMESITE) {
        None => defaults.cookie_same_site,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "lax" => Some(SameSite::Lax),
            "strict" => Some(SameSite::Strict),
            "none" if cookie_secure => Some(SameSite::None),
            "none" => {
                return Err(ConfigError::new(
                    settings::COOKIE_SAMESITE,
                    v,
                    "Lax or Strict; None only together with SESSION_COOKIE_SECURE=true \
                     (browsers reject SameSite=None cookies that are not Secure)",
                ));
            }
            "false" => None,
            _ => {
                return Err(ConfigError::new(
                    settings::COOKIE_SAMESITE,
                    v,
                    "Lax, Strict, None (with SESSION_COOKIE_SECURE=true) or False (no attribute)",
                ));
            }
        },
    };
    let cookie_max_bytes: usize = parse_or(
        s,
        settings::COOKIE_MAX_BYTES,
        defaults.cookie_max_bytes,
        "a whole number of bytes, at least 4096",
    )?;
    if cookie_max_bytes < 4096 {
        return Err(ConfigError::new(
            settings::COOKIE_MAX_BYTES,
            cookie_max_bytes.to_string(),
            "a whole number of bytes, at least 4096",
        ));
    }
    Ok(SessionConfig {
        cookie_name,
        cookie_age: Duration::from_secs(age),
        expiry: None,
        cookie_absolute_age,
        cookie_domain,
        cookie_path,
        cookie_secure,
        cookie_http_only: bool_or(s, settings::COOKIE_HTTPONLY, true)?,
        cookie_same_site,
        save_every_request: bool_or(s, settings::SAVE_EVERY_REQUEST, false)?,
        touch_after: match s.get(settings::TOUCH_AFTER_SECONDS) {
            None => None,
            Some(value) => match value.trim().parse::<u64>() {
                Ok(secs) if secs <= MAX_AGE.as_secs() => Some(Duration::from_secs(secs)),
                _ => {
                    return Err(ConfigError::new(
                        settings::TOUCH_AFTER_SECONDS,
                        value,
                        "a whole number of seconds (0: renew on every request)",
                    ));
                }
            },
        },
        expire_at_browser_close: bool_or(s, settings::EXPIRE_AT_BROWSER_CLOSE, false)?,
        backend_timeout: millis_or(s, settings::BACKEND_TIMEOUT_MS, defaults.backend_timeout)?,
        cookie_max_bytes,
        unavailable_response: None,
    })
}

/// Picks and builds the engine. Nothing connects here: a backend that is down
/// at startup shows up as 503s on requests, not as a config error.
pub(crate) fn engine(s: &dyn Settings) -> Result<Engine, ConfigError> {
    let raw = s
        .get(settings::ENGINE)
        .unwrap_or_else(|| "cache".to_owned());
    let name = raw
        .strip_prefix("django.contrib.sessions.backends.")
        .unwrap_or(&raw);
    match name {
        "cache" => cache_engine(s),
        "db" => db_engine(s),
        "cached_db" => match db_engine(s)? {
            Engine::Store(db) => Ok(Engine::store(cloakroom_memory::CachedStore::from_settings(
                db, s,
            )?)),
            Engine::Cookie(_) => Err(ConfigError::new(settings::ENGINE, raw.as_str(), ENGINES)),
        },
        "signed_cookies" | "encrypted_cookies" => cookie_engine(&raw, name == "signed_cookies", s),
        _ => Err(ConfigError::new(settings::ENGINE, raw.as_str(), ENGINES)),
    }
}

// Unused in a build with every engine feature on (as the workspace's tests build it).
#[cfg_attr(
    all(
        feature = "redis",
        feature = "memcached",
        feature = "mysql",
        feature = "postgres",
        feature = "sqlite",
        feature = "cookie"
    ),
    allow(dead_code)
)]
fn not_compiled(variable: &str, value: &str, feature: &str) -> ConfigError {
    ConfigError::new(
        variable,
        redact_url(value),
        format!(
            "an engine compiled into this build: this one is not compiled in; enable the \
             `{feature}` feature of the cloakroom crate"
        ),
    )
}

fn cache_engine(s: &dyn Settings) -> Result<Engine, ConfigError> {
    const VAR: &str = settings::CACHE_URL;
    let url = s.get(VAR).unwrap_or_else(|| "memory://".to_owned());
    let scheme = url
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("memory") if url.len() == "memory://".len() => Ok(Engine::store(
            cloakroom_memory::MemoryStore::from_settings(s)?,
        )),
        #[cfg(feature = "redis")]
        Some("redis" | "rediss" | "redis+cluster" | "rediss+cluster") => Ok(Engine::store(
            cloakroom_redis::RedisStore::from_settings(&url, s)?,
        )),
        #[cfg(not(feature = "redis"))]
        Some("redis" | "rediss" | "redis+cluster" | "rediss+cluster") => {
            Err(not_compiled(VAR, &url, "redis"))
        }
        #[cfg(feature = "memcached")]
        Some("memcached") => Ok(Engine::store(
            cloakroom_memcached::MemcachedStore::from_settings(&url, s)?,
        )),
        #[cfg(not(feature = "memcached"))]
        Some("memcached") => Err(not_compiled(VAR, &url, "memcached")),
        _ => Err(ConfigError::new(
            VAR,
            redact_url(&url),
            "memory://, redis://host:port/db, rediss://..., redis+cluster://h1:p1,h2:p2 \
             or memcached://h1:11211,h2:11211",
        )),
    }
}

fn db_engine(s: &dyn Settings) -> Result<Engine, ConfigError> {
    let (var, url) = match (
        s.get(settings::DATABASE_URL),
        s.get(settings::FALLBACK_DATABASE_URL),
    ) {
        (Some(url), _) => (settings::DATABASE_URL, url),
        (None, Some(url)) => (settings::FALLBACK_DATABASE_URL, url),
        (None, None) => {
            return Err(ConfigError::new(
                settings::DATABASE_URL,
                "",
                "a database URL (mysql://, postgres://, sqlite://) in SESSION_DATABASE_URL \
                 or DATABASE_URL",
            ));
        }
    };
    let scheme = url
        .split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        #[cfg(feature = "mysql")]
        Some("mysql" | "mariadb") => sql_engine(&url, s),
        #[cfg(not(feature = "mysql"))]
        Some("mysql" | "mariadb") => Err(not_compiled(var, &url, "mysql")),
        #[cfg(feature = "postgres")]
        Some("postgres" | "postgresql") => sql_engine(&url, s),
        #[cfg(not(feature = "postgres"))]
        Some("postgres" | "postgresql") => Err(not_compiled(var, &url, "postgres")),
        #[cfg(feature = "sqlite")]
        Some("sqlite") => sql_engine(&url, s),
        #[cfg(not(feature = "sqlite"))]
        Some("sqlite") => Err(not_compiled(var, &url, "sqlite")),
        _ => Err(ConfigError::new(
            var,
            redact_url(&url),
            "a mysql://, postgres:// or sqlite:// URL",
        )),
    }
}

/// The `db` engine (cloakroom-sql), for whichever drivers are compiled in.
#[cfg(any(feature = "mysql", feature = "postgres", feature = "sqlite"))]
fn sql_engine(url: &str, s: &dyn Settings) -> Result<Engine, ConfigError> {
    Ok(Engine::store(cloakroom_sql::SqlStore::from_settings(
        url, s,
    )?))
}

#[cfg(feature = "cookie")]
fn cookie_engine(_raw: &str, signed: bool, s: &dyn Settings) -> Result<Engine, ConfigError> {
    Ok(if signed {
        Engine::cookie(cloakroom_cookie::SignedCookies::from_settings(s)?)
    } else {
        Engine::cookie(cloakroom_cookie::EncryptedCookies::from_settings(s)?)
    })
}

#[cfg(not(feature = "cookie"))]
fn cookie_engine(raw: &str, _signed: bool, _s: &dyn Settings) -> Result<Engine, ConfigError> {
    Err(not_compiled(settings::ENGINE, raw, "cookie"))
}

/// RFC 6265 `token`: what a cookie name may be.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What may stand in a cookie attribute value.
fn is_attribute_value(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b';')
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloakroom_core::config::from_pairs;

    fn err(pairs: &[(&str, &str)]) -> String {
        let s = from_pairs(pairs.iter().copied());
        match config(&s).and_then(|_| engine(&s).map(|_| ())) {
            Ok(()) => panic!("accepted {pairs:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_are_djangos() {
        let c = config(&from_pairs([])).unwrap();
        assert_eq!(c, SessionConfig::default());
        assert_eq!(c.cookie_name, "sessionid");
        assert_eq!(c.cookie_age, Duration::from_secs(1_209_600));
        assert!(c.cookie_http_only && !c.cookie_secure);
        assert_eq!(c.cookie_same_site, Some(SameSite::Lax));
        assert_eq!(engine(&from_pairs([])).unwrap().name(), "memory");
    }

    #[test]
    fn every_setting_is_read() {
        let s = from_pairs([
            ("SESSION_COOKIE_NAME", "sid"),
            ("SESSION_COOKIE_AGE", "60"),
            ("SESSION_COOKIE_DOMAIN", "example.com"),
            ("SESSION_COOKIE_PATH", "/app"),
            ("SESSION_COOKIE_SECURE", "true"),
            ("SESSION_COOKIE_HTTPONLY", "false"),
            ("SESSION_COOKIE_SAMESITE", "None"),
            ("SESSION_SAVE_EVERY_REQUEST", "1"),
            ("SESSION_EXPIRE_AT_BROWSER_CLOSE", "yes"),
            ("SESSION_BACKEND_TIMEOUT_MS", "250"),
            ("SESSION_COOKIE_MAX_BYTES", "16000"),
        ]);
        let c = config(&s).unwrap();
        assert_eq!(c.cookie_name, "sid");
        assert_eq!(c.cookie_age, Duration::from_secs(60));
        assert_eq!(c.cookie_domain.as_deref(), Some("example.com"));
        assert_eq!(c.cookie_path, "/app");
        assert!(c.cookie_secure && !c.cookie_http_only);
        assert_eq!(c.cookie_same_site, Some(SameSite::None));
        assert!(c.save_every_request && c.expire_at_browser_close);
        assert_eq!(c.backend_timeout, Duration::from_millis(250));
        assert_eq!(c.cookie_max_bytes, 16000);
    }

    #[test]
    fn django_aliases_are_accepted() {
        let s = from_pairs([("SESSION_ENGINE", "django.contrib.sessions.backends.cache")]);
        assert_eq!(engine(&s).unwrap().name(), "memory");
    }

    #[test]
    fn bad_values_name_variable_value_and_accepted() {
        let e = err(&[("SESSION_ENGINE", "file")]);
        assert!(
            e.contains("SESSION_ENGINE=\"file\"") && e.contains("cached_db"),
            "{e}"
        );
        let e = err(&[("SESSION_CACHE_URL", "mongodb://x")]);
        assert!(
            e.contains("SESSION_CACHE_URL") && e.contains("memcached://"),
            "{e}"
        );
        let e = err(&[("SESSION_COOKIE_SAMESITE", "None")]);
        assert!(e.contains("SESSION_COOKIE_SECURE"), "{e}");
        let e = err(&[("SESSION_COOKIE_AGE", "soon")]);
        assert!(e.contains("SESSION_COOKIE_AGE=\"soon\""), "{e}");
        // An age whose deadline the calendar cannot hold is refused at
        // startup, not a panic on every saving request.
        for age in ["315360000000", "3153600001", "18446744073709551615", "0"] {
            let e = err(&[("SESSION_COOKIE_AGE", age)]);
            assert!(e.contains(&format!("SESSION_COOKIE_AGE=\"{age}\"")), "{e}");
            assert!(e.contains("at most 3153600000"), "{e}");
        }
        // The touch threshold: 1 % of the age, at most a minute, unless set.
        let c = config(&from_pairs([])).unwrap();
        assert_eq!(c.touch_after, None);
        let hour = Duration::from_secs(3600);
        assert_eq!(c.touch_threshold(hour), Duration::from_secs(36));
        assert_eq!(c.touch_threshold(hour * 24), Duration::from_secs(60));
        for (value, set) in [("0", Duration::ZERO), (" 90 ", Duration::from_secs(90))] {
            let c = config(&from_pairs([("SESSION_TOUCH_AFTER_SECONDS", value)])).unwrap();
            assert_eq!((c.touch_after, c.touch_threshold(hour)), (Some(set), set));
        }
        for bad in ["-1", "soon", "3153600001"] {
            let e = err(&[("SESSION_TOUCH_AFTER_SECONDS", bad)]);
            assert!(e.contains("SESSION_TOUCH_AFTER_SECONDS"), "{e}");
        }
        let c = config(&from_pairs([("SESSION_COOKIE_AGE", "3153600000")])).unwrap();
        assert_eq!(c.cookie_age, MAX_AGE);
        assert_eq!(c.cookie_absolute_age, None);
        let c = config(&from_pairs([("SESSION_COOKIE_ABSOLUTE_AGE", "86400")])).unwrap();
        assert_eq!(c.cookie_absolute_age, Some(Duration::from_secs(86_400)));
        for age in ["0", "-1", "soon", "3153600001"] {
            let e = err(&[("SESSION_COOKIE_ABSOLUTE_AGE", age)]);
            assert!(e.contains("SESSION_COOKIE_ABSOLUTE_AGE"), "{e}");
        }
        let e = err(&[("SESSION_COOKIE_NAME", "a b")]);
        assert!(e.contains("SESSION_COOKIE_NAME"), "{e}");
        let e = err(&[("SESSION_COOKIE_HTTPONLY", "maybe")]);
        assert!(e.contains("true or false"), "{e}");
        let e = err(&[("SESSION_ENGINE", "db")]);
        assert!(e.contains("DATABASE_URL"), "{e}");
        let e = err(&[("SESSION_ENGINE", "cached_db")]);
        assert!(e.contains("DATABASE_URL"), "{e}");
        let e = err(&[
            ("SESSION_ENGINE", "cached_db"),
            ("DATABASE_URL", "sqlite://x.db"),
            ("SESSION_CACHED_DB_TTL_MS", "soon"),
        ]);
        assert!(
            e.contains("SESSION_CACHED_DB_TTL_MS") || e.contains("not compiled in"),
            "{e}"
        );
    }

    #[test]
    fn passwords_never_appear_in_errors() {
        let e = err(&[("SESSION_CACHE_URL", "nosuch://:hunter2@h")]);
        assert!(!e.contains("hunter2"), "{e}");
    }
}
