//! The property the `json_value` fuzz target checks (and that
//! tests/json_bounds.rs replays over the committed corpus): decoding any
//! bytes with `miniray::json` returns or refuses, never panics, and what
//! decodes re-encodes to text that decodes to the same value, as a
//! `miniray::Value` and as typed Rust values.

use std::collections::BTreeMap;

use miniray::json::{from_slice, to_vec};
use miniray::Value;

/// Floats compared by bits (NaN payloads aside), as `Value` compares them.
fn same_floats(a: &[Option<f64>], b: &[Option<f64>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Some(x), Some(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            (None, None) => true,
            _ => false,
        })
}

/// Decodes `data` as a `Value` and as typed shapes; each success must
/// survive encode → decode unchanged.
pub fn json_value(data: &[u8]) {
    if let Ok(v) = from_slice::<Value>(data) {
        // Every Value JSON can hold encodes (no bytes, set or complex come
        // out of JSON); past 4300 digits nothing decodes.
        let text = to_vec(&v).expect("a decoded Value encodes");
        assert!(!text.contains(&b'\n'), "one line");
        let again: Value = from_slice(&text).expect("our text decodes");
        // json.loads joins an escaped surrogate pair that was two code
        // points: compare what Python would see after the same trip.
        let text2 = to_vec(&again).expect("re-encode");
        let again2: Value = from_slice(&text2).expect("decode twice");
        assert_eq!(again, again2, "stable after one trip");
        assert_eq!(text, text2);
    }
    if let Ok(v) = from_slice::<Vec<Option<f64>>>(data) {
        let back: Vec<Option<f64>> = from_slice(&to_vec(&v).expect("encode")).expect("decode");
        assert!(same_floats(&v, &back), "{v:?} != {back:?}");
    }
    if let Ok(v) = from_slice::<BTreeMap<i64, (String, bool, Option<u128>)>>(data) {
        let back: BTreeMap<i64, (String, bool, Option<u128>)> =
            from_slice(&to_vec(&v).expect("encode")).expect("decode");
        assert_eq!(v, back);
    }
    if let Ok(v) = from_slice::<Vec<(i128, String)>>(data) {
        let back: Vec<(i128, String)> = from_slice(&to_vec(&v).expect("encode")).expect("decode");
        assert_eq!(v, back);
    }
}
