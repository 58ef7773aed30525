//! Unit tests of the marshal format: a foreign `T` (serde_json's value),
//! the bounds, the long-int regrouping and typed shapes (python3 vectors are in
//! tests/marshal_python.rs).

use std::collections::BTreeMap;

use num_bigint::{BigInt, Sign};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::long::{write_long_bytes, Digits};
use super::*;
use crate::error::DecodeErrorKind;
use crate::Value;

fn roundtrip(v: &serde_json::Value) -> serde_json::Value {
    from_slice(&to_vec(v).expect("encode")).expect("decode")
}

#[test]
fn serde_json_values_roundtrip_as_a_foreign_type() {
    for v in [
        json!(null),
        json!(true),
        json!(0),
        json!(-1),
        json!(2147483648u64),
        json!(-9223372036854775808i64),
        json!(u64::MAX),
        json!(0.1),
        json!(-0.0),
        json!("é€😀"),
        json!({"b": [1, 2.5, null], "a": {}}),
        json!([[], {}, ""]),
    ] {
        assert_eq!(roundtrip(&v), v, "{v}");
    }
}

#[test]
fn floats_print_as_python_repr() {
    for (f, text) in [
        (0.1, "0.1"),
        (-0.0, "-0.0"),
        (1e16, "1e+16"),
        (1e15, "1000000000000000.0"),
        (0.00001, "1e-05"),
        (5e-324, "5e-324"),
        (123456789012345680.0, "1.2345678901234568e+17"),
    ] {
        assert_eq!(python_float_repr(f), text);
    }
}

#[test]
fn seed_example_line() {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode("e9oBa1sDAAAA6QEAAADnAAAAAAAABEBOMA==")
        .expect("b64");
    assert_eq!(
        from_slice::<serde_json::Value>(&bytes).expect("decode"),
        json!({"k": [1, 2.5, null]})
    );
    let v: Value = from_slice(&bytes).expect("value");
    let want = Value::Dict(
        [(
            Value::Str("k".into()),
            Value::List(vec![Value::Int(1), Value::Float(2.5), Value::None]),
        )]
        .into_iter()
        .collect(),
    );
    assert_eq!(v, want);
}

#[test]
fn hostile_lengths_do_not_allocate() {
    // A list claiming 2^31 items in 5 bytes.
    let e = from_slice::<Value>(b"[\x00\x00\x00\x80").expect_err("refused");
    assert!(matches!(e.kind, DecodeErrorKind::UnexpectedEnd));
    let e = from_slice::<Vec<u8>>(b"[\x00\x00\x00\x80").expect_err("refused");
    assert!(matches!(e.kind, DecodeErrorKind::UnexpectedEnd));
    let e = from_slice::<Value>(b"l\xff\xff\xff\x7f").expect_err("refused");
    assert!(matches!(e.kind, DecodeErrorKind::IntTooLarge));
}

#[test]
fn reference_amplification_hits_the_budget() {
    // Slot 0: a flagged list of 200 Nones; then lists of references to it,
    // each level referencing the previous one 200 times.
    let mut data = vec![b'[' | FLAG_REF];
    data.extend_from_slice(&3u32.to_le_bytes());
    data.push(0x80 | b'[');
    data.extend_from_slice(&200u32.to_le_bytes());
    data.extend(std::iter::repeat_n(b'N', 200));
    for level in 0..2u32 {
        data.push(0x80 | b'[');
        data.extend_from_slice(&200u32.to_le_bytes());
        for _ in 0..200 {
            data.push(b'r');
            data.extend_from_slice(&(level + 1).to_le_bytes());
        }
    }
    let e = from_slice::<Value>(&data).expect_err("over budget");
    assert!(matches!(e.kind, DecodeErrorKind::TooLarge { .. }), "{e}");
}

#[test]
fn cycle_is_refused() {
    // A flagged list whose only item refers to itself.
    let mut data = vec![b'[' | FLAG_REF, 1, 0, 0, 0, b'r', 0, 0, 0, 0];
    let e = from_slice::<Value>(&data).expect_err("cycle");
    assert!(matches!(e.kind, DecodeErrorKind::UnfinishedReference(0)));
    assert_eq!(e.position, 5);
    data.push(b'N');
    assert!(from_slice::<Value>(&data).is_err());
}

#[test]
fn depth_limit_matches_serde_json() {
    for d in [MAX_DEPTH, MAX_DEPTH + 1] {
        let text = format!("{}{}", "[".repeat(d), "]".repeat(d));
        let json_ok = serde_json::from_str::<serde_json::Value>(&text).is_ok();
        let mut data = Vec::new();
        for _ in 0..d - 1 {
            data.extend_from_slice(&[b'[', 1, 0, 0, 0]);
        }
        data.extend_from_slice(&[b'[', 0, 0, 0, 0]);
        assert_eq!(from_slice::<Value>(&data).is_ok(), json_ok, "depth {d}");
        assert_eq!(json_ok, d == MAX_DEPTH);
        if d > MAX_DEPTH {
            let e = from_slice::<Value>(&data).expect_err("too deep");
            assert!(matches!(e.kind, DecodeErrorKind::TooDeep(_)));
        }
    }
}

/// Base-2^15 digits to an `l` the slow obvious way, through num-bigint.
fn long_reference(negative: bool, digits: &[u16]) -> BigInt {
    let mut n = BigInt::from(0);
    for &d in digits.iter().rev() {
        n = (n << 15usize) + d;
    }
    if negative {
        -n
    } else {
        n
    }
}

#[test]
fn long_digits_regroup_both_ways() {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x & 0x7fff) as u16
    };
    for n in (1..=40).chain([99, 100, 501, 952]) {
        for fill in [None, Some(0x7fff), Some(1)] {
            let mut digits: Vec<u16> = (0..n).map(|_| fill.unwrap_or_else(&mut next)).collect();
            if digits[n - 1] == 0 {
                digits[n - 1] = 1;
            }
            let negative = n.is_multiple_of(2);
            let want = long_reference(negative, &digits);
            let bytes: Vec<u8> = digits.iter().flat_map(|d| d.to_le_bytes()).collect();
            let d = Digits::check(&bytes).expect("valid digits");
            assert_eq!(
                BigInt::from_bytes_le(
                    if negative { Sign::Minus } else { Sign::Plus },
                    &d.magnitude_le()
                ),
                want,
                "{n} digits"
            );
            // And back: the same `l` bytes.
            let mut out = Vec::new();
            write_long_bytes(negative, &want.to_bytes_le().1, &mut out);
            let count = if negative { -(n as i32) } else { n as i32 };
            let mut expect = vec![b'l'];
            expect.extend_from_slice(&count.to_le_bytes());
            expect.extend_from_slice(&bytes);
            assert_eq!(out, expect, "{n} digits");
        }
    }
}

#[test]
fn deep_nesting_is_refused() {
    let mut data = Vec::new();
    for _ in 0..MAX_DEPTH + 1 {
        data.extend_from_slice(&[b'[', 1, 0, 0, 0]);
    }
    data.push(b'N');
    let e = from_slice::<Value>(&data).expect_err("too deep");
    assert!(matches!(e.kind, DecodeErrorKind::TooDeep(_)));
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Shape {
    Unit,
    New(i32),
    Pair(i32, String),
    Named { x: f64, tags: Vec<String> },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u32,
    name: String,
    score: Option<f64>,
    shapes: Vec<Shape>,
    pair: (i32, String),
    map: BTreeMap<i64, String>,
}

#[test]
fn typed_values_roundtrip() {
    let r = Record {
        id: 7,
        name: "é".into(),
        score: None,
        shapes: vec![
            Shape::Unit,
            Shape::New(-3),
            Shape::Pair(1, "a".into()),
            Shape::Named {
                x: 0.5,
                tags: vec!["t".into()],
            },
        ],
        pair: (5, "five".into()),
        map: [(1, "one".into()), (-2, "minus two".into())].into(),
    };
    let bytes = to_vec(&r).expect("encode");
    assert_eq!(from_slice::<Record>(&bytes).expect("decode"), r);
    // The same bytes as a Value: a dict with str keys, the pair a tuple.
    let v: Value = from_slice(&bytes).expect("value");
    let Value::Dict(d) = &v else { panic!("{v:?}") };
    assert!(matches!(d.get_str("pair"), Some(Value::Tuple(_))));
    assert_eq!(d.get_str("score"), Some(&Value::None));
}

#[test]
fn a_value_that_does_not_fit_names_it_where_it_starts() {
    // [1, 300] into Vec<u8>: the 300 starts at byte 10.
    let bytes = to_vec(&vec![1, 300]).expect("encode");
    let e = from_slice::<Vec<u8>>(&bytes).expect_err("300 is no u8");
    assert_eq!(e.position, 10);
    let DecodeErrorKind::Mismatch(m) = &e.kind else {
        panic!("{e}")
    };
    assert!(m.contains("300") && m.contains("u8"), "{m}");
    // A tuple of three into a pair.
    let bytes = to_vec(&(1, 2, 3)).expect("encode");
    let e = from_slice::<(i32, i32)>(&bytes).expect_err("too long");
    assert!(matches!(e.kind, DecodeErrorKind::Mismatch(_)), "{e}");
    // An int past 128 bits into an i128.
    let mut big = Vec::new();
    write_long_bytes(false, &[1; 20], &mut big);
    let e = from_slice::<i128>(&big).expect_err("too big");
    assert!(matches!(e.kind, DecodeErrorKind::IntTooLarge), "{e}");
    assert!(matches!(from_slice::<Value>(&big), Ok(Value::BigInt(_))));
}

#[test]
fn ints_use_the_smallest_visit() {
    for v in [0i128, -1, i128::from(i32::MIN), i128::from(i32::MAX) + 1] {
        let bytes = to_vec(&v).expect("encode");
        assert_eq!(from_slice::<i128>(&bytes).expect("decode"), v);
    }
    let bytes = to_vec(&u128::MAX).expect("encode");
    assert_eq!(from_slice::<u128>(&bytes).expect("decode"), u128::MAX);
    let bytes = to_vec(&i128::MIN).expect("encode");
    assert_eq!(from_slice::<i128>(&bytes).expect("decode"), i128::MIN);
    // An int fills an f64 field.
    assert_eq!(
        from_slice::<f64>(&to_vec(&3).expect("encode")).ok(),
        Some(3.0)
    );
    assert_eq!(to_vec(&5i64).expect("encode"), b"i\x05\x00\x00\x00");
}

mod property {
    use num_bigint::{BigInt, Sign};
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::super::{from_slice, to_vec};
    use crate::Value;

    /// Scalars of every kind: ints of any size, every float bit pattern,
    /// str with and without lone surrogates, bytes.
    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::None),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (any::<bool>(), vec(any::<u8>(), 8..64)).prop_map(|(neg, mag)| {
                let sign = if neg { Sign::Minus } else { Sign::Plus };
                Value::from_bigint(BigInt::from_bytes_le(sign, &mag))
            }),
            any::<u64>().prop_map(|b| Value::Float(f64::from_bits(b))),
            (any::<u64>(), any::<u64>()).prop_map(|(re, im)| Value::Complex {
                re: f64::from_bits(re),
                im: f64::from_bits(im),
            }),
            any::<String>().prop_map(Value::Str),
            vec(0u32..0x11_0000, 0..8).prop_filter_map("code points", Value::from_code_points),
            vec(any::<u8>(), 0..20).prop_map(Value::Bytes),
        ]
    }

    /// What Python can hash: scalars, and tuples and frozensets of them.
    fn hashable() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(2, 16, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Value::Tuple),
                vec(inner, 0..4).prop_map(|v| Value::FrozenSet(v.into_iter().collect())),
            ]
        })
    }

    fn value() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..8).prop_map(Value::List),
                vec(inner.clone(), 0..8).prop_map(Value::Tuple),
                vec((hashable(), inner), 0..8).prop_map(|kv| Value::Dict(kv.into_iter().collect())),
                vec(hashable(), 0..8).prop_map(|v| Value::Set(v.into_iter().collect())),
                vec(hashable(), 0..8).prop_map(|v| Value::FrozenSet(v.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn decode_of_encode_is_the_value(v in value()) {
            let bytes = to_vec(&v).expect("encode");
            let back: Value = from_slice(&bytes).expect("decode");
            prop_assert_eq!(back, v);
        }
    }
}

#[test]
fn references_resolve_under_every_hint() {
    // ["Unit", "Unit", {"New": -3}, {"New": -3}] as CPython writes it: the
    // interned str flagged (slot 0), the dicts unflagged, -3 a cached int
    // (flagged, slot 1) and referenced; then Some("Unit") by reference.
    let mut data = vec![b'[', 4, 0, 0, 0, b'Z' | FLAG_REF, 4];
    data.extend_from_slice(b"Unit");
    data.extend_from_slice(&[b'r', 0, 0, 0, 0]);
    data.extend_from_slice(&[b'{', b'z', 3]);
    data.extend_from_slice(b"New");
    data.extend_from_slice(&[b'i' | FLAG_REF, 0xfd, 0xff, 0xff, 0xff, b'0']);
    data.extend_from_slice(&[b'{', b'z', 3]);
    data.extend_from_slice(b"New");
    data.extend_from_slice(&[b'r', 1, 0, 0, 0, b'0']);
    let shapes: Vec<Shape> = from_slice(&data).expect("typed");
    assert_eq!(
        shapes,
        [Shape::Unit, Shape::Unit, Shape::New(-3), Shape::New(-3)]
    );
    let mut opt = vec![b'(', 2, 0, 0, 0, b'Z' | FLAG_REF, 1, b'x'];
    opt.extend_from_slice(&[b'r', 0, 0, 0, 0]);
    let pair: (Option<String>, Option<char>) = from_slice(&opt).expect("options");
    assert_eq!(pair, (Some("x".into()), Some('x')));
    // A reference to a slot that was never made.
    let e = from_slice::<Vec<Shape>>(&[b'[', 1, 0, 0, 0, b'r', 7, 0, 0, 0]).expect_err("bad");
    assert!(matches!(e.kind, DecodeErrorKind::BadReference(7)), "{e}");
    assert_eq!(e.position, 5);
}

#[test]
fn what_python_could_not_load_is_refused_at_encode() {
    let key_list = Value::Dict([(Value::List(vec![]), Value::None)].into_iter().collect());
    let e = to_vec(&key_list).expect_err("unhashable key");
    assert!(
        e.to_string()
            .contains("unhashable type: 'list' in a dict key"),
        "{e}"
    );
    let member_dict = Value::Set([Value::Dict(crate::Dict::new())].into_iter().collect());
    let e = to_vec(&member_dict).expect_err("unhashable member");
    assert!(
        e.to_string()
            .contains("unhashable type: 'dict' in a set member"),
        "{e}"
    );
    // An enum's dict holds exactly one entry.
    let two = b"{z\x03New\xe9\x01\x00\x00\x00z\x03New\xe9\x01\x00\x00\x000";
    let e = from_slice::<Shape>(two).expect_err("two entries");
    assert!(matches!(e.kind, DecodeErrorKind::Mismatch(_)), "{e}");
    assert_eq!(e.position, 0);
    assert!(from_slice::<Shape>(b"{0").is_err());
}

#[test]
fn unhashable_keys_and_members_are_refused_as_python_does() {
    // {[]: None}, {{}: None}, a set holding a list, and a key that refers
    // back to a flagged list: marshal.loads raises on each (unhashable).
    let mut back_ref = vec![b'[', 2, 0, 0, 0, b'[' | FLAG_REF, 0, 0, 0, 0, b'{'];
    back_ref.extend_from_slice(&[b'r', 0, 0, 0, 0, b'N', b'0']);
    for (data, what, kind) in [
        (&b"{[\x00\x00\x00\x00N0"[..], "dict key", "list"),
        (b"{{0N0", "dict key", "dict"),
        (b"<\x01\x00\x00\x00[\x00\x00\x00\x00", "set member", "list"),
        (&back_ref[..], "dict key", "list"),
    ] {
        let e = from_slice::<Value>(data).expect_err("unhashable");
        assert!(
            matches!(e.kind, DecodeErrorKind::Unhashable { what: w, kind: k } if w == what && k == kind),
            "{e}"
        );
    }
    // A tuple key is hashable.
    assert!(from_slice::<Value>(b"{)\x01i\x01\x00\x00\x00N0").is_ok());
}
