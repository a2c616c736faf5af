//! The built binary: it refuses to listen beyond loopback with the
//! built-in demo accounts, and logs without colour to a pipe, as text or
//! JSON.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn refuses_demo_accounts_on_all_interfaces() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dashboard"))
        .env("DASHBOARD_ADDR", "0.0.0.0:0")
        .env_remove("DASHBOARD_USERS")
        .env_remove("SESSION_ENGINE")
        .env_remove("SESSION_CACHE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the dashboard binary runs");
    // A dashboard that starts serving would never exit: stop it and fail.
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the dashboard started on 0.0.0.0 with the demo accounts");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("its output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("DASHBOARD_USERS") && stderr.contains("not a loopback address"),
        "{stderr}"
    );
}

/// The first line the dashboard logs on loopback with these variables (its
/// "dashboard listening" line), read from a pipe, which is no terminal.
fn first_log_line(vars: &[(&str, &str)]) -> String {
    use std::io::{BufRead, BufReader};

    let mut command = Command::new(env!("CARGO_BIN_EXE_dashboard"));
    command
        .env("DASHBOARD_ADDR", "127.0.0.1:0")
        .env_remove("SESSION_ENGINE")
        .env_remove("SESSION_CACHE_URL")
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in vars {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("the dashboard binary runs");
    let stderr = child.stderr.take().expect("its stderr");
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stderr).read_line(&mut line);
        let _ = send.send(line);
    });
    let line = receive.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    line.expect("a log line within 30 s")
}

/// Logged to a pipe: no colour codes, fields in one style; as JSON lines
/// with `DASHBOARD_LOG_FORMAT=json`.
#[test]
fn logs_have_no_colour_off_a_terminal_and_can_be_json() {
    let text = first_log_line(&[]);
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(text.contains("dashboard listening"), "{text}");
    assert!(
        text.contains(r#"addr="127.0.0.1:0""#) && text.contains(r#"engine="memory""#),
        "{text}"
    );

    let json = first_log_line(&[("DASHBOARD_LOG_FORMAT", "json")]);
    assert!(!json.contains('\u{1b}'), "{json:?}");
    let event: serde_json::Value = serde_json::from_str(&json).expect("a JSON line");
    assert_eq!(event["level"], "INFO", "{json}");
    assert_eq!(event["fields"]["message"], "dashboard listening", "{json}");
    assert_eq!(event["fields"]["engine"], "memory", "{json}");
    assert_eq!(event["fields"]["users"], 2, "{json}");
}

#[test]
fn an_unknown_log_format_stops_the_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_dashboard"))
        .env("DASHBOARD_ADDR", "127.0.0.1:0")
        .env("DASHBOARD_LOG_FORMAT", "xml")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("the dashboard binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("DASHBOARD_LOG_FORMAT"), "{stderr}");
}
