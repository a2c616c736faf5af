//! The example dashboard in a real browser: Debian's Chromium, headless,
//! driven through the chromedriver that `tests/run` starts
//! (tests/servers/chromium.sh, `CLOAKROOM_CHROMEDRIVER_URL`), against the
//! dashboard served in-process on a free loopback port.
//!
//! The journey: log in, see the overview, switch project, reload and still
//! see it, see it fit a 360 px window, log out, go back and reload and land
//! on the login page. Then, on a dashboard whose sessions expire after 2 s
//! idle: a form sent from a page left open lands on the login page with
//! "Your session has expired, please sign in again" (not a CSRF error),
//! and a page asked for with an expired session comes back after signing
//! in; the login page fits 360 px too. Screenshots:
//! `dashboard-overview.png`, `dashboard-overview-narrow.png` (360 px),
//! `dashboard-session-expired.png`, `dashboard-login-narrow.png` (360 px).
//! They are written under `CLOAKROOM_SCREENSHOT_DIR`, by default the run's
//! directory, so a run leaves the clone clean; the checked-in copies are
//! refreshed with `CLOAKROOM_SCREENSHOT_DIR=$PWD/tests/output`.
//!
//! Without `CLOAKROOM_CHROMEDRIVER_URL` the test fails: run it through
//! `bash tests/run`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cloakroom::memory::MemoryStore;
use cloakroom::{Engine, SessionLayer};
use cloakroom_tests::required_env;
use dashboard::{DashboardSettings, DemoUser};
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// How long any one page may take to show what the test waits for.
const PAGE_WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_switch_project_reload_log_out_in_chromium() {
    let webdriver = required_env("CLOAKROOM_CHROMEDRIVER_URL");
    let binary =
        std::env::var("CLOAKROOM_CHROMIUM_BINARY").unwrap_or_else(|_| "/usr/bin/chromium".into());

    // The dashboard, on the memory engine, on a free loopback port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    let settings = DashboardSettings {
        users: vec![DemoUser::new("admin", "s3cret-admin")],
        projects: vec!["admin".into(), "demo".into(), "alt_demo".into()],
        ..DashboardSettings::default()
    };
    let layer = SessionLayer::new(Engine::store(MemoryStore::new(1000)));
    let server =
        tokio::spawn(async move { axum::serve(listener, dashboard::app(layer, settings)).await });

    // A second one whose sessions expire after 2 s idle, for the expired
    // path (its own port: its own cookies).
    let short_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let short_base = format!(
        "http://{}",
        short_listener.local_addr().expect("an address")
    );
    let short_settings = DashboardSettings {
        users: vec![DemoUser::new("admin", "s3cret-admin")],
        session_timeout: Duration::from_secs(2),
        ..DashboardSettings::default()
    };
    let short_layer = SessionLayer::new(Engine::store(MemoryStore::new(1000)));
    let short_server = tokio::spawn(async move {
        axum::serve(short_listener, dashboard::app(short_layer, short_settings)).await
    });

    // A fresh profile for this browser, under the run's directory.
    let profile = std::env::var_os("CLOAKROOM_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("chromium-profile-{}", std::process::id()));
    std::fs::create_dir_all(&profile).expect("a profile directory");
    let mut capabilities = Capabilities::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": binary,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let browser = ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&webdriver)
        .await
        .unwrap_or_else(|e| panic!("no browser from chromedriver at {webdriver}: {e}"));

    // The journey runs in a task of its own so that a failed assertion still
    // lets the browser be closed here, then fails the test.
    let b = browser.clone();
    let outcome = tokio::spawn(async move {
        journey(b.clone(), base).await;
        expired_session(b, short_base).await;
    })
    .await;
    if let Err(err) = browser.close().await {
        eprintln!("closing the browser: {err}");
    }
    server.abort();
    short_server.abort();
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

async fn journey(b: Client, base: String) {
    // Not logged in: the overview sends to the login page.
    b.goto(&format!("{base}/"))
        .await
        .expect("open the dashboard");
    wait_for(&b, "#login-form").await;
    assert_eq!(path(&b).await, "/auth/login");

    sign_in(&b).await;
    wait_for_text(&b, "#user", "admin").await;
    assert_eq!(path(&b).await, "/");
    assert_eq!(text(&b, "#project").await, "admin");
    assert_eq!(text(&b, "#region").await, "RegionOne");
    assert_eq!(text(&b, "#engine").await, "memory");
    // The expiry in the browser's own clock: the page's script (allowed by
    // its hash in the CSP) replaced the server's UTC time.
    let expires = find(&b, "#expires").await;
    let shown = expires.text().await.expect("element text");
    assert!(
        (shown.starts_with("in 60 minutes, at ") || shown.starts_with("in 59 minutes, at "))
            && !shown.contains("UTC"),
        "{shown}"
    );
    let title = expires.attr("title").await.expect("an attribute");
    assert!(
        title.as_deref().is_some_and(|t| t.ends_with('Z')),
        "{title:?}"
    );
    let cookies = b.get_all_cookies().await.expect("cookies");
    let session = cookies
        .iter()
        .find(|c| c.name() == "sessionid")
        .expect("a session cookie");
    assert_eq!(session.http_only(), Some(true));

    // Switch project, then reload: still there.
    switch_project(&b, "demo").await;
    wait_for_text(&b, "#project", "demo").await;
    b.refresh().await.expect("reload");
    wait_for_text(&b, "#project", "demo").await;
    assert_eq!(text(&b, "#user").await, "admin");

    // A picture of the overview, for people to look at.
    let png = b.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let out = output_dir();
    std::fs::write(out.join("dashboard-overview.png"), png).expect("write the screenshot");

    // At a phone's 360 px: nothing wider than the screen, and a picture.
    b.set_window_size(360, 800).await.expect("a narrow window");
    b.refresh().await.expect("reload");
    wait_for_text(&b, "#project", "demo").await;
    assert_fits_the_width(&b).await;
    let png = b.screenshot().await.expect("a screenshot");
    std::fs::write(out.join("dashboard-overview-narrow.png"), png).expect("write the screenshot");
    b.set_window_size(1280, 900).await.expect("a wide window");

    // Log out, then back and reload: the login page, not the overview.
    find(&b, "#logout-button")
        .await
        .click()
        .await
        .expect("click");
    wait_for(&b, "#login-form").await;
    assert_eq!(path(&b).await, "/auth/login");
    b.back().await.expect("back");
    b.refresh().await.expect("reload");
    wait_for(&b, "#login-form").await;
    assert_eq!(path(&b).await, "/auth/login");
    assert!(
        b.find(Locator::Css("#user")).await.is_err(),
        "the overview is shown after logout"
    );
}

/// Signs in on the page shown (the login form).
/// Picks `project` in the header's form and sends it.
async fn switch_project(b: &Client, project: &str) {
    find(b, "#project-select")
        .await
        .select_by_value(project)
        .await
        .expect("pick a project");
    find(b, "#project-button")
        .await
        .click()
        .await
        .expect("click");
}

async fn sign_in(b: &Client) {
    wait_for(b, "#login-form").await;
    find(b, "#username")
        .await
        .send_keys("admin")
        .await
        .expect("type");
    find(b, "#password")
        .await
        .send_keys("s3cret-admin")
        .await
        .expect("type");
    find(b, "#login-button").await.click().await.expect("click");
}

/// On the dashboard whose sessions expire after 2 s idle: a form sent after
/// that lands on the login page with the message, not a CSRF error; a page
/// asked for after that comes back after signing in again.
async fn expired_session(b: Client, base: String) {
    b.goto(&format!("{base}/"))
        .await
        .expect("open the dashboard");
    sign_in(&b).await;
    wait_for_text(&b, "#user", "admin").await;
    assert_eq!(text(&b, "#flash-1").await, "Signed in as admin.");

    // The page stays open while the session expires; then its form is sent.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    switch_project(&b, "demo").await;
    wait_for_text(
        &b,
        "#login-info",
        "Your session has expired, please sign in again",
    )
    .await;
    assert_eq!(path(&b).await, "/auth/login");
    let source = b.source().await.expect("the page");
    assert!(!source.contains("CSRF"), "{source}");
    let png = b.screenshot().await.expect("a screenshot");
    std::fs::write(output_dir().join("dashboard-session-expired.png"), png)
        .expect("write the screenshot");

    // Signing in again leads to the overview.
    sign_in(&b).await;
    wait_for_text(&b, "#user", "admin").await;
    assert_eq!(path(&b).await, "/");

    // Idle again, then a page with a query: the login page with the
    // message, and after signing in, that very page.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    b.goto(&format!("{base}/?tab=services"))
        .await
        .expect("open a page");
    wait_for_text(
        &b,
        "#login-info",
        "Your session has expired, please sign in again",
    )
    .await;
    sign_in(&b).await;
    wait_for_text(&b, "#user", "admin").await;
    let url = b.current_url().await.expect("the URL");
    assert_eq!(
        (url.path(), url.query()),
        ("/", Some("tab=services")),
        "{url}"
    );

    // The login page at 360 px too.
    b.set_window_size(360, 800).await.expect("a narrow window");
    find(&b, "#logout-button")
        .await
        .click()
        .await
        .expect("click");
    wait_for_text(&b, "#login-info", "You have signed out.").await;
    assert_fits_the_width(&b).await;
    let png = b.screenshot().await.expect("a screenshot");
    std::fs::write(output_dir().join("dashboard-login-narrow.png"), png)
        .expect("write the screenshot");
}

/// Where screenshots go, made if missing: `CLOAKROOM_SCREENSHOT_DIR`, else
/// `screenshots` in the run's directory. The checked-in ones in
/// `tests/output/` are refreshed by pointing the variable there; a plain
/// run leaves the clone as it was (they show the time, so they differ on
/// every run).
fn output_dir() -> PathBuf {
    let out = std::env::var_os("CLOAKROOM_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CLOAKROOM_TEST_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir)
                .join("screenshots")
        });
    std::fs::create_dir_all(&out)
        .unwrap_or_else(|e| panic!("screenshot directory {}: {e}", out.display()));
    out
}

async fn find(b: &Client, css: &str) -> fantoccini::elements::Element {
    b.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
}

async fn text(b: &Client, css: &str) -> String {
    find(b, css).await.text().await.expect("element text")
}

async fn path(b: &Client) -> String {
    b.current_url().await.expect("the URL").path().to_owned()
}

/// Waits until the page has an element matching `css`.
async fn wait_for(b: &Client, css: &str) {
    b.wait()
        .at_most(PAGE_WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} did not appear: {e}"));
}

/// Waits until the element matching `css` reads `want` (the page before a
/// navigation may have the same element with the old text).
async fn wait_for_text(b: &Client, css: &str, want: &str) {
    let deadline = Instant::now() + PAGE_WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(element) = b.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if text == want {
                return;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let source = b.source().await.unwrap_or_default();
    panic!("{css} reads {last:?}, not {want:?}, after {PAGE_WAIT:?}; page:\n{source}");
}

/// The page does not scroll sideways: its content is no wider than the
/// viewport.
async fn assert_fits_the_width(b: &Client) {
    let widths = b
        .execute(
            "return [document.documentElement.scrollWidth, \
             document.documentElement.clientWidth, window.innerWidth];",
            vec![],
        )
        .await
        .expect("the page's widths");
    let widths: Vec<u64> = serde_json::from_value(widths).expect("three numbers");
    let (scroll, client) = (widths[0], widths[1]);
    assert!(client <= 400, "the window is not narrow: {widths:?}");
    assert!(
        scroll <= client,
        "the page scrolls sideways at {client} px: {scroll} px of content ({widths:?})"
    );
}
