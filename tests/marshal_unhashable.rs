//! Dict keys and set members Python cannot hash. `marshal.loads` raises
//! `TypeError: unhashable type: 'dict'` on a list, dict or set anywhere in
//! a key (a tuple holding one, at any depth; a frozenset is hashable), and
//! so does miniray, naming the type and where it starts, in time linear in
//! the line: such keys once all hashed alike, and 16,000 of them (a 363 KB
//! line) took seconds. Checked against the machine's `python3`, through
//! `Value`, typed maps and the encoder, and for `Value` keys built in Rust.

mod common;
#[path = "common/pyvalues.rs"]
mod pyvalues;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use base64::Engine;
use miniray::{py, DecodeErrorKind, Dict, Format, Value};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn u32le(n: usize) -> [u8; 4] {
    u32::try_from(n).expect("count").to_le_bytes()
}

/// The hostile dict: `n` keys `({"k": i},)`, each with the value `i`
/// (17 bytes an entry: the issue's 363 KB line for 16,000).
fn hostile_dict(n: usize) -> Vec<u8> {
    let mut raw = vec![b'{'];
    for i in 0..n {
        let i = i32::try_from(i).expect("i32").to_le_bytes();
        raw.extend_from_slice(&[b')', 1, b'{', b'z', 1, b'k', b'i']);
        raw.extend_from_slice(&i);
        raw.push(b'0');
        raw.push(b'i');
        raw.extend_from_slice(&i);
    }
    raw.push(b'0');
    raw
}

/// The same shape as a set: `n` members `(i, [i])`.
fn hostile_set(n: usize) -> Vec<u8> {
    let mut raw = vec![b'<'];
    raw.extend_from_slice(&u32le(n));
    for i in 0..n {
        let i = i32::try_from(i).expect("i32").to_le_bytes();
        raw.extend_from_slice(&[b')', 2, b'i']);
        raw.extend_from_slice(&i);
        raw.extend_from_slice(&[b'[', 1, 0, 0, 0, b'i']);
        raw.extend_from_slice(&i);
    }
    raw
}

/// What `marshal.loads` says of each base64 line: `ok` or the
/// `TypeError`'s message.
const PY_LOADS: &str = r#"
import base64, marshal, sys
for line in sys.stdin:
    try:
        marshal.loads(base64.b64decode(line))
        print("ok")
    except TypeError as e:
        print(e)
"#;

fn unhashable(kind: &DecodeErrorKind) -> Option<(&'static str, &'static str)> {
    match kind {
        DecodeErrorKind::Unhashable { what, kind } => Some((what, kind)),
        _ => None,
    }
}

/// What a case is refused as: in what, which type, where it starts; `None`
/// when Python loads it.
type Refused = Option<(&'static str, &'static str, usize)>;

/// Each case as bytes, what Python says of it, and where miniray says the
/// unhashable container starts.
#[test]
fn refused_exactly_where_python_refuses() {
    let list = |items: &[u8]| {
        let mut v = vec![b'[', 1, 0, 0, 0];
        v.extend_from_slice(items);
        v
    };
    // A flagged list outside any key, then a key referring to it.
    let mut by_ref = vec![b'[', 2, 0, 0, 0, b'[' | 0x80, 0, 0, 0, 0, b'{'];
    by_ref.extend_from_slice(&[b')', 1, b'r', 0, 0, 0, 0, b'N', b'0']);
    let cases: Vec<(&str, Vec<u8>, Refused)> = vec![
        ("{({},): None}", b"{)\x01{0N0".to_vec(), Some(("dict key", "dict", 3))),
        (
            "{(([],),): None}",
            b"{)\x01)\x01[\x00\x00\x00\x00N0".to_vec(),
            Some(("dict key", "list", 5)),
        ),
        (
            "{frozenset({(1, [2])})}",
            [
                &b"<\x01\x00\x00\x00>\x01\x00\x00\x00)\x02i\x01\x00\x00\x00"[..],
                &list(b"i\x02\x00\x00\x00"),
            ]
            .concat(),
            Some(("set member", "list", 17)),
        ),
        (
            "{(set(),): 1}",
            b"{)\x01<\x00\x00\x00\x00i\x01\x00\x00\x000".to_vec(),
            Some(("dict key", "set", 3)),
        ),
        ("[[], {(ref to [],): None}]", by_ref, Some(("dict key", "list", 5))),
        // Hashable: frozensets, tuples of scalars, nested.
        (
            "{(frozenset({(1,)}), 'a', b'b', 2.5): [ {} ]}",
            b"{)\x04>\x01\x00\x00\x00)\x01i\x01\x00\x00\x00z\x01as\x01\x00\x00\x00bg\x00\x00\x00\x00\x00\x00\x04@[\x01\x00\x00\x00{00".to_vec(),
            None,
        ),
        ("{(): {}}", b"{)\x00{00".to_vec(), None),
    ];
    let input: String = cases.iter().map(|(_, raw, _)| b64(raw) + "\n").collect();
    let said = pyvalues::python(PY_LOADS, &[], &input);
    let said: Vec<&str> = said.lines().collect();
    assert_eq!(said.len(), cases.len(), "{said:?}");
    for ((name, raw, want), python) in cases.iter().zip(said) {
        let got = miniray::marshal::from_slice::<Value>(raw);
        match want {
            None => {
                assert_eq!(python, "ok", "{name}");
                got.unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            Some((what, kind, at)) => {
                assert_eq!(python, format!("unhashable type: '{kind}'"), "{name}");
                let e = got.expect_err(name);
                assert_eq!(unhashable(&e.kind), Some((*what, *kind)), "{name}: {e}");
                assert_eq!(e.position, *at, "{name}: {e}");
                assert!(e.to_string().contains(python), "{name}: {e}");
            }
        }
    }
}

/// Decodes `raw` as a base64 line on a thread of its own under the test
/// deadline (a quadratic decode would hold the test, not end it): the
/// error and the time it took.
fn refuse_line(raw: &[u8]) -> (miniray::DecodeError, Duration) {
    let line = b64(raw);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let t = Instant::now();
        let r = Format::Marshal.decode::<Value>(line.as_bytes());
        let _ = tx.send((r.map(|_| ()), t.elapsed()));
    });
    let (r, took) = rx
        .recv_timeout(common::DEADLINE)
        .expect("decode ended within the deadline");
    (r.expect_err("an unhashable key is refused"), took)
}

#[test]
fn the_hostile_lines_are_refused_at_once() {
    // The issue's line: 16,000 keys, 363 KB of base64. Before: seconds.
    let raw = hostile_dict(16_000);
    assert_eq!(b64(&raw).len(), 362_672);
    let (e, took) = refuse_line(&raw);
    assert_eq!(unhashable(&e.kind), Some(("dict key", "dict")), "{e}");
    assert_eq!(e.position, 3, "the first key's dict: {e}");
    eprintln!("363 KB line refused in {took:?}");
    // 4 MB lines, dict and set: a decoder quadratic in the keys cannot
    // finish these in 2 s (the 363 KB one took seconds); a linear one
    // takes milliseconds.
    for (name, raw) in [
        ("dict", hostile_dict(4_000_000 / 17 * 3 / 4)),
        ("set", hostile_set(4_000_000 / 17 * 3 / 4)),
    ] {
        let (e, took) = refuse_line(&raw);
        let kind = if name == "dict" { "dict" } else { "list" };
        assert_eq!(unhashable(&e.kind).map(|(_, k)| k), Some(kind), "{e}");
        eprintln!(
            "{name}: {} KB line refused in {took:?}",
            b64(&raw).len() / 1000
        );
        assert!(took < Duration::from_secs(2), "{name}: {took:?}");
    }
}

#[test]
fn typed_maps_refuse_them_too() {
    let raw = hostile_dict(100);
    let e = miniray::marshal::from_slice::<HashMap<Value, i64>>(&raw).expect_err("typed");
    assert_eq!(unhashable(&e.kind), Some(("dict key", "dict")), "{e}");
    // A Rust tuple key filled from a tuple holding a list.
    let e = miniray::marshal::from_slice::<HashMap<(Vec<i64>,), i64>>(
        b"{)\x01[\x01\x00\x00\x00i\x01\x00\x00\x00i\x02\x00\x00\x000",
    )
    .expect_err("typed tuple key");
    assert_eq!(unhashable(&e.kind), Some(("dict key", "list")), "{e}");
    // Hashable typed keys still decode.
    let m = miniray::marshal::from_slice::<HashMap<(i64, String), i64>>(
        b"{)\x02i\x01\x00\x00\x00z\x01ai\x02\x00\x00\x000",
    )
    .expect("typed");
    assert_eq!(m[&(1, "a".to_owned())], 2);
}

#[test]
fn the_encoder_refuses_what_python_could_not_load() {
    for (v, kind) in [
        (py!({({"k": 1},): 1}), "dict"),
        (py!({(1, (2, [3])): None}), "list"),
        (py!(set[(1, set[2])]), "set"),
    ] {
        let e = miniray::marshal::to_vec(&v).expect_err("unhashable");
        assert!(
            e.to_string()
                .contains(&format!("unhashable type: '{kind}'")),
            "{v}: {e}"
        );
    }
    // A frozenset in a tuple key is hashable, and round-trips.
    let ok = py!({(1, frozenset[2, (3,)]): "x"});
    let bytes = miniray::marshal::to_vec(&ok).expect("hashable");
    assert_eq!(
        miniray::marshal::from_slice::<Value>(&bytes).expect("back"),
        ok
    );
}

/// Keys built in Rust that Python would refuse still hash by their whole
/// content: 16,000 `({"k": i},)` keys make a dict in linear time, and two
/// dicts differing only in a value hash apart.
#[test]
fn value_keys_built_in_rust_hash_by_their_whole_content() {
    let state = RandomState::new();
    assert_ne!(
        state.hash_one(py!(({"k": 1},))),
        state.hash_one(py!(({"k": 2},)))
    );
    // Order-free where `==` is.
    let ab = py!({"a": 1, "b": 2});
    let ba = py!({"b": 2, "a": 1});
    assert_eq!(ab, ba);
    assert_eq!(state.hash_one(&ab), state.hash_one(&ba));

    let t = Instant::now();
    let mut d = Dict::new();
    for i in 0..16_000 {
        d.insert(Value::Tuple(vec![py!({ "k": i })]), Value::Int(i));
    }
    let took = t.elapsed();
    assert_eq!(d.len(), 16_000);
    eprintln!("16,000 such keys inserted in {took:?}");
    // Quadratic (all keys colliding) took seconds; linear takes milliseconds.
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// A frozenset in a frozenset in ... (120 levels) around a tuple of
/// 1,000,000 ints: each level hashes its one member, and a set remembers
/// its members' hash, so the tuple is hashed twice, not 120 times (Python
/// caches a frozenset's hash too). 120 walks of the tuple took 40 times as
/// long as decoding it.
#[test]
fn nested_frozensets_are_hashed_once() {
    let (depth, n) = (120, 1_000_000);
    let mut raw = Vec::new();
    for _ in 0..depth {
        raw.push(b'>');
        raw.extend_from_slice(&u32le(1));
    }
    raw.push(b'(');
    raw.extend_from_slice(&u32le(n));
    for i in 0..n {
        raw.push(b'i');
        raw.extend_from_slice(&i32::try_from(i).expect("i32").to_le_bytes());
    }
    let flat = &raw[5 * depth..];
    let time = |bytes: Vec<u8>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let t = Instant::now();
            let ok = miniray::marshal::from_slice::<Value>(&bytes).is_ok();
            let _ = tx.send((ok, t.elapsed()));
        });
        let (ok, took) = rx
            .recv_timeout(common::DEADLINE)
            .expect("decode ended within the deadline");
        assert!(ok, "decodes");
        took
    };
    let (nested, alone) = (time(raw.clone()), time(flat.to_vec()));
    eprintln!("{depth} levels around {n} ints: {nested:?}; the tuple alone: {alone:?}");
    // Linear: a few times the tuple alone (it is hashed twice); once per
    // level was 40x.
    assert!(
        nested < alone * 8 + Duration::from_millis(200),
        "{nested:?} against {alone:?}"
    );
}
