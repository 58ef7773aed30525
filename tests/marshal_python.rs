//! The marshal serde format against the machine's real `python3` (3.11),
//! both directions, every Python type: Python's bytes decode to the
//! expected `Value` (and typed Rust values), and what we write
//! `marshal.loads` reads back equal with identical types (checked
//! recursively in Python: `{1} == frozenset({1})` and `(1,) != [1]` there),
//! byte-identical to `marshal.dumps` where Python flags nothing but the
//! top-level object. Vectors are made by Python at test time.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use base64::Engine;
use miniray::marshal::{from_slice, to_vec};
use miniray::{DecodeErrorKind, Dict, Set, Value};
use num_bigint::BigInt;
use serde::{Deserialize, Serialize};

const FLAG_REF: u8 = 0x80;

/// Runs `python3 -c script` with `input` on stdin; its stdout. Killed and
/// failed at the test deadline.
fn python(script: &str, input: &str) -> String {
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > common::DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("python3 still running after {:?}", common::DEADLINE);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let _ = writer.join();
    let out = reader.join().expect("reader");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "python3 failed: {err}");
    out
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

/// The cases, by name, as Python values; `RAW` are hand-made bytes that
/// CPython reads but never writes (Latin-1 `z`/`a`, `I`). `canon` is a
/// value's exact shape: types, float reprs, dict order, set members.
const CASES: &str = r#"
import base64, marshal, sys

def canon(v):
    t = type(v).__name__
    if isinstance(v, float):
        return (t, repr(v))
    if isinstance(v, complex):
        return (t, repr(v.real), repr(v.imag))
    if isinstance(v, (list, tuple)):
        return (t, tuple(canon(x) for x in v))
    if isinstance(v, dict):
        return (t, tuple((canon(k), canon(x)) for k, x in v.items()))
    if isinstance(v, (set, frozenset)):
        return (t, frozenset(canon(x) for x in v))
    return (t, v)

s = "a long shared string " * 20
shared = [1, 2]
CASES = {
    "none": None, "true": True, "false": False,
    "zero": 0, "small": -5, "i32 max": 2**31 - 1, "i32 min": -2**31, "i32 max+1": 2**31,
    "i64 max": 2**63 - 1, "i64 min": -2**63, "2**63": 2**63, "-(2**63)-1": -(2**63) - 1,
    "2**64": 2**64, "2**127": 2**127, "-(2**127)-1": -(2**127) - 1, "2**1000": 2**1000,
    "-(2**1000)": -(2**1000),
    "0.1": 0.1, "-0.0": -0.0, "nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"),
    "tiny": 5e-324, "complex": 1.5 - 2j, "complex -0": complex(-0.0, float("inf")),
    "empty str": "", "ascii": "ascii", "latin-1 as u": "\u00e9\u00ff", "astral": "\u20ac\U0001F600",
    "long ascii": "".join(["x"] * 300), "long latin-1": "\u00e9" * 300,
    "lone high": "\ud800", "lone low inside": "a\udfffb", "pair as two": "\ud83d\ude00",
    "bytes": b"\x00\xff" * 3, "empty bytes": b"",
    "empty tuple": (), "1-tuple": (1,), "nested tuple": (1, (2, 3), [4]),
    "300-tuple": tuple(range(1000, 1300)),
    "list": [1, [2, [3, []]]], "empty list": [],
    "dict literal": {"k": [1, 2.5, None]},
    "keys": {1: "one", 2.5: "f", (1, 2): "t", None: "n", False: "b",
             frozenset({1}): "fs", b"by": "y", "\u00df": "s", -0.5: "neg"},
    "empty dict": {},
    "set": {1, "a", (2, 3)}, "empty set": set(), "frozenset": frozenset({1, 2}),
    "empty frozenset": frozenset(), "set of frozensets": {frozenset({1}), frozenset()},
    "shared str": [s] * 3, "shared list": [shared, shared, {"x": shared}],
    "records": [{"id": i, "name": "n%d" % i} for i in range(3)],
    "floats": [i / 7 for i in range(100)],
    "big ints": [2**100 + i for i in range(10)],
    "fresh strs": ["x%d" % i for i in range(10)] + ["\u00e9%d" % i for i in range(5)],
}
RAW = {
    "latin-1 z": b"z\x02\xe9\xff",
    "latin-1 a": b"a\x03\x00\x00\x00\xe9\xe0\xff",
    "interned Z": b"\xda\x02ab",
    "I": b"I" + (2**40 + 1).to_bytes(8, "little", signed=True),
    "I negative": b"I" + (-(2**40)).to_bytes(8, "little", signed=True),
}
for name, raw in RAW.items():
    CASES[name] = marshal.loads(raw)

def dumps(name):
    return RAW[name] if name in RAW else marshal.dumps(CASES[name])
"#;

/// Prints `name<TAB>base64(marshal.dumps(value))` per case.
const WRITE: &str = r#"
for name in CASES:
    print(name + "\t" + base64.b64encode(dumps(name)).decode())
"#;

/// Reads `name<TAB>base64(ours)`, prints `name<TAB>ok` or what differs.
const READ: &str = r#"
for line in sys.stdin:
    name, data = line.rstrip("\n").split("\t")
    got = marshal.loads(base64.b64decode(data))
    want = CASES[name]
    print(name + "\t" + ("ok" if canon(got) == canon(want) else "DIFFERS %r != %r" % (got, want)))
"#;

fn int(i: i64) -> Value {
    Value::Int(i)
}

fn pow2(n: u32, negative: bool, minus_one: bool) -> Value {
    let mut b = BigInt::from(1) << n;
    if negative {
        b = -b;
    }
    if minus_one {
        b -= 1;
    }
    Value::from_bigint(b)
}

fn s(text: &str) -> Value {
    Value::Str(text.into())
}

fn f(x: f64) -> Value {
    Value::Float(x)
}

fn list(items: impl IntoIterator<Item = Value>) -> Value {
    Value::List(items.into_iter().collect())
}

fn tuple(items: impl IntoIterator<Item = Value>) -> Value {
    Value::Tuple(items.into_iter().collect())
}

fn dict(pairs: impl IntoIterator<Item = (Value, Value)>) -> Value {
    Value::Dict(pairs.into_iter().collect::<Dict>())
}

fn set(items: Vec<Value>) -> Set {
    items.into_iter().collect()
}

fn surrogates(points: &[u32]) -> Value {
    Value::from_code_points(points.iter().copied()).expect("code points")
}

/// The expected `Value` of every case.
fn expected() -> Vec<(&'static str, Value)> {
    let long_shared = s(&"a long shared string ".repeat(20));
    let shared = list(vec![int(1), int(2)]);
    vec![
        ("none", Value::None),
        ("true", Value::Bool(true)),
        ("false", Value::Bool(false)),
        ("zero", int(0)),
        ("small", int(-5)),
        ("i32 max", int(i64::from(i32::MAX))),
        ("i32 min", int(i64::from(i32::MIN))),
        ("i32 max+1", int(1 << 31)),
        ("i64 max", int(i64::MAX)),
        ("i64 min", int(i64::MIN)),
        ("2**63", pow2(63, false, false)),
        ("-(2**63)-1", pow2(63, true, true)),
        ("2**64", pow2(64, false, false)),
        ("2**127", pow2(127, false, false)),
        ("-(2**127)-1", pow2(127, true, true)),
        ("2**1000", pow2(1000, false, false)),
        ("-(2**1000)", pow2(1000, true, false)),
        ("0.1", f(0.1)),
        ("-0.0", f(-0.0)),
        ("nan", f(f64::NAN)),
        ("inf", f(f64::INFINITY)),
        ("-inf", f(f64::NEG_INFINITY)),
        ("tiny", f(5e-324)),
        ("complex", Value::Complex { re: 1.5, im: -2.0 }),
        (
            "complex -0",
            Value::Complex {
                re: -0.0,
                im: f64::INFINITY,
            },
        ),
        ("empty str", s("")),
        ("ascii", s("ascii")),
        ("latin-1 as u", s("\u{e9}\u{ff}")),
        ("astral", s("\u{20ac}\u{1F600}")),
        ("long ascii", s(&"x".repeat(300))),
        ("long latin-1", s(&"\u{e9}".repeat(300))),
        ("lone high", surrogates(&[0xD800])),
        ("lone low inside", surrogates(&[0x61, 0xDFFF, 0x62])),
        ("pair as two", surrogates(&[0xD83D, 0xDE00])),
        ("bytes", Value::Bytes(b"\x00\xff".repeat(3))),
        ("empty bytes", Value::Bytes(Vec::new())),
        ("empty tuple", tuple(vec![])),
        ("1-tuple", tuple(vec![int(1)])),
        (
            "nested tuple",
            tuple(vec![
                int(1),
                tuple(vec![int(2), int(3)]),
                list(vec![int(4)]),
            ]),
        ),
        ("300-tuple", tuple((1000..1300).map(int))),
        (
            "list",
            list(vec![
                int(1),
                list(vec![int(2), list(vec![int(3), list(vec![])])]),
            ]),
        ),
        ("empty list", list(vec![])),
        (
            "dict literal",
            dict(vec![(s("k"), list(vec![int(1), f(2.5), Value::None]))]),
        ),
        (
            "keys",
            dict(vec![
                (int(1), s("one")),
                (f(2.5), s("f")),
                (tuple(vec![int(1), int(2)]), s("t")),
                (Value::None, s("n")),
                (Value::Bool(false), s("b")),
                (Value::FrozenSet(set(vec![int(1)])), s("fs")),
                (Value::Bytes(b"by".to_vec()), s("y")),
                (s("\u{df}"), s("s")),
                (f(-0.5), s("neg")),
            ]),
        ),
        ("empty dict", dict(vec![])),
        (
            "set",
            Value::Set(set(vec![int(1), s("a"), tuple(vec![int(2), int(3)])])),
        ),
        ("empty set", Value::Set(Set::new())),
        ("frozenset", Value::FrozenSet(set(vec![int(1), int(2)]))),
        ("empty frozenset", Value::FrozenSet(Set::new())),
        (
            "set of frozensets",
            Value::Set(set(vec![
                Value::FrozenSet(set(vec![int(1)])),
                Value::FrozenSet(Set::new()),
            ])),
        ),
        (
            "shared str",
            list(vec![long_shared.clone(), long_shared.clone(), long_shared]),
        ),
        (
            "shared list",
            list(vec![
                shared.clone(),
                shared.clone(),
                dict(vec![(s("x"), shared)]),
            ]),
        ),
        (
            "records",
            list((0..3).map(|i| dict(vec![(s("id"), int(i)), (s("name"), s(&format!("n{i}")))]))),
        ),
        ("floats", list((0..100).map(|i| f(f64::from(i) / 7.0)))),
        (
            "big ints",
            list((0..10u32).map(|i| Value::from_bigint((BigInt::from(1) << 100u32) + i))),
        ),
        (
            "fresh strs",
            list(
                (0..10)
                    .map(|i| s(&format!("x{i}")))
                    .chain((0..5).map(|i| s(&format!("\u{e9}{i}")))),
            ),
        ),
        ("latin-1 z", s("\u{e9}\u{ff}")),
        ("latin-1 a", s("\u{e9}\u{e0}\u{ff}")),
        ("interned Z", s("ab")),
        ("I", int((1 << 40) + 1)),
        ("I negative", int(-(1 << 40))),
    ]
}

/// Cases whose `marshal.dumps` flags nothing but the top-level object:
/// our bytes must equal Python's with that one flag cleared. (Not
/// `"ascii"`: a literal that looks like an identifier is interned, `Z`;
/// nor ints from -5 to 256, which CPython caches and so flags.)
const BYTE_IDENTICAL: &[&str] = &[
    "none",
    "true",
    "2**63",
    "-(2**63)-1",
    "2**1000",
    "0.1",
    "nan",
    "-inf",
    "complex",
    "latin-1 as u",
    "astral",
    "long ascii",
    "lone low inside",
    "pair as two",
    "bytes",
    "300-tuple",
    "floats",
    "big ints",
    "fresh strs",
];

#[test]
fn python_bytes_decode_to_the_expected_values() {
    let out = python(&format!("{CASES}{WRITE}"), "");
    let from_python: HashMap<&str, Vec<u8>> = out
        .lines()
        .map(|l| {
            let (name, data) = l.split_once('\t').expect("two columns");
            (name, unb64(data))
        })
        .collect();
    let expected = expected();
    assert_eq!(from_python.len(), expected.len(), "one vector per case");
    for (name, want) in &expected {
        let bytes = &from_python[name];
        let got: Value = from_slice(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&got, want, "{name}");
        if BYTE_IDENTICAL.contains(name) {
            let mut unflagged = bytes.clone();
            unflagged[0] &= !FLAG_REF;
            let ours = to_vec(want).expect(name);
            let first = ours.iter().zip(&unflagged).position(|(a, b)| a != b);
            assert!(
                ours == unflagged,
                "{name}: {} bytes, python's {}; first difference at {first:?}",
                ours.len(),
                unflagged.len()
            );
        }
    }
}

#[test]
fn what_we_write_python_reads_with_identical_types() {
    let input: String = expected()
        .iter()
        .map(|(name, v)| format!("{name}\t{}\n", b64(&to_vec(v).expect(name))))
        .collect();
    let out = python(&format!("{CASES}{READ}"), &input);
    let mut n = 0;
    for line in out.lines() {
        let (name, verdict) = line.split_once('\t').expect("two columns");
        assert_eq!(verdict, "ok", "{name}");
        n += 1;
    }
    assert_eq!(n, expected().len());
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Kind {
    Unit,
    New(i64),
    Pair(i32, String),
    Named { x: f64, tags: Vec<String> },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Message {
    id: u32,
    name: String,
    score: Option<f64>,
    missing: Option<i32>,
    pos: (i32, String),
    weights: Vec<f64>,
    names: HashMap<i64, String>,
    raw: serde_bytes::ByteBuf,
    kinds: Vec<Kind>,
    members: Vec<i64>,
}

/// The Python form of [`message`], and the expected Python value of ours.
const MESSAGE: &str = r#"
MESSAGE = {"id": 7, "name": "n\u00e9", "score": 0.5, "missing": None, "pos": (1, "x"),
           "weights": [0.5, 1, 2.5], "names": {1: "one", -2: "two"}, "raw": b"\x00\x01",
           "kinds": ["Unit", {"New": 5}, {"Pair": [1, "a"]},
                     {"Named": {"x": 1.5, "tags": ["t"]}}],
           "members": frozenset({3})}
"#;

fn message() -> Message {
    Message {
        id: 7,
        name: "n\u{e9}".into(),
        score: Some(0.5),
        missing: None,
        pos: (1, "x".into()),
        weights: vec![0.5, 1.0, 2.5],
        names: [(1, "one".into()), (-2, "two".into())].into(),
        raw: serde_bytes::ByteBuf::from(vec![0, 1]),
        kinds: vec![
            Kind::Unit,
            Kind::New(5),
            Kind::Pair(1, "a".into()),
            Kind::Named {
                x: 1.5,
                tags: vec!["t".into()],
            },
        ],
        members: vec![3],
    }
}

#[test]
fn typed_messages_both_ways() {
    // Python -> Rust: tuple into (i32, String), int into f64, frozenset
    // into Vec, bytes into ByteBuf, enums as str / one-entry dicts.
    let out = python(
        &format!("{CASES}{MESSAGE}print(base64.b64encode(marshal.dumps(MESSAGE)).decode())"),
        "",
    );
    let got: Message = from_slice(&unb64(out.trim())).expect("typed decode");
    assert_eq!(got, message());

    // Rust -> Python: the struct is a dict with str keys, the pair a
    // tuple, Vec a list, bytes bytes; ints written for the f64 weights are
    // floats, so compare against Python's value with those as floats (and
    // the HashMap's order is its own: sorted on both sides).
    let ours = b64(&to_vec(&message()).expect("encode"));
    let check = format!(
        "{CASES}{MESSAGE}\nMESSAGE['weights'] = [0.5, 1.0, 2.5]\nMESSAGE['members'] = [3]\n\
         got = marshal.loads(base64.b64decode(sys.stdin.read()))\n\
         for m in (got, MESSAGE): m['names'] = dict(sorted(m['names'].items()))\n\
         print('ok' if canon(got) == canon(MESSAGE) else 'DIFFERS %r' % (got,))"
    );
    assert_eq!(python(&check, &ours).trim(), "ok");
}

#[test]
fn python_values_that_do_not_fit_fail_with_a_position() {
    let script = format!(
        "{CASES}\nfor v in [2**63, 2**200, '\\ud800', {{'id': 'x'}}, (1, 2, 3), 'Nope']:\n    \
         print(base64.b64encode(marshal.dumps(v)).decode())"
    );
    let out = python(&script, "");
    let lines: Vec<Vec<u8>> = out.lines().map(unb64).collect();
    let e = from_slice::<i64>(&lines[0]).expect_err("2**63 is no i64");
    assert!(
        matches!(&e.kind, DecodeErrorKind::Mismatch(m) if m.contains("9223372036854775808")),
        "{e}"
    );
    assert_eq!(from_slice::<u64>(&lines[0]).ok(), Some(1 << 63));
    let e = from_slice::<i128>(&lines[1]).expect_err("2**200 past 128 bits");
    assert!(matches!(e.kind, DecodeErrorKind::IntTooLarge), "{e}");
    assert_eq!(e.position, 0);
    let e = from_slice::<String>(&lines[2]).expect_err("lone surrogate");
    assert!(matches!(e.kind, DecodeErrorKind::LoneSurrogate), "{e}");
    assert_eq!(e.position, 5, "at the surrogate's first byte");
    // {'id': 'x'} as a Message: the "x" starts after `{`, the key `Z\x02id`
    // (flagged, interned) = byte 5.
    let e = from_slice::<Message>(&lines[3]).expect_err("id is no str");
    assert!(
        matches!(&e.kind, DecodeErrorKind::Mismatch(m) if m.contains("u32")),
        "{e}"
    );
    assert_eq!(e.position, 5);
    let e = from_slice::<(i32, i32)>(&lines[4]).expect_err("three items");
    assert!(matches!(e.kind, DecodeErrorKind::Mismatch(_)), "{e}");
    let e = from_slice::<Kind>(&lines[5]).expect_err("no such variant");
    assert!(
        matches!(&e.kind, DecodeErrorKind::Mismatch(m) if m.contains("Nope")),
        "{e}"
    );
}

/// A random `Value` Python can hold without merging anything: keys and
/// set members are strs, ints or tuples of them (Python's 1 == 1.0 ==
/// True would merge others).
fn random_value(rng: &mut u64, depth: u32) -> Value {
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    let pick = next() % if depth == 0 { 9 } else { 14 };
    let r = next();
    match pick {
        0 => Value::None,
        1 => Value::Bool(r & 1 == 0),
        2 => int(r as i64 >> (r % 64)),
        3 => Value::from_bigint(BigInt::from(r) << (r % 300) as u32),
        4 => f(f64::from_bits(r)),
        5 => Value::Complex {
            re: f64::from_bits(r),
            im: (r % 1000) as f64,
        },
        6 => s(&["", "a", "\u{e9}", "\u{1F600}x", "long "]
            .repeat((r % 60) as usize)
            .concat()),
        7 => surrogates(&[0x61, 0xD800 + (r % 0x800) as u32]),
        8 => Value::Bytes(r.to_le_bytes()[..(r % 9) as usize].to_vec()),
        _ => {
            let n = (r % 5) as usize;
            let items: Vec<Value> = (0..n).map(|_| random_value(rng, depth - 1)).collect();
            let keyed = |rng: &mut u64, i: usize| -> Value {
                let k = random_value(rng, 0);
                match k {
                    Value::Str(_) | Value::Int(_) => tuple(vec![k, int(i as i64)]),
                    _ => s(&format!("k{i}")),
                }
            };
            match pick {
                9 => list(items),
                10 => tuple(items),
                11 => dict(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| (keyed(rng, i), v)),
                ),
                12 => Value::Set((0..n).map(|i| keyed(rng, i)).collect()),
                _ => Value::FrozenSet((0..n).map(|i| keyed(rng, i)).collect()),
            }
        }
    }
}

#[test]
fn random_values_survive_a_trip_through_python() {
    // Ours -> marshal.loads -> marshal.dumps -> ours: equal, types and all.
    let mut rng = 0x1234_5678_9ABC_DEF1u64;
    let values: Vec<Value> = (0..300).map(|_| random_value(&mut rng, 3)).collect();
    let input: String = values
        .iter()
        .map(|v| format!("{}\n", b64(&to_vec(v).expect("encode"))))
        .collect();
    let out = python(
        "import base64, marshal, sys\nfor line in sys.stdin:\n    \
         print(base64.b64encode(marshal.dumps(marshal.loads(base64.b64decode(line)))).decode())",
        &input,
    );
    let back: Vec<Value> = out
        .lines()
        .map(|l| from_slice(&unb64(l)).expect("python's bytes decode"))
        .collect();
    assert_eq!(back.len(), values.len());
    for (i, (b, v)) in back.iter().zip(&values).enumerate() {
        assert_eq!(b, v, "value {i}");
    }
}
