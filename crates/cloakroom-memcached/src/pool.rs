//! A deadpool-managed pool of connections to one server.
//!
//! One pool per server, so that a dead server can only exhaust its own
//! connections and time, never another server's.

use std::io;
use std::time::Duration;

use deadpool::Runtime;
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use tokio::net::TcpStream;

use crate::options::ServerAddr;
use crate::protocol::Connection;

/// A pooled connection.
pub(crate) type Conn = Connection<TcpStream>;
/// The pool of one server.
pub(crate) type Pool = managed::Pool<Manager>;

/// Opens connections to one server and decides whether a returned one can be
/// reused.
#[derive(Debug)]
pub(crate) struct Manager {
    addr: ServerAddr,
}

impl managed::Manager for Manager {
    type Type = Conn;
    type Error = io::Error;

    async fn create(&self) -> Result<Conn, io::Error> {
        // The pool bounds this with the connect timeout.
        let stream = TcpStream::connect((self.addr.host.as_str(), self.addr.port)).await?;
        // Commands are one write each and wait for their reply: nothing is
        // gained by letting Nagle hold the last segment back.
        stream.set_nodelay(true)?;
        Ok(Connection::new(stream))
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<io::Error> {
        if !conn.is_clean() {
            return Err(RecycleError::message("a command did not complete"));
        }
        // An idle connection has nothing to read. If reading succeeds at once,
        // the server has closed it (EOF, typically after a restart) or sent
        // something nobody asked for; either way it is useless. This costs no
        // round trip, unlike a `version` ping on every checkout.
        match conn.stream().try_read(&mut [0u8; 1]) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Ok(0) => Err(RecycleError::message("closed by the server")),
            Ok(_) => Err(RecycleError::message("unexpected data from the server")),
            Err(e) => Err(RecycleError::Backend(e)),
        }
    }
}

/// Builds the pool for `addr`. No connection is opened until the first use.
pub(crate) fn new(
    addr: ServerAddr,
    size: usize,
    connect_timeout: Duration,
    wait: Duration,
) -> Pool {
    let built = Pool::builder(Manager { addr })
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(connect_timeout))
        .wait_timeout(Some(wait))
        .build();
    match built {
        Ok(pool) => pool,
        // `build` fails only when a timeout is set without a runtime, and the
        // runtime is set above.
        Err(e) => unreachable!("deadpool rejected a pool with a runtime: {e}"),
    }
}
