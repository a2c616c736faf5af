//! The conformance suite on both cookie engines (`signed_cookies` and
//! `encrypted_cookies`), and HTTP-level tests of what only they do: tampered,
//! moved and truncated cookies, key rotation through the layer, and sessions
//! the size of a Horizon service catalog split over numbered cookies.
//!
//! The codec-level tests (every bit flip, name and deadline binding, the
//! decoder on random input) live in `crates/cloakroom-cookie/tests/codec.rs`.

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use cloakroom::core::config::from_pairs;
use cloakroom::{Engine, Session, SessionLayer};
use cloakroom_cookie::{EncryptedCookies, Secret, SignedCookies};
use cloakroom_tests::client::{Client, Reply};
use http::StatusCode;
use serde_json::{Value, json};

const NAME: &str = "sessionid";
const CURRENT: &str = "cookie-test secret, current: 8c1f0e9a7b3d4c2e";
const PREVIOUS: &str = "cookie-test secret, previous: 1a2b3c4d5e6f7a8b";

fn secret(s: &str) -> Secret {
    Secret::new(s).expect("a long enough secret")
}

mod signed {
    use super::*;

    async fn engine() -> Engine {
        Engine::cookie(SignedCookies::new(&secret(CURRENT)))
    }

    cloakroom_tests::conformance_suite!(cookie: engine);
}

mod encrypted {
    use super::*;

    async fn engine() -> Engine {
        Engine::cookie(EncryptedCookies::new(&secret(CURRENT)))
    }

    cloakroom_tests::conformance_suite!(cookie: engine);
}

/// Both engines, built with `current` and the `fallbacks`.
fn engines(current: &str, fallbacks: &[&str]) -> [Engine; 2] {
    let mut signed = SignedCookies::new(&secret(current));
    let mut encrypted = EncryptedCookies::new(&secret(current));
    for old in fallbacks {
        signed = signed.with_fallback(&secret(old));
        encrypted = encrypted.with_fallback(&secret(old));
    }
    [Engine::cookie(signed), Engine::cookie(encrypted)]
}

/// A small app: `/set/{k}/{v}`, `/get/{k}`, `/flush`, and `/big/{bytes}`,
/// which stores a Horizon-like token and catalog of about that many bytes of
/// JSON, and `/big`, which answers with the size of the catalog it finds.
fn app(layer: SessionLayer) -> Router {
    Router::new()
        .route(
            "/set/{k}/{v}",
            get(
                |s: Session, Path((k, v)): Path<(String, String)>| async move {
                    s.insert(&k, &v).await.map(|()| v)
                },
            ),
        )
        .route(
            "/get/{k}",
            get(|s: Session, Path(k): Path<String>| async move {
                let v = s.get::<String>(&k).await?;
                Ok::<_, cloakroom::Error>(v.unwrap_or_else(|| "none".to_owned()))
            }),
        )
        .route(
            "/flush",
            get(|s: Session| async move { s.flush().await.map(|()| "flushed") }),
        )
        .route(
            "/big/{bytes}",
            get(|s: Session, Path(bytes): Path<usize>| async move {
                s.insert("token", catalog(bytes)).await.map(|()| "stored")
            }),
        )
        .route(
            "/big",
            get(|s: Session| async move {
                let found = s.get::<Value>("token").await?;
                Ok::<_, cloakroom::Error>(match found {
                    Some(v) => serde_json::to_vec(&v).map_or(0, |b| b.len()).to_string(),
                    None => "none".to_owned(),
                })
            }),
        )
        .layer(layer)
}

fn client(engine: Engine) -> Client {
    Client::of(app(SessionLayer::new(engine)))
}

fn ok(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::OK, "unexpected reply: {reply:?}");
}

/// The session cookies a client holds, in order: `NAME`, `NAME.1`, ...
fn session_cookies(client: &Client) -> Vec<(String, String)> {
    client
        .jar
        .iter()
        .filter(|(n, _)| *n == NAME || n.starts_with(&format!("{NAME}.")))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// A Keystone token with a service catalog (12 services, three interfaces,
/// one region after another) whose JSON is at least `target` bytes. Ids are
/// random hex, as real ones are, so it compresses as a real one does.
fn catalog(target: usize) -> Value {
    const SERVICES: [(&str, u16); 12] = [
        ("identity", 5000),
        ("compute", 8774),
        ("image", 9292),
        ("network", 9696),
        ("volumev3", 8776),
        ("object-store", 8080),
        ("orchestration", 8004),
        ("placement", 8778),
        ("load-balancer", 9876),
        ("dns", 9001),
        ("key-manager", 9311),
        ("sharev2", 8786),
    ];
    let hex = || -> String {
        let id = cloakroom::core::Id::generate().expect("random");
        id.store_key().hex()[..32].to_owned()
    };
    let project = hex();
    let mut services: Vec<Value> = SERVICES
        .iter()
        .map(|(kind, _)| json!({"id": hex(), "type": kind, "endpoints": []}))
        .collect();
    let mut token = json!({
        "id": format!("gAAAAAB{}{}{}", hex(), hex(), hex()),
        "project": {"id": project, "name": "demo", "domain": {"id": "default"}},
        "user": {"id": hex(), "name": "ada", "domain": {"id": "default"}},
        "roles": [{"id": hex(), "name": "member"}, {"id": hex(), "name": "reader"}],
        "catalog": [],
    });
    for region in 1..200 {
        for (i, (kind, port)) in SERVICES.into_iter().enumerate() {
            for interface in ["public", "internal", "admin"] {
                let endpoint = json!({
                    "id": hex(),
                    "interface": interface,
                    "region_id": format!("RegionOne-{region}"),
                    "url": format!("https://{kind}.r{region}.cloud.example.org:{port}/v1/{project}"),
                });
                if let Some(list) = services[i]["endpoints"].as_array_mut() {
                    list.push(endpoint);
                }
            }
            token["catalog"] = Value::Array(services.clone());
            if serde_json::to_vec(&token).expect("json").len() >= target {
                return token;
            }
        }
    }
    panic!("catalog never reached {target} bytes")
}

#[tokio::test]
async fn tampered_moved_and_truncated_cookies_start_fresh() {
    for engine in engines(CURRENT, &[]) {
        let mut alice = client(engine.clone());
        ok(&alice.get("/set/user/ada").await);
        let value = alice.jar.get(NAME).cloned().expect("a session cookie");

        let mut forged = Vec::new();
        for at in [0, value.len() / 2, value.len() - 1] {
            let mut v = value.clone().into_bytes();
            v[at] = if v[at] == b'A' { b'B' } else { b'A' };
            forged.push(String::from_utf8(v).expect("ascii"));
        }
        forged.push(value[..value.len() - 1].to_owned());
        forged.push(format!("{value}A"));
        for bad in forged {
            let mut mallory = client(engine.clone());
            mallory.jar.insert(NAME.to_owned(), bad);
            let reply = mallory.get("/get/user").await;
            ok(&reply);
            assert_eq!(
                reply.body,
                "none",
                "{}: a tampered cookie opened",
                engine.name()
            );
            // Writing starts a fresh, valid session.
            ok(&mallory.get("/set/user/mallory").await);
            assert_eq!(mallory.get("/get/user").await.body, "mallory");
        }

        // The same value under another cookie name opens nothing.
        let mut other = Client::of(app(
            SessionLayer::new(engine.clone()).with_cookie_name("dash")
        ));
        other.jar.insert("dash".to_owned(), value);
        assert_eq!(other.get("/get/user").await.body, "none");
    }
}

#[tokio::test]
async fn rotation_reissues_under_the_new_key_and_drops_the_old_one() {
    let [old_signed, old_encrypted] = engines(PREVIOUS, &[]);
    let [rotating_signed, rotating_encrypted] = engines(CURRENT, &[PREVIOUS]);
    let [new_signed, new_encrypted] = engines(CURRENT, &[]);
    for (old, rotating, new) in [
        (old_signed, rotating_signed, new_signed),
        (old_encrypted, rotating_encrypted, new_encrypted),
    ] {
        let mut before = client(old);
        ok(&before.get("/set/user/ada").await);
        let old_cookie = before.jar.clone();

        // Deployed with the new key and the old one as a fallback: the old
        // cookie still logs in, and a read alone re-issues it.
        let mut during = client(rotating);
        during.jar = old_cookie.clone();
        let reply = during.get("/get/user").await;
        assert_eq!(reply.body, "ada");
        let reissued = reply
            .cookie(NAME)
            .expect("a stale-key cookie is re-issued on read")
            .value
            .clone();
        assert_ne!(Some(&reissued), old_cookie.get(NAME));
        // Once re-issued, a read changes nothing.
        assert!(during.get("/get/user").await.cookie(NAME).is_none());

        // Fallback removed: the re-issued cookie works, the old one does not.
        let mut after = client(new.clone());
        after.jar = during.jar.clone();
        assert_eq!(after.get("/get/user").await.body, "ada");
        let mut stale = client(new);
        stale.jar = old_cookie;
        assert_eq!(stale.get("/get/user").await.body, "none");
    }
}

#[tokio::test]
async fn horizon_sized_sessions_round_trip_over_numbered_cookies() {
    for engine in engines(CURRENT, &[]) {
        // With the default bound (7168 bytes of cookies): 25 KB of catalog
        // deflates to about 6 KB, over one cookie's 4 KB.
        let layer = SessionLayer::new(engine.clone());
        for kb in [3, 10, 25] {
            let mut browser = Client::of(app(layer.clone()));
            let reply = browser.get(&format!("/big/{}", kb * 1024)).await;
            ok(&reply);
            let cookies = session_cookies(&browser);
            let sent: usize = cookies.iter().map(|(n, v)| n.len() + v.len() + 3).sum();
            println!(
                "{}: {kb} KB session -> {} cookies, {sent} bytes",
                engine.name(),
                cookies.len()
            );
            assert!(sent <= 7168);
            if kb == 25 {
                assert!(cookies.len() > 1, "25 KB should need numbered cookies");
            }
            for (n, v) in &cookies {
                assert!(n.len() + v.len() < 4096, "{n} is over the one-cookie limit");
            }
            let size: usize = browser.get("/big").await.body.parse().expect("a size");
            assert!(size >= kb * 1024);
            // Losing any one piece loses the session, it is never misread.
            if cookies.len() > 1 {
                for (n, _) in &cookies[1..] {
                    let mut broken = browser.replay();
                    broken.jar.remove(n);
                    assert_eq!(broken.get("/big").await.body, "none");
                }
            }
        }
    }
}

#[tokio::test]
async fn past_the_bound_the_save_fails_and_the_previous_cookie_stays() {
    for engine in engines(CURRENT, &[]) {
        let mut browser = client(engine.clone());
        ok(&browser.get("/set/user/ada").await);
        let before = browser.jar.clone();
        // Random ids make 40 KB of catalog about 11 KB sealed: over the
        // default 7168-byte bound.
        let reply = browser.get(&format!("/big/{}", 40 * 1024)).await;
        assert_eq!(
            reply.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{}",
            engine.name()
        );
        assert!(reply.set_cookies.is_empty(), "{:?}", reply.set_cookies);
        assert_eq!(browser.jar, before);
        assert_eq!(browser.get("/get/user").await.body, "ada");
    }
}

#[tokio::test]
async fn shrinking_and_flushing_remove_every_piece() {
    for engine in engines(CURRENT, &[]) {
        let layer = SessionLayer::new(engine.clone()).with_cookie_max_bytes(32 * 1024);
        let mut browser = Client::of(app(layer));
        ok(&browser.get(&format!("/big/{}", 25 * 1024)).await);
        let pieces = session_cookies(&browser).len();
        assert!(pieces > 2, "{}: {pieces} cookies", engine.name());

        // Flush removes the main cookie and every piece.
        let reply = browser.get("/flush").await;
        ok(&reply);
        let removed = reply.set_cookies.iter().filter(|c| c.is_removal()).count();
        assert_eq!(removed, pieces, "{reply:?}");
        assert!(session_cookies(&browser).is_empty(), "{:?}", browser.jar);

        // A long session that becomes short leaves no stale pieces behind.
        ok(&browser.get(&format!("/big/{}", 25 * 1024)).await);
        ok(&browser.get("/big/10").await);
        assert_eq!(session_cookies(&browser).len(), 1, "{:?}", browser.jar);
        assert!(browser.get("/big").await.body.parse::<usize>().is_ok());
    }
}

#[tokio::test]
async fn engines_come_from_settings_with_django_names() {
    for name in [
        "signed_cookies",
        "encrypted_cookies",
        "django.contrib.sessions.backends.signed_cookies",
    ] {
        let settings = from_pairs([("SESSION_ENGINE", name), ("SESSION_SECRET_KEY", CURRENT)]);
        let layer = SessionLayer::from_settings(&settings).expect("valid settings");
        let mut browser = Client::of(app(layer));
        ok(&browser.get("/set/user/ada").await);
        assert_eq!(browser.get("/get/user").await.body, "ada");

        // Built from settings, it reads what the builder API sealed.
        let [signed, encrypted] = engines(CURRENT, &[]);
        let direct = if name.contains("encrypted") {
            encrypted
        } else {
            signed
        };
        let mut other = client(direct);
        other.jar = browser.jar.clone();
        assert_eq!(other.get("/get/user").await.body, "ada", "{name}");

        let err = SessionLayer::from_settings(&from_pairs([("SESSION_ENGINE", name)]))
            .expect_err("no secret");
        assert_eq!(err.variable(), "SESSION_SECRET_KEY", "{err}");
        let err = SessionLayer::from_settings(&from_pairs([
            ("SESSION_ENGINE", name),
            ("SESSION_SECRET_KEY", "too-short"),
        ]))
        .expect_err("short secret");
        assert!(!err.to_string().contains("too-short"), "{err}");
    }
}
