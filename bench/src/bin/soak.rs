//! The soak test: `cargo run --release -p cloakroom-bench --bin soak`.
//!
//! Starts a session app in a child process (this binary with `serve`), on
//! the engine the `SESSION_*` variables pick, and drives it over loopback
//! HTTP with `SOAK_CONNECTIONS` (default 64) concurrent clients for
//! `SOAK_SECONDS` (default 300). Each client increments a counter in its
//! session and starts a new session every 50 requests, so the memory engine
//! fills up past its bound and must evict. Every 10 s it prints the child's
//! resident memory; at the end it fails (exit 1) on any unexpected error or
//! lost update, or when resident memory grew by more than 20 % between the
//! end of the warm-up (the first third) and the end.
//!
//! Memory engine: `SESSION_CACHE_MAX_ENTRIES=20000 cargo run --release -p cloakroom-bench --bin soak`
//! Redis: add `SESSION_CACHE_URL=redis://127.0.0.1:PORT/0` (loopback only).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use cloakroom::SessionLayer;
use http::Request;
use http::header::{COOKIE, SET_COOKIE};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => fail(&format!("no tokio runtime: {err}")),
    };
    let code = if std::env::args().nth(1).as_deref() == Some("serve") {
        runtime.block_on(serve())
    } else {
        runtime.block_on(drive())
    };
    std::process::exit(code);
}

fn fail(message: &str) -> ! {
    eprintln!("soak: {message}");
    std::process::exit(2);
}

/// The child: the write workload behind `SessionLayer::from_env()`, on an
/// ephemeral loopback port that it prints first.
async fn serve() -> i32 {
    let layer = match SessionLayer::try_from_env() {
        Ok(layer) => layer,
        Err(err) => fail(&err.to_string()),
    };
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(err) => fail(&format!("bind: {err}")),
    };
    match listener.local_addr() {
        Ok(addr) => println!("{addr}"),
        Err(err) => fail(&format!("address: {err}")),
    }
    match axum::serve(listener, cloakroom_bench::apps::cloakroom(layer)).await {
        Ok(()) => 0,
        Err(err) => fail(&format!("serve: {err}")),
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

async fn drive() -> i32 {
    let seconds = env_u64("SOAK_SECONDS", 300);
    let connections = env_u64("SOAK_CONNECTIONS", 64);
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => fail(&format!("own path: {err}")),
    };
    let mut child = match tokio::process::Command::new(exe)
        .arg("serve")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(err) => fail(&format!("spawn the server: {err}")),
    };
    let pid = child.id().unwrap_or(0);
    let addr = {
        use tokio::io::AsyncBufReadExt;
        let Some(stdout) = child.stdout.take() else {
            fail("no stdout")
        };
        let mut line = String::new();
        let _ = tokio::io::BufReader::new(stdout).read_line(&mut line).await;
        line.trim().to_owned()
    };
    if addr.is_empty() {
        fail("the server printed no address");
    }
    println!("soak: {connections} connections for {seconds}s against {addr} (pid {pid})");

    let client: Client<_, Body> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::try_from(connections).unwrap_or(64))
        .build_http();
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, ok, errors, addr) = (
            client.clone(),
            Arc::clone(&ok),
            Arc::clone(&errors),
            addr.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut cookie: Option<String> = None;
            let mut expected = 0u64;
            while Instant::now() < deadline {
                if expected == 50 {
                    cookie = None;
                    expected = 0;
                }
                let mut request = Request::get(format!("http://{addr}/write"));
                if let Some(c) = &cookie {
                    request = request.header(COOKIE, c.as_str());
                }
                let Ok(request) = request.body(Body::empty()) else {
                    break;
                };
                let good = match client.request(request).await {
                    Ok(response) if response.status().is_success() => {
                        if let Some(set) = response
                            .headers()
                            .get(SET_COOKIE)
                            .and_then(|v| v.to_str().ok())
                        {
                            cookie = set.split(';').next().map(str::to_owned);
                        }
                        let body = response.into_body().collect().await.map(|b| b.to_bytes());
                        expected += 1;
                        // The counter must be exactly what this client wrote.
                        body.is_ok_and(|b| b == expected.to_string().as_bytes())
                    }
                    _ => false,
                };
                if good {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    cookie = None;
                    expected = 0;
                }
            }
        }));
    }

    let started = Instant::now();
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(
            Duration::from_secs(10).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
        let rss = rss_kib(pid);
        samples.push((started.elapsed().as_secs(), rss));
        println!(
            "soak: t={:>4}s requests={:>9} errors={} rss={} KiB",
            started.elapsed().as_secs(),
            ok.load(Ordering::Relaxed),
            errors.load(Ordering::Relaxed),
            rss
        );
    }
    for task in tasks {
        let _ = task.await;
    }
    let _ = child.kill().await;

    let total = ok.load(Ordering::Relaxed);
    let errors = errors.load(Ordering::Relaxed);
    let warm = samples
        .iter()
        .find(|(t, _)| *t >= seconds / 3)
        .map_or(0, |(_, rss)| *rss);
    let last = samples.last().map_or(0, |(_, rss)| *rss);
    let growth = if warm > 0 {
        last as f64 / warm as f64 - 1.0
    } else {
        0.0
    };
    println!(
        "soak: {total} requests ({:.0}/s), {errors} errors, rss after warm-up {warm} KiB, at the end {last} KiB ({:+.1} %)",
        total as f64 / seconds.max(1) as f64,
        growth * 100.0
    );
    if errors > 0 || growth > 0.20 || total == 0 {
        println!("soak: FAILED");
        1
    } else {
        println!("soak: passed");
        0
    }
}
