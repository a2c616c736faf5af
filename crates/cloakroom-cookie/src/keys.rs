//! Secrets and the keys derived from them.
//!
//! A [`Secret`] is what an operator configures (`SESSION_SECRET_KEY`, or
//! `SECRET_KEY` when that is unset). It is never used as a key directly:
//! HKDF-SHA256 derives one key per purpose from it, with a distinct `info`
//! string for each, so the signing key and the encryption key are unrelated
//! even though they come from one secret, and a MAC made for one engine is
//! never a valid MAC for the other. A `Secret` keeps only the derived keys,
//! not the bytes it was made from, and prints as `REDACTED`.
//!
//! `SESSION_SECRET_KEY_FALLBACKS` lists previous secrets, comma-separated.
//! Values sealed under one of them still open (marked
//! [`stale_key`](cloakroom_core::Opened::stale_key), so the layer re-issues
//! them under the current secret); nothing new is sealed with them.
//!
//! # Which secrets the settings accept
//!
//! Every secret read from settings (`SESSION_SECRET_KEY`, `SECRET_KEY`, each
//! entry of `SESSION_SECRET_KEY_FALLBACKS`) must, after trimming:
//!
//! 1. be at least [`MIN_SECRET_LEN`] (32) bytes long;
//! 2. not be a published example, such as the demo value in this project's
//!    `docker-compose.yml` or the examples in these docs (compared ignoring
//!    ASCII case);
//! 3. hold at least [`MIN_DISTINCT_BYTES`] (8) different byte values
//!    (`aaaa...`, `abab...` and `0101...` do not);
//! 4. not be one shorter pattern repeated (`abcdefgh` written 4 times,
//!    `hunter2hunter2...`), that is: have no period of at most half its
//!    length.
//!
//! Random keys always pass in practice: `openssl rand -base64 48` (64
//! characters over 64 symbols) fails rules 3 and 4 with a probability below
//! 10^-60, and even the shortest hex key, `openssl rand -hex 16` (32
//! characters over 16 symbols), below 10^-7 per key. A rejected secret is a
//! startup error that names the variable, not the value, and says how to
//! make a good one. [`Secret::new`], for keys an application builds itself,
//! checks the length only.

use std::fmt;

use cloakroom_core::{ConfigError, Settings};
use ring::{aead, hkdf, hmac};

use crate::CookieError;
use crate::settings::{FALLBACK_SECRET_KEY, SECRET_KEY, SECRET_KEY_FALLBACKS};

/// The shortest secret accepted, in bytes: 256 bits if the bytes were
/// random. Generate one with `openssl rand -base64 48`.
pub const MIN_SECRET_LEN: usize = 32;

/// The fewest different byte values a secret from settings may hold (see
/// the [module docs](self)).
pub const MIN_DISTINCT_BYTES: usize = 8;

/// How to make a secret that passes, for error messages.
const HOW_TO_MAKE_ONE: &str = "generate one with `openssl rand -base64 48`";

/// Secrets that are public, so worth nothing as keys: the demo value of
/// `docker-compose.yml` and the examples in this crate's docs. Lowercase.
const PUBLIC_EXAMPLES: &[&str] = &[
    "demo only: replace this with 32+ random bytes",
    "at least thirty-two bytes of secret text",
    "a secret of at least thirty-two bytes",
    "a secret of at least thirty-two bytes, new",
    "a secret of at least thirty-two bytes, old",
];

/// Why a secret from settings is refused, beyond its length (see the
/// [module docs](self)). The text never quotes the secret.
fn weakness(secret: &[u8]) -> Option<String> {
    if PUBLIC_EXAMPLES
        .iter()
        .any(|example| secret.eq_ignore_ascii_case(example.as_bytes()))
    {
        return Some("it is a published example value, known to everyone".to_owned());
    }
    let mut seen = [false; 256];
    for &b in secret {
        seen[usize::from(b)] = true;
    }
    let distinct = seen.iter().filter(|&&s| s).count();
    if distinct < MIN_DISTINCT_BYTES {
        return Some(format!(
            "it has only {distinct} different byte values; at least {MIN_DISTINCT_BYTES} are \
             required"
        ));
    }
    if let Some(period) =
        (1..=secret.len() / 2).find(|&p| secret[p..] == secret[..secret.len() - p])
    {
        return Some(format!(
            "it is a pattern of {period} bytes repeated; a random secret has no repeats"
        ));
    }
    None
}

/// HKDF salt: fixed and public, it only separates cloakroom's derivations
/// from any other use an application makes of the same secret.
const SALT: &[u8] = b"cloakroom-cookie HKDF salt v1";
/// HKDF info for the key of [`SignedCookies`](crate::SignedCookies).
const SIGNING_INFO: &[u8] = b"cloakroom signed_cookies HMAC-SHA256 key v1";
/// HKDF info for the key of [`EncryptedCookies`](crate::EncryptedCookies).
const ENCRYPTION_INFO: &[u8] = b"cloakroom encrypted_cookies AES-256-GCM key v1";
/// HKDF info for the key of one sealed value, derived from the encryption
/// key and the value's own random salt.
const VALUE_KEY_INFO: &[u8] = b"cloakroom encrypted_cookies value key v2";

/// A session secret, held as the keys derived from it.
///
/// ```
/// use cloakroom_cookie::Secret;
///
/// let secret = Secret::new("at least thirty-two bytes of secret text")?;
/// assert_eq!(format!("{secret:?}"), "Secret(REDACTED)");
/// assert!(Secret::new("too short").is_err());
/// # Ok::<(), cloakroom_cookie::CookieError>(())
/// ```
#[derive(Clone)]
pub struct Secret {
    signing: hmac::Key,
    /// Not a key itself: each sealed value gets its own AES-256-GCM key,
    /// expanded from this with the value's salt ([`Secret::value_key`]).
    encryption: hkdf::Prk,
}

impl Secret {
    /// Derives the keys of a secret of at least [`MIN_SECRET_LEN`] bytes.
    ///
    /// # Errors
    /// [`CookieError::SecretTooShort`] for a shorter secret.
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, CookieError> {
        let secret = secret.as_ref();
        if secret.len() < MIN_SECRET_LEN {
            return Err(CookieError::SecretTooShort {
                len: secret.len(),
                min: MIN_SECRET_LEN,
            });
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret);
        let signing = prk
            .expand(&[SIGNING_INFO], hmac::HMAC_SHA256)
            .map_err(|_| CookieError::Crypto("HKDF expand of the signing key"))?;
        let encryption = prk
            .expand(&[ENCRYPTION_INFO], hkdf::HKDF_SHA256)
            .map_err(|_| CookieError::Crypto("HKDF expand of the encryption key"))?;
        Ok(Self {
            signing: hmac::Key::from(signing),
            encryption: hkdf::Prk::from(encryption),
        })
    }

    pub(crate) fn signing_key(&self) -> &hmac::Key {
        &self.signing
    }

    /// The AES-256-GCM key of the one value sealed with `salt`. A key per
    /// value, from a random salt, is what keeps AES-GCM safe however many
    /// values a secret seals: a random 96-bit nonce under one key would
    /// repeat (and so allow forgeries) after about 2^32 values, which a busy
    /// site re-sealing on every request reaches within days.
    pub(crate) fn value_key(&self, salt: &[u8]) -> Result<aead::LessSafeKey, CookieError> {
        let info = [VALUE_KEY_INFO, salt];
        let key = self
            .encryption
            .expand(&info, &aead::AES_256_GCM)
            .map_err(|_| CookieError::Crypto("HKDF expand of a value key"))?;
        Ok(aead::LessSafeKey::new(aead::UnboundKey::from(key)))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(REDACTED)")
    }
}

/// The current secret and the fallbacks, as read from settings.
pub(crate) struct Secrets {
    pub(crate) current: Secret,
    pub(crate) fallbacks: Vec<Secret>,
}

impl Secrets {
    /// Reads [`SECRET_KEY`] (else [`FALLBACK_SECRET_KEY`]) and
    /// [`SECRET_KEY_FALLBACKS`]. `engine` names the engine in the error, so
    /// that an operator sees why a secret is required at all.
    ///
    /// Leading and trailing whitespace is trimmed from every secret, so that
    /// `a, b` in the fallback list and a secret read from a file with a final
    /// newline mean what they look like.
    pub(crate) fn from_settings(
        settings: &dyn Settings,
        engine: &str,
    ) -> Result<Self, ConfigError> {
        let (variable, value) = match settings.get(SECRET_KEY) {
            Some(v) => (SECRET_KEY, v),
            None => match settings.get(FALLBACK_SECRET_KEY) {
                Some(v) => (FALLBACK_SECRET_KEY, v),
                None => {
                    return Err(ConfigError::secret(
                        SECRET_KEY,
                        0,
                        format!(
                            "a secret of at least {MIN_SECRET_LEN} random bytes: \
                             SESSION_ENGINE={engine} requires it \
                             ({FALLBACK_SECRET_KEY} is read when {SECRET_KEY} is unset); \
                             {HOW_TO_MAKE_ONE}"
                        ),
                    ));
                }
            },
        };
        let current = secret_setting(variable, value.trim(), engine, "")?;

        let mut fallbacks = Vec::new();
        if let Some(list) = settings.get(SECRET_KEY_FALLBACKS) {
            for (n, entry) in list.split(',').map(str::trim).enumerate() {
                if entry.is_empty() {
                    continue;
                }
                let position = format!(" (entry {} of the comma-separated list)", n + 1);
                fallbacks.push(secret_setting(
                    SECRET_KEY_FALLBACKS,
                    entry,
                    engine,
                    &position,
                )?);
            }
        }
        Ok(Self { current, fallbacks })
    }
}

fn secret_setting(
    variable: &str,
    value: &str,
    engine: &str,
    position: &str,
) -> Result<Secret, ConfigError> {
    let refuse = |why: String| {
        ConfigError::secret(
            variable,
            value.len(),
            format!(
                "a secret of at least {MIN_SECRET_LEN} random bytes for \
                 SESSION_ENGINE={engine}{position}, not this one: {why}; {HOW_TO_MAKE_ONE}"
            ),
        )
    };
    let secret = Secret::new(value).map_err(|e| refuse(e.to_string()))?;
    match weakness(value.as_bytes()) {
        Some(why) => Err(refuse(why)),
        None => Ok(secret),
    }
}

/// The keys a codec tries, current first. Only the current one seals.
#[derive(Clone)]
pub(crate) struct KeyRing {
    current: Secret,
    fallbacks: Vec<Secret>,
}

impl KeyRing {
    pub(crate) fn new(current: &Secret) -> Self {
        Self {
            current: current.clone(),
            fallbacks: Vec::new(),
        }
    }

    pub(crate) fn push_fallback(&mut self, old: &Secret) {
        self.fallbacks.push(old.clone());
    }

    pub(crate) fn from_secrets(secrets: Secrets) -> Self {
        Self {
            current: secrets.current,
            fallbacks: secrets.fallbacks,
        }
    }

    pub(crate) fn current(&self) -> &Secret {
        &self.current
    }

    /// The secrets in the order to try them, with "is a fallback" beside each.
    pub(crate) fn all(&self) -> impl Iterator<Item = (bool, &Secret)> {
        std::iter::once((false, &self.current)).chain(self.fallbacks.iter().map(|s| (true, s)))
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "REDACTED (1 current key, {} fallback keys)",
            self.fallbacks.len()
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use cloakroom_core::config::from_pairs;

    const A: &str = "0123456789abcdef0123456789abcdef-A";
    const B: &str = "0123456789abcdef0123456789abcdef-B";

    #[test]
    fn reads_the_session_secret_first_then_secret_key() {
        let s =
            Secrets::from_settings(&from_pairs([(SECRET_KEY, A), ("SECRET_KEY", B)]), "x").unwrap();
        assert!(s.fallbacks.is_empty());
        let only_django = Secrets::from_settings(&from_pairs([("SECRET_KEY", B)]), "x").unwrap();
        // Same secret, same key: compare by signing something.
        let sign = |s: &Secret| hmac::sign(s.signing_key(), b"m").as_ref().to_vec();
        assert_eq!(sign(&only_django.current), sign(&Secret::new(B).unwrap()));
        assert_ne!(sign(&s.current), sign(&only_django.current));
    }

    #[test]
    fn errors_name_the_variable_and_hide_the_value() {
        let err = Secrets::from_settings(&from_pairs([]), "signed_cookies")
            .err()
            .unwrap();
        assert_eq!(err.variable(), SECRET_KEY);
        assert!(err.to_string().contains("signed_cookies"), "{err}");

        let err = Secrets::from_settings(&from_pairs([("SECRET_KEY", "short-secret")]), "e")
            .err()
            .unwrap();
        assert_eq!(err.variable(), "SECRET_KEY");
        assert!(!err.to_string().contains("short-secret"), "{err}");
        assert!(err.to_string().contains("12 bytes"), "{err}");

        let list = format!("{A}, too-short-old-secret");
        let err = Secrets::from_settings(
            &from_pairs([(SECRET_KEY, B), (SECRET_KEY_FALLBACKS, &list)]),
            "e",
        )
        .err()
        .unwrap();
        assert_eq!(err.variable(), SECRET_KEY_FALLBACKS);
        assert!(err.to_string().contains("entry 2"), "{err}");
        assert!(!err.to_string().contains("too-short-old-secret"), "{err}");
    }

    #[test]
    fn weak_secrets_are_refused_by_name_without_showing_them() {
        let demo = "demo only: replace this with 32+ random bytes";
        let weak = [
            "a".repeat(32),
            "ab".repeat(20),
            "0123456".repeat(6),
            "abcdefgh".repeat(4),
            "hunter2!".repeat(5),
            "abcdefghij".repeat(3) + "abcde",
            demo.to_owned(),
            demo.to_ascii_uppercase(),
            format!("  {demo}\n"),
        ];
        for secret in &weak {
            for variable in [SECRET_KEY, FALLBACK_SECRET_KEY] {
                let err = Secrets::from_settings(&from_pairs([(variable, secret.as_str())]), "e")
                    .err()
                    .unwrap_or_else(|| panic!("{secret:?} accepted"));
                let text = format!("{err} {err:?}");
                assert_eq!(err.variable(), variable);
                assert!(!text.contains(secret.trim()), "{text}");
                assert!(text.contains("openssl rand -base64 48"), "{text}");
            }
            let list = format!("{A}, {secret}");
            let err = Secrets::from_settings(
                &from_pairs([(SECRET_KEY, B), (SECRET_KEY_FALLBACKS, &list)]),
                "e",
            )
            .err()
            .unwrap_or_else(|| panic!("{secret:?} accepted as a fallback"));
            assert_eq!(err.variable(), SECRET_KEY_FALLBACKS);
            assert!(err.to_string().contains("entry 2"), "{err}");
            assert!(!err.to_string().contains(secret.trim()), "{err}");
        }
        // Only the length was checked before: 32 × `a` was a valid key.
        assert!(Secret::new("a".repeat(32)).is_ok());
    }

    /// Real random keys of every usual form pass, 1,000 of each.
    #[test]
    fn random_secrets_always_pass() {
        use base64::Engine as _;
        use ring::rand::{SecureRandom, SystemRandom};

        const DJANGO: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789!@#$%^&*(-_=+)";
        let rng = SystemRandom::new();
        let random = |n: usize| {
            let mut bytes = vec![0u8; n];
            rng.fill(&mut bytes).unwrap();
            bytes
        };
        for n in 0..1000 {
            let keys: [String; 5] = [
                // openssl rand -base64 48, and the shortest base64 key.
                base64::engine::general_purpose::STANDARD.encode(random(48)),
                base64::engine::general_purpose::STANDARD.encode(random(24)),
                // Python's secrets.token_urlsafe(32).
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random(32)),
                // openssl rand -hex 16: 32 characters over 16 symbols.
                random(16).iter().map(|b| format!("{b:02x}")).collect(),
                // Django's get_random_secret_key().
                random(50)
                    .iter()
                    .map(|b| char::from(DJANGO[usize::from(*b) % DJANGO.len()]))
                    .collect(),
            ];
            for key in keys {
                assert_eq!(weakness(key.as_bytes()), None, "key {n}: {key}");
                assert!(
                    Secrets::from_settings(&from_pairs([(SECRET_KEY, key.as_str())]), "e").is_ok()
                );
            }
        }
    }

    #[test]
    fn fallbacks_are_trimmed_and_empty_entries_skipped() {
        let list = format!(" {A} ,, {B},");
        let s = Secrets::from_settings(
            &from_pairs([
                (SECRET_KEY, &*format!("{B}\n")),
                (SECRET_KEY_FALLBACKS, &list),
            ]),
            "e",
        )
        .unwrap();
        assert_eq!(s.fallbacks.len(), 2);
        let sign = |s: &Secret| hmac::sign(s.signing_key(), b"m").as_ref().to_vec();
        assert_eq!(sign(&s.current), sign(&Secret::new(B).unwrap()));
        assert_eq!(sign(&s.fallbacks[0]), sign(&Secret::new(A).unwrap()));
    }

    #[test]
    fn purposes_get_different_keys() {
        // The HMAC key and the AES key must not be the same bytes; ring does
        // not expose key bytes, so derive both by hand the same way and compare.
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(A.as_bytes());
        let mut signing = [0u8; 32];
        let mut encryption = [0u8; 32];
        prk.expand(&[SIGNING_INFO], hkdf::HKDF_SHA256)
            .unwrap()
            .fill(&mut signing)
            .unwrap();
        prk.expand(&[ENCRYPTION_INFO], hkdf::HKDF_SHA256)
            .unwrap()
            .fill(&mut encryption)
            .unwrap();
        assert_ne!(signing, encryption);
    }

    #[test]
    fn debug_never_shows_keys() {
        let ring = KeyRing::from_secrets(
            Secrets::from_settings(
                &from_pairs([(SECRET_KEY, A), (SECRET_KEY_FALLBACKS, B)]),
                "e",
            )
            .unwrap(),
        );
        assert_eq!(
            format!("{ring:?}"),
            "REDACTED (1 current key, 1 fallback keys)"
        );
        assert_eq!(format!("{:?}", ring.current()), "Secret(REDACTED)");
    }
}
