//! Reading settings: where a value comes from, and the error that names a
//! bad one.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A source of settings by name: the process environment ([`Env`]) or a map
/// (tests, programmatic configuration).
pub trait Settings: fmt::Debug {
    /// The value of `name`, if set. An empty value counts as unset.
    fn get(&self, name: &str) -> Option<String>;
}

/// Settings from the process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Env;

impl Settings for Env {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Settings for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).filter(|v| !v.is_empty()).cloned()
    }
}

/// Builds map settings from pairs, as tests and examples write them.
pub fn from_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> HashMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A setting with a value that is not accepted. Its message names the
/// variable, the value (redacted for secrets) and what is accepted.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigError {
    variable: String,
    value: String,
    accepted: String,
}

impl ConfigError {
    /// A bad `value` for `variable`, where `accepted` says what would do.
    pub fn new(
        variable: impl Into<String>,
        value: impl Into<String>,
        accepted: impl Into<String>,
    ) -> Self {
        Self {
            variable: variable.into(),
            value: value.into(),
            accepted: accepted.into(),
        }
    }

    /// The same for a secret: the value is replaced by its length.
    pub fn secret(variable: impl Into<String>, len: usize, accepted: impl Into<String>) -> Self {
        Self::new(variable, format!("<{len} bytes, not shown>"), accepted)
    }

    /// The variable that has the bad value.
    pub fn variable(&self) -> &str {
        &self.variable
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid setting {}={:?}: expected {}",
            self.variable, self.value, self.accepted
        )
    }
}

impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for ConfigError {}

/// Reads `name` and parses it with [`FromStr`], or returns `default` when it
/// is unset. `accepted` describes valid values for the error message.
///
/// # Errors
/// When the value is set but does not parse.
pub fn parse_or<T: FromStr>(
    settings: &dyn Settings,
    name: &str,
    default: T,
    accepted: &str,
) -> Result<T, ConfigError> {
    match settings.get(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| ConfigError::new(name, v, accepted)),
    }
}

/// Reads a boolean the way Django settings files spell them: `true`/`false`,
/// `1`/`0`, `yes`/`no`, `on`/`off` (any case).
///
/// # Errors
/// When the value is none of those.
pub fn bool_or(settings: &dyn Settings, name: &str, default: bool) -> Result<bool, ConfigError> {
    match settings.get(name) {
        None => Ok(default),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(ConfigError::new(
                name,
                v,
                "true or false (also 1/0, yes/no, on/off)",
            )),
        },
    }
}

/// Reads a duration given in milliseconds (`SESSION_..._MS` settings).
///
/// # Errors
/// When the value is not a whole number of milliseconds above zero.
pub fn millis_or(
    settings: &dyn Settings,
    name: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match settings.get(name) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err(ConfigError::new(
                name,
                v,
                "a whole number of milliseconds above 0",
            )),
        },
    }
}

/// A URL with its credentials replaced by `****`, fit for errors, logs and
/// `Debug`: `redis://:secret@host/0` becomes `redis://:****@host/0`, and
/// `postgres://u:pw@h/db?sslmode=require&password=x` becomes
/// `postgres://u:****@h/db?sslmode=require&password=****`. The one redactor
/// every engine prints URLs through.
///
/// The rule, chosen so that no character of a password is ever shown:
///
/// * the user-info is everything between `scheme://` and the **last** `@`
///   of the URL. RFC 3986 forbids a raw `@`, `/`, `?` or `#` in a password,
///   but passwords pasted into URLs contain them anyway (`openssl rand
///   -base64` makes `/`), so none of them is taken to end the user-info;
///   only the last `@` can, because a host never holds one. What follows it
///   (hosts, port, path, query) is shown;
/// * within the user-info, the user name is shown up to the first `:` and
///   everything after that `:` is masked; user-info without a `:` (a bare
///   token, `rediss://token@host`) is masked whole;
/// * a URL whose authority is empty (`sqlite:///tmp/a@b.db`) or that has no
///   `@` at all has no user-info;
/// * query parameters whose name contains `password`, `passwd`, `secret` or
///   `token` (any case) have their values masked.
///
/// The cost of the first rule is over-masking, never leaking: an `@` in a
/// query string (`postgres://h/db?user=me@corp`) makes everything before it
/// count as user-info, and the URL is shown as `postgres://****@corp`.
///
/// ```
/// use cloakroom_core::config::redact_url;
///
/// assert_eq!(redact_url("redis://:s3cr/et@host:6379/0"), "redis://:****@host:6379/0");
/// assert_eq!(redact_url("redis+cluster://:pw@h1:1,h2:2"), "redis+cluster://:****@h1:1,h2:2");
/// assert_eq!(redact_url("memory://"), "memory://");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let shown = match rest.rsplit_once('@') {
        // An empty authority (`sqlite:///path`): any `@` is in the path.
        Some((userinfo, after)) if !rest.starts_with(['/', '?', '#']) => {
            let masked = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:****"),
                None => "****".to_owned(),
            };
            format!("{masked}@{}", mask_query_secrets(after))
        }
        _ => mask_query_secrets(rest),
    };
    format!("{scheme}://{shown}")
}

/// `hosts/path?query#fragment` with the values of credential-like query
/// parameters masked.
fn mask_query_secrets(text: &str) -> String {
    let Some((head, query)) = text.split_once('?') else {
        return text.to_owned();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((query, fragment)) => (query, Some(fragment)),
        None => (query, None),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_parameter(name) => format!("{name}=****"),
            _ => pair.to_owned(),
        })
        .collect();
    let mut out = format!("{head}?{}", pairs.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "passwd", "secret", "token"]
        .iter()
        .any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_bad_values() {
        let s = &from_pairs([("A", "12"), ("B", "x"), ("C", "Yes"), ("D", "")]);
        assert_eq!(parse_or(s, "A", 1u32, "a number").unwrap(), 12);
        assert_eq!(parse_or(s, "D", 1u32, "a number").unwrap(), 1);
        let err = parse_or(s, "B", 1u32, "a number").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid setting B=\"x\": expected a number"
        );
        assert!(bool_or(s, "C", false).unwrap());
        assert!(bool_or(s, "B", false).is_err());
        assert_eq!(
            millis_or(s, "A", Duration::ZERO).unwrap(),
            Duration::from_millis(12)
        );
        assert!(
            ConfigError::secret("K", 3, "32 bytes")
                .to_string()
                .contains("not shown")
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("redis://:pw@h:1/0"), "redis://:****@h:1/0");
        assert_eq!(
            redact_url("mysql://u:pw@h/db?x=1"),
            "mysql://u:****@h/db?x=1"
        );
        assert_eq!(
            redact_url("redis+cluster://u:p@a:1,b:2"),
            "redis+cluster://u:****@a:1,b:2"
        );
        assert_eq!(redact_url("rediss://token@h"), "rediss://****@h");
        assert_eq!(redact_url("memory://"), "memory://");
        assert_eq!(redact_url("sqlite:///tmp/a@b.db"), "sqlite:///tmp/a@b.db");
        assert_eq!(redact_url("no scheme:pw@h"), "no scheme:pw@h");
    }

    /// Passwords holding the characters that end a user-info by the RFC's
    /// grammar: none of their characters shows, and the host, port and path
    /// do.
    #[test]
    fn passwords_with_delimiters_never_show() {
        for (url, shown) in [
            ("redis://:s3cr/et@host:6379/0", "redis://:****@host:6379/0"),
            ("postgres://app:pa/ss@db/app", "postgres://app:****@db/app"),
            ("mysql://u:p?w#d@h/db", "mysql://u:****@h/db"),
            ("redis://:a@b@host/1", "redis://:****@host/1"),
            ("redis://:pa:ss@host", "redis://:****@host"),
            (
                "redis+cluster://:pw@h1:1,h2:2",
                "redis+cluster://:****@h1:1,h2:2",
            ),
            ("redis://:a/b?c#d@e:f@host:1/2", "redis://:****@host:1/2"),
            ("rediss://to/k?e#n@host", "rediss://****@host"),
            (
                "postgres://u:p%40ss@h:5432/db",
                "postgres://u:****@h:5432/db",
            ),
            ("mysql://u:pw@h/db?a=b@c", "mysql://u:****@c"),
            (
                "postgres://h/db?sslmode=require&password=s3cret&x=1#f",
                "postgres://h/db?sslmode=require&password=****&x=1#f",
            ),
            (
                "postgres://u:pw@h/db?sslpassword=s3cret",
                "postgres://u:****@h/db?sslpassword=****",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    /// Random passwords drawn from the characters a URL may hold (and some
    /// it may not): the user-info is always exactly `user:****`, so no
    /// character of the password shows, and all after its `@` does.
    #[test]
    fn random_passwords_never_show() {
        const CHARS: &[u8] = b"abcXYZ019/?#@:%&=+-._~!$'()*,;[] ";
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % CHARS.len() as u64).unwrap_or(0)
        };
        for n in 0..3000 {
            let password: String = (0..12).map(|_| char::from(CHARS[next()])).collect();
            let (url, shown) = match n % 3 {
                0 => (
                    format!("redis://:{password}@host:6379/0"),
                    "redis://:****@host:6379/0",
                ),
                1 => (
                    format!("postgres://app:{password}@db:5432/app?sslmode=require"),
                    "postgres://app:****@db:5432/app?sslmode=require",
                ),
                _ => (
                    format!("redis+cluster://u:{password}@h1:1,h2:2"),
                    "redis+cluster://u:****@h1:1,h2:2",
                ),
            };
            assert_eq!(redact_url(&url), shown, "{url}");
        }
    }
}
