//! The store's one adapter over memcache-async's [`Protocol`]: four calls
//! with the answers the store acts on, and a record of whether the
//! connection is still in step with the server.
//!
//! memcache-async speaks the protocol; this module only reads its results:
//!
//! * `gets` reports a missing key as an error of kind `NotFound`; here it is
//!   `None`.
//! * `add` reports a taken key as `AlreadyExists`; here it is `false`.
//! * `cas` answers `true` for `STORED` and `false` for `EXISTS`, but it looks
//!   for `NOT FOUND` where memcached answers `NOT_FOUND`, so a missing key
//!   comes back as an error of kind `Other` carrying that line. Here it is
//!   [`Cas::NotFound`] (as is a `NotFound` error, should a later release of
//!   the crate read the line right).
//! * `delete` is sent with `noreply`, so on its own it cannot tell a delete
//!   that memcached carried out from one written into a dead socket. Here it
//!   is followed by `version` on the same connection: memcached answers
//!   commands in order, so the answer to `version` arrives only after the
//!   delete was processed, and a broken connection fails the call.

use std::io;

use memcache_async::ascii::Protocol;
use tokio::io::BufWriter;
use tokio::net::TcpStream;

/// What memcached answered to a `cas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cas {
    /// `STORED`: the value was written over the version given.
    Stored,
    /// `EXISTS`: the key holds another version now.
    Exists,
    /// `NOT_FOUND`: the key holds nothing (deleted, or expired).
    NotFound,
}

/// One connection to one server.
pub(crate) struct Connection {
    // memcache-async writes a storage command's line, value and line end
    // separately and then flushes: the `BufWriter` makes that one write to
    // the socket instead of three.
    protocol: Protocol<BufWriter<TcpStream>>,
    /// Cleared while a call is under way and set again only when it got its
    /// answer. A connection left unsettled (an I/O error, an error reply after
    /// which memcached may still be skipping the value we sent, a timeout that
    /// dropped the call half way) may have a reply still to come, which the
    /// next request would read as its own: the pool throws it away instead.
    settled: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("settled", &self.settled)
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            protocol: Protocol::new(BufWriter::new(stream)),
            settled: true,
        }
    }

    /// True when every call made on this connection got its whole answer.
    pub(crate) fn is_settled(&self) -> bool {
        self.settled
    }

    /// `gets`: the value under `key` and its CAS unique, or `None`.
    pub(crate) async fn gets(&mut self, key: &str) -> io::Result<Option<(Vec<u8>, u64)>> {
        self.settled = false;
        let found = match self.protocol.gets_cas(key).await {
            Ok(found) => Some(found),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        self.settled = true;
        Ok(found)
    }

    /// `add`: stores `value` only if `key` holds nothing; `false` if it does.
    pub(crate) async fn add(&mut self, key: &str, value: &[u8], exptime: u32) -> io::Result<bool> {
        self.settled = false;
        let stored = match self.protocol.add(key, value, exptime).await {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e),
        };
        self.settled = true;
        Ok(stored)
    }

    /// `cas`: stores `value` only over the version `token` of `key`.
    pub(crate) async fn cas(
        &mut self,
        key: &str,
        value: &[u8],
        token: u64,
        exptime: u32,
    ) -> io::Result<Cas> {
        self.settled = false;
        let answer = match self.protocol.cas(key, value, token, exptime).await {
            Ok(true) => Cas::Stored,
            // The crate folds `NOT_STORED` into `false` too; memcached does
            // not send it to a `cas`, and reading it as "changed meanwhile"
            // only costs a fresh `gets`.
            Ok(false) => Cas::Exists,
            Err(e) if is_not_found(&e) => Cas::NotFound,
            Err(e) => return Err(e),
        };
        self.settled = true;
        Ok(answer)
    }

    /// `delete`, answered: returns once memcached has processed it.
    pub(crate) async fn delete(&mut self, key: &str) -> io::Result<()> {
        self.settled = false;
        self.protocol.delete(key).await?;
        self.protocol.version().await?;
        self.settled = true;
        Ok(())
    }
}

/// True for memcached's `NOT_FOUND` as memcache-async 0.10 passes it on from
/// a `cas`: an `Other` error whose message is that line.
fn is_not_found(e: &io::Error) -> bool {
    match e.kind() {
        io::ErrorKind::NotFound => true,
        io::ErrorKind::Other => e
            .get_ref()
            .is_some_and(|inner| inner.to_string().trim_end() == "NOT_FOUND"),
        _ => false,
    }
}

/// The line memcached answered when `e` carries one (`ERROR`,
/// `CLIENT_ERROR ...`, `SERVER_ERROR ...`, or a line the crate did not
/// expect), without its line end.
pub(crate) fn reply_line(e: &io::Error) -> Option<String> {
    if e.kind() != io::ErrorKind::Other {
        return None;
    }
    e.get_ref()
        .map(|inner| inner.to_string().trim_end().to_owned())
}

/// True when `e` says the server had closed the connection before the call
/// (typically a restart while the connection sat in the pool), so that the
/// call is worth making again on a new connection.
pub(crate) fn is_closed_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use crate::options::MemcachedOptions;

    /// The first server of the real memcached the test command starts.
    async fn connect() -> Connection {
        let url = std::env::var("CLOAKROOM_MEMCACHED_URL")
            .expect("CLOAKROOM_MEMCACHED_URL (run the tests with tests/run)");
        let addr = MemcachedOptions::from_url(&url).unwrap().servers.remove(0);
        let stream = TcpStream::connect((addr.host.as_str(), addr.port))
            .await
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Connection::new(stream)
    }

    fn unique_key(what: &str) -> String {
        let id = cloakroom_core::Id::generate().unwrap().store_key();
        format!("cloakroom-client-test:{what}:{}", id.hex())
    }

    /// memcached answers `NOT_FOUND` to a `cas` on a missing key; the crate
    /// passes that on as an error, and the adapter turns it into an answer,
    /// leaving the connection usable.
    #[tokio::test]
    async fn cas_on_a_missing_key_is_not_found_not_an_error() {
        let mut conn = connect().await;
        let key = unique_key("missing");
        assert_eq!(conn.cas(&key, b"v", 1, 60).await.unwrap(), Cas::NotFound);
        assert!(conn.is_settled());

        // Deleted after a `gets`: the token is stale and the key is gone.
        assert!(conn.add(&key, b"v1", 60).await.unwrap());
        let (value, token) = conn.gets(&key).await.unwrap().unwrap();
        assert_eq!(value, b"v1");
        conn.delete(&key).await.unwrap();
        assert_eq!(
            conn.cas(&key, b"v2", token, 60).await.unwrap(),
            Cas::NotFound
        );
        assert_eq!(conn.gets(&key).await.unwrap(), None);
        assert!(conn.is_settled());
    }

    #[tokio::test]
    async fn cas_stores_over_its_version_only() {
        let mut conn = connect().await;
        let key = unique_key("versions");
        assert!(conn.add(&key, b"one", 60).await.unwrap());
        assert!(!conn.add(&key, b"again", 60).await.unwrap());
        let (_, first) = conn.gets(&key).await.unwrap().unwrap();
        assert_eq!(
            conn.cas(&key, b"two", first, 60).await.unwrap(),
            Cas::Stored
        );
        assert_eq!(
            conn.cas(&key, b"stale", first, 60).await.unwrap(),
            Cas::Exists
        );
        let (value, second) = conn.gets(&key).await.unwrap().unwrap();
        assert_eq!(value, b"two");
        assert_ne!(first, second);
        conn.delete(&key).await.unwrap();
        // Deleting what is not there is answered the same way.
        conn.delete(&key).await.unwrap();
        assert!(conn.is_settled());
    }

    /// A refused value is an error carrying memcached's line, and the
    /// connection is not handed out again.
    #[tokio::test]
    async fn an_error_reply_unsettles_the_connection() {
        let mut conn = connect().await;
        let key = unique_key("big");
        let big = vec![b'x'; 2 << 20];
        let err = conn.add(&key, &big, 60).await.unwrap_err();
        let line = reply_line(&err).unwrap();
        assert!(
            line.starts_with("SERVER_ERROR") && line.contains("too large"),
            "{line}"
        );
        assert!(!conn.is_settled());
        assert!(!is_closed_connection(&err));
    }

    #[test]
    fn the_crates_reading_of_not_found_is_recognised() {
        assert!(is_not_found(&io::Error::other("NOT_FOUND\r\n")));
        assert!(is_not_found(&io::ErrorKind::NotFound.into()));
        assert!(!is_not_found(&io::Error::other(
            "SERVER_ERROR out of memory\r\n"
        )));
        assert!(!is_not_found(&io::ErrorKind::UnexpectedEof.into()));
        assert_eq!(
            reply_line(&io::Error::other("CLIENT_ERROR bad data chunk\r\n")).as_deref(),
            Some("CLIENT_ERROR bad data chunk")
        );
        assert_eq!(reply_line(&io::ErrorKind::BrokenPipe.into()), None);
    }
}
