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

    fn read_pid(&self) -> Option<String> {
        std::fs::read_to_string(&self.pidfile)
            .ok()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
    }

    /// The server's current pid.
    pub fn pid(&self) -> String {
        self.read_pid()
            .unwrap_or_else(|| panic!("{}: no pid in {}", self.name, self.pidfile.display()))
    }

    fn alive(pid: &str) -> bool {
        signal("-0", pid)
    }

    /// Kills the server (SIGKILL, as a crash) and waits until it is gone.
    pub async fn kill(&self) {
        let pid = self.pid();
        assert!(signal("-KILL", &pid), "{}: kill {pid} failed", self.name);
        while Self::alive(&pid) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Freezes the server (SIGSTOP), so that it accepts connections but never
    /// answers, until the returned guard is dropped (SIGCONT). Returns once
    /// every thread has stopped: the signal reaches the threads of a
    /// multi-threaded server one by one.
    pub async fn pause(&self) -> Paused {
        let pid = self.pid();
        assert!(signal("-STOP", &pid), "{}: stop {pid} failed", self.name);
        let paused = Paused(pid);
        let deadline = Instant::now() + Duration::from_secs(2);
        while !paused.all_threads_stopped() {
            assert!(
                Instant::now() < deadline,
                "{}: {} did not stop",
                self.name,
                paused.0
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        paused
    }

    /// Stops the server with its clean-shutdown signal (which keeps what the
    /// server had acknowledged, if it persists at all) and waits until its
    /// process is gone.
    pub fn stop(&self) {
        let pid = self.pid();
        let sent = signal(&format!("-{}", self.signal), &pid);
        assert!(sent, "{}: kill -{} {pid} failed", self.name, self.signal);
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

/// Sends `sig` (as `kill` spells it: `-STOP`, `-0`, ...) to `pid`; true if
/// it was delivered.
pub fn signal(sig: &str, pid: &str) -> bool {
    Command::new("kill")
        .args([sig, pid])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A server frozen by [`Server::pause`]; dropping it lets the server go on,
/// also when the test fails, so the run's cleanup can stop it.
#[derive(Debug)]
pub struct Paused(String);

impl Paused {
    fn all_threads_stopped(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.0)) else {
            return true;
        };
        tasks.filter_map(Result::ok).all(|t| {
            std::fs::read_to_string(t.path().join("stat"))
                // The state follows the parenthesized command name.
                .map(|stat| {
                    stat.rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('T'))
                })
                .unwrap_or(true)
        })
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal("-CONT", &self.0);
    }
}

/// Sends `GET path` from four copies of `client` at once for `for_how_long`;
/// every answer must come within 2 s. Returns the statuses seen.
pub async fn flood(client: &Client, path: &str, for_how_long: Duration) -> Vec<StatusCode> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut client = client.replay();
        let stop = std::sync::Arc::clone(&stop);
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let started = Instant::now();
                let reply = client.get(&path).await;
                let took = started.elapsed();
                assert!(
                    took < Duration::from_secs(2),
                    "an answer took {took:?}: {reply:?}"
                );
                seen.push(reply.status);
            }
            seen
        }));
    }
    tokio::time::sleep(for_how_long).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("a flooding client panicked"));
    }
    all
}

/// Asserts that a flood saw answers and that each was a 503.
pub fn all_unavailable(statuses: &[StatusCode]) {
    assert!(!statuses.is_empty(), "no answers at all");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
}

/// Waits until `GET path` answers 200 again, at most `limit` (only 503s
/// meanwhile), checks the body is `expected` when given (what was written
/// before the outage), and returns how long it took.
pub async fn recovers_within(
    client: &mut Client,
    path: &str,
    limit: Duration,
    expected: Option<&str>,
) -> Duration {
    let started = Instant::now();
    loop {
        let reply = client.get(path).await;
        if reply.status == StatusCode::OK {
            if let Some(expected) = expected {
                assert_eq!(
                    reply.body, expected,
                    "a write from before the outage was lost"
                );
            }
            return started.elapsed();
        }
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
        assert!(started.elapsed() < limit, "no recovery within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the server again when dropped, so a failing test does not leave it
/// down for the tests after it.
#[derive(Debug)]
pub struct Restart<'a>(pub &'a Server);

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        if self.0.read_pid().is_none_or(|pid| !Server::alive(&pid)) {
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
    let expected = durable.then_some("before");
    let recovery = recovers_within(client, "/get/k", Duration::from_secs(5), expected).await;
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
    println!("outage drill on {}: {report:?}", server.name);
    report
}
