//! Local workers through the reactor: real forks, real sockets.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::*;
use miniray::{Error, Format, Reactor, WorkerOptions};
use serde_json::{json, Value};

fn echo(v: Value) -> Value {
    v
}

#[test]
fn checklist_echo_round_trip_and_wait_any() {
    let mut r = Reactor::new().expect("reactor");
    let w = r.spawn(echo).expect("spawn");
    r.send(w, &json!({"test": 123})).expect("send");
    assert_eq!(
        r.recv::<Value>(w, Some(DEADLINE)).expect("recv"),
        json!({"test": 123})
    );

    let idle = r.spawn(echo).expect("spawn");
    r.send(w, &json!({"again": true})).expect("send");
    let ready = r.wait_any(Some(DEADLINE)).expect("wait_any");
    assert_eq!(ready, vec![w]);
    // Already queued work comes back without waiting, until consumed.
    assert_eq!(r.wait_any(Some(Duration::ZERO)).expect("poll"), vec![w]);
    assert_eq!(
        r.try_recv(w).expect("try_recv"),
        Some(json!({"again": true}))
    );
    assert_eq!(r.try_recv::<Value>(w).expect("try_recv"), None);
    assert!(r.wait_any(Some(Duration::ZERO)).expect("poll").is_empty());
    assert!(r.try_recv::<Value>(idle).expect("idle").is_none());
}

#[test]
fn marshal_worker_round_trip() {
    let mut r = Reactor::new().expect("reactor");
    let opts = WorkerOptions::new().format(Format::Marshal);
    let w = r
        .spawn_with(&opts, |v: Value| json!([v, "é😀", 2.5]))
        .expect("spawn");
    // The largest int serde_json::Value holds (no arbitrary_precision):
    // a marshal long ('l', past i32), and past 2^53, so a float would lose it.
    let big = json!(u64::MAX);
    r.send(w, &json!({"n": big})).expect("send");
    let got = r.recv::<Value>(w, Some(DEADLINE)).expect("recv");
    assert_eq!(got, json!([{"n": big}, "é😀", 2.5]));
    assert_eq!(got[0]["n"].to_string(), "18446744073709551615");
}

#[test]
fn two_thousand_workers_past_select_limit_leave_no_zombies() {
    miniray::raise_fd_limit().expect("rlimit");
    let mut r = Reactor::new().expect("reactor");
    let n = 2000;
    let mut workers = Vec::with_capacity(n);
    for _ in 0..n {
        workers.push(
            r.spawn(|v: Value| json!(v.as_i64().unwrap_or(-1) * 2))
                .expect("spawn"),
        );
    }
    assert!(
        workers.iter().any(|w| w.fileno() >= 1024),
        "fds past FD_SETSIZE"
    );
    let pids: Vec<i32> = workers.iter().map(|&w| r.pid(w).expect("pid")).collect();
    for (i, &w) in workers.iter().enumerate() {
        r.send(w, &json!(i)).expect("send");
    }
    let mut seen = vec![false; n];
    let mut left = n;
    while left > 0 {
        let ready = r.wait_any(Some(DEADLINE)).expect("wait_any");
        assert!(!ready.is_empty(), "timed out with {left} replies missing");
        for w in ready {
            let i = workers.iter().position(|&x| x == w).expect("known worker");
            let v = r.try_recv::<Value>(w).expect("reply").expect("message");
            assert_eq!(v, json!(i as i64 * 2));
            assert!(!seen[i]);
            seen[i] = true;
            left -= 1;
        }
    }
    for &w in &workers {
        r.close(w).expect("close");
    }
    let mut closed = 0;
    while closed < n {
        let ready = r.wait_any(Some(DEADLINE)).expect("wait_any");
        assert!(!ready.is_empty(), "timed out with {} open", n - closed);
        for w in ready {
            match r.try_recv::<Value>(w) {
                Err(Error::Closed { status: Some(s) }) => {
                    assert_eq!(s.code(), Some(0));
                    closed += 1;
                }
                other => panic!("expected Closed, got {other:?}"),
            }
        }
    }
    assert!(r.is_empty());
    for pid in pids {
        assert!(is_reaped(pid), "pid {pid} not reaped");
    }
}

#[test]
fn closed_worker_sees_eof_and_later_children_hold_no_parent_fds() {
    let mut r = Reactor::new().expect("reactor");
    let first = r.spawn(echo).expect("spawn");
    let first_sock = socket_name(first.fileno());
    let epoll = socket_name(std::os::fd::AsRawFd::as_raw_fd(&r));
    let later: Vec<_> = (0..3).map(|_| r.spawn(echo).expect("spawn")).collect();
    for &w in &later {
        // After one round trip the child is in its work function: its
        // descriptor cleanup is done.
        r.send(w, &json!("ready?")).expect("send");
        assert_eq!(
            r.recv::<Value>(w, Some(DEADLINE)).expect("recv"),
            json!("ready?")
        );
        let fds = fd_targets(r.pid(w).expect("pid"));
        assert!(
            fds.iter().any(|t| t.starts_with("socket:")),
            "child fds readable"
        );
        assert!(
            !fds.contains(&first_sock),
            "later child holds the first worker's socket"
        );
        assert!(!fds.iter().any(|t| t == &epoll), "child holds the epoll fd");
    }
    r.close(first).expect("close");
    match r.recv::<Value>(first, Some(DEADLINE)) {
        Err(Error::Closed { status: Some(s) }) => assert_eq!(s.code(), Some(0)),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(matches!(
        r.send(first, &json!(1)),
        Err(Error::UnknownWorker)
    ));
    // The others still work.
    for &w in &later {
        r.send(w, &json!("hi")).expect("send");
        assert_eq!(
            r.recv::<Value>(w, Some(DEADLINE)).expect("recv"),
            json!("hi")
        );
    }
}

#[test]
fn panicking_worker_reports_closed_with_status() {
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn(|v: Value| {
            if v == json!("boom") {
                panic!("worker asked to panic");
            }
            v
        })
        .expect("spawn");
    r.send(w, &json!("fine")).expect("send");
    r.send(w, &json!("boom")).expect("send");
    assert_eq!(
        r.recv::<Value>(w, Some(DEADLINE)).expect("recv"),
        json!("fine")
    );
    // The panic is told in the failed request's place, then the exit.
    match r.recv::<Value>(w, Some(DEADLINE)) {
        Err(Error::Remote { kind, message }) => {
            assert_eq!(kind, "panic");
            assert!(message.contains("worker asked to panic"), "{message}");
        }
        other => panic!("expected the panic, got {other:?}"),
    }
    match r.recv::<Value>(w, Some(DEADLINE)) {
        Err(Error::Closed { status: Some(s) }) => {
            assert_eq!(s.code(), Some(miniray::process::EXIT_PANIC))
        }
        other => panic!("expected Closed, got {other:?}"),
    }
}

#[test]
fn worker_exiting_mid_line_reports_truncation_then_closed() {
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn_channel(&WorkerOptions::new(), |ch| {
            let fd = std::os::fd::AsRawFd::as_raw_fd(ch);
            // Half a line, then exit with status 7.
            // SAFETY: writing a static buffer to our own socket.
            unsafe { libc::write(fd, b"{\"partial\":".as_ptr().cast(), 11) };
            std::process::exit(7);
        })
        .expect("spawn");
    match r.recv::<Value>(w, Some(DEADLINE)) {
        Err(Error::TruncatedLine { len: 11 }) => {}
        other => panic!("expected TruncatedLine, got {other:?}"),
    }
    match r.recv::<Value>(w, Some(DEADLINE)) {
        Err(Error::Closed { status: Some(s) }) => assert_eq!(s.code(), Some(7)),
        other => panic!("expected Closed, got {other:?}"),
    }
}

#[test]
fn killed_worker_reports_its_signal() {
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn_channel(&WorkerOptions::new(), |_ch| loop {
            std::thread::sleep(Duration::from_secs(1));
        })
        .expect("spawn");
    r.kill(w, libc::SIGKILL).expect("kill");
    match r.recv::<Value>(w, Some(DEADLINE)) {
        Err(Error::Closed { status: Some(s) }) => assert_eq!(s.signal(), Some(libc::SIGKILL)),
        other => panic!("expected Closed, got {other:?}"),
    }
}

#[test]
fn bad_lines_fail_one_message_each() {
    let mut r = Reactor::new().expect("reactor");
    let opts = WorkerOptions::new().max_line(64);
    let w = r
        .spawn_channel(&opts, |ch| {
            let fd = std::os::fd::AsRawFd::as_raw_fd(ch);
            let mut data = b"{\"ok\":1}\nnot json\n".to_vec();
            data.extend(std::iter::repeat_n(b'x', 1000));
            // `NaN` is Python's JSON; lowercase `nan` is nobody's.
            data.extend_from_slice(b"\n[nan]\n{\"ok\":2}\n");
            // SAFETY: writing our own buffer to our own socket.
            unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
            Ok(())
        })
        .expect("spawn");
    assert_eq!(
        r.recv::<Value>(w, Some(DEADLINE)).expect("first"),
        json!({"ok": 1})
    );
    assert!(matches!(
        r.recv::<Value>(w, Some(DEADLINE)),
        Err(Error::Decode(_))
    ));
    assert!(matches!(
        r.recv::<Value>(w, Some(DEADLINE)),
        Err(Error::LineTooLong { limit: 64, .. })
    ));
    assert!(matches!(
        r.recv::<Value>(w, Some(DEADLINE)),
        Err(Error::Decode(_))
    ));
    assert_eq!(
        r.recv::<Value>(w, Some(DEADLINE)).expect("last"),
        json!({"ok": 2})
    );
    assert!(matches!(
        r.recv::<Value>(w, Some(DEADLINE)),
        Err(Error::Closed { .. })
    ));
}

#[test]
fn ten_megabyte_messages_both_ways_at_once() {
    let mut r = Reactor::new().expect("reactor");
    let big = "y".repeat(10 << 20);
    let theirs = big.clone();
    let w = r
        .spawn_channel(&WorkerOptions::new(), move |ch| {
            // Send first, then read: both directions are full at once.
            ch.send(&json!({"from": "child", "data": theirs}))?;
            while let Some(v) = ch.recv::<Value>()? {
                let len = v["data"].as_str().map_or(0, str::len);
                ch.send(&json!({"len": len}))?;
            }
            Ok(())
        })
        .expect("spawn");
    r.send(w, &json!({"from": "parent", "data": big}))
        .expect("send");
    let first = r.recv::<Value>(w, Some(DEADLINE)).expect("child's message");
    assert_eq!(first["data"].as_str().map(str::len), Some(10 << 20));
    let second = r.recv::<Value>(w, Some(DEADLINE)).expect("reply");
    assert_eq!(second, json!({"len": 10 << 20}));
}

#[test]
fn backpressure_past_the_high_water_mark() {
    let mut r = Reactor::new().expect("reactor");
    let opts = WorkerOptions::new().high_water(1 << 20);
    // A worker that never reads: its socket fills, then our buffer.
    let w = r
        .spawn_channel(&opts, |_ch| loop {
            std::thread::sleep(Duration::from_secs(1));
        })
        .expect("spawn");
    let chunk = json!("z".repeat(64 * 1024));
    let mut refused = None;
    for i in 0..10_000 {
        match r.send(w, &chunk) {
            Ok(()) => {}
            Err(Error::Backpressure {
                buffered, limit, ..
            }) => {
                assert!(buffered <= limit);
                refused = Some(i);
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let at = refused.expect("backpressure reported");
    assert!(at > 0);
    assert!(r.pending_output(w).expect("pending") <= 1 << 20);
    r.kill(w, libc::SIGKILL).expect("kill");
    assert!(matches!(
        r.recv::<Value>(w, Some(DEADLINE)),
        Err(Error::Closed { .. })
    ));
}

#[test]
fn reactor_fds_are_nonblocking_and_cloexec() {
    let mut r = Reactor::new().expect("reactor");
    let w = r.spawn(echo).expect("spawn");
    assert!(is_nonblocking(w.fileno()));
    assert!(is_cloexec(w.fileno()));
    assert!(is_cloexec(std::os::fd::AsRawFd::as_raw_fd(&r)));
}

#[test]
fn drop_kills_workers_that_ignore_eof_and_reaps_all() {
    let mut r = Reactor::new().expect("reactor");
    r.set_grace(Duration::from_millis(200));
    let stubborn = r
        .spawn_channel(&WorkerOptions::new().death_signal(None), |_ch| loop {
            std::thread::sleep(Duration::from_secs(1));
        })
        .expect("spawn");
    let polite = r.spawn(echo).expect("spawn");
    let pids = [r.pid(stubborn).expect("pid"), r.pid(polite).expect("pid")];
    let statuses = r.shutdown();
    assert_eq!(statuses.len(), 2);
    for (w, status) in statuses {
        let s = status.expect("reaped by us");
        if w == stubborn {
            assert_eq!(s.signal(), Some(libc::SIGKILL));
        } else {
            assert_eq!(s.code(), Some(0));
        }
    }
    for pid in pids {
        assert!(is_reaped(pid));
    }
}

#[test]
fn wait_any_with_no_workers_returns_at_once_and_unknown_handles_are_typed() {
    let mut r = Reactor::new().expect("reactor");
    assert!(r.wait_any(None).expect("empty").is_empty());
    let mut other = Reactor::new().expect("reactor");
    let w = other.spawn(echo).expect("spawn");
    let _ = r.spawn(echo).expect("spawn");
    // Same slot, different generation: never mistaken for r's worker.
    assert!(matches!(r.send(w, &json!(1)), Err(Error::UnknownWorker)));
    assert!(matches!(
        r.recv::<Value>(w, Some(Duration::ZERO)),
        Err(Error::UnknownWorker)
    ));
}
