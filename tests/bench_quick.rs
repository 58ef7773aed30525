//! The benchmark runs (`--quick`) and its JSON holds every measure, each
//! with its fields. No timing is asserted here: numbers live in the bench.

mod common;

use std::process::Command;
use std::time::Duration;

use miniray::serde_json::{self, Value};

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
        ("floor", "raw memfd + SCM_RIGHTS"),
        ("round trip", "local json {\"test\":123}"),
        ("round trip", "tcp marshal 1 KB dict"),
        ("round trip", "local marshal 100k floats"),
        ("pipelined", "N=16"),
        ("spawn", "spawn per worker"),
        ("spawn", "teardown per worker"),
        ("memory", "parent heap bytes per idle worker"),
        ("memory", "child PSS"),
        ("wait_any", "N=10"),
        ("framing", "16-byte lines"),
        ("framing", "1024-byte lines"),
        ("codec", "decode marshal 100k floats"),
        ("shm", "region handoff 4 KiB"),
    ] {
        assert!(has(group, part), "missing {group}: {part}");
    }
    // Rows with a floor carry their ratio.
    for row in rows.iter().filter(|r| r["floor"].is_number()) {
        assert!(row["ratio"].as_f64().is_some_and(f64::is_finite), "{row}");
    }
}
