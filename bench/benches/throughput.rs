//! `cargo bench -p cloakroom-bench`: throughput of cloakroom against plain
//! axum and against tower-sessions on the same store, printed as ratios.
//!
//! Memory scenarios always run. Redis scenarios run when
//! `CLOAKROOM_BENCH_REDIS_URL` names a Redis (loopback only), for example one
//! started by `tests/servers/redis.sh`. `CLOAKROOM_BENCH_SECONDS` (default 3)
//! and `CLOAKROOM_BENCH_USERS` (default 32) tune the run.

use std::time::Duration;

use cloakroom::{Engine, SessionLayer};
use cloakroom_bench::{Workload, cloakroom_app, plain_app, throughput, tower_sessions_app};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Row {
    name: String,
    rate: f64,
    rival: Option<f64>,
}

fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("no tokio runtime: {err}");
            std::process::exit(1);
        }
    };
    runtime.block_on(run());
}

async fn run() {
    let time = Duration::from_secs(env_or("CLOAKROOM_BENCH_SECONDS", 3));
    let users = usize::try_from(env_or("CLOAKROOM_BENCH_USERS", 32)).unwrap_or(32);
    println!("cloakroom throughput, in process, {users} users, {time:?} per scenario");

    let plain = throughput(plain_app(), users, time).await;
    let mut rows = Vec::new();
    for workload in [Workload::Read, Workload::Write] {
        let ours = SessionLayer::new(Engine::store(cloakroom::memory::MemoryStore::new(100_000)));
        let ours = throughput(cloakroom_app(ours, workload), users, time).await;
        let store = tower_sessions_moka_store::MokaStore::new(Some(100_000));
        let theirs = throughput(tower_sessions_app(store, workload), users, time).await;
        rows.push(Row {
            name: format!("memory/moka {workload:?}"),
            rate: ours,
            rival: Some(theirs),
        });
    }

    if let Ok(url) = std::env::var("CLOAKROOM_BENCH_REDIS_URL") {
        for workload in [Workload::Read, Workload::Write] {
            let settings = cloakroom_core::config::from_pairs([
                ("SESSION_ENGINE", "cache"),
                ("SESSION_CACHE_URL", url.as_str()),
            ]);
            let ours = match SessionLayer::from_settings(&settings) {
                Ok(layer) => throughput(cloakroom_app(layer, workload), users, time).await,
                Err(err) => {
                    eprintln!("cloakroom redis: {err}");
                    continue;
                }
            };
            let theirs = match tower_sessions_redis(&url).await {
                Some(store) => {
                    Some(throughput(tower_sessions_app(store, workload), users, time).await)
                }
                None => None,
            };
            rows.push(Row {
                name: format!("redis {workload:?}"),
                rate: ours,
                rival: theirs,
            });
        }
    } else {
        println!("(set CLOAKROOM_BENCH_REDIS_URL to add the Redis scenarios)");
    }

    println!();
    println!(
        "{:<22} {:>12} {:>10} {:>16} {:>18}",
        "scenario", "cloakroom/s", "vs plain", "tower-sessions/s", "vs tower-sessions"
    );
    println!(
        "{:<22} {:>12.0} {:>10} {:>16} {:>18}",
        "plain axum", plain, "1.00", "", ""
    );
    for row in rows {
        let rival = row
            .rival
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"));
        let ratio = row
            .rival
            .map_or_else(|| "-".to_owned(), |r| format!("{:.2}", row.rate / r));
        println!(
            "{:<22} {:>12.0} {:>10.2} {:>16} {:>18}",
            row.name,
            row.rate,
            row.rate / plain,
            rival,
            ratio
        );
    }
}

async fn tower_sessions_redis(
    url: &str,
) -> Option<tower_sessions_redis_store::RedisStore<tower_sessions_redis_store::fred::prelude::Pool>>
{
    use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
    let config = Config::from_url(url).ok()?;
    let pool = Pool::new(config, None, None, None, 8).ok()?;
    let _connection = pool.connect();
    pool.wait_for_connect().await.ok()?;
    Some(tower_sessions_redis_store::RedisStore::new(pool))
}
