//! The few memcached text-protocol commands the store needs, each waiting for
//! the server's reply, sent several to a round trip.
//!
//! # Why not memcache-async
//!
//! The workspace first planned to build on `memcache-async` 0.10. Its
//! `Protocol` owns the stream and sends one command at a time; for a session
//! store it falls short:
//!
//! * `set` and `delete` are sent with `noreply`, so a value the server
//!   rejects and a delete that never reached a dead server both look like
//!   success (a logout that silently did nothing);
//! * there is no `touch`;
//! * `cas` reports a missing key as a generic error (it matches
//!   `"NOT FOUND"` where the server says `NOT_FOUND`);
//! * it cannot pipeline, and the store sends two commands per operation (the
//!   session and its touched deadline, see [`crate::store`]);
//! * the socket is hidden, so a pooled connection that the server closed
//!   (after a restart) cannot be noticed before it is used.
//!
//! The commands below are few and simple enough to speak directly: `get`
//! (several keys), `add`, `replace`, `set`, `touch` and `delete`, all in the
//! classic text protocol that every memcached since 1.4.8 understands. Every
//! one waits for its reply, and a connection that did not complete its
//! commands cleanly is never reused, so a reply can never be read by the
//! wrong request.

use std::fmt;
use std::io;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Longest reply line accepted. Real replies are well under 300 bytes (a
/// `VALUE` line with a 250-byte key); a longer line means the stream is not
/// speaking memcached.
const MAX_LINE: u64 = 1024;

/// Largest value accepted in a reply. memcached's own item limit is at most
/// 1 GiB (`-I`), sessions are tens of KiB; the bound keeps a confused peer
/// from making us allocate without limit.
const MAX_VALUE: usize = 128 * 1024 * 1024;

/// A command the store sends, with the exptime already converted to what the
/// server expects (see [`crate::expiry::exptime`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Command<'a> {
    /// `get <key>...`: the values of those keys that exist.
    Get { keys: &'a [&'a str] },
    /// `add`: store only if the key does not exist.
    Add {
        key: &'a str,
        exptime: i64,
        value: &'a [u8],
    },
    /// `replace`: store only if the key exists.
    Replace {
        key: &'a str,
        exptime: i64,
        value: &'a [u8],
    },
    /// `set`: store whether or not the key exists.
    Set {
        key: &'a str,
        exptime: i64,
        value: &'a [u8],
    },
    /// `touch`: move the expiry of an existing key.
    Touch { key: &'a str, exptime: i64 },
    /// `delete`: remove the key, reporting whether it was there.
    Delete { key: &'a str },
}

impl Command<'_> {
    /// Appends the bytes to send: the command line, and for storage commands
    /// the data block.
    fn encode(&self, buf: &mut Vec<u8>) {
        match *self {
            Command::Get { keys } => {
                buf.extend_from_slice(b"get");
                for key in keys {
                    buf.push(b' ');
                    buf.extend_from_slice(key.as_bytes());
                }
                buf.extend_from_slice(b"\r\n");
            }
            Command::Add {
                key,
                exptime,
                value,
            } => storage(buf, "add", key, exptime, value),
            Command::Replace {
                key,
                exptime,
                value,
            } => storage(buf, "replace", key, exptime, value),
            Command::Set {
                key,
                exptime,
                value,
            } => storage(buf, "set", key, exptime, value),
            Command::Touch { key, exptime } => {
                buf.extend_from_slice(format!("touch {key} {exptime}\r\n").as_bytes());
            }
            Command::Delete { key } => {
                buf.extend_from_slice(format!("delete {key}\r\n").as_bytes());
            }
        }
    }

    /// The size of the value this command stores, if it stores one.
    pub(crate) fn value_len(&self) -> Option<usize> {
        match self {
            Command::Add { value, .. }
            | Command::Replace { value, .. }
            | Command::Set { value, .. } => Some(value.len()),
            Command::Get { .. } | Command::Touch { .. } | Command::Delete { .. } => None,
        }
    }
}

fn storage(buf: &mut Vec<u8>, verb: &str, key: &str, exptime: i64, value: &[u8]) {
    // Flags are always 0: the value is the record's own versioned format.
    buf.extend_from_slice(format!("{verb} {key} 0 {exptime} {}\r\n", value.len()).as_bytes());
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

/// What the server answered, for each [`Command`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// To `Get`: the keys that exist, with their values, in the server's order.
    Values(Vec<(String, Vec<u8>)>),
    /// To `Add`/`Replace`/`Set`: `true` for `STORED`, `false` for
    /// `NOT_STORED` (the key existed, or did not).
    Stored(bool),
    /// To `Touch`: `true` for `TOUCHED`, `false` for `NOT_FOUND`.
    Touched(bool),
    /// To `Delete`: `true` for `DELETED`, `false` for `NOT_FOUND`.
    Deleted(bool),
}

/// A failure of the commands on one connection.
#[derive(Debug)]
pub(crate) enum ProtoError {
    /// The connection failed (reset, closed, refused write, ...).
    Io(io::Error),
    /// The server answered `ERROR`, `CLIENT_ERROR ...` or `SERVER_ERROR ...`.
    Server(String),
    /// The reply was not one the protocol allows for the command.
    Unexpected(String),
}

impl ProtoError {
    /// True when the error says the connection itself was dead (the server
    /// closed it, typically after a restart), so that trying again on a new
    /// connection is worthwhile.
    pub(crate) fn is_closed_connection(&self) -> bool {
        matches!(
            self,
            ProtoError::Io(e) if matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            )
        )
    }

    /// True for the server's answer to a value above its item size limit.
    pub(crate) fn is_too_large(&self) -> bool {
        matches!(self, ProtoError::Server(reply) if reply.contains("too large"))
    }
}

impl From<io::Error> for ProtoError {
    fn from(e: io::Error) -> Self {
        ProtoError::Io(e)
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::Io(e) => write!(f, "{e}"),
            ProtoError::Server(reply) => write!(f, "server replied {reply:?}"),
            ProtoError::Unexpected(reply) => write!(f, "unexpected reply {reply:?}"),
        }
    }
}

impl std::error::Error for ProtoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProtoError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// One connection to one server, speaking the commands above.
pub(crate) struct Connection<S> {
    io: BufReader<S>,
    line: Vec<u8>,
    /// Set while commands are under way and cleared only when all their
    /// replies have been read. A connection left with it set (an I/O error, a
    /// timeout that dropped the future halfway, an error reply after which
    /// the server may still be skipping our data) is out of step with the
    /// server and is thrown away instead of going back to the pool.
    in_flight: bool,
}

impl<S> fmt::Debug for Connection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a connected stream.
    pub(crate) fn new(stream: S) -> Self {
        Self {
            io: BufReader::new(stream),
            line: Vec::with_capacity(64),
            in_flight: false,
        }
    }

    /// True if the connection is in step with the server: no command was
    /// left half done and no unread bytes are buffered.
    pub(crate) fn is_clean(&self) -> bool {
        !self.in_flight && self.io.buffer().is_empty()
    }

    /// The underlying stream, for liveness checks.
    pub(crate) fn stream(&self) -> &S {
        self.io.get_ref()
    }

    /// Sends `commands` in one write and reads their replies, in order.
    ///
    /// # Errors
    /// On I/O failure, an error reply from the server, or a reply that does
    /// not fit its command. After any error the connection must not be used
    /// again (see [`Connection::is_clean`]).
    pub(crate) async fn execute(
        &mut self,
        commands: &[Command<'_>],
    ) -> Result<Vec<Reply>, ProtoError> {
        self.in_flight = true;
        let mut buf = Vec::with_capacity(
            commands
                .iter()
                .map(|c| 64 + c.value_len().unwrap_or(0))
                .sum(),
        );
        for command in commands {
            command.encode(&mut buf);
        }
        let stream = self.io.get_mut();
        stream.write_all(&buf).await?;
        stream.flush().await?;
        let mut replies = Vec::with_capacity(commands.len());
        for command in commands {
            replies.push(match command {
                Command::Get { .. } => Reply::Values(self.read_values().await?),
                Command::Add { .. } | Command::Replace { .. } | Command::Set { .. } => {
                    Reply::Stored(self.read_status(b"STORED", b"NOT_STORED").await?)
                }
                Command::Touch { .. } => {
                    Reply::Touched(self.read_status(b"TOUCHED", b"NOT_FOUND").await?)
                }
                Command::Delete { .. } => {
                    Reply::Deleted(self.read_status(b"DELETED", b"NOT_FOUND").await?)
                }
            });
        }
        self.in_flight = false;
        Ok(replies)
    }

    /// Reads one reply line into `self.line`, without its `\r\n`.
    async fn read_line(&mut self) -> Result<(), ProtoError> {
        self.line.clear();
        let n = (&mut self.io)
            .take(MAX_LINE)
            .read_until(b'\n', &mut self.line)
            .await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "memcached closed the connection",
            )
            .into());
        }
        if !self.line.ends_with(b"\r\n") {
            return Err(ProtoError::Unexpected(lossy(&self.line)));
        }
        self.line.truncate(self.line.len() - 2);
        Ok(())
    }

    /// Reads a one-line reply that is either `yes` or `no`.
    async fn read_status(&mut self, yes: &[u8], no: &[u8]) -> Result<bool, ProtoError> {
        self.read_line().await?;
        if self.line == yes {
            Ok(true)
        } else if self.line == no {
            Ok(false)
        } else {
            Err(self.error_reply())
        }
    }

    /// Reads the reply to `get`: any number of
    /// `VALUE <key> <flags> <bytes>\r\n<data>\r\n`, then `END\r\n`.
    async fn read_values(&mut self) -> Result<Vec<(String, Vec<u8>)>, ProtoError> {
        let mut values = Vec::new();
        loop {
            self.read_line().await?;
            if self.line == b"END" {
                return Ok(values);
            }
            let header = std::str::from_utf8(&self.line)
                .map_err(|_| ProtoError::Unexpected(lossy(&self.line)))?;
            let mut tokens = header.split(' ');
            if tokens.next() != Some("VALUE") {
                return Err(self.error_reply());
            }
            let bad = || ProtoError::Unexpected(header.to_owned());
            let key = tokens.next().ok_or_else(bad)?.to_owned();
            let _flags = tokens.next().ok_or_else(bad)?;
            let len: usize = tokens
                .next()
                .and_then(|t| t.parse().ok())
                .filter(|&len| len <= MAX_VALUE)
                .ok_or_else(bad)?;
            let mut value = vec![0; len + 2];
            self.io.read_exact(&mut value).await?;
            if !value.ends_with(b"\r\n") {
                return Err(ProtoError::Unexpected("value not followed by CRLF".into()));
            }
            value.truncate(len);
            values.push((key, value));
        }
    }

    /// Classifies a reply line that is not a success or a plain "no".
    fn error_reply(&self) -> ProtoError {
        let line = lossy(&self.line);
        if line == "ERROR" || line.starts_with("CLIENT_ERROR") || line.starts_with("SERVER_ERROR") {
            ProtoError::Server(line)
        } else {
            ProtoError::Unexpected(line)
        }
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    /// A connection whose server side has `replies` ready, and the server end
    /// to read what the client sent.
    async fn scripted(replies: &[u8]) -> (Connection<DuplexStream>, DuplexStream) {
        let (client, mut server) = duplex(1 << 16);
        server.write_all(replies).await.unwrap();
        // The client reads end-of-stream after the scripted replies; what it
        // sends still reaches `server`.
        server.shutdown().await.unwrap();
        (Connection::new(client), server)
    }

    async fn sent(mut server: DuplexStream, conn: Connection<DuplexStream>) -> Vec<u8> {
        drop(conn);
        let mut out = Vec::new();
        server.read_to_end(&mut out).await.unwrap();
        out
    }

    fn value(key: &str, v: &[u8]) -> (String, Vec<u8>) {
        (key.to_owned(), v.to_vec())
    }

    #[tokio::test]
    async fn get_reads_several_values_including_crlf_inside() {
        let (mut conn, server) =
            scripted(b"VALUE k 0 5\r\nhe\r\no\r\nVALUE k:t 0 2 99\r\n42\r\nEND\r\nEND\r\n").await;
        let keys = ["k", "k:t"];
        let get = Command::Get { keys: &keys };
        let replies = conn.execute(&[get]).await.unwrap();
        assert_eq!(
            replies,
            [Reply::Values(vec![
                value("k", b"he\r\no"),
                value("k:t", b"42")
            ])]
        );
        // A miss is an empty list.
        assert_eq!(conn.execute(&[get]).await.unwrap(), [Reply::Values(vec![])]);
        assert!(conn.is_clean());
        assert_eq!(sent(server, conn).await, b"get k k:t\r\nget k k:t\r\n");
    }

    #[tokio::test]
    async fn pipelined_commands_go_in_one_write_and_replies_come_in_order() {
        let (mut conn, server) =
            scripted(b"STORED\r\nNOT_STORED\r\nSTORED\r\nDELETED\r\nNOT_FOUND\r\n").await;
        let replies = conn
            .execute(&[
                Command::Add {
                    key: "k",
                    exptime: 60,
                    value: b"v1",
                },
                Command::Replace {
                    key: "k",
                    exptime: 1_900_000_000,
                    value: b"",
                },
                Command::Set {
                    key: "k:t",
                    exptime: 5,
                    value: b"7",
                },
                Command::Delete { key: "k" },
                Command::Delete { key: "k:t" },
            ])
            .await
            .unwrap();
        assert_eq!(
            replies,
            [
                Reply::Stored(true),
                Reply::Stored(false),
                Reply::Stored(true),
                Reply::Deleted(true),
                Reply::Deleted(false),
            ]
        );
        assert_eq!(
            sent(server, conn).await,
            b"add k 0 60 2\r\nv1\r\nreplace k 0 1900000000 0\r\n\r\nset k:t 0 5 1\r\n7\r\n\
              delete k\r\ndelete k:t\r\n"
        );
    }

    #[tokio::test]
    async fn touch_reports_missing_keys() {
        let (mut conn, server) = scripted(b"TOUCHED\r\nNOT_FOUND\r\n").await;
        let touch = Command::Touch {
            key: "k",
            exptime: 5,
        };
        assert_eq!(
            conn.execute(&[touch, touch]).await.unwrap(),
            [Reply::Touched(true), Reply::Touched(false)]
        );
        assert_eq!(sent(server, conn).await, b"touch k 5\r\ntouch k 5\r\n");
    }

    #[tokio::test]
    async fn too_large_is_recognised_and_leaves_the_connection_unusable() {
        let (mut conn, _server) = scripted(b"SERVER_ERROR object too large for cache\r\n").await;
        let add = Command::Add {
            key: "k",
            exptime: 60,
            value: b"big",
        };
        let err = conn.execute(&[add]).await.unwrap_err();
        assert!(err.is_too_large(), "{err}");
        assert!(!conn.is_clean());
    }

    #[tokio::test]
    async fn error_replies_are_errors_not_answers() {
        for reply in [
            &b"ERROR\r\n"[..],
            b"CLIENT_ERROR bad command line format\r\n",
            b"SERVER_ERROR out of memory storing object\r\n",
        ] {
            let (mut conn, _server) = scripted(reply).await;
            let err = conn
                .execute(&[Command::Delete { key: "k" }])
                .await
                .unwrap_err();
            assert!(matches!(err, ProtoError::Server(_)), "{err}");
            assert!(!err.is_too_large());
        }
        let (mut conn, _server) = scripted(b"EXISTS\r\n").await;
        let err = conn
            .execute(&[Command::Delete { key: "k" }])
            .await
            .unwrap_err();
        assert!(matches!(err, ProtoError::Unexpected(_)), "{err}");
    }

    #[tokio::test]
    async fn malformed_get_replies_are_rejected() {
        for reply in [
            &b"VALUE k 0 x\r\n"[..],
            b"VALUE k 0\r\n",
            b"VALUE k 0 3\r\nabcXY",
            b"VALUE k 0 3\r\nabc\r\n",
            b"VALUE k 0 999999999999\r\n",
            b"STORED\r\n",
            b"no line end",
        ] {
            let (mut conn, _server) = scripted(reply).await;
            let keys = ["k"];
            let err = conn
                .execute(&[Command::Get { keys: &keys }])
                .await
                .unwrap_err();
            assert!(!conn.is_clean(), "{err}");
        }
    }

    #[tokio::test]
    async fn a_closed_connection_is_recognised() {
        let (mut conn, _server) = scripted(b"").await;
        let err = conn
            .execute(&[Command::Delete { key: "k" }])
            .await
            .unwrap_err();
        assert!(err.is_closed_connection(), "{err:?}");
    }

    #[tokio::test]
    async fn an_endless_line_is_rejected() {
        let (mut conn, _server) = scripted(&[b'x'; 4096]).await;
        let err = conn
            .execute(&[Command::Delete { key: "k" }])
            .await
            .unwrap_err();
        assert!(matches!(err, ProtoError::Unexpected(_)), "{err}");
    }
}
