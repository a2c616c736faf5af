//! Fuzzes everything that reads a cookie value: `open` on both engines
//! (base64url, envelope, MAC / AEAD, deadline), and the payload decoder that
//! runs after authentication (flag byte, bounded inflate, the record and
//! each of its values), which `open` alone would never reach without a
//! valid MAC.
//!
//! The first input byte picks the target; the rest is the input. Nothing
//! here may panic, and no input may take unbounded time or memory.

#![no_main]

use std::sync::OnceLock;

use cloakroom_cookie::{EncryptedCookies, Secret, SignedCookies};
use cloakroom_core::CookieCodec;
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

fn codecs() -> &'static (SignedCookies, EncryptedCookies) {
    static CODECS: OnceLock<(SignedCookies, EncryptedCookies)> = OnceLock::new();
    CODECS.get_or_init(|| {
        let secret =
            Secret::new("the fuzzing secret, thirty-two bytes or more").expect("long enough");
        let old =
            Secret::new("the previous fuzzing secret, also long enough").expect("long enough");
        (
            SignedCookies::new(&secret).with_fallback(&old),
            EncryptedCookies::new(&secret).with_fallback(&old),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    // A fixed "now" keeps runs reproducible; deadlines after it are live.
    let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    let (signed, encrypted) = codecs();
    match selector % 3 {
        0 | 1 => {
            // The layer hands over header text, so only UTF-8 reaches open().
            let Ok(value) = std::str::from_utf8(input) else {
                return;
            };
            let codec: &dyn CookieCodec = if selector % 3 == 0 { signed } else { encrypted };
            let _ = codec.open("sessionid", value, now);
        }
        _ => {
            let Some((&flag, body)) = input.split_first() else {
                return;
            };
            if let Some(record) = cloakroom_cookie::fuzzing::decode_payload(flag, body, 0) {
                assert_eq!(record.expires_at_millis(), 0);
                // Values are decoded on use: use them all, and write the
                // record back, which copies undecoded values as they are.
                let decoded = record.data.to_map();
                let bytes = record.to_bytes().expect("a record read can be written");
                let again = cloakroom_core::Record::from_bytes(&bytes).expect("and read again");
                assert_eq!(again.data.len(), record.data.len());
                if let Ok(map) = decoded {
                    assert_eq!(again.data.to_map().ok(), Some(map));
                }
            }
        }
    }
});
