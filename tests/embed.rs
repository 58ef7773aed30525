//! The reactor inside other event loops: a level-triggered `poll(2)` loop and
//! an edge-triggered mio loop, including work stranded in the reactor's queue.

mod common;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::DEADLINE;
use miniray::serde_json::json;
use miniray::{Error, Interest, Reactor, Token, WorkerOptions};

/// A worker that answers one request with `n` replies written in one go, so
/// they arrive in one read and all but one wait in the reactor's queue.
fn burst_worker(r: &mut Reactor, n: usize) -> miniray::Worker {
    r.spawn_channel(&WorkerOptions::new(), move |ch| {
        if ch.recv()?.is_some() {
            let fd = ch.as_raw_fd();
            let mut all = Vec::new();
            for i in 0..n {
                all.extend_from_slice(format!("{i}\n").as_bytes());
            }
            // One write: the parent reads every line at once.
            // SAFETY: our own buffer to our own socket.
            unsafe { libc::write(fd, all.as_ptr().cast(), all.len()) };
        }
        while ch.recv()?.is_some() {}
        Ok(())
    })
    .expect("spawn")
}

fn poll_readable(fd: i32, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    assert!(n >= 0, "poll failed");
    n == 1
}

#[test]
fn level_triggered_loop_wakes_for_every_stranded_reply() {
    let mut r = Reactor::new().expect("reactor");
    let fd = r.as_raw_fd();
    let w = burst_worker(&mut r, 5);
    r.send(w, &json!("go")).expect("send");
    r.flush();
    let end = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while got.len() < 5 {
        assert!(Instant::now() < end, "stuck after {got:?}");
        if !poll_readable(fd, 1000) {
            continue;
        }
        // Take one message per wake-up: the rest must keep the fd readable.
        for ready in r.wait_any(Some(Duration::ZERO)).expect("wait_any") {
            if let Some(v) = r.try_recv(ready).expect("message") {
                got.push(v);
            }
        }
    }
    assert_eq!(got, (0..5).map(|i| json!(i)).collect::<Vec<_>>());
    // Drained: after one zero poll the descriptor is quiet.
    assert!(r.wait_any(Some(Duration::ZERO)).expect("poll").is_empty());
    assert!(!poll_readable(fd, 0), "fd readable with nothing to return");
}

#[test]
fn edge_triggered_outer_mio_loop_wakes_for_every_stranded_reply() {
    let mut r = Reactor::new().expect("reactor");
    let mut outer = mio::Poll::new().expect("outer poll");
    let fd = r.as_raw_fd();
    outer
        .registry()
        .register(&mut mio::unix::SourceFd(&fd), Token(7), Interest::READABLE)
        .expect("register reactor fd");
    let mut events = mio::Events::with_capacity(8);
    let w = burst_worker(&mut r, 6);
    r.send(w, &json!("go")).expect("send");
    r.flush();
    let end = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while got.len() < 6 {
        assert!(Instant::now() < end, "stuck after {got:?}");
        outer
            .poll(&mut events, Some(Duration::from_secs(1)))
            .expect("outer poll");
        if events.is_empty() {
            continue;
        }
        // One wait_any and one message per edge.
        for ready in r.wait_any(Some(Duration::ZERO)).expect("wait_any") {
            if let Some(v) = r.try_recv(ready).expect("message") {
                got.push(v);
            }
        }
    }
    assert_eq!(got, (0..6).map(|i| json!(i)).collect::<Vec<_>>());
}

#[test]
fn reactor_whose_workers_all_closed_goes_quiet() {
    let mut r = Reactor::new().expect("reactor");
    let fd = r.as_raw_fd();
    let ws: Vec<_> = (0..3).map(|_| r.spawn(|v| v).expect("spawn")).collect();
    for &w in &ws {
        r.close(w).expect("close");
    }
    let mut closed = 0;
    let end = Instant::now() + DEADLINE;
    while closed < ws.len() {
        assert!(Instant::now() < end, "only {closed} closed");
        if !poll_readable(fd, 1000) {
            continue;
        }
        for w in r.wait_any(Some(Duration::ZERO)).expect("wait_any") {
            match r.try_recv(w) {
                Err(Error::Closed { status }) => {
                    assert!(status.expect("status").success());
                    closed += 1;
                }
                other => panic!("expected Closed, got {other:?}"),
            }
        }
    }
    assert!(r.is_empty());
    assert!(r.wait_any(None).expect("returns at once").is_empty());
    assert!(!poll_readable(fd, 0), "an empty reactor's fd stays quiet");
}

#[test]
fn user_sources_live_beside_workers() {
    let mut r = Reactor::new().expect("reactor");
    let (mut mine, mut theirs) = mio::net::UnixStream::pair().expect("pair");
    r.register_source(&mut mine, Token(42), Interest::READABLE)
        .expect("register");
    assert!(r
        .register_source(
            &mut theirs,
            Token(miniray::USER_TOKEN_LIMIT),
            Interest::READABLE
        )
        .is_err());
    let w = r.spawn(|v| v).expect("spawn");
    theirs.write_all(b"ping").expect("write");
    let ready = r.wait_any(Some(DEADLINE)).expect("wait_any");
    assert!(ready.is_empty(), "no worker was ready");
    let events = r.take_user_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].token, Token(42));
    assert!(events[0].readable);
    // Workers still flow through the same wait.
    r.send(w, &json!(1)).expect("send");
    assert_eq!(r.wait_any(Some(DEADLINE)).expect("wait_any"), vec![w]);
    r.deregister_source(&mut mine).expect("deregister");
}
