//! Both formats against the machine's real `python3`, both directions,
//! every Python type `Value` models: Python's marshal and JSON decoded into
//! `Value` (and into typed Rust values), compared type-exactly with the
//! original; `Value`s encoded by miniray read back by Python, compared the
//! same way; miniray's JSON byte-identical to `json.dumps`. The vectors are
//! made by Python at test time, not stored.

mod common;
#[path = "common/pyvalues.rs"]
mod pyvalues;

use miniray::{DecodeErrorKind, Error, Format, Value};
use pyvalues::{python, tag};

const GEN: &str = r#"
def json_text(v):
    try:
        return json.dumps(v)
    except (TypeError, ValueError):
        return None

for name, v in CASES:
    text = json_text(v)
    row = [name, tag_text(v), base64.b64encode(marshal.dumps(v)).decode()]
    if text is None:
        row += ["-", "-"]
    else:
        row += [text, tag_text(json.loads(text))]
    print("\t".join(row))
"#;

const CHECK: &str = r#"
n = 0
for raw in sys.stdin:
    fmt, want, line = raw.rstrip("\n").split("\t")
    got = json.loads(line) if fmt == "json" else marshal.loads(base64.b64decode(line, validate=True))
    if tag_text(got) != want:
        print("MISMATCH %s %s %r" % (fmt, want[:300], got)[:800])
        sys.exit(1)
    n += 1
print("checked %d" % n)
"#;

struct Row {
    name: String,
    tag: serde_json::Value,
    marshal: String,
    json: Option<(String, serde_json::Value)>,
}

fn rows() -> Vec<Row> {
    python(GEN, &[], "")
        .lines()
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 5, "{}", &line[..line.len().min(200)]);
            let parse = |t: &str| serde_json::from_str(t).expect("tag json");
            Row {
                name: cols[0].to_owned(),
                tag: parse(cols[1]),
                marshal: cols[2].to_owned(),
                json: (cols[3] != "-").then(|| (cols[3].to_owned(), parse(cols[4]))),
            }
        })
        .collect()
}

#[test]
fn every_python_value_round_trips_exactly_in_both_formats() {
    let rows = rows();
    assert_eq!(rows.len(), 22, "cases");
    let mut back = String::new();
    let mut json_rows = 0;
    for row in &rows {
        let name = &row.name;
        let from_marshal: Value = Format::Marshal
            .decode(row.marshal.as_bytes())
            .unwrap_or_else(|e| panic!("{name}: marshal decode: {e}"));
        assert_eq!(tag(&from_marshal), row.tag, "{name}: marshal decode");
        let ours = Format::Marshal
            .encode(&from_marshal)
            .expect("marshal encode");
        let ours = std::str::from_utf8(&ours).expect("base64 is ascii");
        back.push_str(&format!("marshal\t{}\t{}", row.tag, ours));

        let encoded = Format::Json.encode(&from_marshal);
        match &row.json {
            Some((text, json_tag)) => {
                json_rows += 1;
                // The exact value written as JSON is what json.dumps wrote.
                let encoded = encoded.unwrap_or_else(|e| panic!("{name}: json encode: {e}"));
                assert_eq!(
                    std::str::from_utf8(&encoded).expect("ascii"),
                    format!("{text}\n"),
                    "{name}: byte-identical to json.dumps"
                );
                let from_json: Value = Format::Json
                    .decode(text.as_bytes())
                    .unwrap_or_else(|e| panic!("{name}: json decode: {e}"));
                assert_eq!(tag(&from_json), *json_tag, "{name}: json decode");
                let again = Format::Json.encode(&from_json).expect("json encode");
                assert_eq!(again, encoded, "{name}: json round trip");
                back.push_str(&format!(
                    "json\t{json_tag}\t{}",
                    std::str::from_utf8(&again).expect("ascii")
                ));
            }
            // Python's json.dumps raised TypeError: so must we.
            None => match encoded {
                Err(Error::Encode { format, reason }) => {
                    assert_eq!(format, Format::Json);
                    assert!(!reason.is_empty(), "{name}");
                }
                other => panic!("{name}: json encode should fail, got {other:?}"),
            },
        }
    }
    assert_eq!(json_rows, 17, "rows Python's json could write");
    let checked = python(CHECK, &[], &back);
    assert_eq!(
        checked.trim(),
        format!("checked {}", rows.len() + json_rows)
    );
}

#[test]
fn typed_rust_values_decode_from_python_and_refuse_what_does_not_fit() {
    let rows = rows();
    let line = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("case {name}"))
            .marshal
            .clone()
    };
    let ints: Vec<i128> = Format::Marshal
        .decode(line("wide ints").as_bytes())
        .expect("i128s");
    let want: Vec<i128> = vec![
        1 << 31,
        -(1 << 31) - 1,
        (1 << 63) - 1,
        1 << 63,
        -(1 << 63),
        -(1 << 63) - 1,
        1 << 64,
        1 << 100,
        -(1 << 100),
    ];
    assert_eq!(ints, want);
    let pairs: Vec<(i64, String)> = Format::Marshal
        .decode(line("lists of tuples").as_bytes())
        .expect("pairs");
    assert_eq!(pairs, [(1, "a".to_owned()), (2, "b".to_owned())]);
    let floats: Vec<f64> = Format::Marshal
        .decode(line("non-finite floats").as_bytes())
        .expect("floats");
    assert!(floats[0].is_nan() && floats[1] == f64::INFINITY && floats[2] == f64::NEG_INFINITY);
    let top: (i64, f64, String, Option<u8>) = Format::Marshal
        .decode(line("top-level tuple").as_bytes())
        .expect("tuple");
    assert_eq!(top, (1, 2.5, "x".to_owned(), None));
    // What no such Rust type holds fails with a decode error, not a panic
    // or a wrong value.
    for (case, what) in [("huge ints", "i128"), ("lone surrogates", "String")] {
        let e = if what == "i128" {
            Format::Marshal
                .decode::<Vec<i128>>(line(case).as_bytes())
                .map(drop)
        } else {
            Format::Marshal
                .decode::<Vec<String>>(line(case).as_bytes())
                .map(drop)
        }
        .expect_err(case);
        assert_eq!(e.format, Format::Marshal, "{case}");
    }
    let e = Format::Marshal
        .decode::<Vec<String>>(line("small ints").as_bytes())
        .expect_err("ints are no strings");
    assert!(matches!(e.kind, DecodeErrorKind::Mismatch(_)), "{e}");
}

const BAD: &str = r#"
sys.set_int_max_str_digits(4300)  # CPython's default (the cases raised it)
def bad_marshal():
    cyc = []
    cyc.append(cyc)
    yield "cycle", marshal.dumps(cyc)
    yield "trailing", marshal.dumps(1) + b"N"
    yield "unknown code", b"\x01"
    yield "truncated", marshal.dumps([1, 2, 3])[:-2]
    yield "code object", marshal.dumps(compile("1", "f", "eval"))
for name, data in bad_marshal():
    print("marshal\t%s\t%s" % (name, base64.b64encode(data).decode()))
for name, text in [("too many digits", "1" * 4301), ("unfinished", "[1,"), ("lowercase nan", "nan"),
                   ("missing colon", '{"a" 1}'), ("unterminated", '"\\ud800'), ("single quotes", "'a'")]:
    try:
        json.loads(text)
        print("python accepted " + name)
        sys.exit(1)
    except ValueError:
        pass
    print("json\t%s\t%s" % (name, text))
"#;

#[test]
fn what_python_refuses_is_refused_with_a_reason() {
    let out = python(BAD, &[], "");
    let mut n = 0;
    for row in out.lines() {
        let cols: Vec<&str> = row.split('\t').collect();
        let (format, name, line) = (cols[0], cols[1], cols[2]);
        let format: Format = format.parse().expect("format");
        let e = format.decode::<Value>(line.as_bytes()).expect_err(name);
        let expected = match name {
            "cycle" => matches!(e.kind, DecodeErrorKind::UnfinishedReference(_)),
            "trailing" => matches!(e.kind, DecodeErrorKind::TrailingBytes),
            "unknown code" => matches!(e.kind, DecodeErrorKind::UnknownCode(1)),
            "truncated" => matches!(e.kind, DecodeErrorKind::UnexpectedEnd),
            "code object" => matches!(
                e.kind,
                DecodeErrorKind::UnknownCode(_) | DecodeErrorKind::Unsupported(_)
            ),
            "too many digits" => matches!(e.kind, DecodeErrorKind::IntTooLarge),
            _ => matches!(e.kind, DecodeErrorKind::Syntax(_)),
        };
        assert!(expected, "{name}: {e:?}");
        assert!(!e.to_string().is_empty());
        n += 1;
    }
    assert_eq!(n, 11);
}
