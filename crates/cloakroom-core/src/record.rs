//! What stores keep for a session: its data, its expiry policy and its deadline.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::{Duration, OffsetDateTime};

use crate::Error;

/// The session data: JSON values by key.
pub type Data = Map<String, Value>;

/// How a session expires, as set by `Session::set_expiry` in the `cloakroom` crate.
///
/// A session with no explicit expiry follows the layer's settings
/// (`SESSION_COOKIE_AGE`, `SESSION_EXPIRE_AT_BROWSER_CLOSE`), as in Django.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expiry {
    /// Expires after this much inactivity; the deadline moves on each save or
    /// touch. The cookie gets a matching `Max-Age`.
    OnInactivity(#[serde(with = "seconds")] Duration),
    /// Expires at a fixed point in time.
    AtDateTime(#[serde(with = "time::serde::timestamp")] OffsetDateTime),
    /// The cookie has no `Max-Age`, so the browser drops it when it closes.
    /// The server still enforces `SESSION_COOKIE_AGE` as the deadline, because
    /// "until the browser closes" can be forever.
    OnBrowserClose,
}

mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(d.whole_seconds())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        i64::deserialize(d).map(Duration::seconds)
    }
}

/// What a store keeps under a [`StoreKey`](crate::StoreKey).
///
/// Stores treat it as an opaque blob ([`Record::to_bytes`], MessagePack) plus its deadline
/// ([`Record::expires_at`]), which they must enforce on load and may use for
/// their own expiry (Redis TTL, memcached exptime, an indexed SQL column).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The session's values.
    pub data: Data,
    /// The expiry policy set on this session, if any (else the settings apply).
    pub expiry: Option<Expiry>,
    /// The moment after which the session no longer exists.
    pub expires_at: OffsetDateTime,
}

/// The first wire format (JSON object), still read so that sessions stored by
/// earlier versions keep working.
#[derive(Deserialize)]
struct WireV1<'a> {
    #[serde(rename = "v")]
    version: u8,
    #[serde(rename = "d")]
    data: std::borrow::Cow<'a, Data>,
    #[serde(rename = "e", default)]
    expiry: Option<Expiry>,
    /// Milliseconds since the Unix epoch: seconds would cut up to a second off
    /// short expiries.
    #[serde(rename = "x")]
    expires_at_ms: i64,
}

/// The current wire format: a MessagePack array of version, data, expiry
/// policy and deadline. It is smaller than JSON and several times quicker
/// to write and read for the long strings sessions tend to hold.
type WireV2<'a> = (u8, std::borrow::Cow<'a, Data>, Option<Expiry>, i64);

const WIRE_VERSION: u8 = 2;

thread_local! {
    /// Reused encoding buffer: a record is encoded into it, then copied out
    /// once at its exact size.
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Record {
    /// A record with the given data and deadline and no explicit expiry.
    pub fn new(data: Data, expires_at: OffsetDateTime) -> Self {
        Self {
            data,
            expiry: None,
            expires_at,
        }
    }

    /// True once `now` has reached the deadline.
    pub fn is_expired_at(&self, now: OffsetDateTime) -> bool {
        now >= self.expires_at
    }

    /// True once the current time has reached the deadline.
    pub fn is_expired(&self) -> bool {
        self.is_expired_at(OffsetDateTime::now_utc())
    }

    /// Time left until the deadline, or `None` if it has passed.
    pub fn remaining(&self) -> Option<std::time::Duration> {
        let left = self.expires_at - OffsetDateTime::now_utc();
        (left.is_positive()).then(|| left.unsigned_abs())
    }

    /// The deadline in whole milliseconds since the Unix epoch.
    pub fn expires_at_millis(&self) -> i64 {
        millis(self.expires_at)
    }

    /// Serializes the record (data, expiry policy, deadline) as MessagePack.
    ///
    /// # Errors
    /// Only if a value cannot be represented (never for JSON values).
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let wire: WireV2<'_> = (
            WIRE_VERSION,
            std::borrow::Cow::Borrowed(&self.data),
            self.expiry,
            self.expires_at_millis(),
        );
        BUFFER.with(|buffer| {
            let mut buffer = buffer.try_borrow_mut().map_err(|_| {
                Error::new(crate::ErrorKind::Serialization, "record encoder re-entered")
            })?;
            buffer.clear();
            rmp_serde::encode::write(&mut *buffer, &wire).map_err(|e| {
                Error::with_source(crate::ErrorKind::Serialization, "encode the session", e)
            })?;
            let bytes = buffer.to_vec();
            // Do not keep a buffer grown by one huge session.
            if buffer.capacity() > 1 << 20 {
                *buffer = Vec::new();
            }
            Ok(bytes)
        })
    }

    /// Reads a record written by [`Record::to_bytes`], or by the JSON format
    /// of earlier versions.
    ///
    /// # Errors
    /// When the bytes are not a record of a known version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let (data, expiry, expires_at_ms) = if bytes.first() == Some(&b'{') {
            let wire: WireV1<'_> = serde_json::from_slice(bytes)?;
            if wire.version != 1 {
                return Err(unknown_version(wire.version));
            }
            (wire.data, wire.expiry, wire.expires_at_ms)
        } else {
            let (version, data, expiry, expires_at_ms): WireV2<'_> = rmp_serde::from_slice(bytes)
                .map_err(|e| {
                Error::with_source(crate::ErrorKind::Serialization, "decode the session", e)
            })?;
            if version != WIRE_VERSION {
                return Err(unknown_version(version));
            }
            (data, expiry, expires_at_ms)
        };
        let expires_at =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(expires_at_ms) * 1_000_000)
                .map_err(|e| {
                    Error::with_source(crate::ErrorKind::Serialization, "bad deadline", e)
                })?;
        Ok(Self {
            data: data.into_owned(),
            expiry,
            expires_at,
        })
    }
}

fn unknown_version(version: u8) -> Error {
    Error::new(
        crate::ErrorKind::Serialization,
        format!("unknown session record version {version}"),
    )
}

/// Whole milliseconds since the Unix epoch.
pub fn millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_every_expiry() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        for expiry in [
            None,
            Some(Expiry::OnInactivity(Duration::seconds(300))),
            Some(Expiry::AtDateTime(now + Duration::days(3))),
            Some(Expiry::OnBrowserClose),
        ] {
            let mut data = Data::new();
            data.insert("user".into(), json!({"id": 7, "name": "ada"}));
            let record = Record {
                data,
                expiry,
                expires_at: now + Duration::milliseconds(1234),
            };
            let back = Record::from_bytes(&record.to_bytes().unwrap()).unwrap();
            assert_eq!(back, record);
        }
    }

    #[test]
    fn expiry_is_checked() {
        let past = Record::new(
            Data::new(),
            OffsetDateTime::now_utc() - Duration::seconds(1),
        );
        assert!(past.is_expired());
        assert!(past.remaining().is_none());
        let future = Record::new(Data::new(), OffsetDateTime::now_utc() + Duration::hours(1));
        assert!(!future.is_expired());
        assert!(future.remaining().unwrap().as_secs() > 3500);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Record::from_bytes(b"").is_err());
        assert!(Record::from_bytes(b"{").is_err());
        assert!(Record::from_bytes(br#"{"v":9,"d":{},"x":0}"#).is_err());
        assert!(Record::from_bytes(b"\x94\x09\x80\xc0\x00").is_err());
        assert!(Record::from_bytes(b"\x94\x02\x80").is_err());
    }

    #[test]
    fn records_of_the_json_format_are_still_read() {
        let old =
            br#"{"v":1,"d":{"user":"ada","n":3},"e":{"on_inactivity":300},"x":1800000001234}"#;
        let record = Record::from_bytes(old).unwrap();
        assert_eq!(record.data["user"], json!("ada"));
        assert_eq!(record.data["n"], json!(3));
        assert_eq!(
            record.expiry,
            Some(Expiry::OnInactivity(Duration::seconds(300)))
        );
        assert_eq!(record.expires_at_millis(), 1_800_000_001_234);
        let without_expiry = br#"{"v":1,"d":{},"x":5}"#;
        assert_eq!(Record::from_bytes(without_expiry).unwrap().expiry, None);
    }

    #[test]
    fn every_kind_of_value_round_trips() {
        let mut data = Data::new();
        for (name, value) in [
            ("null", json!(null)),
            ("bool", json!(false)),
            ("big", json!(u64::MAX)),
            ("negative", json!(i64::MIN)),
            ("float", json!(0.1)),
            ("text", json!("ünïcødé \"quoted\" \u{0}")),
            ("nested", json!({"list": [1, "two", [3.5]], "empty": {}})),
        ] {
            data.insert(name.into(), value);
        }
        let record = Record::new(
            data,
            OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
        );
        let bytes = record.to_bytes().unwrap();
        assert_ne!(bytes.first(), Some(&b'{'));
        assert_eq!(Record::from_bytes(&bytes).unwrap(), record);
    }
}
