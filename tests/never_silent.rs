//! Never silent: a finished reply never waits behind later
//! work, `send` writes through, a Python exec worker that prints without
//! flushing answers, a worker's panic and an undecodable request reach the
//! caller as errors.

mod common;

use std::time::{Duration, Instant};

use common::DEADLINE;
use miniray::{Error, Reactor, WorkerOptions};

/// A file the test creates to let a blocked request finish: the worker's
/// slow request waits for it (up to the test deadline), so what must
/// arrive before it is checked without a timing window.
struct Release(std::path::PathBuf);

impl Release {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "miniray-never-silent-{tag}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        let _ = std::fs::remove_file(&path);
        Release(path)
    }

    fn release(&self) {
        std::fs::write(&self.0, b"go").expect("release marker");
    }

    /// In the worker: waits for the marker (bounded by the deadline).
    fn wait(path: &std::path::Path) {
        let end = Instant::now() + DEADLINE;
        while !path.exists() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0.with_extension("started"));
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Request 0 is slow, so 1 and 2 arrive while the worker is busy and are
/// read together; 2 blocks until the test releases it. The reply to 1 must
/// not wait for 2's work.
fn slow_second(marker: std::path::PathBuf) -> impl Fn(u64) -> u64 + Clone {
    move |n: u64| {
        match n {
            0 => std::thread::sleep(Duration::from_millis(300)),
            2 => {
                // Says it started: every reply before it was written by now
                // unless the worker batches them.
                let _ = std::fs::write(marker.with_extension("started"), b"");
                Release::wait(&marker);
            }
            _ => {}
        }
        n
    }
}

/// The replies (at most `max`) that arrive within `window` of now.
fn replies_within(r: &mut Reactor, w: miniray::Worker, window: Duration, max: usize) -> Vec<u64> {
    let end = Instant::now() + window;
    let mut got = Vec::new();
    while got.len() < max {
        let left = end.saturating_duration_since(Instant::now());
        match r.recv::<u64>(w, Some(left)) {
            Ok(n) => got.push(n),
            Err(Error::Timeout) => break,
            Err(e) => panic!("{e}"),
        }
    }
    got
}

#[test]
fn each_reply_is_written_before_the_next_request_is_worked_on() {
    let gate = Release::new("per-reply");
    let mut r = Reactor::new().expect("reactor");
    let w = r.spawn(slow_second(gate.0.clone())).expect("spawn");
    for n in 0..3u64 {
        r.send(w, &n).expect("send");
    }
    // Request 2 is blocked until released: replies 0 and 1 must come
    // while it is (batched, 1 would wait behind 2 until the deadline).
    assert_eq!(replies_within(&mut r, w, DEADLINE, 2), [0, 1]);
    gate.release();
    assert_eq!(replies_within(&mut r, w, DEADLINE, 1), [2]);
}

#[test]
fn batched_replies_are_an_explicit_trade() {
    for batch in [false, true] {
        let gate = Release::new(if batch { "batched" } else { "default" });
        let mut r = Reactor::new().expect("reactor");
        let w = r
            .spawn_with(
                &WorkerOptions::new().batch_replies(batch),
                slow_second(gate.0.clone()),
            )
            .expect("spawn");
        for n in 0..3u64 {
            r.send(w, &n).expect("send");
        }
        let early = if batch {
            // Batched, reply 1 waits in the child behind 2's work, which
            // waits for the release: whatever the machine's speed, 1 cannot
            // arrive first. Reply 0 may (it was alone in its read).
            let started = gate.0.with_extension("started");
            assert!(
                common::wait_until(DEADLINE, || started.exists()),
                "request 2 never started"
            );
            // Unbatched, reply 1 would already be in the socket now.
            let early = replies_within(&mut r, w, Duration::from_millis(300), 2);
            assert!(!early.contains(&1), "batched: {early:?}");
            early
        } else {
            let early = replies_within(&mut r, w, DEADLINE, 2);
            assert_eq!(early, [0, 1]);
            early
        };
        gate.release();
        let rest = replies_within(&mut r, w, DEADLINE, 3 - early.len());
        let all: Vec<u64> = early.into_iter().chain(rest).collect();
        assert_eq!(all, [0, 1, 2], "batch {batch}");
    }
}

/// Drives the reactor only from its descriptor, as an embedding loop does:
/// `poll(2)` on the fd, then the non-blocking step. No `wait_any` or `recv`
/// before the first readiness: what `send` wrote must already be out.
fn poll_loop_until_reply(r: &mut Reactor, w: miniray::Worker) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        let mut pfd = libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n <= 0 {
            continue;
        }
        for ready in r.wait_any(Some(Duration::ZERO)).expect("step") {
            if ready == w {
                if let Some(reply) = r.try_recv::<u64>(w).expect("reply") {
                    return Some(reply);
                }
            }
        }
    }
    None
}

#[test]
fn send_writes_through_so_an_embedding_poll_loop_gets_the_reply() {
    let mut r = Reactor::new().expect("reactor");
    let w = r.spawn(|n: u64| n + 1).expect("spawn");
    r.send(w, &41u64).expect("send");
    assert_eq!(poll_loop_until_reply(&mut r, w), Some(42));
    // Again, with the worker long running: the second request too.
    r.send(w, &1u64).expect("send");
    assert_eq!(poll_loop_until_reply(&mut r, w), Some(2));
}

#[test]
fn send_writes_through_so_a_tokio_loop_gets_the_reply() {
    use tokio::io::unix::AsyncFd;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let reply = rt.block_on(async {
        let mut r = Reactor::new().expect("reactor");
        let w = r.spawn(|n: u64| n * 2).expect("spawn");
        r.send(w, &21u64).expect("send");
        // SAFETY: the reactor owns its epoll descriptor for its whole life
        // and `as_raw_fd` always returns that same descriptor.
        let mut fd = unsafe { AsyncFd::register(r) }
            .map_err(|e| e.to_string())
            .expect("AsyncFd");
        let wait = async {
            loop {
                let mut guard = fd.readable_mut().await.expect("readable");
                let r = guard.get_inner_mut();
                for ready in r.wait_any(Some(Duration::ZERO)).expect("step") {
                    if let Some(reply) = r.try_recv::<u64>(ready).expect("reply") {
                        return reply;
                    }
                }
                guard.clear_ready();
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .ok()
    });
    assert_eq!(reply, Some(42));
}

/// A Python worker that prints without `flush=True` (its stdout is a
/// socket, which Python block-buffers) answers: miniray sets
/// `PYTHONUNBUFFERED=1` for exec'd programs unless told otherwise. Run in
/// a process of its own whose environment lacks the variable (a developer's
/// or CI's shell may set it, which would hide the default).
#[test]
fn a_python_exec_worker_that_prints_without_flushing_answers() {
    let out = std::process::Command::new(std::env::current_exe().expect("current_exe"))
        .args([
            "--exact",
            "inner_python_exec_unbuffered",
            "--ignored",
            "--test-threads=1",
        ])
        .env_remove("PYTHONUNBUFFERED")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("inner test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

#[test]
#[ignore = "run by a_python_exec_worker_that_prints_without_flushing_answers without PYTHONUNBUFFERED"]
fn inner_python_exec_unbuffered() {
    use miniray::Exec;
    assert!(std::env::var_os("PYTHONUNBUFFERED").is_none());
    let echo = "import sys\nfor line in sys.stdin:\n    print(line, end='')\n";
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn_exec(
            &WorkerOptions::new(),
            &Exec::new("python3", ["-c", echo]).expect("exec"),
        )
        .expect("spawn");
    r.send(w, &7u64).expect("send");
    assert_eq!(r.recv::<u64>(w, Some(DEADLINE)).expect("reply"), 7);
    // The caller can keep Python's buffering: then nothing comes back
    // until the program exits (here: when its input closes).
    let buffered = Exec::new("python3", ["-c", echo])
        .expect("exec")
        .env("PYTHONUNBUFFERED", "")
        .expect("env");
    let w = r
        .spawn_exec(&WorkerOptions::new(), &buffered)
        .expect("spawn");
    r.send(w, &8u64).expect("send");
    assert!(matches!(
        r.recv::<u64>(w, Some(Duration::from_millis(500))),
        Err(Error::Timeout)
    ));
    r.close(w).expect("close");
    assert_eq!(r.recv::<u64>(w, Some(DEADLINE)).expect("at exit"), 8);
}

#[test]
fn a_panicking_worker_reports_its_panic_then_closes() {
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn(|n: u64| {
            if n == 1 {
                panic!("request {n} is cursed");
            }
            n
        })
        .expect("spawn");
    for n in 0..3u64 {
        r.send(w, &n).expect("send");
    }
    assert_eq!(r.recv::<u64>(w, Some(DEADLINE)).expect("reply 0"), 0);
    match r.recv::<u64>(w, Some(DEADLINE)) {
        Err(Error::Remote { kind, message }) => {
            assert_eq!(kind, "panic");
            assert!(message.contains("request 1 is cursed"), "{message}");
            assert!(message.contains("never_silent.rs"), "where: {message}");
        }
        other => panic!("expected the panic, got {other:?}"),
    }
    match r.recv::<u64>(w, Some(DEADLINE)) {
        Err(e @ Error::Closed { .. }) => {
            assert_eq!(e.to_string(), "worker closed: exited with 101 (panicked)")
        }
        other => panic!("expected Closed, got {other:?}"),
    }
}

#[test]
fn a_work_function_error_is_reported() {
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn_channel(&WorkerOptions::new(), |ch| {
            let _: Option<u64> = ch.recv()?;
            Err(Error::Region {
                reason: "no such region",
            })
        })
        .expect("spawn");
    r.send(w, &1u64).expect("send");
    match r.recv::<u64>(w, Some(DEADLINE)) {
        Err(Error::Remote { kind, message }) => {
            assert_eq!(kind, "error");
            assert!(message.contains("no such region"), "{message}");
        }
        other => panic!("expected the error, got {other:?}"),
    }
    assert!(r
        .recv::<u64>(w, Some(DEADLINE))
        .expect_err("closed")
        .is_closed());
}

#[test]
fn an_undecodable_request_is_answered_and_serving_goes_on() {
    use miniray::{ConnectOptions, Format, ServerOptions};
    let mut r = Reactor::new().expect("reactor");
    let w = r.spawn(|n: u64| n * 10).expect("spawn");
    r.send(w, &"not a number").expect("send");
    r.send(w, &5u64).expect("send");
    match r.recv::<u64>(w, Some(DEADLINE)) {
        Err(Error::Remote { kind, message }) => {
            assert_eq!(kind, "decode");
            assert!(message.contains("not a number"), "{message}");
        }
        other => panic!("expected a decode error reply, got {other:?}"),
    }
    assert_eq!(r.recv::<u64>(w, Some(DEADLINE)).expect("next"), 50);

    // A marshal client against a JSON server learns it in one round trip.
    let server = r
        .listen("127.0.0.1:0", &ServerOptions::new(), |v: miniray::Value| v)
        .expect("listen");
    let addr = r.server_addr(server).expect("addr");
    let c = r
        .connect(
            addr,
            &ConnectOptions::new().format(Format::Marshal),
            Some(DEADLINE),
        )
        .expect("connect");
    r.send(c, &[1, 2, 3]).expect("send");
    match r.recv::<Vec<u8>>(c, Some(DEADLINE)) {
        Err(Error::Remote { kind, message }) => {
            assert_eq!(kind, "decode");
            assert!(
                message.contains("looks like marshal, not json") && message.contains("same format"),
                "{message}"
            );
        }
        other => panic!("expected a decode error reply, got {other:?}"),
    }
}

/// What a Python peer of the original library sees: one line it can parse,
/// a dict naming the error.
#[test]
fn a_python_peer_reads_the_error_reply() {
    use miniray::ServerOptions;
    let mut r = Reactor::new().expect("reactor");
    let server = r
        .listen("127.0.0.1:0", &ServerOptions::new(), |n: u64| n)
        .expect("listen");
    let port = r.server_addr(server).expect("addr").port();
    let script = r#"
import json, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
f = s.makefile("rwb")
f.write(b'"seven"\n7\n')
f.flush()
err = json.loads(f.readline())
assert set(err) == {"miniray.error"}, err
assert err["miniray.error"]["kind"] == "decode", err
assert "seven" in err["miniray.error"]["message"], err
assert json.loads(f.readline()) == 7
print("ok")
"#;
    let mut py = common::Reaped(
        std::process::Command::new("python3")
            .args(["-c", script, &port.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3"),
    );
    let end = Instant::now() + DEADLINE;
    let status = loop {
        assert!(Instant::now() < end, "python client did not finish");
        r.wait_any(Some(Duration::from_millis(20))).expect("wait");
        let _ = r.take_server_events();
        if let Some(s) = py.0.try_wait().expect("try_wait") {
            break s;
        }
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut py.0.stdout.take().expect("stdout"), &mut out)
        .expect("output");
    assert!(status.success(), "{out}");
    assert_eq!(out.trim(), "ok");
}

/// `call` with the wrong format against `serve`: the server's error reply
/// is printed as an error at once (no waiting for a timeout).
#[test]
fn call_prints_the_servers_error_reply() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let mut serve = common::Reaped(
        Command::new(common::example("serve"))
            .args(["--listen", "127.0.0.1:0", "--format", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve example"),
    );
    let mut first = String::new();
    BufReader::new(serve.0.stdout.as_mut().expect("stdout"))
        .read_line(&mut first)
        .expect("banner");
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .expect("banner")
        .to_owned();
    let t = Instant::now();
    let mut call = Command::new(common::example("call"))
        .args(["--connect", &addr, "--format", "marshal", "--timeout", "30"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("call example");
    call.stdin
        .take()
        .expect("stdin")
        .write_all(b"[1, 2]\n")
        .expect("write");
    // call has its own 30 s --timeout, so this wait is bounded.
    let out = call.wait_with_output().expect("call finished");
    drop(serve);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("reply 1: worker reported decode"),
        "{stderr}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "answered, not timed out"
    );
}

/// Item 8: one kind of bound for every blocking call (`Option<Duration>`,
/// `None` = no limit), and the two documented shapes of "nothing came".
#[test]
fn every_blocking_call_takes_an_optional_timeout() {
    use miniray::{ConnectOptions, ServerOptions};
    let mut r = Reactor::new().expect("reactor");
    let server = r
        .listen("127.0.0.1:0", &ServerOptions::new(), |n: u64| n)
        .expect("listen");
    let addr = r.server_addr(server).expect("addr");
    // No limit, as for recv and wait_any.
    let c = r
        .connect(addr, &ConnectOptions::new(), None)
        .expect("connect");
    r.send(c, &3u64).expect("send");
    assert_eq!(r.recv::<u64>(c, None).expect("reply"), 3);
    // Waiting for one thing: Err(Timeout). For whatever is ready: empty.
    assert!(matches!(
        r.recv::<u64>(c, Some(Duration::ZERO)),
        Err(Error::Timeout)
    ));
    assert!(r.wait_any(Some(Duration::ZERO)).expect("wait").is_empty());
    let w = r.spawn(|n: u64| n).expect("spawn");
    assert!(matches!(
        r.recv::<u64>(w, Some(Duration::from_millis(10))),
        Err(Error::Timeout)
    ));
}

/// A reply the format cannot carry (a set, in JSON) fails that request
/// alone: the worker answers with an error reply and goes on serving.
#[test]
fn a_reply_that_cannot_be_encoded_fails_alone() {
    use miniray::{py, Value};
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn(|n: i64| if n == 1 { py!(set[n]) } else { py!(n) })
        .expect("spawn");
    for n in 0..3i64 {
        r.send(w, &n).expect("send");
    }
    assert_eq!(r.recv::<Value>(w, Some(DEADLINE)).expect("0"), py!(0));
    match r.recv::<Value>(w, Some(DEADLINE)) {
        Err(Error::Remote { kind, message }) => {
            assert_eq!(kind, "encode");
            assert!(message.contains("set"), "{message}");
        }
        other => panic!("expected an encode error reply, got {other:?}"),
    }
    assert_eq!(r.recv::<Value>(w, Some(DEADLINE)).expect("2"), py!(2));
}
