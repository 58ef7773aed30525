//! Python's values as a test oracle: a set of cases covering every type
//! `miniray::Value` models, and a canonical *tag* of a value that both
//! sides compute (Python from the real object, Rust from the `Value`), so
//! "equal" means same types all the way down (tuple is not list, set is
//! not frozenset, `True` is not `1`), floats equal by bits, str equal by
//! code points, dict order kept. Included with `#[path]` by the Python
//! interoperability tests.

#![allow(dead_code)]

use miniray::Value;
use serde_json::json;

/// Python source: `CASES` (name, value) and `tag(v)`, `tag_text(v)`.
pub const PY_VALUES: &str = r#"
import base64, json, marshal, struct, sys

def tag(v):
    t = type(v)
    if v is None: return ["None"]
    if t is bool: return ["bool", v]
    if t is int: return ["int", str(v)]
    if t is float: return ["float", struct.pack(">d", v).hex()]
    if t is complex: return ["complex", struct.pack(">d", v.real).hex(), struct.pack(">d", v.imag).hex()]
    if t is str: return ["str", [ord(c) for c in v]]
    if t is bytes: return ["bytes", v.hex()]
    if t is tuple: return ["tuple", [tag(x) for x in v]]
    if t is list: return ["list", [tag(x) for x in v]]
    if t is dict: return ["dict", [[tag(k), tag(x)] for k, x in v.items()]]
    if t is set or t is frozenset:
        return [t.__name__, sorted((tag(x) for x in v), key=lambda x: json.dumps(x, separators=(",", ":")))]
    raise TypeError(t)

def tag_text(v):
    return json.dumps(tag(v), separators=(",", ":"))

sys.set_int_max_str_digits(5000)
shared = [1, 2]
d = {"a": 1}
key = "".join(["sha", "red"])       # not interned: shared through a reference
long = "".join(["x"] * 300)
CASES = [
    ("small ints", [0, -1, 1, 255, 256, -5, 2**31 - 1, -2**31]),
    ("wide ints", [2**31, -2**31 - 1, 2**63 - 1, 2**63, -2**63, -2**63 - 1, 2**64, 2**100, -(2**100)]),
    ("huge ints", [2**1000, -(2**1000), 10**4299, -(10**4299)]),
    ("floats", [0.1, -0.0, 0.0, 1e308, 5e-324, 1e16, 1e15, 0.0001, 1e-05, 123456789.123, 2.5,
                float(2**53), 1.7976931348623157e308, -1.5e-07]),
    ("non-finite floats", [float("nan"), float("inf"), float("-inf")]),
    ("singletons", [None, True, False]),
    ("strings", ["", "ascii", "\u00e9\u20ac\U0001F600", "\x00\x1f\"\\\n\t\x7f\x80\x9f\xa0\u2028", "a" * 300,
                 "\u00e9" * 300, "\U0001F600" * 70000]),
    ("lone surrogates", ["\ud800", "a\udfffb", "\ud83d\ude00", "\udc00\ud800", "x\ud800" * 100]),
    ("bytes", [b"", b"\x00\xff\n", b"x" * 300]),
    ("tuples", (1, (2, 3), tuple(range(300)), (), ("a",))),
    ("lists of tuples", [(1, "a"), (2, "b")]),
    ("sets", [{1, 2, 3}, set(), frozenset({"a", (1, 2)}), frozenset()]),
    ("complex", [1j, complex(1.5, -2), complex(-0.0, -0.0), complex(float("nan"), float("inf"))]),
    ("non-str keys", {1: "a", 2.5: "b", None: "d", (1, 2): "e", frozenset({1}): "f", "s": "g", b"k": "h", -(2**70): "i"}),
    ("bool keys", {True: 1, False: 0}),
    ("json-convertible keys", {1: "a", 2.5: "b", None: "c", True: "d", "s": "e", float("nan"): "f", float("inf"): "g"}),
    ("nested order kept", {"z": 1, "a": {"y": [], "b": {}}, "m": [{"q": None}]}),
    ("back-references", [shared, shared, d, d, {"x": d}, [key, key], [long, long, long]]),
    ("dicts sharing keys", [{"id": i, "name": "n%d" % i} for i in range(50)]),
    ("empty containers", [[], {}, (), "", b"", set(), frozenset()]),
    ("top-level scalar", 42),
    ("top-level tuple", (1, 2.5, "x", None)),
]
"#;

/// The tag of a `Value`, as `tag(v)` in [`PY_VALUES`] computes it.
pub fn tag(v: &Value) -> serde_json::Value {
    let float = |f: f64| json!(format!("{:016x}", f.to_bits()));
    let items = |xs: &[Value]| serde_json::Value::Array(xs.iter().map(tag).collect());
    let members = |xs: &mut dyn Iterator<Item = &Value>| {
        let mut tags: Vec<serde_json::Value> = xs.map(tag).collect();
        tags.sort_by_key(|t| serde_json::to_string(t).expect("tag text"));
        serde_json::Value::Array(tags)
    };
    match v {
        Value::None => json!(["None"]),
        Value::Bool(b) => json!(["bool", b]),
        Value::Int(i) => json!(["int", i.to_string()]),
        Value::BigInt(b) => json!(["int", b.to_string()]),
        Value::Float(f) => json!(["float", float(*f)]),
        Value::Complex { re, im } => json!(["complex", float(*re), float(*im)]),
        Value::Str(s) => json!(["str", s.chars().map(u32::from).collect::<Vec<_>>()]),
        Value::SurrogateStr(s) => json!(["str", s.code_points().collect::<Vec<_>>()]),
        Value::Bytes(b) => json!([
            "bytes",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ]),
        Value::Tuple(xs) => json!(["tuple", items(xs)]),
        Value::List(xs) => json!(["list", items(xs)]),
        Value::Dict(d) => json!([
            "dict",
            d.iter()
                .map(|(k, x)| json!([tag(k), tag(x)]))
                .collect::<Vec<_>>()
        ]),
        Value::Set(s) => json!(["set", members(&mut s.iter())]),
        Value::FrozenSet(s) => json!(["frozenset", members(&mut s.iter())]),
    }
}

/// Runs `python3 -c PY_VALUES + body args...` with `input` on stdin, within
/// the tests' deadline (killed and reaped past it); returns stdout,
/// asserting a zero exit.
pub fn python(body: &str, args: &[&str], input: &str) -> String {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(format!("{PY_VALUES}{body}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let errors = std::thread::spawn(move || {
        let mut err = Vec::new();
        let _ = stderr.read_to_end(&mut err);
        err
    });
    let end = std::time::Instant::now() + crate::common::DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("python3 did not finish within the deadline");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let _ = writer.join();
    let stdout = String::from_utf8(reader.join().expect("reader")).expect("utf8");
    let stderr = errors.join().expect("stderr reader");
    assert!(
        status.success(),
        "python3 failed: {}\n{stdout}",
        String::from_utf8_lossy(&stderr)
    );
    stdout
}
