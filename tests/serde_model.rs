//! The message model from a user's side: typed messages through both
//! formats and real workers, `Value` nested in typed messages staying
//! exact, serde features that need `deserialize_any` (flatten, untagged
//! enums), decode errors that say where, and no serde_json feature forced
//! on the user's build.

mod common;

use std::collections::{BTreeMap, HashSet};

use common::DEADLINE;
use miniray::{DecodeErrorKind, Error, Format, Reactor, Value, WorkerOptions};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Job {
    id: u64,
    name: String,
    weights: Vec<f64>,
    tags: HashSet<String>,
    shape: (u32, u32),
    parent: Option<Box<Job>>,
    kind: Kind,
    extra: BTreeMap<i64, String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Kind {
    Plain,
    Retry(u8),
    Split { parts: u16 },
}

fn job(id: u64) -> Job {
    Job {
        id,
        name: format!("job é {id}"),
        weights: vec![0.1, -0.0, 1e300, f64::MIN_POSITIVE],
        tags: ["a".to_owned(), "b".to_owned()].into(),
        shape: (3, 4),
        parent: (id > 0).then(|| Box::new(job(id - 1))),
        kind: match id % 3 {
            0 => Kind::Plain,
            1 => Kind::Retry(7),
            _ => Kind::Split { parts: 9 },
        },
        extra: [(-1, "minus".to_owned()), (1 << 40, "big".to_owned())].into(),
    }
}

#[test]
fn typed_messages_round_trip_through_workers_in_both_formats() {
    for format in [Format::Json, Format::Marshal] {
        let mut r = Reactor::new().expect("reactor");
        let opts = WorkerOptions::new().format(format);
        let w = r
            .spawn_with(&opts, |mut j: Job| {
                j.id += 100;
                j
            })
            .expect("spawn");
        for id in 0..4 {
            r.send(w, &job(id)).expect("send");
        }
        for id in 0..4 {
            let back: Job = r.recv(w, Some(DEADLINE)).expect("reply");
            let mut want = job(id);
            want.id += 100;
            assert_eq!(back, want, "{format}");
        }
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Envelope {
    id: u32,
    payload: Value,
}

#[test]
fn a_value_inside_a_typed_message_stays_exact() {
    let payload = Value::Tuple(vec![
        Value::Bytes(b"\x00raw".to_vec()),
        Value::Set([Value::Int(1)].into_iter().collect()),
        Value::Complex { re: 1.0, im: -2.0 },
        Value::Float(f64::NAN),
        Value::from_code_points([0x61, 0xD800]).expect("str"),
        Value::from_bigint(num_bigint::BigInt::from(1u8) << 200usize),
    ]);
    let msg = Envelope { id: 7, payload };
    let line = Format::Marshal.encode(&msg).expect("encode");
    let back: Envelope = Format::Marshal
        .decode(&line[..line.len() - 1])
        .expect("decode");
    assert_eq!(back, msg);
    // JSON has no bytes, sets or complex: refused at encode, naming the type.
    match Format::Json.encode(&msg) {
        Err(Error::Encode { format, reason }) => {
            assert_eq!(format, Format::Json);
            assert!(reason.contains("bytes"), "{reason}");
        }
        other => panic!("expected an encode error, got {other:?}"),
    }
    let json_msg = Envelope {
        id: 8,
        payload: Value::Tuple(vec![
            Value::Float(f64::INFINITY),
            Value::from_bigint(num_bigint::BigInt::from(-3i8) << 300usize),
            Value::from_code_points([0xDFFF]).expect("str"),
        ]),
    };
    let line = Format::Json.encode(&json_msg).expect("encode");
    let back: Envelope = Format::Json
        .decode(&line[..line.len() - 1])
        .expect("decode");
    // A tuple is written as a JSON array and read back as a list, as in Python.
    let Value::Tuple(items) = &json_msg.payload else {
        unreachable!()
    };
    assert_eq!(back.payload, Value::List(items.clone()));
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Flat {
    id: u32,
    #[serde(flatten)]
    rest: BTreeMap<String, f64>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(untagged)]
enum Either {
    Pair(i64, String),
    Named { x: f64, y: f64 },
    Word(String),
}

#[test]
fn flatten_and_untagged_enums_work_in_both_formats() {
    let flat = Flat {
        id: 1,
        rest: [("a".to_owned(), 2.5), ("b".to_owned(), -1.0)].into(),
    };
    let eithers = [
        Either::Pair(3, "x".into()),
        Either::Named { x: 1.5, y: 2.0 },
        Either::Word("w".into()),
    ];
    for format in [Format::Json, Format::Marshal] {
        let line = format.encode(&flat).expect("encode");
        let back: Flat = format.decode(&line[..line.len() - 1]).expect("flatten");
        assert_eq!(back, flat, "{format}");
        for e in &eithers {
            let line = format.encode(e).expect("encode");
            let back: Either = format.decode(&line[..line.len() - 1]).expect("untagged");
            assert_eq!(&back, e, "{format}");
        }
    }
}

#[test]
fn a_message_that_does_not_fit_fails_alone_and_says_why() {
    for format in [Format::Json, Format::Marshal] {
        let mut r = Reactor::new().expect("reactor");
        let w = r
            .spawn_with(&WorkerOptions::new().format(format), |v: Value| v)
            .expect("spawn");
        r.send(w, &job(0)).expect("send");
        r.send(w, &"not a job").expect("send");
        r.send(w, &job(1)).expect("send");
        let first: Job = r.recv(w, Some(DEADLINE)).expect("a job");
        assert_eq!(first, job(0));
        match r.recv::<Job>(w, Some(DEADLINE)) {
            Err(Error::Decode(e)) => {
                assert!(matches!(e.kind, DecodeErrorKind::Mismatch(_)), "{e}");
                let text = e.to_string();
                assert!(
                    text.contains("not a job") || text.contains("string"),
                    "{text}"
                );
            }
            other => panic!("{format}: expected a decode error, got {other:?}"),
        }
        // The next message is unaffected; the same line may be read as
        // another type.
        let third: Job = r.recv(w, Some(DEADLINE)).expect("the next job");
        assert_eq!(third, job(1));
    }
}

#[test]
fn serde_json_in_the_users_build_keeps_its_own_behaviour() {
    // No preserve_order forced on the user: serde_json's default map sorts.
    let text = serde_json::json!({"b": 1, "a": 2}).to_string();
    assert_eq!(text, r#"{"a":2,"b":1}"#);
    // No arbitrary_precision: numbers are plain numbers, so flatten works
    // with serde_json too (arbitrary_precision breaks it).
    let flat: Flat = serde_json::from_str(r#"{"id": 1, "a": 2.5, "b": -1.0}"#).expect("flatten");
    assert_eq!(flat.rest["a"], 2.5);
    // arbitrary_precision would keep 1e400 as text; plain serde_json refuses it.
    assert!(serde_json::from_str::<serde_json::Value>("1e400").is_err());
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // read only through Debug: the test is about the error
struct Batch {
    id: u32,
    jobs: Vec<Named>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Named {
    name: String,
}

#[test]
fn a_mismatch_names_where_it_is() {
    let bad = miniray::py!({"id": 1, "jobs": [{"name": "a"}, {"name": 5}]});
    for format in [Format::Json, Format::Marshal] {
        let mut r = Reactor::new().expect("reactor");
        let w = r
            .spawn_with(&WorkerOptions::new().format(format), |v: Value| v)
            .expect("spawn");
        r.send(w, &bad).expect("send");
        match r.recv::<Batch>(w, Some(DEADLINE)) {
            Err(Error::Decode(e)) => {
                let DecodeErrorKind::Mismatch(m) = &e.kind else {
                    panic!("{format}: {e}");
                };
                assert!(m.ends_with(" at jobs[1].name"), "{format}: {m}");
                assert!(m.contains("integer `5`"), "{format}: {m}");
            }
            other => panic!("{format}: expected a decode error, got {other:?}"),
        }
        // At the top there is no path to name.
        r.send(w, &"text").expect("send");
        match r.recv::<Batch>(w, Some(DEADLINE)) {
            Err(Error::Decode(e)) => match &e.kind {
                DecodeErrorKind::Mismatch(m) => assert!(!m.contains(" at "), "{m}"),
                _ => panic!("{format}: {e}"),
            },
            other => panic!("{format}: expected a decode error, got {other:?}"),
        }
    }
    let e = miniray::value::from_value::<Batch>(bad).expect_err("name 5");
    assert!(e.message().ends_with(" at jobs[1].name"), "{e}");
}
