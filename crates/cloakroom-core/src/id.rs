//! Session ids and the store keys derived from them.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

use crate::{Error, ErrorKind};

/// Number of random bytes in an id: 256 bits, twice the 128-bit floor, so that
/// guessing a live id stays out of reach even with millions of sessions.
const ID_BYTES: usize = 32;
/// Length of the base64url (unpadded) text of an id.
pub const ID_LEN: usize = 43;

/// A session id: 256 bits from the operating system's CSPRNG, written as
/// unpadded base64url (43 characters of `A-Z a-z 0-9 - _`).
///
/// The id is the bearer secret of a session, so its `Debug` output is
/// redacted and the only way to see the text is [`Id::expose`], used by the
/// layer when it writes the cookie. Stores never see it: they get the
/// [`StoreKey`] (SHA-256 of the id).
///
/// Its [`StoreKey`] is worked out when the id is made (every id the layer
/// makes or accepts is looked up or stored under it) and kept with it.
#[derive(Clone)]
pub struct Id {
    text: [u8; ID_LEN],
    key: StoreKey,
}

impl PartialEq for Id {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Id {}

/// Which bytes are base64url characters.
static URL_SAFE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        b += 1;
    }
    table
};

/// The characters a canonical id may end in: its last character carries
/// four bits of the id and two zero bits (43 characters hold 258 bits).
const LAST_CHARACTERS: &[u8] = b"AEIMQUYcgkosw048";

impl Id {
    /// Draws a fresh id from the OS random number generator.
    ///
    /// # Errors
    /// Fails only when the operating system refuses to hand out randomness.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; ID_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| Error::new(ErrorKind::Backend, "the OS random number generator failed"))?;
        let mut text = [0u8; ID_LEN];
        match URL_SAFE_NO_PAD.encode_slice(bytes, &mut text) {
            Ok(ID_LEN) => Ok(Self::from_text(text)),
            _ => Err(Error::new(
                ErrorKind::Backend,
                "an id did not encode to 43 characters",
            )),
        }
    }

    /// Parses a cookie value, accepting it only if it has the exact form of an
    /// id this crate generates. Anything else (wrong length, other alphabet,
    /// padding, non-canonical trailing bits) is `None`, so a malformed value
    /// never reaches a store.
    pub fn parse(value: &str) -> Option<Self> {
        let text: [u8; ID_LEN] = value.as_bytes().try_into().ok()?;
        // Only the last character may spell the same bits two ways; allowing
        // just the canonical ones gives each 32-byte id exactly one spelling,
        // as a strict base64url decoder would.
        let canonical = text.iter().all(|b| URL_SAFE[usize::from(*b)])
            && LAST_CHARACTERS.contains(&text[ID_LEN - 1]);
        canonical.then(|| Self::from_text(text))
    }

    fn from_text(text: [u8; ID_LEN]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, &text);
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        Self {
            text,
            key: StoreKey::from_digest(key),
        }
    }

    /// The id as it goes into the cookie. Do not log it.
    pub fn expose(&self) -> &str {
        ascii(&self.text)
    }

    /// The key under which stores keep this session: the SHA-256 of the id.
    pub fn store_key(&self) -> StoreKey {
        self.key
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Text known to be ASCII (ids and keys are built from ASCII alphabets only).
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Id(REDACTED)")
    }
}

/// What a store keys a session by: the lowercase hex SHA-256 of the session
/// id (64 characters, always a valid key for Redis, memcached and SQL).
///
/// A dump of the store therefore does not contain any cookie value that would
/// let someone log in.
///
/// It holds the 32 bytes of the digest; [`StoreKey::hex`] writes them out
/// for the stores that key by text, and in-process stores key by
/// [`StoreKey::digest`] without that step.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreKey {
    digest: [u8; 32],
}

/// The 64 lowercase hex characters of a [`StoreKey`], inline (no
/// allocation); it dereferences to `str`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHex([u8; 64]);

impl KeyHex {
    /// The 64 characters.
    pub fn as_str(&self) -> &str {
        ascii(&self.0)
    }
}

impl std::ops::Deref for KeyHex {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for KeyHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for KeyHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl StoreKey {
    fn from_digest(digest: [u8; 32]) -> Self {
        Self { digest }
    }

    /// The 64 lowercase hex characters, the form text-keyed stores use.
    pub fn hex(&self) -> KeyHex {
        let mut hex = [0u8; 64];
        for (pair, b) in hex.chunks_exact_mut(2).zip(self.digest) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0x0f)];
        }
        KeyHex(hex)
    }

    /// The 32 bytes of the digest, for in-process stores that key by them.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Builds a key from 64 lowercase hex characters, for stores that list
    /// their keys back (tests, maintenance tools).
    pub fn from_hex(hex: &str) -> Option<Self> {
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let hex: &[u8; 64] = hex.as_bytes().try_into().ok()?;
        let mut digest = [0u8; 32];
        for (b, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
            *b = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Self::from_digest(digest))
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not a secret; a prefix is enough to correlate log lines.
        write!(f, "StoreKey({}…)", &self.hex()[..8])
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_differ() {
        let a = Id::generate().unwrap();
        let b = Id::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), ID_LEN);
        assert_eq!(Id::parse(a.expose()), Some(a));
    }

    #[test]
    fn malformed_values_are_rejected() {
        let good = Id::generate().unwrap();
        let s = good.expose();
        assert!(Id::parse("").is_none());
        assert!(Id::parse(&s[1..]).is_none());
        assert!(Id::parse(&format!("{s}A")).is_none());
        assert!(Id::parse(&format!("{}+", &s[1..])).is_none());
        assert!(Id::parse(&format!("{}=", &s[1..])).is_none());
        assert!(Id::parse(&"é".repeat(21)).is_none());
        // 43 base64 characters carry 258 bits; the spare two must be zero, so
        // a generated id always ends in a character whose index is a multiple
        // of 4. Bumping it by one keeps the alphabet but breaks canonicity.
        let mut chars: Vec<char> = s.chars().collect();
        assert!("AEIMQUYcgkosw048".contains(chars[42]));
        chars[42] = if chars[42] == '8' {
            '9'
        } else {
            char::from(chars[42] as u8 + 1)
        };
        let bent: String = chars.into_iter().collect();
        assert!(Id::parse(&bent).is_none());
    }

    #[test]
    fn accepts_exactly_what_a_strict_decoder_accepts() {
        let id = Id::generate().unwrap();
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=.";
        for at in [0, 21, ID_LEN - 1] {
            for c in alphabet {
                let mut text = id.expose().as_bytes().to_vec();
                text[at] = *c;
                let text = String::from_utf8(text).unwrap();
                let mut out = [0u8; ID_BYTES + 3];
                let strict = matches!(URL_SAFE_NO_PAD.decode_slice(&text, &mut out), Ok(ID_BYTES));
                assert_eq!(Id::parse(&text).is_some(), strict, "{text}");
            }
        }
    }

    #[test]
    fn store_key_is_sha256_hex_and_not_the_id() {
        let id = Id::generate().unwrap();
        let key = id.store_key();
        assert_eq!(key.hex().len(), 64);
        assert!(!key.hex().contains(id.expose()));
        assert_eq!(key, id.store_key());
        assert_eq!(StoreKey::from_hex(&key.hex()), Some(key));
        let digest = ring::digest::digest(&ring::digest::SHA256, id.expose().as_bytes());
        assert_eq!(key.digest().as_slice(), digest.as_ref());
        assert!(StoreKey::from_hex(&key.hex().to_uppercase()).is_none());
        assert!(StoreKey::from_hex(&key.hex()[1..]).is_none());
        // The key is kept with the id, and with its copies.
        assert_eq!(Id::parse(id.expose()).unwrap().store_key(), key);
        assert_eq!(id.clone().store_key(), key);
        assert!(format!("{id:?}").contains("REDACTED"));
    }
}
