//! The bytes inside the seal, and the text of the cookie value.
//!
//! The payload is [`Record::to_bytes`] (MessagePack), deflated when the
//! record is over [`COMPRESS_ABOVE`] bytes and deflating makes it shorter; a
//! flag byte says which. Deflate (zlib-rs, default level: a large session
//! must fit the cookie bound) runs on a per-thread compressor and
//! decompressor that are reset, not rebuilt, for each cookie: setting one up
//! costs far more than compressing a few kilobytes. The cookie value is the sealed envelope
//! in unpadded base64url, whose alphabet (`A-Z a-z 0-9 - _`) needs no quoting
//! or escaping in a `Set-Cookie` header.
//!
//! Decoding bounds its work before it does any: a value longer than
//! [`MAX_VALUE_LEN`] is refused unread, and inflating stops after
//! [`MAX_PLAINTEXT_LEN`] bytes, so a small deflate stream cannot expand into
//! gigabytes. (Inflating only happens after the MAC or tag has been checked,
//! so only a holder of the key could make such a stream, but a bound costs
//! nothing.)

use std::cell::RefCell;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloakroom_core::Record;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::CookieError;

/// The longest cookie value [`open`](cloakroom_core::CookieCodec::open)
/// decodes, in characters (64 KiB). Longer values are rejected before any
/// decoding; sealing a session that would be longer fails with
/// [`CookieError::TooLarge`]. The layer's own bound on the cookies it writes
/// (a few KB) is far lower.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// The largest payload accepted, in bytes (1 MiB), before compression on
/// sealing and after decompression on opening.
pub const MAX_PLAINTEXT_LEN: usize = 1024 * 1024;

/// Records up to this many bytes are not compressed. They fit one cookie as
/// they are (4000 characters of base64url carry 3000 bytes, less the
/// envelope), and deflating them would save some bytes per request at the
/// price of a deflate on every save and an inflate on every request.
pub const COMPRESS_ABOVE: usize = 2900;

/// Flag byte: the body is the record's bytes themselves.
pub(crate) const FLAG_PLAIN: u8 = 0;
/// Flag byte: the body is a raw deflate stream of the record's bytes.
pub(crate) const FLAG_DEFLATE: u8 = 1;

thread_local! {
    static DEFLATE: RefCell<Option<Compress>> = const { RefCell::new(None) };
    static INFLATE: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// `input` as a raw deflate stream, if that is shorter than `input`.
fn deflate(input: &[u8]) -> Option<Vec<u8>> {
    DEFLATE.with(|cell| {
        let mut cell = cell.try_borrow_mut().ok()?;
        let compressor = cell.get_or_insert_with(|| Compress::new(Compression::default(), false));
        compressor.reset();
        // Room for the worst case (stored blocks), so the stream always ends;
        // it is kept only if shorter than the input.
        let mut out = Vec::with_capacity(input.len() + input.len() / 64 + 64);
        match compressor.compress_vec(input, &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) if out.len() < input.len() => Some(out),
            _ => None,
        }
    })
}

/// Inflates a raw deflate stream of at most `limit` bytes; `None` when the
/// stream is broken, unfinished or longer.
fn inflate(body: &[u8], limit: usize) -> Option<Vec<u8>> {
    INFLATE.with(|cell| {
        let mut cell = cell.try_borrow_mut().ok()?;
        let decompressor = cell.get_or_insert_with(|| Decompress::new(false));
        decompressor.reset(false);
        let mut out = Vec::with_capacity((body.len() * 4).clamp(1024, limit));
        loop {
            let (read, written) = (decompressor.total_in(), decompressor.total_out());
            let rest = body.get(usize::try_from(read).ok()?..)?;
            let status = decompressor
                .decompress_vec(rest, &mut out, FlushDecompress::None)
                .ok()?;
            if status == Status::StreamEnd {
                return Some(out);
            }
            if out.len() == out.capacity() {
                // Out of room: grow within the limit, or give up.
                if out.capacity() >= limit {
                    return None;
                }
                out.reserve_exact((out.capacity() * 2).min(limit) - out.len());
            } else if (read, written) == (decompressor.total_in(), decompressor.total_out()) {
                // Room left but no progress: the stream is cut short.
                return None;
            }
        }
    })
}

/// Serializes `record` and, when `compress` is on and the record is over
/// [`COMPRESS_ABOVE`] bytes, picks the shorter of plain and deflated bytes.
/// Returns the flag byte and the body.
pub(crate) fn encode(record: &Record, compress: bool) -> Result<(u8, Vec<u8>), CookieError> {
    let bytes = record.to_bytes().map_err(CookieError::Serialize)?;
    if bytes.len() > MAX_PLAINTEXT_LEN {
        return Err(CookieError::TooLarge {
            len: bytes.len(),
            max: MAX_PLAINTEXT_LEN,
        });
    }
    if compress
        && bytes.len() > COMPRESS_ABOVE
        && let Some(deflated) = deflate(&bytes)
    {
        return Ok((FLAG_DEFLATE, deflated));
    }
    Ok((FLAG_PLAIN, bytes))
}

/// Reads an authenticated payload back into a record, which must carry the
/// deadline that was authenticated with it. `None` for anything else.
pub(crate) fn decode(flag: u8, body: &[u8], deadline_ms: i64) -> Option<Record> {
    let record = match flag {
        FLAG_PLAIN if body.len() <= MAX_PLAINTEXT_LEN => Record::from_bytes(body).ok()?,
        FLAG_DEFLATE => Record::from_shared(inflate(body, MAX_PLAINTEXT_LEN)?.into()).ok()?,
        _ => return None,
    };
    // The envelope's deadline is the one the MAC covers; the record's own copy
    // must agree, or the layer could act on a deadline nobody checked.
    (record.expires_at_millis() == deadline_ms).then_some(record)
}

/// The cookie text of a sealed envelope.
pub(crate) fn to_text(envelope: &[u8]) -> Result<String, CookieError> {
    let text = URL_SAFE_NO_PAD.encode(envelope);
    if text.len() > MAX_VALUE_LEN {
        return Err(CookieError::TooLarge {
            len: text.len(),
            max: MAX_VALUE_LEN,
        });
    }
    Ok(text)
}

/// The envelope in a cookie value, if the value is short enough to look at
/// and is canonical unpadded base64url (the decoder rejects non-zero trailing
/// bits, so every envelope has exactly one spelling).
pub(crate) fn from_text(value: &str) -> Option<Vec<u8>> {
    if value.len() > MAX_VALUE_LEN {
        return None;
    }
    URL_SAFE_NO_PAD.decode(value).ok()
}

/// Reads a big-endian `i64` at `at`, if there are eight bytes there.
pub(crate) fn read_i64(bytes: &[u8], at: usize) -> Option<i64> {
    let raw: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(i64::from_be_bytes(raw))
}

/// The cookie name as it goes into a MAC or associated data: length-prefixed,
/// so that no two (name, following bytes) pairs give the same input.
pub(crate) fn push_name(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(&(name.len() as u64).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use cloakroom_core::record::Data;
    use flate2::write::DeflateEncoder;
    use serde_json::json;
    use std::io::Write;
    use time::OffsetDateTime;

    fn record(data: serde_json::Value) -> Record {
        let serde_json::Value::Object(map) = data else {
            panic!("an object")
        };
        Record::new(
            map.into(),
            OffsetDateTime::from_unix_timestamp(2_000_000_000).unwrap(),
        )
    }

    #[test]
    fn compresses_only_when_shorter() {
        // A short token of random base64 does not deflate: the plain bytes
        // are kept.
        let token = "Qx7-vR2kLm9_ZpW4tYb8NcE1uJ6hDf3sGa0oIeXq5Kw";
        let small = record(json!({ "t": token }));
        let (flag, body) = encode(&small, true).unwrap();
        assert_eq!(flag, FLAG_PLAIN);
        assert_eq!(body, small.to_bytes().unwrap());
        // Compressible but small enough for one cookie: kept plain.
        let medium = record(json!({"catalog": "endpoint ".repeat(200)}));
        assert_eq!(encode(&medium, true).unwrap().0, FLAG_PLAIN);
        let big = record(json!({"catalog": "endpoint ".repeat(400)}));
        let (flag, body) = encode(&big, true).unwrap();
        assert_eq!(flag, FLAG_DEFLATE);
        assert!(body.len() < big.to_bytes().unwrap().len() / 10);
        assert_eq!(encode(&big, false).unwrap().0, FLAG_PLAIN);
        let deadline = big.expires_at_millis();
        assert_eq!(decode(flag, &body, deadline), Some(big));
    }

    #[test]
    fn decode_rejects_mismatched_deadline_and_unknown_flags() {
        let r = record(json!({"a": [1, 2, 3]}));
        let (flag, body) = encode(&r, true).unwrap();
        let d = r.expires_at_millis();
        assert!(decode(flag, &body, d).is_some());
        assert!(decode(flag, &body, d + 1).is_none());
        for f in 2..=255 {
            assert!(decode(f, &body, d).is_none());
        }
    }

    #[test]
    fn zip_bombs_stop_at_the_bound() {
        // The record's bytes with a string of `fill` bytes under "x".
        let record_of = |fill: usize| {
            let mut data = Data::new();
            data.insert("x".into(), json!(" ".repeat(fill)));
            Record::new(data, OffsetDateTime::UNIX_EPOCH)
                .to_bytes()
                .unwrap()
        };
        let deflate = |bytes: &[u8], level| {
            let mut encoder = DeflateEncoder::new(Vec::new(), level);
            encoder.write_all(bytes).unwrap();
            encoder.finish().unwrap()
        };
        // 16 MiB of spaces in a record deflate to about 16 KiB.
        let bomb = deflate(&record_of(16 * 1024 * 1024), Compression::best());
        assert!(bomb.len() < 64 * 1024);
        assert!(decode(FLAG_DEFLATE, &bomb, 0).is_none());

        // Exactly at the bound still decodes; one byte over does not. A
        // string this long has the same header at every length here.
        let overhead = record_of(MAX_PLAINTEXT_LEN).len() - MAX_PLAINTEXT_LEN;
        let at = |extra: usize| {
            let bytes = record_of(MAX_PLAINTEXT_LEN - overhead + extra);
            assert_eq!(bytes.len(), MAX_PLAINTEXT_LEN + extra);
            deflate(&bytes, Compression::fast())
        };
        assert!(decode(FLAG_DEFLATE, &at(0), 0).is_some());
        assert!(decode(FLAG_DEFLATE, &at(1), 0).is_none());
    }

    #[test]
    fn sealing_refuses_json_over_the_bound() {
        let mut data = Data::new();
        data.insert("x".into(), "a".repeat(MAX_PLAINTEXT_LEN).into());
        let r = Record::new(data, OffsetDateTime::now_utc());
        assert!(matches!(
            encode(&r, true),
            Err(CookieError::TooLarge { .. })
        ));
    }

    #[test]
    fn text_is_bounded_and_canonical() {
        assert!(from_text(&"A".repeat(MAX_VALUE_LEN + 1)).is_none());
        assert_eq!(from_text("AAE").unwrap(), vec![0, 1]);
        // Same bits with a non-zero trailing bit: refused.
        assert!(from_text("AAF").is_none());
        assert!(from_text("AAE=").is_none());
        assert!(from_text("AA+E").is_none());
        assert!(to_text(&vec![0; MAX_VALUE_LEN]).is_err());
    }

    #[test]
    fn random_and_mutated_payloads_never_panic() {
        let services = ["nova", "glance", "keystone"].repeat(50);
        let r = record(json!({ "catalog": services }));
        let (_, deflated) = encode(&r, true).unwrap();
        let plain = r.to_bytes().unwrap();
        let mut rng = crate::test_rng::Rng::new(7);
        for i in 0..3000 {
            let mut body = if i % 2 == 0 {
                deflated.clone()
            } else {
                plain.clone()
            };
            match rng.below(4) {
                0 => {
                    let n = rng.below(300);
                    body = rng.bytes(n);
                }
                1 => {
                    let at = rng.below(body.len());
                    body[at] ^= 1 << rng.below(8);
                }
                2 => body.truncate(rng.below(body.len())),
                _ => {
                    let at = rng.below(body.len());
                    body.insert(at, rng.byte());
                }
            }
            let flag = if rng.below(2) == 0 {
                FLAG_PLAIN
            } else {
                FLAG_DEFLATE
            };
            let _ = decode(flag, &body, r.expires_at_millis());
        }
    }
}
