//! The contract every engine implements: [`SessionStore`] for engines that
//! keep sessions on a server, [`CookieCodec`] for engines that keep them in
//! the cookie itself.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use time::OffsetDateTime;

use crate::{Error, Record, StoreKey};

/// A server-side session store: memory, Redis, Memcached, SQL, or a cache in
/// front of one of them.
///
/// The layer calls these methods; handlers never do. Every method is keyed by
/// a [`StoreKey`] (SHA-256 of the session id): the raw id never reaches a
/// store, so nothing a store writes lets anyone log in.
///
/// # The contract
///
/// * **`load`** returns the record only while it is live: a record whose
///   deadline has passed is `Ok(None)`, even if the backend still holds it
///   (expiry is enforced by the server, not only by the cookie). The returned
///   [`Record::expires_at`] reflects the latest `touch`.
/// * **`create`** stores a record under a key that must not exist yet. It
///   never overwrites: if the key is taken (by a live record) it returns
///   `Ok(false)` and the layer retries with a new id. It must be atomic
///   (`SET NX`, memcached `add`, `INSERT` on a primary key), never
///   check-then-write.
/// * **`update`** replaces the record of a live session and returns
///   `Ok(false)` if there is none: a session deleted meanwhile (a logout in a
///   concurrent request) stays deleted. It must be atomic (`SET XX`,
///   `gets`/`cas`, `UPDATE ... WHERE`), never an upsert. The record passed
///   in still carries the [`version`](Record::version) that `load` gave it,
///   if any; a store that versions its records may write only over that
///   version, and must then still let the last writer win over a session
///   changed meanwhile (retry against the newer version), never over one
///   deleted meanwhile.
/// * **`touch`** moves the deadline of a live session to
///   [`record.expires_at`](Record::expires_at) and must not change the
///   stored data; `Ok(false)` if there is no live session. The record is the
///   session as this request loaded it: its [`data`](Record::data) and
///   [`expiry`](Record::expiry) unchanged, its deadline the new one, its
///   [`version`](Record::version) the one `load` gave (`None` if none). A
///   store may ignore the data and move the deadline alone. A store that
///   versions its records may instead write the record over the version it
///   was loaded at, in one conditional step; if the session changed
///   meanwhile it must keep the newer data (retry against the newer
///   version, moving only its deadline), and it must never bring back a
///   session deleted meanwhile. A deadline that has passed ends the session.
/// * **`delete`** removes the record; deleting a missing key is not an error.
/// * A backend that is down or slow is an [`Error`] of kind
///   [`Backend`](crate::ErrorKind::Backend) or
///   [`Timeout`](crate::ErrorKind::Timeout), returned within a bounded time;
///   the layer turns it into 503. A store must recover on its own when the
///   backend comes back (reconnect, refill its pool) without a restart.
/// * The record's deadline is the store's expiry too where the backend has one
///   (Redis TTL, memcached exptime), so stale sessions do not pile up.
///
/// # Answering
///
/// Each method returns a [`Call`]: [`Call::ready`] when the store has the
/// answer at once (the session is in this process's memory), so the layer
/// needs no allocation and no timer, or [`Call::pending`] with the work to
/// wait for, which the layer runs under its timeout. Either way it is the
/// same method and the same rules; a wrapper forwards the `Call` of the
/// store it wraps as it is. The work of a pending call must start only when
/// it is first polled, as an `async` block's does: the layer may drop an
/// update or a touch it has not polled and make the call again later.
///
/// ```
/// use cloakroom_core::store::Call;
/// # use cloakroom_core::{Error, Record};
/// # async fn fetch() -> Result<Option<Record>, Error> { Ok(None) }
/// // An engine that does I/O:
/// let call: Call<'_, Option<Record>> = Call::pending(async { fetch().await });
/// // An engine that knows at once:
/// let call: Call<'_, bool> = Call::ready(Ok(true));
/// ```
pub trait SessionStore: fmt::Debug + Send + Sync + 'static {
    /// A short engine name for logs and errors, such as `"redis"`.
    fn engine(&self) -> &'static str;

    /// What stands behind the engine, where its name does not say: the
    /// database of the `db` and `cached_db` engines (`"PostgreSQL"`,
    /// `"MariaDB"`, ...). For status pages and logs; `None` by default.
    fn backend(&self) -> Option<&'static str> {
        None
    }

    /// Fetches the live record under `key`.
    fn load<'a>(&'a self, key: &'a StoreKey) -> Call<'a, Option<Record>>;

    /// Stores a new record; `Ok(false)` if `key` already holds a live one.
    fn create<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool>;

    /// Replaces a live record; `Ok(false)` if there is none.
    fn update<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool>;

    /// Moves the deadline of a live record to `record.expires_at`, keeping
    /// its data; `record` is the session as this request loaded it.
    /// `Ok(false)` if there is none.
    fn touch<'a>(&'a self, key: &'a StoreKey, record: &'a Record) -> Call<'a, bool>;

    /// Removes the record, if any.
    fn delete<'a>(&'a self, key: &'a StoreKey) -> Call<'a, ()>;
}

/// The answer of a [`SessionStore`] method: there already, or to wait for.
/// A `Call` is a future either way.
pub enum Call<'a, T> {
    /// Answered at once; `None` once the answer was taken.
    Ready(Option<Result<T, Error>>),
    /// The work to wait for.
    Pending(Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>),
}

impl<'a, T> Call<'a, T> {
    /// An answer the store has at once.
    pub fn ready(answer: Result<T, Error>) -> Self {
        Self::Ready(Some(answer))
    }

    /// An answer that needs I/O: `work` runs when the call is awaited.
    pub fn pending(work: impl Future<Output = Result<T, Error>> + Send + 'a) -> Self {
        Self::Pending(Box::pin(work))
    }
}

impl<T: Unpin> Future for Call<'_, T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Ready(answer) => Poll::Ready(answer.take().unwrap_or_else(|| {
                Err(Error::new(
                    crate::ErrorKind::Backend,
                    "a store call was awaited after it completed",
                ))
            })),
            Self::Pending(work) => work.as_mut().poll(cx),
        }
    }
}

impl<T> fmt::Debug for Call<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ready(_) => "Call::Ready",
            Self::Pending(_) => "Call::Pending",
        })
    }
}

/// A client-side engine: the whole session travels in the cookie, sealed so
/// that the client cannot forge it (signed) or read it (encrypted).
///
/// Such an engine has no server-side state, so it cannot revoke a session
/// before its deadline: a copy of an old cookie stays valid until it expires.
/// Renewing a session re-seals it with a later deadline, so every value also
/// carries the moment the session was issued (or last given a new id), and
/// the layer refuses a value older than `SESSION_COOKIE_ABSOLUTE_AGE`
/// whatever its deadline: a stolen copy ends then at the latest.
/// The layer splits long values over several cookies and joins them again;
/// the codec sees one value.
pub trait CookieCodec: fmt::Debug + Send + Sync + 'static {
    /// A short engine name for logs and errors, such as `"signed_cookies"`.
    fn engine(&self) -> &'static str;

    /// Seals `record` into a cookie value bound to `cookie_name`, to the
    /// record's deadline and to `issued_at`, the moment the session was
    /// issued or last given a new id.
    ///
    /// # Errors
    /// When the record cannot be serialized.
    fn seal(
        &self,
        cookie_name: &str,
        record: &Record,
        issued_at: OffsetDateTime,
    ) -> Result<String, Error>;

    /// Opens a value made by [`seal`](Self::seal) for the same cookie name.
    /// Anything forged, tampered with, truncated, sealed for another name, or
    /// past its deadline is `None`: the layer then starts a fresh session.
    fn open(&self, cookie_name: &str, value: &str, now: OffsetDateTime) -> Option<Opened>;
}

/// A cookie value that [`CookieCodec::open`] accepted.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The session it carried.
    pub record: Record,
    /// True when it was sealed with a fallback key: the layer re-issues it
    /// under the current key.
    pub stale_key: bool,
    /// When the session was issued or last given a new id, as sealed (to
    /// the millisecond).
    pub issued_at: OffsetDateTime,
}
