//! Both formats against the machine's real `python3`, in both directions.
//! The vectors are made by Python at test time, not stored.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;
use miniray::serde_json::{self, Value};
use miniray::{DecodeErrorKind, Format};

const PEER: &str = r#"
import base64, json, marshal, sys

def cases():
    shared = [1, 2]
    d = {"a": 1}
    key = "".join(["sha", "red"])  # not interned
    yield "ints", [0, -1, 1, 2**31 - 1, -2**31, 2**31, -2**31 - 1, 2**63, -2**63 - 1,
                   2**64, 2**100, -(2**100), 2**1000, 10**4299]
    yield "floats", [0.1, -0.0, 0.0, 1e308, 5e-324, 1e16, 1e15, 0.0001, 1e-05,
                     123456789.123, 2.5, float(2**53), 1.7976931348623157e308, -1.5e-07]
    yield "singletons", [None, True, False]
    yield "strings", ["", "ascii", "é€😀", "\x00\x1f\"\\\n\t", "a" * 300, "é" * 300,
                      "\U0001F600" * 70000]
    yield "nested order kept", {"z": 1, "a": {"y": [], "b": {}}, "m": [{"q": None}]}
    yield "tuples", (1, (2, 3), tuple(range(300)))
    yield "back-references", [shared, shared, d, d, {"x": d}, [key, key]]
    yield "dicts sharing keys", [{"id": i, "name": "n%d" % i} for i in range(50)]
    yield "empty containers", [[], {}, (), ""]
    yield "top-level scalar", 42

def bad():
    yield "bytes", marshal.dumps(b"x")
    yield "set", marshal.dumps({1})
    yield "frozenset", marshal.dumps(frozenset([1]))
    yield "non-str key", marshal.dumps({1: 2})
    yield "lone surrogate", marshal.dumps("\ud800")
    yield "nan", marshal.dumps(float("nan"))
    yield "inf", marshal.dumps([float("inf")])
    yield "complex", marshal.dumps(1j)
    cyc = []
    cyc.append(cyc)
    yield "cycle", marshal.dumps(cyc)
    yield "trailing", marshal.dumps(1) + b"N"
    yield "unknown code", b"\x01"
    yield "truncated", marshal.dumps([1, 2, 3])[:-2]

def gen():
    for name, v in cases():
        text = json.dumps(v, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        line = base64.b64encode(marshal.dumps(v)).decode("ascii")
        print("GOOD\t%s\t%s\t%s" % (name, text, line))
    # Latin-1 strings in a/z codes, which CPython reads but only writes for ASCII.
    for raw in [b"z\x03\xe9\xe8\xe0", b"a\x02\x00\x00\x00\xff\xa0"]:
        text = json.dumps(marshal.loads(raw), ensure_ascii=False)
        print("GOOD\tlatin-1\t%s\t%s" % (text, base64.b64encode(raw).decode()))
    for name, data in bad():
        print("BAD\t%s\t%s" % (name, base64.b64encode(data).decode()))
    print("BADJSON\tnan\t" + json.dumps([float("nan")]))
    print("BADJSON\tinfinity\t" + json.dumps(float("inf")))
    print("BADJSON\tlone surrogate\t" + json.dumps("\ud800"))


def check():
    n = 0
    for raw in sys.stdin:
        fmt, expected, line = raw.rstrip("\n").split("\t")
        want = json.loads(expected)
        if fmt == "json":
            got = json.loads(line)
        else:
            got = marshal.loads(base64.b64decode(line, validate=True))
        if not same(got, want):
            print("MISMATCH %s %r != %r" % (fmt, got, want)[:500])
            sys.exit(1)
        n += 1
    print("checked %d" % n)

{"gen": gen, "check": check}[sys.argv[1]]()
"#;

fn python(mode: &str, input: Option<&str>) -> String {
    let mut child = Command::new("python3")
        .args(["-c", &format!("{}{PEER}", common::PY_SAME), mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(text) = input {
        stdin.write_all(text.as_bytes()).expect("write to python");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("python finished");
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    assert!(out.status.success(), "python3 {mode} failed: {stdout}");
    stdout
}

#[test]
fn python_encodes_rust_decodes_and_rust_encodes_python_decodes() {
    let vectors = python("gen", None);
    let mut good = 0;
    let mut bad = 0;
    let mut back = String::new();
    for row in vectors.lines() {
        let cols: Vec<&str> = row.split('\t').collect();
        match cols[0] {
            "GOOD" => {
                let (name, text, line) = (cols[1], cols[2], cols[3]);
                let from_marshal = Format::Marshal
                    .decode(line.as_bytes())
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                let from_json = Format::Json.decode(text.as_bytes()).expect("json");
                // Byte-identical JSON: ints exact, floats as Python's repr, order kept.
                assert_eq!(
                    serde_json::to_string(&from_marshal).expect("to_string"),
                    text,
                    "{name}"
                );
                assert_eq!(from_marshal, from_json, "{name}");
                for format in [Format::Json, Format::Marshal] {
                    let encoded = format.encode(&from_marshal).expect("encode");
                    let encoded = std::str::from_utf8(&encoded).expect("ascii or utf8");
                    assert_eq!(encoded.matches('\n').count(), 1, "{name}: one line");
                    back.push_str(&format!("{format}\t{text}\t{}\n", encoded.trim_end()));
                }
                good += 1;
            }
            "BAD" => {
                let (name, line) = (cols[1], cols[2]);
                let e = Format::Marshal.decode(line.as_bytes()).expect_err(name);
                let ok = match name {
                    "bytes" => matches!(e.kind, DecodeErrorKind::Unsupported("bytes")),
                    "set" => matches!(e.kind, DecodeErrorKind::Unsupported("set")),
                    "frozenset" => matches!(e.kind, DecodeErrorKind::Unsupported("frozenset")),
                    "non-str key" => matches!(e.kind, DecodeErrorKind::NonStrKey("int")),
                    "lone surrogate" => matches!(e.kind, DecodeErrorKind::LoneSurrogate),
                    "nan" | "inf" => matches!(e.kind, DecodeErrorKind::NonFinite),
                    "complex" => matches!(e.kind, DecodeErrorKind::Unsupported("complex")),
                    "cycle" => matches!(e.kind, DecodeErrorKind::UnfinishedReference(_)),
                    "trailing" => matches!(e.kind, DecodeErrorKind::TrailingBytes),
                    "unknown code" => matches!(e.kind, DecodeErrorKind::UnknownCode(1)),
                    "truncated" => matches!(e.kind, DecodeErrorKind::UnexpectedEnd),
                    other => panic!("unlisted case {other}"),
                };
                assert!(ok, "{name}: wrong error {e}");
                bad += 1;
            }
            "BADJSON" => {
                let e = Format::Json.decode(cols[2].as_bytes()).expect_err(cols[1]);
                assert!(matches!(e.kind, DecodeErrorKind::Json(_)), "{}", cols[1]);
                bad += 1;
            }
            other => panic!("unexpected row {other}"),
        }
    }
    assert_eq!((good, bad), (12, 15));
    let checked = python("check", Some(&back));
    assert_eq!(checked.trim(), format!("checked {}", good * 2));
}

#[test]
fn rust_marshal_of_big_and_edge_ints_is_what_python_reads() {
    // 10**4300 is past the limit both ways; 10**4299 is the largest accepted.
    let too_big: Value = serde_json::from_str(&format!("1{}", "0".repeat(4300))).expect("parse");
    assert!(Format::Marshal.encode(&too_big).is_err());
    let line = base64::engine::general_purpose::STANDARD.encode(b"i\xff\xff\xff\xff");
    assert_eq!(
        Format::Marshal.decode(line.as_bytes()).expect("-1"),
        serde_json::json!(-1)
    );
}
