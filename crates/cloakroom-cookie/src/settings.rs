//! The names of the settings these engines read, as
//! [`SignedCookies::from_settings`](crate::SignedCookies::from_settings) and
//! [`EncryptedCookies::from_settings`](crate::EncryptedCookies::from_settings)
//! look them up. Each constant is the variable's name without `SESSION_`; a
//! variable outside `SESSION_*` that is read when one inside is unset is
//! named after that one, with `FALLBACK_` before it.

/// The current secret.
pub const SECRET_KEY: &str = "SESSION_SECRET_KEY";
/// The current secret when [`SECRET_KEY`] is unset: Django's own
/// `SECRET_KEY`.
pub const FALLBACK_SECRET_KEY: &str = "SECRET_KEY";
/// Previous secrets, comma-separated, still accepted while they are
/// rotated out (`with_fallback` in code).
pub const SECRET_KEY_FALLBACKS: &str = "SESSION_SECRET_KEY_FALLBACKS";
