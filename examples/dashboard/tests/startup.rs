//! The built binary refuses to listen beyond loopback with the built-in
//! demo accounts.

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
