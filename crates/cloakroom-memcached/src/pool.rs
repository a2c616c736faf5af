//! A deadpool-managed pool of connections to one server.
//!
//! One pool per server, so that a dead server can only exhaust its own
//! connections and time, never another server's.

use std::io;
use std::time::Duration;

use deadpool::Runtime;
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use tokio::net::TcpStream;

use crate::client::Connection;
use crate::options::ServerAddr;

/// The pool of one server.
pub(crate) type Pool = managed::Pool<Manager>;

/// Opens connections to one server and decides whether a returned one can be
/// reused.
#[derive(Debug)]
pub(crate) struct Manager {
    addr: ServerAddr,
}

impl managed::Manager for Manager {
    type Type = Connection;
    type Error = io::Error;

    async fn create(&self) -> Result<Connection, io::Error> {
        // The pool bounds this with the connect timeout.
        let stream = TcpStream::connect((self.addr.host.as_str(), self.addr.port)).await?;
        // Each command is one write that waits for its reply, and a delete
        // is two: Nagle would hold the second back for the first's ACK.
        stream.set_nodelay(true)?;
        Ok(Connection::new(stream))
    }

    async fn recycle(&self, conn: &mut Connection, _: &Metrics) -> RecycleResult<io::Error> {
        // memcache-async keeps the socket to itself, so an idle connection
        // that the server closed (a restart) cannot be noticed here; the
        // store notices it on first use and empties the pool then (see
        // `MemcachedStore::attempt`).
        if conn.is_settled() {
            Ok(())
        } else {
            Err(RecycleError::message("a call did not get its whole answer"))
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
