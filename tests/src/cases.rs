//! The conformance cases. Each takes a fresh engine, builds the test app on
//! it, and checks one behaviour of the session layer over HTTP.

use std::sync::Arc;
use std::time::Duration;

use cloakroom::{Engine, Expiry, SameSite, SessionLayer};
use http::StatusCode;

use crate::app::Gate;
use crate::client::{Client, Reply};
use crate::probe::{Counts, Probe};

const NAME: &str = "sessionid";

/// A client of the test app on `engine` (wrapped in a [`Probe`]), with the
/// layer adjusted by `configure`.
pub fn setup(
    engine: Engine,
    configure: impl FnOnce(SessionLayer) -> SessionLayer,
) -> (Client, Arc<Counts>, Arc<Gate>) {
    let (engine, counts) = Probe::wrap(engine);
    let gate = Arc::new(Gate::default());
    let layer = configure(SessionLayer::new(engine));
    (Client::new(layer, Arc::clone(&gate)), counts, gate)
}

fn ok(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::OK, "unexpected reply: {reply:?}");
}

fn session_cookie(reply: &Reply) -> &crate::client::SetCookie {
    reply
        .cookie(NAME)
        .unwrap_or_else(|| panic!("no session cookie set: {reply:?}"))
}

/// A first write sets a session cookie with the secure defaults.
pub async fn new_session_sets_cookie(engine: Engine) {
    let server_side = engine.is_server_side();
    let (mut client, _, _) = setup(engine, |l| l);
    let reply = client.get("/set/a/1").await;
    ok(&reply);
    let cookie = session_cookie(&reply);
    if server_side {
        assert_eq!(cookie.value.len(), 43, "an id is 43 base64url characters");
        assert!(
            cookie
                .value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
    let a = &cookie.attributes;
    assert!(a.contains_key("httponly"), "HttpOnly: {a:?}");
    assert_eq!(a.get("samesite").map(String::as_str), Some("Lax"));
    assert_eq!(a.get("path").map(String::as_str), Some("/"));
    assert_eq!(cookie.max_age(), Some(1_209_600));
    assert!(a.contains_key("expires"));
    assert!(
        !a.contains_key("secure") && !a.contains_key("domain"),
        "{a:?}"
    );
    assert!(reply.varies_on_cookie());
    ok(&client.get("/get/a").await);
    assert_eq!(client.get("/get/a").await.body, "1");
}

/// Cookie attributes follow the settings.
pub async fn configured_cookie_attributes(engine: Engine) {
    let (mut client, _, _) = setup(engine, |l| {
        l.with_cookie_name("dash")
            .with_domain("example.test")
            .with_path("/app")
            .with_secure(true)
            .with_same_site(Some(SameSite::Strict))
            .with_cookie_age(Duration::from_secs(600))
    });
    let reply = client.get("/set/a/1").await;
    ok(&reply);
    assert!(reply.cookie(NAME).is_none());
    let cookie = reply.cookie("dash").expect("cookie named by the settings");
    let a = &cookie.attributes;
    assert_eq!(a.get("domain").map(String::as_str), Some("example.test"));
    assert_eq!(a.get("path").map(String::as_str), Some("/app"));
    assert!(a.contains_key("secure") && a.contains_key("httponly"));
    assert_eq!(a.get("samesite").map(String::as_str), Some("Strict"));
    assert_eq!(cookie.max_age(), Some(600));
    assert_eq!(client.get("/age").await.body, "600");
}

/// Reading does not write, and does not set the cookie again.
pub async fn read_only_request_writes_nothing(engine: Engine) {
    let (mut client, counts, _) = setup(engine, |l| l);
    ok(&client.get("/set/a/1").await);
    let before = counts.snapshot();
    let reply = client.get("/get/a").await;
    ok(&reply);
    assert_eq!(reply.body, "1");
    assert!(reply.set_cookies.is_empty(), "{:?}", reply.set_cookies);
    assert!(reply.varies_on_cookie());
    let after = counts.snapshot();
    assert_eq!(
        after.writes(),
        before.writes(),
        "a read wrote: {before:?} -> {after:?}"
    );
}

/// A handler that never touches the session costs no store call and gets no
/// `Vary: Cookie`.
pub async fn untouched_session_costs_no_io(engine: Engine) {
    let (mut client, counts, _) = setup(engine, |l| l);
    ok(&client.get("/set/a/1").await);
    let before = counts.snapshot();
    let reply = client.get("/noop").await;
    ok(&reply);
    assert!(reply.set_cookies.is_empty());
    assert!(!reply.varies_on_cookie());
    assert_eq!(counts.snapshot(), before);
}

/// Changes are saved and seen by the next request; the id stays.
pub async fn modifications_are_saved(engine: Engine) {
    let (mut client, _, _) = setup(engine, |l| l);
    ok(&client.get("/set/a/1").await);
    let first = client.jar.get(NAME).cloned();
    ok(&client.get("/set/b/2").await);
    assert_eq!(client.get("/get/a").await.body, "1");
    assert_eq!(client.get("/get/b").await.body, "2");
    assert_eq!(client.get("/remove/a").await.body, "1");
    assert_eq!(client.get("/get/a").await.body, "none");
    assert_eq!(client.get("/get/b").await.body, "2");
    if first.as_ref().is_some_and(|v| v.len() == 43) {
        assert_eq!(
            client.jar.get(NAME),
            first.as_ref(),
            "a server-side id must not change"
        );
    }
    // Another browser does not see it.
    let mut stranger = setup_like(&client);
    assert_eq!(stranger.get("/get/b").await.body, "none");
}

fn setup_like(client: &Client) -> Client {
    let mut other = client.replay();
    other.jar.clear();
    other
}

/// With `SESSION_SAVE_EVERY_REQUEST` (and no touch threshold), a read
/// extends the session: the cookie is sent again, and a server-side store
/// gets a touch, not a rewrite.
pub async fn save_every_request_touches(engine: Engine) {
    let server_side = engine.is_server_side();
    let (mut client, counts, _) = setup(engine, |l| {
        l.with_save_every_request(true)
            .with_touch_after(Duration::ZERO)
    });
    ok(&client.get("/set/a/1").await);
    let value = client.jar.get(NAME).cloned();
    let before = counts.snapshot();
    let reply = client.get("/get/a").await;
    ok(&reply);
    assert_eq!(reply.body, "1");
    let cookie = session_cookie(&reply);
    assert_eq!(cookie.max_age(), Some(1_209_600));
    if server_side {
        assert_eq!(Some(&cookie.value), value.as_ref(), "same id re-sent");
        let after = counts.snapshot();
        assert_eq!(after.touch, before.touch + 1, "{before:?} -> {after:?}");
        assert_eq!(after.update, before.update, "a rewrite instead of a touch");
    }
    assert_eq!(client.get("/get/a").await.body, "1");
}

/// Setting the same idle timeout again (Horizon's `SESSION_TIMEOUT`) is a
/// touch (with no touch threshold), and the new deadline holds.
pub async fn refreshed_idle_timeout_touches(engine: Engine) {
    let (mut client, counts, _) = setup(engine, |l| l.with_touch_after(Duration::ZERO));
    ok(&client.get("/expiry/idle/2").await);
    ok(&client.get("/set/a/1").await);
    let before = counts.snapshot();
    let reply = client.get("/expiry/idle/2").await;
    ok(&reply);
    assert_eq!(session_cookie(&reply).max_age(), Some(2));
    let after = counts.snapshot();
    assert_eq!(after.touch, before.touch + 1);
    assert_eq!(after.update, before.update);
    // Each refresh moves the deadline: 3 s in all, past the first deadline.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        ok(&client.get("/expiry/idle/2").await);
    }
    assert_eq!(client.get("/get/a").await.body, "1");
}

/// A renewal that would move an unchanged session's deadline by less than
/// the touch threshold writes nothing (no touch, no cookie), whether it is
/// an idle timeout set again or `SESSION_SAVE_EVERY_REQUEST`; once the
/// threshold has passed, the next one is written, and the cookie carries
/// the deadline stored. A change is written whatever the threshold.
pub async fn small_renewals_write_nothing(engine: Engine) {
    let server_side = engine.is_server_side();
    let (mut client, counts, _) = setup(engine, |l| {
        l.with_save_every_request(true)
            .with_touch_after(Duration::from_secs(2))
    });
    ok(&client.get("/set/a/1").await);
    ok(&client.get("/expiry/idle/60").await);
    let before = counts.snapshot();
    for path in ["/expiry/idle/60", "/get/a", "/noop", "/expiry/idle/60"] {
        let reply = client.get(path).await;
        ok(&reply);
        assert!(reply.cookie(NAME).is_none(), "{path}: {reply:?}");
    }
    let after = counts.snapshot();
    assert_eq!(
        (after.touch, after.update, after.create),
        (before.touch, before.update, before.create),
        "{before:?} -> {after:?}"
    );
    let reply = client.get("/set/a/2").await;
    assert_eq!(session_cookie(&reply).max_age(), Some(60), "{reply:?}");

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let before = counts.snapshot();
    let reply = client.get("/expiry/idle/60").await;
    ok(&reply);
    assert_eq!(session_cookie(&reply).max_age(), Some(60), "{reply:?}");
    if server_side {
        let after = counts.snapshot();
        assert_eq!(after.touch, before.touch + 1, "{before:?} -> {after:?}");
        assert_eq!(after.update, before.update, "{before:?} -> {after:?}");
    }
    assert_eq!(client.get("/get/a").await.body, "2");
}

/// `SessionLayer::with_expiry(Expiry::OnInactivity(..))`: every session
/// gets the idle timeout as its cookie's `Max-Age` and its server-side
/// deadline, and a request that only reads the session renews it (a touch,
/// never a rewrite) once that moves the deadline by the touch threshold;
/// below the threshold it writes nothing. A session left idle for longer
/// than the period is over.
pub async fn layer_idle_expiry_slides_on_reads(engine: Engine) {
    let server_side = engine.is_server_side();
    let (mut client, counts, _) = setup(engine, |l| {
        l.with_expiry(Expiry::OnInactivity(cloakroom::time::Duration::seconds(2)))
            .with_touch_after(Duration::from_millis(500))
    });
    let reply = client.get("/set/a/1").await;
    ok(&reply);
    assert_eq!(session_cookie(&reply).max_age(), Some(2), "{reply:?}");
    let before = counts.snapshot();
    let reply = client.get("/get/a").await;
    assert_eq!(reply.body, "1");
    assert!(
        reply.cookie(NAME).is_none(),
        "below the threshold: {reply:?}"
    );
    assert_eq!(counts.snapshot().writes(), before.writes());
    // Reads alone keep it alive past its first deadline (2.4 s > 2 s).
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let reply = client.get("/get/a").await;
        assert_eq!(reply.body, "1", "{reply:?}");
        assert_eq!(session_cookie(&reply).max_age(), Some(2), "{reply:?}");
    }
    if server_side {
        let after = counts.snapshot();
        assert_eq!(after.touch, before.touch + 3, "{before:?} -> {after:?}");
        assert_eq!(after.update, before.update, "{before:?} -> {after:?}");
    }
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(client.get("/get/a").await.body, "none", "idle for too long");
}

/// `cycle_id` keeps the data under a new id; the old cookie opens nothing.
pub async fn cycle_id_issues_new_id_and_retires_old(engine: Engine) {
    let (mut client, _, _) = setup(engine, |l| l);
    ok(&client.get("/set/user/ada").await);
    let old = client.replay();
    let old_value = client.jar.get(NAME).cloned();
    let reply = client.get("/cycle").await;
    ok(&reply);
    let new_value = session_cookie(&reply).value.clone();
    assert_ne!(Some(&new_value), old_value.as_ref());
    assert_eq!(client.get("/get/user").await.body, "ada");
    let mut old = old;
    assert_eq!(
        old.get("/get/user").await.body,
        "none",
        "the old id still works"
    );
}

/// `flush` removes the cookie and the old cookie no longer opens the session.
pub async fn flush_revokes_server_side(engine: Engine) {
    let (mut client, _, _) = setup(engine, |l| l);
    ok(&client.get("/set/user/ada").await);
    let mut thief = client.replay();
    let reply = client.get("/flush").await;
    ok(&reply);
    assert!(session_cookie(&reply).is_removal(), "{reply:?}");
    assert!(client.jar.is_empty());
    assert_eq!(client.get("/get/user").await.body, "none");
    let stolen = thief.jar.get(NAME).cloned();
    assert_eq!(
        thief.get("/get/user").await.body,
        "none",
        "replayed cookie still logged in"
    );
    // Writing through the dead id gives a new one, never the old.
    let reply = thief.get("/set/x/1").await;
    assert_ne!(Some(&session_cookie(&reply).value), stolen.as_ref());
}

/// Cookie engines: `flush` removes the cookie, but a copy taken before stays
/// valid until its deadline (the documented limit of client-side sessions).
pub async fn flush_removes_cookie_but_cannot_revoke_copies(engine: Engine) {
    let (mut client, _, _) = setup(engine, |l| l);
    ok(&client.get("/set/user/ada").await);
    let mut copy = client.replay();
    let reply = client.get("/flush").await;
    ok(&reply);
    assert!(session_cookie(&reply).is_removal());
    assert_eq!(client.get("/get/user").await.body, "none");
    assert_eq!(
        copy.get("/get/user").await.body,
        "ada",
        "cookie engines cannot revoke"
    );
}

/// A session emptied by `clear` is deleted and its cookie removed.
pub async fn clear_removes_session(engine: Engine) {
    let (mut client, _, _) = setup(engine, |l| l);
    ok(&client.get("/set/a/1").await);
    let server_side = client.jar.get(NAME).is_some_and(|v| v.len() == 43);
    let mut old = client.replay();
    let reply = client.get("/clear").await;
    ok(&reply);
    assert!(session_cookie(&reply).is_removal(), "{reply:?}");
    assert_eq!(client.get("/get/a").await.body, "none");
    if server_side {
        assert_eq!(old.get("/get/a").await.body, "none");
    }
}

/// The server enforces the deadline, whatever the client keeps sending.
pub async fn expiry_enforced_on_server(engine: Engine) {
    let (mut client, _, _) = setup(engine, |l| l);
    ok(&client.get("/expiry/idle/1").await);
    let reply = client.get("/set/a/1").await;
    ok(&reply);
    assert_eq!(session_cookie(&reply).max_age(), Some(1));
    assert_eq!(client.get("/get/a").await.body, "1");
    // The client ignores Max-Age and keeps sending the cookie.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(client.get("/get/a").await.body, "none");
}

/// Browser-close sessions have no `Max-Age`/`Expires`, by setting or per session.
pub async fn browser_close_sessions_have_no_max_age(engine: Engine) {
    let (mut client, _, _) = setup(engine.clone(), |l| l);
    ok(&client.get("/expiry/browser").await);
    let reply = client.get("/set/a/1").await;
    let cookie = session_cookie(&reply);
    assert!(
        cookie.max_age().is_none() && !cookie.attributes.contains_key("expires"),
        "{cookie:?}"
    );
    assert_eq!(client.get("/get/a").await.body, "1");

    let (mut client, _, _) = setup(engine, |l| l.with_expire_at_browser_close(true));
    let reply = client.get("/set/a/1").await;
    let cookie = session_cookie(&reply);
    assert!(cookie.max_age().is_none(), "{cookie:?}");
    // A session's own expiry beats the setting.
    let reply = client.get("/expiry/idle/100").await;
    assert_eq!(session_cookie(&reply).max_age(), Some(100));
}

/// Garbage, empty, 1-byte, 4 KB, 64 KB, wrong-alphabet, non-UTF-8, repeated
/// and truncated-chunk cookies, and oversized headers start a fresh session,
/// never a 5xx, never another session's data, and never reach the store.
pub async fn malformed_cookies_start_fresh_without_store(engine: Engine) {
    let (client, counts, _) = setup(engine, |l| l);
    let long = format!("{NAME}={}", "A".repeat(20_000));
    let wrong_alphabet = format!("{NAME}={}", "+/".repeat(21) + "=");
    let bad_base64 = format!("{NAME}={}", "A".repeat(42) + "B");
    let inputs: Vec<Vec<u8>> = vec![
        format!("{NAME}=garbage").into_bytes(),
        format!("{NAME}=").into_bytes(),
        long.into_bytes(),
        wrong_alphabet.into_bytes(),
        bad_base64.into_bytes(),
        format!("{NAME}=\u{e9}t\u{e9}").into_bytes(),
        [format!("{NAME}=").as_bytes(), &[0xff, 0xfe, 0x80]].concat(),
        format!("{NAME}=chunks-3; {NAME}.1=abc").into_bytes(),
        format!("{NAME}=chunks-2; {NAME}.1={}", "A".repeat(4000)).into_bytes(),
        b";;;=;=".to_vec(),
        format!("{NAME}=A").into_bytes(),
        format!("{NAME}={}", "A".repeat(4096)).into_bytes(),
        format!("{NAME}={}", "x".repeat(64 * 1024)).into_bytes(),
        // Many cookies of the session's name, none valid.
        vec![format!("{NAME}=junk"); 200].join("; ").into_bytes(),
        // Past what common servers accept in one header.
        format!("other={}; {NAME}=junk", "y".repeat(100 * 1024)).into_bytes(),
    ];
    for input in inputs {
        let reply = client.get_with_raw_cookie("/get/a", &input).await;
        assert_eq!(reply.status, StatusCode::OK, "{input:?}: {reply:?}");
        assert_eq!(reply.body, "none");
        let reply = client.get_with_raw_cookie("/set/a/1", &input).await;
        assert_eq!(reply.status, StatusCode::OK, "{input:?}: {reply:?}");
        let issued = session_cookie(&reply).value.as_bytes().to_vec();
        assert!(!input.ends_with(&issued), "a malformed value was adopted");
    }
    assert_eq!(
        counts.snapshot().load,
        0,
        "a malformed cookie reached the store"
    );
}

/// A well-formed id the store does not know is never adopted.
pub async fn unknown_id_is_not_adopted(engine: Engine) {
    let (client, counts, _) = setup(engine, |l| l);
    let planted = cloakroom_core::Id::generate().expect("random");
    let header = format!("{NAME}={}", planted.expose());
    let reply = client
        .get_with_raw_cookie("/set/a/1", header.as_bytes())
        .await;
    ok(&reply);
    assert_ne!(session_cookie(&reply).value, planted.expose());
    assert_eq!(counts.snapshot().load, 1, "a well-formed id is looked up");
}

/// A 5xx response saves nothing.
pub async fn no_save_on_5xx(engine: Engine) {
    let (mut client, counts, _) = setup(engine, |l| l);
    let reply = client.get("/fail/a/1").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.set_cookies.is_empty());
    assert_eq!(counts.snapshot().writes(), 0);
    ok(&client.get("/set/a/1").await);
    let before = counts.snapshot();
    let reply = client.get("/fail/a/2").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.set_cookies.is_empty());
    assert_eq!(counts.snapshot().writes(), before.writes());
    assert_eq!(client.get("/get/a").await.body, "1");
}

/// `Vary: Cookie` on every response whose session was read.
pub async fn vary_cookie_when_read(engine: Engine) {
    let (mut client, _, _) = setup(engine, |l| l);
    assert!(client.get("/get/a").await.varies_on_cookie());
    assert!(client.get("/set/a/1").await.varies_on_cookie());
    assert!(!client.get("/noop").await.varies_on_cookie());
}

/// A store that fails gives 503 with a short body, on load and on save, and
/// the session works again once the store does.
pub async fn store_failure_gives_503(engine: Engine) {
    let (mut client, counts, _) = setup(engine, |l| l);
    ok(&client.get("/set/a/1").await);
    counts.set_failing(true);
    for path in ["/get/a", "/set/a/2", "/flush"] {
        let reply = client.get(path).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {reply:?}"
        );
        assert!(reply.body.contains("unavailable"));
        assert!(reply.set_cookies.is_empty());
    }
    // A handler that ignores the error does not turn it into a success.
    let reply = client.get("/swallow").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    // A new session fails when it is saved.
    let mut fresh = setup_like(&client);
    let reply = fresh.get("/set/b/1").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    // A request that never touches the session is not affected.
    ok(&client.get("/noop").await);
    counts.set_failing(false);
    assert_eq!(client.get("/get/a").await.body, "1");
}

/// A request that loaded the session before a concurrent logout does not
/// bring it back when it saves.
pub async fn concurrent_logout_is_not_undone(engine: Engine) {
    let (mut client, _, gate) = setup(engine, |l| l);
    ok(&client.get("/set/user/ada").await);
    let mut slow = client.replay();
    let held = tokio::spawn(async move { slow.get("/held/user/mallory").await });
    gate.entered.notified().await;
    let mut thief = client.replay();
    ok(&client.get("/flush").await);
    gate.release.notify_one();
    let reply = held.await.expect("held request");
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
    assert!(session_cookie(&reply).is_removal());
    assert_eq!(
        thief.get("/get/user").await.body,
        "none",
        "the deleted session came back"
    );
}

/// A session set to expire at a point in time gets a matching `Max-Age`.
pub async fn expiry_at_datetime(engine: Engine) {
    let (mut client, _, _) = setup(engine, |l| l);
    let at = time::OffsetDateTime::now_utc().unix_timestamp() + 100;
    ok(&client.get(&format!("/expiry/at/{at}")).await);
    let reply = client.get("/set/a/1").await;
    let age = session_cookie(&reply).max_age().expect("Max-Age");
    assert!((97..=100).contains(&age), "Max-Age {age}");
    let age: i64 = client.get("/age").await.body.parse().expect("seconds");
    assert!((97..=100).contains(&age));
    assert_eq!(client.get("/get/a").await.body, "1");
}

/// Fifty requests race on one session while one of them logs out: once the
/// logout has answered, no request that starts later sees the session, and
/// the old cookie opens nothing at the end (no write resurrects it).
pub async fn concurrent_requests_never_resurrect_a_logout(engine: Engine) {
    let (mut client, _, _) = setup(engine, |l| l);
    ok(&client.get("/set/user/ada").await);
    let flushed_at = Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut c = client.replay();
        let flushed_at = Arc::clone(&flushed_at);
        tasks.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let path = match i {
                25 => "/flush".to_owned(),
                i if i % 2 == 0 => "/get/user".to_owned(),
                i => format!("/set/k{i}/v"),
            };
            let reply = c.get(&path).await;
            if i == 25 {
                ok(&reply);
                *flushed_at.lock().expect("lock") = Some(std::time::Instant::now());
            }
            (path, started, reply)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("request task"));
    }
    let flushed_at = flushed_at
        .lock()
        .expect("lock")
        .expect("the logout answered");
    for (path, started, reply) in &results {
        assert!(!reply.status.is_server_error(), "{path}: {reply:?}");
        if path == "/get/user" && *started > flushed_at {
            assert_eq!(
                reply.body, "none",
                "{path} started after the logout saw the session"
            );
        }
    }
    assert_eq!(
        client.get("/get/user").await.body,
        "none",
        "the logout was undone"
    );
}

/// A login (`cycle_id`) in a request that loaded the session before a
/// concurrent logout answers as an interrupted save: 400 and a removal
/// cookie, and neither the old nor a new id opens the logged-out session.
pub async fn cycle_id_after_a_concurrent_logout_is_interrupted(engine: Engine) {
    let (mut client, _, gate) = setup(engine, |l| l);
    ok(&client.get("/set/user/ada").await);
    let mut slow = client.replay();
    let held = tokio::spawn(async move {
        let reply = slow.get("/held-cycle").await;
        (reply, slow)
    });
    gate.entered.notified().await;
    let mut thief = client.replay();
    ok(&client.get("/flush").await);
    gate.release.notify_one();
    let (reply, mut slow) = held.await.expect("held request");
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
    assert!(session_cookie(&reply).is_removal(), "{reply:?}");
    assert!(slow.jar.is_empty(), "a new id was handed out: {reply:?}");
    assert_eq!(slow.get("/get/user").await.body, "none");
    assert_eq!(
        thief.get("/get/user").await.body,
        "none",
        "the logged-out session came back"
    );
}

/// Ages past what a deadline can hold are refused, never a panic: an
/// inactivity period given to `set_expiry` is an error (the session is
/// left as it was), and a layer built with such an age answers 500.
pub async fn large_ages_are_errors_not_panics(engine: Engine) {
    let (mut client, _, _) = setup(engine.clone(), |l| l);
    ok(&client.get("/set/a/1").await);
    for secs in ["315360000000", "3153600001", "0", "-5"] {
        let reply = client.get(&format!("/expiry/idle/{secs}")).await;
        assert_eq!(
            reply.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{secs}: {reply:?}"
        );
        assert!(reply.set_cookies.is_empty(), "{secs}: {reply:?}");
    }
    assert_eq!(client.get("/age").await.body, "1209600");
    assert_eq!(client.get("/get/a").await.body, "1");

    // A stored record whose policy is out of range (damaged) is no session.
    if let Engine::Store(store) = &engine {
        let id = cloakroom_core::Id::generate().expect("OS randomness");
        let mut record = crate::contract::record("damaged", Duration::from_secs(60));
        record.expiry = Some(cloakroom::Expiry::OnInactivity(time::Duration::MAX));
        assert!(
            store
                .create(&id.store_key(), &record)
                .await
                .expect("create")
        );
        let mut damaged = client.replay();
        damaged.jar.insert(NAME.to_owned(), id.expose().to_owned());
        assert_eq!(damaged.get("/get/v").await.body, "none");
        let reply = damaged.get("/set/b/1").await;
        ok(&reply);
        assert_ne!(session_cookie(&reply).value, id.expose(), "adopted");
    }

    let mut config = cloakroom::SessionConfig::default();
    config.cookie_age = Duration::from_secs(315_360_000_000);
    let (mut client, _, _) = setup(engine, |l| {
        SessionLayer::with_config(l.engine().clone(), config)
    });
    let reply = client.get("/set/a/1").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{reply:?}");
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
}

/// With `SESSION_SAVE_EVERY_REQUEST`, a page that never reads the session
/// still refreshes a live cookie (Django's rule): an idle timeout is kept
/// alive by browsing such pages, with a touch, not a rewrite. A dead
/// cookie is removed instead.
pub async fn save_every_request_refreshes_pages_that_do_not_read(engine: Engine) {
    let server_side = engine.is_server_side();
    let (mut client, counts, _) = setup(engine, |l| {
        l.with_save_every_request(true)
            .with_touch_after(Duration::ZERO)
    });
    ok(&client.get("/noop").await);
    assert!(client.jar.is_empty(), "a cookie without a session");
    ok(&client.get("/set/a/1").await);
    ok(&client.get("/expiry/idle/2").await);
    let value = client.jar.get(NAME).cloned();
    let before = counts.snapshot();
    let reply = client.get("/noop").await;
    ok(&reply);
    let cookie = session_cookie(&reply);
    assert_eq!(cookie.max_age(), Some(2), "{reply:?}");
    if server_side {
        assert_eq!(Some(&cookie.value), value.as_ref(), "same id re-sent");
        let after = counts.snapshot();
        assert_eq!(after.touch, before.touch + 1, "{before:?} -> {after:?}");
        assert_eq!(after.update + after.create, before.update + before.create);
    }
    // 3 s of pages that never read the session, past the first deadline.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let reply = client.get("/noop").await;
        ok(&reply);
        assert_eq!(session_cookie(&reply).max_age(), Some(2), "{reply:?}");
    }
    assert_eq!(client.get("/get/a").await.body, "1");
    // No refresh on a failed response.
    let reply = client.get("/fail/b/2").await;
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    // A cookie whose session is gone is removed, not refreshed.
    let mut thief = client.replay();
    ok(&client.get("/flush").await);
    if server_side {
        let reply = thief.get("/noop").await;
        ok(&reply);
        assert!(session_cookie(&reply).is_removal(), "{reply:?}");
    }
}

/// A logout followed by a failed response still removes the cookie (the
/// record is gone either way), and the old cookie opens nothing.
pub async fn flush_then_5xx_removes_the_cookie(engine: Engine) {
    let server_side = engine.is_server_side();
    let (mut client, _, _) = setup(engine, |l| l);
    ok(&client.get("/set/user/ada").await);
    let mut thief = client.replay();
    let reply = client.get("/flush-fail").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(session_cookie(&reply).is_removal(), "{reply:?}");
    assert!(client.jar.is_empty());
    if server_side {
        assert_eq!(thief.get("/get/user").await.body, "none");
    }
}

/// Cookie engines: a session renewed on every request still ends at its
/// absolute age (`SESSION_COOKIE_ABSOLUTE_AGE`, from its issue or last
/// `cycle_id`), and so does a copy of its cookie taken before; no cookie
/// gets a `Max-Age` past that end, and `cycle_id` starts the count again.
pub async fn cookie_sessions_end_at_their_absolute_age(engine: Engine) {
    let absolute = Duration::from_secs(2);
    let configure = |l: SessionLayer| {
        l.with_save_every_request(true)
            .with_cookie_absolute_age(absolute)
    };
    let (mut client, _, _) = setup(engine.clone(), configure);
    let started = std::time::Instant::now();
    let reply = client.get("/set/user/ada").await;
    ok(&reply);
    assert!(session_cookie(&reply).max_age() <= Some(2), "{reply:?}");
    let mut thief = client.replay();
    // Renewed every 300 ms: alive while younger than 2 s, then over.
    let lived = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let reply = client.get("/get/user").await;
        ok(&reply);
        if reply.body == "none" {
            break started.elapsed();
        }
        if let Some(cookie) = reply.cookie(NAME).filter(|c| !c.is_removal()) {
            let left = absolute.saturating_sub(started.elapsed()).as_secs_f64();
            let max_age = cookie.max_age().expect("Max-Age");
            assert!(
                (max_age as f64) <= left.ceil(),
                "Max-Age {max_age} past the absolute end ({left:.2} s left)"
            );
        }
        assert!(
            started.elapsed() < absolute + Duration::from_millis(1500),
            "still alive after {:?}",
            started.elapsed()
        );
    };
    assert!(
        lived >= absolute - Duration::from_millis(400),
        "ended early: {lived:?}"
    );
    assert_eq!(
        thief.get("/get/user").await.body,
        "none",
        "the copy lives on"
    );

    // cycle_id (a login) is a new issue.
    let (mut client, _, _) = setup(engine, configure);
    ok(&client.get("/set/user/ada").await);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    ok(&client.get("/cycle").await);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(client.get("/get/user").await.body, "ada");
}

/// "Log out everywhere": a session the application's check refuses is
/// absent on every engine (a cookie engine included, which keeps no server
/// state), for the client and for any copy of its cookie; a new login
/// works.
pub async fn a_session_the_application_refuses_is_absent(engine: Engine) {
    use std::sync::atomic::{AtomicU64, Ordering};
    // The user's current generation, as the application keeps it.
    let generation = Arc::new(AtomicU64::new(0));
    let current = Arc::clone(&generation);
    let (mut client, _, _) = setup(engine, move |l| {
        l.with_session_check(move |record: &cloakroom::Record| {
            let stored = record.data.get("gen").ok().flatten().cloned();
            match stored.as_ref().and_then(|v| v.as_str()) {
                Some(g) => g.parse::<u64>().ok() == Some(current.load(Ordering::SeqCst)),
                None => true,
            }
        })
    });
    ok(&client.get("/set/user/ada").await);
    ok(&client.get("/set/gen/0").await);
    let mut copy = client.replay();
    assert_eq!(client.get("/get/user").await.body, "ada");
    generation.store(1, Ordering::SeqCst);
    assert_eq!(client.get("/get/user").await.body, "none");
    assert_eq!(
        copy.get("/get/user").await.body,
        "none",
        "a copy still works"
    );
    let reply = client.get("/set/gen/1").await;
    ok(&reply);
    assert!(!session_cookie(&reply).value.is_empty());
    ok(&client.get("/set/user/bob").await);
    assert_eq!(client.get("/get/user").await.body, "bob");
    assert_eq!(copy.get("/get/user").await.body, "none");
}
