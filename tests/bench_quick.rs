//! The benchmark runs (`--quick`) and its JSON holds every measure, each
//! with its fields. No timing is asserted here: numbers live in the bench.

mod common;

use std::process::Command;
use std::time::Duration;

// The report is plain JSON: read it with serde_json, not miniray's Value.
use serde_json::Value;

#[test]
fn bench_quick_writes_every_field() {
    let bench = common::example("bench");
    let out = std::env::temp_dir().join(format!("miniray-bench-{}.json", std::process::id()));
    let mut child = Command::new(&bench)
        .args(["--quick", "--json"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("bench example (built by cargo test)");
    let status = common::wait_child(&mut child, Duration::from_secs(600));

    assert!(status.success(), "bench exited {status:?}");
    let text = std::fs::read_to_string(&out).expect("JSON written");
    let _ = std::fs::remove_file(&out);
    let report: Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(report["machine"]["cpus"].as_u64().is_some_and(|n| n > 0));
    let rows = report["rows"].as_array().expect("rows");
    for row in rows {
        for field in [
            "group", "name", "unit", "median", "p99", "floor", "ratio", "target", "met",
        ] {
            assert!(row.get(field).is_some(), "row {row} lacks {field}");
        }
        assert!(row["median"].as_f64().is_some_and(f64::is_finite), "{row}");
    }
    let has = |group: &str, name_part: &str| {
        rows.iter().any(|r| {
            r["group"] == group && r["name"].as_str().is_some_and(|n| n.contains(name_part))
        })
    };
    for (group, part) in [
        ("floor", "socketpair ping-pong"),
        ("floor", "zero codec json 1 KB dict"),
        ("floor", "zero codec marshal 1 KB dict"),
        ("floor", "zero codec json 100k floats"),
        ("floor", "zero codec marshal 100k floats"),
        ("floor", "raw memfd + SCM_RIGHTS"),
        ("round trip", "local json {\"test\":123} vs floor"),
        ("round trip", "local marshal {\"test\":123} vs floor"),
        ("round trip", "local json 1 KB dict Value"),
        ("round trip", "local json 1 KB dict struct"),
        ("round trip", "local marshal 1 KB dict Value"),
        ("round trip", "local marshal 1 KB dict struct"),
        ("round trip", "tcp marshal 1 KB dict"),
        ("round trip", "local json 100k floats Value"),
        ("round trip", "local json 100k floats Vec<f64>"),
        ("round trip", "local marshal 100k floats Value"),
        ("round trip", "local marshal 100k floats Vec<f64>"),
        ("round trip", "marshal vs json speedup 100k Value"),
        ("round trip", "marshal vs json speedup 100k Vec<f64>"),
        ("pipelined", "N=16"),
        ("pipelined", "N=16 absolute, per-reply writes (default)"),
        ("pipelined", "N=16 absolute, batched replies"),
        (
            "pipelined",
            "N=16 absolute, sends written through (no Batch)",
        ),
        ("spawn", "spawn per worker"),
        ("spawn", "teardown per worker"),
        ("memory", "parent heap bytes per idle worker"),
        ("memory", "child PSS"),
        ("wait_any", "N=10"),
        ("framing", "16-byte lines"),
        ("framing", "1024-byte lines"),
        ("shm", "region handoff 4 KiB"),
        ("auth", "tcp marshal [123.0] plain"),
        ("auth", "tcp marshal [123.0] tagged"),
        ("auth", "tcp marshal [123.0] encrypted"),
        ("auth", "tcp marshal 100k floats Vec<f64> tagged"),
        ("auth", "tcp marshal 100k floats Vec<f64> encrypted"),
    ] {
        assert!(has(group, part), "missing {group}: {part}");
    }
    // Codec MB/s: both directions, both formats, typed and Value, both payloads.
    for what in ["encode", "decode"] {
        for format in ["json", "marshal"] {
            for payload in [
                "1 KB dict struct",
                "1 KB dict Value",
                "100k floats Vec<f64>",
                "100k floats Value",
            ] {
                let part = format!("{what} {format} {payload}");
                assert!(has("codec", &part), "missing codec: {part}");
            }
            // Peak memory of decoding a large line, typed and Value, both ways.
            for how in ["decode", "recv"] {
                for kind in ["Vec<f64>", "Value"] {
                    let (pre, post) = (format!("{how} {format} "), format!(" line to {kind}"));
                    assert!(
                        rows.iter().any(|r| {
                            r["group"] == "memory"
                                && r["name"]
                                    .as_str()
                                    .is_some_and(|n| n.starts_with(&pre) && n.ends_with(&post))
                        }),
                        "missing memory: {pre}... {post}"
                    );
                }
            }
        }
    }
    // The rows with a target say whether it was met.
    for row in rows.iter().filter(|r| r["target"] != "") {
        assert!(row["met"].is_boolean(), "{row}");
    }
    // Rows with a floor carry their ratio.
    for row in rows.iter().filter(|r| r["floor"].is_number()) {
        assert!(row["ratio"].as_f64().is_some_and(f64::is_finite), "{row}");
    }
}
