//! [`Data`]: a session's values, each decoded only when it is first used.
//!
//! A session often holds one large value (an auth token, a service catalog)
//! and a few small ones, and a request tends to read one small one. A record
//! read from a store keeps its encoded bytes; [`Data::get`] decodes the one
//! value asked for, and [`Record::to_bytes`](crate::Record::to_bytes) copies
//! the values nobody replaced back out byte for byte instead of decoding and
//! encoding them again.

use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use bytes::Bytes;
use rmp::Marker;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::{Error, ErrorKind};

/// How deeply arrays and objects may nest in a value that is decoded: the
/// limit `serde_json` puts on parsing, so any value that came from JSON
/// text fits, and a damaged record cannot exhaust the stack.
const MAX_DEPTH: usize = 128;

/// The session's values: JSON values by key, kept sorted by key.
///
/// Values that came from a store stay in their encoded form (MessagePack)
/// until [`get`](Data::get) or [`remove`](Data::remove) asks for them, so a
/// value that is undecodable (a store that handed back damaged bytes)
/// is an error of that call, not of loading the session.
///
/// `Debug` shows the keys only: values may be secrets.
#[derive(Clone, Default)]
pub struct Data {
    /// The encoded record that raw values point into; empty when every
    /// value was set in memory.
    source: Bytes,
    /// Sorted by key, each key once.
    entries: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    key: Key,
    /// Where the value's MessagePack encoding sits in `source`; empty once
    /// the value was set in memory (no encoded value is zero bytes long).
    raw: Range<usize>,
    /// The decoded value, filled on first use or when set.
    value: OnceLock<Value>,
}

/// A value's key: where it sits in `source` (checked to be UTF-8 when the
/// record was parsed, and not copied out), or its own text once set in
/// memory.
#[derive(Clone)]
enum Key {
    Raw(Range<usize>),
    Set(Box<str>),
}

impl Entry {
    fn set(key: String, value: Value) -> Self {
        Self {
            key: Key::Set(key.into_boxed_str()),
            raw: 0..0,
            value: OnceLock::from(value),
        }
    }
}

impl Data {
    /// No values.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many values there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| self.key_of(e))
    }

    /// True if there is a value under `key` (nothing is decoded).
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// The value under `key`, decoded on first use.
    ///
    /// # Errors
    /// When the stored value cannot be decoded.
    pub fn get(&self, key: &str) -> Result<Option<&Value>, Error> {
        match self.find(key) {
            Ok(at) => self.value_of(&self.entries[at]).map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Sets the value under `key`, replacing any previous one.
    pub fn insert(&mut self, key: String, value: Value) {
        match self.find(&key) {
            Ok(at) => self.entries[at] = Entry::set(key, value),
            Err(at) => self.entries.insert(at, Entry::set(key, value)),
        }
    }

    /// Sets the value under `key` unless it holds an equal one already, and
    /// says whether anything changed. A stored value that cannot be decoded
    /// counts as different and is replaced.
    pub fn set(&mut self, key: &str, value: Value) -> bool {
        match self.find(key) {
            Ok(at) => {
                let entry = &self.entries[at];
                if self.value_of(entry).is_ok_and(|old| *old == value) {
                    return false;
                }
                // The key stays where it is (in the record's bytes, if it
                // came from there); only the value is new.
                let entry = &mut self.entries[at];
                entry.raw = 0..0;
                entry.value = OnceLock::from(value);
            }
            Err(at) => self.entries.insert(at, Entry::set(key.to_owned(), value)),
        }
        true
    }

    /// Removes the value under `key` and returns it.
    ///
    /// # Errors
    /// When the stored value cannot be decoded; it is removed all the same.
    pub fn remove(&mut self, key: &str) -> Result<Option<Value>, Error> {
        let Ok(at) = self.find(key) else {
            return Ok(None);
        };
        let mut entry = self.entries.remove(at);
        match entry.value.take() {
            Some(value) => Ok(Some(value)),
            None => self.decode(&entry).map(Some),
        }
    }

    /// Removes every value.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.source = Bytes::new();
    }

    /// Every value, decoded, as a JSON object.
    ///
    /// # Errors
    /// When a stored value cannot be decoded.
    pub fn to_map(&self) -> Result<Map<String, Value>, Error> {
        self.entries
            .iter()
            .map(|e| Ok((self.key_of(e).to_owned(), self.value_of(e)?.clone())))
            .collect()
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        // Byte order is `str` order, and needs no second UTF-8 check.
        self.entries
            .binary_search_by(|e| self.key_bytes(e).cmp(key.as_bytes()))
    }

    fn key_bytes<'a>(&'a self, entry: &'a Entry) -> &'a [u8] {
        key_bytes(&self.source, entry)
    }

    fn key_of<'a>(&'a self, entry: &'a Entry) -> &'a str {
        // Raw keys were checked by `parse`; the fallback is never taken.
        std::str::from_utf8(self.key_bytes(entry)).unwrap_or_default()
    }

    fn value_of<'a>(&'a self, entry: &'a Entry) -> Result<&'a Value, Error> {
        if let Some(value) = entry.value.get() {
            return Ok(value);
        }
        let decoded = self.decode(entry)?;
        // Another thread may have decoded it first; either copy is the same.
        Ok(entry.value.get_or_init(|| decoded))
    }

    fn decode(&self, entry: &Entry) -> Result<Value, Error> {
        let bytes = self
            .source
            .get(entry.raw.clone())
            .ok_or_else(|| malformed("a value outside the record"))?;
        let mut decoder = rmp_serde::Deserializer::from_read_ref(bytes);
        decoder.set_max_depth(MAX_DEPTH);
        serde::Deserialize::deserialize(&mut decoder).map_err(|e| {
            // rmp_serde's message may quote what it read (`invalid type:
            // integer `1234``), which is stored data and may be a secret:
            // only a category of it is kept, and the error is not the source.
            let why = match e {
                rmp_serde::decode::Error::InvalidMarkerRead(_)
                | rmp_serde::decode::Error::InvalidDataRead(_)
                | rmp_serde::decode::Error::LengthMismatch(_) => "cut short",
                rmp_serde::decode::Error::DepthLimitExceeded => "nested too deeply",
                rmp_serde::decode::Error::Utf8Error(_) => "text that is not UTF-8",
                _ => "not a JSON value",
            };
            Error::new(
                ErrorKind::Serialization,
                format!(
                    "the stored session value under {:?} is damaged ({why})",
                    String::from_utf8_lossy(key_bytes(&self.source, entry)),
                ),
            )
        })
    }

    /// Deserializes `value`, found under `key`, as a `T`. When it is not a
    /// `T`, the error names the key and the type asked for, never the value:
    /// serde's own message quotes the value (`invalid type: string
    /// "..."`), and session values are often secrets that must not reach a
    /// log, so serde's error is not kept as the source either.
    ///
    /// ```
    /// use cloakroom_core::record::Data;
    ///
    /// let token = serde_json::json!("s3cr3t-token");
    /// let err = Data::value_as::<u64>("token", &token).unwrap_err();
    /// assert!(err.to_string().contains("\"token\""));
    /// assert!(err.to_string().contains("u64"));
    /// assert!(!err.to_string().contains("s3cr3t"));
    /// assert_eq!(Data::value_as::<String>("token", &token)?, "s3cr3t-token");
    /// # Ok::<(), cloakroom_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Serialization`] when `value` is not a `T`.
    pub fn value_as<T: DeserializeOwned>(key: &str, value: &Value) -> Result<T, Error> {
        T::deserialize(value).map_err(|_| {
            Error::new(
                ErrorKind::Serialization,
                format!(
                    "the session value under {key:?} is not a {}",
                    std::any::type_name::<T>()
                ),
            )
        })
    }

    /// About how many bytes [`Data::encode`] writes: exact for values kept
    /// as they were read, a guess for the others.
    pub(crate) fn encoded_size_hint(&self) -> usize {
        self.entries
            .iter()
            .map(|e| 8 + self.key_bytes(e).len() + if e.raw.is_empty() { 32 } else { e.raw.len() })
            .sum::<usize>()
            + 8
    }

    /// Writes the values as a MessagePack map: values read from a store and
    /// not replaced are copied as they were, the others encoded.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let len = u32::try_from(self.entries.len()).map_err(|_| malformed("too many values"))?;
        rmp::encode::write_map_len(out, len).map_err(encode_error)?;
        for entry in &self.entries {
            let key = self.key_bytes(entry);
            let key_len = u32::try_from(key.len()).map_err(|_| malformed("a key too long"))?;
            rmp::encode::write_str_len(out, key_len).map_err(encode_error)?;
            out.extend_from_slice(key);
            match (self.source.get(entry.raw.clone()), entry.value.get()) {
                (Some(raw), _) if !raw.is_empty() => out.extend_from_slice(raw),
                (_, Some(value)) => rmp_serde::encode::write(out, value).map_err(|e| {
                    Error::with_source(ErrorKind::Serialization, "encode a session value", e)
                })?,
                _ => return Err(malformed("a value with neither bytes nor content")),
            }
        }
        Ok(())
    }

    /// Reads the MessagePack map that starts at `*at` in `source`, noting
    /// where each value is without decoding it, and moves `*at` past it.
    pub(crate) fn parse(source: &Bytes, at: &mut usize) -> Result<Self, Error> {
        let mut reader = Reader {
            bytes: source,
            at: *at,
        };
        let len = reader.map_len()?;
        let mut entries: Vec<Entry> = Vec::with_capacity(len.min(1024));
        let mut sorted = true;
        for _ in 0..len {
            let key_len = reader.str()?.len();
            let key = reader.at - key_len..reader.at;
            if let Some(last) = entries.last() {
                sorted &= key_bytes(source, last) < &source[key.clone()];
            }
            let key = Key::Raw(key);
            let start = reader.at;
            reader.skip(1)?;
            entries.push(Entry {
                key,
                raw: start..reader.at,
                value: OnceLock::new(),
            });
        }
        if !sorted {
            // Not written by this crate: order it, the last of a repeated
            // key winning (as when decoding into a JSON object).
            entries.sort_by(|a, b| key_bytes(source, a).cmp(key_bytes(source, b)));
            entries.dedup_by(|later, earlier| {
                let same = key_bytes(source, later) == key_bytes(source, earlier);
                if same {
                    std::mem::swap(later, earlier);
                }
                same
            });
        }
        *at = reader.at;
        Ok(Self {
            source: source.clone(),
            entries,
        })
    }
}

impl From<Map<String, Value>> for Data {
    fn from(map: Map<String, Value>) -> Self {
        map.into_iter().collect()
    }
}

impl FromIterator<(String, Value)> for Data {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        let mut data = Self::new();
        for (key, value) in iter {
            data.insert(key, value);
        }
        data
    }
}

impl std::ops::Index<&str> for Data {
    type Output = Value;

    /// The value under `key`.
    ///
    /// # Panics
    /// When there is none, or it cannot be decoded; [`Data::get`] does not
    /// panic.
    fn index(&self, key: &str) -> &Value {
        match self.get(key) {
            Ok(Some(value)) => value,
            Ok(None) => panic!("no session value under {key:?}"),
            Err(err) => panic!("session value under {key:?}: {err}"),
        }
    }
}

impl PartialEq for Data {
    /// Same keys with the same values; a value that cannot be decoded equals
    /// only the same bytes.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self.entries.iter().zip(&other.entries).all(|(a, b)| {
                self.key_bytes(a) == other.key_bytes(b)
                    && match (self.value_of(a), other.value_of(b)) {
                        (Ok(x), Ok(y)) => x == y,
                        _ => self.source.get(a.raw.clone()) == other.source.get(b.raw.clone()),
                    }
            })
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Data")
            .field("keys", &self.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The bytes of `entry`'s key, in `source` or its own.
fn key_bytes<'a>(source: &'a [u8], entry: &'a Entry) -> &'a [u8] {
    match &entry.key {
        Key::Raw(at) => source.get(at.clone()).unwrap_or_default(),
        Key::Set(text) => text.as_bytes(),
    }
}

fn malformed(what: &str) -> Error {
    Error::new(
        ErrorKind::Serialization,
        format!("malformed session record: {what}"),
    )
}

pub(crate) fn encode_error(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(ErrorKind::Serialization, "encode the session", e)
}

/// A cursor over MessagePack bytes that finds where values end without
/// decoding them.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| malformed("cut short"))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn marker(&mut self) -> Result<Marker, Error> {
        Ok(Marker::from_u8(self.take(1)?[0]))
    }

    /// A big-endian length of `width` bytes.
    fn length(&mut self, width: usize) -> Result<usize, Error> {
        let length = self
            .take(width)?
            .iter()
            .fold(0u64, |n, b| (n << 8) | u64::from(*b));
        usize::try_from(length).map_err(|_| malformed("a length beyond memory"))
    }

    /// The length of the array that starts here.
    pub(crate) fn array_len(&mut self) -> Result<usize, Error> {
        match self.marker()? {
            Marker::FixArray(n) => Ok(usize::from(n)),
            Marker::Array16 => self.length(2),
            Marker::Array32 => self.length(4),
            _ => Err(malformed("expected an array")),
        }
    }

    fn map_len(&mut self) -> Result<usize, Error> {
        match self.marker()? {
            Marker::FixMap(n) => Ok(usize::from(n)),
            Marker::Map16 => self.length(2),
            Marker::Map32 => self.length(4),
            _ => Err(malformed("expected a map of values")),
        }
    }

    fn str(&mut self) -> Result<&str, Error> {
        let len = match self.marker()? {
            Marker::FixStr(n) => usize::from(n),
            Marker::Str8 => self.length(1)?,
            Marker::Str16 => self.length(2)?,
            Marker::Str32 => self.length(4)?,
            _ => return Err(malformed("a key that is not a string")),
        };
        std::str::from_utf8(self.take(len)?).map_err(|_| malformed("a key that is not UTF-8"))
    }

    /// Moves past `count` whole values (arrays and maps with everything in
    /// them). Iterative, so deep nesting cannot overflow the stack, and
    /// every step consumes a byte, so it ends within the input's length.
    pub(crate) fn skip(&mut self, count: usize) -> Result<(), Error> {
        let mut pending = count as u64;
        while pending > 0 {
            pending -= 1;
            let (bytes, values) = match self.marker()? {
                Marker::FixPos(_)
                | Marker::FixNeg(_)
                | Marker::Null
                | Marker::True
                | Marker::False => (0, 0),
                Marker::U8 | Marker::I8 => (1, 0),
                Marker::U16 | Marker::I16 => (2, 0),
                Marker::U32 | Marker::I32 | Marker::F32 => (4, 0),
                Marker::U64 | Marker::I64 | Marker::F64 => (8, 0),
                Marker::FixStr(n) => (usize::from(n), 0),
                Marker::Str8 | Marker::Bin8 => (self.length(1)?, 0),
                Marker::Str16 | Marker::Bin16 => (self.length(2)?, 0),
                Marker::Str32 | Marker::Bin32 => (self.length(4)?, 0),
                Marker::FixArray(n) => (0, u64::from(n)),
                Marker::Array16 => (0, self.length(2)? as u64),
                Marker::Array32 => (0, self.length(4)? as u64),
                Marker::FixMap(n) => (0, 2 * u64::from(n)),
                Marker::Map16 => (0, 2 * self.length(2)? as u64),
                Marker::Map32 => (0, 2 * self.length(4)? as u64),
                // Extension types: a type byte, then the data.
                Marker::FixExt1 => (2, 0),
                Marker::FixExt2 => (3, 0),
                Marker::FixExt4 => (5, 0),
                Marker::FixExt8 => (9, 0),
                Marker::FixExt16 => (17, 0),
                Marker::Ext8 => (self.length(1)? + 1, 0),
                Marker::Ext16 => (self.length(2)? + 1, 0),
                Marker::Ext32 => (self.length(4)? + 1, 0),
                Marker::Reserved => return Err(malformed("a reserved marker")),
            };
            self.take(bytes)?;
            pending += values;
        }
        Ok(())
    }

    /// The value that starts here, whole.
    pub(crate) fn value(&mut self) -> Result<&[u8], Error> {
        let start = self.at;
        self.skip(1)?;
        Ok(&self.bytes[start..self.at])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Expiry, Record};
    use serde_json::json;
    use time::OffsetDateTime;

    fn deadline() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid")
    }

    fn sample() -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("token".into(), json!("t".repeat(2048)));
        map.insert("n".into(), json!(41));
        map.insert(
            "catalog".into(),
            json!([{"type": "compute", "urls": ["a", "b"]}]),
        );
        map.insert("nothing".into(), Value::Null);
        map
    }

    /// What the first MessagePack version wrote: one serde tuple, the
    /// deadline in the shortest integer form.
    fn old_encoding(map: &Map<String, Value>, expiry: Option<Expiry>, ms: i64) -> Vec<u8> {
        rmp_serde::to_vec(&(2u8, map, expiry, ms)).expect("encodes")
    }

    /// What is written now: the same tuple, the deadline in its fixed
    /// nine-byte form.
    fn encoding(map: &Map<String, Value>, expiry: Option<Expiry>, ms: i64) -> Vec<u8> {
        let mut bytes = rmp_serde::to_vec(&(2u8, map, expiry, 0u8)).expect("encodes");
        assert_eq!(bytes.pop(), Some(0), "a zero is one byte");
        bytes.push(0xd3);
        bytes.extend_from_slice(&ms.to_be_bytes());
        bytes
    }

    fn record_of(bytes: &[u8]) -> Record {
        Record::from_bytes(bytes).expect("a record")
    }

    #[test]
    fn writes_the_same_bytes_as_the_serde_encoding() {
        for expiry in [
            None,
            Some(Expiry::OnInactivity(time::Duration::seconds(300))),
            Some(Expiry::OnBrowserClose),
        ] {
            let record = Record {
                data: Data::from(sample()),
                expiry,
                expires_at: deadline(),
                version: None,
                cycled: false,
            };
            let ms = record.expires_at_millis();
            let now = encoding(&sample(), expiry, ms);
            assert_eq!(record.to_bytes().expect("encodes"), now);
            // A record read back writes its bytes again unchanged, and one
            // written by the first encoder is written in the fixed form.
            assert_eq!(record_of(&now).to_bytes().expect("encodes"), now);
            let old = old_encoding(&sample(), expiry, ms);
            assert_ne!(old, now);
            assert_eq!(record_of(&old).to_bytes().expect("encodes"), now);
        }
    }

    #[test]
    fn a_changed_value_is_encoded_and_the_others_copied() {
        let bytes = encoding(&sample(), None, 5);
        let mut record = record_of(&bytes);
        assert_eq!(record.data.get("n").expect("decodes"), Some(&json!(41)));
        record.data.insert("n".into(), json!(42));
        record.data.insert("added".into(), json!({"k": [1, 2]}));
        assert_eq!(
            record.data.remove("nothing").expect("decodes"),
            Some(Value::Null)
        );
        let mut want = sample();
        want.insert("n".into(), json!(42));
        want.insert("added".into(), json!({"k": [1, 2]}));
        want.remove("nothing");
        assert_eq!(
            record.to_bytes().expect("encodes"),
            encoding(&want, None, 5)
        );
        assert_eq!(record.data.to_map().expect("decodes"), want);
    }

    #[test]
    fn set_changes_only_what_differs_and_keeps_keys_in_place() {
        let bytes = encoding(&sample(), None, 5);
        let mut record = record_of(&bytes);
        assert!(!record.data.set("n", json!(41)), "equal: no change");
        assert_eq!(record.to_bytes().expect("encodes"), bytes);
        assert!(record.data.set("n", json!(42)));
        assert!(record.data.set("added", json!([1])));
        assert!(!record.data.set("added", json!([1])));
        let mut want = sample();
        want.insert("n".into(), json!(42));
        want.insert("added".into(), json!([1]));
        assert_eq!(
            record.to_bytes().expect("encodes"),
            encoding(&want, None, 5)
        );
        assert_eq!(
            record.data.keys().collect::<Vec<_>>(),
            ["added", "catalog", "n", "nothing", "token"]
        );
    }

    #[test]
    fn one_damaged_value_spoils_only_itself() {
        let mut map = Map::new();
        map.insert("bad".into(), json!("xy"));
        map.insert("good".into(), json!(7));
        let mut bytes = encoding(&map, None, 5);
        // The string "xy" becomes invalid UTF-8.
        let at = bytes
            .windows(3)
            .position(|w| w == b"\xa2xy")
            .expect("the value is there");
        bytes[at + 1] = 0xff;
        let record = record_of(&bytes);
        assert_eq!(record.data.get("good").expect("decodes"), Some(&json!(7)));
        assert!(record.data.get("bad").is_err());
        assert!(record.data.to_map().is_err());
        // Kept as it was when the record is written again.
        assert_eq!(record.to_bytes().expect("encodes"), bytes);
        let mut data = record.data.clone();
        assert!(data.remove("bad").is_err());
        assert_eq!(data.keys().collect::<Vec<_>>(), ["good"]);
        // Setting it, even to what it once was, replaces it.
        let mut data = record.data;
        assert!(data.set("bad", json!("xy")));
        assert_eq!(data.get("bad").expect("decodes"), Some(&json!("xy")));
    }

    #[test]
    fn keys_out_of_order_are_sorted_and_the_last_repeat_wins() {
        // A map written by hand: {"b": 1, "a": 2, "b": 3}.
        let mut bytes = vec![0x94, 0x02, 0x83];
        for (key, value) in [("b", 1u8), ("a", 2), ("b", 3)] {
            rmp::encode::write_str(&mut bytes, key).expect("writes");
            rmp::encode::write_uint(&mut bytes, u64::from(value)).expect("writes");
        }
        bytes.extend([0xc0, 0x05]);
        let record = record_of(&bytes);
        assert_eq!(record.data.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(record.data["a"], json!(2));
        assert_eq!(record.data["b"], json!(3));
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let good = encoding(&sample(), None, 5);
        for cut in 0..good.len() {
            assert!(Record::from_bytes(&good[..cut]).is_err(), "cut at {cut}");
        }
        for bad in [
            // A map claiming four billion entries.
            &[0x94, 0x02, 0xdf, 0xff, 0xff, 0xff, 0xff][..],
            // A key that is a number.
            &[0x94, 0x02, 0x81, 0x01, 0x01, 0xc0, 0x05],
            // A string claiming four gigabytes.
            &[0x94, 0x02, 0x81, 0xa1, b'k', 0xdb, 0xff, 0xff, 0xff, 0xff],
            // The reserved marker.
            &[0x94, 0x02, 0x81, 0xa1, b'k', 0xc1, 0xc0, 0x05],
            // Three elements instead of four.
            &[0x93, 0x02, 0x80, 0xc0],
        ] {
            assert!(Record::from_bytes(bad).is_err(), "{bad:x?}");
        }
    }

    #[test]
    fn deep_nesting_is_skipped_and_refused_on_use_without_overflow() {
        let depth = 100_000;
        let mut bytes = vec![0x94, 0x02, 0x81, 0xa1, b'k'];
        bytes.extend(std::iter::repeat_n(0x91, depth));
        bytes.extend([0xc0, 0xc0, 0x05]);
        let record = record_of(&bytes);
        assert!(record.data.contains_key("k"));
        assert!(record.data.get("k").is_err());
        // As deep as JSON text may nest is fine.
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH - 1 {
            deep = json!([deep]);
        }
        let mut data = Data::new();
        data.insert("k".into(), deep.clone());
        let record = record_of(&Record::new(data, deadline()).to_bytes().expect("encodes"));
        assert_eq!(record.data["k"], deep);
    }

    #[test]
    fn debug_shows_keys_not_values() {
        let data = Data::from(sample());
        let shown = format!("{data:?}");
        assert!(
            shown.contains("token") && shown.contains("catalog"),
            "{shown}"
        );
        assert!(
            !shown.contains("ttt") && !shown.contains("compute"),
            "{shown}"
        );
    }

    #[test]
    fn equality_looks_at_values_not_at_where_they_came_from() {
        let read = record_of(&old_encoding(&sample(), None, 5)).data;
        let built = Data::from(sample());
        assert_eq!(read, built);
        let mut changed = built.clone();
        changed.insert("n".into(), json!(40));
        assert_ne!(read, changed);
        let mut cleared = read.clone();
        cleared.clear();
        assert!(cleared.is_empty());
        assert_eq!(cleared, Data::new());
    }

    /// Everything an error shows: `Display`, `Debug`, and the same for each
    /// `source()` down the chain.
    fn all_text(err: &Error) -> String {
        let mut text = format!("{err} {err:?}");
        let mut next = std::error::Error::source(err);
        while let Some(e) = next {
            text.push_str(&format!(" {e} {e:?}"));
            next = e.source();
        }
        text
    }

    #[test]
    fn a_type_mismatch_names_the_key_and_type_never_the_value() {
        let secret = json!("hunter2-0123456789-secret");
        let err = Data::value_as::<u64>("api_token", &secret).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Serialization);
        let text = all_text(&err);
        assert!(
            text.contains("\"api_token\"") && text.contains("u64"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        // Numbers are quoted by serde too (`invalid value: integer `...``).
        let pin = json!(987_654_321);
        let text = all_text(&Data::value_as::<u8>("pin", &pin).unwrap_err());
        assert!(text.contains("\"pin\"") && text.contains("u8"), "{text}");
        assert!(!text.contains("987654321"), "{text}");
        assert_eq!(
            Data::value_as::<u64>("pin", &pin).expect("a u64"),
            987_654_321
        );
    }

    #[test]
    fn a_damaged_value_error_never_quotes_its_bytes() {
        // {"pin": {987654321: "x"}}: the inner map's key is a number, which
        // the record parser skips over but no JSON object can hold.
        let mut bytes = vec![0x94, 0x02, 0x81, 0xa3, b'p', b'i', b'n', 0x81, 0xce];
        bytes.extend(987_654_321u32.to_be_bytes());
        bytes.extend([0xa1, b'x', 0xc0, 0x05]);
        let record = record_of(&bytes);
        let mut data = record.data.clone();
        for err in [
            record.data.get("pin").unwrap_err(),
            data.remove("pin").unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::Serialization);
            let text = all_text(&err);
            assert!(text.contains("\"pin\""), "{text}");
            assert!(!text.contains("987654321"), "{text}");
        }
    }
}
