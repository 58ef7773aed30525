//! The Python worker helper (`python/miniray_worker.py`) as a real child of
//! `python3`, driven with raw lines: plain JSON and marshal requests, frames
//! (`#q` answered `#r`/`#e` with the exception's type and traceback, `#c`
//! answered `#k` with a raising item failing alone), hello and accept, the
//! unasked accept under `MINIRAY_FRAMES=1`, over-long and malformed lines,
//! a `print` (and a subprocess's output) kept off the protocol, serving
//! going on after each error; and the same helper as a `Reactor::spawn_exec`
//! worker in both formats. Every read has a deadline and every child is
//! killed and reaped when its test ends.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use miniray::{py, Error, Exec, Format, Reactor, Value, WorkerOptions};

/// The work function the tests serve: ints doubled, `{"raise": msg}`
/// raises `ValueError(msg)`, `"print"` prints to stdout (from Python and
/// from a subprocess) before answering, `"unencodable"` returns what no
/// format encodes. `TEST_FORMAT_ARG` is passed as `serve`'s format and
/// `MAX_LINE` as its line limit.
const SCRIPT: &str = r#"
import os, subprocess, sys
from miniray_worker import serve

def work(x):
    if isinstance(x, dict) and "raise" in x:
        raise ValueError(x["raise"])
    if x == "print":
        print("a stray print")
        sys.stdout.flush()
        subprocess.run(["echo", "a subprocess's output"], check=True)
        return "printed"
    if x == "unencodable":
        return object()
    return 2 * x

serve(work, os.environ.get("TEST_FORMAT_ARG"), max_line=int(os.environ.get("MAX_LINE", 1 << 26)))
"#;

fn python_dir() -> String {
    format!("{}/python", env!("CARGO_MANIFEST_DIR"))
}

/// The helper as a child with piped stdin, stdout and stderr; stdout is
/// read line by line on a thread, so each read can have a deadline.
struct Helper {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Vec<u8>>,
}

impl Helper {
    fn start(env: &[(&str, &str)]) -> Helper {
        Self::start_with("python3", env)
    }

    fn start_with(python: &str, env: &[(&str, &str)]) -> Helper {
        let mut cmd = Command::new(python);
        cmd.args(["-c", SCRIPT])
            .env("PYTHONPATH", python_dir())
            .env_remove("MINIRAY_FORMAT")
            .env_remove("MINIRAY_FRAMES")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("python3");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Helper {
            child,
            stdin,
            lines,
        }
    }

    fn send(&mut self, line: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line).expect("write");
        stdin.write_all(b"\n").expect("write");
        stdin.flush().expect("flush");
    }

    /// The next line the helper wrote, without its newline.
    fn line(&self) -> Vec<u8> {
        let mut line = self
            .lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("no line from the helper within {DEADLINE:?}"));
        assert_eq!(
            line.pop(),
            Some(b'\n'),
            "{}",
            String::from_utf8_lossy(&line)
        );
        line
    }

    fn text(&self) -> String {
        String::from_utf8(self.line()).expect("UTF-8")
    }

    fn json(&self) -> serde_json::Value {
        let line = self.line();
        serde_json::from_slice(&line)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&line)))
    }

    /// A framed line's kind, id and payload (as JSON).
    fn frame(&self) -> (u8, u64, serde_json::Value) {
        let line = self.line();
        let (h, payload) = miniray::frame::parse(&line)
            .expect("well-formed")
            .unwrap_or_else(|| panic!("plain: {}", String::from_utf8_lossy(&line)));
        let payload = serde_json::from_slice(payload).expect("JSON payload");
        (h.kind.byte(), h.id, payload)
    }

    /// Closes stdin and waits (bounded) for the exit; returns the exit
    /// code, what stdout still held and stderr.
    fn finish(mut self) -> (Option<i32>, Vec<Vec<u8>>, String) {
        drop(self.stdin.take());
        let status = wait_child(&mut self.child, DEADLINE);
        // Everything the reader thread still gets until stdout's end (the
        // exit says nothing of what is still in flight to it).
        let mut rest: Vec<Vec<u8>> = Vec::new();
        loop {
            match self.lines.recv_timeout(DEADLINE) {
                Ok(line) => rest.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("stdout never ended"),
            }
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err).expect("stderr");
        }
        (status, rest, err)
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child's exit code once it exits (killed at the deadline otherwise).
fn wait_child(child: &mut Child, within: Duration) -> Option<i32> {
    let mut code = None;
    let exited = wait_until(within, || match child.try_wait() {
        Ok(Some(s)) => {
            code = s.code();
            true
        }
        _ => false,
    });
    assert!(exited, "the helper did not exit within {within:?}");
    code
}

fn remote_error(v: &serde_json::Value) -> (&str, &str) {
    let e = &v["miniray.error"];
    (
        e["kind"].as_str().expect("kind"),
        e["message"].as_str().expect("message"),
    )
}

#[test]
fn plain_json_lines_are_answered_in_order_and_an_exception_is_a_reply() {
    let mut h = Helper::start(&[]);
    h.send(b"5");
    h.send(br#"{"raise": "bad input"}"#);
    h.send(b"7");
    h.send(b"not json");
    h.send(b"8");
    assert_eq!(h.text(), "10");
    assert_eq!(remote_error(&h.json()), ("ValueError", "bad input"));
    assert_eq!(h.text(), "14", "serving goes on after an exception");
    let decode = h.json();
    assert_eq!(remote_error(&decode).0, "decode");
    assert_eq!(h.text(), "16");
    let (code, rest, err) = h.finish();
    assert_eq!(code, Some(0), "stdin's end ends the worker: {err}");
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        err.contains("ValueError: bad input"),
        "the traceback goes to stderr: {err}"
    );
}

#[test]
fn plain_marshal_lines_in_either_way_of_choosing_the_format() {
    let m = Format::Marshal;
    for env in [
        &[("MINIRAY_FORMAT", "marshal")][..],
        // The argument wins over the environment.
        &[("MINIRAY_FORMAT", "json"), ("TEST_FORMAT_ARG", "marshal")][..],
    ] {
        let mut h = Helper::start(env);
        for req in [py!(21), py!({"raise": "no"}), py!((1, 2)), py!(4)] {
            let line = m.encode(&req).expect("encode");
            h.send(&line[..line.len() - 1]);
        }
        assert_eq!(m.decode::<Value>(&h.line()).expect("reply"), py!(42));
        let err: Value = m.decode(&h.line()).expect("error reply");
        assert_eq!(
            err,
            py!({"miniray.error": {"kind": "ValueError", "message": "no"}})
        );
        // 2 * (1, 2) is Python's (1, 2, 1, 2): a tuple, in marshal.
        assert_eq!(
            m.decode::<Value>(&h.line()).expect("reply"),
            py!((1, 2, 1, 2))
        );
        assert_eq!(m.decode::<Value>(&h.line()).expect("reply"), py!(8));
        assert_eq!(h.finish().0, Some(0));
    }
}

#[test]
fn framed_requests_are_answered_by_id_and_errors_carry_type_and_traceback() {
    let mut h = Helper::start(&[]);
    h.send(b"#q17 5");
    h.send(br#"#q18 {"raise": "boom"}"#);
    h.send(b"#q18446744073709551615 1");
    h.send(b"#q19 [1");
    h.send(b"#q20 \"unencodable\"");
    h.send(b"3");
    assert_eq!(h.frame(), (b'r', 17, serde_json::json!(10)));
    let (kind, id, e) = h.frame();
    assert_eq!((kind, id), (b'e', 18));
    assert_eq!(e[0], "ValueError");
    assert_eq!(e[1], "boom");
    let tb = e[2].as_str().expect("traceback");
    assert!(
        tb.starts_with("Traceback") && tb.contains("ValueError: boom"),
        "{tb}"
    );
    assert_eq!(h.frame(), (b'r', u64::MAX, serde_json::json!(2)));
    let (kind, id, e) = h.frame();
    assert_eq!((kind, id, &e[0]), (b'e', 19, &serde_json::json!("decode")));
    let (kind, id, e) = h.frame();
    assert_eq!((kind, id, &e[0]), (b'e', 20, &serde_json::json!("encode")));
    assert_eq!(h.text(), "6", "a plain line is answered plainly");
    assert_eq!(h.finish().0, Some(0));
}

#[test]
fn a_chunk_answers_every_item_and_a_failing_item_fails_alone() {
    let mut h = Helper::start(&[]);
    h.send(br#"#c5 [1, {"raise": "item 1"}, 3, "unencodable", 5]"#);
    h.send(b"#c6 []");
    h.send(b"#c7 {\"not\": \"a list\"}");
    let (kind, id, k) = h.frame();
    assert_eq!((kind, id), (b'k', 5));
    assert_eq!(k[0], serde_json::json!([2, 6, 10]));
    assert_eq!(k[1][0], serde_json::json!([1, "ValueError", "item 1"]));
    assert_eq!(k[1][1][0], 3);
    assert_eq!(k[1][1][1], "encode");
    assert_eq!(k[1].as_array().map(Vec::len), Some(2));
    assert!(k[2].as_u64().is_some(), "nanos: {}", k[2]);
    assert_eq!(
        h.frame(),
        (b'k', 6, serde_json::json!([[], [], 0])),
        "an empty chunk"
    );
    let (kind, id, e) = h.frame();
    assert_eq!((kind, id, &e[0]), (b'e', 7, &serde_json::json!("decode")));
    assert_eq!(h.finish().0, Some(0));
}

#[test]
fn prints_and_subprocess_output_never_reach_the_protocol() {
    let mut h = Helper::start(&[]);
    h.send(b"\"print\"");
    h.send(b"#q1 \"print\"");
    h.send(b"2");
    assert_eq!(h.text(), "\"printed\"");
    assert_eq!(h.frame(), (b'r', 1, serde_json::json!("printed")));
    assert_eq!(h.text(), "4");
    let (code, rest, err) = h.finish();
    assert_eq!(code, Some(0));
    assert!(rest.is_empty(), "stdout held more: {rest:?}");
    assert_eq!(err.matches("a stray print").count(), 2, "{err}");
    assert_eq!(err.matches("a subprocess's output").count(), 2, "{err}");
}

#[test]
fn hello_is_accepted_and_plain_lines_stay_plain() {
    let mut h = Helper::start(&[]);
    h.send(b"#h0 miniray/1");
    h.send(b"1");
    assert_eq!(h.text(), "#a0 miniray/1");
    assert_eq!(h.text(), "2");
    assert_eq!(h.finish().0, Some(0));
}

#[test]
fn miniray_frames_1_writes_the_accept_first_unasked() {
    let mut h = Helper::start(&[("MINIRAY_FRAMES", "1")]);
    // Read before anything is sent: the line comes unasked.
    assert_eq!(h.line(), miniray::frame::ACCEPT);
    h.send(b"#q4 21");
    assert_eq!(h.frame(), (b'r', 4, serde_json::json!(42)));
    assert_eq!(h.finish().0, Some(0));

    // Any other value: nothing unasked.
    let mut h = Helper::start(&[("MINIRAY_FRAMES", "0")]);
    h.send(b"1");
    assert_eq!(h.text(), "2");
    assert_eq!(h.finish().0, Some(0));
}

#[test]
fn an_over_long_line_is_answered_and_dropped_up_to_its_newline() {
    let mut h = Helper::start(&[("MAX_LINE", "64")]);
    // Exactly the limit is a line; one past it is not.
    h.send(b"[]");
    h.send(format!("{}{}", " ".repeat(64 - 2), "21").as_bytes());
    h.send(format!("{}{}", " ".repeat(64 - 1), "21").as_bytes());
    // 4 MiB without a newline until its end, read in bounded pieces.
    let mut long = b"#q9 [".to_vec();
    long.resize(4 << 20, b'1');
    h.send(&long);
    h.send(&vec![b'x'; 100_000]);
    h.send(b"5");
    assert_eq!(h.text(), "[]");
    assert_eq!(h.text(), "42", "a line of exactly the limit is read");
    let plain = h.json();
    assert_eq!(remote_error(&plain).0, "line too long");
    assert!(remote_error(&plain).1.contains("64-byte"), "{plain}");
    let (kind, id, e) = h.frame();
    assert_eq!(
        (kind, id, &e[0]),
        (b'e', 9, &serde_json::json!("line too long")),
        "a framed request is answered in kind"
    );
    assert_eq!(remote_error(&h.json()).0, "line too long");
    assert_eq!(h.text(), "10", "serving goes on after the dropped lines");
    assert_eq!(h.finish().0, Some(0));
}

#[test]
fn malformed_frames_get_a_plain_error_naming_them() {
    let mut h = Helper::start(&[]);
    let bad: [(&[u8], &str); 6] = [
        (b"#", "no kind"),
        (b"#x1 2", "unknown kind"),
        (b"#q01 2", "id not in canonical decimal"),
        (b"#q18446744073709551616 2", "id past 2^64 - 1"),
        (b"#h0 miniray/2", "hello or accept of another protocol"),
        (b"#r5 1", "not a request"),
    ];
    for (line, _) in bad {
        h.send(line);
    }
    h.send(b"1");
    for (line, reason) in bad {
        let v = h.json();
        let (kind, message) = remote_error(&v);
        assert_eq!(kind, "bad frame");
        assert!(
            message.contains(reason) && message.contains(&*String::from_utf8_lossy(line)),
            "{message}"
        );
    }
    assert_eq!(h.text(), "2");
    assert_eq!(h.finish().0, Some(0));
}

#[test]
fn as_a_spawn_exec_worker_in_both_formats() {
    for format in [Format::Json, Format::Marshal] {
        let mut r = Reactor::new().expect("reactor");
        let prog = Exec::new("python3", ["-c", SCRIPT])
            .and_then(|p| p.env("PYTHONPATH", python_dir()))
            .and_then(|p| p.env("MINIRAY_FORMAT", format.to_string()))
            .expect("exec");
        let w = r
            .spawn_exec(&WorkerOptions::new().format(format), &prog)
            .expect("spawn");
        for req in [py!(1), py!({"raise": "odd"}), py!("print"), py!(4)] {
            r.send(w, &req).expect("send");
        }
        assert_eq!(r.recv::<Value>(w, Some(DEADLINE)).expect("reply"), py!(2));
        match r.recv::<Value>(w, Some(DEADLINE)) {
            Err(Error::Remote { kind, message }) => {
                assert_eq!((kind.as_str(), message.as_str()), ("ValueError", "odd"))
            }
            other => panic!("{format}: {other:?}"),
        }
        assert_eq!(
            r.recv::<Value>(w, Some(DEADLINE)).expect("reply"),
            py!("printed")
        );
        assert_eq!(r.recv::<Value>(w, Some(DEADLINE)).expect("reply"), py!(8));
        r.close(w).expect("close");
        match r.recv::<Value>(w, Some(DEADLINE)) {
            Err(Error::Closed { status }) => {
                assert!(status.is_some_and(|s| s.success()), "{status:?}")
            }
            other => panic!("{format}: {other:?}"),
        }
    }
}

#[test]
fn runs_on_python_3_8_when_present() {
    // The helper promises Python 3.8; run it there when this machine has one.
    let found = Command::new("python3.8")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("skipped: no python3.8 on PATH");
        return;
    }
    let mut h = Helper::start_with("python3.8", &[("MINIRAY_FRAMES", "1")]);
    assert_eq!(h.line(), miniray::frame::ACCEPT);
    h.send(b"#c1 [1, {\"raise\": \"x\"}]");
    h.send(b"\"print\"");
    let (kind, id, k) = h.frame();
    assert_eq!((kind, id, &k[0]), (b'k', 1, &serde_json::json!([2])));
    assert_eq!(h.text(), "\"printed\"");
    assert_eq!(h.finish().0, Some(0));
}

#[test]
fn the_readme_worker_runs_under_pool_exec() {
    // The README's Python block, as written there, run as its Rust block
    // runs it.
    let readme = std::fs::read_to_string(format!("{}/README.md", env!("CARGO_MANIFEST_DIR")))
        .expect("README");
    let section = readme
        .split("\n## Python workers\n")
        .nth(1)
        .expect("a Python workers section");
    let script = section
        .split("```python\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a Python block");
    assert!(script.lines().count() <= 12, "a short example:\n{script}");
    let dir = std::env::temp_dir().join(format!("miniray-readme-worker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("worker.py");
    std::fs::write(&path, script).expect("worker.py");
    let program = Exec::new("python3", [&path])
        .and_then(|p| p.env("PYTHONPATH", python_dir()))
        .expect("exec");
    let opts = miniray::PoolOptions::new().workers(2);
    let mut pool: miniray::Pool<Value, Value> = miniray::Pool::exec(&opts, &program).expect("pool");
    let results: Vec<_> = pool
        .map([py!({"n": 1}), py!({"n": -1}), py!({"n": 3})])
        .collect();
    drop(pool);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(results[0].as_ref().expect("n = 1"), &py!({"n": 2}));
    let err = results[1].as_ref().expect_err("n = -1 raises");
    assert!(
        matches!(err.cause(), miniray::task::Cause::Remote { kind, message, .. }
            if kind.as_str() == "ValueError" && message == "negative n"),
        "{err}"
    );
    assert_eq!(err.tries().len(), 1, "an error reply is final: {err}");
    assert_eq!(results[2].as_ref().expect("n = 3"), &py!({"n": 6}));
}
