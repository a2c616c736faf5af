//! The same five routes served by each variant:
//!
//! * `/login` starts a session holding a [`TOKEN_BYTES`] token and a counter
//!   `n = 0` (the benchmark calls it once per simulated user, before timing);
//!   the session libraries also give it a new id (`cycle_id`), as a login
//!   does;
//! * `/nosession`: the session layer is present, the handler ignores it;
//! * `/read`: reads the counter;
//! * `/read-sliding`: sets an idle timeout of [`AGE_SECONDS`] (the first
//!   time a change, then a renewal, as each page of an application with an
//!   idle timeout does), then reads the counter; the hand-written variants
//!   have no idle timeout and serve it as `/read`;
//! * `/write`: increments the counter, so the session is saved.
//!
//! `/read`, `/read-sliding` and `/write` answer with the counter, `/login`
//! and `/nosession` with `ok`; any other status is an error the benchmark
//! counts.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::routing::get;
use axum_extra::extract::cookie::{Cookie, Key, SignedCookieJar};
use cloakroom_core::Id;
use serde::{Deserialize, Serialize};

/// Size of the token each session holds, in bytes.
pub const TOKEN_BYTES: usize = 2048;

/// Session capacity of the in-process caches, for every variant that has one.
pub const CACHE_ENTRIES: u64 = 100_000;

/// How long sessions live: the session libraries' idle timeout, and the
/// lifetime the hand-written and cookie-jar variants give theirs.
pub const AGE_SECONDS: u64 = 14 * 24 * 3600;

/// A fresh random token of [`TOKEN_BYTES`] URL-safe characters.
pub fn token() -> String {
    let mut token = String::with_capacity(TOKEN_BYTES + 43);
    while token.len() < TOKEN_BYTES {
        match Id::generate() {
            Ok(id) => token.push_str(id.expose()),
            // No OS random source: any filler keeps the size right.
            Err(_) => token.push_str(&"x".repeat(43)),
        }
    }
    token.truncate(TOKEN_BYTES);
    token
}

/// The five routes on a variant's handlers; `/nosession` is the same for
/// all, and `/read-sliding` is `/read` unless `sliding` is given.
fn routes<S, L, LT, R, RT, W, WT>(login: L, read: R, write: W) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    L: axum::handler::Handler<LT, S>,
    R: axum::handler::Handler<RT, S>,
    W: axum::handler::Handler<WT, S>,
    LT: 'static,
    RT: 'static,
    WT: 'static,
{
    routes_sliding(login, read.clone(), read, write)
}

/// [`routes`] with a `/read-sliding` of its own.
fn routes_sliding<S, L, LT, R, RT, D, DT, W, WT>(
    login: L,
    read: R,
    sliding: D,
    write: W,
) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    L: axum::handler::Handler<LT, S>,
    R: axum::handler::Handler<RT, S>,
    D: axum::handler::Handler<DT, S>,
    W: axum::handler::Handler<WT, S>,
    LT: 'static,
    RT: 'static,
    DT: 'static,
    WT: 'static,
{
    Router::new()
        .route("/login", get(login))
        .route("/nosession", get(|| async { "ok" }))
        .route("/read", get(read))
        .route("/read-sliding", get(sliding))
        .route("/write", get(write))
}

fn counter(n: u64) -> String {
    n.to_string()
}

/// Plain axum: no session layer at all. `/login` still hands out a cookie
/// shaped like a session id, so every variant is sent the same kind of
/// request.
pub fn plain() -> Router {
    async fn login() -> impl IntoResponse {
        let id = Id::generate()
            .map(|id| id.expose().to_owned())
            .unwrap_or_default();
        (
            AppendHeaders([(header::SET_COOKIE, format!("sessionid={id}; Path=/"))]),
            "ok",
        )
    }
    routes(login, || async { "0" }, || async { "1" })
}

/// cloakroom behind `layer`.
pub fn cloakroom(layer: cloakroom::SessionLayer) -> Router {
    use cloakroom::{Error, Expiry, Session};
    let idle = Some(Expiry::OnInactivity(time_seconds(AGE_SECONDS)));
    let login = move |s: Session| async move {
        s.insert("token", token()).await?;
        s.insert("n", 0u64).await?;
        s.cycle_id().await?;
        Ok::<_, Error>("ok")
    };
    async fn read(s: Session) -> Result<String, Error> {
        Ok(counter(s.get("n").await?.unwrap_or(0)))
    }
    // After the first request, the same idle timeout again: a renewal,
    // which the layer writes only once it would move the deadline by the
    // touch threshold.
    let sliding = move |s: Session| async move {
        s.set_expiry(idle).await?;
        Ok::<_, Error>(counter(s.get("n").await?.unwrap_or(0)))
    };
    async fn write(s: Session) -> Result<String, Error> {
        let n = s.get::<u64>("n").await?.unwrap_or(0) + 1;
        s.insert("n", n).await?;
        Ok(counter(n))
    }
    routes_sliding(login, read, sliding, write).layer(layer)
}

/// A failed request of the benchmark's own handlers: a status and a reason.
type Failure = (StatusCode, String);

fn unavailable<E: std::fmt::Display>(err: E) -> Failure {
    (StatusCode::SERVICE_UNAVAILABLE, err.to_string())
}

fn bad_request() -> Failure {
    (StatusCode::BAD_REQUEST, String::new())
}

/// tower-sessions 0.14 on `store`.
pub fn tower_sessions<S>(store: S) -> Router
where
    S: tower_sessions::SessionStore + Clone,
{
    use tower_sessions::{Expiry, Session};
    let idle = Some(Expiry::OnInactivity(time_seconds(AGE_SECONDS)));
    let login = move |s: Session| async move {
        s.insert("token", token()).await.map_err(unavailable)?;
        s.insert("n", 0u64).await.map_err(unavailable)?;
        s.cycle_id().await.map_err(unavailable)?;
        Ok::<_, Failure>("ok")
    };
    async fn read(s: Session) -> Result<String, Failure> {
        let n: Option<u64> = s.get("n").await.map_err(unavailable)?;
        Ok(counter(n.unwrap_or(0)))
    }
    let sliding = move |s: Session| async move {
        s.set_expiry(idle);
        let n: Option<u64> = s.get("n").await.map_err(unavailable)?;
        Ok::<_, Failure>(counter(n.unwrap_or(0)))
    };
    async fn write(s: Session) -> Result<String, Failure> {
        let n = s.get::<u64>("n").await.map_err(unavailable)?.unwrap_or(0) + 1;
        s.insert("n", n).await.map_err(unavailable)?;
        Ok(counter(n))
    }
    let layer = tower_sessions::SessionManagerLayer::new(store).with_secure(false);
    routes_sliding(login, read, sliding, write).layer(layer)
}

/// The session id of the hand-written variants, from their plain `sid`
/// cookie.
fn sid(headers: &HeaderMap) -> Result<&str, Failure> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("sid="))
        .ok_or_else(bad_request)
}

/// The `Set-Cookie` of a hand-written variant's login.
fn sid_cookie(id: &Id) -> String {
    format!(
        "sid={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={AGE_SECONDS}",
        id.expose()
    )
}

/// The least an in-process session can cost: the id from a plain cookie,
/// looked up in one `RwLock<HashMap>` of sessions kept decoded; no layer, no
/// hashing of the id, no expiry, no cookie refresh on writes.
pub fn memory_by_hand() -> Router {
    type Sessions = State<Arc<RwLock<HashMap<String, Payload>>>>;
    async fn login(State(sessions): Sessions) -> Result<Response, Failure> {
        let id = Id::generate().map_err(unavailable)?;
        let payload = Payload {
            token: token(),
            n: 0,
        };
        sessions
            .write()
            .map_err(unavailable)?
            .insert(id.expose().to_owned(), payload);
        Ok((AppendHeaders([(header::SET_COOKIE, sid_cookie(&id))]), "ok").into_response())
    }
    async fn read(State(sessions): Sessions, headers: HeaderMap) -> Result<String, Failure> {
        let sessions = sessions.read().map_err(unavailable)?;
        let payload = sessions.get(sid(&headers)?).ok_or_else(bad_request)?;
        Ok(counter(payload.n))
    }
    async fn write(State(sessions): Sessions, headers: HeaderMap) -> Result<String, Failure> {
        let mut sessions = sessions.write().map_err(unavailable)?;
        let payload = sessions.get_mut(sid(&headers)?).ok_or_else(bad_request)?;
        payload.n += 1;
        Ok(counter(payload.n))
    }
    routes(login, read, write).with_state(Arc::default())
}

/// What the spec's required parts cost on their own: the id from a plain
/// cookie, checked and hashed with SHA-256 as cloakroom does
/// ([`Id::store_key`]), and looked up in a moka cache built as the memory
/// engine builds it (LRU, an expiry per entry, foldhash) that holds sessions
/// decoded.
///
/// No layer. A write does the least a save must: it replaces the session
/// with a changed copy (so a request that fails leaves the stored session as
/// it was), moves its deadline in moka in the lookup that finds it, and sends
/// a fresh `Set-Cookie` with `Max-Age` and `Expires`. It skips what cloakroom
/// adds for its own reasons: encoding the session to bytes, the session
/// handle and the layer.
pub fn moka_by_hand() -> Router {
    use moka::future::Cache;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    type Slot = Arc<Mutex<Arc<Payload>>>;
    type Sessions = Cache<[u8; 32], Slot, foldhash::fast::RandomState>;
    const AGE: Duration = Duration::from_secs(AGE_SECONDS);
    /// Every lookup moves the deadline: the cheapest way to tell moka a
    /// write's new one (reads then move it too, which costs them nothing
    /// more).
    struct Age;
    impl moka::Expiry<[u8; 32], Slot> for Age {
        fn expire_after_create(&self, _: &[u8; 32], _: &Slot, _: Instant) -> Option<Duration> {
            Some(AGE)
        }
        fn expire_after_read(
            &self,
            _: &[u8; 32],
            _: &Slot,
            _: Instant,
            _: Option<Duration>,
            _: Instant,
        ) -> Option<Duration> {
            Some(AGE)
        }
    }
    fn digest(headers: &HeaderMap) -> Result<[u8; 32], Failure> {
        let id = Id::parse(sid(headers)?).ok_or_else(bad_request)?;
        Ok(id.store_key().digest())
    }
    async fn session(sessions: &Sessions, headers: &HeaderMap) -> Result<Slot, Failure> {
        sessions
            .get(&digest(headers)?)
            .await
            .ok_or_else(bad_request)
    }
    async fn login(State(sessions): State<Sessions>) -> Result<Response, Failure> {
        let id = Id::generate().map_err(unavailable)?;
        let payload = Payload {
            token: token(),
            n: 0,
        };
        sessions
            .insert(
                id.store_key().digest(),
                Arc::new(Mutex::new(Arc::new(payload))),
            )
            .await;
        Ok((AppendHeaders([(header::SET_COOKIE, sid_cookie(&id))]), "ok").into_response())
    }
    async fn read(State(sessions): State<Sessions>, headers: HeaderMap) -> Result<String, Failure> {
        let slot = session(&sessions, &headers).await?;
        let n = slot.lock().map_err(unavailable)?.n;
        Ok(counter(n))
    }
    async fn write(
        State(sessions): State<Sessions>,
        headers: HeaderMap,
    ) -> Result<Response, Failure> {
        let slot = session(&sessions, &headers).await?;
        // Two short locks, as the copy is made outside the second: a write
        // racing on the same session may be lost, which is harmless here
        // (only the cost is measured) but not how a store may do it.
        let stored = Arc::clone(&*slot.lock().map_err(unavailable)?);
        let changed = Payload {
            token: stored.token.clone(),
            n: stored.n + 1,
        };
        let n = changed.n;
        *slot.lock().map_err(unavailable)? = Arc::new(changed);
        let expires = httpdate::fmt_http_date(std::time::SystemTime::now() + AGE);
        let cookie = format!(
            "sid={}; HttpOnly; SameSite=Lax; Path=/; Max-Age={AGE_SECONDS}; Expires={expires}",
            sid(&headers)?
        );
        Ok((AppendHeaders([(header::SET_COOKIE, cookie)]), counter(n)).into_response())
    }
    let sessions: Sessions = Cache::builder()
        .max_capacity(CACHE_ENTRIES)
        .eviction_policy(moka::policy::EvictionPolicy::lru())
        .expire_after(Age)
        .build_with_hasher(foldhash::fast::RandomState::default());
    routes(login, read, write).with_state(sessions)
}

/// What the cookie-jar and hand-written variants keep per session.
#[derive(Serialize, Deserialize)]
struct Payload {
    token: String,
    n: u64,
}

fn encode(payload: &Payload) -> Result<String, Failure> {
    serde_json::to_string(payload).map_err(unavailable)
}

fn decode(bytes: &[u8]) -> Result<Payload, Failure> {
    serde_json::from_slice(bytes).map_err(|_| bad_request())
}

/// axum-extra's `SignedCookieJar` holding the session as JSON in the cookie.
pub fn signed_cookie_jar(key: Key) -> Router {
    const NAME: &str = "session";
    fn cookie(value: String) -> Cookie<'static> {
        Cookie::build((NAME, value))
            .path("/")
            .http_only(true)
            .same_site(axum_extra::extract::cookie::SameSite::Lax)
            .max_age(time_seconds(AGE_SECONDS))
            .build()
    }
    fn payload(jar: &SignedCookieJar) -> Result<Payload, Failure> {
        let cookie = jar.get(NAME).ok_or_else(bad_request)?;
        decode(cookie.value().as_bytes())
    }
    async fn login(jar: SignedCookieJar) -> Result<(SignedCookieJar, &'static str), Failure> {
        let value = encode(&Payload {
            token: token(),
            n: 0,
        })?;
        Ok((jar.add(cookie(value)), "ok"))
    }
    async fn read(jar: SignedCookieJar) -> Result<String, Failure> {
        Ok(counter(payload(&jar)?.n))
    }
    async fn write(jar: SignedCookieJar) -> Result<(SignedCookieJar, String), Failure> {
        let mut p = payload(&jar)?;
        p.n += 1;
        let n = p.n;
        let value = encode(&p)?;
        Ok((jar.add(cookie(value)), counter(n)))
    }
    routes(login, read, write).with_state(key)
}

fn time_seconds(seconds: u64) -> time::Duration {
    time::Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX))
}

/// The least a Redis-backed session can cost: one `GET` per request (and a
/// `SET .. EX` when it changed) on one shared multiplexed connection, the
/// session id in a plain cookie, no layer.
pub fn redis_by_hand(connection: redis::aio::MultiplexedConnection) -> Router {
    type Conn = State<redis::aio::MultiplexedConnection>;
    fn key_of(headers: &HeaderMap) -> Result<String, Failure> {
        sid(headers).map(|id| format!("by-hand:{id}"))
    }
    async fn load(
        conn: &mut redis::aio::MultiplexedConnection,
        key: &str,
    ) -> Result<Payload, Failure> {
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(key)
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        decode(&bytes.ok_or_else(bad_request)?)
    }
    async fn save(
        conn: &mut redis::aio::MultiplexedConnection,
        key: &str,
        payload: &Payload,
    ) -> Result<(), Failure> {
        redis::cmd("SET")
            .arg(key)
            .arg(encode(payload)?)
            .arg("EX")
            .arg(AGE_SECONDS)
            .query_async::<()>(conn)
            .await
            .map_err(unavailable)
    }
    async fn login(State(mut conn): Conn) -> Result<Response, Failure> {
        let id = Id::generate().map_err(unavailable)?;
        let key = format!("by-hand:{}", id.expose());
        save(
            &mut conn,
            &key,
            &Payload {
                token: token(),
                n: 0,
            },
        )
        .await?;
        Ok((AppendHeaders([(header::SET_COOKIE, sid_cookie(&id))]), "ok").into_response())
    }
    async fn read(State(mut conn): Conn, headers: HeaderMap) -> Result<String, Failure> {
        let key = key_of(&headers)?;
        Ok(counter(load(&mut conn, &key).await?.n))
    }
    async fn write(State(mut conn): Conn, headers: HeaderMap) -> Result<String, Failure> {
        let key = key_of(&headers)?;
        let mut payload = load(&mut conn, &key).await?;
        payload.n += 1;
        save(&mut conn, &key, &payload).await?;
        Ok(counter(payload.n))
    }
    routes(login, read, write).with_state(connection)
}

/// The table of [`mariadb_by_hand`], made afresh.
///
/// # Errors
/// When MariaDB cannot be reached or refuses.
pub async fn mariadb_by_hand_table(pool: &sqlx::MySqlPool) -> Result<(), sqlx::Error> {
    sqlx::query("DROP TABLE IF EXISTS by_hand")
        .execute(pool)
        .await?;
    sqlx::query(
        "CREATE TABLE by_hand (id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL \
         PRIMARY KEY, data MEDIUMBLOB NOT NULL, expires_at_ms BIGINT NOT NULL, \
         INDEX by_hand_expires (expires_at_ms)) ENGINE = InnoDB",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The least a MariaDB-backed session can cost through sqlx: one `SELECT`
/// by primary key per request (and an `UPDATE` of the same row when it
/// changed), on a deadpool of cloakroom's default size holding plain sqlx
/// connections (no ping on release, as sqlx's own pool does), the session id
/// in a plain cookie, no layer. Each row has an indexed deadline, which the
/// `SELECT` checks and the `UPDATE` moves: what any SQL session store needs
/// to expire sessions on the server and to delete expired rows in bulk.
pub mod mariadb_by_hand {
    use super::{
        AGE_SECONDS, AppendHeaders, Failure, HeaderMap, Id, IntoResponse, Payload, Response,
        Router, State, bad_request, counter, decode, encode, header, routes, sid, sid_cookie,
        token, unavailable,
    };
    use deadpool::managed::{self, Metrics, RecycleResult};
    use sqlx::Connection;

    /// Opens plain connections; hands them out again as they are.
    #[derive(Debug)]
    pub struct Manager(pub sqlx::mysql::MySqlConnectOptions);

    impl managed::Manager for Manager {
        type Type = sqlx::MySqlConnection;
        type Error = sqlx::Error;
        async fn create(&self) -> Result<Self::Type, sqlx::Error> {
            sqlx::MySqlConnection::connect_with(&self.0).await
        }
        async fn recycle(&self, _: &mut Self::Type, _: &Metrics) -> RecycleResult<sqlx::Error> {
            Ok(())
        }
    }

    /// The handler's pool.
    pub type Pool = managed::Pool<Manager>;
    type Conn = managed::Object<Manager>;

    /// Now and the deadline of a session saved now, in milliseconds.
    fn clock() -> (i64, i64) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        let age = i64::try_from(AGE_SECONDS * 1000).unwrap_or(i64::MAX);
        (now, now.saturating_add(age))
    }

    async fn load(pool: &Pool, id: &str) -> Result<(Conn, Payload), Failure> {
        let mut conn = pool.get().await.map_err(unavailable)?;
        let bytes: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT data FROM by_hand WHERE id = ? AND expires_at_ms > ?")
                .bind(id)
                .bind(clock().0)
                .fetch_optional(&mut *conn)
                .await
                .map_err(unavailable)?;
        Ok((conn, decode(&bytes.ok_or_else(bad_request)?)?))
    }

    async fn login(State(pool): State<Pool>) -> Result<Response, Failure> {
        let id = Id::generate().map_err(unavailable)?;
        let payload = Payload {
            token: token(),
            n: 0,
        };
        let mut conn = pool.get().await.map_err(unavailable)?;
        sqlx::query("INSERT INTO by_hand (id, data, expires_at_ms) VALUES (?, ?, ?)")
            .bind(id.expose())
            .bind(encode(&payload)?)
            .bind(clock().1)
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
        Ok((AppendHeaders([(header::SET_COOKIE, sid_cookie(&id))]), "ok").into_response())
    }

    async fn read(State(pool): State<Pool>, headers: HeaderMap) -> Result<String, Failure> {
        Ok(counter(load(&pool, sid(&headers)?).await?.1.n))
    }

    async fn write(State(pool): State<Pool>, headers: HeaderMap) -> Result<String, Failure> {
        let id = sid(&headers)?;
        let (mut conn, mut payload) = load(&pool, id).await?;
        payload.n += 1;
        let (now, deadline) = clock();
        sqlx::query(
            "UPDATE by_hand SET data = ?, expires_at_ms = ? WHERE id = ? AND expires_at_ms > ?",
        )
        .bind(encode(&payload)?)
        .bind(deadline)
        .bind(id)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
        Ok(counter(payload.n))
    }

    /// The routes on `pool`.
    pub fn app(pool: Pool) -> Router {
        routes(login, read, write).with_state(pool)
    }
}
