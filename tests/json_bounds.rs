//! `miniray::json`'s errors and bounds: kinds and byte positions (also
//! after the slow string path re-seats jiter), the 4300-digit limit before
//! any conversion, the nesting cap both ways, what a typed struct skips, a
//! property test `decode(encode(v)) == v` over arbitrary JSON-able
//! `Value`s, and the `json_value` fuzz corpus replayed.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use miniray::json::{from_slice, to_vec};
use miniray::Value;
use miniray::{DecodeErrorKind, Error};
use num_bigint::BigInt;
use serde::de::{Deserializer, Visitor};
use serde::Deserialize;

type Py = Value;

fn big(text: &str) -> Py {
    Value::from_bigint(text.parse::<BigInt>().expect("decimal"))
}

#[derive(Deserialize, Debug, PartialEq)]
#[allow(dead_code)] // the fields are what the decoder must fill
struct Job {
    id: u64,
    name: String,
}

#[derive(Deserialize, Debug, PartialEq)]
#[allow(dead_code)]
enum Shape {
    Unit,
    New(f64),
}

fn decode_err<T: serde::de::DeserializeOwned + fmt::Debug>(text: &[u8]) -> miniray::DecodeError {
    match from_slice::<T>(text) {
        Ok(v) => panic!("{:?} decoded as {v:?}", String::from_utf8_lossy(text)),
        Err(e) => e,
    }
}

#[test]
fn decode_errors_name_kind_and_byte() {
    let e = decode_err::<Vec<i64>>(b"[1, 2");
    assert!(matches!(e.kind, DecodeErrorKind::Syntax(_)), "{e}");
    let e = decode_err::<Vec<i64>>(b"[1] x");
    assert!(
        matches!(e.kind, DecodeErrorKind::TrailingBytes) && e.position == 4,
        "{e}"
    );
    let e = decode_err::<Vec<i64>>(b"[1, \"x\"]");
    assert!(
        matches!(e.kind, DecodeErrorKind::Mismatch(_)) && e.position == 4,
        "{e}"
    );
    let e = decode_err::<Vec<String>>(br#"["a",  "\ud800"]"#);
    assert!(
        matches!(e.kind, DecodeErrorKind::LoneSurrogate) && e.position == 7,
        "{e}"
    );
    let e = decode_err::<HashMap<String, i64>>(br#"{"a": 1, "\udc00": 2}"#);
    assert!(
        matches!(e.kind, DecodeErrorKind::LoneSurrogate) && e.position == 9,
        "{e}"
    );
    let e = decode_err::<Job>(br#"{"id": 1}"#);
    assert!(
        matches!(&e.kind, DecodeErrorKind::Mismatch(m) if m.contains("missing field"))
            && e.position == 0,
        "{e}"
    );
    let e = decode_err::<Vec<i128>>(
        b"[0, 1606938044258990275541962092341162602522202993782792835301376]",
    );
    assert!(
        matches!(&e.kind, DecodeErrorKind::Mismatch(m) if m.contains("does not fit 128 bits"))
            && e.position == 4,
        "{e}"
    );
    let e = decode_err::<Vec<u8>>(b"[-1]");
    assert!(
        matches!(e.kind, DecodeErrorKind::Mismatch(_)) && e.position == 1,
        "{e}"
    );
    struct Bytes;
    impl<'de> Deserialize<'de> for Bytes {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Bytes;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("bytes")
                }
            }
            d.deserialize_byte_buf(V)
        }
    }
    impl fmt::Debug for Bytes {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Bytes")
        }
    }
    let e = decode_err::<Bytes>(b" \"abc\"");
    assert!(
        matches!(e.kind, DecodeErrorKind::Unsupported("bytes")) && e.position == 1,
        "{e}"
    );
    let e = decode_err::<Vec<i64>>(b"[1, +1]");
    assert!(
        matches!(e.kind, DecodeErrorKind::Syntax(_)) && e.position == 4,
        "{e}"
    );
    let e = decode_err::<Py>(b"\"a\xffb\"");
    assert!(
        matches!(e.kind, DecodeErrorKind::InvalidUtf8) && e.position == 2,
        "{e}"
    );
    for bad in [
        &b"-NaN"[..],
        b"+Infinity",
        b"nan",
        b"[1,]",
        b"{\"a\" 1}",
        b"\"\\x\"",
        b"\"a\x01\"",
        b"",
        b"01",
    ] {
        let e = decode_err::<Py>(bad);
        assert!(
            matches!(
                e.kind,
                DecodeErrorKind::Syntax(_) | DecodeErrorKind::TrailingBytes
            ),
            "{bad:?}: {e}"
        );
    }
}

#[test]
fn ints_past_4300_digits_are_refused_before_conversion() {
    // Python: json.loads of 10**4300 - 1 works, of 10**4300 raises.
    let ok = "9".repeat(4300);
    let got: Py = from_slice(ok.as_bytes()).expect("4300 digits");
    assert!(matches!(&got, Py::BigInt(b) if b.sign() == num_bigint::Sign::Plus));
    assert_eq!(
        String::from_utf8(to_vec(&got).expect("encode")).expect("ascii"),
        ok
    );
    let neg = format!("[-{ok}]");
    assert!(from_slice::<Py>(neg.as_bytes()).is_ok());
    let e = decode_err::<Py>(format!("[1, -1{ok}]").as_bytes());
    assert!(
        matches!(e.kind, DecodeErrorKind::IntTooLarge) && e.position == 4,
        "{e}"
    );
    // Sixty million digits: refused in bounded time (a quadratic
    // conversion would take hours); the bound is generous for 2 noisy cores.
    let huge = "7".repeat(60_000_000);
    let t = Instant::now();
    let e = decode_err::<Py>(huge.as_bytes());
    assert!(matches!(e.kind, DecodeErrorKind::IntTooLarge), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    let e = decode_err::<f64>(huge.as_bytes());
    assert!(matches!(e.kind, DecodeErrorKind::IntTooLarge), "{e}");
    // Python refuses to write one too.
    let e = to_vec(&big(&"1".repeat(4301))).expect_err("too many digits");
    assert!(
        matches!(e, Error::Encode { ref reason, .. } if reason.contains("4300")),
        "{e:?}"
    );
}

#[test]
fn nesting_is_capped_at_127_both_ways() {
    let ok = format!("{}{}", "[".repeat(127), "]".repeat(127));
    let v: Py = from_slice(ok.as_bytes()).expect("127 levels");
    assert_eq!(to_vec(&v).expect("encode 127"), ok.as_bytes());
    let deep = format!("{}{}", "[".repeat(128), "]".repeat(128));
    let e = decode_err::<Py>(deep.as_bytes());
    assert!(
        matches!(e.kind, DecodeErrorKind::TooDeep(127)) && e.position == 127,
        "{e}"
    );
    let e = decode_err::<serde::de::IgnoredAny>(
        format!("{}1", "{\"a\": ".repeat(1_000_000)).as_bytes(),
    );
    assert!(matches!(e.kind, DecodeErrorKind::TooDeep(127)), "{e}");
    let mut v = Py::List(vec![]);
    for _ in 0..127 {
        v = Py::List(vec![v]);
    }
    let e = to_vec(&v).expect_err("128 levels");
    assert!(matches!(e, Error::Encode { .. }), "{e:?}");
}

#[test]
fn fuzz_corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/json_value");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let data = std::fs::read(entry.expect("entry").path()).expect("corpus file");
        json_checks::json_value(&data);
        n += 1;
    }
    assert!(n > 0);
}

#[path = "../fuzz/json_checks.rs"]
mod json_checks;

mod roundtrip {
    use super::*;
    use proptest::prelude::*;

    /// Code points with lone surrogates, never a high one right before a
    /// low one (json.loads would join that pair into one astral char).
    fn surrogate_text() -> impl Strategy<Value = Value> {
        prop::collection::vec(
            prop_oneof![
                3 => any::<char>().prop_map(u32::from),
                1 => 0xd800u32..0xe000,
            ],
            1..12,
        )
        .prop_map(|mut cps| {
            cps.push(0xdc00);
            let mut out: Vec<u32> = Vec::new();
            for cp in cps {
                if (0xdc00..0xe000).contains(&cp)
                    && out.last().is_some_and(|p| (0xd800..0xdc00).contains(p))
                {
                    out.push(u32::from('x'));
                }
                out.push(cp);
            }
            Value::from_code_points(out).expect("code points")
        })
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::None),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<i128>().prop_map(|i| Value::from_bigint(i.into())),
            (any::<bool>(), prop::collection::vec(any::<u8>(), 0..200)).prop_map(|(neg, m)| {
                let sign = if neg {
                    num_bigint::Sign::Minus
                } else {
                    num_bigint::Sign::Plus
                };
                Value::from_bigint(BigInt::from_bytes_le(sign, &m))
            }),
            any::<u64>().prop_map(|b| Value::Float(f64::from_bits(b))),
            prop_oneof![
                Just(0.0),
                Just(-0.0),
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(1e16)
            ]
            .prop_map(Value::Float),
            any::<String>().prop_map(Value::Str),
            surrogate_text(),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(4, 64, 8, |inner| {
            let key = prop_oneof![any::<String>().prop_map(Value::Str), surrogate_text()];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
                prop::collection::vec((key, inner), 0..8)
                    .prop_map(|entries| Value::Dict(entries.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// decode(encode(v)) == v for every Value JSON can hold, and the
        /// text is one line of ASCII.
        #[test]
        fn decode_encode_is_identity(v in value()) {
            let text = to_vec(&v).expect("encode");
            prop_assert!(text.iter().all(|&b| (b' '..=b'~').contains(&b)));
            let back: Value = from_slice(&text).expect("decode");
            prop_assert_eq!(&back, &v);
            // Order too: the same text again.
            prop_assert_eq!(to_vec(&back).expect("re-encode"), text);
        }
    }
}

#[test]
fn unknown_fields_holding_what_only_value_holds_are_skipped() {
    // Python reads this dict; a struct that ignores the other keys must too.
    #[derive(Deserialize, Debug, PartialEq)]
    struct Small {
        id: u8,
    }
    let text = br#"{"\ud800": 1, "big": 1606938044258990275541962092341162602522202993782792835301376, "s": ["\udc00", {"\udbff": 2}], "id": 7}"#;
    assert_eq!(from_slice::<Small>(text).expect("skips"), Small { id: 7 });
    // Asked for, they are refused with their cause.
    let e = decode_err::<HashMap<String, u8>>(br#"{"\ud800": 1}"#);
    assert!(
        matches!(e.kind, DecodeErrorKind::LoneSurrogate) && e.position == 1,
        "{e}"
    );
}

#[test]
fn positions_stay_absolute_after_a_string_jiter_refused() {
    // The slow string path re-seats jiter on the rest of the input.
    let v: Value = from_slice(br#"{"\ud800": ["\udc00", 1], "b": 2}"#).expect("decodes");
    assert_eq!(
        to_vec(&v).expect("encode"),
        br#"{"\ud800": ["\udc00", 1], "b": 2}"#
    );
    let e = decode_err::<Value>(br#"["\ud800", 1, x]"#);
    assert!(
        matches!(e.kind, DecodeErrorKind::Syntax(_)) && e.position == 14,
        "{e}"
    );
    let e = decode_err::<Value>(br#"["\ud800"]  ]"#);
    assert!(
        matches!(e.kind, DecodeErrorKind::TrailingBytes) && e.position == 12,
        "{e}"
    );
    let e = decode_err::<Vec<(String, u8)>>(br#"[["\ud800", 1]]"#);
    assert!(
        matches!(e.kind, DecodeErrorKind::LoneSurrogate) && e.position == 2,
        "{e}"
    );
}

#[test]
fn a_container_that_does_not_fit_is_blamed_at_its_start() {
    let e = decode_err::<Vec<(u8, u8)>>(b"[[1, 2], [3]]");
    assert!(
        matches!(e.kind, DecodeErrorKind::Mismatch(_)) && e.position == 9,
        "{e}"
    );
    let e = decode_err::<Vec<(u8, u8)>>(b"[[1, 2], [3, 4, 5]]");
    assert!(matches!(e.kind, DecodeErrorKind::Mismatch(_)), "{e}");
    let e = decode_err::<Vec<Shape>>(br#"[{"Nope": 1}]"#);
    assert!(
        matches!(e.kind, DecodeErrorKind::Mismatch(_)) && e.position == 1,
        "{e}"
    );
    let e = decode_err::<Vec<Shape>>(br#"["Unit", 3]"#);
    assert!(
        matches!(e.kind, DecodeErrorKind::Mismatch(_)) && e.position == 9,
        "{e}"
    );
}
