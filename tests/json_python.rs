//! `miniray::json` against the machine's real `python3` (3.11): our bytes
//! are `json.dumps(v)`'s bytes, Python's `json.loads` reads ours back
//! equal, and what Python writes decodes to the expected value; typed
//! Rust shapes; the types Python refuses, refused with Python's words.
//! Errors and bounds are in tests/json_bounds.rs.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
#[path = "common/pyvalues.rs"]
mod pyvalues;

use miniray::json::{from_slice, to_vec};
use miniray::Error;
use miniray::Value;
use num_bigint::BigInt;

use serde::{Deserialize, Serialize};

/// Runs a Python script with `input` on stdin; its stdout. Killed (and the
/// test failed) after 60 s.
fn python(script: &str, input: &str) -> String {
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let input = input.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("python3 still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    writer.join().expect("writer");
    let out = reader
        .join()
        .expect("reader")
        .expect("python stdout is UTF-8");
    assert!(status.success(), "python3 failed: {out}");
    out
}

type Py = Value;

fn s(x: &str) -> Py {
    Py::Str(x.into())
}

fn big(text: &str) -> Py {
    Value::from_bigint(text.parse::<BigInt>().expect("decimal"))
}

fn int(i: i128) -> Py {
    Value::from_bigint(i.into())
}

fn sur(bytes: &[u8]) -> Py {
    let v = Value::from_generalized_utf8(bytes).expect("generalized UTF-8");
    assert!(matches!(v, Value::SurrogateStr(_)));
    v
}

fn list(items: Vec<Py>) -> Py {
    Py::List(items)
}

fn dict(entries: Vec<(Py, Py)>) -> Py {
    Py::Dict(entries.into_iter().collect())
}

fn float_key(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        miniray::marshal::python_float_repr(f)
    }
}

/// What `json.loads(json.dumps(v))` gives: tuples become lists, keys str.
fn normalized(v: &Py) -> Py {
    match v {
        Py::Tuple(items) | Py::List(items) => Py::List(items.iter().map(normalized).collect()),
        Py::Dict(entries) => Py::Dict(
            entries
                .iter()
                .map(|(k, x)| {
                    let key = match k {
                        Py::Str(_) | Py::SurrogateStr(_) => k.clone(),
                        Py::Bool(b) => s(if *b { "true" } else { "false" }),
                        Py::None => s("null"),
                        Py::Int(i) => s(&i.to_string()),
                        Py::BigInt(i) => s(&i.to_string()),
                        Py::Float(f) => s(&float_key(*f)),
                        other => panic!("no JSON key for {other:?}"),
                    };
                    (key, normalized(x))
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// (Python expression, the same value in Rust, what json.loads gives if
/// not `normalized`).
fn cases() -> Vec<(&'static str, Py, Option<Py>)> {
    let two_1000 = "10715086071862673209484250490600018105614048117055336074437503883703510511249361224931983788156958581275946729175531468251871452856923140435984577574698574803934567774824230985421074605062371141877954182153046474983581941267398767559165543946077062914571196477686542167660429831652624386837205668069376";
    vec![
        ("None", Py::None, None),
        ("True", Py::Bool(true), None),
        ("False", Py::Bool(false), None),
        ("0", int(0), None),
        ("-1", int(-1), None),
        ("2**63-1", int(i64::MAX.into()), None),
        ("2**63", int(1i128 << 63), None),
        ("-(2**63)", int(i64::MIN.into()), None),
        ("-(2**63)-1", int(-(1i128 << 63) - 1), None),
        ("2**64", int(1i128 << 64), None),
        ("2**127-1", int(i128::MAX), None),
        ("-(2**127)", int(i128::MIN), None),
        ("2**1000", big(two_1000), None),
        ("-(2**1000)", big(&format!("-{two_1000}")), None),
        ("-(2**127)-1", big("-170141183460469231731687303715884105729"), None),
        ("0.0", Py::Float(0.0), None),
        ("-0.0", Py::Float(-0.0), None),
        ("1.5", Py::Float(1.5), None),
        ("0.1", Py::Float(0.1), None),
        ("float('nan')", Py::Float(f64::NAN), None),
        ("float('inf')", Py::Float(f64::INFINITY), None),
        ("-float('inf')", Py::Float(f64::NEG_INFINITY), None),
        ("1e16", Py::Float(1e16), None),
        ("1e-05", Py::Float(1e-5), None),
        ("0.0001", Py::Float(1e-4), None),
        ("1e15", Py::Float(1e15), None),
        ("5e-324", Py::Float(5e-324), None),
        ("1.7976931348623157e308", Py::Float(f64::MAX), None),
        ("123456789.123", Py::Float(123456789.123), None),
        ("''", s(""), None),
        ("'abc xyz ~'", s("abc xyz ~"), None),
        (r#"'"\\/'"#, s("\"\\/"), None),
        (r"'\n\r\t\b\f'", s("\n\r\t\u{8}\u{c}"), None),
        (r"'\x00\x01\x1f\x7f\x80\xff'", s("\0\u{1}\u{1f}\u{7f}\u{80}\u{ff}"), None),
        (r"'é€\u2028'", s("é€\u{2028}"), None),
        (r"'\U0001f600 \U0010ffff'", s("\u{1f600} \u{10ffff}"), None),
        (r"'\ud800'", sur(b"\xed\xa0\x80"), None),
        (r"'a\udfffb'", sur(b"a\xed\xbf\xbfb"), None),
        (r"'\udc00\ud800'", sur(b"\xed\xb0\x80\xed\xa0\x80"), None),
        // Two code points written as a pair: json.loads joins them.
        (r"'\ud83d\ude00'", sur(b"\xed\xa0\xbd\xed\xb8\x80"), Some(s("\u{1f600}"))),
        ("[]", list(vec![]), None),
        ("{}", dict(vec![]), None),
        (
            "[1, [2.5, [None, []]], 'x']",
            list(vec![
                int(1),
                list(vec![Py::Float(2.5), list(vec![Py::None, list(vec![])])]),
                s("x"),
            ]),
            None,
        ),
        (
            "{'b': {'a': [1, 2.5, None]}, 'a': -0.0}",
            dict(vec![
                (s("b"), dict(vec![(s("a"), list(vec![int(1), Py::Float(2.5), Py::None]))])),
                (s("a"), Py::Float(-0.0)),
            ]),
            None,
        ),
        ("(1, 'x', ())", Py::Tuple(vec![int(1), s("x"), Py::Tuple(vec![])]), None),
        ("[(1, 2)]", list(vec![Py::Tuple(vec![int(1), int(2)])]), None),
        (
            "{1: 'a', 1.5: 'b', None: 'c', float('nan'): 'd', -3: 'e', 2**70: 'f', float('-inf'): 'g', 1e-05: 'h'}",
            dict(vec![
                (int(1), s("a")),
                (Py::Float(1.5), s("b")),
                (Py::None, s("c")),
                (Py::Float(f64::NAN), s("d")),
                (int(-3), s("e")),
                (int(1i128 << 70), s("f")),
                (Py::Float(f64::NEG_INFINITY), s("g")),
                (Py::Float(1e-5), s("h")),
            ]),
            None,
        ),
        (
            "{True: 1, False: 2, 'k': 3}",
            dict(vec![(Py::Bool(true), int(1)), (Py::Bool(false), int(2)), (s("k"), int(3))]),
            None,
        ),
        (
            r"{'\ud800': '\udbff', 2**200: 0}",
            dict(vec![
                (sur(b"\xed\xa0\x80"), sur(b"\xed\xaf\xbf")),
                (big("1606938044258990275541962092341162602522202993782792835301376"), int(0)),
            ]),
            Some(dict(vec![
                (sur(b"\xed\xa0\x80"), sur(b"\xed\xaf\xbf")),
                (s("1606938044258990275541962092341162602522202993782792835301376"), int(0)),
            ])),
        ),
    ]
}

const SAME: &str = r#"
import json, math, sys
def same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(same(k, l) and same(a[k], b[l]) for k, l in zip(a, b))
    return a == b
"#;

fn python_cases_script(body: &str) -> String {
    let exprs: Vec<&str> = cases().iter().map(|c| c.0).collect();
    format!("{SAME}\ncases = [{}]\n{body}", exprs.join(",\n"))
}

#[test]
fn our_bytes_are_json_dumps_bytes_and_python_reads_them_back() {
    let theirs = python(
        &python_cases_script("for v in cases:\n    print(json.dumps(v))\n"),
        "",
    );
    let theirs: Vec<&str> = theirs.lines().collect();
    let cases = cases();
    assert_eq!(theirs.len(), cases.len());
    let mut ours = String::new();
    for ((expr, value, _), want) in cases.iter().zip(&theirs) {
        let bytes = to_vec(value).unwrap_or_else(|e| panic!("{expr}: {e}"));
        assert!(!bytes.contains(&b'\n'));
        let text = String::from_utf8(bytes).expect("ASCII");
        assert_eq!(&text, want, "json.dumps({expr})");
        ours.push_str(&text);
        ours.push('\n');
    }
    // Python reads our text as the value json.dumps's own text gives.
    let verdict = python(
        &python_cases_script(
            "lines = sys.stdin.read().splitlines()\n\
             assert len(lines) == len(cases)\n\
             for v, line in zip(cases, lines):\n    \
             if not same(json.loads(line), json.loads(json.dumps(v))):\n        \
             print('MISMATCH', repr(v)[:200]); sys.exit(1)\n\
             print('ok', len(lines))\n",
        ),
        &ours,
    );
    assert_eq!(verdict.trim(), format!("ok {}", cases.len()));
}

#[test]
fn python_text_decodes_to_the_value() {
    let theirs = python(
        &python_cases_script("for v in cases:\n    print(json.dumps(v))\n"),
        "",
    );
    assert_eq!(theirs.lines().count(), cases().len(), "one line per case");
    for ((expr, value, decoded), text) in cases().iter().zip(theirs.lines()) {
        let want = decoded.clone().unwrap_or_else(|| normalized(value));
        let got: Py = from_slice(text.as_bytes()).unwrap_or_else(|e| panic!("{expr}: {e}"));
        assert_eq!(got, want, "json.loads({text})");
    }
}

#[test]
fn what_json_loads_reads_beyond_dumps_output() {
    // Python-accepted texts json.dumps does not write: whitespace, escapes
    // of printable chars, `/`, upper-case hex, exponents, duplicate keys.
    let texts = [
        (" \t\n\r[1 ,2\n]\r\n", list(vec![int(1), int(2)])),
        (r#""\u0041\/\uD83D\uDE00""#, s("A/\u{1f600}")),
        ("1E400", Py::Float(f64::INFINITY)),
        ("1e999999999999999999999", Py::Float(f64::INFINITY)),
        ("0e-99999999999999999999", Py::Float(0.0)),
        (
            "123456789012345678901234567890.5",
            Py::Float(1.2345678901234568e29),
        ),
        ("-1e-400", Py::Float(-0.0)),
        ("-0", int(0)),
        ("1.0e2", Py::Float(100.0)),
        ("\"\u{7f}é\"", s("\u{7f}é")),
        (
            r#"{"a": 1, "b": 2, "a": 3}"#,
            dict(vec![(s("a"), int(3)), (s("b"), int(2))]),
        ),
        (
            r#"{"\ud800" : 1}"#,
            dict(vec![(sur(b"\xed\xa0\x80"), int(1))]),
        ),
        ("\"\u{ed}\"", s("\u{ed}")),
    ];
    let script = format!(
        "{SAME}\nfor line in sys.stdin.read().split('\\0'):\n    print(json.dumps(json.loads(line)))\n"
    );
    let joined: Vec<&str> = texts.iter().map(|t| t.0).collect();
    let python_view = python(&script, &joined.join("\0"));
    for ((text, want), again) in texts.iter().zip(python_view.lines()) {
        let got: Py = from_slice(text.as_bytes()).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(&got, want, "{text:?}");
        // Python read it too, and wrote what we write for that value.
        assert_eq!(
            String::from_utf8(to_vec(&got).expect("encode")).expect("ascii"),
            again
        );
    }
    // Raw surrogate bytes: json.loads(bytes) decodes with surrogatepass.
    let got: Py = from_slice(b"\"\xed\xa0\x80\"").expect("surrogatepass");
    assert_eq!(got, sur(b"\xed\xa0\x80"));
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Job {
    id: u64,
    name: String,
    weights: Vec<f64>,
    tag: Option<String>,
    shape: Shape,
    pair: (i32, bool),
    by_id: BTreeMap<i64, String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Shape {
    Unit,
    New(f64),
    Tuple(i8, String),
    Struct { w: u16, h: u16 },
}

#[test]
fn typed_values_match_python() {
    let mut by_id = BTreeMap::new();
    by_id.insert(-1, "neg".to_owned());
    by_id.insert(7, "seven".to_owned());
    let jobs = [
        Job {
            id: u64::MAX,
            name: "é\n\"x\"".into(),
            weights: vec![0.5, -0.0, 1e16, f64::INFINITY],
            tag: None,
            shape: Shape::Unit,
            pair: (-3, true),
            by_id,
        },
        Job {
            id: 0,
            name: String::new(),
            weights: vec![],
            tag: Some("t".into()),
            shape: Shape::Struct { w: 3, h: 4 },
            pair: (0, false),
            by_id: BTreeMap::new(),
        },
    ];
    let shapes = [Shape::New(2.5), Shape::Tuple(-1, "a".into())];
    let py_jobs = r#"[
        {"id": 2**64-1, "name": "\u00e9\n\"x\"", "weights": [0.5, -0.0, 1e16, float('inf')], "tag": None,
         "shape": "Unit", "pair": (-3, True), "by_id": {-1: "neg", 7: "seven"}},
        {"id": 0, "name": "", "weights": [], "tag": "t", "shape": {"Struct": {"w": 3, "h": 4}},
         "pair": (0, False), "by_id": {}},
        {"New": 2.5}, {"Tuple": [-1, "a"]}]"#;
    let theirs = python(
        &format!("import json\nfor v in {py_jobs}:\n    print(json.dumps(v))\n"),
        "",
    );
    let theirs: Vec<&str> = theirs.lines().collect();
    for (job, text) in jobs.iter().zip(&theirs) {
        assert_eq!(to_vec(job).expect("encode"), text.as_bytes());
        assert_eq!(&from_slice::<Job>(text.as_bytes()).expect("decode"), job);
    }
    for (shape, text) in shapes.iter().zip(&theirs[2..]) {
        assert_eq!(to_vec(shape).expect("encode"), text.as_bytes());
        assert_eq!(
            &from_slice::<Shape>(text.as_bytes()).expect("decode"),
            shape
        );
    }
    // Python's int-keyed dict into a HashMap<i64, String>; ints into f64.
    let m: HashMap<i64, String> = from_slice(br#"{"1": "a", "-20": "b"}"#).expect("int keys");
    assert_eq!(m[&1], "a");
    assert_eq!(m[&-20], "b");
    let v: Vec<f64> =
        from_slice(b"[1, -2, 3.5, NaN, 123456789012345678901234567890]").expect("floats");
    assert_eq!(&v[..3], &[1.0, -2.0, 3.5]);
    assert!(v[3].is_nan());
    assert_eq!(v[4], 123456789012345678901234567890.0);
    // A list into a tuple; ints of every width.
    let t: (u8, i128, u128) = from_slice(
        b"[255, -170141183460469231731687303715884105728, 340282366920938463463374607431768211455]",
    )
    .expect("wide ints");
    assert_eq!(t, (255, i128::MIN, u128::MAX));
}

#[test]
fn python_types_without_json_form_are_refused_by_name() {
    for (v, name) in [
        (Py::Bytes(b"x".to_vec()), "bytes"),
        (Py::Set([int(1)].into_iter().collect()), "set"),
        (Py::Complex { re: 1.0, im: 2.0 }, "complex"),
        (Py::FrozenSet([int(1)].into_iter().collect()), "frozenset"),
        (list(vec![int(1), Py::Bytes(vec![])]), "bytes"),
    ] {
        match to_vec(&v) {
            Err(Error::Encode { format, reason }) => {
                assert_eq!(format, miniray::Format::Json);
                assert_eq!(
                    reason,
                    format!("Object of type {name} is not JSON serializable")
                );
            }
            other => panic!("{v:?}: {other:?}"),
        }
    }
    for (k, name) in [
        (Py::Tuple(vec![int(1)]), "tuple"),
        (Py::Bytes(vec![]), "bytes"),
        (Py::Complex { re: 0.0, im: 1.0 }, "complex"),
        (Py::FrozenSet(Default::default()), "frozenset"),
    ] {
        match to_vec(&dict(vec![(k, Py::None)])) {
            Err(Error::Encode { reason, .. }) => {
                assert_eq!(
                    reason,
                    format!("keys must be str, int, float, bool or None, not {name}")
                )
            }
            other => panic!("{other:?}"),
        }
    }
    // Python says the same.
    let said = python(
        "import json\nfor k in [(1,), b'', 0j]:\n    try: json.dumps({k: None})\n    except TypeError as e: print(e)\n\
         for v in [b'x', {1}, 1+2j]:\n    try: json.dumps(v)\n    except TypeError as e: print(e)\n",
        "",
    );
    let said: Vec<&str> = said.lines().collect();
    assert_eq!(
        said[0],
        "keys must be str, int, float, bool or None, not tuple"
    );
    assert_eq!(said[3], "Object of type bytes is not JSON serializable");
    assert_eq!(said[4], "Object of type set is not JSON serializable");
}

#[test]
fn floats_with_long_integer_parts_read_as_python_reads_them() {
    // The 4300-digit limit is Python's int limit: float() has none.
    let texts = [
        format!("{}.5", "1".repeat(5000)),
        format!("[-{}e-4990]", "2".repeat(4400)),
    ];
    let script = "import json, sys\nfor line in sys.stdin.read().split():\n    print(json.dumps(json.loads(line)))\n";
    let theirs = python(script, &texts.join("\n"));
    for (text, want) in texts.iter().zip(theirs.lines()) {
        let v: Value = from_slice(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            String::from_utf8(to_vec(&v).expect("encode")).expect("ascii"),
            want
        );
    }
    let f: f64 = from_slice(texts[0].as_bytes()).expect("typed");
    assert_eq!(f, f64::INFINITY);
}

#[test]
fn every_json_able_case_of_the_shared_oracle() {
    // tests/common/pyvalues.rs: each case json.dumps accepts, decoded by
    // us type-exactly as json.loads reads it, and written back byte for byte.
    let body = r#"
for name, v in CASES:
    try:
        text = json.dumps(v)
    except (TypeError, ValueError):
        continue
    print(name)
    print(text)
    print(tag_text(json.loads(text)))
"#;
    let out = pyvalues::python(body, &[], "");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len() % 3, 0);
    assert_eq!(lines.len(), 3 * 17, "the oracle's 17 JSON-able cases");
    for case in lines.chunks(3) {
        let [name, text, want] = case else {
            panic!("{case:?}")
        };
        let v: Value = from_slice(text.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = pyvalues::tag(&v);
        let want: serde_json::Value = serde_json::from_str(want).expect("tag text");
        assert!(got == want, "{name}: tag differs");
        let ours = to_vec(&v).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(ours == text.as_bytes(), "{name}: our text differs");
    }
}

#[test]
fn every_case_of_the_shared_oracle_written_or_refused_as_json_dumps() {
    // Each oracle value arrives exactly (as Python's marshal), then we
    // write it: json.dumps's bytes, or json.dumps's own TypeError text.
    let body = r#"
for name, v in CASES:
    print(name)
    print(base64.b64encode(marshal.dumps(v)).decode())
    try:
        print("OK " + json.dumps(v))
    except (TypeError, ValueError) as e:
        print("ERR " + str(e))
"#;
    let out = pyvalues::python(body, &[], "");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len() % 3, 0);
    let (mut written, mut refused) = (0, 0);
    for case in lines.chunks(3) {
        let [name, b64, want] = case else {
            panic!("{case:?}")
        };
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64");
        let v: Value = miniray::marshal::from_slice(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        match (to_vec(&v), want.split_once(' ')) {
            (Ok(ours), Some(("OK", text))) => {
                assert!(ours == text.as_bytes(), "{name}: our text differs");
                written += 1;
            }
            (Err(Error::Encode { reason, .. }), Some(("ERR", message))) => {
                assert_eq!(reason, message, "{name}");
                refused += 1;
            }
            (ours, _) => panic!("{name}: we gave {ours:?}, Python {want:.200}"),
        }
    }
    // The oracle's 22 cases: 17 json.dumps writes, 5 it refuses.
    assert_eq!((written, refused), (17, 5));
}
