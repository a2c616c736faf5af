//! What stores keep for a session: its data, its expiry policy and its deadline.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use time::{Duration, OffsetDateTime};

pub use crate::data::Data;
use crate::data::{Reader, encode_error};
use crate::{Error, ErrorKind};

/// How a session expires, as set by `Session::set_expiry` in the `cloakroom` crate.
///
/// A session with no explicit expiry follows the layer's settings
/// (`SESSION_COOKIE_AGE`, `SESSION_EXPIRE_AT_BROWSER_CLOSE`), as in Django.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expiry {
    /// Expires after this much inactivity; the deadline moves on each save or
    /// touch. The cookie gets a matching `Max-Age`.
    ///
    /// The period is a [`time::Duration`] (`cloakroom::time::Duration`, as
    /// `cloakroom` re-exports `time`: `Duration::minutes(30)`); from a
    /// `std::time::Duration`, use [`Expiry::on_inactivity`].
    OnInactivity(#[serde(with = "seconds")] Duration),
    /// Expires at a fixed point in time.
    AtDateTime(#[serde(with = "time::serde::timestamp")] OffsetDateTime),
    /// The cookie has no `Max-Age`, so the browser drops it when it closes.
    /// The server still enforces `SESSION_COOKIE_AGE` as the deadline, because
    /// "until the browser closes" can be forever.
    OnBrowserClose,
}

/// The longest a session may live from one save to the next: 100 years.
/// Every age the layer takes (`SESSION_COOKIE_AGE`, an inactivity period
/// given to `set_expiry`, one read from a store) is checked against it, so
/// that a deadline is always a moment the calendar can hold.
pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

impl Expiry {
    /// [`Expiry::OnInactivity`] from a `std::time::Duration`, the type the
    /// rest of the API takes (the variant holds a `time::Duration`, which
    /// `cloakroom` re-exports as `cloakroom::time`). A period too long for
    /// a `time::Duration` becomes the longest one, which is out of bounds.
    ///
    /// ```
    /// use cloakroom_core::Expiry;
    ///
    /// let idle = Expiry::on_inactivity(std::time::Duration::from_secs(1800));
    /// assert_eq!(idle, Expiry::OnInactivity(time::Duration::minutes(30)));
    /// assert!(!Expiry::on_inactivity(std::time::Duration::MAX).is_within_bounds());
    /// ```
    pub fn on_inactivity(period: std::time::Duration) -> Self {
        Self::OnInactivity(Duration::try_from(period).unwrap_or(Duration::MAX))
    }

    /// True when the policy's age is within `(0, MAX_AGE]` (a fixed moment
    /// or the browser's close always is).
    pub fn is_within_bounds(&self) -> bool {
        match self {
            Self::OnInactivity(age) => age.is_positive() && age.unsigned_abs() <= MAX_AGE,
            Self::AtDateTime(_) | Self::OnBrowserClose => true,
        }
    }
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
///
/// Two records are equal when their data, expiry policy and deadline are;
/// their [`version`](Record::version) and [`cycled`](Record::cycled) do not
/// count.
#[derive(Debug, Clone)]
pub struct Record {
    /// The session's values.
    pub data: Data,
    /// The expiry policy set on this session, if any (else the settings apply).
    pub expiry: Option<Expiry>,
    /// The moment after which the session no longer exists.
    pub expires_at: OffsetDateTime,
    /// The store's version of the record as it was loaded, for stores whose
    /// backend numbers each write (memcached's CAS unique): an update may
    /// then write only if the record is still that version. `None` for a
    /// record made in memory or by a store without versions. The layer
    /// carries it from the load to the save of the same request and never
    /// looks at it.
    pub version: Option<u64>,
    /// True when the layer stores this record under an id that
    /// [`cycle_id`](https://docs.rs/cloakroom/latest/cloakroom/struct.Session.html#method.cycle_id)
    /// gave it, as a login does in an application that cycles the id at
    /// login (Django's `login()` does). A store with a bound on its entries
    /// keeps such sessions apart from the others, so that anonymous
    /// visitors cannot push logged-in users out. Only `create` looks at it;
    /// no store keeps it, and a loaded record has `false`.
    pub cycled: bool,
}

impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data
            && self.expiry == other.expiry
            && self.expires_at == other.expires_at
    }
}

/// The current wire format: a MessagePack array of the version, the data
/// (a map), the expiry policy and the deadline in milliseconds. It is smaller
/// than JSON and several times quicker to write and read for the long
/// strings sessions tend to hold, and a value can be found in it without
/// decoding the others (see [`Data`]).
///
/// The deadline is always written in the same nine bytes at the very end
/// (see [`deadline_field`]), so that a store able to overwrite part of a
/// value can move it without rewriting the record.
const WIRE_VERSION: u8 = 2;

/// How many bytes end every record that [`Record::to_bytes`] writes and hold
/// its deadline (see [`deadline_field`]).
pub const DEADLINE_FIELD_LEN: usize = 9;

/// The MessagePack marker of a 64-bit signed integer, which starts the
/// deadline field.
const DEADLINE_MARKER: u8 = 0xd3;

/// MessagePack's nil, which stands for "no expiry policy".
const NIL: u8 = 0xc0;

/// The last [`DEADLINE_FIELD_LEN`] bytes of a record whose deadline is
/// `expires_at`: MessagePack's 64-bit integer form (the marker `0xd3`, then
/// the milliseconds since the Unix epoch, big-endian).
///
/// Writing these bytes over the end of a record's bytes moves its deadline,
/// as long as [`has_deadline_field`] holds for them. The Redis engine's
/// `touch` does that on the server, so that its `load` is a single `GET`.
pub fn deadline_field(expires_at: OffsetDateTime) -> [u8; DEADLINE_FIELD_LEN] {
    let mut field = [DEADLINE_MARKER; DEADLINE_FIELD_LEN];
    field[1..].copy_from_slice(&millis(expires_at).to_be_bytes());
    field
}

/// True when `bytes` end with a deadline in the form of [`deadline_field`].
/// Every record [`Record::to_bytes`] writes does; bytes written some other
/// way (another MessagePack integer form) may not, and then a store must
/// keep the deadline some other way.
pub fn has_deadline_field(bytes: &[u8]) -> bool {
    bytes.len() > DEADLINE_FIELD_LEN && bytes[bytes.len() - DEADLINE_FIELD_LEN] == DEADLINE_MARKER
}

impl Record {
    /// A record with the given data and deadline and no explicit expiry.
    pub fn new(data: Data, expires_at: OffsetDateTime) -> Self {
        Self {
            data,
            expiry: None,
            expires_at,
            version: None,
            cycled: false,
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
    /// Values read by [`Record::from_bytes`] and not replaced since are
    /// copied as they were, not encoded again.
    ///
    /// # Errors
    /// Only if a value cannot be represented (never for JSON values).
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        // Sized for the values copied as they are plus room for the rest,
        // so that the usual save allocates once and copies each byte once.
        let mut out = Vec::with_capacity(self.data.encoded_size_hint() + 32);
        self.encode(&mut out)?;
        // Stores keep these bytes; do not keep the guessed room with them
        // (shrinking in place does not copy).
        out.shrink_to_fit();
        Ok(out)
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        rmp::encode::write_array_len(out, 4).map_err(encode_error)?;
        rmp_serde::encode::write(out, &WIRE_VERSION).map_err(encode_error)?;
        self.data.encode(out)?;
        rmp_serde::encode::write(out, &self.expiry).map_err(encode_error)?;
        out.extend_from_slice(&deadline_field(self.expires_at));
        Ok(())
    }

    /// Reads a record written by [`Record::to_bytes`]. The values are
    /// decoded when first used (see [`Data`]); [`Record::from_shared`]
    /// avoids copying `bytes`.
    ///
    /// # Errors
    /// When the bytes are not a record of a known version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        Self::from_shared(Bytes::copy_from_slice(bytes))
    }

    /// [`Record::from_bytes`] on bytes that the record may keep a share of,
    /// for its values not decoded yet, without copying them.
    ///
    /// # Errors
    /// When the bytes are not a record of a known version.
    pub fn from_shared(bytes: Bytes) -> Result<Self, Error> {
        let mut reader = Reader {
            bytes: &bytes,
            at: 0,
        };
        if reader.array_len()? != 4 {
            return Err(Error::new(ErrorKind::Serialization, "not a session record"));
        }
        // The version, the policy when there is none (nil) and the deadline
        // in its usual form are read directly: every load passes here.
        let version: u8 = match reader.value()? {
            [small] if *small < 0x80 => *small,
            other => decode_value(other)?,
        };
        if version != WIRE_VERSION {
            return Err(unknown_version(version));
        }
        let mut at = reader.at;
        let data = Data::parse(&bytes, &mut at)?;
        let mut reader = Reader { bytes: &bytes, at };
        let expiry: Option<Expiry> = match reader.value()? {
            [NIL] => None,
            other => decode_value(other)?,
        };
        let expires_at_ms: i64 = match reader.value()? {
            [DEADLINE_MARKER, be @ ..] if be.len() == 8 => {
                i64::from_be_bytes(be.try_into().unwrap_or_default())
            }
            other => decode_value(other)?,
        };
        Ok(Self {
            data,
            expiry,
            expires_at: from_millis(expires_at_ms)?,
            version: None,
            cycled: false,
        })
    }
}

fn decode_value<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    rmp_serde::from_slice(bytes)
        .map_err(|e| Error::with_source(ErrorKind::Serialization, "decode the session", e))
}

/// The moment `ms` whole milliseconds after the Unix epoch.
///
/// # Errors
/// When it is outside the years the `time` crate represents.
pub fn from_millis(ms: i64) -> Result<OffsetDateTime, Error> {
    // Whole seconds and the milliseconds within them: no 128-bit division,
    // which the nanosecond constructor needs (this runs on every load).
    let within = u16::try_from(ms.rem_euclid(1000)).unwrap_or(0);
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .and_then(|t| t.replace_millisecond(within))
        .map_err(|e| Error::with_source(ErrorKind::Serialization, "bad deadline", e))
}

fn unknown_version(version: u8) -> Error {
    Error::new(
        ErrorKind::Serialization,
        format!("unknown session record version {version}"),
    )
}

/// Whole milliseconds since the Unix epoch.
pub fn millis(t: OffsetDateTime) -> i64 {
    // Seconds are floored and the milliseconds within them count up, so a
    // moment before 1970 rounds down, as `from_millis` reads it back.
    t.unix_timestamp()
        .saturating_mul(1000)
        .saturating_add(i64::from(t.millisecond()))
}

/// The current time in whole milliseconds since the Unix epoch: what
/// [`millis`] gives for `OffsetDateTime::now_utc()`, read without working
/// out a calendar date (stores compare it with deadlines on every load).
pub fn now_millis() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let whole = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => whole(since),
        Err(before) => -whole(before.duration()),
    }
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
                version: None,
                cycled: false,
            };
            let back = Record::from_bytes(&record.to_bytes().unwrap()).unwrap();
            assert_eq!(back, record);
        }
    }

    #[test]
    fn the_quick_clock_agrees_with_the_calendar_one() {
        let before = millis(OffsetDateTime::now_utc());
        let quick = now_millis();
        let after = millis(OffsetDateTime::now_utc());
        assert!(
            before <= quick && quick <= after,
            "{before} {quick} {after}"
        );
    }

    #[test]
    fn milliseconds_convert_both_ways_without_loss() {
        for ms in [
            0,
            1,
            999,
            1000,
            1_800_000_001_234,
            -1,
            -999,
            -1000,
            -1001,
            253_402_300_799_999,
        ] {
            let t = from_millis(ms).unwrap();
            assert_eq!(t.unix_timestamp_nanos(), i128::from(ms) * 1_000_000, "{ms}");
            assert_eq!(millis(t), ms);
        }
        // Below a millisecond is dropped, rounding down.
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_234_567_890).unwrap();
        assert_eq!(millis(t), 1_234);
        let t = OffsetDateTime::from_unix_timestamp_nanos(-1_500_000).unwrap();
        assert_eq!(millis(t), -2);
        // Past year 9999 the calendar ends: an error, not a panic.
        assert!(from_millis(i64::MAX).is_err());
        assert!(from_millis(i64::MIN).is_err());
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
    fn the_deadline_field_ends_every_record_and_can_be_overwritten() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mut data = Data::new();
        data.insert("token".into(), json!("t".repeat(100)));
        for expires_at in [
            now,
            now + Duration::days(365 * 100),
            now - Duration::days(20_000),
        ] {
            let mut bytes = Record::new(data.clone(), expires_at).to_bytes().unwrap();
            assert!(has_deadline_field(&bytes));
            let tail = bytes.len() - DEADLINE_FIELD_LEN;
            assert_eq!(bytes[tail..], deadline_field(expires_at));
            // What Redis's touch does on the server.
            let moved = expires_at + Duration::milliseconds(86_400_123);
            bytes[tail..].copy_from_slice(&deadline_field(moved));
            let back = Record::from_bytes(&bytes).unwrap();
            assert_eq!(back.expires_at, moved);
            assert_eq!(back.data["token"], data["token"]);
        }
        let shortest = rmp_serde::to_vec(&(
            2u8,
            serde_json::Map::new(),
            None::<Expiry>,
            1_800_000_001_234i64,
        ));
        assert!(!has_deadline_field(&shortest.unwrap()));
        assert!(!has_deadline_field(&deadline_field(now)));
    }

    #[test]
    fn bytes_that_are_no_record_are_an_error_not_a_panic() {
        for bytes in [
            &br#"{"v":1,"d":{"user":"ada"},"x":1800000001234}"#[..],
            b"",
            &[0x94, 0x01, 0x80, 0xc0][..],
            &[0x94, 0x09, 0x80, 0xc0, 0x05][..],
        ] {
            let err = Record::from_bytes(bytes).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Serialization, "{bytes:?}");
        }
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
