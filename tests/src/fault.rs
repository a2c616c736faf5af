//! Stopping and restarting a private server during a test, and the outage
//! drill every networked engine goes through.
//!
//! `tests/run` exports, for each server that a fault test may stop,
//! `CLOAKROOM_<NAME>_PIDFILE` (the pid file the server writes) and
//! `CLOAKROOM_<NAME>_START` (a script that starts it again and returns once
//! it answers).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::client::Client;
use crate::required_env;

/// A private server this test may stop and start.
#[derive(Debug, Clone)]
pub struct Server {
    name: String,
    pidfile: PathBuf,
    start: PathBuf,
    signal: String,
}

impl Server {
    /// The server `tests/run` exported as `CLOAKROOM_<NAME>_PIDFILE` and
    /// `CLOAKROOM_<NAME>_START` (`name` is the part between, e.g.
    /// `MARIADB_FAULT`), and optionally `CLOAKROOM_<NAME>_STOP_SIGNAL` (the
    /// signal of a clean, prompt shutdown; `TERM` when unset).
    pub fn from_env(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            pidfile: required_env(&format!("CLOAKROOM_{name}_PIDFILE")).into(),
            start: required_env(&format!("CLOAKROOM_{name}_START")).into(),
            signal: std::env::var(format!("CLOAKROOM_{name}_STOP_SIGNAL"))
                .unwrap_or_else(|_| "TERM".to_owned()),
        }
    }

    fn pid(&self) -> Option<String> {
        std::fs::read_to_string(&self.pidfile)
            .ok()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
    }

    fn alive(pid: &str) -> bool {
        Command::new("kill")
            .args(["-0", pid])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Stops the server with its clean-shutdown signal (which keeps what the
    /// server had acknowledged, if it persists at all) and waits until its
    /// process is gone.
    pub fn stop(&self) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{}: no pid in {}", self.name, self.pidfile.display()));
        let killed = Command::new("kill").args([format!("-{}", self.signal).as_str(), &pid]).status();
        assert!(
            killed.is_ok_and(|s| s.success()),
            "{}: kill {pid} failed",
            self.name
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while Self::alive(&pid) {
            assert!(
                Instant::now() < deadline,
                "{}: pid {pid} does not exit",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again with its start script; returns once it answers.
    pub fn start(&self) {
        let status = Command::new("bash")
            .arg(&self.start)
            .status()
            .unwrap_or_else(|e| panic!("{}: cannot run {}: {e}", self.name, self.start.display()));
        assert!(
            status.success(),
            "{}: {} failed",
            self.name,
            self.start.display()
        );
    }
}

/// Starts the server again when dropped, so a failing test does not leave it
/// down for the tests after it.
#[derive(Debug)]
pub struct Restart<'a>(pub &'a Server);

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        if self.0.pid().is_none_or(|pid| !Server::alive(&pid)) {
            self.0.start();
        }
    }
}

/// What an outage drill measured.
#[derive(Debug, Clone)]
pub struct Outage {
    /// Requests answered while the server was down.
    pub requests: usize,
    /// The slowest answer during the outage.
    pub slowest: Duration,
    /// From the restart until the first success.
    pub recovery: Duration,
}

/// The drill of issue "faults": the client's session holds `k = before`;
/// the server is stopped; for `outage` every request must answer 503 within
/// 2 s; the server is restarted and requests must succeed again within 5 s,
/// in the same process; and the value written before the outage must still
/// be there (pass `durable = false` for an engine that cannot promise it).
pub async fn drill(
    client: &mut Client,
    server: &Server,
    outage: Duration,
    durable: bool,
) -> Outage {
    let reply = client.get("/set/k/before").await;
    assert_eq!(reply.status, StatusCode::OK, "before the outage: {reply:?}");
    assert_eq!(client.get("/get/k").await.body, "before");

    let _restart = Restart(server);
    server.stop();
    let started = Instant::now();
    let mut requests = 0;
    let mut slowest = Duration::ZERO;
    while started.elapsed() < outage {
        // Alternate reads and writes: both must fail fast.
        let path = if requests % 2 == 0 {
            "/get/k"
        } else {
            "/set/k/during"
        };
        let sent = Instant::now();
        let reply = tokio::time::timeout(Duration::from_secs(5), client.get(path))
            .await
            .unwrap_or_else(|_| panic!("{path} hung for 5 s during the outage"));
        let took = sent.elapsed();
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path} during the outage: {reply:?}"
        );
        assert!(
            took <= Duration::from_secs(2),
            "{path} took {took:?} during the outage"
        );
        slowest = slowest.max(took);
        requests += 1;
    }

    server.start();
    let restarted = Instant::now();
    loop {
        let reply = client.get("/get/k").await;
        if reply.status == StatusCode::OK {
            if durable {
                assert_eq!(
                    reply.body, "before",
                    "a write acknowledged before the outage was lost"
                );
            }
            break;
        }
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
        assert!(
            restarted.elapsed() <= Duration::from_secs(5),
            "no recovery within 5 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovery = restarted.elapsed();
    let reply = client.get("/set/k/after").await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "writes after recovery: {reply:?}"
    );
    let report = Outage {
        requests,
        slowest,
        recovery,
    };
    // Printed for the README's figures (`cargo test -- --nocapture`).
    println!("outage drill: {report:?}");
    report
}
