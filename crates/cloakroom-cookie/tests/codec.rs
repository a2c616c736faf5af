//! Codec-level tests of both cookie engines: tampering, binding to the
//! cookie name and the deadline, confidentiality, rotation, sizes, and a
//! decoder that never panics on garbage.

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloakroom_cookie::{EncryptedCookies, MAX_VALUE_LEN, Secret, SignedCookies};
use cloakroom_core::config::from_pairs;
use cloakroom_core::record::Data;
use cloakroom_core::{CookieCodec, ErrorKind, Expiry, Record};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

const NEW: &str = "the current secret: 0123456789abcdef0123456789";
const OLD: &str = "the previous secret: fedcba9876543210fedcba9876";
const NAME: &str = "sessionid";

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_900_000_000).expect("valid time")
}

/// Both engines under one secret, as trait objects.
fn codecs(secret: &str) -> Vec<Box<dyn CookieCodec>> {
    let secret = Secret::new(secret).expect("long enough");
    vec![
        Box::new(SignedCookies::new(&secret)),
        Box::new(EncryptedCookies::new(&secret)),
    ]
}

fn record(data: Value, ttl: Duration) -> Record {
    let Value::Object(map) = data else {
        panic!("session data must be an object")
    };
    let mut r = Record::new(map.into(), now() + ttl);
    r.expiry = Some(Expiry::OnInactivity(ttl));
    r
}

fn small_record() -> Record {
    record(
        json!({"user_id": "4f1c2a", "token": "gAAAAABmQx7-vR2kLm9_ZpW4tYb8NcE1uJ6hDf3s", "region": "RegionOne"}),
        Duration::hours(1),
    )
}

/// A record big enough that the sealed payload is deflated.
fn compressible_record() -> Record {
    record(catalog(1500), Duration::hours(1))
}

fn is_cookie_safe(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// splitmix64: reproducible test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            usize::try_from(self.next() % n as u64).expect("fits")
        }
    }

    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16)]))
            .collect()
    }
}

/// A Keystone token and service catalog like the one Horizon keeps in its
/// session, grown region by region until its JSON reaches `target` bytes.
fn catalog(target: usize) -> Value {
    const SERVICES: [(&str, &str, u16, &str); 12] = [
        ("keystone", "identity", 5000, "/v3"),
        ("nova", "compute", 8774, "/v2.1"),
        ("glance", "image", 9292, ""),
        ("neutron", "network", 9696, ""),
        ("cinderv3", "volumev3", 8776, "/v3/%(tenant_id)s"),
        ("swift", "object-store", 8080, "/v1/AUTH_%(tenant_id)s"),
        ("heat", "orchestration", 8004, "/v1/%(tenant_id)s"),
        ("placement", "placement", 8778, ""),
        ("octavia", "load-balancer", 9876, ""),
        ("designate", "dns", 9001, ""),
        ("barbican", "key-manager", 9311, ""),
        ("manilav2", "sharev2", 8786, "/v2"),
    ];
    let mut rng = Rng(u64::try_from(target).expect("fits"));
    let project = rng.hex(32);
    let mut services: Vec<Value> = SERVICES
        .iter()
        .map(|(name, kind, _, _)| json!({"id": rng.hex(32), "name": name, "type": kind, "endpoints": []}))
        .collect();
    let (user, token, roles) = (rng.hex(32), rng.hex(176), [rng.hex(32), rng.hex(32)]);
    let doc = |catalog: &[Value]| {
        json!({
            "_auth_user_id": user,
            "_auth_user_backend": "openstack_auth.backend.KeystoneBackend",
            "token": {
                "id": format!("gAAAAAB{token}"),
                "expires": "2030-03-17T12:00:00.000000Z",
                "project": {"id": project, "name": "demo", "domain": {"id": "default", "name": "Default"}},
                "user": {"id": user, "name": "ada", "domain": {"id": "default", "name": "Default"}},
                "roles": [{"id": roles[0], "name": "member"}, {"id": roles[1], "name": "reader"}],
                "catalog": catalog,
            },
            "services_region": "RegionOne-1",
        })
    };
    // One service's three endpoints at a time, so the size lands close to
    // the target.
    for region in 1..100 {
        let region_name = format!("RegionOne-{region}");
        for (i, (_, kind, port, path)) in SERVICES.iter().enumerate() {
            for interface in ["public", "internal", "admin"] {
                let host = match interface {
                    "public" => format!("{kind}.r{region}.cloud.example.org"),
                    _ => format!("10.{region}.{}.{}", rng.below(250), rng.below(250)),
                };
                let endpoint = json!({
                    "id": rng.hex(32),
                    "interface": interface,
                    "region": region_name,
                    "region_id": region_name,
                    "url": format!("https://{host}:{port}{}", path.replace("%(tenant_id)s", &project)),
                });
                if let Some(list) = services[i]["endpoints"].as_array_mut() {
                    list.push(endpoint);
                }
            }
            let current = doc(&services);
            if serde_json::to_vec(&current).expect("json").len() >= target {
                return current;
            }
        }
    }
    panic!("catalog never reached {target} bytes")
}

#[test]
fn round_trips_and_values_are_cookie_safe() {
    for codec in codecs(NEW) {
        for r in [small_record(), compressible_record()] {
            let value = codec.seal(NAME, &r, now()).expect("seal");
            assert!(is_cookie_safe(&value), "{}: {value}", codec.engine());
            let opened = codec.open(NAME, &value, now()).expect("opens");
            assert_eq!(opened.record, r, "{}", codec.engine());
            assert!(!opened.stale_key);
        }
    }
}

#[test]
fn every_bit_flip_of_the_sealed_bytes_is_rejected() {
    for codec in codecs(NEW) {
        for r in [small_record(), compressible_record()] {
            let value = codec.seal(NAME, &r, now()).expect("seal");
            let bytes = URL_SAFE_NO_PAD.decode(&value).expect("base64url");
            assert!(codec.open(NAME, &value, now()).is_some());
            for i in 0..bytes.len() {
                for bit in 0..8 {
                    let mut flipped = bytes.clone();
                    flipped[i] ^= 1 << bit;
                    let tampered = URL_SAFE_NO_PAD.encode(&flipped);
                    assert!(
                        codec.open(NAME, &tampered, now()).is_none(),
                        "{}: flipping bit {bit} of byte {i} was accepted",
                        codec.engine()
                    );
                }
            }
        }
    }
}

#[test]
fn every_changed_character_of_the_text_is_rejected() {
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for codec in codecs(NEW) {
        let value = codec.seal(NAME, &small_record(), now()).expect("seal");
        let text = value.as_bytes();
        for i in 0..text.len() {
            // Every single-bit flip that stays ASCII, and every other
            // character of the alphabet plus a few outside it.
            let flips = (0..7).map(|bit| text[i] ^ (1 << bit));
            let others = alphabet.bytes().chain(*b"+/=. ~%");
            for c in flips.chain(others).filter(|&c| c != text[i]) {
                let mut changed = text.to_vec();
                changed[i] = c;
                let changed = String::from_utf8(changed).expect("ascii");
                assert!(
                    codec.open(NAME, &changed, now()).is_none(),
                    "{}: {changed:?} (position {i}) was accepted",
                    codec.engine()
                );
            }
        }
        // Every truncation, and anything appended.
        for len in 0..value.len() {
            assert!(codec.open(NAME, &value[..len], now()).is_none());
        }
        for extra in ["A", "AA", "AAA", "AAAA", "=", " "] {
            assert!(
                codec
                    .open(NAME, &format!("{value}{extra}"), now())
                    .is_none()
            );
        }
    }
}

#[test]
fn a_value_is_bound_to_its_cookie_name() {
    for codec in codecs(NEW) {
        let value = codec.seal(NAME, &small_record(), now()).expect("seal");
        for other in [
            "sessionid2",
            "sessioni",
            "SESSIONID",
            "",
            "csrftoken",
            "sessionid ",
        ] {
            assert!(
                codec.open(other, &value, now()).is_none(),
                "{}: opened under {other:?}",
                codec.engine()
            );
        }
        assert!(codec.open(NAME, &value, now()).is_some());
    }
}

#[test]
fn a_value_is_dead_at_its_deadline() {
    for codec in codecs(NEW) {
        let r = small_record();
        let value = codec.seal(NAME, &r, now()).expect("seal");
        let just_before = r.expires_at - Duration::milliseconds(1);
        assert!(codec.open(NAME, &value, just_before).is_some());
        assert!(codec.open(NAME, &value, r.expires_at).is_none());
        assert!(
            codec
                .open(NAME, &value, r.expires_at + Duration::days(30))
                .is_none()
        );

        // Sealed already expired (a session whose set_expiry has passed).
        let stale = record(json!({"a": 1}), Duration::seconds(-5));
        let value = codec.seal(NAME, &stale, now()).expect("seal");
        assert!(codec.open(NAME, &value, now()).is_none());
    }
}

#[test]
fn changing_the_deadline_breaks_the_seal() {
    // Pushing the clear-text deadline into the future must not keep a value
    // alive: the MAC / associated data covers it.
    let secret = Secret::new(NEW).expect("long enough");
    let cases: [(Box<dyn CookieCodec>, std::ops::Range<usize>); 2] = [
        (Box::new(SignedCookies::new(&secret)), 2..10),
        (Box::new(EncryptedCookies::new(&secret)), 1..9),
    ];
    for (codec, deadline_bytes) in cases {
        let r = small_record();
        let value = codec.seal(NAME, &r, now()).expect("seal");
        let mut bytes = URL_SAFE_NO_PAD.decode(&value).expect("base64url");
        let later = (r.expires_at_millis() + 86_400_000).to_be_bytes();
        bytes[deadline_bytes].copy_from_slice(&later);
        let extended = URL_SAFE_NO_PAD.encode(&bytes);
        assert!(
            codec
                .open(NAME, &extended, r.expires_at + Duration::hours(1))
                .is_none()
        );
        assert!(codec.open(NAME, &extended, now()).is_none());
    }
}

#[test]
fn an_encrypted_value_hides_the_session() {
    let secret = Secret::new(NEW).expect("long enough");
    let marker = "correct-horse-battery-staple";
    for compress in [false, true] {
        let codec = EncryptedCookies::new(&secret).with_compression(compress);
        let readable = SignedCookies::new(&secret).with_compression(compress);
        let mut r = compressible_record();
        r.data.insert("password_hint".into(), marker.into());
        let bytes_of_record = r.to_bytes().expect("encode");
        // Its last 9 bytes are the deadline, which the envelope carries in
        // clear by design (authenticated, not secret).
        let plain = &bytes_of_record[..bytes_of_record.len() - 9];

        let value = codec.seal(NAME, &r, now()).expect("seal");
        let bytes = URL_SAFE_NO_PAD.decode(&value).expect("base64url");
        assert!(!value.contains(marker));
        let sealed_runs: HashSet<&[u8]> = bytes.windows(8).collect();
        let text_runs: HashSet<&[u8]> = value.as_bytes().windows(12).collect();
        // No 8-byte run of the record appears in the sealed bytes.
        for run in plain.windows(8) {
            assert!(!sealed_runs.contains(run), "leaks {run:?}");
        }
        // Nor does any run of the readable (signed) form's payload, or of
        // its base64 text at any of the three alignments.
        let signed = readable.seal(NAME, &r, now()).expect("seal");
        let signed_bytes = URL_SAFE_NO_PAD.decode(&signed).expect("base64url");
        // (Less the MAC, and the record's deadline at the end of the payload.)
        let payload = &signed_bytes[18..signed_bytes.len() - 32 - 9];
        for run in payload.windows(8) {
            assert!(!sealed_runs.contains(run), "leaks {run:?}");
        }
        for skip in 0..3 {
            let text = URL_SAFE_NO_PAD.encode(&plain[skip..]);
            for run in text.as_bytes().windows(12) {
                assert!(!text_runs.contains(run), "leaks {run:?}");
            }
        }
        assert!(codec.open(NAME, &value, now()).is_some());
    }
}

#[test]
fn every_encrypted_value_gets_a_fresh_salt() {
    let codec = EncryptedCookies::new(&Secret::new(NEW).expect("long enough"));
    let r = small_record();
    let mut salts = HashSet::new();
    for _ in 0..1000 {
        let bytes = URL_SAFE_NO_PAD
            .decode(codec.seal(NAME, &r, now()).expect("seal"))
            .expect("base64url");
        // After version, deadline and issue time.
        assert!(salts.insert(bytes[17..49].to_vec()), "a salt repeated");
    }
}

#[test]
fn the_issue_time_is_sealed_and_covered() {
    let issued = now() - Duration::days(3);
    for codec in codecs(NEW) {
        let value = codec.seal(NAME, &small_record(), issued).expect("seal");
        let opened = codec.open(NAME, &value, now()).expect("opens");
        assert_eq!(opened.issued_at, issued);
        // Moving the issue time later (to outlive the absolute age) breaks
        // the seal.
        let mut bytes = URL_SAFE_NO_PAD.decode(&value).expect("base64url");
        let at = if codec.engine() == "signed_cookies" {
            10
        } else {
            9
        };
        bytes[at + 7] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(bytes);
        assert!(
            codec.open(NAME, &forged, now()).is_none(),
            "{}",
            codec.engine()
        );
    }
}

#[test]
fn rotation_accepts_fallbacks_as_stale_and_drops_them_once_removed() {
    type FromSettings = fn(&std::collections::HashMap<String, String>) -> Box<dyn CookieCodec>;
    let engines: [FromSettings; 2] = [
        |s| Box::new(SignedCookies::from_settings(s).expect("valid settings")),
        |s| Box::new(EncryptedCookies::from_settings(s).expect("valid settings")),
    ];
    let fallbacks = format!("an unrelated older secret that is long enough , {OLD}");
    for build in engines {
        let before = build(&from_pairs([("SESSION_SECRET_KEY", OLD)]));
        let during = build(&from_pairs([
            ("SESSION_SECRET_KEY", NEW),
            ("SESSION_SECRET_KEY_FALLBACKS", fallbacks.as_str()),
        ]));
        let after = build(&from_pairs([("SESSION_SECRET_KEY", NEW)]));

        let r = small_record();
        let old_value = before.seal(NAME, &r, now()).expect("seal");
        let opened = during
            .open(NAME, &old_value, now())
            .expect("old key still opens");
        assert!(opened.stale_key, "{}", during.engine());
        assert_eq!(opened.record, r);

        // What the layer does next: re-issue under the current key.
        let reissued = during.seal(NAME, &opened.record, now()).expect("seal");
        let opened = during.open(NAME, &reissued, now()).expect("opens");
        assert!(!opened.stale_key);
        assert!(after.open(NAME, &reissued, now()).is_some());
        // New values are never sealed with a fallback key.
        assert!(before.open(NAME, &reissued, now()).is_none());

        // Once the old secret is dropped from the fallbacks, its values die.
        assert!(after.open(NAME, &old_value, now()).is_none());
    }
}

#[test]
fn settings_errors_name_the_variable_and_hide_the_secret() {
    let missing = SignedCookies::from_settings(&from_pairs([])).expect_err("no secret");
    assert_eq!(missing.variable(), "SESSION_SECRET_KEY");
    let short = EncryptedCookies::from_settings(&from_pairs([("SESSION_SECRET_KEY", "hunter2")]))
        .expect_err("too short");
    assert_eq!(short.variable(), "SESSION_SECRET_KEY");
    assert!(!short.to_string().contains("hunter2"), "{short}");
    assert!(short.to_string().contains("32 bytes"), "{short}");

    // Django's SECRET_KEY is used when SESSION_SECRET_KEY is unset.
    let django = SignedCookies::from_settings(&from_pairs([("SECRET_KEY", NEW)])).expect("valid");
    let value = django.seal(NAME, &small_record(), now()).expect("seal");
    assert!(codecs(NEW)[0].open(NAME, &value, now()).is_some());

    let shown = format!(
        "{:?} {:?}",
        django,
        EncryptedCookies::from_settings(&from_pairs([("SESSION_SECRET_KEY", NEW)])).expect("ok")
    );
    assert!(!shown.contains("secret"), "{shown}");
    assert!(shown.contains("REDACTED"), "{shown}");
}

#[test]
fn horizon_sized_sessions_round_trip() {
    for target in [3 * 1024, 10 * 1024, 25 * 1024] {
        let r = record(catalog(target), Duration::hours(1));
        let encoded_len = r.to_bytes().expect("encode").len();
        // The catalog is `target` bytes as JSON; MessagePack is a little smaller.
        assert!(
            (target * 3 / 4..target + 1024).contains(&encoded_len),
            "{encoded_len}"
        );
        for codec in codecs(NEW) {
            let value = codec.seal(NAME, &r, now()).expect("seal");
            assert!(is_cookie_safe(&value));
            println!(
                "{}: {encoded_len} bytes of record -> {} characters of cookie",
                codec.engine(),
                value.len()
            );
            let opened = codec.open(NAME, &value, now()).expect("opens");
            assert_eq!(opened.record, r);
        }
    }
}

#[test]
fn sealing_more_than_can_be_opened_is_a_too_large_error() {
    // Incompressible data whose base64url exceeds MAX_VALUE_LEN.
    let mut rng = Rng(99);
    let mut data = Data::new();
    for i in 0..2000 {
        data.insert(format!("k{i}"), rng.hex(32).into());
    }
    let r = Record::new(data, now() + Duration::hours(1));
    for codec in codecs(NEW) {
        let codec_value = codec.seal(NAME, &r, now());
        match codec_value {
            Err(e) => assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}"),
            Ok(v) => {
                // Compression got it under the bound: then it must open.
                assert!(v.len() <= MAX_VALUE_LEN);
                assert!(codec.open(NAME, &v, now()).is_some());
            }
        }
    }
    let mut data = Data::new();
    let mut blob = String::new();
    for _ in 0..8000 {
        blob.push_str(&URL_SAFE_NO_PAD.encode(rng.next().to_le_bytes()));
    }
    data.insert("blob".into(), blob.into());
    let r = Record::new(data, now() + Duration::hours(1));
    for codec in codecs(NEW) {
        match codec.seal(NAME, &r, now()) {
            Err(e) => assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}"),
            Ok(v) => panic!("{}: sealed {} characters", codec.engine(), v.len()),
        }
    }
}

#[test]
fn thousands_of_random_and_mutated_values_never_panic_or_open() {
    let mut rng = Rng(2024);
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for codec in codecs(NEW) {
        let seeds = [
            codec.seal(NAME, &small_record(), now()).expect("seal"),
            codec
                .seal(NAME, &compressible_record(), now())
                .expect("seal"),
        ];
        for i in 0..4000 {
            let candidate: Vec<u8> = match i % 4 {
                // Random text from the value alphabet, of random length.
                0 => (0..rng.below(400))
                    .map(|_| alphabet[rng.below(64)])
                    .collect(),
                // Random bytes, valid base64url of random envelopes.
                1 => {
                    let mut raw: Vec<u8> = (0..rng.below(300))
                        .map(|_| (rng.next() & 0xff) as u8)
                        .collect();
                    if let Some(first) = raw.first_mut() {
                        *first = 1 + u8::from(rng.below(2) == 1);
                    }
                    URL_SAFE_NO_PAD.encode(raw).into_bytes()
                }
                // A real value with a few random edits.
                _ => {
                    let mut v = seeds[rng.below(2)].clone().into_bytes();
                    for _ in 0..1 + rng.below(4) {
                        if v.is_empty() {
                            break;
                        }
                        let at = rng.below(v.len());
                        match rng.below(4) {
                            0 => v[at] = alphabet[rng.below(64)],
                            1 => {
                                v.remove(at);
                            }
                            2 => v.insert(at, alphabet[rng.below(64)]),
                            _ => v.truncate(at),
                        }
                    }
                    v
                }
            };
            // Arbitrary bytes may not be UTF-8; the header value the layer
            // hands over always is, so only UTF-8 reaches open().
            let text = String::from_utf8_lossy(&candidate);
            let seed_hit = seeds.iter().any(|s| *s == text);
            let opened = codec.open(NAME, &text, now());
            assert!(
                opened.is_none() || seed_hit,
                "{}: {text} opened",
                codec.engine()
            );
        }
        // Oversized input is refused before decoding.
        assert!(
            codec
                .open(NAME, &"A".repeat(MAX_VALUE_LEN + 4), now())
                .is_none()
        );
        assert!(codec.open(NAME, &"\u{fffd}".repeat(1000), now()).is_none());
    }
}
