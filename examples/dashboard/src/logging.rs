//! The log: text (the default) or JSON lines (`DASHBOARD_LOG_FORMAT=json`),
//! on standard error, coloured only when standard error is a terminal (and
//! `NO_COLOR` is not set), filtered by `RUST_LOG` (default `info`).
//!
//! One field style throughout the dashboard: every field is named
//! (`client = ...`, never a bare `%client`), and its value is a number or
//! a string, never a `Debug` rendering (no `Some(...)`). Strings come out
//! quoted and escaped in text (`username="ad\n..."`, so a user name cannot
//! forge a log line) and as JSON strings in JSON.

use std::io::IsTerminal;

use cloakroom::core::config::{ConfigError, Env, Settings};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// `DASHBOARD_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `text`: one line per event, `key=value` fields.
    #[default]
    Text,
    /// `json`: one JSON object per line, fields under `fields`, the
    /// request's span under `span`.
    Json,
}

impl LogFormat {
    /// Reads `DASHBOARD_LOG_FORMAT` from the environment.
    ///
    /// # Errors
    /// A value other than `text` or `json`; the error names the variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_settings(&Env)
    }

    /// Reads `DASHBOARD_LOG_FORMAT` from any source.
    ///
    /// # Errors
    /// A value other than `text` or `json`; the error names the variable.
    pub fn from_settings(s: &dyn Settings) -> Result<Self, ConfigError> {
        match s.get("DASHBOARD_LOG_FORMAT").as_deref() {
            None | Some("text") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(ConfigError::new(
                "DASHBOARD_LOG_FORMAT",
                other,
                "text or json",
            )),
        }
    }
}

/// Whether the text log may be coloured: standard error is a terminal and
/// `NO_COLOR` is unset or empty.
pub fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The subscriber that writes the log in `format` to `writer`, filtered by
/// `filter`, with ANSI colour only if `ansi` (and never in JSON).
pub fn subscriber<W>(
    format: LogFormat,
    ansi: bool,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(builder.json().with_ansi(false).finish()),
    }
}

/// Installs the log on standard error for the process.
///
/// # Errors
/// A subscriber was already installed.
pub fn init(format: LogFormat) -> Result<(), tracing::subscriber::SetGlobalDefaultError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing::subscriber::set_global_default(subscriber(
        format,
        colour_on_stderr(),
        filter,
        std::io::stderr,
    ))
}

/// A log writer for tests: keeps what a subscriber wrote.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl Captured {
    /// Everything written so far.
    pub(crate) fn text(&self) -> String {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    use cloakroom::core::config::from_pairs;

    use super::*;

    fn log_with(format: LogFormat, ansi: bool) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = subscriber(format, ansi, EnvFilter::new("info"), move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                username = "ad\nFORGED",
                client = "192.0.2.1",
                retry_after = 30,
                "login throttled"
            );
        });
        captured.text()
    }

    #[test]
    fn the_format_is_read_and_checked() {
        let read =
            |pairs: &[(&str, &str)]| LogFormat::from_settings(&from_pairs(pairs.iter().copied()));
        assert_eq!(read(&[]), Ok(LogFormat::Text));
        assert_eq!(
            read(&[("DASHBOARD_LOG_FORMAT", "text")]),
            Ok(LogFormat::Text)
        );
        assert_eq!(
            read(&[("DASHBOARD_LOG_FORMAT", "json")]),
            Ok(LogFormat::Json)
        );
        let e = read(&[("DASHBOARD_LOG_FORMAT", "xml")])
            .expect_err("xml")
            .to_string();
        assert!(
            e.contains("DASHBOARD_LOG_FORMAT") && e.contains("json"),
            "{e}"
        );
    }

    #[test]
    fn text_has_no_colour_unless_asked_and_quotes_strings() {
        let plain = log_with(LogFormat::Text, false);
        assert!(!plain.contains('\u{1b}'), "{plain:?}");
        assert_eq!(plain.lines().count(), 1, "{plain}");
        assert!(
            plain.contains(r#"username="ad\nFORGED" client="192.0.2.1" retry_after=30"#),
            "{plain}"
        );
        let coloured = log_with(LogFormat::Text, true);
        assert!(coloured.contains('\u{1b}'), "{coloured:?}");
    }

    #[test]
    fn json_lines_carry_the_fields() {
        let log = log_with(LogFormat::Json, true);
        assert!(!log.contains('\u{1b}'), "{log:?}");
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 1, "{log}");
        let event: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON line");
        assert_eq!(event["level"], "INFO");
        assert_eq!(event["fields"]["message"], "login throttled");
        assert_eq!(event["fields"]["username"], "ad\nFORGED");
        assert_eq!(event["fields"]["client"], "192.0.2.1");
        assert_eq!(event["fields"]["retry_after"], 30);
    }
}
