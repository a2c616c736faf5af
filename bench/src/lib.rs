//! The benchmark behind `bash bench/run` (the `cloakroom-bench` binary) and
//! the soak command.
//!
//! Every variant serves the same routes ([`apps`]) from its own server
//! process pinned to one core with one tokio worker; wrk, pinned to another
//! core, loads each route with requests that carry the cookie of one of a
//! thousand logged-in sessions, picked at random ([`load`]). The variants
//! ([`variants`]) are plain axum, cloakroom on every engine, tower-sessions
//! on its stores, axum-extra's signed cookie jar and a hand-written Redis
//! handler. [`memory`] measures resident memory per session of the
//! in-process stores. [`count`] counts instructions per request under
//! callgrind, which the noise of a shared host does not move.

pub mod apps;
pub mod count;
pub mod load;
pub mod memory;
pub mod variants;
