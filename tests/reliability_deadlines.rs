//! `Duration::MAX` at every public entry point that takes a duration: it
//! means "no deadline", never a panic (`Instant::now() + Duration::MAX`
//! overflows), above all in `Drop` and in event dispatch.

mod common;

use std::time::{Duration, Instant};

use common::*;
use miniray::{ConnectOptions, Reactor, Secret, ServerEvent, ServerOptions};
use serde_json::{json, Value};

fn echo(r: &mut Reactor) -> miniray::Worker {
    r.spawn(|v: Value| v).expect("spawn")
}

#[test]
fn drop_with_an_infinite_grace_reaps_a_live_worker() {
    let mut r = Reactor::new().expect("reactor");
    let w = echo(&mut r);
    r.send(w, &json!(1)).expect("send");
    assert_eq!(r.recv::<Value>(w, Some(DEADLINE)).expect("echo"), json!(1));
    let pid = r.pid(w).expect("pid");
    r.set_grace(Duration::MAX);
    // The worker exits on EOF, so an unbounded grace still ends.
    drop(r);
    assert!(is_reaped(pid), "worker {pid} reaped by drop");
}

#[test]
fn shutdown_with_an_infinite_grace_returns_every_status() {
    let mut r = Reactor::new().expect("reactor");
    let ws: Vec<_> = (0..3).map(|_| echo(&mut r)).collect();
    r.set_grace(Duration::MAX);
    let statuses = r.shutdown();
    assert_eq!(statuses.len(), ws.len());
    for (_, s) in statuses {
        assert_eq!(s.and_then(|s| s.code()), Some(0));
    }
}

#[test]
fn stop_server_with_an_infinite_grace_reaps_its_children() {
    let mut r = Reactor::new().expect("reactor");
    let s = r
        .listen("127.0.0.1:0", &ServerOptions::new(), |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");
    let c = r
        .connect(addr, &ConnectOptions::new(), Some(DEADLINE))
        .expect("connect");
    r.send(c, &json!("x")).expect("send");
    assert_eq!(
        r.recv::<Value>(c, Some(DEADLINE)).expect("echo"),
        json!("x")
    );
    r.set_grace(Duration::MAX);
    // The serving child gets SIGTERM and dies of it.
    r.stop_server(s).expect("stop");
    let exited = r
        .take_server_events()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                ServerEvent::Exited {
                    status: Some(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(exited, 1);
}

#[test]
fn recv_with_an_infinite_timeout_waits_for_the_reply() {
    let mut r = Reactor::new().expect("reactor");
    let w = echo(&mut r);
    r.send(w, &json!("r")).expect("send");
    assert_eq!(
        r.recv::<Value>(w, Some(Duration::MAX)).expect("recv"),
        json!("r")
    );
}

#[test]
fn recv_regions_with_an_infinite_timeout_waits_for_the_reply() {
    let mut r = Reactor::new().expect("reactor");
    let w = echo(&mut r);
    r.send(w, &json!("rr")).expect("send");
    let (v, regions) = r
        .recv_regions::<Value>(w, Some(Duration::MAX))
        .expect("recv");
    assert_eq!(v, json!("rr"));
    assert!(regions.is_empty());
}

#[test]
fn wait_any_with_an_infinite_timeout_returns_the_ready_worker() {
    let mut r = Reactor::new().expect("reactor");
    let w = echo(&mut r);
    r.send(w, &json!("w")).expect("send");
    assert_eq!(r.wait_any(Some(Duration::MAX)).expect("wait"), vec![w]);
    assert_eq!(r.try_recv(w).expect("recv"), Some(json!("w")));
}

#[test]
fn wait_any_into_with_an_infinite_timeout_returns_the_ready_worker() {
    let mut r = Reactor::new().expect("reactor");
    let w = echo(&mut r);
    r.send(w, &json!("wi")).expect("send");
    let mut out = Vec::new();
    r.wait_any_into(&mut out, Some(Duration::MAX))
        .expect("wait");
    assert_eq!(out, vec![w]);
}

#[test]
fn wait_events_with_an_infinite_timeout_returns_the_ready_worker() {
    let mut r = Reactor::new().expect("reactor");
    let w = echo(&mut r);
    r.send(w, &json!("we")).expect("send");
    let events = r.wait_events(Some(Duration::MAX)).expect("wait");
    assert!(
        matches!(events.as_slice(), [miniray::Event::Worker(x)] if *x == w),
        "{events:?}"
    );
    assert_eq!(r.try_recv(w).expect("recv"), Some(json!("we")));
}

#[test]
fn connect_with_an_infinite_timeout_connects() {
    let mut r = Reactor::new().expect("reactor");
    let s = r
        .listen("127.0.0.1:0", &ServerOptions::new(), |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");
    let c = r
        .connect(addr, &ConnectOptions::new(), Some(Duration::MAX))
        .expect("connect");
    r.send(c, &json!("c")).expect("send");
    assert_eq!(
        r.recv::<Value>(c, Some(DEADLINE)).expect("echo"),
        json!("c")
    );
}

#[test]
fn connect_with_a_secret_and_an_infinite_timeout_authenticates() {
    let secret = Secret::new(b"a secret for the deadline test".to_vec()).expect("secret");
    let mut r = Reactor::new().expect("reactor");
    let s = r
        .listen(
            "127.0.0.1:0",
            &ServerOptions::new().secret(secret.clone()),
            |v: Value| v,
        )
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");
    let c = r
        .connect(
            addr,
            &ConnectOptions::new().secret(secret),
            Some(Duration::MAX),
        )
        .expect("connect");
    r.send(c, &json!("a")).expect("send");
    assert_eq!(
        r.recv::<Value>(c, Some(DEADLINE)).expect("echo"),
        json!("a")
    );
}

#[test]
fn an_infinite_auth_timeout_serves_and_never_expires_a_handshake() {
    let secret = Secret::new(b"a secret for the auth timeout".to_vec()).expect("secret");
    let mut r = Reactor::new().expect("reactor");
    let opts = ServerOptions::new()
        .secret(secret.clone())
        .auth_timeout(Duration::MAX);
    let s = r
        .listen("127.0.0.1:0", &opts, |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");
    // A client that never answers stays in its handshake.
    let _silent = std::net::TcpStream::connect(addr).expect("silent");
    // The handshake starts during event dispatch (inside this connect).
    let c = r
        .connect(addr, &ConnectOptions::new().secret(secret), Some(DEADLINE))
        .expect("connect");
    r.send(c, &json!("t")).expect("send");
    assert_eq!(
        r.recv::<Value>(c, Some(DEADLINE)).expect("echo"),
        json!("t")
    );
    let end = Instant::now() + Duration::from_millis(300);
    let mut events = Vec::new();
    while Instant::now() < end {
        r.wait_any(Some(Duration::from_millis(50))).expect("wait");
        events.extend(r.take_server_events());
    }
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ServerEvent::AuthFailed { .. })),
        "{events:?}"
    );
}

#[test]
fn an_infinite_accept_backoff_pauses_without_panicking() {
    let mut r = Reactor::new().expect("reactor");
    // The back-off starts inside event dispatch, in a child whose server
    // runs out of descriptors.
    let (host, port) = emfile_host(&mut r, Duration::MAX);
    let mut events = Vec::new();
    let _clients = connect_until_emfile(&mut r, host, port, &mut events);
    // The host lives on (paused for good), still polling.
    events.clear();
    collect(&mut r, host, &mut events, Duration::from_millis(300));
    assert!(events.iter().any(|e| e == "alive"), "{events:?}");
    r.kill(host, libc::SIGKILL).expect("kill host");
}
