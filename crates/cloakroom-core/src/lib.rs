//! The shared model of [cloakroom](https://docs.rs/cloakroom): what every
//! engine crate depends on, and nothing else.
//!
//! * [`id`]: session ids ([`Id`], 256 bits from the OS CSPRNG) and the
//!   [`StoreKey`] (SHA-256 of the id) that stores key sessions by.
//! * [`record`]: the [`Record`] a store keeps (JSON data, [`Expiry`] policy,
//!   deadline) and its byte form.
//! * [`store`]: the contract engines implement, [`SessionStore`] for
//!   server-side engines and [`CookieCodec`] for cookie engines.
//! * [`error`]: [`Error`] and [`ErrorKind`], which the layer maps to HTTP.
//! * [`config`]: reading settings and [`ConfigError`], which names the
//!   variable, the value and what is accepted.
//!
//! Applications use the `cloakroom` crate, which re-exports what they need.
//!
//! ```
//! use cloakroom_core::{Id, Record, record::Data};
//! use time::OffsetDateTime;
//!
//! let id = Id::generate().expect("OS randomness");
//! assert!(Id::parse(id.expose()).is_some());
//! assert!(Id::parse("not-an-id").is_none());
//!
//! let deadline = OffsetDateTime::from_unix_timestamp(2_000_000_000).expect("valid");
//! let record = Record::new(Data::new(), deadline);
//! let bytes = record.to_bytes().expect("serializable");
//! assert_eq!(Record::from_bytes(&bytes).expect("readable"), record);
//! ```

pub mod config;
mod data;
pub mod error;
pub mod id;
pub mod record;
pub mod store;

pub use config::{ConfigError, Env, Settings};
pub use error::{BoxError, Error, ErrorKind};
pub use id::{Id, KeyHex, StoreKey};
pub use record::{Expiry, Record};
pub use store::{Call, CookieCodec, Opened, SessionStore};
