//! scratch
use std::time::Instant;
use tower::ServiceExt;
use cloakroom_core::{Id, Record, SessionStore};
use serde_json::{Map, json};

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async {
      if std::env::var("ONLY").is_err() {
        let store = cloakroom::memory::MemoryStore::new(100_000);
        let mut keys = Vec::new();
        let expires = time::OffsetDateTime::now_utc() + time::Duration::days(14);
        for _ in 0..1000 {
            let mut d = Map::new();
            d.insert("token".into(), json!(cloakroom_bench::apps::token()));
            d.insert("n".into(), json!(0));
            let k = Id::generate().unwrap().store_key();
            store.create(&k, &Record::new(d, expires)).await.unwrap();
            keys.push(k);
        }
        let n = 200_000;
        let t = Instant::now();
        for i in 0..n { let _ = store.load(&keys[i % 1000]).await.unwrap(); }
        println!("load {:?}", t.elapsed() / n as u32);
        let r = store.load(&keys[0]).await.unwrap().unwrap();
        let t = Instant::now();
        for i in 0..n { let _ = store.update(&keys[i % 1000], &r).await.unwrap(); }
        println!("update {:?}", t.elapsed() / n as u32);
        let t = Instant::now();
        for _ in 0..n { let _ = std::hint::black_box(r.clone()); }
        println!("record clone {:?}", t.elapsed() / n as u32);
        let id = Id::generate().unwrap();
        let s = id.expose().to_owned();
        let t = Instant::now();
        for _ in 0..n { let _ = std::hint::black_box(Id::parse(&s)); }
        println!("id parse {:?}", t.elapsed() / n as u32);
        let t = Instant::now();
        for _ in 0..n { let _ = std::hint::black_box(id.store_key()); }
        println!("store_key {:?}", t.elapsed() / n as u32);
        let t = Instant::now();
        for _ in 0..n { let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async { 1 }).await; }
        println!("timeout {:?}", t.elapsed() / n as u32);
        let t = Instant::now();
        for _ in 0..n { let _ = std::hint::black_box(r.to_bytes()); }
        println!("to_bytes {:?}", t.elapsed() / n as u32);
        let b = r.to_bytes().unwrap();
        let t = Instant::now();
        for _ in 0..n { let _ = std::hint::black_box(Record::from_bytes(&b)); }
        println!("from_bytes {:?}", t.elapsed() / n as u32);
        let t = Instant::now();
        for _ in 0..n { let _ = std::hint::black_box(time::OffsetDateTime::now_utc()); }
        println!("now_utc {:?}", t.elapsed() / n as u32);
        let pair = (&r.data, r.expiry);
        let t = Instant::now();
        for _ in 0..n { let _ = std::hint::black_box(rmp_serde::to_vec(&pair).unwrap()); }
        println!("rmp encode {:?}", t.elapsed() / n as u32);
        let mb = rmp_serde::to_vec(&pair).unwrap();
        println!("rmp len {} json len {}", mb.len(), b.len());
        let t = Instant::now();
        for _ in 0..n { let _ = std::hint::black_box(rmp_serde::from_slice::<(serde_json::Map<String, serde_json::Value>, Option<cloakroom_core::Expiry>)>(&mb).unwrap()); }
        println!("rmp decode {:?}", t.elapsed() / n as u32);
      }
        for name in ["memory", "ts-memory", "signed_cookies", "encrypted_cookies", "jar-signed", "plain"] {
            let app = cloakroom_bench::variants::app(name).await.unwrap();
            let mut cookies = Vec::new();
            for _ in 0..1000 {
                let resp = app.clone().oneshot(http::Request::get("/login").body(axum::body::Body::empty()).unwrap()).await.unwrap();
                let c: Vec<String> = resp.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned()).collect();
                cookies.push(c.join("; "));
            }
            let only_name = std::env::var("ONLY").ok();
            let only_route = std::env::var("ROUTE").ok();
            if only_name.as_deref().is_some_and(|o| o != name) { continue; }
            for route in ["/nosession", "/read", "/write"] {
                if only_route.as_deref().is_some_and(|o| o != route) { continue; }
                let n: usize = std::env::var("N").ok().and_then(|n| n.parse().ok()).unwrap_or(100_000);
                let t = Instant::now();
                for i in 0..n {
                    let req = http::Request::get(route).header("cookie", &cookies[(i * 7919) % 1000]).body(axum::body::Body::empty()).unwrap();
                    let resp = app.clone().oneshot(req).await.unwrap();
                    assert!(resp.status().is_success());
                    let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                }
                println!("{name} {route} {:?}", t.elapsed() / n as u32);
            }
        }
    });
}
