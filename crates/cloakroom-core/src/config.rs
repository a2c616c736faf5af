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

/// A URL with any password replaced by `****`, fit for errors and logs:
/// `redis://:secret@host/0` becomes `redis://:****@host/0`. Works on lists of
/// hosts (`redis+cluster://u:p@h1,h2`) too, since only the part before the
/// last `@` of the authority is touched.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let masked = if userinfo.contains(':') {
                format!("{user}:****")
            } else {
                "****".to_owned()
            };
            format!("{scheme}://{masked}@{hosts}{tail}")
        }
        None => url.to_owned(),
    }
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
    }
}
